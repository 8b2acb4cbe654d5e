"""`streampose experiment`: what more distinct video buys, on people the student never sees.

The same training configuration runs once per size on nested subsets of the sources: the first
k distinct videos (`max_videos=k`: each read once into the buffer, then replayed), or, for a
single video, its first k seconds. Every run takes the same number of steps and is scored on
the same `--val` set, labelled once for all of them. Each finished size leaves
`OUT/size-K/result.json`, so a rerun skips it (an unfinished one resumes from its `last.pt`);
`experiment.json` and `experiment.png` are rewritten after every size.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

from streampose.engine.config import TrainConfig
from streampose.engine.evaluate import EvalSet
from streampose.engine.train import Trainer
from streampose.engine.validation import check_disjoint, label_validation
from streampose.errors import StreamPoseError
from streampose.files import atomic_write
from streampose.sources import SourceFilters, refs
from streampose.stream import stages
from streampose.stream.decode import probe


def parse_sizes(text: str) -> list[int]:
    """ "1,2,4" -> [1, 2, 4]: positive and increasing, so the subsets nest."""
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise StreamPoseError(f"--sizes {text!r}: expected comma-separated whole numbers, e.g. 1,2,4") from None
    if not sizes or sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
        raise StreamPoseError(f"--sizes {text!r}: expected increasing positive numbers, e.g. 1,2,4")
    return sizes


def subset_configs(base: TrainConfig, sizes: list[int]) -> tuple[str, dict[int, TrainConfig], list[str]]:
    """(unit, size -> its run's config, the distinct videos found) for nested subsets of `base.sources`."""
    found = [r.id for r in refs(base.sources, max_videos=sizes[-1], filters=SourceFilters(**base.filters))]
    out = Path(base.out)
    if len(found) >= sizes[-1]:
        unit = "videos"
        configs = {k: replace(base, max_videos=k, out=str(out / f"size-{k}")) for k in sizes}
    elif len(found) == 1:
        unit = "seconds"
        fps = probe(stages.one_video(found[0]).data, found[0]).fps or 30.0
        configs = {
            k: replace(base, max_frames=max(1, math.ceil(k * fps / base.stride)), out=str(out / f"size-{k}"))
            for k in sizes
        }
    else:
        raise StreamPoseError(
            f"--sizes up to {sizes[-1]} needs that many distinct videos, but the sources gave {len(found)} "
            "(one video alone is split by seconds instead)"
        )
    return unit, configs, found


def run_size(cfg: TrainConfig, val_set: EvalSet, progress=None) -> dict:
    """One size's run (resumed if it was cut short); its result, kept beside it."""
    done = Path(cfg.out) / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    summary = Trainer(replace(cfg, resume=True), progress=progress, val_set=val_set).run()
    if summary["interrupted"]:
        raise KeyboardInterrupt
    val = summary["val"] or {}
    result = {
        "steps": summary["step"],
        "seconds": round(summary["seconds"], 1),
        "persons_trained": summary["buffer"]["inserted"],
        **{k: v for k, v in val.items() if k.startswith("val_")},
        "best_val_pa_mpjpe_mm": summary["best_val_pa_mpjpe_mm"],
    }
    atomic_write(done, lambda f: f.write(json.dumps(result, indent=2).encode()))
    return result


def experiment(base: TrainConfig, sizes: list[int], progress=None) -> dict:
    """Train `base` on each nested subset; `OUT/experiment.json` and `experiment.png` hold the curve."""
    from streampose.viz.experiment import plot_experiment  # matplotlib: only when there is a plot to draw

    if not base.val:
        raise StreamPoseError("experiment needs --val SOURCE: the held-out video every size is scored on")
    check_disjoint(base.sources, base.val)
    unit, configs, found = subset_configs(base, sizes)
    out = Path(base.out)
    val_set = label_validation(base)
    report = {
        "unit": unit, "sizes": sizes, "videos": found[: sizes[-1]], "val": base.val,
        "val_persons": len(val_set.images), "config": asdict(base), "runs": {},
    }  # fmt: skip
    for k, cfg in configs.items():
        print(f"experiment: size {k} {unit}, {cfg.steps} steps -> {cfg.out}", file=sys.stderr)
        bar = progress(total=cfg.steps, unit="step", desc=f"size {k}") if progress else None
        try:
            report["runs"][str(k)] = run_size(cfg, val_set, bar)
        finally:
            if bar is not None:
                bar.close()
        atomic_write(out / "experiment.json", lambda f: f.write(json.dumps(report, indent=2).encode()))
        plot_experiment(report, out / "experiment.png")
    return report
