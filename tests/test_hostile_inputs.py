"""Issue 23's crafted inputs, each through the real command line in a subprocess: bad options and
config values, huge config and list files, broken labels files, checkpoints and ONNX files, and
outputs that must not be written (a symlink, a device, a folder, a full or missing place). Every
one is exit status 2 with exactly one `error:` line and no traceback (`hostile.assert_one_error`)."""

from __future__ import annotations

import contextlib
import os
import queue
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings

import av
import numpy as np
import onnx
import pytest
import torch

from conftest import transcode
from hostile import (
    HEADER,
    assert_one_error,
    frame,
    memory_bomb,
    nan_student,
    person,
    run_cli,
    run_cli_peak,
    student_state,
    with_metadata,
    write_labels,
)
from streampose.model.checkpoint import save_checkpoint
from streampose.model.export import export_onnx
from streampose.stream.augment import AugmentConfig
from streampose.stream.buffer import BufferClosedError, RingBuffer
from streampose.stream.loader import BatchLoader


@pytest.fixture(scope="module")
def short_clip(sports2d, tmp_path_factory):
    """30 frames of a real clip at 320 px: enough for predict, quick to run."""
    path = tmp_path_factory.mktemp("clip") / "short.mp4"
    path.write_bytes(transcode(sports2d.read_bytes(), "mp4", "mpeg4"))
    return path


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "good.pt", **student_state())


@pytest.fixture(scope="module")
def good_onnx(good_checkpoint, tmp_path_factory):
    return export_onnx(str(good_checkpoint), tmp_path_factory.mktemp("onnx") / "good.onnx")


# -- config files and options --------------------------------------------------------------------


@pytest.mark.parametrize(
    "toml, words",
    [
        ("save_every = 0", "save_every must be a positive whole number"),
        ("log_every = 0", "log_every"),
        ("threads = -1", "threads"),
        ('device = "bogus"', "device must be auto, cpu, mps, cuda or cuda:N"),
        ("crop_size = 0", "crop_size"),
        ("batch_size = 0", "batch_size"),
        ("lr = nan", "lr must be a finite number > 0"),
        ("min_fill = 0", "min_fill"),
        ("buffer_gb = 0", "buffer_gb"),
        ("steps = -5", "steps"),
        ("producers = 500", "producers must be a whole number >= 1 and <= "),
        ("a = " + "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("[" + ".".join(["t"] * 5000) + "]", "nested too deeply"),
    ],
)
def test_a_bad_config_value_is_one_line(tmp_path, toml, words):
    config = tmp_path / "run.toml"
    config.write_text(toml + "\n")
    assert_one_error(run_cli("train", "--config", config, "--source", "x.mp4"), str(config), words)


def test_endless_config_list_and_labels_files_are_refused_without_reading_them(sports2d):
    assert_one_error(run_cli("train", "--config", "/dev/zero", timeout=60), "/dev/zero: too large for a config")
    assert_one_error(run_cli("label", "@/dev/zero", timeout=60), "/dev/zero: too large for a list file")
    proc = run_cli("view", "/dev/zero", "--video", sports2d, "--png", "/nonexistent/s.png", timeout=60)
    assert_one_error(proc, "/dev/zero: a line over 64 MiB is no labels record")


@pytest.mark.parametrize(
    "args, words",
    [
        (("label", "x.mp4", "--stride", "0"), "--stride: must be a positive whole number, not '0'"),
        (("label", "x.mp4", "--max-frames", "-1"), "--max-frames"),
        (("label", "x.mp4", "--max-side", "-5"), "--max-side"),
        (("label", "x.mp4", "--max-video-mb", "nan"), "--max-video-mb: must be a finite number > 0"),
        (("label", "x.mp4", "--max-video-mb", "inf"), "--max-video-mb"),
        (("train", "--source", "x.mp4", "--threads", "-1"), "--threads: must be a positive whole number or auto"),
        (("eval", "x.mp4", "--onnx", "s.onnx", "--device", "bogus"), "--device"),
    ],
)
def test_a_bad_option_value_is_one_line(args, words):
    assert_one_error(run_cli(*args), words)


# -- labels files (view) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "records, header, words",
    [
        ((), HEADER, "holds no labelled frames"),
        ({"frame": frame(persons=[person(joints2d=[[float("nan"), 1.0]] * 33)])}, HEADER, "joints2d must be finite"),
        ({"frame": frame(persons=[person(joints3d=[[float("inf"), 0, 0]] * 33)])}, HEADER, "joints3d must be finite"),
        ({"frame": frame(persons=[person(joints=1)])}, HEADER, "shaped (33,"),
        ({"frame": frame(persons=[person(track_id=1.5)])}, HEADER, "track_id must be a whole number"),
        ({"frame": frame(persons=[person(track_id="7")])}, HEADER, "track_id"),
        ({"frame": frame(index=[3])}, HEADER, "index must be a whole number"),
        ({"frame": frame(source=["a"])}, HEADER, "source must be a string"),
        ({"frame": frame(persons=[person(box=[1, 2])])}, HEADER, "box must be shaped (4,)"),
        ({"frame": frame()}, HEADER | {"skeleton": "nope"}, "names no known skeleton"),
        ({"frame": frame()}, {k: v for k, v in HEADER.items() if k != "skeleton"}, "names no known skeleton"),
        ({"frame": frame(persons=[person(box=[[[[[[[[1]]]]]]]] * 4)])}, HEADER, "box"),
    ],
)
def test_a_crafted_labels_file_is_one_line(tmp_path, sports2d, records, header, words):
    labels = write_labels(tmp_path / "labels.jsonl", *([records] if records else []), header=header)
    proc = run_cli("view", labels, "--video", sports2d, "--png", tmp_path / "sheet.png")
    assert_one_error(proc, str(labels), words)


