"""`streampose eval`: the student against the teacher on held-out video.

The teacher labels each frame, the same crops the trainer would see are cut (without
augmentation), and the student predicts from the crop alone. The baseline predicts the mean
training pose (stored in the checkpoint) for everyone: a student that does not beat it has
learnt nothing about the person in front of it.

The student runs through `model.backends`, so a checkpoint (PyTorch) and its exported ONNX model
(onnxruntime) are evaluated by the same code and agree to float rounding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from streampose import sources
from streampose.errors import StreamPoseError
from streampose.model.backends import Backend
from streampose.poses.metrics import pose_metrics
from streampose.stream import stages
from streampose.stream.crops import person_crops
from streampose.teachers import get_teacher, teacher_class

#: Crops per student call: `eval` picks its backend for batches this big (`backends.fastest_backend`).
EVAL_BATCH = 64


def evaluate(
    backend: Backend,
    videos: Iterable[sources.Video],
    *,
    teacher: str | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    max_side: int | None = 720,
    batch_size: int = EVAL_BATCH,
    keep_examples: int = 0,
    on_frame: Callable[[int], object] | None = None,
) -> dict:
    """Metrics of the student (`backend`, see `model.backends.open_backend`) and of the mean-pose
    baseline on every labelled person in `videos`; `teacher` defaults to the student's own."""
    teacher_name = teacher or backend.teacher
    skeleton = teacher_class(teacher_name).skeleton
    if backend.skeleton.name != skeleton.name:
        raise StreamPoseError(
            f"the student predicts skeleton {backend.skeleton.name}, but teacher {teacher_name} labels {skeleton.name}"
        )
    start = time.perf_counter()
    frames_seen = 0

    video_ids = set()

    def counted(items):
        nonlocal frames_seen
        for video, frame, labels in items:
            frames_seen += 1
            video_ids.add(video.id)
            if on_frame is not None:
                on_frame(len(labels.persons))
            yield frame.image, labels

    labeller = get_teacher(teacher_name)
    try:
        stream = stages.prefetch(stages.frames(videos, stride=stride, max_frames=max_frames, max_side=max_side))
        samples = list(person_crops(counted(stages.labelled(labeller, stream)), size=backend.crop_size))
    finally:
        labeller.close()
    if not samples:
        return {"persons": 0, "frames": frames_seen, "error": "the teacher found nobody to evaluate on"}

    batches = range(0, len(samples), batch_size)
    pred = np.concatenate(
        [backend(np.stack([s.image for s in samples[i : i + batch_size]]))["joints3d"] for i in batches]
    )
    target = np.stack([s.joints3d for s in samples])
    vis = np.stack([s.visibility for s in samples])
    result = pose_metrics(pred, target, vis, skeleton)
    if backend.mean_pose is not None:  # absent from ONNX files exported before it was in their metadata
        baseline = pose_metrics(np.broadcast_to(backend.mean_pose, target.shape).copy(), target, vis, skeleton)
        result |= {f"baseline_{k}": v for k, v in baseline.items()}
    result |= {
        "backend": backend.name,
        "persons": len(samples),
        "frames": frames_seen,
        "videos": len(video_ids),
        "skeleton": skeleton.name,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if keep_examples:
        picks = np.linspace(0, len(samples) - 1, keep_examples).astype(int)
        result["examples"] = [
            {"image": samples[i].image, "teacher": target[i], "student": pred[i], "visibility": vis[i]} for i in picks
        ]
    return result


def summary_line(result: dict) -> str:
    """One line for people: a result of `evaluate` with persons, beside the mean pose's where known."""

    def mm(key: str) -> str:
        mean = f" (mean pose {result['baseline_' + key]:.0f})" if "baseline_" + key in result else ""
        return f"{result[key]:.0f} mm{mean}"

    return (
        f"{result['persons']} persons in {result['frames']} frames ({result['backend']}): MPJPE {mm('mpjpe_mm')}, "
        f"PA-MPJPE {mm('pa_mpjpe_mm')}, PCK@150mm {result['pck_150mm']:.2f}"
    )
