"""The student's input contract and how it runs on a device: one home for both.

A student sees uint8 RGB crops normalised with `IMAGE_MEAN`/`IMAGE_STD` (`normalize_images`);
checkpoints record this under "preprocess" and exported ONNX models in their metadata. How it
runs (memory layout and autocast precision) is chosen once, by `prepare_model`, for training,
evaluation, prediction and the benchmarks alike, from the measured tables below.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# ImageNet RGB statistics in 0-1 units: the student's backbones are pretrained with them.
IMAGE_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize_images(images_uint8_nhwc: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W) normalised, in channels_last memory.

    channels_last is the NHWC bytes seen as NCHW, so no transpose copy is made, and it is the
    layout convolutions run fastest in. Pass a tensor already on the GPU to move 1 byte per
    value over the bus instead of 4; the result stays on the input's device.
    """
    t = torch.as_tensor(images_uint8_nhwc)
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {tuple(t.shape)} {t.dtype}")
    x = t.permute(0, 3, 1, 2).to(torch.float32).contiguous(memory_format=torch.channels_last)
    scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGE_STD], dtype=torch.float32, device=x.device)
    bias = torch.tensor([-m / s for m, s in zip(IMAGE_MEAN, IMAGE_STD, strict=True)], device=x.device)
    x.mul_(scale.view(1, 3, 1, 1)).add_(bias.view(1, 3, 1, 1))
    return x


# Best (channels_last, autocast dtype) on this project's 2-core AVX-512/bf16 CPU, per size, measured
# with benchmarks/student_speed.py (numbers in docs/training.md, "Student sizes"). Training: channels_last
# alone wins for every size; bf16 autocast costs more than it saves in the depthwise/SE/BN-heavy
# backward. Inference: channels_last + bf16 wins for every size.
_CPU_TRAIN_LAYOUT: dict[str, tuple[bool, torch.dtype | None]] = {
    "micro": (True, None),
    "small": (True, None),
    "base": (True, None),
}
_CPU_INFER_LAYOUT: dict[str, tuple[bool, torch.dtype | None]] = {
    "micro": (True, torch.bfloat16),
    "small": (True, torch.bfloat16),
    "base": (True, torch.bfloat16),
}

#: On CPU, bf16 autocast (what `preferred_layout` picks for inference, measured at batch 32) is used
#: only for batches at least this big: at batch 1 PyTorch's per-call overhead dominates and bf16
#: only costs (docs/student.md). Tracking runs batch 1.
CPU_AMP_MIN_BATCH = 8


def preferred_layout(
    size: str, device: str | torch.device = "cpu", train: bool = True
) -> tuple[bool, torch.dtype | None]:
    """(use channels_last?, autocast dtype or None) that ran fastest for `size` on `device`.

    On CUDA: channels_last with bf16 where the GPU supports it, else fp16 (tensor cores want
    NHWC and half precision). On CPU: the measured tables above, for training (``train=True``)
    or inference. Sizes not in the tables (custom configs) get channels_last fp32, which never
    lost badly for these depthwise nets. The model outputs stay float32 under autocast.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    table = _CPU_TRAIN_LAYOUT if train else _CPU_INFER_LAYOUT
    return table.get(size, (True, None))


@dataclass(frozen=True)
class Layout:
    """Where and how a prepared model runs: its device, memory format and autocast dtype."""

    device: torch.device
    channels_last: bool
    amp_dtype: torch.dtype | None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def inputs(self, images_uint8_nhwc: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) crops -> the model's normalised input on its device and layout."""
        images = torch.as_tensor(np.ascontiguousarray(images_uint8_nhwc)).to(self.device)
        return normalize_images(images).contiguous(memory_format=self.memory_format)

    def autocast(self, batch: int) -> contextlib.AbstractContextManager:
        """The autocast context for a forward pass over `batch` samples (see `CPU_AMP_MIN_BATCH`)."""
        enabled = self.amp_dtype is not None and (self.device.type != "cpu" or batch >= CPU_AMP_MIN_BATCH)
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=enabled)


def prepare_model(model: nn.Module, device: str | torch.device, *, train: bool, precision: str = "auto") -> Layout:
    """Move `model` (a `Student`) to `device` in its preferred memory layout; returns how to run it.

    ``precision="auto"`` follows `preferred_layout` for training or inference; ``"fp32"`` is plain
    float32 NCHW, which is what an exported ONNX model matches to float rounding.
    """
    dev = torch.device(device)
    if precision == "auto":
        channels_last, amp_dtype = preferred_layout(model.config.name, dev, train=train)
    elif precision == "fp32":
        channels_last, amp_dtype = False, None
    else:
        raise ValueError(f"precision must be 'auto' or 'fp32', not {precision!r}")
    layout = Layout(dev, channels_last, amp_dtype)
    model.to(dev).to(memory_format=layout.memory_format)
    return layout


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution into it, in place; returns `model`.

    For inference only: a BatchNorm in eval mode is a per-channel affine map, which the conv's
    weight and bias absorb exactly (up to float rounding), so each block runs one kernel instead of
    two. The folded model can no longer be trained or saved as a checkpoint.
    """
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for conv_name, bn_name in zip(names, names[1:], strict=False):
            conv, bn = seq._modules[conv_name], seq._modules[bn_name]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
            seq._modules[bn_name] = nn.Identity()
    return model
