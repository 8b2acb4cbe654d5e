"""`streampose predict`: the student on its own, on every frame of a video (no teacher in the loop).

The student was trained on crops framed by the teacher's joints (`crops.square_around`, 25 %
margin). Alone, it has to frame the person itself, so it *tracks*: the square for frame t+1 is
the square around the visible 2D joints it predicted on frame t, mapped back from crop to frame
pixels through the inverse of the crop's affine and framed with the same margin as in training,
so the student keeps seeing crops like the ones it learnt from. One exception: the student only
predicts what its crop shows, so a square that cuts the person off would stay cut off (and a
student that under-reaches shrinks the square onto a body part); when visible joints crowd the
crop's edge the next square grows instead (`TrackerConfig.edge`, ``grow``).

Where the first square comes from. No person detector ships in this project's dependencies
except MediaPipe's own `pose_detection.tflite`, which is part of the teacher; using it would put
the teacher back in the loop, so nothing detects here. The first square is the user's box
(``--box``, framed like a training crop) or, without one, the centred square of the frame's short
side, refined twice on the same frame (crop, predict, re-frame). That finds one person who fills
a fair part of the frame; it cannot find a small person in a big scene, nor choose among
several. Choosing among several windows by the student's confidence was tried and dropped: the
student never saw a crop without a person, and its confidence did not single out the window
holding one (Sports2D: 0.77-0.92 over 65 windows, the highest not on the person).

Losing the person. Confidence is the mean predicted visibility (sigmoid of ``vis_logits``).
After ``patience`` frames in a row below ``min_confidence`` (or with fewer than ``min_visible``
joints above the visibility threshold), the tracker starts again from the whole frame. The
student never saw crops without a person, so its visibility is not a calibrated "person here"
score: a drifting crop lowers it (joints leave the crop, visibility labels were zeroed there),
but an empty crop need not. The square is smoothed with an exponential moving average (centre
linear, side in log scale) so it does not jitter from frame to frame; the joints written out are
the raw per-frame predictions, so smoothing adds no lag to them.

The student runs through `model.backends` (a checkpoint in PyTorch or an exported model in
onnxruntime), one crop at a time."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import cv2
import numpy as np

from streampose.errors import StreamPoseError
from streampose.files import atomic_write
from streampose.model.backends import Backend
from streampose.poses.labels import PersonLabel, box_of
from streampose.poses.skeletons import Skeleton
from streampose.stream import stages
from streampose.stream.crops import MARGIN, apply_affine, cut_square, invert_affine, square_around
from streampose.stream.decode import Frame, decode_frames, probe
from streampose.viz.render import VideoWriter, overlay_frame
from streampose.viz.rerun import recording

# -- tracking -------------------------------------------------------------------------------------


@dataclass
class TrackerConfig:
    """How the crop square follows the person; see the module docstring for why."""

    margin: float = MARGIN  # as training crops
    smoothing: float = 0.6  # EMA weight of the newest square (1 = none)
    vis_threshold: float = 0.5  # a joint counts as visible at or above this predicted visibility
    min_visible: int = 8  # as training crops (`crops.crop_person`)
    min_confidence: float = 0.5  # mean predicted visibility below this is a miss
    patience: int = 3  # misses in a row before re-initialising from the whole frame
    refine: int = 2  # extra passes on a frame where tracking (re)starts
    edge: float = 0.13  # visible joints this close to the crop's edge (fraction of its side) ...
    grow: float = 1.15  # ... make the next square at least this much bigger than the current one


@dataclass
class Pose:
    """The student's output for one frame, in frame pixels."""

    index: int
    timestamp: float
    size: tuple[int, int]  # frame (height, width)
    joints2d: np.ndarray  # (J, 2) frame pixels, pixel centres at integer coordinates
    joints3d: np.ndarray  # (J, 3) metres, root-relative, camera axes
    visibility: np.ndarray  # (J,) sigmoid of the logits
    confidence: float  # mean visibility
    box: np.ndarray  # (4,) x0, y0, x1, y1: tight box of the visible joints, clipped to the frame
    crop: np.ndarray  # (4,) x0, y0, x1, y1: the square the student saw (may leave the frame)
    tracked: bool  # the square came from the previous frame's pose
    init: str | None = None  # where the square came from when not tracked: "box" or "frame"

    def to_json(self) -> dict[str, Any]:
        """One JSON line: coordinates to 0.1 px, 3D to 0.1 mm, visibility to 0.001."""
        return {
            "frame": self.index,
            "time": round(self.timestamp, 4),
            "width": self.size[1],
            "height": self.size[0],
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
        return PersonLabel(self.joints3d, self.joints2d, self.visibility, self.box, score=self.confidence)


def _rounded(values: np.ndarray, decimals: int) -> list:
    # In float64: float32 values rounded would print as 456.6000061035156 in JSON.
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


Square = tuple[float, float, float]  # centre x, centre y, side (frame pixels)


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` (frame pixels) -> floats, with a clear error for anything else."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise StreamPoseError(f"--box {text!r}: expected four numbers x0,y0,x1,y1 in frame pixels")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise StreamPoseError(f"--box {text!r}: needs x1 > x0 and y1 > y0")
    return x0, y0, x1, y1


def whole_frame_square(height: int, width: int) -> Square:
    """The centred square of the frame's short side: where tracking starts without a box."""
    return (width - 1) / 2.0, (height - 1) / 2.0, float(min(height, width))


class _Guess(NamedTuple):
    """The student's output on one square of one frame, in frame pixels."""

    square: Square
    joints2d: np.ndarray
    joints3d: np.ndarray
    visibility: np.ndarray  # sigmoid of the logits
    confidence: float  # mean visibility


class Tracker:
    """Follows one person through consecutive frames with the student alone; call once per frame."""

    def __init__(
        self,
        backend: Backend,
        config: TrackerConfig | None = None,
        box: tuple[float, float, float, float] | None = None,
    ) -> None:
        self.backend = backend
        self.config = config or TrackerConfig()
        self.box = box
        self._square: Square | None = None
        self._misses = 0
        self._box_used = False
        self.reinits = 0

    def _guess(self, frame: np.ndarray, square: Square) -> _Guess:
        """The student on the crop of `square`, its 2D joints mapped back to frame pixels."""
        size = self.backend.crop_size
        crop, matrix = cut_square(frame, square[:2], square[2], size)
        out = self.backend(crop[None])
        vis = (1.0 / (1.0 + np.exp(-out["vis_logits"][0].astype(np.float64)))).astype(np.float32)
        joints2d = apply_affine(invert_affine(matrix), out["joints2d"][0] * size)
        return _Guess(square, joints2d, out["joints3d"][0], vis, float(vis.mean()))

    def _next_square(self, guess: _Guess) -> Square | None:
        """The training-style square around the visible predicted joints; None if too few.

        The student only predicts what its crop shows, so a square that cuts the person off is
        self-perpetuating (measured: a crop at 0.7x the training framing yields joints spanning
        0.7x the person), and a student that slightly under-reaches shrinks the square frame by
        frame onto a body part. Training crops leave 1/6 of the side free beyond the joints, so
        joints crowding an edge mean the person is cut off: the next square then grows.
        """
        cfg = self.config
        visible = guess.visibility >= cfg.vis_threshold
        if int(visible.sum()) < cfg.min_visible:
            return None
        pts = guess.joints2d[visible]
        (cx, cy), side = square_around(pts, cfg.margin)
        ox, oy, current = guess.square
        lo = np.array([ox - current / 2.0, oy - current / 2.0])
        gap = min(float((pts - lo).min()), float((lo + current - pts).min()))
        if gap < cfg.edge * current:
            side = max(side, cfg.grow * current)
        return cx, cy, side

    def _initialise(self, frame: np.ndarray) -> tuple[_Guess, str]:
        h, w = frame.shape[:2]
        if self.box is not None and not self._box_used:
            # The user's box frames the person as the teacher's joints would: same margin.
            self._box_used = True
            x0, y0, x1, y1 = self.box
            (cx, cy), side = square_around(np.array([[x0, y0], [x1, y1]]), self.config.margin)
            guess, source = self._guess(frame, (cx, cy, side)), "box"
        else:
            guess, source = self._guess(frame, whole_frame_square(h, w)), "frame"
        for _ in range(self.config.refine):
            square = self._next_square(guess)
            if square is None:
                break
            guess = self._guess(frame, square)
        return guess, source

    def __call__(self, frame: Frame) -> Pose:
        image = frame.image
        h, w = image.shape[:2]
        if self._square is None:
            guess, init = self._initialise(image)
            self.reinits += 1
            tracked = False
        else:
            guess, init = self._guess(image, self._square), None
            tracked = True

        new = self._next_square(guess)
        if new is not None and guess.confidence >= self.config.min_confidence:
            self._misses = 0
            self._square = new if self._square is None else self._smooth(self._square, new)
        elif self._square is not None:
            # A tracked person gets `patience` frames to come back (the square stays put meanwhile);
            # then tracking starts again from the whole frame. A failed initialisation leaves the
            # square unset, so the next frame initialises again.
            self._misses += 1
            if self._misses >= self.config.patience:
                self._square, self._misses = None, 0

        cx, cy, side = guess.square
        return Pose(
            index=frame.index,
            timestamp=frame.timestamp,
            size=(h, w),
            joints2d=guess.joints2d,
            joints3d=guess.joints3d,
            visibility=guess.visibility,
            confidence=guess.confidence,
            box=box_of(guess.joints2d, guess.visibility, (h, w), self.config.vis_threshold),
            crop=np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32),
            tracked=tracked,
            init=init,
        )

    def _smooth(self, old: Square, new: Square) -> Square:
        a = self.config.smoothing
        return (
            old[0] + a * (new[0] - old[0]),
            old[1] + a * (new[1] - old[1]),
            old[2] * (new[2] / old[2]) ** a,  # in log scale: growing and shrinking weigh the same
        )


# -- the command ------------------------------------------------------------------------------------


def draw(frame: np.ndarray, pose: Pose, skeleton: Skeleton) -> np.ndarray:
    """The overlay: the crop square (green tracked, magenta (re)initialised), the 2D skeleton, the 3D
    panel, and a caption."""
    image = frame.copy()
    x0, y0, x1, y1 = (round(float(v)) for v in pose.crop)
    colour = (60, 220, 60) if pose.tracked else (230, 60, 230)
    cv2.rectangle(image, (x0, y0), (x1, y1), colour, max(1, round(max(image.shape[:2]) / 500)), cv2.LINE_AA)
    state = "tracked" if pose.tracked else f"init ({pose.init})"
    caption = f"#{pose.index}  confidence {pose.confidence:.2f}  {state}"
    return overlay_frame(image, [pose.as_label()], skeleton, caption=caption)


@dataclass
class PredictResult:
    """What `predict_video` did, for the command's summary line. ``tracker_seconds`` is the time
    spent cropping, running the student and re-framing; the rest is decoding, drawing and encoding."""

    frames: int = 0
    reinits: int = 0
    tracked: int = 0
    mean_confidence: float = 0.0
    seconds: float = 0.0
    tracker_seconds: float = 0.0
    backend: str = ""
    skeleton: str = ""
    crop_size: int = 0
    outputs: list[str] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        """The command's one line on stderr."""
        return (
            f"{self.frames} frames ({self.backend}, {self.skeleton}, {self.crop_size} px crops): {self.tracked} "
            f"tracked, {self.reinits} (re)initialisations, mean confidence {self.mean_confidence:.2f}, "
            f"{self.frames_per_s:.1f} frames/s overall, tracking alone "
            f"{self.frames / max(self.tracker_seconds, 1e-9):.0f} frames/s"
            + (f"; wrote {', '.join(self.outputs)}" if self.outputs else "")
        )


def predict_video(
    video: str,
    backend: Backend,
    *,
    poses: str | Path | None = None,
    render: str | Path | None = None,
    rerun: str | None = None,
    box: tuple[float, float, float, float] | None = None,
    max_side: int | None = None,
    config: TrackerConfig | None = None,
    progress: Callable[[], None] | None = None,
) -> PredictResult:
    """Track the person through `video` (a file or URL); write one JSON line per frame
    (`Pose.to_json`) to `poses`, atomically, the overlay video to `render`, and frames with the
    2D and 3D skeleton to Rerun (`rerun`: a .rrd file, or "" to spawn the viewer).

    `box` is in the pixels of the decoded frames (after `max_side` scaling, if any). A corrupt
    video raises `DecodeError` before either output exists.
    """
    start = time.perf_counter()
    data = stages.one_video(video)
    fps = probe(data.data, data.id).fps
    frames = decode_frames(data.data, data.id, max_side=max_side)
    first = next(frames, None)  # a video that decodes nothing raises here, before any output exists
    if first is None:
        raise StreamPoseError(f"{video}: no frames")
    if box is not None:
        h, w = first.image.shape[:2]
        x0, y0, x1, y1 = box
        if x1 <= 0 or y1 <= 0 or x0 >= w - 1 or y0 >= h - 1:
            raise StreamPoseError(f"--box {box}: lies outside the {w}x{h} frame")

    result = PredictResult(backend=backend.name, skeleton=backend.skeleton.name, crop_size=backend.crop_size)
    result.outputs = [str(p) for p in (poses, render, rerun) if p]
    confidence_sum = 0.0
    tracker = Tracker(backend, config, box)
    viewer = recording(backend.skeleton, rerun)

    def run(sink: IO[bytes] | None) -> None:
        nonlocal confidence_sum
        with VideoWriter(render, fps=fps) if render is not None else contextlib.nullcontext() as writer:
            for frame in _chain(first, frames):
                t0 = time.perf_counter()
                pose = tracker(frame)
                result.tracker_seconds += time.perf_counter() - t0
                if writer is not None:
                    writer.write(draw(frame.image, pose, backend.skeleton))
                if viewer is not None:
                    viewer.frame(frame.index, frame.timestamp, frame.image, [pose.as_label()])
                if sink is not None:
                    sink.write((json.dumps(pose.to_json()) + "\n").encode())
                result.frames += 1
                result.tracked += pose.tracked
                confidence_sum += pose.confidence
                if progress is not None:
                    progress()

    try:
        if poses is not None:
            atomic_write(poses, run)
        else:
            run(None)
    finally:
        if viewer is not None:
            viewer.close()
    result.reinits = tracker.reinits
    result.mean_confidence = confidence_sum / max(1, result.frames)
    result.seconds = time.perf_counter() - start
    return result


def _chain(first: Frame, rest: Iterator[Frame]) -> Iterator[Frame]:
    yield first
    yield from rest
