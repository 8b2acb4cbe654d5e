"""Following every person through a video with the student alone: detect, then track.

Where squares come from. A person detector (YOLOX-Nano, `detect.yolox`) runs on the first frame,
every `detect_every` frames after, whenever a track has ended and whenever nobody is followed;
each person box it finds becomes a square framed like a training crop (`crops.square_around`,
25 % margin), refined `refine` times on that frame (crop, predict, re-frame). Between detections
the student carries each crop forward itself: the square for frame t+1 is the square around the
visible 2D joints it predicted on frame t, mapped back to frame pixels through the inverse of the
crop's affine, so the student keeps seeing crops like the ones it learnt from. On a detection
frame a detection that overlaps a followed person's box re-frames that person (a drifted square
is put back); the others start new tracks, as in the top-down teacher's `candidates`.

Which person is which. The poses of a frame go through the top-down teacher's tracker
(`detect.track.Tracker`: box IoU plus joint distance, Hungarian assignment), which gives the ids;
ids are never reused within a video.

Losing a person. Confidence is the mean predicted visibility (sigmoid of ``vis_logits``). The
student is trained with background crops labelled all-invisible (`crops.background_crops`), so
a square that drifted off its person scores low. A pose below ``min_confidence`` (or with fewer
than ``min_visible`` joints at ``vis_threshold``) is not reported; its square stays put for
``patience`` frames, then the track ends and the detector looks again. Two tracks on one person
(same joints, or one box mostly inside the other) keep the more confident one.

The student only predicts what its crop shows, so a square that cuts the person off would stay
cut off (and a student that under-reaches shrinks the square onto a body part); when visible
joints crowd the crop's edge the next square grows instead (``edge``, ``grow``). Squares are
smoothed with an exponential moving average (centre linear, side in log scale) so they do not
jitter; the joints written out are the raw per-frame predictions, so smoothing adds no lag.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from streampose.detect.boxes import grow, iou_matrix
from streampose.detect.track import Tracker as IdTracker
from streampose.detect.track import joint_distance
from streampose.errors import StreamPoseError
from streampose.model.backends import Backend
from streampose.poses.labels import PersonLabel, box_of
from streampose.stream.crops import MARGIN, apply_affine, cut_square, invert_affine, square_around
from streampose.stream.decode import Frame

#: RGB frame -> (person boxes (N, 4) in frame pixels, scores (N,)); `detect.yolox.PersonDetector`.
Detector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Square = tuple[float, float, float]  # centre x, centre y, side (frame pixels)


@dataclass
class TrackerConfig:
    """How squares are found and follow people; see the module docstring for why."""

    margin: float = MARGIN  # as training crops
    smoothing: float = 0.6  # EMA weight of the newest square (1 = none)
    vis_threshold: float = 0.5  # a joint counts as visible at or above this predicted visibility
    min_visible: int = 8  # as training crops (`crops.crop_person`)
    min_confidence: float = 0.3  # mean predicted visibility below this: nobody in the square
    patience: int = 3  # misses in a row before a track ends
    refine: int = 2  # extra passes on a frame where a track starts
    edge: float = 0.13  # visible joints this close to the crop's edge (fraction of its side) ...
    grow: float = 1.15  # ... make the next square at least this much bigger than the current one
    detect_every: int = 10  # frames between detector runs while every track holds
    max_persons: int | None = None  # follow at most this many at once
    detector_score: float = 0.4  # detector boxes below this score start no track
    min_box_height: float = 24.0  # pixels; a shorter detector box starts no track
    overlap: float = 0.3  # IoU of a detection with a followed person's (grown) box: the same person
    duplicate_distance: float = 0.15  # two poses closer than this (joint distance) are one person ...
    duplicate_cover: float = 0.5  # ... and so are two when this much of the smaller box lies in the other

    def __post_init__(self) -> None:
        if self.detect_every < 1 or (self.max_persons is not None and self.max_persons < 1):
            raise StreamPoseError(
                f"detect every {self.detect_every} frames, at most {self.max_persons} persons: both must be >= 1"
            )


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


class _Guess(NamedTuple):
    """The student's output on one square of one frame, in frame pixels."""

    square: Square
    joints2d: np.ndarray
    joints3d: np.ndarray
    visibility: np.ndarray  # sigmoid of the logits
    confidence: float  # mean visibility