def test_a_deeply_nested_labels_record_is_one_line(tmp_path, sports2d):
    labels = write_labels(tmp_path / "labels.jsonl")
    with labels.open("a") as f:
        f.write('{"frame": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert_one_error(run_cli("view", labels, "--video", sports2d, "--png", tmp_path / "s.png"), "nested too deeply")


# -- checkpoints and ONNX files ------------------------------------------------------------------


def _config(**change) -> dict:
    return student_state()["student"] | change


@pytest.mark.parametrize(
    "override, words",
    [
        ({"student": _config(neck=128)}, "the weights disagree with the student config"),
        ({"student": _config(extra=1)}, "unknown extra"),
        ({"student": _config(stem="16")}, "stem must be a whole number"),
        ({"student": _config(neck=30000, head=30000)}, "neck must be a whole number from 1 to 4096"),
        ({"skeleton": ["blazepose33"]}, "the skeleton must be a name"),
    ],
)
def test_a_crafted_checkpoint_is_refused_before_it_is_built(tmp_path, override, words):
    ckpt = save_checkpoint(tmp_path / "crafted.pt", **student_state(**override))
    proc, peak_gb = run_cli_peak("export", "--checkpoint", ckpt, "--onnx", tmp_path / "s.onnx")
    assert_one_error(proc, str(ckpt), words)
    assert peak_gb < 1.5  # neck = head = 30000 took 3.9 GB and 15 s before its traceback
    assert not (tmp_path / "s.onnx").exists()


def test_predict_refuses_a_checkpoint_whose_config_disagrees_with_its_weights(tmp_path, short_clip):
    ckpt = save_checkpoint(tmp_path / "crafted.pt", **student_state(student=_config(head=256)))
    assert_one_error(run_cli("predict", short_clip, "--checkpoint", ckpt, "--json"), "disagree")


@pytest.mark.parametrize(
    "props, words",
    [
        ({"crop_size": "40000"}, "crop_size must be a whole number >= 32 and <= 1024, a multiple of 32, not 40000"),
        ({"crop_size": "abc"}, "metadata is not usable"),
        ({"mean": '{"a": 1}'}, "metadata is not usable"),
        ({"joints": "5"}, "joints disagree"),
        ({"mean_pose": "[[NaN, 0, 0]]"}, "mean_pose"),
    ],
)
def test_crafted_onnx_metadata_is_refused(tmp_path, short_clip, good_onnx, props, words):
    crafted = tmp_path / "crafted.onnx"
    onnx.save(with_metadata(onnx.load(str(good_onnx)), **props), str(crafted))
    proc, peak_gb = run_cli_peak("predict", short_clip, "--onnx", crafted, "--json")
    assert_one_error(proc, str(crafted), words)
    assert peak_gb < 1.5  # crop_size = 40000 was killed at 6 GB


def test_an_onnx_that_allocates_without_bound_is_stopped_at_the_arenas_cap(tmp_path, short_clip, good_onnx):
    meta = {p.key: p.value for p in onnx.load(str(good_onnx)).metadata_props}
    crafted = tmp_path / "bomb.onnx"
    onnx.save(memory_bomb(meta), str(crafted))  # an 8 GB tensor at run time
    proc, peak_gb = run_cli_peak("predict", short_clip, "--onnx", crafted, "--json")
    assert_one_error(proc, str(crafted), "onnxruntime cannot run it", "requested bytes of 8589934592")
    assert peak_gb < 1.5


def test_an_onnx_without_a_students_outputs_is_refused(tmp_path, short_clip, good_onnx):
    model = onnx.load(str(good_onnx))
    model.graph.output[0].name = "renamed"
    for node in model.graph.node:
        node.output[:] = ["renamed" if name == "joints3d" else name for name in node.output]
    crafted = tmp_path / "renamed.onnx"
    onnx.save(model, str(crafted))
    assert_one_error(run_cli("predict", short_clip, "--onnx", crafted, "--json"), "no output joints3d")


def test_nan_outputs_stop_predict_and_eval_with_one_line(tmp_path, sports2d, short_clip, good_onnx):
    meta = {p.key: p.value for p in onnx.load(str(good_onnx)).metadata_props}
    crafted = tmp_path / "nan.onnx"
    onnx.save(nan_student(meta), str(crafted))
    poses = tmp_path / "poses.jsonl"
    assert_one_error(run_cli("predict", short_clip, "--onnx", crafted, "--poses", poses), "not finite")
    assert not poses.exists()  # no partial file

    weights = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in
               student_state()["model"].items()}  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "nan.pt", **student_state(model=weights))
    proc = run_cli("eval", sports2d, "--checkpoint", ckpt, "--teacher", "mediapipe", "--max-frames", "5")
    assert "LinAlgError" not in proc.stderr
    assert_one_error(proc, "nan.pt", "not finite")


