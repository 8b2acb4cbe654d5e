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

from streampose.errors import StreamPoseError
from streampose.poses.labels import PersonLabel
from streampose.poses.skeletons import Skeleton


@runtime_checkable
class Teacher(Protocol):
    name: str
    skeleton: Skeleton
    licence: str  # the teacher's own licence, as a model card states it
    terms: str | None  # what its licence imposes on a student trained on its labels, if anything

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
    "topdown": "streampose.teachers.topdown:TopDownTeacher",
}


def split_spec(spec: str) -> tuple[str, dict]:
    """A teacher spec, `name` or `name:model` (`topdown:heavy`: the top-down teacher with BlazePose's
    heavy landmark model), as (name, constructor options); a name that is not registered is an error."""
    name, _, model = spec.partition(":")
    if name not in TEACHERS:
        raise StreamPoseError(f"unknown teacher {name!r}; known: {', '.join(sorted(TEACHERS))}")
    return name, ({"model": model} if model else {})


def teacher_class(spec: str) -> type:
    """The class of a registered teacher, imported now (its `skeleton` is a class attribute)."""
    module, cls = TEACHERS[split_spec(spec)[0]].split(":")
    return getattr(importlib.import_module(module), cls)


def get_teacher(spec: str, **options) -> Teacher:
    return teacher_class(spec)(**split_spec(spec)[1], **options)
