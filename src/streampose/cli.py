"""`streampose` command line: label, view, train, experiment, eval, predict, export.

Each subcommand parses its options here and calls into the modules that do the work.
A StreamPoseError (bad input, a missing dependency) becomes one line on stderr and exit
status 2, never a traceback; Ctrl-C and SIGTERM stop a command the same way (`interrupts`).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import asdict

from streampose import __version__, sources
from streampose.config import CHECK, DEVICE, POSITIVE, Check
from streampose.engine.config import TrainConfig, config_defaults
from streampose.engine.runlock import RunLock
from streampose.errors import ReportedError, StreamPoseError
from streampose.files import STDOUT
from streampose.interrupts import exit_status, handle_signals
from streampose.options import (
    TEACHER_HELP,
    add_frame_options,
    add_model_options,
    add_rerun_option,
    add_source_options,
    emit_json,
    frame_total,
    progress,
    source_filters,
    source_videos,
    teacher_spec,
    tick,
)
from streampose.sources.pexels import require_pexels_permission
from streampose.stream import stages
from streampose.teachers import get_teacher

TRAIN = TrainConfig()  # the train options' defaults, so the CLI and the config cannot disagree


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other bad input (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def cmd_label(args: argparse.Namespace) -> int:
    from streampose.engine.label import label

    teacher = get_teacher(args.teacher)
    skeleton = teacher.skeleton
    try:
        with progress(total=frame_total(args), unit="frame", desc="label") as bar:
            counts = label(
                source_videos(args, args.sources), teacher, stride=args.stride, max_frames=args.max_frames,
                max_side=args.max_side, save=args.save, render=args.render, max_videos=args.max_videos,
                on_frame=lambda n: tick(bar, n),
            )  # fmt: skip
    finally:
        teacher.close()
    print(
        f"labelled {counts.labelled_frames}/{counts.frames} frames of {counts.videos} video(s), "
        f"{counts.persons} persons, {counts.frames / counts.seconds:.1f} frames/s"
        + (f"; labels in {args.save}" if args.save else "")
        + (f"; overlay in {args.render}" if args.render else "")
        + ("; interrupted, everything labelled so far is saved" if counts.interrupted else ""),
        file=sys.stderr,
    )
    if args.json:
        rate = round(counts.frames / counts.seconds, 2)
        result = counts.as_dict() | {"seconds": round(counts.seconds, 3), "frames_per_s": rate}
        emit_json(result | {"joints": skeleton.num_joints, "skeleton": skeleton.name, "teacher": teacher.name})
    return exit_status() if counts.interrupted else 0


def cmd_view(args: argparse.Namespace) -> None:
    from streampose.engine.view import view

    with progress(total=stages.frame_total([args.video]), unit="frame", desc="view") as bar:
        shown = view(args.labels, args.video, out=args.out, png=args.png, sheet_frames=args.sheet_frames,
                     rerun=args.rerun, on_frame=bar.update)  # fmt: skip
    drawn = [f"to {args.out}"] if args.out else []
    drawn += [f"sheet {args.png}"] if args.png else []
    drawn += [f"Rerun {args.rerun or 'viewer'}"] if args.rerun is not None else []
    print(f"showed {shown} labelled frames: " + ", ".join(drawn), file=sys.stderr)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config from the train options (`--source A B --source C` gives three sources; without
    --source, the --config file's sources)."""
    return TrainConfig(
        sources=[spec for group in args.source or [] for spec in group] or getattr(args, "sources", []),
        filters=source_filters(args),
        **{k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and k != "sources"},
    )


def early_train_options(argv: list[str]) -> dict:
    """`train --config FILE`'s values (`experiment`'s too), read before the full parse: they become the
    options' defaults."""
    if not argv or argv[0] not in ("train", "experiment"):
        return {}
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    path = pre.parse_known_args(argv[1:])[0].config
    return config_defaults(path) if path else {}


def early_train_lock(argv: list[str], defaults: dict) -> RunLock | None:
    """`train`'s lock on an existing run folder, taken before torch is imported (seconds), so a run
    on a busy folder is refused at once; `cmd_train` locks a new one. Only rank 0 locks."""
    if not argv or argv[0] != "train" or os.environ.get("RANK", "0") != "0" or {"-h", "--help"} & set(argv):
        return None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--out", default=defaults.get("out", TRAIN.out))
    out = pre.parse_known_args(argv[1:])[0].out
    return RunLock(out).acquire() if os.path.isdir(out) else None


