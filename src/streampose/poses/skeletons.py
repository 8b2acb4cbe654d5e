"""Named skeletons: joint order, left/right flip permutation, bones and root.

Every teacher declares one of these, and every other module sizes itself from it, so
no code needs to know how many joints a skeleton has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    """A joint layout.

    `root` lists the joints whose mean is the root (pelvis): 3D labels are stored
    relative to it. `flip` maps joint i to its mirror twin; it is derived from the
    names (``left_*`` <-> ``right_*``) so it cannot disagree with them.
    """

    name: str
    joints: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]
    root: tuple[int, ...]
    flip: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        index = {n: i for i, n in enumerate(self.joints)}
        if len(index) != len(self.joints):
            raise ValueError(f"skeleton {self.name}: duplicate joint names")
        flip = []
        for name in self.joints:
            twin = _mirror_name(name)
            if twin != name and twin not in index:
                raise ValueError(f"skeleton {self.name}: {name} has no twin {twin}")
            flip.append(index[twin])
        object.__setattr__(self, "flip", tuple(flip))
        for a, b in self.bones:
            if not (0 <= a < len(self.joints) and 0 <= b < len(self.joints)):
                raise ValueError(f"skeleton {self.name}: bone ({a}, {b}) out of range")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, name: str) -> int:
        return self.joints.index(name)

    def root_of(self, points: np.ndarray) -> np.ndarray:
        """The root position of `points` shaped (..., J, D)."""
        return points[..., list(self.root), :].mean(axis=-2)

    def bone_lengths(self, joints3d: np.ndarray) -> np.ndarray:
        """Lengths of every bone, shaped (..., B), for 3D joints shaped (..., J, 3)."""
        a = np.array([b[0] for b in self.bones])
        b = np.array([b[1] for b in self.bones])
        return np.linalg.norm(joints3d[..., a, :] - joints3d[..., b, :], axis=-1)

    def side_of_bone(self, bone: tuple[int, int]) -> str:
        """'left', 'right' or 'centre', used to colour drawings consistently."""
        names = [self.joints[i] for i in bone]
        if any(n.startswith("left_") for n in names):
            return "left"
        if any(n.startswith("right_") for n in names):
            return "right"
        return "centre"


def _mirror_name(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[len("left_") :]
    if name.startswith("right_"):
        return "left_" + name[len("right_") :]
    return name


def _bones(joints: tuple[str, ...], pairs: list[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    return tuple((joints.index(a), joints.index(b)) for a, b in pairs)


_BLAZEPOSE_JOINTS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip

_BLAZEPOSE_BONES = [
    ("nose", "left_eye_inner"), ("left_eye_inner", "left_eye"), ("left_eye", "left_eye_outer"),
    ("left_eye_outer", "left_ear"), ("nose", "right_eye_inner"), ("right_eye_inner", "right_eye"),
    ("right_eye", "right_eye_outer"), ("right_eye_outer", "right_ear"), ("mouth_left", "mouth_right"),
    ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("left_wrist", "left_pinky"), ("left_wrist", "left_index"), ("left_pinky", "left_index"),
    ("left_wrist", "left_thumb"), ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("right_wrist", "right_pinky"), ("right_wrist", "right_index"), ("right_pinky", "right_index"),
    ("right_wrist", "right_thumb"), ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
    ("left_hip", "right_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("left_ankle", "left_heel"), ("left_heel", "left_foot_index"), ("left_ankle", "left_foot_index"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("right_ankle", "right_heel"),
    ("right_heel", "right_foot_index"), ("right_ankle", "right_foot_index"),
]  # fmt: skip

_COMOTION_JOINTS = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "nose", "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

_COMOTION_BONES = [
    ("pelvis", "left_hip"), ("pelvis", "right_hip"), ("pelvis", "spine1"), ("left_hip", "left_knee"),
    ("right_hip", "right_knee"), ("spine1", "spine2"), ("left_knee", "left_ankle"),
    ("right_knee", "right_ankle"), ("spine2", "spine3"), ("left_ankle", "left_foot"),
    ("right_ankle", "right_foot"), ("spine3", "neck"), ("spine3", "left_collar"),
    ("spine3", "right_collar"), ("neck", "head"), ("left_collar", "left_shoulder"),
    ("right_collar", "right_shoulder"), ("left_shoulder", "left_elbow"),
    ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
    ("head", "nose"), ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"),
]  # fmt: skip


def _make(name: str, joints: tuple[str, ...], bones: list[tuple[str, str]], root: list[str]) -> Skeleton:
    return Skeleton(name, joints, _bones(joints, bones), tuple(joints.index(r) for r in root))


SKELETONS: dict[str, Skeleton] = {
    s.name: s
    for s in (
        _make("blazepose33", _BLAZEPOSE_JOINTS, _BLAZEPOSE_BONES, ["left_hip", "right_hip"]),
        _make("comotion27", _COMOTION_JOINTS, _COMOTION_BONES, ["pelvis"]),
    )
}


def get_skeleton(name: str) -> Skeleton:
    try:
        return SKELETONS[name]
    except KeyError:
        raise KeyError(f"unknown skeleton {name!r}; known: {', '.join(sorted(SKELETONS))}") from None
