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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from streampose.errors import StreamPoseError
from streampose.files import open_output, reported
from streampose.poses.skeletons import get_skeleton


@dataclass
class Silhouette:
    """Where the person's body is, as the teacher's segmentation of its own crop: pixels, so it is
    kept in memory with the label and never written to a labels file."""

    mask: np.ndarray  # (H, W) uint8, probability x 255 that the pixel is the person
    matrix: np.ndarray  # (2, 3) frame pixels -> mask pixels


@dataclass
class PersonLabel:
    """One person in one frame. `silhouette` (when the teacher segments) stays in memory: it is
    left out of `to_dict`, so labels files hold coordinates only."""

    joints3d: np.ndarray  # (J, 3) float32, metres, root-relative
    joints2d: np.ndarray  # (J, 2) float32, pixels
    visibility: np.ndarray  # (J,) float32 in [0, 1]
    box: np.ndarray  # (4,) float32, x0, y0, x1, y1 in pixels
    track_id: int = 0
    score: float = 1.0
    silhouette: Silhouette | None = field(default=None, repr=False)

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
    def from_dict(cls, d: dict, num_joints: int | None = None) -> PersonLabel:
        """A person from `to_dict` output, checked (a labels file is data from anywhere): known keys,
        finite numbers, `num_joints` joints (when given), an int track id; ValueError says what is wrong."""
        d = _record(d, "person", required={"joints3d", "joints2d", "visibility", "box"}, optional={"track_id", "score"})
        j = num_joints or len(_sequence(d["joints3d"], "joints3d"))
        visibility = _finite(d["visibility"], (j,), "visibility")
        if ((visibility < 0) | (visibility > 1)).any():
            raise ValueError("visibility must lie in [0, 1]")
        return cls(
            joints3d=_finite(d["joints3d"], (j, 3), "joints3d"),
            joints2d=_finite(d["joints2d"], (j, 2), "joints2d"),
            visibility=visibility,
            box=_finite(d["box"], (4,), "box"),
            track_id=_integer(d.get("track_id", 0), "track_id"),
            score=float(_finite(d.get("score", 1.0), (), "score")),
        )


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
    def from_dict(cls, d: dict, num_joints: int | None = None) -> FrameLabels:
        """A frame from `to_dict` output, checked like `PersonLabel.from_dict`."""
        d = _record(d, "frame", required={"index", "timestamp", "size", "source", "persons"})
        size = tuple(_integer(v, "size") for v in _sequence(d["size"], "size", 2))
        if not all(0 < v <= MAX_FRAME_SIDE for v in size):
            raise ValueError(f"size must be (height, width) in 1..{MAX_FRAME_SIDE} pixels")
        if not isinstance(d["source"], str):
            raise ValueError("source must be a string")
        index = _integer(d["index"], "index")
        if index < 0:
            raise ValueError("index must be >= 0")
        return cls(
            index=index,
            timestamp=float(_finite(d["timestamp"], (), "timestamp")),
            size=size,
            source=d["source"],
            persons=[PersonLabel.from_dict(p, num_joints) for p in _sequence(d["persons"], "persons")],
        )


MAX_FRAME_SIDE = 1 << 16  # pixels: larger than any video a decoder opens


def _record(d: object, what: str, required: set[str], optional: frozenset[str] | set[str] = frozenset()) -> dict:
    """`d` as a dict with every `required` key and no key outside `required` and `optional`."""
    if not isinstance(d, dict):
        raise ValueError(f"a {what} must be an object, not {type(d).__name__}")
    if missing := sorted(required - set(d)):
        raise ValueError(f"a {what} needs {', '.join(missing)}")
    if unknown := sorted(set(d) - required - set(optional)):
        raise ValueError(f"a {what} has unknown key(s) {', '.join(map(str, unknown))}")
    return d


def _sequence(value: object, what: str, length: int | None = None) -> list:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise ValueError(f"{what} must be a list" + (f" of {length}" if length is not None else ""))
    return value


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, not {type(value).__name__}")
    return value


def _finite(value: object, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A JSON number or nested list as a float32 array of exactly `shape`, every value finite."""
    if isinstance(value, bool | str) or (isinstance(value, list) and any(isinstance(v, bool | str) for v in value)):
        raise ValueError(f"{what} must hold numbers")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"{what} must be numbers shaped {shape}") from None
    if array.shape != shape:
        raise ValueError(f"{what} must be shaped {shape}, not {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} must be finite (no NaN or infinity)")
    return array


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
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the old format's early return
    except FileNotFoundError:
        raise StreamPoseError(f"{path}: no such labels file") from None
    except OSError as e:
        raise StreamPoseError(f"{path}: cannot read the labels file ({e.strerror or e})") from None
    with f:
        if f.peek(2)[:2] == b"PK":  # a zip: the torch file of format 1
            return _load_old(path)
        return _load_lines(path, _complete_lines(f, path))


MAX_RECORD_BYTES = 64 << 20  # one frame's labels take kilobytes: a longer line is no record


def _complete_lines(f: IO[bytes], path) -> Iterator[bytes]:
    """The lines of `f`, each read with a size limit (a file with no newline, /dev/zero, fails
    instead of filling memory); a last line without its newline was cut short by a kill: dropped."""
    while line := f.readline(MAX_RECORD_BYTES + 1):
        if not line.endswith(b"\n"):
            if len(line) > MAX_RECORD_BYTES:
                raise StreamPoseError(f"{path}: a line over {MAX_RECORD_BYTES >> 20} MiB is no labels record")
            return
        yield line


def _load_lines(path, lines: Iterator[bytes]) -> tuple[dict, list[FrameLabels]]:
    try:
        header = json.loads(next(lines, b"null"))
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("format") != LABELS_FORMAT:
        raise StreamPoseError(f"{path}: not a stream-pose labels file (format {LABELS_FORMAT} expected)")
    try:
        joints = get_skeleton(header.get("skeleton")).num_joints
    except (KeyError, TypeError):
        raise StreamPoseError(f"{path}: names no known skeleton ({header.get('skeleton')!r})") from None
    header["videos"], frames = [], []
    for number, line in enumerate(lines, start=2):
        try:
            record = _record(json.loads(line), "record", required=set(), optional={"frame", "video"})
            if len(record) != 1:
                raise ValueError("a record holds one frame or one video")
            if "frame" in record:
                frames.append(FrameLabels.from_dict(record["frame"], joints))
            elif not isinstance(record["video"], dict):
                raise ValueError("a video must be an object")
            else:
                header["videos"].append(record["video"])
        except (ValueError, RecursionError) as e:
            reason = "nested too deeply" if isinstance(e, RecursionError) else e
            raise StreamPoseError(f"{path}: line {number} is not a labels record ({reason})") from None
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
