"""The top-down multi-person teacher against the single-person MediaPipe teacher, on the same clips.

Figures: YOLOX-Nano detector ms per frame; BlazePose ms per person crop, one crop per call and
a batch of crops per call, for each landmark model; how far the heavy (or lite) model's joints
land from the full model's on the same crops; and for whole clips, label frames/s, persons/s,
persons per labelled frame and distinct track ids of every teacher, run one after the other in
this process (not timed repeats: one pass per clip and teacher, so read them next to `cores`
and `load1`).

    .venv/bin/python benchmarks/multi_person.py [--clips CLIP...] [--max-frames N] [--models heavy lite]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from benchutil import load1, timed_repeats

from streampose import sources
from streampose.detect.boxes import framing
from streampose.engine.label import label
from streampose.sources.samples import sample_clip
from streampose.stream import stages
from streampose.stream.crops import cut_square
from streampose.stream.decode import decode_frames
from streampose.teachers import get_teacher
from streampose.teachers.blazepose import CROP


def person_crops(teacher, clip: str) -> np.ndarray:
    """The detector's person crops of one frame of `clip`, as the teacher cuts them."""
    frame = next(iter(decode_frames(sample_clip(clip).read_bytes(), clip, stride=30))).image
    boxes, _ = teacher.detector(frame)
    return frame, np.stack([cut_square(frame, *framing(b, teacher.config.margin), CROP)[0] for b in boxes])


def component_speeds(teacher, clip: str) -> dict:
    """Detector ms/frame and landmarker ms/person (batch 1 and batched) on one frame of `clip`."""
    frame, crops = person_crops(teacher, clip)
    detector, landmarker = teacher.detector, teacher.landmarker
    det = timed_repeats(lambda: detector(frame), repeats=5)
    one = timed_repeats(lambda: [landmarker(c[None]) for c in crops], units_per_step=len(crops), repeats=5)
    batched = timed_repeats(lambda: landmarker(crops), units_per_step=len(crops), repeats=5)
    return {
        "clip": clip,
        "model": landmarker.model,
        "frame": list(frame.shape[:2]),
        "persons_in_frame": len(crops),
        "detector_ms_per_frame": round(1000 / det.median, 2),
        "landmarker_ms_per_person_batch1": round(1000 / one.median, 2),
        "landmarker_ms_per_person_batched": round(1000 / batched.median, 2),
        "cores": round(float(np.median(det.cores + one.cores)), 2),
    }


def agreement(teacher, other, clips: list[str]) -> dict:
    """How far `other`'s landmark model lands from `teacher`'s on the same person crops: image
    joints in crop pixels (of 256) and root-relative world joints in mm, visible joints only."""
    image, world = [], []
    for clip in clips:
        _, crops = person_crops(teacher, clip)
        a, b = teacher.landmarker(crops), other.landmarker(crops)
        seen = (a.visibility >= 0.5) & (b.visibility >= 0.5)
        image.append(np.linalg.norm(a.joints2d - b.joints2d, axis=-1)[seen])
        world.append(1000 * np.linalg.norm(a.joints3d - b.joints3d, axis=-1)[seen])
    image, world = np.concatenate(image), np.concatenate(world)
    return {
        "models": f"{teacher.landmarker.model} vs {other.landmarker.model}",
        "joints": len(image),
        "image_px_median": round(float(np.median(image)), 2),
        "image_px_mean": round(float(image.mean()), 2),
        "world_mm_median": round(float(np.median(world)), 1),
        "world_mm_mean": round(float(world.mean()), 1),
    }


def label_clip(teacher, clip: str, max_frames: int | None) -> dict:
    """One clip through `engine.label.label`, what `streampose label` runs (decoding a few frames
    ahead in a thread), with its wall time and the cores it used."""
    c0 = time.process_time()
    counts = label(stages.videos(sources.refs([str(sample_clip(clip))])), teacher, max_frames=max_frames)
    wall = counts.seconds
    return {
        "teacher": teacher.name,
        "clip": clip,
        "frames": counts.frames,
        "labelled_frames": counts.labelled_frames,
        "persons": counts.persons,
        "tracks": counts.tracks,
        "persons_per_labelled_frame": round(counts.persons / max(counts.labelled_frames, 1), 2),
        "frames_per_s": round(counts.frames / wall, 2),
        "persons_per_s": round(counts.persons / wall, 2),
        "cores": round((time.process_time() - c0) / wall, 2),
        "load1": round(load1(), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", default=["pose2sim-multi-cam01", "sports2d"])
    parser.add_argument("--max-frames", type=int, default=None, help="per clip")
    parser.add_argument("--models", nargs="*", default=["heavy"], help="landmark models to compare with full")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    teachers = {name: get_teacher(name) for name in ("mediapipe", "topdown", *(f"topdown:{m}" for m in args.models))}
    try:
        results = {"components": [], "agreement": [], "label": []}
        for name, teacher in teachers.items():
            if name.startswith("topdown"):
                results["components"].append(component_speeds(teacher, args.clips[0]))
            if name.startswith("topdown:"):
                results["agreement"].append(agreement(teachers["topdown"], teacher, args.clips))
        for clip in args.clips:
            for teacher in teachers.values():
                results["label"].append(label_clip(teacher, clip, args.max_frames))
    finally:
        for teacher in teachers.values():
            teacher.close()
    print("| clip | teacher | frames/s | persons/s | persons per labelled frame | labelled | tracks | cores |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["label"]:
        print(
            f"| {r['clip']} | {r['teacher']} | {r['frames_per_s']} | {r['persons_per_s']} | "
            f"{r['persons_per_labelled_frame']} | {r['labelled_frames']}/{r['frames']} | {r['tracks']} | {r['cores']} |"
        )
    for row in results["components"] + results["agreement"]:
        print(json.dumps(row))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
