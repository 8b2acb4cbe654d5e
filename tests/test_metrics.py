"""The three errors (facing, articulation, scale) told apart on poses with a known answer."""

import numpy as np
import pytest

from streampose.poses.metrics import METRIC_KEYS, pose_metrics, torso_yaw, yaw_errors
from streampose.poses.skeletons import get_skeleton

SKELETON = get_skeleton("blazepose33")


def _body(rng: np.random.Generator, n: int) -> np.ndarray:
    """n upright bodies facing the camera (y down, z forward), root at the origin, with jitter."""
    joints = rng.normal(0, 0.05, (n, SKELETON.num_joints, 3))
    for name, x, y in (
        ("left_shoulder", 0.2, -0.5), ("right_shoulder", -0.2, -0.5), ("left_hip", 0.12, 0.0),
        ("right_hip", -0.12, 0.0), ("left_ankle", 0.12, 0.85), ("right_ankle", -0.12, 0.85),
        ("nose", 0.0, -0.7),
    ):  # fmt: skip
        joints[:, SKELETON.index(name)] += (x, y, 0.0)
    return joints - SKELETON.root_of(joints)[:, None]


def _turned(joints: np.ndarray, degrees: float) -> np.ndarray:
    """Turned about the vertical (y) axis."""
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return joints @ rot.T


def test_a_body_facing_the_camera_has_yaw_zero_and_its_back_pi():
    body = _body(np.random.default_rng(0), 1)
    assert abs(torso_yaw(body, SKELETON)[0]) < 0.3
    assert abs(abs(torso_yaw(_turned(body, 180), SKELETON)[0]) - np.pi) < 0.3


@pytest.mark.parametrize("degrees", [0, 30, 60, 100, 150, 180])
def test_a_known_turn_is_measured_as_the_yaw_error(degrees):
    target = _body(np.random.default_rng(1), 50)
    pred = _turned(target, degrees)
    assert np.allclose(yaw_errors(pred, target, SKELETON), degrees, atol=1e-6)
    m = pose_metrics(pred, target, np.ones(target.shape[:2]), SKELETON)
    assert m["yaw_error_deg"] == pytest.approx(degrees, abs=1e-6)
    assert m["turned_share"] == (1.0 if degrees > 90 else 0.0)  # a 180 degree turn counts as turned
    # Rotation is all that differs: removing it (and PA) leaves nothing, raw MPJPE does not.
    assert m["rot_mpjpe_mm"] < 1e-3 and m["pa_mpjpe_mm"] < 1e-3
    assert (m["mpjpe_mm"] > 10) == (degrees > 0)


def test_the_three_errors_are_told_apart():
    rng = np.random.default_rng(2)
    target = _body(rng, 40)
    articulated = target + rng.normal(0, 0.03, target.shape)  # shape changed, facing kept
    scaled = 1.3 * target  # same shape, bigger
    for pred, expect in ((articulated, "shape"), (scaled, "scale"), (_turned(target, 120), "facing")):
        m = pose_metrics(pred, target, np.ones(target.shape[:2]), SKELETON)
        if expect == "shape":
            assert m["rot_mpjpe_mm"] > 20 and m["pa_mpjpe_mm"] > 20 and m["turned_share"] == 0
        elif expect == "scale":
            assert m["rot_mpjpe_mm"] > 50 and m["pa_mpjpe_mm"] < 1e-3 and m["yaw_error_deg"] < 1e-6
        else:
            assert m["turned_share"] == 1 and m["rot_mpjpe_mm"] < 1e-3 and m["mpjpe_mm"] > 100


def test_half_turned_persons_give_a_half_share_and_hidden_hips_are_left_out():
    target = _body(np.random.default_rng(3), 20)
    pred = np.concatenate([target[:10], _turned(target[10:], 170)])
    visibility = np.ones(target.shape[:2])
    assert pose_metrics(pred, target, visibility, SKELETON)["turned_share"] == 0.5
    visibility[10:, SKELETON.index("left_hip")] = 0  # the turned half cannot be judged for facing
    m = pose_metrics(pred, target, visibility, SKELETON)
    assert m["turned_share"] == 0 and m["yaw_error_deg"] < 1e-6


def test_no_visible_joint_gives_nan_for_every_metric():
    target = _body(np.random.default_rng(4), 3)
    m = pose_metrics(target, target, np.zeros(target.shape[:2]), SKELETON)
    assert tuple(m) == METRIC_KEYS and all(np.isnan(v) for v in m.values())


def test_facing_strata_split_the_turn_into_equal_sectors():
    from streampose.poses.metrics import facing_stratum

    stratum = facing_stratum(SKELETON, bins=8)
    body = _body(np.random.default_rng(5), 1)
    # yaw 0 (facing the camera) is at the edge of sectors 3 and 4; turning by 45 degrees moves one sector
    bins = [stratum(_turned(body, d)[0]) for d in (20, 65, 110, 155, 200, 245, 290, 335)]
    assert len(set(bins)) == 8