@dataclass
class _Candidate:
    """A square to look in: a followed track's (`origin` its id) or a new one (`init`)."""

    square: Square
    origin: int | None = None
    init: str | None = None
    carried: bool = True  # the square is the track's own (smoothed), not a detection's


class Tracker:
    """Follows every person through consecutive frames with the student; call once per frame."""

    def __init__(
        self,
        backend: Backend,
        detector: Detector,
        config: TrackerConfig | None = None,
        box: tuple[float, float, float, float] | None = None,
    ) -> None:
        self.backend, self.detector = backend, detector
        self.config = cfg = config or TrackerConfig()
        self.box = box
        self._ids = IdTracker(max_age=cfg.patience - 1)  # ids end with their tracks
        self._squares: dict[int, Square] = {}  # the square each track looks in on the next frame
        self._boxes: dict[int, np.ndarray] = {}  # each track's last reported box
        self._misses: dict[int, int] = {}
        self._since_detection = cfg.detect_every  # so the first frame detects
        self._ended = False
        self.track_ids: set[int] = set()  # every id given in this video
        self.detections = 0  # detector runs
        self.detector_seconds = 0.0

    def __call__(self, frame: Frame) -> FramePoses:
        image = frame.image
        candidates = [_Candidate(sq, origin=i) for i, sq in self._squares.items()]
        detected = False
        if self.box is not None and frame.index == 0 and not self._squares:
            x0, y0, x1, y1 = self.box
            candidates.append(_Candidate(self._frame_box(np.array([x0, y0, x1, y1])), init="box", carried=False))
            self._since_detection = 0
        elif self._since_detection >= self.config.detect_every or self._ended or not self._squares:
            candidates = self._with_detections(image, candidates)
            detected, self._since_detection = True, 0
        self._since_detection += 1
        self._ended = False
        poses = self._follow(image, candidates)
        return FramePoses(frame.index, frame.timestamp, image.shape[:2], poses, detected)

    # -- where to look ----------------------------------------------------------------------------

    def _frame_box(self, box: np.ndarray) -> Square:
        """A person box framed as a training crop frames the teacher's joints: same margin."""
        (cx, cy), side = square_around(box.reshape(2, 2), self.config.margin)
        return cx, cy, side

    def _with_detections(self, image: np.ndarray, candidates: list[_Candidate]) -> list[_Candidate]:
        """Detections re-frame the tracks they overlap; the others become new candidates."""
        cfg = self.config
        t0 = time.perf_counter()
        boxes, scores = self.detector(image)
        self.detector_seconds += time.perf_counter() - t0
        self.detections += 1
        keep = (scores >= cfg.detector_score) & (boxes[:, 3] - boxes[:, 1] >= cfg.min_box_height)
        boxes = boxes[keep][np.argsort(-scores[keep], kind="stable")]
        fresh = np.ones(len(boxes), bool)
        if candidates and len(boxes):
            known = np.stack([grow(self._boxes[c.origin], 0.1) for c in candidates])
            iou = iou_matrix(known, boxes)
            for flat in np.argsort(-iou, axis=None):  # greedy, best overlap first: one box per track
                r, c = np.unravel_index(flat, iou.shape)
                if iou[r, c] < cfg.overlap:
                    break
                if fresh[c] and candidates[r].carried:
                    candidates[r].square, candidates[r].carried, fresh[c] = self._frame_box(boxes[c]), False, False
        room = len(boxes) if cfg.max_persons is None else max(0, cfg.max_persons - len(candidates))
        new = [_Candidate(self._frame_box(b), init="detect", carried=False) for b in boxes[fresh][:room]]
        return candidates + new

    # -- the student on the candidates --------------------------------------------------------------

    def _guesses(self, image: np.ndarray, squares: list[Square]) -> list[_Guess]:
        """The student on the crops of `squares` (one batch), its 2D joints mapped back to frame pixels."""
        if not squares:
            return []
        size = self.backend.crop_size
        cut = [cut_square(image, sq[:2], sq[2], size) for sq in squares]
        out = self.backend(np.stack([c for c, _ in cut]))
        vis = 1.0 / (1.0 + np.exp(-out["vis_logits"].astype(np.float64)))
        guesses = []
        for k, (sq, (_, matrix)) in enumerate(zip(squares, cut, strict=True)):
            joints2d = apply_affine(invert_affine(matrix), out["joints2d"][k] * size)
            v = vis[k].astype(np.float32)
            guesses.append(_Guess(sq, joints2d, out["joints3d"][k], v, float(v.mean())))
        return guesses

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

    def _look(self, image: np.ndarray, candidates: list[_Candidate]) -> list[_Guess]:
        """One pass over every candidate, then `refine` more over the new tracks' squares."""
        guesses = self._guesses(image, [c.square for c in candidates])
        new = [k for k, c in enumerate(candidates) if c.init is not None]
        for _ in range(self.config.refine):
            squares = {k: self._next_square(guesses[k]) for k in new}
            new = [k for k, sq in squares.items() if sq is not None]
            for k, guess in zip(new, self._guesses(image, [squares[k] for k in new]), strict=True):
                guesses[k] = guess
        return guesses

    def _passes(self, guess: _Guess) -> bool:
        cfg = self.config
        visible = int((guess.visibility >= cfg.vis_threshold).sum())
        return guess.confidence >= cfg.min_confidence and visible >= cfg.min_visible

    # -- who is who ---------------------------------------------------------------------------------

    def _follow(self, image: np.ndarray, candidates: list[_Candidate]) -> list[Pose]:
        cfg = self.config
        size = image.shape[:2]
        guesses = self._look(image, candidates)
        kept: list[tuple[_Candidate, _Guess, np.ndarray]] = []
        for k in sorted(range(len(guesses)), key=lambda k: -guesses[k].confidence):
            cand, guess = candidates[k], guesses[k]
            if not self._passes(guess):
                continue
            box = box_of(guess.joints2d, guess.visibility, size, cfg.vis_threshold)
            if not any(self._same_person((guess, box), (g, b)) for _, g, b in kept):
                kept.append((cand, guess, box))
        ids = self._ids.update(
            np.stack([b for *_, b in kept]) if kept else np.zeros((0, 4), np.float32),
            [g.joints2d for _, g, _ in kept],
            [g.visibility for _, g, _ in kept],
        )
        poses = []
        for (cand, guess, box), track_id in zip(kept, ids, strict=True):
            if cand.origin is not None and cand.origin != track_id and cand.origin not in ids:
                # The pose in a track's square jumped too far to be the same person: the square
                # lives on under the new id rather than as a second look at the same place.
                self._forget(cand.origin)
            new = self._next_square(guess)
            old = self._squares.get(track_id)
            smooth = old is not None and cand.carried and cand.origin == track_id
            self._squares[track_id] = self._smooth(old, new) if smooth else new
            self._boxes[track_id], self._misses[track_id] = box, 0
            self.track_ids.add(track_id)
            cx, cy, side = guess.square
            crop = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)
            poses.append(
                Pose(
                    guess.joints2d, guess.joints3d, guess.visibility, guess.confidence, box, crop,
                    tracked=cand.origin is not None, init=cand.init, track_id=track_id,
                )
            )  # fmt: skip
        for track_id in set(self._squares) - set(ids):
            # Missed: the square stays put for `patience` frames, then the track ends.
            self._misses[track_id] += 1
            if self._misses[track_id] >= cfg.patience:
                self._forget(track_id)
                self._ended = True
        return sorted(poses, key=lambda p: p.track_id)

    def _same_person(self, a: tuple[_Guess, np.ndarray], b: tuple[_Guess, np.ndarray]) -> bool:
        """Two poses on the same joints, or a box mostly inside another: one person twice.

        Joints alone miss it when a weak student predicts two different poses for one person
        from two squares (a track that drifted and a new one the detector started on the same
        person), at different scales; the box rule also merges a person mostly hidden behind
        another, for as long as they are.
        """
        (ga, box_a), (gb, box_b) = a, b
        w = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
        h = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
        smaller = min(np.prod(box_a[2:] - box_a[:2]), np.prod(box_b[2:] - box_b[:2]))
        if w > 0 and h > 0 and w * h >= self.config.duplicate_cover * smaller:
            return True
        return joint_distance((ga.joints2d, ga.visibility, box_a), (gb.joints2d, gb.visibility, box_b)) <= (
            self.config.duplicate_distance
        )

    def _forget(self, track_id: int) -> None:
        del self._squares[track_id], self._boxes[track_id], self._misses[track_id]

    def _smooth(self, old: Square, new: Square) -> Square:
        a = self.config.smoothing
        return (
            old[0] + a * (new[0] - old[0]),
            old[1] + a * (new[1] - old[1]),
            old[2] * (new[2] / old[2]) ** a,  # in log scale: growing and shrinking weigh the same
        )
