"""What training minimises and how fast: the pose loss and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

LOSS_KEYS = ("loss", "loss_3d", "loss_2d", "loss_vis")


class LossWeights(Protocol):
    """The fields of `TrainConfig` the loss reads."""

    crop_size: int
    loss_3d: float
    loss_2d: float
    loss_vis: float


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup, then cosine decay to 5 % of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def pose_loss(out: dict, batch: dict, cfg: LossWeights) -> tuple[torch.Tensor, dict[str, float]]:
    """Visibility-weighted L1 on 3D (metres) and 2D (crop fractions), BCE on visibility."""
    vis = batch["visibility"]
    weight = vis / vis.sum().clamp(min=1.0)
    l3d = ((out["joints3d"] - batch["joints3d"]).abs().sum(-1) * weight).sum()
    target2d = batch["joints2d"] / cfg.crop_size
    l2d = ((out["joints2d"] - target2d).abs().sum(-1) * weight).sum()
    lvis = F.binary_cross_entropy_with_logits(out["vis_logits"], vis)
    total = cfg.loss_3d * l3d + cfg.loss_2d * l2d + cfg.loss_vis * lvis
    return total, {"loss": total.item(), "loss_3d": l3d.item(), "loss_2d": l2d.item(), "loss_vis": lvis.item()}
