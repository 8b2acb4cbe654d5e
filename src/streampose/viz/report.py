"""The training report a person reads: loss and validation curves, evaluation numbers, student vs teacher poses."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from streampose.files import atomic_write  # noqa: E402
from streampose.poses.skeletons import Skeleton  # noqa: E402
from streampose.viz.render import pose_panel  # noqa: E402

TEACHER_COLOUR, STUDENT_COLOUR = (90, 220, 90), (255, 70, 70)


def validation_curves(ax, val: list[dict]) -> None:
    """Held-out MPJPE and PA-MPJPE over training, each beside its mean-pose baseline (dashed)."""
    steps = [r["step"] for r in val]
    for key, colour in (("mpjpe_mm", "tab:blue"), ("pa_mpjpe_mm", "tab:orange")):
        ax.plot(steps, [r[f"val_{key}"] for r in val], color=colour, marker=".", label=f"student {key[:-3]}")
        ax.plot(steps, [r.get(f"val_baseline_{key}") for r in val], color=colour, ls="--", label="mean pose")
    ax.set_xlabel("step")
    ax.set_ylabel("mm")
    ax.set_title("validation (held-out) vs the teacher")
    ax.legend(loc="upper right", fontsize=7)
    ax.grid(alpha=0.3)


def write_report(path: str | Path, metrics_jsonl: str | Path, evals: dict[str, dict], skeleton: Skeleton) -> Path:
    """One PNG: the loss and validation curves, a table of eval results, and example poses from each eval."""
    records = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_pa_mpjpe_mm" in r]
    examples = [(name, ex) for name, result in evals.items() for ex in result.get("examples", [])[:3]]
    cols = max(4, len(examples))
    fig = plt.figure(figsize=(3.2 * cols, 9.5))
    grid = fig.add_gridspec(3, cols, height_ratios=[1.1, 0.7, 1.2])

    ax = fig.add_subplot(grid[0, : cols // 2] if val else grid[0, :])
    steps = [r["step"] for r in train]
    for key in ("loss", "loss_3d", "loss_2d", "loss_vis"):
        ax.plot(steps, [r[key] for r in train], label=key, lw=1.2 if key == "loss" else 0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("training loss")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    if val:
        validation_curves(fig.add_subplot(grid[0, cols // 2 :]), val)

    ax = fig.add_subplot(grid[1, :])
    ax.axis("off")
    header = ["eval", "persons", "MPJPE mm", "mean-pose MPJPE", "PA-MPJPE mm", "mean-pose PA", "PCK@150", "yaw err",
              "turned >90"]  # fmt: skip
    rows = [
        [
            name,
            r["persons"],
            f"{r['mpjpe_mm']:.0f}",
            f"{r['baseline_mpjpe_mm']:.0f}",
            f"{r['pa_mpjpe_mm']:.0f}",
            f"{r['baseline_pa_mpjpe_mm']:.0f}",
            f"{r['pck_150mm']:.2f}",
            f"{r['yaw_error_deg']:.0f} deg",
            f"{100 * r['turned_share']:.0f} %",
        ]
        for name, r in evals.items()
        if r.get("persons")
    ]
    if rows:
        table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
        table.scale(1, 1.6)

    for i, (name, ex) in enumerate(examples):
        ax = fig.add_subplot(grid[2, i])
        crop = ex["image"]
        panel = pose_panel(
            [(ex["teacher"], ex["visibility"], TEACHER_COLOUR), (ex["student"], ex["visibility"], STUDENT_COLOUR)],
            skeleton,
            crop.shape[0],
        )
        ax.imshow(np.concatenate([crop, panel], axis=1))
        ax.set_title(f"{name}\nteacher green, student red", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)
    return Path(path)