def cmd_train(args: argparse.Namespace) -> int:
    from streampose.engine.train import train

    cfg = train_config(args)
    require_pexels_permission(cfg.sources + cfg.val, args.pexels_permission)
    sources.refs(cfg.sources).close()  # fail now, with a clear message, on a bad source
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes, shows progress and JSON
    lock = args.lock or (RunLock(cfg.out).acquire() if main_rank else None)
    try:
        get_teacher(cfg.teacher).close()  # fail now, with a clear message, if the teacher cannot run
        with progress(total=cfg.steps, unit="step", desc="train", disable=not main_rank) as bar:
            result = train(cfg, progress=bar, lock=lock)
    finally:
        if lock is not None:
            lock.release()
    losses = f"loss {result['first_loss']:.4f} -> {result['last_loss']:.4f}, " if result["last_loss"] else ""
    print(
        (f"rank {result['rank']}/{result['world_size']}: " if result["world_size"] > 1 else "")
        + f"step {result['step']}: {losses}{result['samples_per_s']:.0f} samples/s, {result['seconds']:.0f} s; "
        f"checkpoint {result['checkpoint']}" + (" (interrupted, saved)" if result["interrupted"] else ""),
        file=sys.stderr,
    )
    if args.json and main_rank:
        emit_json({k: v for k, v in result.items() if k != "buffer"} | {"buffer_fill": result["buffer"]["fill"]})
    return exit_status() if result["interrupted"] else 0


def cmd_experiment(args: argparse.Namespace) -> None:
    from streampose.engine.experiment import experiment, parse_sizes

    cfg = train_config(args)
    require_pexels_permission(cfg.sources + cfg.val, args.pexels_permission)
    report = experiment(cfg, parse_sizes(args.sizes), progress=progress)
    if args.json:
        emit_json(report)


def cmd_eval(args: argparse.Namespace) -> None:
    from streampose.engine.evaluate import EVAL_BATCH, evaluate, summary_line
    from streampose.model.backends import open_backend

    require_pexels_permission(args.sources, args.pexels_permission)
    backend = open_backend(
        checkpoint=args.checkpoint, onnx=args.onnx, device=args.device, backend=args.backend, batch=EVAL_BATCH
    )
    with progress(total=frame_total(args), unit="frame", desc="eval") as bar:
        result = evaluate(
            backend,
            source_videos(args, args.sources, max_videos=args.max_videos),
            teacher=args.teacher,
            stride=args.stride,
            max_frames=args.max_frames,
            max_side=args.max_side,
            on_frame=lambda n: tick(bar, n),
        )
    if result["persons"]:
        print(summary_line(result), file=sys.stderr)
    if args.json:
        emit_json(result)


def cmd_predict(args: argparse.Namespace) -> None:
    from streampose.engine.predict import PersonDetector, TrackerConfig, parse_box, predict_video
    from streampose.model.backends import open_backend

    if not (args.poses or args.render or args.json or args.rerun is not None):
        raise StreamPoseError("nothing to do: give --poses poses.jsonl, --render overlay.mp4, --rerun and/or --json")
    if args.poses == STDOUT and args.json:
        raise StreamPoseError("--poses - and --json both write to stdout: give one of them, or --poses FILE")
    box = parse_box(args.box) if args.box is not None else None
    given = {"detect_every": args.detect_every} if args.detect_every is not None else {}
    config = TrackerConfig(max_persons=args.max_persons, **given)
    backend = open_backend(
        checkpoint=args.checkpoint, onnx=args.onnx, device=args.device, expect_skeleton=args.skeleton,
        threads=args.threads,
        backend=args.backend,
    )  # fmt: skip
    with progress(total=stages.frame_total([args.video]), unit="frame", desc="predict") as bar:
        result = predict_video(
            args.video,
            backend,
            poses=args.poses,
            render=args.render,
            rerun=args.rerun,
            box=box,
            max_side=args.max_side,
            config=config,
            progress=bar.update,
            detector=PersonDetector(threads=args.threads or None, model=args.detector, min_score=config.confirm_score),
        )
    print(result.summary(), file=sys.stderr)
    if args.json:
        emit_json(asdict(result) | {"frames_per_s": round(result.frames_per_s, 2)})


