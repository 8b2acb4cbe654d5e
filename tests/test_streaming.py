"""Producers feeding the ring buffer from real clips with the real teacher, and the disk promise."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from functools import partial
from pathlib import Path

import pytest

from streampose.errors import ProducerError, StreamPoseError
from streampose.sources import refs
from streampose.sources.provenance import PendingEntries
from streampose.store import cache_dir
from streampose.stream.augment import AugmentConfig
from streampose.stream.buffer import RingBuffer
from streampose.stream.loader import BatchLoader
from streampose.stream.producers import ProducerConfig, ProducerPool, auto_producers, producer_count, teacher_factory
from streampose.teachers import get_teacher
from streampose.teachers.mediapipe import MediaPipeTeacher

SKELETON = MediaPipeTeacher.skeleton
CONFIG = ProducerConfig(stride=3, max_frames=15, max_side=640, crop_size=96)


def make_buffer(**kw) -> RingBuffer:
    return RingBuffer(SKELETON.num_joints, CONFIG.crop_size, budget_bytes=20_000_000, **kw)


@pytest.mark.slow
def test_producers_fill_buffer_and_skip_a_corrupt_video(clip, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000))
    specs = [str(clip("pose2sim-single-cam01")), str(bad), str(clip("sports2d"))]
    buffer = make_buffer(min_fill=1)
    with pytest.warns(UserWarning, match="corrupt.mp4"):
        pool = ProducerPool(refs(specs), buffer, lambda: get_teacher("mediapipe"), CONFIG, workers=2).start()
        batch = buffer.sample(8, timeout=120)
        while pool.alive:
            pool._threads[0].join(0.5)
    pool.stop()
    assert not pool.alive
    stats = buffer.stats()
    assert buffer.closed, "exhausted sources close the buffer"
    assert stats["inserted"] >= 20, stats  # both good clips: 15 frames each at most, one person per frame
    assert stats["inserted"] <= 30
    assert len(pool.used_videos) == 2 and not any("corrupt" in v for v in pool.used_videos)
    assert batch["image"].shape == (8, 96, 96, 3) and batch["image"].std() > 10


class _FailingTeacher:
    """The real teacher, failing part-way as a broken model or driver would."""

    def __init__(self, fail_after: int) -> None:
        self._inner = get_teacher("mediapipe")
        self.name, self.skeleton = self._inner.name, self._inner.skeleton
        self._left = fail_after

    def start_video(self, size):
        self._inner.start_video(size)

    def label(self, frames):
        self._left -= len(frames)
        if self._left < 0:
            raise RuntimeError("teacher crashed (simulated CUDA error)")
        return self._inner.label(frames)

    def close(self):
        self._inner.close()


@pytest.mark.slow
@pytest.mark.parametrize("processes", [False, True])
def test_a_failing_producer_makes_the_consumer_raise(clip, processes):
    buffer = make_buffer(min_fill=10_000)  # the consumer would otherwise wait forever
    config = ProducerConfig(stride=1, max_frames=40, max_side=480, crop_size=96)
    stream = refs([str(clip("sports2d"))], loop=True)
    pool = ProducerPool(stream, buffer, partial(_FailingTeacher, 16), config, processes=processes).start()
    loader = BatchLoader(buffer, 4, SKELETON.flip, AugmentConfig())
    with pytest.raises(ProducerError, match="simulated CUDA error"):
        loader.next()
    loader.close()
    pool.stop()
    assert not pool.alive


@pytest.mark.slow
def test_stop_joins_endless_producers(clip):
    buffer = make_buffer()
    config = ProducerConfig(stride=2, max_side=480, crop_size=96)
    pool = ProducerPool(refs([str(clip("sports2d"))], loop=True), buffer, lambda: get_teacher("mediapipe"), config)
    pool.start()
    buffer.sample(2, timeout=120)
    before = threading.active_count()
    pool.stop(timeout=30)
    assert not pool.alive
    assert threading.active_count() < before


@pytest.mark.slow
def test_producer_processes_fill_the_buffer_record_videos_and_skip_a_corrupt_one(clip, tmp_path, capfd):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000))
    specs = [str(clip("pose2sim-single-cam01")), str(bad), str(clip("sports2d"))]
    buffer = make_buffer(min_fill=1)
    recorded = PendingEntries()
    teacher = partial(get_teacher, "mediapipe")
    pool = ProducerPool(refs(specs), buffer, teacher, CONFIG, workers=2, provenance=recorded, processes=True).start()
    batch = buffer.sample(8, timeout=120)
    while pool.alive:
        pool._threads[0].join(0.5)
    pool.stop()
    assert "corrupt.mp4" in capfd.readouterr().err, "the child's warning reaches stderr"
    stats = buffer.stats()
    assert buffer.closed, "exhausted sources close the buffer"
    assert 20 <= stats["inserted"] <= 30, stats
    assert len(pool.used_videos) == 2 and not any("corrupt" in v for v in pool.used_videos)
    entries = recorded.drain()
    assert sorted(e["frames"] for e in entries) == [15, 15]
    assert all(e["bytes"] > 100_000 for e in entries), entries
    assert batch["image"].shape == (8, 96, 96, 3) and batch["image"].std() > 10


@pytest.mark.slow
def test_stop_ends_endless_producer_processes_and_records_their_videos(clip):
    buffer = make_buffer()
    recorded = PendingEntries()
    config = ProducerConfig(stride=2, max_side=480, crop_size=96)
    stream = refs([str(clip("sports2d"))], loop=True)
    pool = ProducerPool(stream, buffer, partial(get_teacher, "mediapipe"), config, 2, recorded, processes=True)
    pool.start()
    buffer.sample(2, timeout=120)
    children = [c.process for c in pool._children]
    pool.stop(timeout=30)
    assert not pool.alive and len(children) == 2
    assert not any(p.is_alive() for p in children)
    assert recorded.drain(), "the videos in progress at the stop are recorded"


AUDIT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from audit import WriteAudit

    clip, out, teacher = sys.argv[1], sys.argv[2], sys.argv[3]
    payload = open(clip, "rb").read()
    from streampose.stream.augment import AugmentConfig
    from streampose.stream.buffer import RingBuffer
    from streampose.stream.loader import BatchLoader
    from streampose.stream.producers import ProducerConfig, ProducerPool
    from streampose.sources.provenance import ProvenanceLog
    from streampose.sources import refs
    from streampose.teachers import get_teacher, teacher_class
    from streampose.teachers.mediapipe import import_mediapipe

    # Libraries are imported before the audit starts: mediapipe's import probes TMPDIR (ctypes)
    # and creates matplotlib's config folders. Everything from the first byte fetched on is audited.
    import_mediapipe()
    home = os.path.expanduser("~")
    in_home = lambda: {os.path.join(d, f) for d, _, fs in os.walk(home) for f in fs}  # noqa: E731
    home_before = in_home()
    audit = WriteAudit([out]).start()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/clip.mp4"

    sk = teacher_class(teacher).skeleton
    buffer = RingBuffer(sk.num_joints, 128, budget_bytes=30_000_000, min_fill=16)
    config = ProducerConfig(stride=2, max_frames=40, max_side=640, crop_size=128)
    provenance = ProvenanceLog(os.path.join(out, "provenance.jsonl"))
    stream = refs([url], loop=True)
    pool = ProducerPool(stream, buffer, lambda: get_teacher(teacher), config, provenance=provenance).start()
    loader = BatchLoader(buffer, 32, sk.flip, AugmentConfig())
    draws = 0
    while draws < 320:
        draws += len(loader.next()["image"])
    loader.close()
    pool.stop()
    server.shutdown()
    violations = audit.stop()
    with open(os.path.join(out, "audit.json"), "w") as f:
        home_new = sorted(in_home() - home_before)  # native writes the audit hook cannot see
        masked = int((buffer.snapshot()["mask"].max(axis=(1, 2)) > 127).sum())  # composited while audited
        json.dump({"draws": draws, "violations": violations, "stats": buffer.stats(), "home_new": home_new,
                   "masked": masked}, f)
    """
)


