"""Person crops: cut a square around each labelled person and carry the labels along.

The student sees a fixed-size square per person, so every frame is reduced to a few small
crops as soon as it is decoded; the frame itself is then dropped (no raw video is kept).

The crop is a single affine map (scale + translate) from frame pixels to crop pixels, done by
one ``cv2.warpAffine``: cropping, padding where the square leaves the frame, and resizing all
happen in that one call, and the very same 2x3 matrix moves the 2D joints, so the labels cannot
drift from the image content. Both sides use OpenCV's convention (pixel centres at integer
coordinates), so the matrix maps the frame point under a joint to the crop point under it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from streampose.config import Check
from streampose.poses.labels import FrameLabels, PersonLabel, Silhouette

# A person whose visible joints span fewer frame pixels than this (one joint, or a person far
# away) still gets a square this big, so the crop shows some context instead of a magnified blob.
MIN_SIDE_PX = 32.0
#: Margin on each side of the visible joints' extent, as a fraction of it. Training crops and the
#: squares `streampose.predict` tracks with share it, so the student sees at inference the framing
#: it was trained on.
MARGIN = 0.25
#: The crop side the student is trained on unless told otherwise (train, producers, crops alike).
CROP_SIZE = 128
#: Crops must be a multiple of the student's total stride so its stride-32 map upsamples exactly
#: onto the stride-16 one (no size-dependent interpolation in the exported graph).
SIZE_MULTIPLE = 32
#: A crop is an image the student sees whole: beyond this a typo or a crafted file, not a student.
MAX_CROP_SIZE = 1024
CROP_SIZES = Check(int, low=SIZE_MULTIPLE, high=MAX_CROP_SIZE, multiple=SIZE_MULTIPLE)


@dataclass
class Sample:
    """One training example: a person crop and its labels in crop coordinates."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    joints3d: np.ndarray  # (J, 3) float32, metres, root-relative (as the teacher gave them)
    joints2d: np.ndarray  # (J, 2) float32, crop pixels, pixel centres at integer coordinates
    visibility: np.ndarray  # (J,) float32 in [0, 1]
    source: str  # id of the video the frame came from
    frame: int  # frame index in that video
    track_id: int
    #: (S, S) uint8, probability x 255 that a pixel is the person (the teacher's segmentation);
    #: None when the teacher gives none, and for background crops
    mask: np.ndarray | None = None


def crop_matrix(center: tuple[float, float], side: float, size: int, angle: float = 0.0) -> np.ndarray:
    """The 2x3 affine taking frame pixels to crop pixels for a square of `side` around `center`.

    The square's edges (``center +- side/2``, in pixel-centre coordinates) land on the crop's
    outer pixel edges (-0.5 and size-0.5), so `center` lands on the crop centre ``(size-1)/2``
    and nothing is shifted by half a pixel when the scale is not 1. A square turned by `angle`
    (radians, clockwise on screen) is cut upright: the frame direction ``(sin a, -cos a)`` becomes
    the crop's up, which is how a pose model that expects an upright body sees a tilted one.
    """
    s = size / side
    cos, sin = s * np.cos(angle), s * np.sin(angle)
    cx, cy = center
    half = (size - 1) / 2.0
    return np.array([[cos, sin, half - cos * cx - sin * cy], [-sin, cos, half + sin * cx - cos * cy]], dtype=np.float64)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points with a 2x3 affine matrix, as ``cv2.warpAffine`` maps the image."""
    pts = np.asarray(points, dtype=np.float64)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 affine undoing `matrix`: crop pixels back to frame pixels (for predicted joints)."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def square_around(points: np.ndarray, margin: float = MARGIN) -> tuple[tuple[float, float], float]:
    """(centre, side) of the crop square around (N, 2) pixel points, `margin` added on each side.

    One definition for the teacher's joints (training crops) and the student's own joints
    (tracking at inference), so both frame a person the same way.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    side = max(float((hi - lo).max()) * (1.0 + 2.0 * margin), MIN_SIDE_PX)
    return (float(lo[0] + hi[0]) / 2.0, float(lo[1] + hi[1]) / 2.0), side


