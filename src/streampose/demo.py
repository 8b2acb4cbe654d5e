"""`make demo`: the main job on the offline defaults, on sample clips of real people.

Held out by person, not by clip: the student trains from the live stream of every Pose2Sim clip
(the man's recording from four cameras, and the same recording with a rendered woman composited
in; the teacher relabels them on every pass) and is validated while it trains, then evaluated,
on Sports2D, whose two people (outdoors, another recording) it never sees. It is also evaluated
on a view it trained on, to show how well it fits what it saw. Writes `report.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streampose.engine.evaluate import evaluate, summary_line
from streampose.engine.train import TrainConfig, train
from streampose.files import atomic_write
from streampose.interrupts import exit_status, handle_signals
from streampose.model.backends import open_backend
from streampose.model.student import STUDENT_SIZES
from streampose.options import progress, tick
from streampose.sources import refs
from streampose.sources.samples import sample_clip
from streampose.stream import stages
from streampose.teachers import teacher_class
from streampose.viz.report import write_report

#: Trained on: the Pose2Sim man (four views), the person behind him in cam01/02, the rendered woman.
TRAIN_CLIPS = [f"pose2sim-{kind}-cam0{i}" for kind in ("single", "multi") for i in (1, 2, 3, 4)]
#: Held out: the two Sports2D people, in no training clip.
HELD_OUT_CLIPS = ["sports2d"]
EVALS = {
    "trained view (Pose2Sim cam01)": "pose2sim-single-cam01",
    "held-out people (Sports2D)": "sports2d",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streampose.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--student", default=TrainConfig.student, choices=list(STUDENT_SIZES))
    args = parser.parse_args(argv)
    out = Path(args.out)
    handle_signals()  # SIGTERM stops the demo as Ctrl-C does: last.pt saved, no evaluation

    cfg = TrainConfig(
        sources=[str(sample_clip(name)) for name in TRAIN_CLIPS],
        out=str(out),
        student=args.student,
        steps=args.steps,
        min_fill=256,
        buffer_gb=0.5,
        warmup=50,
        save_every=max(100, args.steps // 3),
        val=[str(sample_clip(name)) for name in HELD_OUT_CLIPS],
        val_every=max(50, args.steps // 6),
    )
    print(
        f"training {cfg.student} student for {cfg.steps} steps on {', '.join(TRAIN_CLIPS)}; "
        f"held out: {', '.join(HELD_OUT_CLIPS)}",
        file=sys.stderr,
    )
    with progress(total=cfg.steps, unit="step", desc="train") as bar:
        result = train(cfg, progress=bar)
    if result["interrupted"]:
        print(f"interrupted at step {result['step']}; {result['checkpoint']} saved", file=sys.stderr)
        return exit_status()
    print(
        f"trained {result['step']} steps in {result['seconds']:.0f} s, loss {result['first_loss']:.3f} -> "
        f"{result['last_loss']:.3f}",
        file=sys.stderr,
    )

    evals = {}
    student = open_backend(checkpoint=result["checkpoint"], device=cfg.device)
    for name, clip in EVALS.items():
        with progress(unit="frame", desc=f"eval {name}") as bar:
            evals[name] = evaluate(
                student,
                stages.videos(refs([str(sample_clip(clip))])),
                stride=2,
                keep_examples=3,
                on_frame=lambda n: tick(bar, n),
            )
        print(f"{name}: {summary_line(evals[name])}", file=sys.stderr)
    skeleton = teacher_class(cfg.teacher).skeleton
    report = write_report(out / "report.png", out / "metrics.jsonl", evals, skeleton)
    summary = {name: {k: v for k, v in r.items() if k != "examples"} for name, r in evals.items()}
    atomic_write(out / "eval.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    print(
        f"\nrun folder {out}/:\n  last.pt        the student checkpoint\n  best.pt        the best by held-out PA-MPJPE"
        f"\n  metrics.jsonl  training and validation metrics"
        f"\n  tb/            TensorBoard logs (tensorboard --logdir {out}/tb)\n  eval.json      evaluation results"
        f"\n  {report.name}     loss and validation curves, evaluations, poses",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # during the evaluations
        print("interrupted", file=sys.stderr)
        sys.exit(exit_status())