# -- outputs -------------------------------------------------------------------------------------


def _specials(tmp_path):
    """Outputs that are not regular files, as (path, kind); a character device only where we may make one."""
    link = tmp_path / "link.jsonl"
    link.symlink_to("/proc/self/fd/1")
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    found = [(link, "symlink"), (fifo, "FIFO"), (folder, "folder")]
    if os.geteuid() == 0:  # a copy of /dev/null in the test's folder (replacing it harms nothing)
        device = tmp_path / "null.jsonl"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        found.append((device, "character device"))
    return found


def test_predict_never_replaces_anything_but_a_regular_file(tmp_path, short_clip, good_checkpoint):
    for path, kind in _specials(tmp_path):
        before = os.lstat(path)
        proc = run_cli("predict", short_clip, "--checkpoint", good_checkpoint, "--poses", path)
        assert_one_error(proc, str(path), f"is a {kind}")
        after = os.lstat(path)
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


def test_predict_poses_dash_streams_to_stdout(short_clip, sports2d, good_checkpoint):
    proc = run_cli("predict", short_clip, "--checkpoint", good_checkpoint, "--poses", "-")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 30 and all(line.startswith('{"frame": ') for line in lines)
    # 230 frames: the reader is gone long before the last is written
    cmd = [sys.executable, "-m", "streampose", "predict", sports2d, "--checkpoint", good_checkpoint, "--poses", "-",
           "--max-side", "160"]  # fmt: skip
    reader_gone = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader_gone.stdout.readline()
    reader_gone.stdout.close()  # as `| head -1` does
    assert reader_gone.wait(timeout=300) == 141  # as SIGPIPE ends other tools
    assert "Traceback" not in reader_gone.stderr.read()


def test_label_save_naming_a_folder_or_a_link_is_one_line(tmp_path, short_clip):
    link, _, folder = _specials(tmp_path)[:3]
    for path, kind in (link, folder):
        proc = run_cli("label", short_clip, "--teacher", "mediapipe", "--max-frames", "2", "--save", path)
        assert_one_error(proc, str(path), kind)


def test_unwritable_places_are_one_line(tmp_path, short_clip, good_checkpoint):
    taken = tmp_path / "taken"
    taken.write_text("a file, not a run folder")
    proc = run_cli("train", "--source", short_clip, "--out", taken, "--steps", "1", "--teacher", "mediapipe")
    assert_one_error(proc, str(taken), "File exists")
    under_a_file = taken / "student.onnx"
    assert_one_error(run_cli("export", "--checkpoint", good_checkpoint, "--onnx", under_a_file), str(under_a_file))
    nowhere = "/proc/streampose-test/poses.jsonl"  # /proc takes no new folders, root or not
    proc = run_cli("predict", short_clip, "--checkpoint", good_checkpoint, "--poses", nowhere)
    assert_one_error(proc, nowhere, "cannot write")


