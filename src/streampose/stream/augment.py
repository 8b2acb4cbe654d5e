"""Augmentations applied when a batch is drawn, keeping image, 2D and 3D labels consistent.

The buffer stores each crop once; augmenting at draw time means every reuse of a crop is a
different view of it, which is what makes reusing crops (replay) safe.

Geometry (flip, scale, shift, rotation) is composed into ONE 2x3 affine about the crop centre
and applied with one ``cv2.warpAffine``: one interpolation instead of several (less blur) and
the 2D joints are moved by the same matrix, so they stay on the same content. The 3D labels
get the matching rigid part only: a mirror negates x (and swaps left/right joints), an in-plane
rotation of the image is a rotation of the camera about its optical (z) axis, so the same 2x2
rotation is applied to 3D (x, y). Scale and shift only change where the person sits in the crop,
not the root-relative 3D pose. Nothing changes a 3D bone length.

Background replacement comes first: where the teacher segmented the person (the buffer's
`mask`), the person is composited onto another crop of the batch, a background crop as it is or a
person crop cut into shuffled tiles (no second body to read). A network can otherwise read which
way a person faces from the room rather than the body: in one lab seen by fixed cameras, the
background predicts the facing. Labels do not change; samples without a mask are left as they are.

All random numbers for a batch are drawn up front in a fixed order, whatever is enabled, so
turning one augmentation on or off does not change what the others draw for the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from streampose.model.preprocess import normalize_images

# Rec. 601 luma weights, for the grey that contrast and saturation pull towards.
_LUMA = np.array([0.299, 0.587, 0.114])

_LABEL_KEYS = ("joints3d", "joints2d", "visibility")


@dataclass
class AugmentConfig:
    """Which augmentations run, how often (per sample) and how strongly.

    Ranges are multiplicative factors; shift is a fraction of the crop side, drawn per axis
    in [-shift_fraction, shift_fraction].
    """

    flip: bool = True
    flip_p: float = 0.5
    scale_shift: bool = True
    scale_shift_p: float = 1.0
    scale_range: tuple[float, float] = (0.8, 1.2)
    shift_fraction: float = 0.1
    rotate: bool = True
    rotate_p: float = 0.5
    max_degrees: float = 30.0
    colour: bool = True
    colour_p: float = 0.8
    brightness: tuple[float, float] = (0.7, 1.3)
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.7, 1.3)
    background: bool = True
    background_p: float = 0.5
    tiles: int = 4  # a person crop used as background is cut into tiles x tiles, shuffled
    cutout: bool = False
    cutout_p: float = 0.5
    cutout_side: tuple[float, float] = (0.2, 0.5)  # the occluding square's side, fraction of the crop's

    @classmethod
    def off(cls) -> AugmentConfig:
        """Everything disabled: for evaluation, and as a base to enable one thing at a time."""
        return cls(flip=False, scale_shift=False, rotate=False, colour=False, background=False, cutout=False)


def augment_batch(
    batch: dict[str, np.ndarray],
    flip_perm: Sequence[int],
    config: AugmentConfig,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Augment a batch from `RingBuffer.sample`; returns new arrays, the input is not modified.

    `flip_perm` is the skeleton's left/right permutation (``Skeleton.flip``): after a mirror
    the joint called left_wrist is the one that was the right wrist. Joints pushed out of the
    crop get visibility 0. `mask` (the person's silhouette) is used up by background replacement;
    other keys are passed through (copied).
    """
    images = batch["image"]
    n, size = images.shape[0], images.shape[1]
    if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be (B, S, S, 3) uint8, got {images.shape} {images.dtype}")
    perm = np.asarray(flip_perm, dtype=np.int64)
    joints3d = np.array(batch["joints3d"], dtype=np.float32, copy=True)
    joints2d = np.array(batch["joints2d"], dtype=np.float32, copy=True)
    visibility = np.array(batch["visibility"], dtype=np.float32, copy=True)
    if perm.shape != (joints3d.shape[1],):
        raise ValueError(f"flip_perm has {perm.shape[0]} entries for {joints3d.shape[1]} joints")

    # Fixed draw order, independent of which augmentations are enabled (see module docstring).
    do_flip = rng.random(n) < config.flip_p
    do_scale_shift = rng.random(n) < config.scale_shift_p
    scale = rng.uniform(*config.scale_range, size=n)
    shift = rng.uniform(-1.0, 1.0, size=(n, 2)) * config.shift_fraction * size
    do_rotate = rng.random(n) < config.rotate_p
    angle = np.deg2rad(rng.uniform(-config.max_degrees, config.max_degrees, size=n))
    do_colour = rng.random(n) < config.colour_p
    factors = np.stack(
        [rng.uniform(*r, size=n) for r in (config.brightness, config.contrast, config.saturation)], axis=1
    )
    do_background = rng.random(n) < config.background_p
    donors = (np.arange(n) + 1 + rng.integers(0, max(n - 1, 1), size=n)) % n  # another sample of the batch
    tile_orders = rng.permuted(np.tile(np.arange(config.tiles**2), (n, 1)), axis=1)
    do_cutout = rng.random(n) < config.cutout_p
    cut_sides = rng.uniform(*config.cutout_side, size=n) * size
    cut_corners = rng.uniform(0, 1, size=(n, 2)) * (size - cut_sides[:, None])
    do_flip &= config.flip
    do_scale_shift &= config.scale_shift
    do_rotate &= config.rotate
    do_colour &= config.colour
    do_background &= config.background and n > 1
    do_cutout &= config.cutout

    if "mask" in batch:
        images = composite(images, batch["mask"], batch["visibility"], do_background, donors, tile_orders)
    # Colour first, so the black border the warp adds below stays black, as padding is at inference.
    images = colour_jitter(images, factors, do_colour)
    for i in np.flatnonzero(do_cutout):  # an occluder in mid grey; the joints behind it keep their labels
        (x0, y0), side = cut_corners[i].astype(int), int(cut_sides[i])
        images[i, y0 : y0 + side, x0 : x0 + side] = 128

    out_images = np.empty_like(images)
    centre = np.full(2, (size - 1) / 2.0)
    for i in range(n):
        mirror = np.diag([-1.0, 1.0]) if do_flip[i] else np.eye(2)
        c, s = (np.cos(angle[i]), np.sin(angle[i])) if do_rotate[i] else (1.0, 0.0)
        rot = np.array([[c, -s], [s, c]])
        k = scale[i] if do_scale_shift[i] else 1.0
        t = shift[i] if do_scale_shift[i] else np.zeros(2)
        linear = k * rot @ mirror
        # About the crop centre: a mirror maps pixel centre x to size-1-x exactly, as np.fliplr.
        matrix = np.hstack([linear, (centre + t - linear @ centre)[:, None]])
        if not (do_flip[i] or do_rotate[i] or do_scale_shift[i]):
            out_images[i] = images[i]
        else:
            out_images[i] = cv2.warpAffine(
                images[i],
                matrix,
                (size, size),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(0, 0, 0),
            )
        # In float64, cast once: a mirror-only matrix then negates 3D x exactly.
        joints2d[i] = joints2d[i].astype(np.float64) @ linear.T + matrix[:, 2]
        joints3d[i, :, :2] = joints3d[i, :, :2].astype(np.float64) @ (rot @ mirror).T
        if do_flip[i]:
            joints3d[i] = joints3d[i, perm]
            joints2d[i] = joints2d[i, perm]
            visibility[i] = visibility[i, perm]

    outside = ((joints2d < -0.5) | (joints2d > size - 0.5)).any(axis=-1)
    visibility[outside] = 0.0

    out = {k: np.array(v, copy=True) for k, v in batch.items() if k not in ("image", "mask", *_LABEL_KEYS)}
    out.update(image=out_images, joints3d=joints3d, joints2d=joints2d, visibility=visibility)
    return out


