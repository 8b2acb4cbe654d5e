import numpy as np
import pytest

from streampose.poses.skeletons import SKELETONS, Skeleton, get_skeleton


@pytest.mark.parametrize("name", sorted(SKELETONS))
def test_flip_is_self_inverse_and_swaps_left_right(name):
    sk = get_skeleton(name)
    flip = np.array(sk.flip)
    assert sorted(flip) == list(range(sk.num_joints))
    assert (flip[flip] == np.arange(sk.num_joints)).all()
    for i, joint in enumerate(sk.joints):
        twin = sk.joints[flip[i]]
        if joint.startswith("left_"):
            assert twin == "right_" + joint[5:]
        elif joint.startswith("right_"):
            assert twin == "left_" + joint[6:]
        else:
            assert twin == joint


def test_comotion27_matches_documented_flip_permutation():
    # ../shared/notes/teachers.md, from CoMotion's own joint order.
    documented = [
        0,
        2,
        1,
        3,
        5,
        4,
        6,
        8,
        7,
        9,
        11,
        10,
        12,
        14,
        13,
        15,
        17,
        16,
        19,
        18,
        21,
        20,
        22,
        24,
        23,
        26,
        25,
    ]
    sk = get_skeleton("comotion27")
    assert list(sk.flip) == documented
    assert sk.joints[22:] == ("nose", "right_eye", "left_eye", "right_ear", "left_ear")
    assert sk.joints[sk.root[0]] == "pelvis"


def test_blazepose33_order_and_root():
    sk = get_skeleton("blazepose33")
    assert sk.joints[0] == "nose" and sk.joints[-1] == "right_foot_index"
    assert [sk.joints[i] for i in sk.root] == ["left_hip", "right_hip"]
    pts = np.zeros((sk.num_joints, 3))
    pts[sk.index("left_hip")] = [1, 0, 0]
    pts[sk.index("right_hip")] = [-1, 2, 0]
    assert np.allclose(sk.root_of(pts), [0, 1, 0])


def test_every_bone_joint_is_drawn_and_sides_are_consistent():
    for sk in SKELETONS.values():
        in_bones = {j for bone in sk.bones for j in bone}
        assert in_bones == set(range(sk.num_joints)), f"{sk.name}: joints without a bone"
        # Mirroring a bone gives a bone of the other side.
        bones = {tuple(sorted(b)) for b in sk.bones}
        for a, b in sk.bones:
            assert tuple(sorted((sk.flip[a], sk.flip[b]))) in bones


def test_a_name_without_its_twin_is_rejected():
    with pytest.raises(ValueError, match="no twin"):
        Skeleton("bad", ("pelvis", "left_hip"), ((0, 1),), (0,))


def test_unknown_skeleton_names_the_known_ones():
    with pytest.raises(KeyError, match="blazepose33"):
        get_skeleton("nope")
