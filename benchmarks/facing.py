"""Which lever gets the facing of people the student never saw right (issue 27): each arm trains
the demo's student (`small`, 600 steps, batch 32, 128 px) from the same buffer and is scored on the
held-out Sports2D people and on a trained view, facing figures included.

The Pose2Sim clips are labelled once by the `topdown` teacher through a producer's own pipeline
(`pipeline.labelled_samples`: every person, with the teacher's silhouettes, background crops at
the demo's `negatives`), and every arm and seed trains from a buffer holding exactly those
crops; the live demo relabels the same clips on every pass to the same labels. Accuracy, not
speed: the arms can run with other work on the cores (steps, not seconds, set the budget).

    .venv/bin/python benchmarks/facing.py [--arms NAME...] [--seeds 0 1] [--steps 600] [--out facing.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from streampose.demo import EVALS, HELD_OUT_CLIPS, TRAIN_CLIPS
from streampose.engine.config import TrainConfig
from streampose.engine.evaluate import label_eval_set, score
from streampose.engine.train import Trainer
from streampose.model.backends import open_backend
from streampose.poses.metrics import facing_stratum
from streampose.sources import refs
from streampose.sources.samples import sample_clip
from streampose.stream import stages
from streampose.stream.buffer import RingBuffer
from streampose.stream.pipeline import ProducerConfig, labelled_samples
from streampose.teachers import get_teacher, teacher_class

#: Each arm's changes to the demo's TrainConfig.
ARMS = {
    "before (rotation 30, no background)": dict(background=0.0, rotate_degrees=30.0),
    "no rotation": dict(background=0.0, rotate_degrees=0.0),
    "background 0.5": dict(background=0.5, rotate_degrees=30.0),
    "background 0.5, no rotation": dict(background=0.5, rotate_degrees=0.0),
    "background 0.8, no rotation": dict(background=0.8, rotate_degrees=0.0),
    "background 0.5, rotation 10": dict(background=0.5, rotate_degrees=10.0),
    "background 0.8": dict(background=0.8, rotate_degrees=30.0),
    "background 0.5, cutout 0.5": dict(background=0.5, rotate_degrees=30.0, cutout=0.5),
    "cutout 0.5": dict(background=0.0, rotate_degrees=30.0, cutout=0.5),
    "background 0.8, balanced facing": dict(background=0.8, rotate_degrees=30.0, balance_facing=True),
}
KEYS = ("turned_share", "yaw_error_deg", "mpjpe_mm", "rot_mpjpe_mm", "pa_mpjpe_mm", "pck_150mm")


def training_samples(cfg: TrainConfig) -> list:
    """Every crop one pass of the demo's producers puts in the buffer, labelled once."""
    teacher = get_teacher(cfg.teacher)
    producer = ProducerConfig(max_side=cfg.max_side, crop_size=cfg.crop_size, negatives=cfg.negatives)
    try:
        return list(labelled_samples(refs(cfg.sources), teacher, producer, done=lambda *_: None, on_frame=lambda: None))
    finally:
        teacher.close()


def filled_buffer(samples: list, cfg: TrainConfig, joints: int) -> RingBuffer:
    budget = (len(samples) + 1) * RingBuffer.sample_nbytes(joints, cfg.crop_size)
    stratum = facing_stratum(teacher_class(cfg.teacher).skeleton) if cfg.balance_facing else None
    buffer = RingBuffer(joints, cfg.crop_size, budget_bytes=budget, stratum=stratum)
    for sample in samples:
        buffer.put(sample)
    buffer.close()  # nothing more comes: draw from what is there
    return buffer


def run_arm(cfg: TrainConfig, samples: list, evals: dict, joints: int) -> dict:
    Trainer(cfg, buffer=filled_buffer(samples, cfg, joints)).run()
    student = open_backend(checkpoint=str(Path(cfg.out) / "last.pt"), device="cpu")
    out = {}
    for name, data in evals.items():
        result, _ = score(lambda crops: student(crops)["joints3d"], data, student.mean_pose)
        out[name] = {k: result[k] for k in KEYS} | {f"baseline_{k}": result[f"baseline_{k}"] for k in KEYS}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default="facing.json")
    args = parser.parse_args()

    base = TrainConfig(
        sources=[str(sample_clip(c)) for c in TRAIN_CLIPS], steps=args.steps, warmup=50, save_every=10**9,
        log_every=50, producers=1,
    )  # fmt: skip
    samples = training_samples(base)
    joints = len(samples[0].visibility)
    masked = sum(s.mask is not None for s in samples)
    print(f"{len(samples)} training crops ({masked} with a silhouette)", file=sys.stderr)
    evals = {
        name: label_eval_set(stages.videos(refs([str(sample_clip(clip))])), base.teacher, stride=2)
        for name, clip in EVALS.items()
    }
    report = {"train_clips": TRAIN_CLIPS, "held_out": HELD_OUT_CLIPS, "crops": len(samples), "arms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for arm in args.arms:
            runs = [
                run_arm(
                    replace(base, seed=seed, out=f"{tmp}/{len(report['arms'])}-{seed}", **ARMS[arm]),
                    samples,
                    evals,
                    joints,
                )  # fmt: skip
                for seed in args.seeds
            ]
            report["arms"][arm] = {"seeds": args.seeds, "runs": runs}
            for name in evals:
                figures = "  ".join(f"{k} " + "/".join(f"{r[name][k]:.2f}" for r in runs) for k in KEYS)
                print(f"{arm:40} {name:32} {figures}", flush=True)
            Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({"out": args.out}))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
