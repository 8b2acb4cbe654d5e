"""Augmentations keep image, 2D and 3D labels consistent; model inputs have the right layout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from streampose.model.preprocess import IMAGE_MEAN, IMAGE_STD
from streampose.poses.skeletons import get_skeleton
from streampose.stream.augment import AugmentConfig, augment_batch, colour_jitter, to_model_inputs

SKELETON = get_skeleton("blazepose33")
J = SKELETON.num_joints
PERM = SKELETON.flip
S = 96

# Marker colours are a neutral grey plus a chroma vector at a distinct hue angle per joint, on a
# neutral grey background. Interpolation blends a marker with grey, and brightness, contrast and
# saturation scale chroma and add grey: none of these changes the hue, so the hue names the
# marker after any augmentation. The values stay within 0-255 under the default colour ranges.
_U = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
_V = np.array([1.0, 1.0, -2.0]) / np.sqrt(6.0)
_HUES = 2 * np.pi * np.arange(J) / J


def _hue(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = pixels.astype(np.float64)
    a, b = p @ _U, p @ _V
    return np.arctan2(b, a), np.hypot(a, b)


def _hue_index(angle: np.ndarray) -> np.ndarray:
    return np.rint(angle / (2 * np.pi / J)).astype(int) % J


def _dot_batch(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Crops with a coloured dot under each 2D joint, and random root-relative 3D joints."""
    colours = np.rint(110.0 + 40.0 * (np.cos(_HUES)[:, None] * _U + np.sin(_HUES)[:, None] * _V))
    cols = int(np.ceil(np.sqrt(J)))
    k = np.arange(J)
    grid = (np.stack([k % cols, k // cols], axis=1) - (cols - 1) / 2) * 12.0 + (S - 1) / 2
    yy, xx = np.mgrid[:S, :S]
    grey = np.rint(60 + 80 * xx / S)[..., None].repeat(3, axis=2)
    images = np.empty((n, S, S, 3), np.uint8)
    joints2d = np.empty((n, J, 2), np.float32)
    for i in range(n):
        pts = grid + rng.uniform(-0.4, 0.4, grid.shape)
        img = grey.copy()
        for (x, y), colour in zip(pts, colours, strict=True):
            img[(xx - x) ** 2 + (yy - y) ** 2 <= 3.0**2] = colour
        images[i] = img
        joints2d[i] = pts
    visibility = rng.uniform(0.6, 1.0, (n, J)).astype(np.float32)
    visibility[:, 5] = 0.0  # an unreliable joint stays unreliable
    return {
        "image": images,
        "joints3d": _random_pose(n, rng),
        "joints2d": joints2d,
        "visibility": visibility,
    }


def _random_pose(n: int, rng: np.random.Generator) -> np.ndarray:
    joints = rng.normal(0.0, 0.25, (n, J, 3)).astype(np.float32)
    return joints - SKELETON.root_of(joints)[:, None, :]


def _was_flipped(original: dict[str, np.ndarray], image: np.ndarray, i: int) -> bool:
    """Mirror or not, judged from the image alone (where each marker went), not from the labels."""
    angle, magnitude = _hue(image.reshape(-1, 3))
    colourful = magnitude > 6
    index = _hue_index(angle[colourful])
    ys, xs = np.divmod(np.flatnonzero(colourful), S)
    found = [j for j in range(J) if (index == j).sum() >= 6]
    assert len(found) >= 6, "too few markers left to judge the geometry"
    centroids = np.array([[xs[index == j].mean(), ys[index == j].mean()] for j in found])
    src = np.hstack([original["joints2d"][i, found], np.ones((len(found), 1))])
    fit, *_ = np.linalg.lstsq(src, centroids, rcond=None)
    return bool(np.linalg.det(fit[:2]) < 0)


def _check_markers(original: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> int:
    """Every visible joint's 2D point is on the marker of the joint it now names; returns checks."""
    checked = 0
    for i in range(len(out["image"])):
        flipped = _was_flipped(original, out["image"][i], i)
        assert out["visibility"][i, PERM[5] if flipped else 5] == 0  # joint 5 started invisible
        for j in np.flatnonzero(out["visibility"][i] > 0):
            expected = PERM[j] if flipped else j  # after a mirror, left_* is the old right_* marker
            x, y = np.rint(out["joints2d"][i, j]).astype(int)
            assert 0 <= x < S and 0 <= y < S, "a visible joint must be inside the crop"
            patch = out["image"][i, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3)
            angle, magnitude = _hue(patch)
            best = int(np.argmax(magnitude))
            assert magnitude[best] > 6, f"sample {i} joint {j}: no marker at {out['joints2d'][i, j]}"
            diff = np.angle(np.exp(1j * (angle[best] - _HUES[expected])))
            assert abs(diff) < np.pi / J, f"sample {i} joint {j} (flipped={flipped}) is on another marker"
            checked += 1
    return checked


def _only(name: str) -> AugmentConfig:
    return dataclasses.replace(AugmentConfig.off(), **{name: True})


CONFIGS = {
    "flip": _only("flip"),
    "scale_shift": _only("scale_shift"),
    "rotate": _only("rotate"),
    "colour": _only("colour"),
    "all": AugmentConfig(),
    "all_strong": AugmentConfig(flip_p=0.5, rotate_p=1.0, colour_p=1.0),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_joints_stay_on_their_markers(name: str) -> None:
    rng = np.random.default_rng(list(CONFIGS).index(name))
    batch = _dot_batch(24, rng)
    before = {k: v.copy() for k, v in batch.items()}
    checked = 0
    for _ in range(2):
        out = augment_batch(batch, PERM, CONFIGS[name], rng)
        checked += _check_markers(batch, out)
    assert checked > 0.6 * 2 * 24 * (J - 1)  # most joints stay in the crop: the test is not vacuous
    for key, value in before.items():
        np.testing.assert_array_equal(batch[key], value)  # the input is left alone


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bone_lengths_are_unchanged(name: str) -> None:
    rng = np.random.default_rng(11)
    batch = _dot_batch(16, rng)
    out = augment_batch(batch, PERM, CONFIGS[name], rng)
    after = SKELETON.bone_lengths(out["joints3d"])
    # A mirror swaps left and right, so the left forearm now has the old right forearm's length.
    plain = SKELETON.bone_lengths(batch["joints3d"])
    mirrored = SKELETON.bone_lengths(batch["joints3d"][:, list(PERM)])
    for i in range(len(after)):
        same = np.allclose(after[i], plain[i], rtol=1e-5, atol=1e-6)
        assert same or np.allclose(after[i], mirrored[i], rtol=1e-5, atol=1e-6), f"sample {i}"
    assert out["joints3d"].dtype == np.float32 and out["joints2d"].dtype == np.float32


@pytest.mark.parametrize("name", ["flip", "rotate", "scale_shift", "all"])
def test_2d_stays_a_projection_of_the_3d(name: str) -> None:
    """With 2D = centre + f * 3D (x, y), every augmentation keeps 2D a scaled, shifted copy of 3D (x, y).

    This pins the rotation direction of the 3D to that of the image (y down in both), and the
    mirror to negating 3D x.
    """
    rng = np.random.default_rng(12)
    n = 16
    joints3d = rng.uniform(-0.35, 0.35, (n, J, 3)).astype(np.float32)
    batch = {
        "image": np.zeros((n, S, S, 3), np.uint8),
        "joints3d": joints3d,
        "joints2d": ((S - 1) / 2 + 100.0 * joints3d[..., :2]).astype(np.float32),
        "visibility": np.ones((n, J), np.float32),
    }
    out = augment_batch(batch, PERM, CONFIGS[name], rng)
    for i in range(n):
        xy = out["joints3d"][i, :, :2].astype(np.float64)
        uv = out["joints2d"][i].astype(np.float64)
        # uv = k * xy + t: solve for k, tx, ty.
        a = np.zeros((2 * J, 3))
        a[:, 0] = xy.reshape(-1)
        a[0::2, 1] = 1.0
        a[1::2, 2] = 1.0
        solution, *_ = np.linalg.lstsq(a, uv.reshape(-1), rcond=None)
        residual = a @ solution - uv.reshape(-1)
        assert solution[0] > 0
        assert np.abs(residual).max() < 1e-3


def test_flip_moves_left_values_to_right_indices() -> None:
    rng = np.random.default_rng(13)
    batch = _dot_batch(4, rng)
    config = dataclasses.replace(_only("flip"), flip_p=1.0)
    out = augment_batch(batch, PERM, config, rng)
    lw, rw, nose = (SKELETON.index(n) for n in ("left_wrist", "right_wrist", "nose"))
    src, dst = batch, out
    np.testing.assert_array_equal(dst["joints3d"][:, rw, 0], -src["joints3d"][:, lw, 0])
    np.testing.assert_array_equal(dst["joints3d"][:, rw, 1:], src["joints3d"][:, lw, 1:])
    np.testing.assert_array_equal(dst["visibility"][:, rw], src["visibility"][:, lw])
    np.testing.assert_allclose(dst["joints2d"][:, rw, 0], S - 1 - src["joints2d"][:, lw, 0], atol=1e-4)
    np.testing.assert_array_equal(dst["joints2d"][:, rw, 1], src["joints2d"][:, lw, 1])
    np.testing.assert_array_equal(dst["joints3d"][:, nose, 0], -src["joints3d"][:, nose, 0])
    np.testing.assert_array_equal(dst["image"], src["image"][:, :, ::-1])  # an exact pixel mirror


def test_flip_twice_is_identity() -> None:
    rng = np.random.default_rng(14)
    batch = _dot_batch(6, rng)
    config = dataclasses.replace(_only("flip"), flip_p=1.0)
    twice = augment_batch(augment_batch(batch, PERM, config, rng), PERM, config, rng)
    np.testing.assert_array_equal(twice["image"], batch["image"])
    np.testing.assert_array_equal(twice["joints3d"], batch["joints3d"])
    np.testing.assert_array_equal(twice["visibility"], batch["visibility"])
    # x -> S-1-x is rounded to float32 each time, so 2D comes back to within float32 rounding.
    np.testing.assert_allclose(twice["joints2d"], batch["joints2d"], rtol=0, atol=1e-4)


def test_off_changes_nothing() -> None:
    rng = np.random.default_rng(15)
    batch = _dot_batch(4, rng)
    out = augment_batch(batch, PERM, AugmentConfig.off(), rng)
    for key in batch:
        np.testing.assert_array_equal(out[key], batch[key])
        assert out[key] is not batch[key]


def test_colour_jitter_changes_pixels_but_not_geometry() -> None:
    rng = np.random.default_rng(16)
    batch = _dot_batch(8, rng)
    config = dataclasses.replace(_only("colour"), colour_p=1.0)
    out = augment_batch(batch, PERM, config, rng)
    for key in ("joints3d", "joints2d", "visibility"):
        np.testing.assert_array_equal(out[key], batch[key])
    changed = [not np.array_equal(a, b) for a, b in zip(out["image"], batch["image"], strict=True)]
    assert sum(changed) >= 6
    assert out["image"].dtype == np.uint8


def test_colour_jitter_matches_its_step_by_step_definition() -> None:
    rng = np.random.default_rng(21)
    images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    factors = rng.uniform(0.6, 1.4, (4, 3))
    mask = np.array([True, False, True, True])
    out = colour_jitter(images, factors, mask)
    luma = np.array([0.299, 0.587, 0.114])
    for i in range(4):
        if not mask[i]:
            np.testing.assert_array_equal(out[i], images[i])
            continue
        b, c, s = factors[i]
        x = images[i].astype(np.float64) * b
        mean_grey = (x @ luma).mean()
        x = (x - mean_grey) * c + mean_grey
        grey = (x @ luma)[..., None]
        x = grey + (x - grey) * s
        expected = np.rint(np.clip(x, 0, 255))
        assert np.abs(out[i].astype(np.float64) - expected).max() <= 1


def test_joints_pushed_out_of_the_crop_lose_visibility() -> None:
    rng = np.random.default_rng(17)
    batch = _dot_batch(16, rng)
    config = dataclasses.replace(_only("scale_shift"), scale_range=(1.3, 1.6), shift_fraction=0.4)
    out = augment_batch(batch, PERM, config, rng)
    uv = out["joints2d"]
    inside = ((uv >= -0.5) & (uv <= S - 0.5)).all(axis=-1)
    assert (~inside).sum() > 20  # the settings do push joints out
    assert (out["visibility"][~inside] == 0).all()
    np.testing.assert_array_equal(out["visibility"][inside], batch["visibility"][inside])


def test_enabling_colour_does_not_change_the_geometry_drawn() -> None:
    """Random draws do not depend on what is enabled, so runs stay comparable across configs."""
    batch = _dot_batch(8, np.random.default_rng(18))
    with_colour = augment_batch(batch, PERM, AugmentConfig(), np.random.default_rng(3))
    without = augment_batch(batch, PERM, dataclasses.replace(AugmentConfig(), colour=False), np.random.default_rng(3))
    for key in ("joints3d", "joints2d", "visibility"):
        np.testing.assert_array_equal(with_colour[key], without[key])


def test_to_model_inputs_layout_and_values() -> None:
    rng = np.random.default_rng(19)
    batch = _dot_batch(5, rng)
    inputs = to_model_inputs(batch)
    image = inputs["image"]
    assert image.dtype == torch.float32 and image.shape == (5, 3, S, S)
    assert image.is_contiguous(memory_format=torch.channels_last)
    assert inputs["joints3d"].shape == (5, J, 3) and inputs["joints2d"].shape == (5, J, 2)
    assert inputs["visibility"].shape == (5, J)
    assert all(inputs[k].dtype == torch.float32 for k in ("joints3d", "joints2d", "visibility"))
    pixel = batch["image"][2, 40, 17].astype(np.float64)
    expected = (pixel / 255.0 - np.array(IMAGE_MEAN)) / np.array(IMAGE_STD)
    np.testing.assert_allclose(image[2, :, 40, 17].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(inputs["joints2d"].numpy(), batch["joints2d"])


def _silhouette_batch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Dot crops (persons) each with a disc as its silhouette, one background crop (nobody, all
    visibility 0) and one person without a silhouette (an all-zero mask)."""
    batch = _dot_batch(6, rng)
    yy, xx = np.mgrid[:S, :S]
    disc = ((xx - S / 2) ** 2 + (yy - S / 2) ** 2 <= (S / 4) ** 2).astype(np.uint8) * 255
    batch["mask"] = np.repeat(disc[None], 6, axis=0)
    batch["image"][4] = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)  # the background crop
    batch["visibility"][4] = 0.0
    batch["mask"][4] = 0
    batch["mask"][5] = 0  # a person the teacher gave no silhouette
    return batch


def test_background_replacement_keeps_the_person_and_changes_the_rest() -> None:
    batch = _silhouette_batch(np.random.default_rng(20))
    config = dataclasses.replace(AugmentConfig.off(), background=True, background_p=1.0)
    out = augment_batch(batch, PERM, config, np.random.default_rng(4))
    person, room = batch["mask"][0] == 255, batch["mask"][0] == 0
    images = out["image"]
    for i in range(4):
        np.testing.assert_array_equal(images[i][person], batch["image"][i][person])  # the person's pixels
        changed = (images[i][room] != batch["image"][i][room]).any(axis=-1).mean()
        assert changed > 0.5, f"crop {i}: only {changed:.0%} of the room was replaced"
        # The room now comes from another crop of the batch: the background crop as it is, or a
        # person crop's tiles (every pixel value drawn from that crop).
        donors = [j for j in range(6) if j != i]
        from_donor = [np.isin(images[i][room].reshape(-1), batch["image"][j].reshape(-1)).mean() for j in donors]
        assert max(from_donor) > 0.99
    np.testing.assert_array_equal(images[4:], batch["image"][4:])  # no silhouette: left as it is
    for key in ("joints3d", "joints2d", "visibility"):
        np.testing.assert_array_equal(out[key], batch[key])  # labels untouched
    assert "mask" not in out  # used up: it does not travel to the model


def test_a_person_put_on_the_background_crop_gets_its_pixels_in_place() -> None:
    """The background crop is used as it is (not tiled): where the mask is 0 the pixels are its own."""
    batch = _silhouette_batch(np.random.default_rng(21))
    config = dataclasses.replace(AugmentConfig.off(), background=True, background_p=1.0)
    hits = 0
    for seed in range(40):
        out = augment_batch(batch, PERM, config, np.random.default_rng(seed))
        room = batch["mask"][0] == 0
        for i in range(4):
            if (out["image"][i][room] == batch["image"][4][room]).all():
                hits += 1
    assert hits > 10  # about one in five draws picks the background crop


def test_enabling_background_does_not_change_the_geometry_drawn() -> None:
    batch = _silhouette_batch(np.random.default_rng(22))
    on = augment_batch(batch, PERM, dataclasses.replace(AugmentConfig(), background_p=1.0), np.random.default_rng(5))
    off = augment_batch(batch, PERM, dataclasses.replace(AugmentConfig(), background=False), np.random.default_rng(5))
    for key in ("joints3d", "joints2d", "visibility"):
        np.testing.assert_array_equal(on[key], off[key])


def test_cutout_greys_a_square_and_keeps_the_labels() -> None:
    batch = _dot_batch(6, np.random.default_rng(23))
    config = dataclasses.replace(AugmentConfig.off(), cutout=True, cutout_p=1.0)
    out = augment_batch(batch, PERM, config, np.random.default_rng(6))
    for i in range(6):
        grey = (out["image"][i] != batch["image"][i]).any(axis=-1)  # what changed
        assert (out["image"][i][grey] == 128).all()
        rows, cols = np.flatnonzero(grey.any(1)), np.flatnonzero(grey.any(0))
        side = len(rows)
        assert 0.15 * S <= side <= 0.5 * S and abs(len(cols) - side) <= 2  # one square, in the asked range
        assert grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].mean() > 0.9  # (a pixel may have been 128)
    for key in ("joints3d", "joints2d", "visibility"):
        np.testing.assert_array_equal(out[key], batch[key])
