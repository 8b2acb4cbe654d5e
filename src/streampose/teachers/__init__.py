"""Teachers: models that label frames with per-person 3D poses.

A teacher declares its skeleton and labels batches of RGB frames of one video at a time.
Teachers are looked up by name and imported lazily, so a heavy or missing backend costs
nothing until it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import StreamPoseError
from ..labels import PersonLabel
from ..skeletons import Skeleton


@runtime_checkable
class Teacher(Protocol):
    name: str
    skeleton: Skeleton

    def start_video(self, size: tuple[int, int]) -> None:
        """Reset tracking state before the first frame of a new video of (height, width)."""

    def label(self, frames: Sequence[np.ndarray]) -> list[list[PersonLabel]]:
        """Persons in each of several consecutive RGB uint8 frames of the current video."""

    def close(self) -> None:
        """Free the model."""


# name -> "module:Class", imported on first use.
TEACHERS: dict[str, str] = {
    "mediapipe": "streampose.teachers.mediapipe:MediaPipeTeacher",
    "comotion": "streampose.teachers.comotion:CoMotionTeacher",
}


def teacher_class(name: str) -> type:
    """The class of a registered teacher, imported now (its `skeleton` is a class attribute)."""
    if name not in TEACHERS:
        raise StreamPoseError(f"unknown teacher {name!r}; known: {', '.join(sorted(TEACHERS))}")
    module, cls = TEACHERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_teacher(name: str, **options) -> Teacher:
    return teacher_class(name)(**options)


def visible_in_frame(joints2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """1.0 where a 2D joint lies inside a (height, width) frame, else 0.0."""
    h, w = size
    x, y = joints2d[:, 0], joints2d[:, 1]
    return ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).astype(np.float32)


def box_of(joints2d: np.ndarray, visibility: np.ndarray, size: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """Tight (x0, y0, x1, y1) box of the visible joints, clipped to the frame."""
    pts = joints2d[visibility >= threshold]
    if len(pts) == 0:
        pts = joints2d
    h, w = size
    x0, y0 = np.clip(pts.min(axis=0), 0, [w - 1, h - 1])
    x1, y1 = np.clip(pts.max(axis=0), 0, [w - 1, h - 1])
    return np.array([x0, y0, x1, y1], dtype=np.float32)
