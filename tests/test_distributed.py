"""torchrun / DDP on CPU with gloo: two ranks on real clips, sharding, resume, a killed rank."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from streampose.engine.distributed import shard_of
from streampose.sources import local_ref

CLIPS = ["pose2sim-single-cam01", "pose2sim-single-cam02", "pose2sim-single-cam03"]
TRAIN_ARGS = [
    "--student", "micro", "--crop-size", "64", "--batch-size", "16", "--min-fill", "32", "--max-frames", "12",
    "--stride", "2", "--max-side", "480", "--log-every", "5",
]  # fmt: skip
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def clip_paths(clip) -> list[str]:
    paths = [str(clip(name)) for name in CLIPS]
    # The hash split must give each of two ranks at least one clip, or the run would refuse to start.
    assert {shard_of(local_ref(p), 2) for p in paths} == {0, 1}
    return paths


def sources_args(paths: list[str]) -> list[str]:
    return [arg for p in paths for arg in ("--source", p)]


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_ranks_train_in_sync_on_disjoint_shards_and_resume_on_one(clip_paths, tmp_path):
    out = tmp_path / "run"
    cmd = TORCHRUN + ["--standalone", "--nproc_per_node=2", "-m", "streampose", "train"]
    cmd += sources_args(clip_paths) + TRAIN_ARGS + ["--steps", "20", "--out", str(out), "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["world_size"] == 2 and summary["step"] == 20
    assert summary["ranks_in_sync"], "the two ranks must end with identical parameters"
    assert summary["samples_per_s"] > 0

    # Only rank 0 wrote, and it gathered both ranks' provenance: disjoint shares covering the input.
    entries = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    by_rank = {r: {e["id"] for e in entries if e["rank"] == r} for r in (0, 1)}
    assert by_rank[0] and by_rank[1] and not by_rank[0] & by_rank[1]
    assert by_rank[0] | by_rank[1] == {str(Path(p).resolve()) for p in clip_paths}
    for rank, ids in by_rank.items():
        assert all(shard_of(local_ref(i), 2) == rank for i in ids)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [5, 10, 15, 20] and all(m["world_size"] == 2 for m in metrics)
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["step"] == 20 and set(ckpt["used_videos"]) == by_rank[0] | by_rank[1]

    # Resume with a different world size: one process continues the step count and the used videos.
    cmd = [sys.executable, "-m", "streampose", "train"] + sources_args(clip_paths) + TRAIN_ARGS
    cmd += ["--steps", "30", "--out", str(out), "--resume", "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["world_size"] == 1 and summary["step"] == 30
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["step"] == 30 and set(ckpt["used_videos"]) == by_rank[0] | by_rank[1]
    assert len((out / "provenance.jsonl").read_text().splitlines()) == len(entries), "no video recorded twice"


@pytest.mark.slow
def test_rank_0_validates_while_the_other_rank_waits_in_step(clip_paths, clip, tmp_path):
    out = tmp_path / "run"
    cmd = TORCHRUN + ["--standalone", "--nproc_per_node=2", "-m", "streampose", "train"]
    cmd += sources_args(clip_paths) + TRAIN_ARGS + ["--steps", "10", "--out", str(out), "--json"]
    cmd += ["--val", str(clip("pose2sim-multi-cam04")), "--val-every", "5", "--val-stride", "4"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["world_size"] == 2 and summary["step"] == 10 and summary["ranks_in_sync"]
    assert result.stderr.count("validation: ") == 1, "only rank 0 labels the validation set"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "val_pa_mpjpe_mm" in m] == [5, 10]
    assert torch.load(out / "best.pt", weights_only=False)["step"] in (5, 10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_killed_rank_does_not_leave_the_other_hanging(clip_paths, tmp_path):
    out = tmp_path / "run"
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
            "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1",
        }  # fmt: skip
        cmd = [sys.executable, "-m", "streampose", "train"] + sources_args(clip_paths) + TRAIN_ARGS
        cmd += ["--steps", "100000", "--out", str(out), "--dist-timeout", "60"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 240
        while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
            assert time.monotonic() < deadline, "training never started"
            assert procs[0].poll() is None, procs[0].communicate()[1][-2000:]
            time.sleep(0.5)
        os.kill(procs[1].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = procs[0].communicate(timeout=120)  # bounded: the survivor must not hang
        assert time.monotonic() - killed_at < 120
        assert procs[0].returncode == 1
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert lines and "rank 0 of 2 stopped" in lines[-1] and "Traceback" not in err
        assert torch.load(out / "last.pt", weights_only=False)["step"] > 0, "rank 0 saved before exiting"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
