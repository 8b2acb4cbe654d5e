"""Checkpoints: everything needed to resume training exactly, or to run the student alone.

Written atomically (see `files`), so a crash or a kill mid-write leaves the previous
`last.pt` intact.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from streampose.errors import StreamPoseError
from streampose.files import atomic_torch_save
from streampose.model.student import Student
from streampose.poses.skeletons import get_skeleton

FORMAT = "streampose-checkpoint/1"


def rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save_checkpoint(path: str | Path, **state) -> Path:
    return atomic_torch_save({"format": FORMAT, **state}, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by `save_checkpoint`, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise StreamPoseError(f"{path}: no such checkpoint")
    try:
        # Our own files hold numpy RNG state and Python tuples, so not weights_only.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise StreamPoseError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise StreamPoseError(f"{path}: not a stream-pose checkpoint")
    return ckpt


def student_from(ckpt: dict, expect_skeleton: str | None = None) -> Student:
    """The trained student of a loaded checkpoint, in eval mode, on CPU."""
    if expect_skeleton and ckpt["skeleton"] != expect_skeleton:
        raise StreamPoseError(
            f"the checkpoint's student was trained on skeleton {ckpt['skeleton']}, not {expect_skeleton}"
        )
    get_skeleton(ckpt["skeleton"])
    model = Student.from_config(ckpt["student"])
    model.load_state_dict(ckpt["model"])
    return model.eval()
