"""`streampose` command line: label, view, train, eval.

Each subcommand parses its options here and calls into the modules that do the work.
A StreamPoseError (bad input, a missing dependency) becomes one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import cv2
from tqdm import tqdm

from streampose import sources
from streampose.engine.distributed import RankFailure
from streampose.errors import StreamPoseError
from streampose.poses.labels import load_labels, save_labels
from streampose.poses.skeletons import get_skeleton
from streampose.stream import stages
from streampose.stream.buffer import ProducerError
from streampose.stream.decode import decode_frames, probe
from streampose.teachers import TEACHERS, get_teacher
from streampose.viz.render import VideoWriter, contact_sheet, overlay_frame, save_png


def progress(disable: bool = False, **kwargs) -> tqdm:
    """A progress bar on an interactive terminal, silent otherwise (logs, CI, pipes)."""
    return tqdm(disable=disable or not sys.stderr.isatty(), dynamic_ncols=True, **kwargs)


def emit_json(result: dict) -> None:
    """The machine-readable result: one JSON object, always the last line of stdout."""
    print(json.dumps(result), flush=True)


def add_source_options(p: argparse.ArgumentParser, loop: bool = True) -> None:
    g = p.add_argument_group(
        "sources",
        "SOURCE is a file, a folder, an http(s) URL, @list.txt (one source per line), pexels:QUERY or "
        "commons:QUERY. Pexels' terms forbid training ML models on its content without Pexels' permission; "
        "Wikimedia Commons media are freely licensed.",
    )
    g.add_argument("--max-videos", type=int, default=None, help="stop after this many videos")
    if loop:
        g.add_argument("--loop", action="store_true", help="keep paging search sources for new videos forever")
    g.add_argument("--orientation", choices=["landscape", "portrait", "square"], default=None)
    g.add_argument("--min-duration", type=float, default=None, help="seconds (search sources)")
    g.add_argument("--max-duration", type=float, default=None, help="seconds (search sources)")
    g.add_argument("--target-height", type=int, default=480, help="preferred rendition's short side, pixels")
    g.add_argument("--max-video-mb", type=float, default=500.0, help="skip videos larger than this")


def source_filters(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("orientation", "min_duration", "max_duration", "target_height")}


def source_videos(args: argparse.Namespace, specs: list[str]):
    """Pipeline head shared by label and eval: refs resolved lazily, fetched one at a time."""
    stream = sources.refs(
        specs,
        max_videos=args.max_videos,
        loop=getattr(args, "loop", False),
        filters=sources.SourceFilters(**source_filters(args)),
    )
    return stages.videos(stream, max_bytes=int(args.max_video_mb * 1e6))


def cmd_label(args: argparse.Namespace) -> None:
    teacher = get_teacher(args.teacher)
    skeleton = teacher.skeleton
    start = time.perf_counter()
    all_labels = []
    counts = dict(videos=0, frames=0, labelled_frames=0, persons=0)
    tracks: set[tuple[int, int]] = set()  # (video number, track id): ids restart with every video
    writer, render_size = None, None
    used: list[dict] = []
    bar = progress(unit="frame", desc="label")
    try:
        stream = stages.frames(
            source_videos(args, args.sources), stride=args.stride, max_frames=args.max_frames, max_side=args.max_side
        )
        last_video = None
        for video, frame, labels in stages.labelled(teacher, stream):
            if video is not last_video:
                counts["videos"] += 1
                last_video = video
                used.append({"id": video.id, **video.meta})
                if args.render and writer is None:
                    writer = VideoWriter(args.render, fps=probe(video.data, video.id).fps / args.stride)
            counts["frames"] += 1
            counts["labelled_frames"] += bool(labels.persons)
            counts["persons"] += len(labels.persons)
            tracks.update((counts["videos"], p.track_id) for p in labels.persons)
            all_labels.append(labels)
            if writer:
                caption = f"{Path(video.id).name} #{frame.index}"
                image = overlay_frame(frame.image, labels.persons, skeleton, caption=caption, by_track=True)
                render_size = render_size or (image.shape[1], image.shape[0])
                writer.write(cv2.resize(image, render_size) if image.shape[1::-1] != render_size else image)
            bar.update()
    finally:
        bar.close()
        if writer:
            writer.close()
        teacher.close()
    seconds = time.perf_counter() - start
    if args.save:
        save_labels(args.save, teacher=teacher.name, skeleton=skeleton.name, frames=all_labels, videos=used)
    print(
        f"labelled {counts['labelled_frames']}/{counts['frames']} frames of {counts['videos']} video(s), "
        f"{counts['persons']} persons, {counts['frames'] / seconds:.1f} frames/s"
        + (f"; labels in {args.save}" if args.save else "")
        + (f"; overlay in {args.render}" if args.render else ""),
        file=sys.stderr,
    )
    if args.json:
        emit_json(
            {
                **counts,
                "tracks": len(tracks),
                "joints": skeleton.num_joints,
                "skeleton": skeleton.name,
                "teacher": teacher.name,
                "seconds": round(seconds, 3),
                "frames_per_s": round(counts["frames"] / seconds, 2),
            }
        )


def cmd_view(args: argparse.Namespace) -> None:
    header, frames = load_labels(args.labels)
    skeleton = get_skeleton(header["skeleton"])
    video = sources.load(args.video)
    by_index = {f.index: f for f in frames if f.source == video.id}
    if not by_index:
        if len({f.source for f in frames}) > 1:
            raise StreamPoseError(f"{args.labels} holds no labels for {args.video}")
        by_index = {f.index: f for f in frames}  # one video, perhaps labelled from another path or URL
    if not args.out and not args.png:
        raise StreamPoseError("nothing to do: give --out overlay.mp4 and/or --png sheet.png")
    fps = probe(video.data, video.id).fps
    sheet_every = max(1, len(by_index) // args.sheet_frames)
    sheet, shown = [], 0
    writer = VideoWriter(args.out, fps=fps) if args.out else None
    try:
        for frame in progress(iterable=decode_frames(video.data, video.id), unit="frame", desc="view"):
            labels = by_index.get(frame.index)
            if labels is None:
                continue
            image = overlay_frame(frame.image, labels.persons, skeleton, caption=f"#{frame.index}", by_track=True)
            if writer:
                writer.write(image)
            if args.png and shown % sheet_every == 0 and len(sheet) < args.sheet_frames:
                sheet.append(image)
            shown += 1
    finally:
        if writer:
            writer.close()
    if args.png:
        save_png(contact_sheet(sheet), args.png)
    print(
        f"drew {shown} labelled frames"
        + (f" to {args.out}" if args.out else "")
        + (f", sheet {args.png}" if args.png else ""),
        file=sys.stderr,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from streampose.engine.train import TrainConfig, train

    cfg = TrainConfig(
        sources=args.source,
        filters=source_filters(args),
        **{k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and k != "sources"},
    )
    sources.refs(cfg.sources).close()  # fail now, with a clear message, on a bad source
    get_teacher(cfg.teacher).close()  # fail now, with a clear message, if the teacher cannot run
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 shows progress and JSON
    with progress(total=cfg.steps, unit="step", desc="train", disable=not main_rank) as bar:
        result = train(cfg, progress=bar)
    losses = f"loss {result['first_loss']:.4f} -> {result['last_loss']:.4f}, " if result["last_loss"] else ""
    print(
        (f"rank {result['rank']}/{result['world_size']}: " if result["world_size"] > 1 else "")
        + f"step {result['step']}: {losses}{result['samples_per_s']:.0f} samples/s, {result['seconds']:.0f} s; "
        f"checkpoint {result['checkpoint']}" + (" (interrupted, saved)" if result["interrupted"] else ""),
        file=sys.stderr,
    )
    if args.json and main_rank:
        emit_json({k: v for k, v in result.items() if k != "buffer"} | {"buffer_fill": result["buffer"]["fill"]})
    return 130 if result["interrupted"] else 0


def cmd_eval(args: argparse.Namespace) -> None:
    from streampose.engine.evaluate import evaluate
    from streampose.engine.train import pick_device

    with progress(unit="frame", desc="eval") as bar:
        result = evaluate(
            args.checkpoint,
            source_videos(args, args.sources),
            teacher=args.teacher,
            stride=args.stride,
            max_frames=args.max_frames,
            max_side=args.max_side,
            device=str(pick_device(args.device)),
            progress=bar,
        )
    if result["persons"]:
        print(
            f"{result['persons']} persons in {result['frames']} frames: MPJPE {result['mpjpe_mm']:.0f} mm "
            f"(mean pose {result['baseline_mpjpe_mm']:.0f}), PA-MPJPE {result['pa_mpjpe_mm']:.0f} mm "
            f"(mean pose {result['baseline_pa_mpjpe_mm']:.0f}), PCK@150mm {result['pck_150mm']:.2f}",
            file=sys.stderr,
        )
    if args.json:
        emit_json(result)


def cmd_predict(args: argparse.Namespace) -> None:
    from streampose.engine.predict import open_backend, parse_box, predict_video
    from streampose.engine.train import pick_device

    box = parse_box(args.box) if args.box is not None else None
    backend = open_backend(
        checkpoint=args.checkpoint,
        onnx=args.onnx,
        device=str(pick_device(args.device)),
        expect_skeleton=args.skeleton,
        threads=args.threads,
    )
    with progress(unit="frame", desc="predict") as bar:
        result = predict_video(
            args.video, backend, args.out, json_path=args.json, box=box, max_side=args.max_side, progress=bar.update
        )
    print(
        f"{result.frames} frames ({backend.name}, {result.skeleton}, {result.crop_size} px crops): "
        f"{result.tracked} tracked, {result.reinits} (re)initialisations, mean confidence "
        f"{result.mean_confidence:.2f}, {result.frames_per_s:.1f} frames/s overall, "
        f"tracking alone {result.frames / max(result.tracker_seconds, 1e-9):.0f} frames/s; "
        f"wrote {', '.join(result.outputs)}",
        file=sys.stderr,
    )


def cmd_export(args: argparse.Namespace) -> None:
    from streampose.model.checkpoint import load_checkpoint
    from streampose.model.export import export_onnx

    ckpt = load_checkpoint(args.checkpoint)
    if args.skeleton and ckpt["skeleton"] != args.skeleton:
        raise StreamPoseError(
            f"{args.checkpoint}: its student predicts skeleton {ckpt['skeleton']}, not {args.skeleton}"
        )
    path = export_onnx(ckpt, args.onnx)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, skeleton {ckpt['skeleton']})", file=sys.stderr)


def cmd_models(args: argparse.Namespace) -> None:
    from streampose import store

    if args.action == "list":
        rows = store.listing()
        for r in rows:
            print(f"{r['name']:24} {r['kind']:8} {r['status']:8} {r['package']:26} {r['licence']}")
        if args.json:
            emit_json({"models": rows, "cache": str(store.cache_dir())})
        return
    for name in args.names or [n for n, a in store.ASSETS.items() if args.all or a.kind != "clip"]:
        print(f"{name}: {store.ensure(name)}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streampose", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("label", help="label videos with a teacher")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--teacher", default="mediapipe", choices=sorted(TEACHERS))
    p.add_argument("--stride", type=int, default=1, help="label every n-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="per video, after stride")
    p.add_argument("--max-side", type=int, default=None, help="scale frames so the longest side is at most this")
    p.add_argument("--save", metavar="labels.pt", help="write the labels (never pixels)")
    p.add_argument("--render", metavar="overlay.mp4", help="write an overlay video")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    add_source_options(p)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("view", help="draw saved labels over their video")
    p.add_argument("labels", metavar="labels.pt")
    p.add_argument("--video", required=True, help="the video the labels came from")
    p.add_argument("--out", metavar="overlay.mp4", help="overlay video")
    p.add_argument("--png", metavar="sheet.png", help="contact sheet of a few frames")
    p.add_argument("--sheet-frames", type=int, default=12)
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("train", help="train the student from the live stream")
    p.add_argument("--source", action="append", required=True, help="a SOURCE (repeatable); read in a loop")
    p.add_argument("--teacher", default="mediapipe", choices=sorted(TEACHERS))
    p.add_argument("--student", default="small", help="student size (micro, small, base)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--minutes", type=float, default=None, help="optional wall-clock cap")
    p.add_argument("--out", default="runs/train", help="run folder: checkpoints, metrics.jsonl, tb/")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--buffer-gb", type=float, default=1.0)
    p.add_argument("--min-fill", type=int, default=256, help="samples in the buffer before training starts")
    p.add_argument("--max-replay", type=float, default=None, help="wait for fresh data above this replay ratio")
    p.add_argument("--producers", type=int, default=1)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--max-side", type=int, default=720)
    p.add_argument("--loss-3d", type=float, default=1.0)
    p.add_argument("--loss-2d", type=float, default=1.0)
    p.add_argument("--loss-vis", type=float, default=0.1)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--compile", action="store_true", help="torch.compile the student")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-frames", type=int, default=None, help="per video and pass")
    p.add_argument("--dist-timeout", type=float, default=300.0, help="seconds a rank waits for the others (torchrun)")
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--json", action="store_true")
    add_source_options(p, loop=False)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="measure a student against the teacher on held-out video")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--teacher", default=None, help="default: the checkpoint's teacher")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--max-side", type=int, default=720)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    add_source_options(p, loop=False)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="run the student alone on every frame of a video")
    p.add_argument("video", metavar="VIDEO", help="a video file or an http(s) URL")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a training checkpoint (runs in PyTorch)")
    model.add_argument("--onnx", metavar="student.onnx", help="an exported student (runs in onnxruntime)")
    p.add_argument("--out", required=True, metavar="overlay.mp4", help="overlay video: 2D skeleton, crop, 3D panel")
    p.add_argument("--json", metavar="poses.jsonl", help="one JSON line per frame")
    p.add_argument(
        "--box",
        metavar="x0,y0,x1,y1",
        help="the person on the first frame, frame pixels (--box=-5,... if negative)",
    )
    p.add_argument("--skeleton", default=None, help="refuse a model that predicts another skeleton")
    p.add_argument("--max-side", type=int, default=None, help="scale frames so the longest side is at most this")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU inference threads (0: all); tracking runs one crop at a time, where one thread is as fast "
        "and leaves the other cores to decoding and encoding",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a checkpoint's student to ONNX")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", required=True, metavar="student.onnx")
    p.add_argument("--skeleton", default=None, help="refuse a checkpoint of another skeleton")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list or fetch the model files and sample clips (the model store)")
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("names", nargs="*", metavar="NAME", help="fetch: these (default: every model file)")
    p.add_argument("--all", action="store_true", help="fetch: the sample clips too")
    p.add_argument("--json", action="store_true", help="list: a JSON object as the last stdout line")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        code = args.func(args)
    except StreamPoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ProducerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e.__cause__, StreamPoseError) else 1
    except RankFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
