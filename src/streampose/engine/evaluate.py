"""`streampose eval`: the student against the teacher on held-out video.

The teacher labels each frame, the same crops the trainer would see are cut (without
augmentation), and the student predicts from the crop alone. The baseline predicts the mean
training pose (stored in the checkpoint) for everyone: a student that does not beat it has
learnt nothing about the person in front of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch

from streampose import sources
from streampose.model.checkpoint import load_checkpoint, student_from
from streampose.model.student import preferred_layout
from streampose.poses.metrics import pose_metrics
from streampose.stream import stages
from streampose.stream.augment import normalize_images
from streampose.stream.crops import person_crops
from streampose.teachers import get_teacher, teacher_class


@torch.no_grad()
def evaluate(
    checkpoint: str,
    videos: Iterable[sources.Video],
    *,
    teacher: str | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    max_side: int | None = 720,
    batch_size: int = 64,
    device: str = "cpu",
    keep_examples: int = 0,
    progress=None,
) -> dict:
    """Metrics of the student and of the mean-pose baseline on every labelled person in `videos`."""
    ckpt = load_checkpoint(checkpoint)
    teacher_name = teacher or ckpt["teacher"]
    skeleton = teacher_class(teacher_name).skeleton
    model = student_from(ckpt, expect_skeleton=skeleton.name).to(device)
    channels_last, amp_dtype = preferred_layout(model.config.name, device, train=False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    crop_size = ckpt["preprocess"]["crop_size"]
    mean_pose = np.asarray(ckpt["mean_pose"], dtype=np.float32)
    start = time.perf_counter()
    frames_seen = 0

    video_ids = set()

    def counted(items):
        nonlocal frames_seen
        for video, frame, labels in items:
            frames_seen += 1
            video_ids.add(video.id)
            if progress is not None:
                progress.update()
            yield frame.image, labels

    labeller = get_teacher(teacher_name)
    try:
        stream = stages.frames(videos, stride=stride, max_frames=max_frames, max_side=max_side)
        samples = list(person_crops(counted(stages.labelled(labeller, stream)), size=crop_size))
    finally:
        labeller.close()
    if not samples:
        return {"persons": 0, "frames": frames_seen, "error": "the teacher found nobody to evaluate on"}

    preds = []
    for i in range(0, len(samples), batch_size):
        images = np.stack([s.image for s in samples[i : i + batch_size]])
        with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
            preds.append(model(normalize_images(images).to(device))["joints3d"].float().cpu().numpy())
    pred = np.concatenate(preds)
    target = np.stack([s.joints3d for s in samples])
    vis = np.stack([s.visibility for s in samples])
    student = pose_metrics(pred, target, vis, skeleton)
    baseline = pose_metrics(np.broadcast_to(mean_pose, target.shape).copy(), target, vis, skeleton)
    result = {
        **student,
        **{f"baseline_{k}": v for k, v in baseline.items()},
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
