"""The student: a compact MobileNetV3-style CNN that maps one person crop to 3D/2D joints.

Why this shape:
- The student must train on a 2-core CPU while the teacher labels frames, so the backbone is
  built from MobileNetV3's cheap pieces (inverted residuals with depthwise convs, hard-swish,
  optional squeeze-excite), written here in plain ``torch.nn``: torchvision does not import next
  to this project's CPU torch, and nothing needs downloading.
- A pose head that only pools globally and regresses numbers localises 2D joints poorly. Instead
  the head works on a stride-16 map (stride-32 features upsampled and added to stride-16 ones),
  predicts a heatmap per joint and, at every cell, that joint's 2D offset, root-relative 3D
  position and visibility; each output is the heatmap-weighted average of its map ("integral
  regression" / soft-argmax). That is differentiable, has no argmax or data-dependent control
  flow, and exports to ONNX with ordinary ops (Conv, HardSwish, Resize, Softmax, ReduceSum).
- Every size is a `StudentConfig` holding the full block list, so a checkpoint's config dict
  rebuilds the exact network even if the named sizes in `STUDENT_SIZES` change later.

Input: float RGB shaped (B, 3, S, S) with S = ``config.crop_size``, normalised with the ImageNet
mean/std as `streampose.model.preprocess.normalize_images` does (checkpoints record this under
"preprocess"). The network itself applies no fixed normalisation: the stem's BatchNorm would
absorb any, and keeping it outside keeps one definition of preprocessing in the project.
Outputs (always float32, also under autocast):
- ``joints3d`` (B, J, 3): metres, relative to the skeleton's root, camera axes.
- ``joints2d`` (B, J, 2): crop pixel coordinates divided by S (pixel centres at integer
  coordinates, as in `streampose.labels`), so roughly [0, 1]; joints cut off by the crop may
  fall slightly outside.
- ``vis_logits`` (B, J): logits of the visibility in [0, 1] (apply a sigmoid).
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from streampose.stream.crops import SIZE_MULTIPLE

#: The network's output stride where the pose head runs.
HEAD_STRIDE = 16
#: Channels of the head's output conv per joint (``Student.out`` has J * 7 channels, joint-major:
#: channel ``j * 7 + k``), at each stride-16 cell: heatmap logit, 2D offset in cells, root-relative
#: 3D in metres, visibility logit. E.g. a student that always predicts `pose` (J, 3):
#: ``out.weight.zero_(); out.bias.view(J, 7)[:, HEAD_MAPS["joints3d"]] = pose``.
HEAD_MAPS: dict[str, slice] = {
    "heatmap": slice(0, 1),
    "offset2d": slice(1, 3),
    "joints3d": slice(3, 6),
    "vis_logits": slice(6, 7),
}
_MAPS_PER_JOINT = 7


class BlockSpec(NamedTuple):
    """One inverted-residual block: ``kernel`` depthwise size, ``expand`` hidden channels,
    ``out`` output channels, ``se`` squeeze-excite on/off, ``hswish`` hard-swish (else ReLU),
    ``stride`` 1 or 2."""

    kernel: int
    expand: int
    out: int
    se: bool
    hswish: bool
    stride: int


@dataclass(frozen=True)
class StudentConfig:
    """Everything needed to rebuild a `Student` (stored in checkpoints via `config_dict`).

    ``name`` is informational (the size it was built from). ``stem`` is the first conv's
    channels, ``blocks`` the backbone, ``neck`` the channels of the fused stride-16 map,
    ``head`` the hidden channels of the pose head.
    """

    name: str
    num_joints: int
    crop_size: int
    stem: int
    blocks: tuple[BlockSpec, ...]
    neck: int
    head: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(BlockSpec(*b) for b in self.blocks))
        if self.num_joints < 1:
            raise ValueError(f"num_joints must be >= 1, got {self.num_joints}")
        if self.crop_size < SIZE_MULTIPLE or self.crop_size % SIZE_MULTIPLE:
            raise ValueError(f"crop_size must be a positive multiple of {SIZE_MULTIPLE}, got {self.crop_size}")
        strides = [b.stride for b in self.blocks]
        if any(s not in (1, 2) for s in strides) or strides.count(2) != 4:
            # stem (2) x four stride-2 blocks = 32; the head needs stride 16 and stride 32 maps.
            raise ValueError(f"blocks need exactly four stride-2 blocks (and strides 1 or 2), got {strides}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (blocks become lists)."""
        d = asdict(self)
        d["blocks"] = [list(b) for b in self.blocks]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentConfig:
        d = dict(d)
        d["blocks"] = tuple(BlockSpec(*b) for b in d["blocks"])
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Named sizes. Channel counts are multiples of 8 (vector-friendly on CPU and GPU).
# Columns: kernel, expand, out, se, hswish, stride.

