"""`make demo`: the main job on the offline defaults, on sample clips of real people.

Labels the Sports2D sample clip with the MediaPipe teacher and renders an overlay, so a
person can see what the teacher gives the student.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .cli import main as cli
from .testdata import sample_clip


def main(out: Path = Path("runs/demo")) -> int:
    clip = sample_clip("sports2d")
    out.mkdir(parents=True, exist_ok=True)
    code = cli(
        ["label", str(clip), "--save", str(out / "labels.pt"), "--render", str(out / "overlay.mp4"), "--json"]
    )
    if code == 0:
        code = cli(["view", str(out / "labels.pt"), "--video", str(clip), "--png", str(out / "labels.png")])
    if code == 0:
        print(f"demo outputs in {out}/: labels.pt, overlay.mp4, labels.png", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
