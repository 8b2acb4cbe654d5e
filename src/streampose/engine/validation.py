"""`train --val`: the student scored on held-out video every few steps, while it trains.

The teacher labels the validation sources once, at the start; their crops and labels stay in
memory (`evaluate.EvalSet`, under `--val-gb`) and never enter the training buffer. Scoring is
`evaluate.score`, the very code of `streampose eval`, on the live student in eval mode. The best
student by validation PA-MPJPE is kept as `best.pt` (PA-MPJPE, because the teacher's raw 3D keeps
each camera's orientation, which a student cannot know from a crop of a new scene).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from streampose.engine.config import TrainConfig
from streampose.engine.evaluate import EvalSet, label_eval_set, score
from streampose.errors import StreamPoseError
from streampose.model.preprocess import normalize_images
from streampose.sources import SourceFilters, refs
from streampose.sources.refs import local_files
from streampose.stream import stages

#: What `best.pt` is chosen by.
BEST_KEY = "val_pa_mpjpe_mm"


def _local_videos(specs: list[str]) -> set[Path]:
    """The local video files `specs` name (folders and @lists expanded); none for URLs and searches."""
    return {Path(f).resolve() for spec in specs for f in local_files([spec]) or []}


def check_disjoint(train_sources: list[str], val_sources: list[str]) -> None:
    """Refuse validation on what is trained on: the same spec, or a local file in both."""
    train_files = _local_videos(train_sources)
    for spec in val_sources:
        if spec in train_sources or _local_videos([spec]) & train_files:
            raise StreamPoseError(
                f"--val {spec} is also a training source: validation must be on video the student never trains on"
            )


def label_validation(cfg: TrainConfig) -> EvalSet:
    """The teacher's labels of `cfg.val`, once (stride `cfg.val_stride`), within `cfg.val_gb`."""
    videos = stages.videos(
        refs(cfg.val, filters=SourceFilters(**cfg.filters)),  # all of them: max_videos is the training's
        max_bytes=int(cfg.max_video_mb * 1e6),
    )
    data = label_eval_set(
        videos, cfg.teacher, crop_size=cfg.crop_size, stride=cfg.val_stride, max_frames=cfg.max_frames,
        max_side=cfg.max_side, budget_bytes=int(cfg.val_gb * 2**30),
    )  # fmt: skip
    if not len(data.images):
        raise StreamPoseError(f"--val {' '.join(cfg.val)}: the teacher found nobody to validate on")
    print(
        f"validation: {len(data.images)} persons in {data.frames} frames of {len(data.video_ids)} videos "
        f"({data.nbytes / 2**20:.0f} MiB in memory)",
        file=sys.stderr,
    )
    return data


@torch.no_grad()
def validate(model: torch.nn.Module, device: torch.device, data: EvalSet, mean_pose: np.ndarray | None) -> dict:
    """`val_`-prefixed metrics of `model` and of the mean-pose baseline on `data`; the model is
    left in the mode it was in."""
    was_training, start = model.training, time.perf_counter()
    model.eval()
    try:
        result, _ = score(
            lambda crops: model(normalize_images(torch.from_numpy(crops).to(device)))["joints3d"].float().cpu().numpy(),
            data,
            mean_pose,
        )
    finally:
        model.train(was_training)
    result["seconds"] = time.perf_counter() - start
    return {f"val_{k}": v for k, v in result.items() if k != "error"}


def best_so_far(metrics_jsonl: Path) -> float:
    """The best validation PA-MPJPE an earlier part of this run logged (resume), else infinity."""
    best = math.inf
    if metrics_jsonl.exists():
        for line in metrics_jsonl.read_text().splitlines():
            try:
                value = json.loads(line).get(BEST_KEY)
            except ValueError:  # a line cut by a crash
                continue
            if isinstance(value, int | float) and value < best:
                best = value
    return best
