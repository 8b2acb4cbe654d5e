"""Sample clips of real people: BSD-3 demo videos inside the Sports2D and Pose2Sim wheels on PyPI.

They live in the model store (`streampose.store`) with every model file: fetched once into the
cache, checked against their sha256. These are ordinary local files the user chose to fetch; the
streaming path itself never writes video.
"""

from __future__ import annotations

from pathlib import Path

from streampose import store
from streampose.errors import SourceError

CLIPS: list[str] = [name for name, asset in store.ASSETS.items() if asset.kind == "clip"]


def sample_clip(name: str) -> Path:
    """Path of a sample clip, downloading its wheel on first use."""
    if name not in CLIPS:
        raise SourceError(f"unknown sample clip {name!r}; known: {', '.join(CLIPS)}")
    return store.path(name)