def composite(
    images: np.ndarray,
    masks: np.ndarray,
    visibility: np.ndarray,
    where: np.ndarray,
    donors: np.ndarray,
    tile_orders: np.ndarray,
) -> np.ndarray:
    """Images `where` set, each person (`masks`, uint8 probability x 255, used as alpha) put in
    front of image `donors[i]`: as it is when that crop shows nobody (all visibility 0), else cut
    into `tile_orders`' shuffled tiles. A sample with no silhouette (an all-zero mask) is kept.
    Returns a new array."""
    out = np.array(images, copy=True)
    size, tiles = images.shape[1], round(np.sqrt(tile_orders.shape[1]))
    edges = np.linspace(0, size, tiles + 1).astype(int)
    for i in np.flatnonzero(where):
        if masks[i].max() < 128:
            continue
        donor = images[donors[i]]
        if visibility[donors[i]].max() > 0:
            cut = [donor[edges[r] : edges[r + 1], edges[c] : edges[c + 1]] for r in range(tiles) for c in range(tiles)]
            shuffled = [cv2.resize(cut[k], (cut[j].shape[1], cut[j].shape[0])) for j, k in enumerate(tile_orders[i])]
            donor = np.vstack([np.hstack(shuffled[r * tiles : (r + 1) * tiles]) for r in range(tiles)])
        alpha = masks[i][..., None].astype(np.float32) * np.float32(1 / 255)
        out[i] = np.rint(alpha * images[i] + (1 - alpha) * donor).astype(np.uint8)
    return out


def colour_jitter(images: np.ndarray, factors: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Brightness, contrast and saturation on uint8 (B, H, W, 3) images where `mask` is set.

    `factors` is (B, 3): brightness scales the image, contrast scales it about the image's
    mean grey, saturation about each pixel's grey. All three are linear in the colour, so they
    fold into one 3x4 colour matrix per image, applied by ``cv2.transform`` in a single pass
    that rounds and saturates to uint8 once, at the end. Returns a new array.
    """
    out = np.array(images, copy=True)
    ones = np.ones(3)
    for i in np.flatnonzero(mask):
        b, c, s = (float(f) for f in factors[i])
        # x -> b x;  x -> c x + (1 - c) m with m the mean grey;  x -> s x + (1 - s) grey(x).
        # Saturation leaves grey (and so the contrast offset, a grey) unchanged, as sum(_LUMA) = 1.
        mean_grey = b * float(_LUMA @ np.asarray(cv2.mean(images[i])[:3]))
        matrix = np.empty((3, 4))
        matrix[:, :3] = c * b * (s * np.eye(3) + (1.0 - s) * np.outer(ones, _LUMA))
        matrix[:, 3] = (1.0 - c) * mean_grey
        out[i] = cv2.transform(images[i], matrix)
    return out


def to_model_inputs(batch: dict[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A (possibly augmented) batch as tensors on `device`: normalised images, float32 labels.

    Images travel as uint8 and are normalised on the device (see `preprocess.normalize_images`).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in batch.items():
        if key == "image":
            images = torch.from_numpy(np.ascontiguousarray(value)).to(device)
            out[key] = normalize_images(images)
        elif key in _LABEL_KEYS:
            out[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(device)
        else:
            out[key] = torch.as_tensor(value).to(device)
    return out
