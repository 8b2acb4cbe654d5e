"""What `streampose predict` writes for each frame: every person the tracker followed in it.

One JSON line per frame (`FramePoses.to_json`, documented in docs/student.md), and the same
persons as `PersonLabel`s for the overlay and the Rerun viewer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streampose.poses.labels import PersonLabel


@dataclass
class Pose:
    """The student's output for one person in one frame, in frame pixels."""

    joints2d: np.ndarray  # (J, 2) frame pixels, pixel centres at integer coordinates
    joints3d: np.ndarray  # (J, 3) metres, root-relative, camera axes
    visibility: np.ndarray  # (J,) sigmoid of the logits
    confidence: float  # mean visibility
    box: np.ndarray  # (4,) x0, y0, x1, y1: tight box of the visible joints, clipped to the frame
    crop: np.ndarray  # (4,) x0, y0, x1, y1: the square the student saw (may leave the frame)
    tracked: bool  # the square was carried from an earlier frame (not a new track)
    init: str | None = None  # where a new track's square came from: "detect" or "box"
    track_id: int = -1

    def to_json(self) -> dict[str, Any]:
        """Coordinates to 0.1 px, 3D to 0.1 mm, visibility to 0.001."""
        return {
            "id": self.track_id,
            "box": _rounded(self.box, 1),
            "crop": _rounded(self.crop, 1),
            "joints2d": _rounded(self.joints2d, 1),
            "joints3d": _rounded(self.joints3d, 4),
            "visibility": _rounded(self.visibility, 3),
            "confidence": round(self.confidence, 4),
            "tracked": self.tracked,
            "init": self.init,
        }

    def as_label(self) -> PersonLabel:
        """As a `PersonLabel`, for `render.overlay_frame`."""
        return PersonLabel(
            self.joints3d, self.joints2d, self.visibility, self.box, score=self.confidence, track_id=self.track_id
        )


@dataclass
class FramePoses:
    """Every person followed in one frame."""

    index: int
    timestamp: float
    size: tuple[int, int]  # frame (height, width)
    persons: list[Pose] = field(default_factory=list)
    detected: bool = False  # the detector ran on this frame

    def to_json(self) -> dict[str, Any]:
        """One JSON line of `predict --poses` (docs/student.md)."""
        return {
            "frame": self.index,
            "time": round(self.timestamp, 4),
            "width": self.size[1],
            "height": self.size[0],
            "persons": [p.to_json() for p in self.persons],
        }


def _rounded(values: np.ndarray, decimals: int) -> list:
    # In float64: float32 values rounded would print as 456.6000061035156 in JSON.
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()
