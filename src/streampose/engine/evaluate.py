"""`streampose eval`: the student against the teacher on held-out video.

The teacher labels each frame, the same crops the trainer would see are cut (without
augmentation), and the student predicts from the crop alone. The baseline predicts the mean
training pose (stored in the checkpoint) for everyone: a student that does not beat it has
learnt nothing about the person in front of it.

Labelling (`label_eval_set`) and scoring (`score`) are apart so that `train --val` labels its
validation sources once and scores the student on them again and again with the same code.
The student runs through `model.backends`, so a checkpoint (PyTorch) and its exported ONNX model
(onnxruntime) are evaluated by the same code and agree to float rounding.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from streampose import sources
from streampose.errors import StreamPoseError
from streampose.model.backends import Backend
from streampose.poses.metrics import pose_metrics
from streampose.poses.skeletons import Skeleton
from streampose.stream import stages
from streampose.stream.crops import CROP_SIZE, person_crops
from streampose.teachers import get_teacher, teacher_class

#: Crops per student call: `eval` picks its backend for batches this big (`backends.fastest_backend`).
EVAL_BATCH = 64


@dataclass
class EvalSet:
    """Every labelled person of some videos, as arrays held in memory (never written anywhere)."""

    images: np.ndarray  # (N, S, S, 3) uint8 crops
    joints3d: np.ndarray  # (N, J, 3) the teacher's 3D joints
    visibility: np.ndarray  # (N, J)
    skeleton: Skeleton
    frames: int  # frames the teacher saw
    video_ids: frozenset[str]
    truncated: bool = False  # the byte budget stopped the labelling early

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.joints3d.nbytes + self.visibility.nbytes


def label_eval_set(
    videos: Iterable[sources.Video],
    teacher: str,
    *,
    crop_size: int = CROP_SIZE,
    stride: int = 1,
    max_frames: int | None = None,
    max_side: int | None = 720,
    budget_bytes: int | None = None,
    on_frame: Callable[[int], object] | None = None,
) -> EvalSet:
    """The teacher labels `videos` once; their crops are cut as training cuts them, unaugmented.
    Labelling stops (with a warning) once the crops would exceed `budget_bytes`."""
    skeleton = teacher_class(teacher).skeleton
    per_person = crop_size * crop_size * 3 + skeleton.num_joints * 4 * 4
    cap = None if budget_bytes is None else max(1, budget_bytes // per_person)
    frames_seen, video_ids, truncated = 0, set(), False

    def counted(items):
        nonlocal frames_seen
        for video, frame, labels in items:
            frames_seen += 1
            video_ids.add(video.id)
            if on_frame is not None:
                on_frame(len(labels.persons))
            yield frame.image, labels

    samples = []
    labeller = get_teacher(teacher)
    try:
        stream = stages.prefetch(stages.frames(videos, stride=stride, max_frames=max_frames, max_side=max_side))
        for sample in person_crops(counted(stages.labelled(labeller, stream)), size=crop_size):
            if cap is not None and len(samples) >= cap:
                truncated = True
                warnings.warn(f"evaluation set capped at {cap} persons by its byte budget", stacklevel=2)
                break
            samples.append(sample)
    finally:
        labeller.close()
    j = skeleton.num_joints
    return EvalSet(
        images=np.stack([s.image for s in samples]) if samples else np.zeros((0, crop_size, crop_size, 3), np.uint8),
        joints3d=np.stack([s.joints3d for s in samples]) if samples else np.zeros((0, j, 3), np.float32),
        visibility=np.stack([s.visibility for s in samples]) if samples else np.zeros((0, j), np.float32),
        skeleton=skeleton, frames=frames_seen, video_ids=frozenset(video_ids), truncated=truncated,
    )  # fmt: skip


def score(
    predict: Callable[[np.ndarray], np.ndarray],
    data: EvalSet,
    mean_pose: np.ndarray | None,
    batch_size: int = 64,
) -> tuple[dict, np.ndarray]:
    """Metrics of `predict` (uint8 crops -> (B, J, 3) joints) and of the `mean_pose` baseline on
    `data`, and the predictions. The one scoring code of `eval`, the demo and `train --val`."""
    if not len(data.images):
        return {"persons": 0, "frames": data.frames, "error": "the teacher found nobody to evaluate on"}, np.zeros(0)
    pred = np.concatenate([predict(data.images[i : i + batch_size]) for i in range(0, len(data.images), batch_size)])
    result = pose_metrics(pred, data.joints3d, data.visibility, data.skeleton)
    if mean_pose is not None:  # absent from ONNX files exported before it was in their metadata
        mean = np.broadcast_to(mean_pose, data.joints3d.shape).copy()
        baseline = pose_metrics(mean, data.joints3d, data.visibility, data.skeleton)
        result |= {f"baseline_{k}": v for k, v in baseline.items()}
    return result | {"persons": len(data.images), "frames": data.frames, "videos": len(data.video_ids)}, pred


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
    data = label_eval_set(
        videos, teacher_name, crop_size=backend.crop_size, stride=stride, max_frames=max_frames, max_side=max_side,
        on_frame=on_frame,
    )  # fmt: skip
    result, pred = score(lambda crops: backend(crops)["joints3d"], data, backend.mean_pose, batch_size)
    if not result["persons"]:
        return result
    result |= {"backend": backend.name, "skeleton": skeleton.name, "seconds": round(time.perf_counter() - start, 2)}
    if keep_examples:
        picks = np.linspace(0, len(pred) - 1, keep_examples).astype(int)
        result["examples"] = [
            {"image": data.images[i], "teacher": data.joints3d[i], "student": pred[i], "visibility": data.visibility[i]}
            for i in picks
        ]
    return result


def summary_line(result: dict) -> str:
    """One line for people: a result of `evaluate` with persons, beside the mean pose's where known."""

    def mm(key: str) -> str:
        mean = f" (mean pose {result['baseline_' + key]:.0f})" if "baseline_" + key in result else ""
        return f"{result[key]:.0f} mm{mean}"

    return (
        f"{result['persons']} persons in {result['frames']} frames ({result['backend']}): MPJPE {mm('mpjpe_mm')}, "
        f"rotation-aligned {mm('rot_mpjpe_mm')}, PA-MPJPE {mm('pa_mpjpe_mm')}, PCK@150mm {result['pck_150mm']:.2f}, "
        f"facing off by {result['yaw_error_deg']:.0f} deg (median), "
        f"{100 * result['turned_share']:.0f} % turned > 90 deg"
    )
