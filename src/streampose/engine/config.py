"""A training run's configuration: every `streampose train` option, and the defaults the CLI shows.

Kept apart from `train` (which needs torch) so the command line can read the defaults and take
the run folder's lock before anything slow is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from streampose.config import (
    COUNT,
    DEVICE,
    MAX_SIDE,
    POSITIVE,
    POSITIVE_FLOAT,
    THREADS,
    WEIGHT,
    Check,
    checked,
    read_config,
)
from streampose.errors import StreamPoseError
from streampose.sources.base import MAX_VIDEO_MB, SourceFilters
from streampose.stream.crops import CROP_SIZE, CROP_SIZES

#: A teacher per producer keeps a core busy: more than a few per core only contend (and a shared
#: config with producers = 500 would start 500 processes).
PRODUCERS = Check(int, low=1, high=4 * (os.cpu_count() or 1), words={"auto": "auto"})
SHARE = Check(float, low=0, high=1)


@dataclass
class TrainConfig:
    sources: list[str] = field(default_factory=list)
    out: str = "runs/train"
    teacher: str = "topdown"
    student: str = "small"
    steps: int = checked(2000, POSITIVE)
    minutes: float | None = checked(None, POSITIVE_FLOAT)  # optional wall-clock cap
    batch_size: int = checked(32, POSITIVE)
    lr: float = checked(2e-3, POSITIVE_FLOAT)
    weight_decay: float = checked(0.01, WEIGHT)
    warmup: int = checked(100, COUNT)
    grad_clip: float = checked(1.0, POSITIVE_FLOAT)
    loss_3d: float = checked(1.0, WEIGHT)
    loss_2d: float = checked(1.0, WEIGHT)
    loss_vis: float = checked(0.1, WEIGHT)
    # Fraction of training crops that show no person (all visibility 0): what makes the student's
    # confidence mean "a person is here" (docs/student.md).
    negatives: float = checked(0.1, Check(float, low=0, high=0.95))  # below 1: some crops must show a person
    # Share of person crops composited onto another crop's background (the teacher's segmentation;
    # `stream.augment.composite`), so the room cannot tell the student which way a person faces.
    background: float = checked(0.5, SHARE)
    rotate_degrees: float = checked(30.0, Check(float, low=0, high=180))  # in-plane rotation's range, +-; 0: off
    cutout: float = checked(0.0, SHARE)  # share of crops with a grey square over part of them (an occluder)
    balance_facing: bool = False  # draw persons balanced over 8 facing bins (the teacher's torso yaw)
    crop_size: int = checked(CROP_SIZE, CROP_SIZES)
    buffer_gb: float = checked(1.0, POSITIVE_FLOAT)
    min_fill: int = checked(256, POSITIVE)
    max_replay: float | None = checked(None, POSITIVE_FLOAT)
    # a count, or auto: from the cores and the device (`producers.auto_producers`)
    producers: int | str = checked("auto", PRODUCERS)
    stride: int = checked(1, POSITIVE)
    max_side: int | None = checked(720, MAX_SIDE)  # 0 or None: frames at full size
    max_frames: int | None = checked(None, POSITIVE)  # per video and pass
    max_videos: int | None = checked(None, POSITIVE)
    max_video_mb: float = checked(MAX_VIDEO_MB, POSITIVE_FLOAT)
    filters: dict = field(default_factory=dict)  # SourceFilters fields
    augment: bool = True
    device: str = checked("auto", DEVICE)
    compile: bool = False
    threads: int | None = checked(None, THREADS)  # torch CPU threads; None leaves torch's default
    dist_timeout: float = checked(300.0, POSITIVE_FLOAT)  # seconds a rank waits for the others before failing
    log_every: int = checked(10, POSITIVE)
    save_every: int = checked(500, POSITIVE)
    seed: int = checked(0, COUNT)
    resume: bool = False
    val: list[str] = field(default_factory=list)  # held-out sources, labelled once, scored every val_every steps
    val_every: int = checked(200, POSITIVE)
    val_gb: float = checked(0.25, POSITIVE_FLOAT)  # byte budget of the validation crops (in memory)
    val_stride: int = checked(2, POSITIVE)


def config_defaults(path: str | Path) -> dict[str, Any]:
    """A run config file as `train`'s option defaults, so the file sets the run and explicit options
    still win. Its source filters become their options' values (`max_bytes` follows `max_video_mb`)."""
    values = read_config(path, TrainConfig)
    filters = dict(values.pop("filters", None) or {})
    filters.pop("max_bytes", None)
    unknown = sorted(set(filters) - {f.name for f in fields(SourceFilters)})
    if unknown:
        raise StreamPoseError(f"{path}: unknown filters key(s) {', '.join(unknown)}")
    return values | filters
