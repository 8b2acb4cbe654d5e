"""Apple CoMotion, an optional multi-person teacher (github.com/apple/ml-comotion).

Why it is optional: CoMotion is not on PyPI, its weights and the SMPL body model it needs must
be fetched by hand (the SMPL model only after registering), and it is a GPU teacher: tens of
seconds per frame on a 2-core CPU (docs/teachers.md). Its licences are also narrower than MediaPipe's: code under the
Apple Sample Code License, weights under the Apple ML Research Model License (non-commercial
research only, derivatives included, so a student trained on its labels inherits that), SMPL
non-commercial with no redistribution. See docs/teachers.md, "CoMotion teacher (optional)".

What it gives, per frame: up to 48 tracked people (rows padded with zeros, ``id == 0`` marks an
empty slot), each with 27 points (`comotion27`: SMPL joints 0-21 plus nose, right_eye, left_eye,
right_ear, left_ear) in camera coordinates, metres, translation included, and their projection
with K. It reports no per-joint visibility and no per-track confidence, so this module defines
both (see `tracks_to_persons`).

Pixel convention: CoMotion's 2D coordinates treat the image as the continuous rectangle
[0, W] x [0, H] (its default principal point is (W/2, H/2) and it counts a point as in bounds
when 0 < x < W). stream-pose puts pixel centres at integer coordinates (OpenCV), so its 2D is
CoMotion's minus 0.5, and user intrinsics, given in OpenCV's convention, gain 0.5 on the way in.

The conversion functions here are plain numpy and run without CoMotion; only `CoMotionTeacher`
imports it, after checking, file by file, that everything it needs is in place (some of
CoMotion's modules assert at import time, which would otherwise surface as a traceback).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from streampose.errors import StreamPoseError
from streampose.poses.labels import PersonLabel, box_of, visible_in_frame
from streampose.poses.skeletons import get_skeleton
from streampose.teachers.comotion_install import (
    DevicePlan,
    _device_facts,
    check_install,
    import_comotion,
    plan_device,
)

SKELETON = get_skeleton("comotion27")

CPU_WARNING = (
    "the comotion teacher is running on the CPU: expect 30 s or more per frame (30-105 s measured on 2 cores); "
    "use a CUDA GPU or Apple Silicon"
)

# A new track's first frames are its noisiest (CoMotion itself discards most bad tracks within
# three frames), so by default a track's joints count as visible from its third frame on.
DEFAULT_MIN_AGE = 3
DEFAULT_MIN_VISIBLE = 8
# A detection "lies on" a track when their joints are on average closer than this fraction of the
# track's 2D size; its confidence then scores the track.
DEFAULT_MATCH_TOL = 0.1
# CoMotion clamps depth to 1 mm before projecting; a joint at or behind that is not in view.
MIN_DEPTH = 1e-3


# --------------------------------------------------------------------------------------------
# Intrinsics


def default_intrinsics(size: tuple[int, int], focal: float | None = None) -> np.ndarray:
    """CoMotion's default camera for a (height, width) frame, as the 2x3 K it takes.

    Its demo uses fx = fy = 2 * max(H, W) with the principal point at the image centre, which in
    its continuous pixel convention is (W/2, H/2). Unknown cameras are the common case on web
    video, so this guess is the default; `focal` overrides only the focal length.
    """
    h, w = size
    f = float(focal) if focal is not None else 2.0 * max(h, w)
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0]], dtype=np.float64)


def comotion_intrinsics(matrix: Any) -> np.ndarray:
    """A 3x3 or 2x3 camera matrix in OpenCV's convention -> the 2x3 K CoMotion expects.

    OpenCV (and every calibration tool built on it) puts pixel centres at integer coordinates;
    CoMotion's coordinates start at the image's outer edge, half a pixel earlier.
    """
    k = np.asarray(matrix, dtype=np.float64)
    if k.shape not in ((3, 3), (2, 3)):
        raise StreamPoseError(f"intrinsics must be a 3x3 or 2x3 camera matrix, got shape {k.shape}")
    k = k[:2].copy()
    k[:, 2] += 0.5
    return k


# --------------------------------------------------------------------------------------------
# CoMotion outputs -> PersonLabel (pure; no CoMotion needed)


def _field(container: Any, name: str) -> Any:
    """A field of CoMotion's outputs: detections are dicts, tracks a tensorclass with attributes."""
    if isinstance(container, Mapping):
        return container[name]
    return getattr(container, name)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float64)


def _rows(x: Any, trailing: int) -> np.ndarray:
    """Drop CoMotion's leading batch dimension of 1: (1, N, *tail) -> (N, *tail)."""
    a = _numpy(x)
    while a.ndim > trailing + 1 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != trailing + 1:
        raise ValueError(f"expected (N, ...) with {trailing} trailing dimensions, got shape {a.shape}")
    return a


def track_ids(tracks: Any) -> np.ndarray:
    """Every row's track id as ints, 0 for an empty (padding) slot; CoMotion stores them as floats (1, 48, 1)."""
    return np.rint(_numpy(_field(tracks, "id")).reshape(-1)).astype(np.int64)


