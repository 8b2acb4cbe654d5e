"""The top-down multi-person teacher: a person detector, then BlazePose on each person's crop.

MediaPipe's own pose detector follows one person (legacy API) or misses small and distant people
(Tasks API), so persons come from YOLOX-Nano boxes instead. Each box becomes a square crop with a
margin, padded black where it leaves the frame, and BlazePose GHUM 3D labels the crop: 33 image
and 33 world landmarks per person. Persons are tracked across frames (box IoU + joint distance),
and a person found in the previous frame is looked for again around where they were, so a person
the detector misses for a frame (backlight, motion blur) is not lost.

Quality gates: a box shorter than `min_box_height` pixels is not labelled, a pose with fewer than
`min_visible` visible joints is dropped, a pose that does not overlap the box it was asked about
(BlazePose found someone else in the crop) is dropped, and of two poses on the same joints the
less confident one is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from streampose.detect.boxes import blank_outside, crop_resized, grow, iou_matrix, square_around
from streampose.detect.track import Tracker, joint_distance
from streampose.detect.yolox import PersonDetector
from streampose.poses.labels import PersonLabel, box_of, visible_in_frame
from streampose.poses.skeletons import get_skeleton
from streampose.teachers.mediapipe import QuietPose, check_complexity, import_mediapipe, landmark_arrays

CROP = 256  # side of the square crop BlazePose sees; its landmark model's own input size


class BlazePoseCrops:
    """BlazePose GHUM 3D on a batch of person crops.

    The legacy graph in static-image mode treats every crop on its own, so no state (tracking,
    smoothing) can mix two people's landmarks. Batch in, batch out: a GPU landmarker can batch here.
    """

    def __init__(self, complexity: int = 1, min_detection: float = 0.5) -> None:
        mp = import_mediapipe()
        check_complexity(mp, complexity)
        self._pose = QuietPose(
            mp,
            static_image_mode=True,
            model_complexity=complexity,
            enable_segmentation=False,
            min_detection_confidence=min_detection,
        )

    def __call__(self, crops: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """(world joints, crop-pixel joints, visibility) per crop, None where it found nobody."""
        return [landmark_arrays(self._pose.process(crop), crop.shape[:2]) for crop in crops]

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None


@dataclass
class TopDownConfig:
    complexity: int = 1  # BlazePose landmark model: 0 lite, 1 full, 2 heavy
    min_box_height: float = 56.0  # pixels; BlazePose finds almost nobody shorter (README, "Top-down teacher")
    margin: float = 1.25  # crop side / the box's longer side
    second_margin: float = 1.5  # the same, for the second look at a box that gave nobody
    detector_score: float = 0.3
    min_visible: int = 8  # joints with visibility >= 0.5
    min_pose_iou: float = 0.3  # pose box vs the box it was asked about
    duplicate_distance: float = 0.15  # mean joint distance / box height under which two poses are one
    # Black out the crop this far (fraction of the box) outside the person's box, so BlazePose's own
    # detector in the crop picks this person and not a bigger, clearer one beside them; None: off.
    isolate: float | None = 0.1
    threads: int | None = None  # detector threads (onnxruntime's default when None)


class TopDownTeacher:
    name = "topdown"
    skeleton = get_skeleton("blazepose33")
    licence = "Apache-2.0 (MediaPipe's BlazePose GHUM 3D models; Megvii's YOLOX-Nano weights)"
    terms = None  # nothing carries over to a student beyond the Apache-2.0 notices

    def __init__(self, config: TopDownConfig | None = None, **options) -> None:
        self.config = cfg = config or TopDownConfig(**options)
        self.detector = PersonDetector(min_score=cfg.detector_score, threads=cfg.threads)
        self.landmarker = BlazePoseCrops(cfg.complexity)
        self._tracker = Tracker()
        self._size: tuple[int, int] | None = None

    def start_video(self, size: tuple[int, int]) -> None:
        self._size = size
        self._tracker.reset()

    def label(self, frames: Sequence[np.ndarray]) -> list[list[PersonLabel]]:
        if self._size is None:
            raise RuntimeError("start_video() must be called before label()")
        return [self._label_one(np.ascontiguousarray(f)) for f in frames]

    def candidates(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes to label: the detector's, tall enough, plus last frame's persons it did not find;
        and which of them came from the detector."""
        boxes, _ = self.detector(frame)
        boxes = boxes[boxes[:, 3] - boxes[:, 1] >= self.config.min_box_height].reshape(-1, 4)
        # A track's box is the tight box of its joints: grown to about what a detector would give.
        recent = [grow(t.box, 0.1) for t in self._tracker.tracks if t.missed == 0]
        if recent:
            seen = iou_matrix(np.stack(recent), boxes).max(axis=1) if len(boxes) else np.zeros(len(recent))
            carried = np.stack(recent)[seen < self.config.min_pose_iou]
            return np.concatenate([boxes, carried]), np.arange(len(boxes) + len(carried)) < len(boxes)
        return boxes, np.ones(len(boxes), bool)

    def _label_one(self, frame: np.ndarray) -> list[PersonLabel]:
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the video's {self._size}")
        boxes, detected = self.candidates(frame)
        # Isolation is for detector boxes; a box carried from last frame's pose needs the context.
        crops = [self._crop(frame, box, isolate=d) for box, d in zip(boxes, detected, strict=True)]
        persons, missed = self._persons(boxes, crops)
        if len(missed):
            # Second look at the boxes that gave nobody, or someone else (BlazePose's own detector
            # in the crop picked a clearer person beside or behind): more context, no isolation,
            # and the bodies of everyone found so far blacked out.
            crops = [self._crop(frame, box, margin=self.config.second_margin) for box in missed]
            for crop, back in crops:
                for p in persons:
                    self._blank_body(crop, back, p)
            persons += self._persons(missed, crops)[0]
        persons = self._without_duplicates(persons)
        ids = self._tracker.update(
            np.stack([p.box for p in persons]) if persons else np.zeros((0, 4), np.float32),
            [p.joints2d for p in persons],
            [p.visibility for p in persons],
        )
        for person, track_id in zip(persons, ids, strict=True):
            person.track_id = track_id
        return persons

    def _crop(
        self, frame: np.ndarray, box: np.ndarray, *, isolate: bool = False, margin: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        crop, back = crop_resized(frame, square_around(box, margin or self.config.margin), CROP)
        if isolate and self.config.isolate is not None:
            blank_outside(crop, back, grow(box, self.config.isolate))
        return crop, back

    def _blank_body(self, crop: np.ndarray, back: np.ndarray, person: PersonLabel) -> None:
        """Black out a found person's visible limbs and head in a crop: thick lines along the bones."""
        scale = 1 / back[0, 0]
        pts = np.round((person.joints2d - back[:, 2]) * scale).astype(np.int32)
        thickness = max(2, round(0.1 * (person.box[3] - person.box[1]) * scale))
        for a, b in self.skeleton.bones:
            if person.visibility[a] >= 0.5 and person.visibility[b] >= 0.5:
                cv2.line(crop, tuple(pts[a]), tuple(pts[b]), (0, 0, 0), thickness)

    def _persons(self, boxes: np.ndarray, crops: list) -> tuple[list[PersonLabel], np.ndarray]:
        """Persons in the crops of these boxes, and the boxes that gave none (the gates rejected it)."""
        persons, missed = [], []
        for box, (_, back), pose in zip(boxes, crops, self.landmarker([c for c, _ in crops]), strict=True):
            person = self._person(pose, back, box)
            if person is not None:
                persons.append(person)
            else:
                missed.append(box)
        return persons, np.array(missed, np.float32).reshape(-1, 4)

    def _person(self, pose, back: np.ndarray, asked: np.ndarray) -> PersonLabel | None:
        """The crop's pose in frame coordinates, or None when a gate rejects it."""
        if pose is None:
            return None
        joints3d, joints2d, model_vis = pose
        joints2d = joints2d @ back[:, :2].T.astype(np.float32) + back[:, 2].astype(np.float32)
        visibility = model_vis * visible_in_frame(joints2d, self._size)
        if int((visibility >= 0.5).sum()) < self.config.min_visible:
            return None
        box = box_of(joints2d, visibility, self._size)
        if iou_matrix(box, asked)[0, 0] < self.config.min_pose_iou:
            return None
        return PersonLabel(
            joints3d=joints3d - self.skeleton.root_of(joints3d),
            joints2d=joints2d,
            visibility=visibility,
            box=box,
            score=float(model_vis.mean()),
        )

    def _without_duplicates(self, persons: list[PersonLabel]) -> list[PersonLabel]:
        """The most confident of every group of poses on the same joints (two boxes, one person)."""
        kept: list[PersonLabel] = []
        for p in sorted(persons, key=lambda p: -p.score):
            pose = (p.joints2d, p.visibility, p.box)
            if all(
                joint_distance(pose, (k.joints2d, k.visibility, k.box)) > self.config.duplicate_distance for k in kept
            ):
                kept.append(p)
        return kept

    def close(self) -> None:
        self.landmarker.close()
