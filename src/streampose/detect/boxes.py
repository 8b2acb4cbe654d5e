"""Box arithmetic shared by the detector, the tracker and the top-down teacher.

Boxes are float arrays (x0, y0, x1, y1) in pixels of the frame.
"""

from __future__ import annotations

import numpy as np

from streampose.stream.crops import cut_square, invert_affine


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of two sets of boxes."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while len(order):
        best, order = order[0], order[1:]
        keep.append(int(best))
        if len(order):
            order = order[iou_matrix(boxes[best], boxes[order])[0] <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def square_around(box: np.ndarray, scale: float) -> np.ndarray:
    """A square box centred on `box`, its side `scale` times the box's longer side."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * scale / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)


def framing(box: np.ndarray, scale: float) -> tuple[tuple[float, float], float]:
    """(centre, side) of `square_around(box, scale)`, as `crops.cut_square` takes a square."""
    side = float(max(box[2] - box[0], box[3] - box[1]) * scale)
    return (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2), side


def crop_resized(image: np.ndarray, square: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The square region of `image` resized to size x size, padded black outside the frame.

    Returns (crop, A) where A is the 2x3 matrix taking crop pixels back to frame pixels. The
    square's corner `square[:2]` lands on crop pixel (0, 0): `crops.cut_square` with the centre
    that puts it there.
    """
    side = max(float(square[2] - square[0]), 1e-6)
    offset = (size - 1) / 2 * side / size
    crop, forward = cut_square(image, (float(square[0]) + offset, float(square[1]) + offset), side, size)
    return crop, invert_affine(forward)


def grow(box: np.ndarray, fraction: float) -> np.ndarray:
    """The box with `fraction` of its width and height added on every side."""
    pad = np.array([-1, -1, 1, 1], np.float32) * np.tile(box[2:] - box[:2], 2) * fraction
    return (box + pad).astype(np.float32)


def _in_crop(back: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A frame-pixel box in the pixels of a crop whose matrix back to the frame is `back`."""
    return np.round((box - np.tile(back[:, 2], 2)) / back[0, 0]).astype(int)


def blank_outside(crop: np.ndarray, back: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Black out the crop (from `crop_resized`, its matrix `back`) outside `box` (frame pixels), in place."""
    x0, y0, x1, y1 = _in_crop(back, box)
    h, w = crop.shape[:2]
    crop[: max(0, y0)] = 0
    crop[min(h, y1 + 1) :] = 0
    crop[:, : max(0, x0)] = 0
    crop[:, min(w, x1 + 1) :] = 0
    return crop
