"""Label dataclasses: what a teacher says about one person and one frame.

Conventions, shared by every teacher and the student:
- 3D joints are metres, relative to the skeleton's root, camera axes x right, y down, z forward.
- 2D joints are pixels of the frame they came from (pixel centres at integer coordinates,
  as OpenCV counts them).
- Visibility is in [0, 1]: how far the joint can be trusted as a training target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from streampose.errors import StreamPoseError
from streampose.files import atomic_torch_save


@dataclass
class PersonLabel:
    """One person in one frame."""

    joints3d: np.ndarray  # (J, 3) float32, metres, root-relative
    joints2d: np.ndarray  # (J, 2) float32, pixels
    visibility: np.ndarray  # (J,) float32 in [0, 1]
    box: np.ndarray  # (4,) float32, x0, y0, x1, y1 in pixels
    track_id: int = 0
    score: float = 1.0

    def __post_init__(self) -> None:
        self.joints3d = np.asarray(self.joints3d, dtype=np.float32)
        self.joints2d = np.asarray(self.joints2d, dtype=np.float32)
        self.visibility = np.asarray(self.visibility, dtype=np.float32)
        self.box = np.asarray(self.box, dtype=np.float32)
        j = self.joints3d.shape[0]
        if self.joints3d.shape != (j, 3) or self.joints2d.shape != (j, 2) or self.visibility.shape != (j,):
            raise ValueError(
                f"inconsistent person label shapes: 3D {self.joints3d.shape}, "
                f"2D {self.joints2d.shape}, visibility {self.visibility.shape}"
            )

    def to_dict(self) -> dict:
        return {
            "joints3d": self.joints3d.tolist(),
            "joints2d": self.joints2d.tolist(),
            "visibility": self.visibility.tolist(),
            "box": self.box.tolist(),
            "track_id": self.track_id,
            "score": self.score,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PersonLabel:
        return cls(**d)


@dataclass
class FrameLabels:
    """Every person a teacher found in one frame of one video."""

    index: int  # frame number in the decoded video (before stride)
    timestamp: float  # seconds
    size: tuple[int, int]  # (height, width) of the frame the 2D joints refer to
    source: str  # id of the video the frame came from
    persons: list[PersonLabel] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "timestamp": self.timestamp,
            "size": list(self.size),
            "source": self.source,
            "persons": [p.to_dict() for p in self.persons],
        }

    @classmethod
    def from_dict(cls, d: dict) -> FrameLabels:
        return cls(
            index=d["index"],
            timestamp=d["timestamp"],
            size=tuple(d["size"]),
            source=d["source"],
            persons=[PersonLabel.from_dict(p) for p in d["persons"]],
        )


LABELS_FORMAT = "streampose-labels/1"


def save_labels(
    path, *, teacher: str, skeleton: str, frames: list[FrameLabels], videos: list[dict] | None = None
) -> None:
    """Write labels (never pixels) atomically as a torch file of plain Python types.

    `videos` is each source video's provenance (id, provider, licence, author, ...).
    """
    payload = {
        "format": LABELS_FORMAT,
        "teacher": teacher,
        "skeleton": skeleton,
        "videos": list(videos or []),
        "frames": [f.to_dict() for f in frames],
    }
    atomic_torch_save(payload, path)


def load_labels(path) -> tuple[dict, list[FrameLabels]]:
    """(header, frames) of a labels file written by save_labels."""
    try:
        data = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise StreamPoseError(f"{path}: no such labels file") from None
    except Exception as e:
        raise StreamPoseError(f"{path}: not a stream-pose labels file ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != LABELS_FORMAT:
        raise StreamPoseError(f"{path}: not a stream-pose labels file (format {LABELS_FORMAT} expected)")
    header = {k: v for k, v in data.items() if k != "frames"}
    return header, [FrameLabels.from_dict(f) for f in data["frames"]]


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