def cut_square(
    frame: np.ndarray, center: tuple[float, float], side: float, size: int, angle: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The (size, size, 3) crop of the square (turned by `angle`, see `crop_matrix`) and its 2x3
    frame-to-crop matrix.

    One ``cv2.warpAffine``: crop, black padding where the square leaves the frame, and resize.
    """
    matrix = crop_matrix(center, side, size, angle)
    image = cv2.warpAffine(
        np.ascontiguousarray(frame),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return image, matrix


def crop_person(
    frame: np.ndarray,
    person: PersonLabel,
    *,
    source: str,
    frame_index: int,
    size: int = CROP_SIZE,
    margin: float = MARGIN,
    min_visible: int = 8,
    vis_threshold: float = 0.5,
) -> Sample | None:
    """Crop one person out of `frame` (H, W, 3) uint8 RGB; None if too little of them is visible.

    The square is sized from the visible joints only: joints the teacher is unsure about are
    often far off (guessed limbs behind the frame edge) and would blow up the box. The margin
    on each side keeps hands, feet and head, whose joints lie inside the body's outline, in view.
    Where the square leaves the frame it is padded black rather than moved back inside, so the
    person is always centred at the same scale, which is what the student will see at inference.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    visible = person.visibility >= vis_threshold
    if int(visible.sum()) < min_visible:
        return None
    center, side = square_around(person.joints2d[visible], margin)
    image, matrix = cut_square(frame, center, side, size)
    return Sample(
        image=image,
        joints3d=np.array(person.joints3d, dtype=np.float32, copy=True),
        joints2d=apply_affine(matrix, person.joints2d),
        visibility=np.array(person.visibility, dtype=np.float32, copy=True),
        source=source,
        frame=int(frame_index),
        track_id=int(person.track_id),
        mask=None if person.silhouette is None else silhouette_in(person.silhouette, matrix, size),
    )


def silhouette_in(silhouette: Silhouette, matrix: np.ndarray, size: int) -> np.ndarray:
    """The teacher's person mask seen through a crop's `matrix` (frame -> crop pixels): (size, size)
    uint8, zero where the teacher's own crop did not reach."""
    back = invert_affine(silhouette.matrix)  # mask pixels -> frame pixels
    composed = np.hstack([matrix[:, :2] @ back[:, :2], (matrix[:, :2] @ back[:, 2] + matrix[:, 2])[:, None]])
    return cv2.warpAffine(silhouette.mask, composed, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def background_crops(
    frame: np.ndarray,
    persons: list[PersonLabel],
    count: int,
    rng: np.random.Generator,
    *,
    num_joints: int,
    source: str,
    frame_index: int,
    size: int = CROP_SIZE,
    clearance: float = 0.1,
    tries: int = 20,
    avoid: np.ndarray | None = None,
) -> list[Sample]:
    """Up to `count` negative samples: random squares of `frame` that touch no labelled person.

    They teach the student what "nobody here" looks like (all visibility 0), so its confidence
    can end a track that drifted off its person. A square is about as big as a person crop of
    this frame (0.35-1.5x a labelled person's square, or 10-45 % of the short side when there is
    none), at least half inside the frame (padded black beyond it, as a drifting square is), and
    keeps clear of every person's box grown by `clearance` of its size; a frame too crowded for
    that gives fewer. Persons the teacher missed can still
    fall in one: the labels are only as complete as the teacher; `avoid` adds boxes (a person
    detector's, say) to keep clear of as well.
    """
    h, w = frame.shape[:2]
    boxes = [p.box for p in persons if np.all(np.isfinite(p.box))]
    sides = [square_around(np.reshape(b, (2, 2)), MARGIN)[1] for b in boxes]
    boxes += list(np.reshape(avoid, (-1, 4))) if avoid is not None else []
    out: list[Sample] = []
    for _ in range(count * tries):
        if len(out) == count:
            break
        base = float(rng.choice(sides)) if sides else min(h, w) * 0.3
        side = min(base * float(np.exp(rng.uniform(np.log(0.35), np.log(1.5)))), float(min(h, w)))
        x0, y0 = rng.uniform(-side / 2, w - side / 2), rng.uniform(-side / 2, h - side / 2)
        if any(_overlaps((x0, y0, x0 + side, y0 + side), b, clearance) for b in boxes):
            continue
        image, _ = cut_square(frame, (x0 + side / 2 - 0.5, y0 + side / 2 - 0.5), side, size)
        out.append(_negative(image, num_joints, source, frame_index))
    return out


def _overlaps(square: tuple[float, float, float, float], box: np.ndarray, clearance: float) -> bool:
    bw, bh = box[2] - box[0], box[3] - box[1]
    x0, y0, x1, y1 = box[0] - clearance * bw, box[1] - clearance * bh, box[2] + clearance * bw, box[3] + clearance * bh
    return square[0] < x1 and x0 < square[2] and square[1] < y1 and y0 < square[3]


def _negative(image: np.ndarray, j: int, source: str, frame_index: int) -> Sample:
    return Sample(
        image=image,
        joints3d=np.zeros((j, 3), np.float32),
        joints2d=np.zeros((j, 2), np.float32),
        visibility=np.zeros(j, np.float32),
        source=source,
        frame=int(frame_index),
        track_id=-1,
    )


def person_crops(
    items: Iterable[tuple[np.ndarray, FrameLabels]],
    *,
    negatives: float = 0.0,
    rng: np.random.Generator | None = None,
    **crop_kwargs: Any,
) -> Iterator[Sample]:
    """Pipeline stage: (frame, labels) pairs in, one Sample per kept person out, and background
    crops (`background_crops`) making up a `negatives` fraction of what comes out.

    A plain generator, so it runs lazily in whichever thread pulls from it and holds at most
    one frame at a time. `crop_kwargs` go to `crop_person` (size, margin, min_visible, ...).
    """
    if not 0.0 <= negatives < 1.0:
        raise ValueError(f"negatives must be in [0, 1), got {negatives}")
    rng = rng if rng is not None else np.random.default_rng()
    owed = 0.0  # negatives due: each kept person adds negatives / (1 - negatives) of one
    joints = 0  # the skeleton's size, from the last person seen (a frame of nobody has none)
    for frame, labels in items:
        h, w = frame.shape[:2]
        if tuple(labels.size) != (h, w):
            raise ValueError(
                f"{labels.source} frame {labels.index}: labels are for a {labels.size[0]}x{labels.size[1]} "
                f"frame but the frame is {h}x{w}"
            )
        kept = 0
        for person in labels.persons:
            sample = crop_person(frame, person, source=labels.source, frame_index=labels.index, **crop_kwargs)
            if sample is not None:
                kept += 1
                yield sample
        # Capped, so a run of crowded frames does not flood the next open one with negatives.
        owed = min(owed + kept * negatives / (1.0 - negatives), 4.0)
        joints = len(labels.persons[0].visibility) if labels.persons else joints
        if owed >= 1.0 and joints:
            found = background_crops(
                frame, labels.persons, int(owed), rng, num_joints=joints,
                source=labels.source, frame_index=labels.index, size=crop_kwargs.get("size", CROP_SIZE),
            )  # fmt: skip
            owed -= len(found)
            yield from found
