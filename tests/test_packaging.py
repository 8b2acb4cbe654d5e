"""The wheel is what users install: it must hold every sub-package and run the command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import streampose

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    # Built from a copy: setuptools leaves build/ and egg-info folders beside the sources.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(tree)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("streampose-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("sources", "poses", "teachers", "stream", "model", "engine", "viz"):
        assert f"streampose/{package}/__init__.py" in names
    assert not any(n.startswith("tests/") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    target = subprocess.run(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    # The dependencies come from this environment (installing torch again is not the point);
    # the package itself must come from the wheel.
    Path(target, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the venv decides what imports
    run = lambda *args: subprocess.run(  # noqa: E731
        [venv / "bin" / "python", *args], capture_output=True, text=True, timeout=120, env=env
    )
    where = run("-c", "import streampose; print(streampose.__file__)")
    assert where.stdout.startswith(target), where.stdout + where.stderr
    version = run("-m", "streampose", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"streampose {streampose.__version__}"
    helped = run("-m", "streampose", "--help")
    assert helped.returncode == 0 and "label" in helped.stdout and "train" in helped.stdout