def live_track_ids(tracks: Any) -> list[int]:
    """Ids of the tracks present in this frame, in row order."""
    return [int(i) for i in track_ids(tracks) if i != 0]


def advance_ages(ages: Mapping[int, int], live_ids: Sequence[int]) -> dict[int, int]:
    """Ages after one more frame: live tracks age by one (new ones start at 1), vanished ones are forgotten.

    Forgetting matters: CoMotion's ids restart at 1 in every video (after `init_tracks`), and a
    stale age would pass a brand-new track off as an old, settled one.
    """
    return {int(i): ages.get(int(i), 0) + 1 for i in live_ids}


def project(K: np.ndarray, points3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixels in CoMotion's convention, in-front mask) of (..., 3) camera points under a 2x3 K."""
    z = points3d[..., 2]
    in_front = z > MIN_DEPTH
    zc = np.maximum(z, MIN_DEPTH)[..., None]
    normalised = np.concatenate([points3d[..., :2] / zc, np.ones_like(zc)], axis=-1)
    return normalised @ np.asarray(K, dtype=np.float64)[:2].T, in_front


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def detection_scores(tracks_2d: np.ndarray, detections: Any | None, match_tol: float = DEFAULT_MATCH_TOL) -> np.ndarray:
    """A confidence per track, borrowed from the frame's detections, since tracks carry none.

    Each track takes sigmoid(conf) of the nearest detection of the same frame whose joints lie,
    on average, within `match_tol` of the track's 2D size; 0.0 when none does (the tracker alone
    carries the person in this frame), and 0.0 everywhere when no detections are given.
    """
    scores = np.zeros(len(tracks_2d), dtype=np.float64)
    if detections is None or len(tracks_2d) == 0:
        return scores
    det_2d = _rows(_field(detections, "pred_2d"), 2)
    if len(det_2d) == 0:
        return scores
    det_conf = _sigmoid(_numpy(_field(detections, "conf")).reshape(len(det_2d), -1)[:, 0])
    # (T, D): mean joint distance between every track and every detection.
    dist = np.linalg.norm(tracks_2d[:, None] - det_2d[None], axis=-1).mean(axis=-1)
    extent = np.maximum((tracks_2d.max(axis=1) - tracks_2d.min(axis=1)).max(axis=-1), 1.0)
    rel = dist / extent[:, None]
    best = rel.argmin(axis=1)
    matched = rel[np.arange(len(best)), best] < match_tol
    scores[matched] = det_conf[best[matched]]
    return scores


def tracks_to_persons(
    tracks: Any,
    size: tuple[int, int],
    K: Any,
    track_age: Mapping[int, int],
    *,
    detections: Any | None = None,
    min_age: int = DEFAULT_MIN_AGE,
    min_visible: int = DEFAULT_MIN_VISIBLE,
    match_tol: float = DEFAULT_MATCH_TOL,
) -> list[PersonLabel]:
    """stream-pose labels for one frame of CoMotion tracks.

    `tracks` is CoMotion's track output (its tensorclass, or a mapping with the same fields:
    ``id`` (1, 48, 1), ``pred_3d`` (1, 48, 27, 3), ``pred_2d`` (1, 48, 27, 2)); `K` the 2x3
    intrinsics given to `CoMotion.forward` for this (height, width) `size`; `track_age` how many
    frames each live id has existed, this one included (see `advance_ages`); `detections` the
    same call's detections, used only for the score (`detection_scores`).

    - Only live tracks (id != 0); the track id is kept as the label's track id.
    - 3D: relative to the pelvis (joint 0), metres, camera axes (x right, y down, z forward).
    - 2D: CoMotion's pixels shifted to pixel centres at integer coordinates.
    - Visibility: CoMotion has none, so a joint counts as visible (1.0) when it is in front of
      the camera and both its projection of the 3D through K and CoMotion's own 2D land inside
      the frame, and only once its track is at least `min_age` frames old. This ignores
      occlusion: a hidden limb inside the frame is still "visible".
    - Persons with fewer than `min_visible` visible joints are dropped.
    """
    ids = track_ids(tracks)
    live = np.flatnonzero(ids != 0)
    if len(live) == 0:
        return []
    pred_3d = _rows(_field(tracks, "pred_3d"), 2)[live]
    pred_2d = _rows(_field(tracks, "pred_2d"), 2)[live]
    if pred_3d.shape[1:] != (SKELETON.num_joints, 3) or pred_2d.shape[1:] != (SKELETON.num_joints, 2):
        raise ValueError(f"expected {SKELETON.num_joints} CoMotion joints, got {pred_3d.shape} / {pred_2d.shape}")
    projected, in_front = project(_numpy(K), pred_3d)
    scores = detection_scores(pred_2d, detections, match_tol)
    persons = []
    for row, tid in enumerate(ids[live]):
        joints2d = pred_2d[row] - 0.5
        visibility = visible_in_frame(projected[row] - 0.5, size) * visible_in_frame(joints2d, size) * in_front[row]
        if track_age.get(int(tid), 0) < min_age:
            visibility = np.zeros_like(visibility)
        if int((visibility >= 0.5).sum()) < min_visible:
            continue
        persons.append(
            PersonLabel(
                joints3d=pred_3d[row] - SKELETON.root_of(pred_3d[row]),
                joints2d=joints2d,
                visibility=visibility,
                box=box_of(joints2d.astype(np.float32), visibility, size),
                track_id=int(tid),
                score=float(scores[row]),
            )
        )
    return persons


# --------------------------------------------------------------------------------------------
# The teacher


class CoMotionTeacher:
    """CoMotion as a stream-pose teacher: several tracked people per frame, 27 joints each.

    Frames stay in memory: each goes to `CoMotion.forward` as a CHW uint8 tensor on the CPU, with
    the 2x3 intrinsics K also on the CPU, as CoMotion's own demo passes them whatever the model's
    device: `forward` normalises the full frame against CPU tensors and moves only the 512x512
    crop (and K) to the model's device, so a frame already on CUDA fails there.

    `focal` replaces the default focal length (2 * max(H, W)); `intrinsics`, a 3x3 or 2x3 camera
    matrix in OpenCV's pixel convention, replaces K entirely and is then used for every video, so
    give it only when all frames come from that camera at that resolution. `model` takes a ready
    CoMotion instance (or anything with its `init_tracks` and `forward`), which skips the install
    checks; the tests use it.
    """

    name = "comotion"
    skeleton = SKELETON
    licence = "Apple ML Research Model License (weights), Apple Sample Code License (code); SMPL: non-commercial"
    terms = (
        "research only: CoMotion's weights licence (non-commercial research, derivatives included) covers a student "
        "trained on its labels"
    )

    def __init__(
        self,
        *,
        focal: float | None = None,
        intrinsics: Any | None = None,
        device: str = "auto",
        min_age: int = DEFAULT_MIN_AGE,
        min_visible: int = DEFAULT_MIN_VISIBLE,
        model: Any | None = None,
    ) -> None:
        if focal is not None and intrinsics is not None:
            raise StreamPoseError("give the comotion teacher either focal or intrinsics, not both")
        self._focal = focal
        self._intrinsics = None if intrinsics is None else comotion_intrinsics(intrinsics)
        self._min_age = min_age
        self._min_visible = min_visible
        if model is None:
            package_dir = check_install()
            plan = plan_device(device, **_device_facts(package_dir))
            comotion_cls = import_comotion()
            if plan.slow:
                warnings.warn(CPU_WARNING, stacklevel=2)
            model = comotion_cls(use_coreml=plan.use_coreml, pretrained=True).to(plan.device).eval()
        else:
            plan = DevicePlan("cpu" if device == "auto" else device, use_mps=False, use_coreml=False, slow=False)
        self._model = model
        self._device = torch.device(plan.device)
        self._use_mps = plan.use_mps
        # CoMotion's init_tracks resets its tracker but not its shot-change detector or frame
        # counter; a detector still holding the last frame of the previous video would compare it
        # with the first frame of the next one (of another size, perhaps). Keep a pristine copy.
        shot_detector = getattr(model, "shot_detector", None)
        self._fresh_shot_detector = copy.deepcopy(shot_detector) if shot_detector is not None else None
        self._size: tuple[int, int] | None = None
        self._K = np.zeros((2, 3))
        self._K_tensor = torch.zeros(2, 3)
        self._ages: dict[int, int] = {}

    def intrinsics_for(self, size: tuple[int, int]) -> np.ndarray:
        """The 2x3 K (CoMotion's pixel convention) used for a video of (height, width) `size`."""
        return self._intrinsics.copy() if self._intrinsics is not None else default_intrinsics(size, self._focal)

    def start_video(self, size: tuple[int, int]) -> None:
        if self._model is None:
            raise RuntimeError("the comotion teacher is closed")
        self._size = (int(size[0]), int(size[1]))
        self._K = self.intrinsics_for(self._size)
        self._K_tensor = torch.tensor(self._K, dtype=torch.float32)  # on the CPU: see the class docstring
        self._ages = {}  # ids restart at 1 in every video
        self._model.init_tracks(self._size)
        if self._fresh_shot_detector is not None:
            self._model.shot_detector = copy.deepcopy(self._fresh_shot_detector)
        if hasattr(self._model, "frame_count"):
            self._model.frame_count = 0

    def label(self, frames: Sequence[np.ndarray]) -> list[list[PersonLabel]]:
        if self._size is None or self._model is None:
            raise RuntimeError("start_video() must be called before label()")
        return [self._label_one(frame) for frame in frames]

    def _label_one(self, frame: np.ndarray) -> list[PersonLabel]:
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the video's {self._size}")
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).contiguous()  # stays on the CPU
        detections, tracks = self._model(image, self._K_tensor, use_mps=self._use_mps)
        self._ages = advance_ages(self._ages, live_track_ids(tracks))
        return tracks_to_persons(
            tracks,
            self._size,
            self._K,
            self._ages,
            detections=detections,
            min_age=self._min_age,
            min_visible=self._min_visible,
        )

    def close(self) -> None:
        if self._model is None:
            return
        self._model = None
        self._fresh_shot_detector = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
