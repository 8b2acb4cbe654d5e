"""Track ids that follow people from frame to frame within one video.

Assignment on box IoU plus 2D joint distance (Hungarian, scipy): IoU alone confuses two people
who cross, joints alone fail when a person turns. A track not matched for `max_age` frames is
dropped; a person no track matches starts a new id. Ids are never reused within a video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from streampose.detect.boxes import iou_matrix


@dataclass
class Track:
    id: int
    box: np.ndarray  # (4,) last matched box
    joints2d: np.ndarray  # (J, 2) last matched joints
    visibility: np.ndarray
    missed: int = 0  # frames since last matched


def joint_distance(a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """Mean distance of the joints visible in both of two (joints2d, visibility, box) poses, in units
    of the taller box's height; 1.0 when they share no visible joint."""
    (ja, va, box_a), (jb, vb, box_b) = a, b
    both = (va >= 0.5) & (vb >= 0.5)
    if not both.any():
        return 1.0
    height = max(box_a[3] - box_a[1], box_b[3] - box_b[1], 1.0)
    return float(np.linalg.norm(ja[both] - jb[both], axis=1).mean() / height)


class Tracker:
    """Assigns a track id to each person of each frame; `reset()` before every video."""

    def __init__(self, *, min_iou: float = 0.2, max_joint_distance: float = 0.5, max_age: int = 15) -> None:
        self.min_iou, self.max_joint_distance, self.max_age = min_iou, max_joint_distance, max_age
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []
        self._next_id = 0

    def update(self, boxes: np.ndarray, joints2d: list[np.ndarray], visibility: list[np.ndarray]) -> list[int]:
        """Ids for this frame's persons (in the order given); unmatched tracks age by one frame."""
        n = len(boxes)
        ids = [-1] * n
        if self.tracks and n:
            iou = iou_matrix(np.stack([t.box for t in self.tracks]), boxes)
            dist = np.array(
                [
                    [
                        joint_distance((t.joints2d, t.visibility, t.box), (joints2d[j], visibility[j], boxes[j]))
                        for j in range(n)
                    ]
                    for t in self.tracks
                ]
            )
            cost = (1 - iou) + np.minimum(dist, 1.0)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= self.min_iou or dist[r, c] <= self.max_joint_distance:
                    ids[c] = self._match(self.tracks[r], boxes[c], joints2d[c], visibility[c])
        matched = set(ids)
        for t in self.tracks:
            if t.id not in matched:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_age]
        for j in range(n):
            if ids[j] < 0:
                self.tracks.append(Track(self._next_id, boxes[j], joints2d[j], visibility[j]))
                ids[j] = self._next_id
                self._next_id += 1
        return ids

    @staticmethod
    def _match(track: Track, box: np.ndarray, joints2d: np.ndarray, visibility: np.ndarray) -> int:
        track.box, track.joints2d, track.visibility, track.missed = box, joints2d, visibility, 0
        return track.id