def _small_disk(limit: int):
    """For a child: files may grow to `limit` bytes, and a write past it fails with EFBIG (as a
    full disk fails with ENOSPC) instead of killing the process."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_keeps_the_good_file_and_is_one_line(tmp_path, short_clip, good_checkpoint):
    onnx_path = tmp_path / "student.onnx"
    assert run_cli("export", "--checkpoint", good_checkpoint, "--onnx", onnx_path).returncode == 0
    good = onnx_path.read_bytes()
    proc = run_cli("export", "--checkpoint", good_checkpoint, "--onnx", onnx_path, preexec_fn=_small_disk(100_000))
    assert_one_error(proc, str(onnx_path), "File too large")
    assert onnx_path.read_bytes() == good
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind

    labels = tmp_path / "labels.jsonl"  # written as it grows: the first record past the limit fails
    proc = run_cli(
        "label", short_clip, "--teacher", "mediapipe", "--max-frames", "3", "--save", labels,
        preexec_fn=_small_disk(300),
    )  # fmt: skip
    assert_one_error(proc, str(labels), "File too large")


def test_a_checkpoint_on_a_full_disk_is_an_os_error_not_a_torch_traceback(tmp_path, good_checkpoint):
    """torch.save's zip writer turned a failed write into `RuntimeError: [enforce fail at inline_container.cc]`."""
    script = (
        "import sys; from streampose.model.checkpoint import save_checkpoint, load_checkpoint; "
        "from streampose.errors import StreamPoseError\n"
        f"ckpt = load_checkpoint({str(good_checkpoint)!r})\n"
        f"try: save_checkpoint({str(tmp_path / 'last.pt')!r}, **ckpt)\n"
        "except StreamPoseError as e: print(e); sys.exit(2)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, preexec_fn=_small_disk(50_000)
    )
    assert proc.returncode == 2 and "last.pt: cannot write (File too large)" in proc.stdout, proc.stderr[-2000:]


# -- a run that gets nothing ---------------------------------------------------------------------


@pytest.mark.slow
def test_train_on_a_video_of_nobody_says_why_it_waits(tmp_path):
    """Before: `train` on a video with nobody in it waited forever without a word."""
    video = tmp_path / "nobody.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(30):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((120, 160, 3), 60 + i, np.uint8), "rgb24")))
        out.mux(stream.encode())
    cmd = [sys.executable, "-m", "streampose", "train", "--source", video, "--teacher", "mediapipe", "--student",
           "micro", "--out", tmp_path / "run", "--steps", "5", "--min-fill", "8", "--producers", "1"]  # fmt: skip
    proc = subprocess.Popen(list(map(str, cmd)), stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # stderr read on a thread: a run that says nothing must not block the test
        for text in proc.stderr:
            lines.put(text)

    threading.Thread(target=pump, daemon=True).start()
    start, line = time.monotonic(), ""
    try:
        while "warning:" not in line and time.monotonic() - start < 90:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=1)
        waited = time.monotonic() - start
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    assert "no batch to train on since" in line and "waiting for min_fill: 0 of 8 samples in" in line, line
    assert "put 0 samples in (none yet)" in line and 25 < waited < 90


def test_a_buffer_that_gets_nothing_says_what_it_waits_for_and_since_when():
    buffer = RingBuffer(33, 32, budget_bytes=2_000_000, min_fill=4)
    buffer.note_frames(25)  # frames decoded, nobody in them
    loader = BatchLoader(buffer, 2, list(range(33)), AugmentConfig.off(), notice_s=(0.3, 0.3))
    threading.Timer(1.0, buffer.close).start()  # then nothing more will come
    try:
        with warnings.catch_warnings(record=True) as caught, pytest.raises(BufferClosedError):
            warnings.simplefilter("always")
            loader.next()
    finally:
        loader.close()
    messages = [str(w.message) for w in caught]
    assert len(messages) >= 2, messages
    assert "waiting for min_fill: 0 of 4 samples in" in messages[0] and "decoded 25 frames" in messages[0]
    assert "since " in messages[0] and "none yet" in messages[0]
