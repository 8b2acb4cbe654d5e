"""MediaPipe BlazePose GHUM 3D, the offline default teacher.

Why this release: `mediapipe==0.10.21` is the last PyPI release whose wheel carries the pose
models (`pose_detection.tflite`, `pose_landmark_full.tflite`), so the "full" model runs on a
fresh machine with no download. Later releases only have the Tasks API and fetch `.task`
bundles from Google's storage at run time. The lite and heavy models are not in the wheel, and
the legacy graph loads models only from its install folder: the top-down teacher runs them
(`topdown:lite`, `topdown:heavy`) from the model store.

The legacy API follows one person per video, in tracking mode (it re-detects when it loses
the person, which starts a new track id).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streampose.errors import TeacherUnavailable
from streampose.poses.labels import PersonLabel, box_of, visible_in_frame
from streampose.poses.skeletons import get_skeleton
from streampose.teachers.quiet import native_chatter_filtered

_MODEL_FILES = {
    0: "pose_landmark_lite.tflite",
    1: "pose_landmark_full.tflite",
    2: "pose_landmark_heavy.tflite",
}
_COMPLEXITY = {"lite": 0, "full": 1, "heavy": 2}


def import_mediapipe():
    # Quieten glog/TFLite chatter where the environment reaches it; must be set before the import.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import mediapipe as mp
    except ImportError as e:
        raise TeacherUnavailable(f"the mediapipe teacher needs mediapipe==0.10.21 ({e}); run `make install`") from None
    if not hasattr(mp, "solutions"):
        raise TeacherUnavailable(
            f"mediapipe {mp.__version__} has no bundled pose models; install mediapipe==0.10.21 (`make install`)"
        )
    return mp


def check_complexity(mp, complexity: int) -> None:
    """Fail with a clear message when the landmark model of this complexity is not installed."""
    if complexity not in _MODEL_FILES:
        raise TeacherUnavailable(f"mediapipe complexity must be 0, 1 or 2, not {complexity}")
    model = Path(mp.__file__).parent / "modules" / "pose_landmark" / _MODEL_FILES[complexity]
    if not model.exists():
        raise TeacherUnavailable(
            f"{model.name} is not in this mediapipe wheel; use `--teacher topdown:{model.stem.split('_')[-1]}` "
            f"(the model store fetches it), or copy it from npm @mediapipe/pose into {model.parent}"
        )


def landmark_arrays(result, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(root-free world joints (J, 3), pixel joints (J, 2), model visibility (J,)) of a legacy Pose
    result on an image of (height, width), or None when it found nobody."""
    if result.pose_world_landmarks is None or result.pose_landmarks is None:
        return None
    h, w = size
    world = result.pose_world_landmarks.landmark
    image = result.pose_landmarks.landmark
    joints3d = np.array([[p.x, p.y, p.z] for p in world], dtype=np.float32)
    # Normalised [0, 1] edges -> pixel centres at integer coordinates.
    joints2d = np.array([[p.x * w - 0.5, p.y * h - 0.5] for p in image], dtype=np.float32)
    visibility = np.clip(np.array([p.visibility for p in image], dtype=np.float32), 0.0, 1.0)
    return joints3d, joints2d, visibility


class QuietPose:
    """A legacy Pose graph whose native start-up chatter stays off stderr.

    Filtered: building it and its first run on a blank image (its calculators open on their own
    threads after the constructor returns; the first run waits for them), then every run until it
    first finds someone (the landmark stage logs its own warnings then).
    """

    def __init__(self, mp, **options) -> None:
        with native_chatter_filtered():
            self._pose = mp.solutions.pose.Pose(**options)
            self._pose.process(np.zeros((64, 64, 3), np.uint8))
        self._found_someone = False

    def process(self, image: np.ndarray):
        if self._found_someone:
            return self._pose.process(image)
        with native_chatter_filtered():
            result = self._pose.process(image)
        self._found_someone = result.pose_landmarks is not None
        return result

    def close(self) -> None:
        self._pose.close()


class MediaPipeTeacher:
    name = "mediapipe"
    skeleton = get_skeleton("blazepose33")
    licence = "Apache-2.0 (MediaPipe and its BlazePose GHUM 3D models)"
    terms = None  # nothing carries over to a student beyond the Apache-2.0 notice

    def __init__(
        self, complexity: int = 1, min_detection: float = 0.5, min_tracking: float = 0.5, model: str | None = None
    ) -> None:
        if model is not None:  # `mediapipe:heavy`: the landmark model by name, as the top-down teacher takes it
            if model not in _COMPLEXITY:
                raise TeacherUnavailable(f"unknown landmark model {model!r}; known: {', '.join(_COMPLEXITY)}")
            complexity = _COMPLEXITY[model]
        self._mp = mp = import_mediapipe()
        check_complexity(mp, complexity)
        self._options = dict(
            static_image_mode=False,
            model_complexity=complexity,
            smooth_landmarks=True,
            enable_segmentation=False,
            min_detection_confidence=min_detection,
            min_tracking_confidence=min_tracking,
        )
        self._pose = None
        self._size: tuple[int, int] = (0, 0)
        self._track = -1
        self._tracking = False

    def start_video(self, size: tuple[int, int]) -> None:
        # A fresh graph per video: the tracker must not carry a person across videos.
        self.close()
        self._pose = QuietPose(self._mp, **self._options)
        self._size = size
        self._track = -1
        self._tracking = False

    def label(self, frames: Sequence[np.ndarray]) -> list[list[PersonLabel]]:
        if self._pose is None:
            raise RuntimeError("start_video() must be called before label()")
        return [self._label_one(np.ascontiguousarray(f)) for f in frames]

    def _label_one(self, frame: np.ndarray) -> list[PersonLabel]:
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the video's {self._size}")
        arrays = landmark_arrays(self._pose.process(frame), self._size)
        if arrays is None:
            self._tracking = False
            return []
        if not self._tracking:
            self._track += 1
            self._tracking = True
        joints3d, joints2d, model_vis = arrays
        joints3d -= self.skeleton.root_of(joints3d)
        visibility = model_vis * visible_in_frame(joints2d, self._size)
        return [
            PersonLabel(
                joints3d=joints3d,
                joints2d=joints2d,
                visibility=visibility,
                box=box_of(joints2d, visibility, self._size),
                track_id=self._track,
                # The legacy API reports no per-person score (presence stays 0): use mean visibility.
                score=float(model_vis.mean()),
            )
        ]

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None
