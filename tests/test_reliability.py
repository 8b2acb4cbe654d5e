"""Promises held under hostile input and real schedulers (issue 23): signals, deadlines, memory, URLs.

Real processes, real loopback servers (fake_providers.py, 127.0.0.1 only), real decoding. Peak
memory is the child's own (`ru_maxrss` of the process that ran `streampose`).
"""

from __future__ import annotations

import contextlib
import io
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from fake_providers import TRICKLE_S
from streampose.cli import main
from streampose.errors import SourceError
from streampose.model.checkpoint import load_checkpoint
from streampose.sources.http import Http
from test_train import FAST_RUN

pytest_plugins = ["fake_providers"]  # the server and its fixtures

STREAMPOSE = [sys.executable, "-m", "streampose"]
# Runs the command given as its arguments and prints that child's peak RSS (kB) as its last stderr line.
_MEASURED = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def measured(*args: object, timeout: float = 180) -> tuple[int, list[str], float]:
    """`streampose ARGS` in a process of its own: exit status, stderr lines, peak RSS in GB."""
    run = subprocess.run(
        [sys.executable, "-c", _MEASURED, *STREAMPOSE, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    *lines, peak_kb = run.stderr.strip().splitlines()
    return run.returncode, lines, int(peak_kb) / 2**20


def one_error_line(lines: list[str], *fragments: str) -> None:
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def left_running(pids: list[int], grace: float) -> list[str]:
    """The command lines of those of `pids` still running after `grace` seconds."""
    deadline = time.monotonic() + grace
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in pids if running(pid)]


def wait_for(condition, proc: subprocess.Popen, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.1)


@contextlib.contextmanager
def started(cmd: list[str]) -> Iterator[subprocess.Popen]:
    """`cmd` running, its stderr captured; killed on the way out if it is still running."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def signalled(proc: subprocess.Popen, signum: int, timeout: float = 60) -> tuple[str, float]:
    """Send `signum` and wait for the end: the process's stderr, and seconds from the signal to its exit."""
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=timeout)
    return err, time.monotonic() - sent


# -- signals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "signum"),
    [((503, {"Retry-After": 3000}), signal.SIGINT), ("trickle", signal.SIGTERM)],
    ids=["ctrl-c-in-a-3000-s-retry-after", "sigterm-in-a-trickled-read"],
)
def test_a_signal_ends_a_network_wait_within_two_seconds(fake, fault, signum):
    fake.faults["waiting.mp4"] = [fault]
    cmd = [*STREAMPOSE, "label", f"{fake.url}/files/waiting.mp4", "--teacher", "mediapipe"]
    with started(cmd) as proc:
        wait_for(lambda: fake.requests("/files/waiting.mp4"), proc, "the download", 60)
        time.sleep(1.0)  # well inside the wait
        err, seconds = signalled(proc, signum, timeout=30)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert seconds < 2, f"{seconds:.1f} s from the signal to the exit"
    assert "Traceback" not in err and "interrupted" in err, err[-2000:]


