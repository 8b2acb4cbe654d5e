"""The top-down multi-person teacher: a person detector, then BlazePose on each person's crop.

MediaPipe's own pose detector follows one person (legacy API) or misses small and distant people
(Tasks API), so persons come from YOLOX-Nano boxes instead. Each box becomes a square crop with a
margin, padded black where it leaves the frame, and BlazePose GHUM 3D labels the crop: 33 image
and 33 world landmarks per person.

Detection runs every `detect_every` frames. In between, each person is followed as MediaPipe
follows one person in a video: a BlazePose graph of their own, in tracking mode, sees a window
re-centred every frame on where their landmarks put them last, so it derives its region from the
last landmarks and skips its own detector; the persons of a frame run concurrently, each graph
in a thread of its own (the graphs release the GIL). A person the graph loses is looked for again
at the next detection, and a detected box no graph follows starts a new one. Track ids come from
the box IoU + joint distance tracker over the persons each frame gives.

Quality gates: a box shorter than `min_box_height` pixels is not labelled, a pose with fewer than
`min_visible` visible joints is dropped, a pose that does not overlap the box it was asked about
(BlazePose found someone else in the crop) is dropped, and of two poses on the same joints the
less confident one is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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


def tracking_graph(complexity: int = 1) -> QuietPose:
    """A legacy BlazePose graph in tracking mode, unsmoothed: its window moves with the person, so
    a filter over crop coordinates would smooth the window's motion, not the person's."""
    mp = import_mediapipe()
    check_complexity(mp, complexity)
    return QuietPose(
        mp, static_image_mode=False, model_complexity=complexity, enable_segmentation=False, smooth_landmarks=False
    )


@dataclass
class _Followed:
    """A person followed between detections: their graph, last box (detector's, or their pose's)
    and the square window of the frame their graph sees."""

    graph: QuietPose
    box: np.ndarray
    window: np.ndarray
    fresh: bool = True  # not labelled yet: its box came from the detector or a second look


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
    detect_every: int = 4  # frames; persons are followed from their landmarks in between
    max_persons: int = 12  # followed at once
    # Persons labelled concurrently; None: every followed person in a thread of their own (on 2
    # cores that labelled 1.2x the persons/s of one thread per core: a graph waits between stages).
    workers: int | None = None


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
        self._followed: list[_Followed] = []
        self._idle: list[QuietPose] = []  # graphs of persons no longer followed, kept for the next ones
        self._frame = 0
        workers = cfg.workers or cfg.max_persons
        self._workers = ThreadPoolExecutor(workers, thread_name_prefix="topdown") if workers > 1 else None

    def start_video(self, size: tuple[int, int]) -> None:
        self._size = size
        self._tracker.reset()
        self._release(self._followed)
        self._followed, self._frame = [], 0

    def label(self, frames: Sequence[np.ndarray]) -> list[list[PersonLabel]]:
        if self._size is None:
            raise RuntimeError("start_video() must be called before label()")
        return [self._label_one(np.ascontiguousarray(f)) for f in frames]

    def candidates(self, frame: np.ndarray) -> np.ndarray:
        """Detector boxes tall enough to label that no followed person's box covers already."""
        boxes, _ = self.detector(frame)
        boxes = boxes[boxes[:, 3] - boxes[:, 1] >= self.config.min_box_height].reshape(-1, 4)
        if self._followed and len(boxes):
            followed = np.stack([grow(f.box, 0.1) if not f.fresh else f.box for f in self._followed])
            boxes = boxes[iou_matrix(boxes, followed).max(axis=1) < self.config.min_pose_iou]
        return boxes

    def _label_one(self, frame: np.ndarray) -> list[PersonLabel]:
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the video's {self._size}")
        if self._frame % self.config.detect_every == 0 or not self._followed:
            room = self.config.max_persons - len(self._followed)
            for box in self.candidates(frame)[: max(0, room)]:
                graph = self._idle.pop() if self._idle else tracking_graph(self.config.complexity)
                self._followed.append(_Followed(graph, box, square_around(box, self.config.margin)))
        self._frame += 1
        followed = self._followed
        if self._workers is not None and len(followed) > 1:
            poses = list(self._workers.map(lambda f: self._follow(frame, f), followed))
        else:
            poses = [self._follow(frame, f) for f in followed]
        found = [(f, p) for f, p in zip(followed, poses, strict=True) if p is not None]
        lost = [f for f, p in zip(followed, poses, strict=True) if p is None]
        persons = [p for _, p in found]
        missed = np.array([f.box for f in lost if f.fresh], np.float32).reshape(-1, 4)
        if len(missed):
            persons += self._second_look(frame, missed, persons)
        persons = self._without_duplicates(persons)
        kept = {id(p) for p in persons}
        self._release(lost + [f for f, p in found if id(p) not in kept])
        self._followed = [f for f, p in found if id(p) in kept]
        for f, p in found:
            f.box, f.fresh = p.box, False
        for p in persons:  # found at the second look: followed from now on
            if not any(p is q for _, q in found):
                graph = self._idle.pop() if self._idle else tracking_graph(self.config.complexity)
                self._followed.append(_Followed(graph, p.box, square_around(grow(p.box, 0.1), self.config.margin)))
        ids = self._tracker.update(
            np.stack([p.box for p in persons]) if persons else np.zeros((0, 4), np.float32),
            [p.joints2d for p in persons],
            [p.visibility for p in persons],
        )
        for person, track_id in zip(persons, ids, strict=True):
            person.track_id = track_id
        return persons

    def _follow(self, frame: np.ndarray, followed: _Followed) -> PersonLabel | None:
        """This person's pose in this frame, from their own graph on a window around where they were."""
        if not followed.fresh:
            # Re-centred on the last pose, its side changing at most 15 % a frame: the person stays
            # where the graph's region (from the last landmarks) expects them.
            want = square_around(grow(followed.box, 0.1), self.config.margin)
            old_side = followed.window[2] - followed.window[0]
            side = np.clip(want[2] - want[0], 0.85 * old_side, 1.15 * old_side)
            centre = (want[:2] + want[2:]) / 2
            followed.window = np.concatenate([centre - side / 2, centre + side / 2]).astype(np.float32)
        crop, back = crop_resized(frame, followed.window, CROP)
        if followed.fresh and self.config.isolate is not None:
            blank_outside(crop, back, grow(followed.box, self.config.isolate))
        pose = landmark_arrays(followed.graph.process(crop), crop.shape[:2])
        return self._person(pose, back, followed.box)

    def _second_look(self, frame: np.ndarray, boxes: np.ndarray, found: list[PersonLabel]) -> list[PersonLabel]:
        """Second look at detector boxes that gave nobody, or someone else (BlazePose's own detector
        in the crop picked a clearer person beside or behind): more context, no isolation, and the
        bodies of everyone found so far blacked out."""
        crops = [self._crop(frame, box, margin=self.config.second_margin) for box in boxes]
        for crop, back in crops:
            for p in found:
                self._blank_body(crop, back, p)
        persons = []
        for box, (_, back), pose in zip(boxes, crops, self.landmarker([c for c, _ in crops]), strict=True):
            person = self._person(pose, back, box)
            if person is not None:
                persons.append(person)
        return persons

    def _release(self, followed: list[_Followed]) -> None:
        self._idle += [f.graph for f in followed]

    def _crop(self, frame: np.ndarray, box: np.ndarray, *, margin: float) -> tuple[np.ndarray, np.ndarray]:
        return crop_resized(frame, square_around(box, margin), CROP)

    def _blank_body(self, crop: np.ndarray, back: np.ndarray, person: PersonLabel) -> None:
        """Black out a found person's visible limbs and head in a crop: thick lines along the bones."""
        scale = 1 / back[0, 0]
        pts = np.round((person.joints2d - back[:, 2]) * scale).astype(np.int32)
        thickness = max(2, round(0.1 * (person.box[3] - person.box[1]) * scale))
        for a, b in self.skeleton.bones:
            if person.visibility[a] >= 0.5 and person.visibility[b] >= 0.5:
                cv2.line(crop, tuple(pts[a]), tuple(pts[b]), (0, 0, 0), thickness)

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
        if self._workers is not None:
            self._workers.shutdown()
        self._release(self._followed)
        self._followed = []
        for graph in self._idle:
            graph.close()
        self._idle = []
        self.landmarker.close()
