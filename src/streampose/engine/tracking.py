"""Following every person through a video with the student alone: detect, then track.

Where squares come from. A person detector (YOLOX-Nano, `detect.yolox`) runs on the first frame,
every `detect_every` frames after, on the frame after a track ended or was doubted, and whenever
nobody is followed; each person box becomes a square framed like a training crop
(`crops.square_around`, 25 % margin). Between detections the student carries each square forward
itself: the next square is centred on the visible 2D joints it predicted, mapped back to frame
pixels through the inverse of the crop's affine, so it keeps seeing crops like the ones it learnt
from.

Why the detector, not the student, is the anchor. A student that reads a person slightly wrong
moves its square a little wrong, and the next crop, framed on that error, is read worse: left to
the student, a square drifts onto a neighbour, or grows (answering joints it predicts against the
crop's edge) until it frames a group. So:
- each track keeps its *anchor*, the detector box (or `--box`) it was last matched to. On a
  detection frame, detections are matched to tracks (Hungarian on IoU) against each track's
  *expected box*, the anchor moved and scaled with the square since, or the anchor where it was
  (the student may be what moved); a matched track's square is re-framed on its detection.
  Boxes from `detector_score` start tracks, weaker ones from `confirm_score` only keep them, in
  a second round for the tracks left (ByteTrack's two thresholds): YOLOX-Nano scores some people
  low in most frames. A track no detection matches for `max_unseen` runs ends (a `--box` one
  excepted), since a student trained on a few clips is confident on background where it saw
  people;
- the size is the anchor's: the joints' extent of a weak student swings from frame to frame,
  while a person's size changes little between two detections. The square grows (``grow``, up to
  ``max_scale`` of the anchor's) only when visible joints touch its edge (``edge``), where the
  student, which only predicts what its crop shows, would otherwise keep a cut-off person cut off;
- it moves at most ``max_shift`` of its side per frame, and not at all when the pose's
  confidence is below ``trust``: the detector then looks again on the next frame.

Which person is which. A track is its square: it keeps its id from the detection that started it
until it ends (ids are never reused within a video), so joints that drift onto a neighbour cannot
swap two people's ids.

Who says a person is there. Confidence is the mean predicted visibility (sigmoid of
``vis_logits``); the student is trained with background crops labelled all-invisible
(`crops.background_crops`), so a square off its person scores low. A track starts only where the
detector boxes someone *and* the student agrees (confidence >= ``min_confidence``, at least
``min_visible`` joints at ``vis_threshold``): a detector's false box starts nothing. Once
started, a track the detector vouches for (matched to a box of its own at the last detection
frame) is reported even when the student doubts it, with its low confidence, and the detector
looks again on the next frame: a student trained on a few clips can read an unusual person (the
rendered woman of the Pose2Sim clips) as background while the detector still sees her. A track
neither vouches for is not reported; its square stays put for ``patience`` frames, then it ends.

One person twice. Two poses on the same joints, or one box mostly inside the other, are one person
(a weak student reads one person differently from two squares), unless the detector vouched for
both: two tracks each matched to a detection of their own at the last detection frame are two
people even when one's joints land on the other (the composited woman in front of the Pose2Sim
man). Otherwise the track the detector vouched for, then the more confident, is kept. Squares are
smoothed (EMA; the side in log scale) so they do not jitter; the joints written out are the raw
per-frame predictions, so smoothing adds no lag.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from streampose.detect.boxes import iou_matrix
from streampose.detect.track import joint_distance
from streampose.engine.predicted import FramePoses, Pose
from streampose.errors import StreamPoseError
from streampose.model.backends import Backend
from streampose.poses.labels import box_of
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
    trust: float = 0.7  # confidence below this: the square holds still and the detector looks again
    patience: int = 3  # misses in a row before a track ends
    edge: float = 0.05  # visible joints this close to the crop's edge (fraction of its side) ...
    grow: float = 1.15  # ... make the next square this much bigger, up to `max_scale` of its anchor's
    max_scale: float = 1.15
    max_shift: float = 0.15  # per frame, as a fraction of the square's side
    detect_every: int = 5  # frames between detector runs while every track holds
    max_persons: int | None = None  # follow at most this many at once
    detector_score: float = 0.4  # detector boxes below this score start no track ...
    confirm_score: float = 0.1  # ... but from this score on keep one alive (the detector's `min_score`)
    max_unseen: int = 3  # detector runs in a row that do not see a track end it
    min_box_height: float = 24.0  # pixels; a shorter detector box starts no track
    overlap: float = 0.3  # IoU of a detection with a track's expected box: the same person
    duplicate_distance: float = 0.15  # two poses closer than this (joint distance) are one person ...
    duplicate_cover: float = 0.5  # ... and so are two when this much of the smaller box lies in the other

    def __post_init__(self) -> None:
        if self.detect_every < 1 or (self.max_persons is not None and self.max_persons < 1):
            raise StreamPoseError(
                f"detect every {self.detect_every} frames, at most {self.max_persons} persons: both must be >= 1"
            )


class _Guess(NamedTuple):
    """The student's output on one square of one frame, in frame pixels."""

    square: Square
    joints2d: np.ndarray
    joints3d: np.ndarray
    visibility: np.ndarray  # sigmoid of the logits
    confidence: float  # mean visibility


