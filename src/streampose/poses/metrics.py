"""Pose metrics between a prediction and the teacher's labels, on visible joints only; and the
two measures of following a person through a video that `predict`'s benchmark and tests share.

Both poses are aligned at the root first (the student's root need not be exactly zero).
PA-MPJPE additionally removes rotation, translation and scale by a Procrustes fit, so it
measures the pose's shape regardless of the camera's orientation.
"""

from __future__ import annotations

import numpy as np

from streampose.poses.skeletons import Skeleton


def root_align(joints3d: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N, J, 3) poses shifted so the skeleton's root is at the origin."""
    return joints3d - skeleton.root_of(joints3d)[:, None, :]


def per_joint_errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, J) Euclidean errors."""
    return np.linalg.norm(pred - target, axis=-1)


def procrustes_align(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`pred` (N, J, 3) moved onto `target` by the similarity transform fitted on `mask`ed joints."""
    out = np.empty_like(pred)
    for i in range(len(pred)):
        m = mask[i]
        if m.sum() < 3:
            out[i] = pred[i]
            continue
        p, t = pred[i][m], target[i][m]
        mp, mt = p.mean(0), t.mean(0)
        p0, t0 = p - mp, t - mt
        u, s, vt = np.linalg.svd(p0.T @ t0)
        d = np.sign(np.linalg.det(u @ vt))
        s[-1] *= d
        u[:, -1] *= d
        rot = u @ vt
        scale = s.sum() / max((p0**2).sum(), 1e-12)
        out[i] = scale * (pred[i] - mp) @ rot + mt
    return out


def pose_metrics(
    pred: np.ndarray, target: np.ndarray, visibility: np.ndarray, skeleton: Skeleton, threshold: float = 0.5
) -> dict[str, float]:
    """MPJPE, PA-MPJPE (mm) and PCK@150 mm over visible joints of N persons."""
    mask = visibility >= threshold
    if not mask.any():
        return {"mpjpe_mm": float("nan"), "pa_mpjpe_mm": float("nan"), "pck_150mm": float("nan")}
    pred, target = root_align(pred, skeleton), root_align(target, skeleton)
    err = per_joint_errors(pred, target)[mask]
    pa_err = per_joint_errors(procrustes_align(pred, target, mask), target)[mask]
    return {
        "mpjpe_mm": float(err.mean() * 1000),
        "pa_mpjpe_mm": float(pa_err.mean() * 1000),
        "pck_150mm": float((err < 0.15).mean()),
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
