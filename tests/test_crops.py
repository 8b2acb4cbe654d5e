"""Person crops: labels stay on the image content, edges are padded, pixel values are real."""

from __future__ import annotations

import numpy as np
import pytest

from streampose.poses.labels import FrameLabels, PersonLabel
from streampose.poses.skeletons import get_skeleton
from streampose.stream.crops import Sample, apply_affine, background_crops, crop_person, cut_square, person_crops

SKELETON = get_skeleton("blazepose33")
J = SKELETON.num_joints

# Marker colours are a neutral grey plus a chroma vector at a distinct hue angle per joint. The
# background is neutral grey too, so blending a marker with the background (interpolation) only
# shrinks its chroma and never changes its hue: the hue names the marker even on its rim.
_U = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
_V = np.array([1.0, 1.0, -2.0]) / np.sqrt(6.0)


def _palette(n: int) -> np.ndarray:
    angles = 2 * np.pi * np.arange(n) / n
    return 110.0 + 40.0 * (np.cos(angles)[:, None] * _U + np.sin(angles)[:, None] * _V)


def _hue(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = pixels.astype(np.float64)
    a, b = p @ _U, p @ _V
    return np.arctan2(b, a), np.hypot(a, b)


def _grey_frame(h: int, w: int) -> np.ndarray:
    ramp = np.linspace(50, 170, w)[None, :] + np.linspace(0, 40, h)[:, None]
    return np.repeat(np.rint(ramp)[..., None], 3, axis=2).astype(np.uint8)


def _draw_dots(image: np.ndarray, points: np.ndarray, radius: float) -> None:
    colours = np.rint(_palette(len(points))).astype(np.uint8)
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    for (x, y), colour in zip(points, colours, strict=True):
        image[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = colour


def _assert_on_own_dot(image: np.ndarray, points: np.ndarray, visible: np.ndarray) -> None:
    """The most colourful pixel next to each visible point has that joint's own marker hue."""
    n = len(points)
    tolerance = np.pi / n  # half the hue spacing
    for j in np.flatnonzero(visible):
        x, y = np.rint(points[j]).astype(int)
        patch = image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3)
        angle, magnitude = _hue(patch)
        best = int(np.argmax(magnitude))
        assert magnitude[best] > 6, f"joint {j}: no marker near {points[j]}"
        diff = np.angle(np.exp(1j * (angle[best] - 2 * np.pi * j / n)))
        assert abs(diff) < tolerance, f"joint {j} at {points[j]} lands on another marker"


def _person(joints2d: np.ndarray, visibility: np.ndarray | None = None, track_id: int = 3) -> PersonLabel:
    rng = np.random.default_rng(1)
    vis = np.ones(len(joints2d), np.float32) if visibility is None else visibility
    return PersonLabel(
        joints3d=rng.normal(0, 0.3, (len(joints2d), 3)),
        joints2d=joints2d,
        visibility=vis,
        box=np.concatenate([joints2d.min(0), joints2d.max(0)]),
        track_id=track_id,
    )


def _grid_joints(origin: tuple[float, float], spacing: float, rng: np.random.Generator) -> np.ndarray:
    cols = int(np.ceil(np.sqrt(J)))
    k = np.arange(J)
    grid = np.stack([k % cols, k // cols], axis=1) * spacing + np.asarray(origin)
    return (grid + rng.uniform(-0.4, 0.4, grid.shape)).astype(np.float32)


def test_joints_land_on_their_markers() -> None:
    rng = np.random.default_rng(0)
    for size in (96, 128):
        frame = _grey_frame(240, 320)
        joints = _grid_joints((110.0, 70.0), 14.0, rng)
        _draw_dots(frame, joints, radius=3.5)
        person = _person(joints)
        sample = crop_person(frame, person, source="vid", frame_index=7, size=size)
        assert sample is not None
        assert sample.image.shape == (size, size, 3) and sample.image.dtype == np.uint8
        assert sample.joints2d.dtype == np.float32 and sample.joints2d.shape == (J, 2)
        _assert_on_own_dot(sample.image, sample.joints2d, sample.visibility > 0)
        # Centred on the joints' box, which is what fixes where the person sits in the crop.
        box_centre = (sample.joints2d.min(0) + sample.joints2d.max(0)) / 2
        np.testing.assert_allclose(box_centre, [(size - 1) / 2] * 2, atol=1e-3)


def test_unit_scale_crop_is_an_exact_copy_of_the_frame_pixels() -> None:
    """At scale 1 and an integer offset the crop must be the frame's pixels, bit for bit."""
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    # Visible joints span 64 px, so side = 64 * 1.5 = 96 = size; box centre (132.5, 100.5).
    joints = rng.uniform([100.5, 68.5], [164.5, 132.5], (J, 2)).astype(np.float32)
    joints[0], joints[1] = (100.5, 68.5), (164.5, 132.5)
    sample = crop_person(frame, _person(joints), source="v", frame_index=0, size=96, margin=0.25)
    assert sample is not None
    np.testing.assert_array_equal(sample.image, frame[53 : 53 + 96, 85 : 85 + 96])
    np.testing.assert_allclose(sample.joints2d, joints - [85, 53], atol=1e-4)


def test_natural_image_crop_keeps_real_pixel_values() -> None:
    """Guards against the old bug where crops came out as pure 0/255."""
    h, w = 240, 320
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    frame = np.stack([30 + 190 * xx / w, 40 + 150 * yy / h, 128 + 60 * np.sin(xx / 23.0) * np.cos(yy / 17.0)], axis=-1)
    frame = np.rint(frame).astype(np.uint8)
    joints = _grid_joints((100.0, 60.0), 15.0, np.random.default_rng(3))
    sample = crop_person(frame, _person(joints), source="v", frame_index=0, size=128)
    assert sample is not None
    values = np.unique(sample.image)
    assert len(values) > 100
    assert not set(values.tolist()) <= {0, 255}
    # The crop centre shows the frame around the joints' box centre.
    centre = (joints.min(0) + joints.max(0)) / 2
    cx, cy = np.rint(centre).astype(int)
    assert np.abs(sample.image[63:65, 63:65].astype(int).mean((0, 1)) - frame[cy, cx]).max() < 6


def test_person_at_frame_edge_is_padded_black_not_shifted() -> None:
    frame = _grey_frame(200, 300)  # no black pixel anywhere in the frame
    assert frame.min() > 0
    rng = np.random.default_rng(4)
    joints = rng.uniform([2.0, 50.0], [42.0, 130.0], (J, 2)).astype(np.float32)
    joints[0], joints[1] = (2.0, 50.0), (42.0, 130.0)
    size = 96
    sample = crop_person(frame, _person(joints), source="v", frame_index=0, size=size, margin=0.25)
    assert sample is not None
    # Side 120 px around centre (22, 90): scale 0.8, frame x = -0.5 lands on crop x = 29.5.
    box_centre = (sample.joints2d.min(0) + sample.joints2d.max(0)) / 2
    np.testing.assert_allclose(box_centre, [(size - 1) / 2] * 2, atol=1e-3)
    assert (sample.image[:, :29] == 0).all()
    assert (sample.image[:, 31:] > 0).all()


def test_too_few_visible_joints_gives_none() -> None:
    joints = _grid_joints((50.0, 50.0), 10.0, np.random.default_rng(5))
    frame = _grey_frame(200, 200)
    vis = np.zeros(J, np.float32)
    vis[:7] = 1.0
    vis[7:12] = 0.4  # below vis_threshold
    kwargs = {"source": "v", "frame_index": 0, "min_visible": 8, "vis_threshold": 0.5}
    assert crop_person(frame, _person(joints, vis), **kwargs) is None
    vis[7] = 0.5
    assert crop_person(frame, _person(joints, vis), **kwargs) is not None


def test_box_uses_visible_joints_only() -> None:
    joints = _grid_joints((60.0, 60.0), 8.0, np.random.default_rng(6))
    vis = np.ones(J, np.float32)
    joints[-1] = (190.0, 190.0)  # a wild guess for an occluded joint
    vis[-1] = 0.1
    sample = crop_person(_grey_frame(200, 200), _person(joints, vis), source="v", frame_index=0, size=64)
    assert sample is not None
    visible = sample.joints2d[:-1]
    assert visible.min() >= 0 and visible.max() <= 63
    assert sample.joints2d[-1].min() > 63  # still transformed, just off the crop


def test_person_crops_yields_one_sample_per_kept_person() -> None:
    rng = np.random.default_rng(7)
    frame = _grey_frame(240, 320)
    good = _person(_grid_joints((40.0, 40.0), 12.0, rng), track_id=11)
    hidden = _person(_grid_joints((180.0, 40.0), 12.0, rng), np.zeros(J, np.float32), track_id=12)
    labels = [
        FrameLabels(index=5, timestamp=0.2, size=(240, 320), source="clipA", persons=[good, hidden]),
        FrameLabels(index=6, timestamp=0.24, size=(240, 320), source="clipA", persons=[]),
        FrameLabels(index=9, timestamp=0.36, size=(240, 320), source="clipA", persons=[good, good]),
    ]
    samples = list(person_crops(((frame, fl) for fl in labels), size=64))
    assert [(s.source, s.frame, s.track_id) for s in samples] == [("clipA", 5, 11)] + [("clipA", 9, 11)] * 2
    for s in samples:
        assert isinstance(s, Sample)
        assert s.image.shape == (64, 64, 3)
        np.testing.assert_array_equal(s.joints3d, good.joints3d)
        assert s.joints3d is not good.joints3d  # a copy: the label object may be reused
        assert s.joints3d.dtype == np.float32 and s.visibility.dtype == np.float32


def test_person_crops_rejects_labels_for_another_frame_size() -> None:
    frame = _grey_frame(240, 320)
    labels = FrameLabels(index=0, timestamp=0.0, size=(480, 640), source="v", persons=[])
    with pytest.raises(ValueError, match="480x640"):
        list(person_crops([(frame, labels)]))


def test_rejects_non_uint8_frames() -> None:
    joints = _grid_joints((50.0, 50.0), 10.0, np.random.default_rng(8))
    with pytest.raises(ValueError, match="uint8"):
        crop_person(np.zeros((100, 100, 3), np.float32), _person(joints), source="v", frame_index=0)


def test_background_crops_show_nobody_and_are_labelled_all_invisible() -> None:
    rng = np.random.default_rng(3)
    frame = _grey_frame(360, 640)
    person = _person(_grid_joints((60.0, 60.0), 14.0, rng))
    detected = np.array([[400.0, 200.0, 460.0, 330.0]])  # someone the teacher missed
    negatives = background_crops(
        frame, [person], 50, rng, num_joints=J, source="clipA", frame_index=4, size=48, avoid=detected
    )
    assert len(negatives) == 50
    for s in negatives:
        assert s.image.shape == (48, 48, 3) and s.track_id == -1 and (s.source, s.frame) == ("clipA", 4)
        assert not s.visibility.any() and s.joints2d.shape == (J, 2) and s.joints3d.shape == (J, 3)
        # Nothing of the person's or the detected box's pixels (unique markers) shows: the crop is
        # the plain grey ramp, whose pixels have no chroma.
        assert np.ptp(s.image.astype(int), axis=2).max() <= 1
    _draw_dots(frame, person.joints2d, 3)
    frame[200:331, 400:461] = (200, 40, 40)
    for s in background_crops(frame, [person], 50, rng, num_joints=J, source="c", frame_index=0, avoid=detected):
        assert np.ptp(s.image.astype(int), axis=2).max() <= 1
    # A frame the person fills leaves no room: fewer (here no) negatives rather than a wrong one.
    big = _person(np.array([[2.0, 2.0], [630.0, 350.0]] * (J // 2) + [[300.0, 200.0]], np.float32))
    assert background_crops(frame, [big], 5, rng, num_joints=J, source="c", frame_index=0) == []


def test_person_crops_mixes_in_the_asked_fraction_of_negatives() -> None:
    rng = np.random.default_rng(5)
    frame = _grey_frame(360, 640)
    person = _person(_grid_joints((40.0, 40.0), 8.0, rng))
    labels = [FrameLabels(index=i, timestamp=i / 30, size=(360, 640), source="v", persons=[person]) for i in range(60)]
    samples = list(person_crops(((frame, fl) for fl in labels), size=32, negatives=0.25, rng=rng))
    negatives = [s for s in samples if s.track_id == -1]
    assert len(samples) == 80 and len(negatives) == 20  # 60 persons, and a quarter of all crops show nobody
    assert all(not s.visibility.any() for s in negatives)
    with pytest.raises(ValueError, match="negatives"):
        next(person_crops(iter([]), negatives=1.0))


def test_a_turned_square_is_cut_upright() -> None:
    """A square turned by `angle`: the frame direction (sin a, -cos a) is the crop's up, and the
    same matrix moves points and pixels."""
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[100, 100:160] = 255  # a line pointing right from the centre
    image, matrix = cut_square(frame, (100.0, 100.0), 160.0, 160, np.pi / 2)
    tip = apply_affine(matrix, np.array([[150.0, 100.0]]))[0]
    np.testing.assert_allclose(tip, [79.5, 29.5], atol=1e-6)  # 50 px right of the centre: 50 px up
    assert image[int(tip[1]), int(tip[0])].max() > 0 and image[130, 79:81].max() == 0