@pytest.mark.slow
def test_sigterm_during_train_saves_ends_every_producer_and_resume_goes_on(sports2d, tmp_path):
    """SIGTERM during `train --producers 2`: last.pt saved, exit 143 within 5 s, no process left,
    no traceback; `--resume` goes on from it."""
    out = tmp_path / "run"
    cmd = [*STREAMPOSE, "train", "--source", str(sports2d), *FAST_RUN, "--producers", "2", "--out", str(out)]
    with started(cmd + ["--steps", "100000"]) as proc:
        wait_for((out / "last.pt").exists, proc, "a first save")
        producers = children(proc.pid)
        assert len(producers) >= 2, producers
        err, seconds = signalled(proc, signal.SIGTERM)
    assert proc.returncode == 143 and "interrupted, saved" in err, err[-2000:]
    assert seconds < 5, f"{seconds:.1f} s from SIGTERM to the exit"
    assert "Traceback" not in err, err[-2000:]
    assert not left_running(producers, 1), "processes left running after the trainer exited"
    saved = load_checkpoint(out / "last.pt")["step"]
    resumed = subprocess.run(cmd + ["--steps", str(saved + 5), "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(out / "last.pt")["step"] == saved + 5


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_producers_waiting_on_the_network_end_with_their_trainer(fake, tmp_path, signum):
    """Both producer processes sleep out a 3000 s Retry-After: SIGTERM to the trainer alone (as
    Kubernetes sends it) cuts their waits short, exit 143 within 5 s; after a SIGKILL the kernel
    ends them (PR_SET_PDEATHSIG). Either way no process is left."""
    urls = [f"{fake.url}/files/{name}.mp4" for name in ("stalla", "stallb")]
    for name in ("stalla.mp4", "stallb.mp4"):
        fake.faults[name] = [(503, {"Retry-After": 3000})]
    cmd = [*STREAMPOSE, "train", "--source", *urls, *FAST_RUN, "--producers", "2", "--out", str(tmp_path / "run")]
    with started(cmd + ["--steps", "10"]) as proc:
        wait_for(lambda: len(fake.requests("/files/stall")) >= 2, proc, "both downloads")
        time.sleep(1.0)  # inside the waits
        producers = children(proc.pid)
        assert len(producers) >= 2, producers
        err, seconds = signalled(proc, signum)
    assert not left_running(producers, 3), "processes outlived their trainer"
    if signum == signal.SIGTERM:
        assert proc.returncode == 143 and seconds < 5, (proc.returncode, seconds, err[-2000:])
        assert "Traceback" not in err, err[-2000:]


# -- deadlines -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["download", "search"])
def test_a_trickling_server_is_given_up_at_the_deadline(fake, waits, kind):
    """A byte every TRICKLE_S never trips the read timeout; the schedule does (here 1 s of grace, then
    20 MB/s: given up about a second in, naming the server, where the cap's deadline is 2 s)."""
    fake.faults["trickle.mp4"] = ["trickle"]
    url = f"{fake.url}/files/trickle.mp4"
    started = time.monotonic()
    slow = r"trickle\.mp4: the server sends slower than 20000 kB/s"
    with Http(sleep=waits, min_rate=20e6, grace=1.0) as client, pytest.raises(SourceError, match=slow):
        if kind == "download":
            client.download(url, what=url, max_bytes=20_000_000)
        else:
            client.request("GET", url, what=url)  # an API answer: capped at MAX_RESPONSE_BYTES
    assert time.monotonic() - started < 2 + 2 * TRICKLE_S + 1


# -- memory ----------------------------------------------------------------------------------------


def canvas_gif(side: int = 16000, frames: int = 20) -> bytes:
    """A GIF of `frames` 8 x 8 images on a `side` x `side` canvas: a few kB that decode to GBs."""
    images = []
    for i in range(frames):
        image = Image.new("P", (8, 8), 0)
        image.putpalette([0, 0, 0, 255, 255, 255])
        image.putpixel((i % 8, i // 8 % 8), 1)
        images.append(image)
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=40)
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", side, side)  # the logical screen: the canvas every frame is drawn on
    return bytes(data)


def many_streams(streams: int = 40, side: int = 4000) -> bytes:
    """An MKV of `streams` copies of one two-frame `side` x `side` H.264 stream (a few MB)."""
    one = io.BytesIO()
    with av.open(one, "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((side, side, 3), 60 * i, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    source = av.open(io.BytesIO(one.getvalue()))
    packets = [p for p in source.demux(source.streams.video[0]) if p.dts is not None]
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        copies = [out.add_stream_from_template(source.streams.video[0]) for _ in range(streams)]
        for packet in packets:
            for copy in copies:
                packet.stream = copy
                out.mux(packet)
    return buf.getvalue()


def test_a_tiny_gif_with_a_16000_px_canvas_is_refused_in_little_memory(tmp_path):
    path = tmp_path / "canvas.mp4"  # renamed: the container is sniffed, not trusted from the name
    path.write_bytes(canvas_gif())
    code, lines, peak_gb = measured("label", path, "--max-frames", "2", "--teacher", "mediapipe")
    assert code == 2, lines
    one_error_line(lines, "canvas.mp4", "16000 x 16000", "megapixels")
    assert peak_gb < 2, f"peak RSS {peak_gb:.1f} GB"


def test_a_file_of_many_huge_streams_opens_in_little_memory(tmp_path):
    path = tmp_path / "streams.mkv"
    path.write_bytes(many_streams())
    code, lines, peak_gb = measured("label", path, "--max-frames", "1", "--teacher", "mediapipe")
    assert code == 0, lines
    assert peak_gb < 2, f"peak RSS {peak_gb:.1f} GB"


def test_a_buffer_over_the_memory_available_is_one_error_line(sports2d, tmp_path):
    args = ["train", "--source", sports2d, "--teacher", "mediapipe", "--steps", "1", "--out", tmp_path / "run"]
    code, lines, peak_gb = measured(*args, "--buffer-gb", "1e6")
    assert code == 2, lines
    one_error_line(lines, "1e+06 GB", "--buffer-gb", "memory available")
    assert peak_gb < 2, f"peak RSS {peak_gb:.1f} GB"


# -- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "faults", "message"),
    [
        ("loop.mp4", ["loop"] * 30, "loop.mp4: too many redirects"),
        ("gzip.mp4", ["bad-gzip"], "gzip.mp4: the body does not decode"),
        (None, [], "http://[::1/x: not a valid URL"),
    ],
    ids=["redirect-loop", "bad-gzip", "invalid-url"],
)
def test_a_broken_url_is_one_error_line(fake, capsys, name, faults, message):
    fake.faults[name] = faults
    url = f"{fake.url}/files/{name}" if name else "http://[::1/x"
    code = main(["label", url, "--teacher", "mediapipe"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    one_error_line(lines, message)