# MobileNetV3-small's block list (Howard et al. 2019, table 2), the reference point measured in
# shared/notes/cpu-budget.md (~200-285 train samples/s at 128 px, batch 32, on this machine).
_SMALL_BLOCKS = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)

# Fastest: half as many blocks, narrower, 3x3 depthwise, SE only at the end (SE's tiny pooled
# matmuls cost more on CPU than their FLOPs suggest).
_MICRO_BLOCKS = (
    (3, 16, 16, False, False, 2),
    (3, 48, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (3, 96, 40, False, True, 2),
    (3, 160, 40, False, True, 1),
    (3, 240, 80, True, True, 2),
    (3, 320, 80, True, True, 1),
)

# MobileNetV3-large's block list (same table 1): ~3x small's compute.
_BASE_BLOCKS = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
)


class _SizeSpec(NamedTuple):
    stem: int
    blocks: tuple[tuple[int, int, int, bool, bool, int], ...]
    neck: int
    head: int


STUDENT_SIZES: dict[str, _SizeSpec] = {
    "micro": _SizeSpec(stem=16, blocks=_MICRO_BLOCKS, neck=64, head=96),
    "small": _SizeSpec(stem=16, blocks=_SMALL_BLOCKS, neck=96, head=128),
    "base": _SizeSpec(stem=16, blocks=_BASE_BLOCKS, neck=128, head=192),
}
DEFAULT_SIZE = "small"

# ---------------------------------------------------------------------------------------------
# Layers


