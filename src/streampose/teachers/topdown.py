"""The top-down multi-person teacher: a person detector, then BlazePose on each person's crop.

MediaPipe's own pose detector follows one person (legacy API) or misses small and distant people
(Tasks API), so persons come from YOLOX-Nano boxes instead, and BlazePose's landmark model runs
directly on each person's crop (`teachers.blazepose`): a square around the box with a margin,
padded black where it leaves the frame. It gives 33 image and 33 world landmarks per person,
and it labels the person the crop is centred on, so a crop that also shows someone bigger or
clearer beside them still labels them. All persons of a frame go through the model as one batch.

Detection runs every `detect_every` frames. In between, each person is followed as MediaPipe
follows one person: the crop for the next frame is framed from the two alignment points the
model predicted (hips' centre, body scale and direction), turned with the body, so a person
bending or lying down stays upright in their crop. A person the model no longer sees (presence
score, too few visible joints) is looked for again at the next detection, and a detected box no
followed person covers starts a new one. Track ids come from the box IoU + joint distance tracker.

Quality gates: a box shorter than `min_box_height` pixels is not labelled, a pose with fewer than
`min_visible` visible joints is dropped, a pose that does not overlap the detector box it was
asked about is dropped, and of two poses on the same joints (two crops that ended on one person)
the less confident one is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from streampose.detect.boxes import framing, iou_matrix
from streampose.detect.track import Tracker, joint_distance
from streampose.detect.yolox import PersonDetector
from streampose.poses.labels import PersonLabel, Silhouette, box_of, visible_in_frame
from streampose.poses.skeletons import get_skeleton
from streampose.stream.crops import apply_affine, cut_square, invert_affine
from streampose.teachers.blazepose import CROP, Landmarker, roi_from_alignment

Roi = tuple[tuple[float, float], float, float]  # centre, side, angle (crops.crop_matrix)


@dataclass(eq=False)
class _Followed:
    """A person followed between detections: the crop their next pose comes from, and the box
    they were last seen in (the detector's while `fresh`, then their pose's)."""

    roi: Roi
    box: np.ndarray
    fresh: bool = True


class _Seen(NamedTuple):
    """A pose that passed every gate: whose crop it came from, how well it fits the box that crop
    was cut for (IoU), and the crop to follow it with."""

    followed: _Followed
    person: PersonLabel
    fit: float
    roi: Roi


@dataclass
class TopDownConfig:
    model: str = "full"  # BlazePose landmark model: lite, full or heavy
    min_box_height: float = 56.0  # pixels; BlazePose finds almost nobody shorter (docs/teachers.md)
    margin: float = 1.25  # crop side / the detector box's longer side
    detector_score: float = 0.3
    min_presence: float = 0.5  # the landmark model's own score that a person fills the crop
    min_visible: int = 8  # joints with visibility >= 0.5
    min_pose_iou: float = 0.3  # pose box vs the detector box it was asked about
    duplicate_distance: float = 0.15  # mean joint distance / box height under which two poses are one
    threads: int | None = None  # detector and landmarker threads (all cores when None)
    detect_every: int = 4  # frames; persons are followed from their landmarks in between
    max_persons: int = 12  # followed at once


class TopDownTeacher:
    name = "topdown"
    skeleton = get_skeleton("blazepose33")
    licence = "Apache-2.0 (MediaPipe's BlazePose GHUM 3D models; Megvii's YOLOX-Nano weights)"
    terms = None  # nothing carries over to a student beyond the Apache-2.0 notices
    takes_threads = True  # `threads=N` bounds its CPU threads (`stream.producers.teacher_factory`)

    def __init__(self, config: TopDownConfig | None = None, **options) -> None:
        self.config = cfg = config or TopDownConfig(**options)
        if cfg.model != "full":  # labels, checkpoints and cards say which landmark model labelled them
            self.name = f"topdown:{cfg.model}"
        self.detector = PersonDetector(min_score=cfg.detector_score, threads=cfg.threads)
        self.landmarker = Landmarker(cfg.model, threads=cfg.threads)
        self._tracker = Tracker()
        self._size: tuple[int, int] | None = None
        self._followed: list[_Followed] = []
        self._frame = 0
        self._lost = False  # someone followed was lost this frame: detect again on the next

    def start_video(self, size: tuple[int, int]) -> None:
        self._size = size
        self._tracker.reset()
        self._followed, self._frame, self._lost = [], 0, False

    def label(self, frames: Sequence[np.ndarray]) -> list[list[PersonLabel]]:
        if self._size is None:
            raise RuntimeError("start_video() must be called before label()")
        return [self._label_one(np.ascontiguousarray(f)) for f in frames]

    def candidates(self, frame: np.ndarray) -> np.ndarray:
        """Detector boxes tall enough to label that are not a followed person's.

        Boxes and followed persons are paired one to one (most overlap first), so a box that
        overlaps someone followed but is paired with nobody, a person half behind another, is
        still a candidate.
        """
        boxes, _ = self.detector(frame)
        boxes = boxes[boxes[:, 3] - boxes[:, 1] >= self.config.min_box_height].reshape(-1, 4)
        if self._followed and len(boxes):
            iou = iou_matrix(boxes, np.stack([f.box for f in self._followed]))
            rows, cols = linear_sum_assignment(-iou)
            taken = rows[iou[rows, cols] >= self.config.min_pose_iou]
            boxes = np.delete(boxes, taken, axis=0)
        return boxes

    def _label_one(self, frame: np.ndarray) -> list[PersonLabel]:
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the video's {self._size}")
        cfg = self.config
        if self._frame % cfg.detect_every == 0 or self._lost or not self._followed:
            room = max(0, cfg.max_persons - len(self._followed))
            for box in self.candidates(frame)[:room]:
                self._followed.append(_Followed((*framing(box, cfg.margin), 0.0), box))
        self._frame += 1
        found = self._look(frame, self._followed, [])
        kept = self._without_duplicates(found)
        missed = [f for f in self._followed if f not in (s.followed for s in kept)]
        if missed and kept:  # a second look, everyone found so far blurred out
            found += self._look(frame, missed, [s.person for s in kept])
            kept = self._without_duplicates(found)
        followed_before, self._followed = self._followed, []
        for seen in kept:
            if seen.followed not in self._followed:
                seen.followed.roi, seen.followed.box, seen.followed.fresh = seen.roi, seen.person.box, False
                self._followed.append(seen.followed)
        self._lost = any(not f.fresh for f in followed_before if f not in self._followed)
        kept_persons = [s.person for s in kept]
        ids = self._tracker.update(
            np.stack([p.box for p in kept_persons]) if kept else np.zeros((0, 4), np.float32),
            [p.joints2d for p in kept_persons],
            [p.visibility for p in kept_persons],
        )
        for person, track_id in zip(kept_persons, ids, strict=True):
            person.track_id = track_id
        return kept_persons

    def _look(self, frame: np.ndarray, followed: list[_Followed], hide: list[PersonLabel]) -> list[_Seen]:
        """Each followed person's pose on their crop, with the bodies of `hide` blurred out (the
        landmark model labels whoever a crop shows best: a person in front can take the crop of
        the person behind); only the poses every gate passes."""
        if not followed:
            return []
        cuts = [cut_square(frame, *f.roi[:2], CROP, f.roi[2]) for f in followed]
        for crop, matrix in cuts:
            for person in hide:
                self._hide_body(crop, matrix, person)
        poses = self.landmarker(np.stack([c for c, _ in cuts]))
        seen = [self._person(poses, i, m, f) for i, (f, (_, m)) in enumerate(zip(followed, cuts, strict=True))]
        return [s for s in seen if s is not None]

    @staticmethod
    def _hide_body(crop: np.ndarray, matrix: np.ndarray, person: PersonLabel) -> None:
        """Blur a person out of a crop, in place: the hull of their visible joints, heavily blurred,
        so no person-shaped outline is left for the model to label (black limbs are one)."""
        points = apply_affine(matrix, person.joints2d[person.visibility >= 0.5])
        mask = np.zeros(crop.shape[:2], np.uint8)
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
        blurred = cv2.GaussianBlur(crop, (0, 0), sigmaX=crop.shape[0] / 16)
        crop[mask > 0] = blurred[mask > 0]

    def _person(self, poses, i: int, matrix: np.ndarray, followed: _Followed) -> _Seen | None:
        """Crop `i`'s pose in frame coordinates (`matrix`: frame to crop), or None when a gate
        rejects it."""
        cfg, back = self.config, invert_affine(matrix)
        if poses.presence[i] < cfg.min_presence:
            return None
        joints2d = apply_affine(back, poses.joints2d[i])
        visibility = poses.visibility[i] * visible_in_frame(joints2d, self._size)
        if int((visibility >= 0.5).sum()) < cfg.min_visible:
            return None
        box = box_of(joints2d, visibility, self._size)
        fit = float(iou_matrix(box, followed.box)[0, 0])
        if fit < cfg.min_pose_iou:
            return None  # someone else: not the person the detector boxed, or seen last frame
        joints3d = poses.joints3d[i].copy()
        turn = back[:, :2] / np.hypot(*back[0, :2])  # the rotation in the crop's matrix back to the frame
        joints3d[:, :2] = joints3d[:, :2] @ turn.T.astype(np.float32)  # the crop's axes to the frame's
        person = PersonLabel(
            joints3d=joints3d - self.skeleton.root_of(joints3d),
            joints2d=joints2d,
            visibility=visibility,
            box=box,
            score=float(poses.visibility[i].mean()),
            silhouette=Silhouette(poses.mask[i], matrix),
        )
        return _Seen(followed, person, fit, roi_from_alignment(*apply_affine(back, poses.alignment[i])))

    def _without_duplicates(self, found: list[_Seen]) -> list[_Seen]:
        """One pose of every group on the same joints (two crops, one person): the one that fits
        the box its crop was cut for best (the other crop's person may be behind it, and gets a
        second look), then the more confident."""
        kept: list[_Seen] = []
        for seen in sorted(found, key=lambda s: (-s.fit, -s.person.score)):
            p = seen.person
            pose = (p.joints2d, p.visibility, p.box)
            if all(
                joint_distance(pose, (k.person.joints2d, k.person.visibility, k.person.box))
                > self.config.duplicate_distance
                for k in kept
            ):
                kept.append(seen)
        return kept

    def close(self) -> None:
        self._followed = []
        self.landmarker.close()
