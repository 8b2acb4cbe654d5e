"""Pose metrics between a prediction and the teacher's labels, on visible joints only; and the
two measures of following a person through a video that `predict`'s benchmark and tests share.

Both poses are aligned at the root first (the student's root need not be exactly zero). Three
errors are told apart: MPJPE is all of it; rotation-aligned MPJPE removes only the rotation a fit
about the root finds (what is left is articulation and scale); PA-MPJPE also removes translation
and scale (the body's shape alone). The torso's yaw (which way the body faces about the vertical
axis, from shoulders and hips) says whether the rotation is a facing error: a student that reads
the room instead of the body gets the shape right and the facing wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streampose.poses.skeletons import Skeleton

#: What `pose_metrics` returns, in this order.
METRIC_KEYS = ("mpjpe_mm", "rot_mpjpe_mm", "pa_mpjpe_mm", "pck_150mm", "yaw_error_deg", "turned_share")


def root_align(joints3d: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N, J, 3) poses shifted so the skeleton's root is at the origin."""
    return joints3d - skeleton.root_of(joints3d)[:, None, :]


def per_joint_errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, J) Euclidean errors."""
    return np.linalg.norm(pred - target, axis=-1)


def procrustes_align(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, similarity: bool = True) -> np.ndarray:
    """`pred` (N, J, 3) moved onto `target` by the similarity transform fitted on `mask`ed joints,
    or (`similarity=False`) by the rotation about the origin (the root) alone."""
    out = np.empty_like(pred)
    for i in range(len(pred)):
        m = mask[i]
        if m.sum() < 3 or not (np.isfinite(pred[i][m]).all() and np.isfinite(target[i][m]).all()):
            out[i] = pred[i]
            continue
        p, t = pred[i][m], target[i][m]
        mp, mt = (p.mean(0), t.mean(0)) if similarity else (np.zeros(3), np.zeros(3))
        p0, t0 = p - mp, t - mt
        u, s, vt = np.linalg.svd(p0.T @ t0)
        d = np.sign(np.linalg.det(u @ vt))
        s[-1] *= d
        u[:, -1] *= d
        rot = u @ vt
        scale = s.sum() / max((p0**2).sum(), 1e-12) if similarity else 1.0
        out[i] = scale * (pred[i] - mp) @ rot + mt
    return out


def torso_yaw(joints3d: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) radians: which way each torso faces about the camera's vertical (y) axis, from the
    left-minus-right vector of shoulders and hips projected on the ground plane (x, z). 0 is the
    body facing the camera square on, +-pi its back to the camera."""
    left = [skeleton.index(n) for n in ("left_shoulder", "left_hip")]
    right = [skeleton.index(n) for n in ("right_shoulder", "right_hip")]
    across = joints3d[:, left].sum(1) - joints3d[:, right].sum(1)
    # Facing the camera (z forward, x right), the body's left side is on the image's right: +x.
    return np.arctan2(-across[:, 2], across[:, 0])


def facing_stratum(skeleton: Skeleton, bins: int = 8) -> Callable[[np.ndarray], int]:
    """A (J, 3) pose's facing bin (`bins` equal sectors of the torso's yaw), to balance draws over
    which way people face (`RingBuffer(stratum=...)`)."""

    def stratum(joints3d: np.ndarray) -> int:
        yaw = float(torso_yaw(np.asarray(joints3d, np.float64)[None], skeleton)[0])
        return int((yaw + np.pi) / (2 * np.pi) * bins) % bins

    return stratum


def yaw_errors(pred: np.ndarray, target: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) degrees in [0, 180]: how far each predicted torso is turned from the target's."""
    diff = torso_yaw(pred, skeleton) - torso_yaw(target, skeleton)
    return np.degrees(np.abs(np.angle(np.exp(1j * diff))))


def _facing_joints_visible(mask: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    names = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
    return mask[:, [skeleton.index(n) for n in names]].all(axis=1)


def pose_metrics(
    pred: np.ndarray, target: np.ndarray, visibility: np.ndarray, skeleton: Skeleton, threshold: float = 0.5
) -> dict[str, float]:
    """MPJPE, rotation-aligned MPJPE, PA-MPJPE (mm) and PCK@150 mm over visible joints of N
    persons; the torso's yaw error (median degrees) and the share of persons turned more than 90
    degrees, over persons whose shoulders and hips are all visible."""
    mask = visibility >= threshold
    nan = float("nan")
    if not mask.any():
        return dict.fromkeys(METRIC_KEYS, nan)
    pred, target = root_align(pred, skeleton), root_align(target, skeleton)
    err = per_joint_errors(pred, target)[mask]
    rot_err = per_joint_errors(procrustes_align(pred, target, mask, similarity=False), target)[mask]
    pa_err = per_joint_errors(procrustes_align(pred, target, mask), target)[mask]
    facing = _facing_joints_visible(mask, skeleton)
    yaw = yaw_errors(pred[facing], target[facing], skeleton)
    return {
        "mpjpe_mm": float(err.mean() * 1000),
        "rot_mpjpe_mm": float(rot_err.mean() * 1000),
        "pa_mpjpe_mm": float(pa_err.mean() * 1000),
        "pck_150mm": float((err < 0.15).mean()),
        "yaw_error_deg": float(np.median(yaw)) if len(yaw) else nan,
        "turned_share": float((yaw > 90).mean()) if len(yaw) else nan,
    }


def farthest_travelled(tracks: dict[int, dict[int, np.ndarray]]) -> dict[int, np.ndarray]:
    """Of tracks given as {track id: {frame index: box}}, the one whose box centre travels
    farthest (a person crossing the frame rather than standing): its {frame index: box}."""

    def travel(boxes: dict[int, np.ndarray]) -> float:
        centres = np.array([(np.asarray(b[:2]) + np.asarray(b[2:])) / 2 for _, b in sorted(boxes.items())])
        return float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()) if len(centres) > 1 else 0.0

    return max(tracks.values(), key=travel)


def square_on(square, box, max_ratio: float = 2.0) -> bool:
    """Whether a tracker's square (x0, y0, x1, y1) is on the person in `box`: the box's centre
    inside it, and its side at most `max_ratio` times the box's height (not a square grown to a group)."""
    square, box = np.asarray(square, np.float64), np.asarray(box, np.float64)
    centre = (box[:2] + box[2:]) / 2
    inside = bool((square[:2] <= centre).all() and (centre <= square[2:]).all())
    return inside and square[2] - square[0] <= max_ratio * (box[3] - box[1])