def cmd_export(args: argparse.Namespace) -> None:
    from streampose.model.export import export

    paths = export(args.checkpoint, args.onnx, args.safetensors, expect_skeleton=args.skeleton)
    sizes = ", ".join(f"{p} ({p.stat().st_size / 1e6:.1f} MB)" for p in paths[:-2])
    print(f"wrote {sizes}; model card {paths[-2]} and {paths[-1].name}", file=sys.stderr)


def config_option(p: argparse.ArgumentParser, flag: str, kind: type | None = None, **kwargs) -> None:
    """A train option whose default and type (`kind`, the field's `Check`, the default's) are `TrainConfig`'s."""
    name = flag[2:].replace("-", "_")
    check = TrainConfig.__dataclass_fields__[name].metadata.get(CHECK)
    default = getattr(TRAIN, name)
    p.add_argument(flag, type=kind or (check.parse if check else type(default)), default=default, **kwargs)


def add_train_parser(sub, defaults: dict, name: str = "train", about: str = "train the student from the live stream"):
    """The train options (`experiment` takes them too); `defaults` (a --config file's values) replace
    TrainConfig's defaults."""
    from streampose.model.student import STUDENT_SIZES  # imports torch: after `early_train_lock`

    p = sub.add_parser(name, help=about)
    p.add_argument(
        "--config", metavar="run.toml",
        help="TrainConfig's fields as TOML (a run folder's config.toml is one); options given here override it",
    )  # fmt: skip
    p.add_argument(
        "--source", action="append", nargs="+", required=not defaults.get("sources"), metavar="SOURCE",
        help="one or more SOURCEs (repeatable: --source A B --source C); read in a loop",
    )  # fmt: skip
    config_option(p, "--teacher", teacher_spec, help=TEACHER_HELP)
    config_option(p, "--student", choices=list(STUDENT_SIZES), help="student size")
    config_option(p, "--out", help="run folder: checkpoints, metrics.jsonl, tb/ (one run at a time)")
    config_option(p, "--minutes", help="optional wall-clock cap")
    config_option(p, "--min-fill", help="samples in the buffer before training starts")
    config_option(p, "--max-replay", help="wait for fresh data above this replay ratio")
    config_option(p, "--device", help="auto, cpu, cuda, cuda:1, mps")
    config_option(p, "--threads", help="torch CPU threads, or auto")
    config_option(p, "--max-frames", help="per video and pass")
    config_option(p, "--dist-timeout", help="seconds a rank waits for the others (torchrun)")
    config_option(p, "--producers", help="producer count, or auto: from the cores and the trainer's device")
    for flag in ("--steps", "--batch-size", "--lr", "--warmup", "--crop-size", "--buffer-gb", "--seed"):
        config_option(p, flag)
    for flag in ("--stride", "--max-side", "--loss-3d", "--loss-2d", "--loss-vis", "--save-every", "--log-every",
                 "--val-every", "--val-gb", "--val-stride"):  # fmt: skip
        config_option(p, flag)
    config_option(p, "--val", str, action="extend", nargs="+", metavar="SOURCE",
                  help="held-out SOURCEs (repeatable): scored every --val-every steps; best.pt")  # fmt: skip
    config_option(p, "--negatives", help="fraction of training crops that show nobody (calibrates confidence)")
    config_option(p, "--background", help="share of person crops put in front of another background (topdown)")
    config_option(p, "--rotate-degrees", help="in-plane rotation augmentation: +- this many degrees (0: none)")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--compile", action="store_true", help="torch.compile the student")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--json", action="store_true")
    add_source_options(p, loop=False, permission=True)
    p.set_defaults(func=cmd_train, **defaults)
    return p