@dataclass
class _Track:
    """A followed person: where to look next, and the detector box that last vouched for them."""

    square: Square  # the square to look in on the next frame
    anchor: np.ndarray  # (4,) the detector box (or --box) it was last matched to, frame pixels
    anchor_square: Square  # the square that box framed
    init: str = "detect"  # what started it: "detect" or "box"
    vouched: bool = True  # matched to a detection of its own at the last detection frame
    unseen: int = 0  # detector runs in a row that did not match it
    misses: int = 0

    def expected_box(self) -> np.ndarray:
        """The anchor box, moved and scaled with the square since it was matched."""
        (cx, cy, side), (_, _, anchor_side) = self.square, self.anchor_square
        half = (self.anchor[2:] - self.anchor[:2]) / 2 * (side / anchor_side)
        return np.concatenate([np.array([cx, cy]) - half, np.array([cx, cy]) + half])


@dataclass
class _Candidate:
    """A square to look in: a followed track's (`origin` its id) or a new one (`init`). `anchor` is
    the detector box (or `--box`) that framed the square on this frame, None for a carried one."""

    square: Square
    origin: int | None = None
    init: str | None = None
    anchor: np.ndarray | None = None


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
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0  # ids are never reused within a video
        self._since_detection = cfg.detect_every  # so the first frame detects
        self._look_again = False  # a track ended or was doubted: detect on the next frame
        self.track_ids: set[int] = set()  # every id given in this video
        self.detections = 0  # detector runs
        self.detector_seconds = 0.0

    def __call__(self, frame: Frame) -> FramePoses:
        image = frame.image
        candidates = [_Candidate(t.square, origin=i) for i, t in self._tracks.items()]
        detected = False
        if self.box is not None and frame.index == 0 and not self._tracks:
            box = np.array(self.box, np.float32)
            candidates.append(_Candidate(self._frame_box(box), init="box", anchor=box))
            self._since_detection = 0
        elif self._since_detection >= self.config.detect_every or self._look_again or not self._tracks:
            candidates = self._with_detections(image)
            detected, self._since_detection = True, 0
        self._since_detection += 1
        self._look_again = False
        poses = self._follow(image, candidates, detected)
        return FramePoses(frame.index, frame.timestamp, image.shape[:2], poses, detected)

    # -- where to look ----------------------------------------------------------------------------

    def _frame_box(self, box: np.ndarray) -> Square:
        """A person box framed as a training crop frames the teacher's joints: same margin."""
        (cx, cy), side = square_around(box.reshape(2, 2), self.config.margin)
        return cx, cy, side

    def _with_detections(self, image: np.ndarray) -> list[_Candidate]:
        """Every track's candidate, re-framed on the detection that matches its expected box (or
        its anchor where it was: the student may be the one that moved); unmatched detections
        at `detector_score` become new candidates, weaker ones only keep tracks alive."""
        cfg = self.config
        t0 = time.perf_counter()
        boxes, scores = self.detector(image)
        self.detector_seconds += time.perf_counter() - t0
        self.detections += 1
        keep = np.argsort(-scores, kind="stable")
        keep = keep[scores[keep] >= cfg.confirm_score]
        boxes, scores = boxes[keep], scores[keep]
        fresh = (scores >= cfg.detector_score) & (boxes[:, 3] - boxes[:, 1] >= cfg.min_box_height)
        ids = list(self._tracks)
        matched: dict[int, np.ndarray] = {}
        for stage in (fresh, ~fresh):  # confident boxes first, then weak ones for the tracks left (ByteTrack)
            left = [i for i in ids if i not in matched]
            cols = np.flatnonzero(stage)
            if not left or not len(cols):
                continue
            tracks = [self._tracks[i] for i in left]
            iou = np.maximum(
                iou_matrix(np.stack([t.expected_box() for t in tracks]), boxes[cols]),
                iou_matrix(np.stack([t.anchor for t in tracks]), boxes[cols]),
            )
            for r, c in zip(*linear_sum_assignment(-iou), strict=True):
                if iou[r, c] >= cfg.overlap:
                    matched[left[r]], fresh[cols[c]] = boxes[cols[c]], False
        candidates = []
        for i in ids:
            track = self._tracks[i]
            track.unseen = 0 if i in matched else track.unseen + 1
            if track.unseen >= cfg.max_unseen and track.init != "box":
                del self._tracks[i]
            elif i in matched:
                candidates.append(_Candidate(self._frame_box(matched[i]), origin=i, anchor=matched[i]))
            else:
                candidates.append(_Candidate(track.square, origin=i))
        room = len(boxes) if cfg.max_persons is None else max(0, cfg.max_persons - len(candidates))
        new = [_Candidate(self._frame_box(b), init="detect", anchor=b) for b in boxes[fresh][:room]]
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

    def _next_square(self, guess: _Guess, anchor_side: float) -> Square | None:
        """The square for the next frame: centred on the visible predicted joints (moving at most
        `max_shift` of the side), as big as the anchor's square (`anchor_side`), or bigger when
        joints touch the crop's edge (module docstring); None if too few joints are visible.

        Training crops leave 1/6 of the side free beyond the joints; `edge` is well inside that
        band, so a student that merely misplaces the feet a little does not grow the square.
        """
        cfg = self.config
        visible = guess.visibility >= cfg.vis_threshold
        if int(visible.sum()) < cfg.min_visible:
            return None
        pts = guess.joints2d[visible]
        (cx, cy), _ = square_around(pts, cfg.margin)
        ox, oy, current = guess.square
        lo = np.array([ox - current / 2.0, oy - current / 2.0])
        gap = min(float((pts - lo).min()), float((lo + current - pts).min()))
        side = min(cfg.grow * current, cfg.max_scale * anchor_side) if gap < cfg.edge * current else anchor_side
        shift = np.array([cx - ox, cy - oy])
        shift *= min(1.0, cfg.max_shift * current / max(float(np.linalg.norm(shift)), 1e-9))
        return ox + float(shift[0]), oy + float(shift[1]), float(side)

    def _passes(self, guess: _Guess) -> bool:
        cfg = self.config
        visible = int((guess.visibility >= cfg.vis_threshold).sum())
        return guess.confidence >= cfg.min_confidence and visible >= cfg.min_visible

    # -- who is who ---------------------------------------------------------------------------------

    def _vouched(self, cand: _Candidate, detected: bool) -> bool:
        """Whether the detector saw this person at the last detection frame, in a box of their own."""
        if cand.anchor is not None:
            return True
        return not detected and cand.origin is not None and self._tracks[cand.origin].vouched

    def _follow(self, image: np.ndarray, candidates: list[_Candidate], detected: bool) -> list[Pose]:
        size = image.shape[:2]
        guesses = self._guesses(image, [c.square for c in candidates])
        vouched = [self._vouched(c, detected) for c in candidates]
        kept: list[tuple[int, np.ndarray]] = []
        for k in sorted(range(len(guesses)), key=lambda k: (not vouched[k], -guesses[k].confidence)):
            if not (self._passes(guesses[k]) or (vouched[k] and candidates[k].origin is not None)):
                continue
            box = box_of(guesses[k].joints2d, guesses[k].visibility, size, self.config.vis_threshold)
            if not any(
                not (vouched[k] and vouched[o]) and self._same_person((guesses[k], box), (guesses[o], b))
                for o, b in kept
            ):
                kept.append((k, box))
        poses = []
        for k, box in kept:
            cand, guess = candidates[k], guesses[k]
            cx, cy, side = guess.square
            crop = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)
            poses.append(
                Pose(
                    guess.joints2d, guess.joints3d, guess.visibility, guess.confidence, box, crop,
                    tracked=cand.origin is not None, init=cand.init, track_id=self._update(cand, guess, vouched[k]),
                )
            )  # fmt: skip
        seen = {p.track_id for p in poses}
        for track_id in set(self._tracks) - seen:
            # Missed: the square stays put for `patience` frames, then the track ends.
            track = self._tracks[track_id]
            track.misses += 1
            track.vouched = track.vouched and not detected
            if track.misses >= self.config.patience:
                del self._tracks[track_id]
                self._look_again = True
        return sorted(poses, key=lambda p: p.track_id)

    def _update(self, cand: _Candidate, guess: _Guess, vouched: bool) -> int:
        """Carry a reported pose's track to the next frame (a new one gets an id); its id.
        `vouched`: the detector vouches for it (`_vouched`)."""
        if cand.origin is None:
            assert cand.anchor is not None  # new tracks start from a detection or --box
            track_id, self._next_id = self._next_id, self._next_id + 1
            track = _Track(guess.square, cand.anchor, self._frame_box(cand.anchor), init=cand.init or "detect")
            self._tracks[track_id] = track
        else:
            track_id, track = cand.origin, self._tracks[cand.origin]
            if cand.anchor is not None:
                track.anchor, track.anchor_square = cand.anchor, self._frame_box(cand.anchor)
            track.vouched = vouched
        track.misses = 0
        self.track_ids.add(track_id)
        if guess.confidence < self.config.trust:
            self._look_again = True  # doubted: the square holds still until the detector has looked
            track.square = guess.square
            return track_id
        new = self._next_square(guess, track.anchor_square[2]) or guess.square
        carried = cand.anchor is None and cand.origin is not None
        track.square = self._smooth(guess.square, new) if carried else new
        return track_id

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

    def _smooth(self, old: Square, new: Square) -> Square:
        a = self.config.smoothing
        return (
            old[0] + a * (new[0] - old[0]),
            old[1] + a * (new[1] - old[1]),
            old[2] * (new[2] / old[2]) ** a,  # in log scale: growing and shrinking weigh the same
        )