def with_tests_on_path() -> dict[str, str]:
    """The environment for a subprocess that imports the test-only write audit (tests/audit.py)."""
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


@pytest.mark.slow
@pytest.mark.parametrize("teacher", ["topdown", "mediapipe"])
def test_streaming_writes_nothing_outside_the_output_folder(sports2d, tmp_path, teacher):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmp.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {**with_tests_on_path(), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(home)}
    env["STREAMPOSE_CACHE"] = str(cache_dir())  # the models and clips, read from the real cache
    result = subprocess.run(
        [sys.executable, "-c", AUDIT_SCRIPT, str(sports2d), str(out), teacher],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "audit.json").read_text())
    assert report["draws"] >= 320
    assert report["stats"]["inserted"] > 0
    assert (report["masked"] > 0) == (teacher == "topdown")  # silhouettes, and so background replacement
    assert report["violations"] == []
    assert report["home_new"] == [], "native code wrote into the home folder"
    provenance = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    assert len(provenance) == 1 and provenance[0]["id"].endswith("/clip.mp4") and 0 < provenance[0]["frames"] <= 40
    assert list(tmp.iterdir()) == [], "native code left files in TMPDIR"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out", "tmp"], "files appeared in the working folder"


def test_audit_catches_a_write(tmp_path):
    """The audit itself must be able to fail: a process that writes a video file is caught."""
    script = textwrap.dedent(
        """
        import sys
        from audit import WriteAudit
        audit = WriteAudit([sys.argv[1]]).start()
        open(sys.argv[2], "wb").write(b"frame bytes")
        print(audit.stop())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "allowed"), str(tmp_path / "leak.mp4")],
        env=with_tests_on_path(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "leak.mp4" in result.stdout


def test_producer_count_follows_the_cores_the_trainer_leaves_free():
    assert auto_producers("cpu", cores=2) == 1 and auto_producers("cpu", cores=16) == 8
    assert auto_producers("cuda", cores=2) == 1 and auto_producers("cuda:1", cores=16) == 15
    assert auto_producers("cpu", cores=1) == auto_producers("cuda", cores=1) == 1
    assert producer_count("3", "cpu") == 3 and producer_count(2, "cuda") == 2
    assert producer_count("auto", "cpu") == auto_producers("cpu")
    for bad in ("0", "two", -1):
        with pytest.raises(StreamPoseError, match="--producers"):
            producer_count(bad, "cpu")


def test_several_producers_share_the_cores_between_their_teachers():
    """15 producers on a 16-core GPU machine: each top-down teacher gets one core's threads, not 16
    (its detector and landmark model otherwise spread over every core, 15 times over)."""
    make = teacher_factory("topdown:heavy", workers=15, cores=16)
    assert make.args == ("topdown:heavy",) and make.keywords == {"threads": 1}
    assert teacher_factory("topdown", workers=2, cores=8).keywords == {"threads": 4}
    assert teacher_factory("topdown", workers=1, cores=8).keywords == {}  # alone: every core
    assert teacher_factory("mediapipe", workers=4, cores=8).keywords == {}  # its graph sets its own
    assert pickle.loads(pickle.dumps(make)).keywords == {"threads": 1}  # producer processes get it
