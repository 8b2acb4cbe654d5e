"""The top-down multi-person teacher against the single-person MediaPipe teacher, on the same clips.

Figures: YOLOX-Nano detector ms per frame; BlazePose ms per person crop, one crop per call and
a batch of crops per call; and for whole clips, label frames/s, persons/s, persons per labelled
frame and distinct track ids of both teachers, run one after the other in this process (they
are not timed repeats: one pass per clip and teacher, so read them next to `cores` and `load1`).

    .venv/bin/python benchmarks/multi_person.py [--clips pose2sim-multi-cam01 sports2d] [--max-frames N]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from benchutil import load1, timed_repeats

from streampose import sources
from streampose.detect.boxes import crop_resized, square_around
from streampose.sources.samples import sample_clip
from streampose.stream import stages
from streampose.stream.decode import decode_frames
from streampose.teachers import get_teacher
from streampose.teachers.topdown import CROP


def component_speeds(teacher, clip: str) -> dict:
    """Detector ms/frame and landmarker ms/person (batch 1 and batched) on one frame of `clip`."""
    frame = next(iter(decode_frames(sample_clip(clip).read_bytes(), clip, stride=30))).image
    detector, landmarker = teacher.detector, teacher.landmarker
    boxes, _ = detector(frame)
    crops = [crop_resized(frame, square_around(b, teacher.config.margin), CROP)[0] for b in boxes]
    det = timed_repeats(lambda: detector(frame), repeats=5)
    one = timed_repeats(lambda: [landmarker([c]) for c in crops], units_per_step=len(crops), repeats=5)
    batched = timed_repeats(lambda: landmarker(crops), units_per_step=len(crops), repeats=5)
    return {
        "clip": clip,
        "frame": list(frame.shape[:2]),
        "persons_in_frame": len(crops),
        "detector_ms_per_frame": round(1000 / det.median, 2),
        "landmarker_ms_per_person_batch1": round(1000 / one.median, 2),
        "landmarker_ms_per_person_batched": round(1000 / batched.median, 2),
        "cores": round(float(np.median(det.cores + one.cores)), 2),
    }


def label_clip(teacher, clip: str, max_frames: int | None) -> dict:
    stream = stages.frames(sources.videos([str(sample_clip(clip))]), max_frames=max_frames)
    frames = labelled = persons = 0
    tracks: set[int] = set()
    t0, c0 = time.perf_counter(), time.process_time()
    for _, _, labels in stages.labelled(teacher, stream):
        frames += 1
        labelled += bool(labels.persons)
        persons += len(labels.persons)
        tracks.update(p.track_id for p in labels.persons)
    wall = time.perf_counter() - t0
    return {
        "teacher": teacher.name,
        "clip": clip,
        "frames": frames,
        "labelled_frames": labelled,
        "persons": persons,
        "tracks": len(tracks),
        "persons_per_labelled_frame": round(persons / max(labelled, 1), 2),
        "frames_per_s": round(frames / wall, 2),
        "persons_per_s": round(persons / wall, 2),
        "cores": round((time.process_time() - c0) / wall, 2),
        "load1": round(load1(), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", default=["pose2sim-multi-cam01", "sports2d"])
    parser.add_argument("--max-frames", type=int, default=None, help="per clip")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    teachers = {name: get_teacher(name) for name in ("mediapipe", "topdown")}
    try:
        results = {"components": component_speeds(teachers["topdown"], args.clips[0]), "label": []}
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
    print(json.dumps(results["components"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