def cmd_models(args: argparse.Namespace) -> None:
    from streampose import store

    if args.action == "list":
        rows = store.listing()
        for r in rows:
            print(f"{r['name']:24} {r['kind']:8} {r['status']:8} {r['package']:36} {r['licence']}")
        if args.json:
            emit_json({"models": rows, "cache": str(store.cache_dir())})
        return
    for name in args.names or store.fetched_by_default(args.all):
        print(f"{name}: {store.ensure(name)}", file=sys.stderr)


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="run the student alone on every frame of a video")
    p.add_argument("video", metavar="VIDEO", help="a video file or an http(s) URL")
    add_model_options(p)
    p.add_argument("--poses", metavar="poses.jsonl", help="write one JSON line per frame (- for stdout)")
    p.add_argument("--render", metavar="overlay.mp4", help="write an overlay video: 2D skeleton, crop, 3D panel")
    add_rerun_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    p.add_argument(
        "--box",
        metavar="x0,y0,x1,y1",
        help="seed one track on the first frame instead of the detector, frame pixels (--box=-5,... if negative)",
    )
    p.add_argument("--detect-every", type=POSITIVE.parse, metavar="K", help="detector every K frames (tracker default)")
    p.add_argument("--max-persons", type=POSITIVE.parse, default=None, help="follow at most this many people at once")
    p.add_argument("--detector", metavar="yolox_nano.onnx", help="the person detector (default: the model store's)")
    p.add_argument("--skeleton", default=None, help="refuse a model that predicts another skeleton")
    add_frame_options(p, max_side=None, stride=False)
    p.add_argument("--device", default="auto", type=DEVICE.parse, help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--threads", type=Check(int, low=0, words={"auto": 0}).parse, default=1,
        help="CPU inference threads (0 or auto: all); tracking runs one crop at a time, where one thread is as fast "
        "and leaves the other cores to decoding and encoding",
    )  # fmt: skip
    p.set_defaults(func=cmd_predict)


def build_parser(train_defaults: dict | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="streampose", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("label", help="label videos with a teacher")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--teacher", default="topdown", type=teacher_spec, help=TEACHER_HELP)
    add_frame_options(p, max_side=None)
    p.add_argument("--save", metavar="labels.jsonl", help="write the labels as they are made (never pixels)")
    p.add_argument("--render", metavar="overlay.mp4", help="write an overlay video")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    add_source_options(p)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("view", help="draw saved labels over their video")
    p.add_argument("labels", metavar="labels.jsonl")
    p.add_argument("--video", required=True, help="the video the labels came from")
    p.add_argument("--out", metavar="overlay.mp4", help="overlay video")
    p.add_argument("--png", metavar="sheet.png", help="contact sheet of a few frames")
    p.add_argument("--sheet-frames", type=POSITIVE.parse, default=12)
    add_rerun_option(p)
    p.set_defaults(func=cmd_view)

    add_train_parser(sub, train_defaults or {})
    p = add_train_parser(
        sub, train_defaults or {}, "experiment", "train on nested subsets of the sources, scored on --val"
    )
    p.add_argument("--sizes", default="1,2,4", help="first k distinct videos per run (one video: seconds)")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("eval", help="measure a student against the teacher on held-out video")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    add_model_options(p)
    p.add_argument("--teacher", default=None, help="default: the student's teacher")
    add_frame_options(p, max_side=720)
    p.add_argument("--device", default="auto", type=DEVICE.parse, help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object, the last stdout line")
    add_source_options(p, loop=False, permission=True)
    p.set_defaults(func=cmd_eval)

    add_predict_parser(sub)

    p = sub.add_parser("export", help="export a checkpoint's student to ONNX and/or safetensors, with a model card")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", metavar="student.onnx", help="the student for onnxruntime (no PyTorch needed)")
    p.add_argument("--safetensors", metavar="student.safetensors", help="the weights, for PyTorch users")
    p.add_argument("--skeleton", default=None, help="refuse a checkpoint of another skeleton")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list or fetch the model files and sample clips (the model store)")
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("names", nargs="*", metavar="NAME", help="fetch: these (default: every model the defaults use)")
    p.add_argument("--all", action="store_true", help="fetch: the optional models and the sample clips too")
    p.add_argument("--json", action="store_true", help="list: a JSON object as the last stdout line")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    lock = None
    restore_signals = handle_signals()
    try:
        defaults = early_train_options(argv)
        lock = early_train_lock(argv, defaults)
        args = build_parser(defaults).parse_args(argv)
        args.lock = lock
        code = args.func(args)
    except ReportedError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exit_status()
    finally:
        if lock is not None:
            lock.release()
        restore_signals()
    return code or 0
