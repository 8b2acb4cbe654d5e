"""The model card that goes with every export: what the student is, what it learnt from, how
well it did, and what its licences let a user do with it.

A student inherits obligations from its teacher (CoMotion's weights are research-only, and that
covers derivatives) and from its videos (Pexels' terms, Commons' attribution licences), so the
card states them where a person deciding to use the student will read them. The same facts go
to a JSON file for tools. Everything comes from the checkpoint and the run folder beside it
(`provenance.jsonl`, `eval.json`, `metrics.jsonl`); nothing is guessed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from streampose.files import atomic_write
from streampose.poses.skeletons import get_skeleton
from streampose.sources.pexels import LICENCE_URL as PEXELS_LICENCE_URL
from streampose.sources.provenance import FILENAME as PROVENANCE
from streampose.teachers import teacher_class

PEXELS_TERMS = (
    "Pexels' terms forbid using its content to train, fine-tune or evaluate machine-learning models without "
    f"Pexels' explicit permission ({PEXELS_LICENCE_URL}); this student was trained on Pexels videos"
)
OWN_VIDEOS = "videos given as files or URLs: their licences are the trainer's responsibility"


def _json_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash: the rest still counts
    return out


def training_data(run: Path) -> dict[str, Any]:
    """A summary of `provenance.jsonl`: videos, providers, licences and how many authors to credit."""
    entries = {e["id"]: e for e in _json_lines(run / PROVENANCE) if "id" in e}  # a video once, however often used
    videos = list(entries.values())
    return {
        "videos": len(videos),
        "frames_labelled": sum(int(e.get("frames", 0)) for e in videos),
        "providers": dict(Counter(str(e.get("provider", "unknown")) for e in videos)),
        "licences": dict(Counter(str(e.get("licence", "unknown")) for e in videos if e.get("provider") != "file")),
        "authors": len({e["author"] for e in videos if e.get("author")}),
        "provenance": PROVENANCE if videos else None,
    }


def latest_metrics(run: Path) -> dict[str, Any]:
    """The latest validation record of `metrics.jsonl` and the evaluation in `eval.json`, where present."""
    validation = [r for r in _json_lines(run / "metrics.jsonl") if any(k.startswith("val_") for k in r)]
    out: dict[str, Any] = {}
    if validation:
        out["validation"] = {k: v for k, v in validation[-1].items() if k == "step" or k.startswith("val_")}
    if (run / "eval.json").exists():
        out["evaluation"] = json.loads((run / "eval.json").read_text())
    return out


def model_card(ckpt: dict, run: Path, files: dict[str, str]) -> dict[str, Any]:
    """The card's facts for checkpoint `ckpt` trained in run folder `run`; `files` names what was exported."""
    teacher = teacher_class(ckpt["teacher"])
    skeleton = get_skeleton(ckpt["skeleton"])
    data = training_data(run)
    restrictions = [teacher.terms] if teacher.terms else []
    if data["providers"].get("pexels"):
        restrictions.append(PEXELS_TERMS)
    if data["providers"].get("commons"):
        restrictions.append(
            f"Wikimedia Commons videos under {', '.join(sorted(data['licences']))}: attribution to "
            f"{data['authors']} author(s) is listed per video in {PROVENANCE}; share-alike licences may apply"
        )
    if data["providers"].get("file") or data["providers"].get("url"):
        restrictions.append(OWN_VIDEOS)
    pre = ckpt.get("preprocess", {})
    return {
        "format": "streampose-model-card/1",
        "files": files,
        "student": ckpt["student"],
        "skeleton": {
            "name": skeleton.name,
            "joints": list(skeleton.joints),
            "bones": [list(b) for b in skeleton.bones],
        },
        "input": {
            "crop_size": pre.get("crop_size"),
            "layout": "RGB uint8 crop, normalised as (x / 255 - mean) / std",
            "mean": pre.get("mean"),
            "std": pre.get("std"),
        },
        "outputs": "joints3d (metres, root-relative, x right, y down, z forward), joints2d (crop fractions), "
        "vis_logits (per joint)",
        "teacher": {"name": ckpt["teacher"], "licence": teacher.licence},
        "training": {"steps": ckpt.get("step"), "world_size": ckpt.get("world_size"), "data": data},
        "metrics": latest_metrics(run),
        "licence": {"research_only": bool(teacher.terms), "restrictions": restrictions or ["none beyond notices"]},
    }


def card_markdown(card: dict[str, Any]) -> str:
    student, data, metrics = card["student"], card["training"]["data"], card["metrics"]
    lines = [
        f"# stream-pose student: {student.get('name', '?')}, {card['skeleton']['name']}",
        "",
        "## Licence and use",
        *[f"- {r}" for r in card["licence"]["restrictions"]],
        "",
        "## What it is",
        f"- A {student.get('name', '?')} student predicting {len(card['skeleton']['joints'])} joints "
        f"({card['skeleton']['name']}) in 3D and 2D from a {card['input']['crop_size']} px person crop.",
        f"- Input: {card['input']['layout']}; mean {card['input']['mean']}, std {card['input']['std']}.",
        f"- Outputs: {card['outputs']}.",
        f"- Files: {', '.join(f'{k}: `{v}`' for k, v in card['files'].items())}.",
        "",
        "## Training",
        f"- Teacher: {card['teacher']['name']} ({card['teacher']['licence']}).",
        f"- Steps: {card['training']['steps']} on {card['training']['world_size'] or 1} process(es).",
        f"- Data: {data['videos']} videos ({_counts(data['providers'])}), {data['frames_labelled']} frames labelled; "
        f"licences: {_counts(data['licences']) or 'none recorded'}; {data['authors']} author(s) to credit.",
        "",
        "## How well it does",
    ]
    if not metrics:
        lines.append("- No evaluation or validation was recorded in the run folder.")
    if "validation" in metrics:
        lines.append(f"- Latest validation: {_counts(metrics['validation'])}.")
    if "evaluation" in metrics:
        lines.append(f"- Evaluation (`eval.json`): {_counts(_flat_numbers(metrics['evaluation']))}.")
    lines += ["", "## Joint order", ", ".join(f"{i} {n}" for i, n in enumerate(card["skeleton"]["joints"]))]
    return "\n".join(lines) + "\n"


def _flat_numbers(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat_numbers(v, f"{prefix}{k}.")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = round(v, 2)
    return out


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def write_model_card(card: dict[str, Any], folder: Path, stem: str) -> tuple[Path, Path]:
    """`<stem>.card.md` and `<stem>.card.json` in `folder`, written atomically."""
    md = atomic_write(folder / f"{stem}.card.md", lambda f: f.write(card_markdown(card).encode()))
    js = atomic_write(folder / f"{stem}.card.json", lambda f: f.write(json.dumps(card, indent=2).encode()))
    return md, js
