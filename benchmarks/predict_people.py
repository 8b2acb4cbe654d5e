"""How well `streampose predict` finds and follows people on its own (no `--box`), on the sample clips.

Why this exists: issue 14's goals are counts, not speeds: on each Pose2Sim multi-person camera at
least 1.8 persons per frame (a man and a composited woman in front, a woman at the back), and on
Sports2D the walker followed in at least 90 % of the frames he is in. Persons per frame alone
would reward counting someone twice, so each clip also reports the frames with two or more
persons and the distinct track ids.

The walker: the top-down teacher labels every frame of Sports2D at the same `--max-side`; he is
the teacher's track whose box centre travels farthest (he crosses the whole frame; the man on the
box stands, then jumps down). A frame he is in counts as followed when some predicted person's
box has IoU > 0.3 with the teacher's box of him.

    .venv/bin/python benchmarks/predict_people.py --checkpoint runs/NAME/last.pt [--detect-every K] [--set NAME=VALUE]
        [--walker-labels walker.json] [--out people.json]

`--walker-labels` keeps the teacher's boxes of the walker (computed once if the file is absent).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

CAMERAS = [f"pose2sim-multi-cam0{k}" for k in range(1, 5)]
WALKER_CLIP = "sports2d"
WALKER_IOU = 0.3


def walker_boxes(max_side: int) -> dict[int, list[float]]:
    """Frame index -> the top-down teacher's box of the Sports2D walker (see the module docstring)."""
    from streampose import sources
    from streampose.poses.metrics import farthest_travelled
    from streampose.sources.samples import sample_clip
    from streampose.stream import stages
    from streampose.teachers.topdown import TopDownTeacher

    teacher = TopDownTeacher()
    tracks: dict[int, dict[int, np.ndarray]] = {}
    try:
        frames = stages.frames(stages.videos(sources.refs([str(sample_clip(WALKER_CLIP))])), max_side=max_side)
        for _, frame, labels in stages.labelled(teacher, frames):
            for p in labels.persons:
                tracks.setdefault(p.track_id, {})[frame.index] = p.box
    finally:
        teacher.close()
    return {i: [float(v) for v in b] for i, b in farthest_travelled(tracks).items()}


def run_clip(clip: str, backend, args: argparse.Namespace) -> list[dict]:
    """`predict_video` on one sample clip; its JSON lines."""
    from streampose.engine.predict import predict_video
    from streampose.engine.tracking import TrackerConfig
    from streampose.sources.samples import sample_clip

    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.detect_every is not None:
        overrides["detect_every"] = args.detect_every
    config = TrackerConfig(**overrides)
    with tempfile.TemporaryDirectory() as tmp:
        poses = Path(tmp) / "poses.jsonl"
        render = str(Path(args.overlays) / f"{clip}.mp4") if args.overlays else None
        clip_path = str(sample_clip(clip))
        predict_video(clip_path, backend, poses=poses, render=render, max_side=args.max_side, config=config)
        return [json.loads(line) for line in poses.read_text().splitlines()]


def counts(lines: list[dict]) -> dict:
    """Persons per frame, frames with two or more, distinct track ids."""
    persons = [len(line["persons"]) for line in lines]
    return {
        "frames": len(lines),
        "persons_per_frame": round(float(np.mean(persons)), 3),
        "two_or_more": sum(n >= 2 for n in persons),
        "tracks": len({p["id"] for line in lines for p in line["persons"]}),
    }


def walker_followed(lines: list[dict], walker: dict[int, list[float]]) -> dict:
    """Frames the walker is in where some predicted box overlaps his (IoU > 0.3), and by how many
    ids; and, to tell following from posing, the frames where some track's crop is on him (his box
    centre inside the square the student looked at, the square at most 2x his height)."""
    from streampose.detect.boxes import iou_matrix
    from streampose.poses.metrics import square_on

    hits, on_him, ids = 0, 0, set()
    for line in lines:
        truth = walker.get(line["frame"])
        if truth is None:
            continue
        truth = np.array(truth)
        overlaps = [(float(iou_matrix(np.array(p["box"]), truth)[0, 0]), p["id"]) for p in line["persons"]]
        best = max(overlaps, default=(0.0, -1))
        if best[0] > WALKER_IOU:
            hits += 1
            ids.add(best[1])
        on_him += any(square_on(p["crop"], truth) for p in line["persons"])
    n = len(walker)
    return {
        "walker_frames": n,
        "walker_followed": round(hits / n, 3),
        "walker_ids": len(ids),
        "walker_crop_on_him": round(on_him / n, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint")
    model.add_argument("--onnx")
    parser.add_argument("--max-side", type=int, default=720)
    parser.add_argument("--detect-every", type=int, default=None, help="default: TrackerConfig's")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a TrackerConfig field")
    parser.add_argument("--walker-labels", help="cache of the teacher's walker boxes (JSON)")
    parser.add_argument("--overlays", help="also write each clip's overlay video into this folder")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    from streampose.model.backends import open_backend

    cache = Path(args.walker_labels) if args.walker_labels else None
    if cache is not None and cache.exists():
        walker = {int(k): v for k, v in json.loads(cache.read_text()).items()}
    else:
        walker = walker_boxes(args.max_side)
        if cache is not None:
            cache.write_text(json.dumps(walker))
    if args.overlays:
        Path(args.overlays).mkdir(parents=True, exist_ok=True)
    backend = open_backend(checkpoint=args.checkpoint, onnx=args.onnx, threads=1)
    rows = []
    for clip in [*CAMERAS, WALKER_CLIP]:
        lines = run_clip(clip, backend, args)
        row = {"clip": clip, **counts(lines)}
        if clip == WALKER_CLIP:
            row |= walker_followed(lines, walker)
        rows.append(row)
        print(" ".join(f"{k} {v}" for k, v in row.items()), file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