class ConvBNAct(nn.Sequential):
    """Conv (no bias: BN follows) + BatchNorm + optional activation."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.Hardswish,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel gating from the global mean (MobileNetV3's SE with a hard-sigmoid gate).

    The mean is ``x.mean((2, 3))`` rather than an adaptive pool so it exports as one ReduceMean
    and works in any memory layout.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = _round8(channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand -> depthwise kxk -> [SE] -> 1x1 project (+ skip).

    The skip exists only when shape is preserved; `Student` starts the projection's BN at zero
    gamma so a fresh block is the identity, which keeps deep stacks stable from the first step.
    """

    def __init__(self, cin: int, spec: BlockSpec) -> None:
        super().__init__()
        act = nn.Hardswish if spec.hswish else nn.ReLU
        layers: list[nn.Module] = []
        if spec.expand != cin:
            layers.append(ConvBNAct(cin, spec.expand, 1, act=act))
        layers.append(ConvBNAct(spec.expand, spec.expand, spec.kernel, spec.stride, spec.expand, act=act))
        if spec.se:
            layers.append(SqueezeExcite(spec.expand))
        layers.append(ConvBNAct(spec.expand, spec.out, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.use_skip = spec.stride == 1 and cin == spec.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.use_skip else y


def _round8(c: int) -> int:
    return max(8, int(c + 4) // 8 * 8)


# ---------------------------------------------------------------------------------------------
# The model


class Student(nn.Module):
    """Crop -> {joints3d, joints2d, vis_logits}; see the module docstring for conventions."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        j = config.num_joints
        self.stem = ConvBNAct(3, config.stem, 3, 2)

        # Split the blocks where the last stride-2 block starts: everything before ends at
        # stride 16, the rest at stride 32.
        last_down = max(i for i, b in enumerate(config.blocks) if b.stride == 2)
        cin = config.stem
        stage16: list[nn.Module] = []
        stage32: list[nn.Module] = []
        for i, spec in enumerate(config.blocks):
            (stage16 if i < last_down else stage32).append(InvertedResidual(cin, spec))
            if i == last_down - 1:
                c16 = spec.out
            cin = spec.out
        c32 = cin
        self.stage16 = nn.Sequential(*stage16)
        self.stage32 = nn.Sequential(*stage32)

        # Neck: stride-32 context upsampled onto the stride-16 map (a one-level FPN).
        self.lateral16 = ConvBNAct(c16, config.neck, 1, act=None)
        self.lateral32 = ConvBNAct(c32, config.neck, 1, act=None)
        self.fuse = ConvBNAct(config.neck, config.neck, 3, groups=config.neck)
        # Head: a hidden 1x1 conv plus a global-context vector (3D depth and scale are global
        # properties of the crop), then per joint: heatmap logit, 2D offset (2), 3D (3), vis (1).
        self.head_local = nn.Conv2d(config.neck, config.head, 1)
        self.head_global = nn.Linear(c32, config.head)
        self.out = nn.Conv2d(config.head, j * _MAPS_PER_JOINT, 1)

        # Cell centres of the stride-16 grid in normalised crop coordinates (x/size, y/size),
        # with pixel centres at integer coordinates: cell i covers pixels [16i, 16i+15].
        n = config.crop_size // HEAD_STRIDE
        centres = (torch.arange(n, dtype=torch.float32) * HEAD_STRIDE + (HEAD_STRIDE - 1) / 2) / config.crop_size
        gy, gx = torch.meshgrid(centres, centres, indexing="ij")
        # Derived from the config, so not saved in state_dicts. Shaped (2, HW).
        self.register_buffer("grid", torch.stack([gx.flatten(), gy.flatten()]), persistent=False)
        self.cell = HEAD_STRIDE / config.crop_size  # offsets are predicted in cell units

        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, InvertedResidual) and m.use_skip:
                nn.init.zeros_(m.body[-1][1].weight)
        # Start from flat heatmaps and zero offsets/3D/vis: the first prediction is the crop
        # centre, the root, and visibility 0.5, so early losses are sane.
        nn.init.normal_(self.out.weight, std=0.001)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`x`: (B, 3, S, S) normalised RGB. Returns float32 outputs (see module docstring)."""
        b = x.shape[0]
        j = self.config.num_joints
        f16 = self.stage16(self.stem(x))
        f32 = self.stage32(f16)
        up = F.interpolate(self.lateral32(f32), scale_factor=2.0, mode="nearest")
        neck = self.fuse(self.lateral16(f16) + up)
        context = self.head_global(f32.mean((2, 3)))
        h = F.hardswish(self.head_local(neck) + context[:, :, None, None])
        # float32 from here on: softmax and the weighted sums are precision-sensitive, and the
        # losses should see float32 whatever autocast did upstream. Weighted sums are written as
        # multiply + sum, not matmul, because autocast would run a matmul in bf16/fp16.
        maps = self.out(h).float().flatten(2).reshape(b, j, _MAPS_PER_JOINT, -1)  # (B, J, 7, HW)
        weights = torch.softmax(maps[:, :, 0], dim=-1)[:, :, None]  # (B, J, 1, HW)
        pooled = (maps * weights).sum(-1)  # (B, J, 7); the heatmap channel's entry is unused
        offset = pooled[..., HEAD_MAPS["offset2d"]]
        joints2d = (weights * self.grid).sum(-1) + offset * self.cell
        return {
            "joints3d": pooled[..., HEAD_MAPS["joints3d"]],
            "joints2d": joints2d,
            "vis_logits": pooled[..., HEAD_MAPS["vis_logits"]].squeeze(-1),
        }

    # -- config round trip ---------------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable config; `Student.from_config` rebuilds the same architecture."""
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any] | StudentConfig) -> Student:
        """A freshly initialised student from `config_dict()` output (load the weights after)."""
        if isinstance(config, dict):
            config = StudentConfig.from_dict(config)
        return cls(config)


def student_config(size: str, num_joints: int, crop_size: int) -> StudentConfig:
    """The `StudentConfig` of a named size (see `STUDENT_SIZES`)."""
    if size.startswith("torchvision:"):
        _require_torchvision(size)
    try:
        spec = STUDENT_SIZES[size]
    except KeyError:
        raise ValueError(f"unknown student size {size!r}; known sizes: {', '.join(STUDENT_SIZES)}") from None
    return StudentConfig(
        name=size,
        num_joints=num_joints,
        crop_size=crop_size,
        stem=spec.stem,
        blocks=tuple(BlockSpec(*b) for b in spec.blocks),
        neck=spec.neck,
        head=spec.head,
    )


def build_student(size: str, num_joints: int, crop_size: int) -> Student:
    """A freshly initialised student of a named size (`STUDENT_SIZES`; `DEFAULT_SIZE` is the
    one to use when unsure) for ``skeleton.num_joints`` joints and `crop_size` crops."""
    return Student(student_config(size, num_joints, crop_size))


def _require_torchvision(size: str) -> None:
    """Pretrained torchvision backbones are not wired in (see module docstring: torchvision does
    not import next to this project's torch). Say so clearly rather than failing obscurely."""
    if importlib.util.find_spec("torchvision") is None:
        raise ValueError(
            f"student size {size!r} needs torchvision, which is not installed; install a torchvision "
            f"build matching torch {torch.__version__} (e.g. `pip install torchvision`), or use one of: "
            f"{', '.join(STUDENT_SIZES)}"
        )
    raise ValueError(
        f"student size {size!r}: pretrained torchvision backbones are not supported yet; use one of: "
        f"{', '.join(STUDENT_SIZES)}"
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
