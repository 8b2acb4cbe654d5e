"""A training run's configuration: every `streampose train` option, and the defaults the CLI shows.

Kept apart from `train` (which needs torch) so the command line can read the defaults and take
the run folder's lock before anything slow is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from streampose.config import read_config
from streampose.errors import StreamPoseError
from streampose.sources.base import MAX_VIDEO_MB, SourceFilters
from streampose.stream.crops import CROP_SIZE


@dataclass
class TrainConfig:
    sources: list[str] = field(default_factory=list)
    out: str = "runs/train"
    teacher: str = "topdown"
    student: str = "small"
    steps: int = 2000
    minutes: float | None = None  # optional wall-clock cap
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    loss_3d: float = 1.0
    loss_2d: float = 1.0
    loss_vis: float = 0.1
    # Fraction of training crops that show no person (all visibility 0): what makes the student's
    # confidence mean "a person is here" (docs/student.md).
    negatives: float = 0.1
    # Share of person crops composited onto another crop's background (the teacher's segmentation;
    # `stream.augment.composite`), so the room cannot tell the student which way a person faces.
    background: float = 0.5
    rotate_degrees: float = 30.0  # in-plane rotation augmentation's range, +-; 0 turns it off
    cutout: float = 0.0  # share of crops with a grey square over part of them (an occluder)
    balance_facing: bool = False  # draw persons balanced over 8 facing bins (the teacher's torso yaw)
    crop_size: int = CROP_SIZE
    buffer_gb: float = 1.0
    min_fill: int = 256
    max_replay: float | None = None
    producers: int | str = "auto"  # a count, or auto: from the cores and the device (`producers.auto_producers`)
    stride: int = 1
    max_side: int | None = 720
    max_frames: int | None = None  # per video and pass
    max_videos: int | None = None
    max_video_mb: float = MAX_VIDEO_MB
    filters: dict = field(default_factory=dict)  # SourceFilters fields
    augment: bool = True
    device: str = "auto"
    compile: bool = False
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    dist_timeout: float = 300.0  # seconds a rank waits for the others before failing
    log_every: int = 10
    save_every: int = 500
    seed: int = 0
    resume: bool = False
    val: list[str] = field(default_factory=list)  # held-out sources, labelled once, scored every val_every steps
    val_every: int = 200
    val_gb: float = 0.25  # byte budget of the validation crops (in memory)
    val_stride: int = 2


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
