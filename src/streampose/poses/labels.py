"""Label dataclasses: what a teacher says about one person and one frame.

Conventions, shared by every teacher and the student:
- 3D joints are metres, relative to the skeleton's root, camera axes x right, y down, z forward.
- 2D joints are pixels of the frame they came from (pixel centres at integer coordinates,
  as OpenCV counts them).
- Visibility is in [0, 1]: how far the joint can be trusted as a training target.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streampose.errors import StreamPoseError
from streampose.files import open_output, reported


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


LABELS_FORMAT = "streampose-labels/2"
_OLD_FORMAT = "streampose-labels/1"  # one torch file written at the end (read, never written)


def _plain(value: object) -> object:
    """JSON for numpy scalars in provider metadata or scores."""
    return value.item() if hasattr(value, "item") else str(value)


class LabelsWriter:
    """Labels (never pixels) appended as they are made, so a crash or Ctrl-C keeps what was done.

    JSON Lines: a header line (format, teacher, skeleton), then one line per video
    (`{"video": provenance}`, written when it starts) and per frame (`{"frame": ...}`). Each
    record is flushed to the OS as one whole line, so a killed process leaves every record
    before the one being written; `sync_every` frames are also fsynced, against power loss.
    Memory stays flat however long it runs.
    """

    def __init__(self, path: str | Path, *, teacher: str, skeleton: str, sync_every: int = 32) -> None:
        self.path = Path(path)
        self.sync_every = sync_every
        self.frames = 0
        self._unsynced = 0
        self._file = open_output(self.path)
        self._write({"format": LABELS_FORMAT, "teacher": teacher, "skeleton": skeleton})
        self.sync()

    def _write(self, record: dict) -> None:
        with reported(self.path):
            self._file.write(json.dumps(record, default=_plain) + "\n")
            self._file.flush()

    def video(self, provenance: dict) -> None:
        self._write({"video": provenance})

    def frame(self, labels: FrameLabels) -> None:
        self._write({"frame": labels.to_dict()})
        self.frames += 1
        self._unsynced += 1
        if self._unsynced >= self.sync_every:
            self.sync()

    def sync(self) -> None:
        with reported(self.path):
            self._file.flush()
            os.fsync(self._file.fileno())
        self._unsynced = 0

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()

    def __enter__(self) -> LabelsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_labels(path) -> tuple[dict, list[FrameLabels]]:
    """(header with its `videos`, frames) of a labels file; a torn last line (the writer was
    killed mid-record) is dropped, everything before it is read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise StreamPoseError(f"{path}: no such labels file") from None
    if data.startswith(b"PK"):  # a zip: the torch file of format 1
        return _load_old(path)
    complete = data.split(b"\n")[:-1]  # after the last newline: nothing, or a record cut short
    try:
        header = json.loads(complete[0]) if complete else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != LABELS_FORMAT:
        raise StreamPoseError(f"{path}: not a stream-pose labels file (format {LABELS_FORMAT} expected)")
    header["videos"], frames = [], []
    for number, line in enumerate(complete[1:], start=2):
        try:
            record = json.loads(line)
            if "frame" in record:
                frames.append(FrameLabels.from_dict(record["frame"]))
            else:
                header["videos"].append(record["video"])
        except (ValueError, KeyError, TypeError) as e:
            raise StreamPoseError(f"{path}: line {number} is not a labels record ({type(e).__name__})") from None
    return header, frames


def _load_old(path) -> tuple[dict, list[FrameLabels]]:
    import torch  # only for files of format 1; reading labels needs no torch otherwise

    try:
        data = torch.load(path, weights_only=True)
    except Exception as e:
        raise StreamPoseError(f"{path}: not a stream-pose labels file ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != _OLD_FORMAT:
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
