"""The benchmark runs end to end (`make bench-quick`'s code path, smaller budget) and writes every figure.

Why no thresholds: the machines running the tests have 2 cores shared with other jobs, where a
step can slow down 3-8x for reasons unrelated to the code; a speed assertion would be a flaky
test. What must not rot is the plumbing: every section runs, and every figure has a finite
numerator and denominator, so `make bench` keeps working as the code under it changes.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7")


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@pytest.mark.slow
def test_smoke_benchmark_writes_every_figure(clip, tmp_path):
    for name in ("sports2d", "pose2sim-single-cam01", "pose2sim-multi-cam01"):
        clip(name)  # fetched here, so a machine without a registry skips
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| figure |" in proc.stdout  # the table is printed

    results = json.loads(out.read_text())
    assert results["meta"]["budget"] == "smoke"
    for key in SECTIONS:
        section = results[key]
        assert "error" not in section, (key, section.get("error"))
        assert _finite(section["numerator"]["value"]), (key, section["numerator"])
        assert section["numerator"]["unit"] and section["denominator"]["unit"]
        if key == "P3" and shutil.which("ffmpeg") is None:
            assert "ffmpeg" in section["skipped"]  # no baseline to divide by: said so, PyAV still measured
            continue
        assert _finite(section["denominator"]["value"]), (key, section["denominator"])
        # The figure: a ratio to a baseline, or a value (P2: the share of steps that waited).
        figure = section["value"] if key == "P2" else section["ratio"]
        assert _finite(figure), (key, figure)
        assert section["goal"] and "met" in section, key
    assert _finite(results["P2"]["details"]["wait_fraction_live"])
    assert _finite(results["P5"]["details"]["slope_mb_per_min"])
    assert _finite(results["P5"]["details"]["peak_minus_buffer_mb"])
    assert not list(tmp_path.glob("*.mp4"))  # no video landed in the working folder
