"""`experiment.png`: held-out error against the amount of distinct training data."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from streampose.files import atomic_write  # noqa: E402


def plot_experiment(report: dict, path: str | Path) -> Path:
    """Student MPJPE and PA-MPJPE per size (solid) and the mean-pose baseline of each run (dashed)."""
    sizes = [int(k) for k in report["runs"]]
    runs = list(report["runs"].values())
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, colour in (("mpjpe_mm", "tab:blue"), ("pa_mpjpe_mm", "tab:orange")):
        name = key[: -len("_mm")].upper().replace("_", "-")
        ax.plot(sizes, [r.get(f"val_{key}") for r in runs], color=colour, marker="o", label=f"student {name}")
        ax.plot(sizes, [r.get(f"val_baseline_{key}") for r in runs], color=colour, ls="--", label=f"mean pose {name}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel(f"distinct training data ({report['unit']})")
    ax.set_ylabel("held-out error vs the teacher (mm)")
    steps = runs[0].get("steps") if runs else "?"
    ax.set_title(f"held-out: {report.get('val_persons', '?')} persons; {steps} steps per size", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return Path(path)
