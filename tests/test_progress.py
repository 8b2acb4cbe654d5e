"""Progress with a total: the frames a command will see, from the counts containers declare."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios

import pytest

from conftest import transcode
from streampose import sources
from streampose.stream import stages


def test_the_total_is_the_frames_the_stages_yield(clip):
    specs = [str(clip("pose2sim-single-cam01")), str(clip("sports2d"))]  # 100 and 230 frames declared
    total = stages.frame_total(specs, stride=3, max_frames=50)
    assert total == 34 + 50  # frames 0, 3, ..., 99; then 50 of sports2d's 77
    seen = stages.frames(stages.videos(sources.refs(specs)), stride=3, max_frames=50, max_side=96)
    assert sum(1 for _ in seen) == total
    assert stages.frame_total(specs) == 330 and stages.frame_total(specs, max_videos=1) == 100


def test_folders_and_lists_are_summed_and_anything_unbounded_has_no_total(clip, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("pose2sim-single-cam01", "pose2sim-single-cam03"):
        shutil.copy(clip(name), folder / f"{name}.mp4")
    listed = tmp_path / "list.txt"
    listed.write_text(f"{folder}\n# a comment\n{clip('sports2d')}\n")
    assert stages.frame_total([str(folder)], stride=2) == 100
    assert stages.frame_total([f"@{listed}"], max_frames=120) == 100 + 100 + 120
    for unbounded in ("commons:tai chi", "pexels:dance", "https://example.org/a.mp4", f"@{listed}\n"):
        assert stages.frame_total([str(folder), unbounded.strip()]) == (None if ":" in unbounded else 630)
    assert stages.frame_total([str(tmp_path / "missing.mp4")]) is None  # the command reports it itself
    webm = tmp_path / "no-count.webm"  # WebM declares no frame count
    webm.write_bytes(transcode(clip("sports2d").read_bytes(), "webm", "libvpx-vp9", max_frames=5))
    assert stages.frame_total([str(webm)]) is None


@pytest.mark.slow
def test_label_on_a_terminal_shows_the_total_and_persons_per_second(clip):
    """On a terminal (a pty), the bar has its total, an ETA and both rates; piped, stderr stays clean."""
    cmd = [sys.executable, "-m", "streampose", "label", str(clip("pose2sim-single-cam01")), "--stride", "10",
           "--max-frames", "6", "--max-side", "320"]  # fmt: skip
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # tqdm draws nothing at 0x0
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=follower, timeout=120)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    text = shown.decode(errors="replace")
    assert done.returncode == 0, text
    assert "label: 100%" in text and "6/6 [" in text and "frame/s" in text and "persons/s" in text
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "6/6 [" not in piped.stderr and "persons/s]" not in piped.stderr and "labelled 6/6 frames" in piped.stderr
