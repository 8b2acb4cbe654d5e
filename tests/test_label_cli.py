"""`streampose label` and `view` on real clips with the real MediaPipe teacher."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streampose.cli import main
from streampose.engine.label import label
from streampose.errors import DecodeError, SourceError, StreamPoseError
from streampose.poses.labels import FrameLabels, LabelsWriter, PersonLabel, load_labels
from streampose.poses.skeletons import get_skeleton
from streampose.sources import Video
from streampose.stream import stages


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_label_sports2d_finds_a_person_with_plausible_3d(sports2d, tmp_path, capsys):
    labels_path = tmp_path / "labels.jsonl"
    code, out, err = run(capsys, "label", sports2d, "--save", labels_path, "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == 230 and summary["videos"] == 1
    assert summary["labelled_frames"] >= 0.9 * summary["frames"]
    assert summary["skeleton"] == "blazepose33" and summary["joints"] == 33 and summary["teacher"] == "topdown"
    assert summary["seconds"] > 0

    header, frames = load_labels(labels_path)
    assert header["skeleton"] == "blazepose33" and len(frames) == 230
    sk = get_skeleton(header["skeleton"])
    persons = [p for f in frames for p in f.persons]
    j3d = np.stack([p.joints3d for p in persons])
    assert np.allclose(sk.root_of(j3d), 0, atol=1e-5), "3D must be root-relative"
    lengths = {}
    for side in ("left", "right"):
        for name, (a, b), lo, hi in [
            ("thigh", ("hip", "knee"), 0.3, 0.6),
            ("shin", ("knee", "ankle"), 0.3, 0.6),
            ("upper arm", ("shoulder", "elbow"), 0.2, 0.45),
        ]:
            d = np.linalg.norm(j3d[:, sk.index(f"{side}_{a}")] - j3d[:, sk.index(f"{side}_{b}")], axis=-1)
            lengths[f"{side} {name}"] = float(np.median(d))
            assert lo <= np.median(d) <= hi, (side, name, np.median(d))
    # 2D joints are pixels of the 1768x994 frame, inside it where visible.
    for f in frames[:50]:
        for p in f.persons:
            vis = p.visibility > 0.5
            assert (p.joints2d[vis] >= -0.5).all() and (p.joints2d[vis, 0] <= 1768).all()
            assert p.visibility.min() >= 0 and p.visibility.max() <= 1


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    cases = {
        "empty.mp4": b"",
        "random.mp4": bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)),
        "notes.txt": b"this is a text file\n" * 10,
    }
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        code, out, err = run(capsys, "label", path)
        assert code == 2, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], err
        assert "Traceback" not in err
    code, _, err = run(capsys, "label", tmp_path / "missing.mp4")
    assert code == 2 and "no such file" in err
    code, _, err = run(capsys, "view", tmp_path / "notes.txt", "--video", tmp_path / "notes.txt", "--out", "x.mp4")
    assert code == 2 and "not a stream-pose labels file" in err


def test_truncated_video_labels_what_decodes_and_warns(sports2d, tmp_path, capsys):
    data = sports2d.read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match="half.mp4.*truncated"):
        code, out, err = run(capsys, "label", path, "--stride", "4", "--max-side", "480", "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert 5 < summary["frames"] < 230 // 4


@pytest.mark.slow
def test_render_and_view_write_overlays(sports2d, tmp_path, capsys):
    labels_path, overlay, sheet, view_video = (tmp_path / n for n in ("l.jsonl", "o.mp4", "s.png", "v.mp4"))
    code, _, err = run(
        capsys,
        "label",
        sports2d,
        "--max-frames",
        "12",
        "--stride",
        "3",
        "--save",
        labels_path,
        "--render",
        overlay,
    )
    assert code == 0, err
    from streampose.stream.decode import decode_frames

    rendered = list(decode_frames(overlay.read_bytes(), "overlay"))
    assert len(rendered) == 12
    assert rendered[0].image.shape[1] > 1768  # frame plus the 3D panel beside it
    code, _, err = run(capsys, "view", labels_path, "--video", sports2d, "--out", view_video, "--png", sheet)
    assert code == 0, err
    assert len(list(decode_frames(view_video.read_bytes(), "view"))) == 12
    assert sheet.stat().st_size > 10_000


LABEL = [sys.executable, "-m", "streampose", "label"]


def _frames_on_disk(path: Path) -> int:
    """Frame records flushed so far (whole lines only)."""
    try:
        return path.read_bytes().count(b'{"frame"')
    except FileNotFoundError:
        return 0


def _start_label(sports2d, labels: Path) -> subprocess.Popen:
    cmd = LABEL + [str(sports2d), "--max-side", "480", "--save", str(labels)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_frames(proc: subprocess.Popen, labels: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while _frames_on_disk(labels) < count:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "labelling never got going"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_keeps_every_frame_labelled_so_far(sports2d, tmp_path, signum):
    labels = tmp_path / "labels.jsonl"
    proc = _start_label(sports2d, labels)
    _wait_for_frames(proc, labels, 20)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-2000:]  # 130, 143
    reported = re.search(r"labelled \d+/(\d+) frames", err)
    assert reported and "interrupted" in err, err[-2000:]
    header, frames = load_labels(labels)
    assert header["skeleton"] == "blazepose33" and [v["id"] for v in header["videos"]] == [str(sports2d.resolve())]
    assert int(reported.group(1)) >= 20 and len(frames) >= int(reported.group(1))
    assert [f.index for f in frames] == list(range(len(frames))), "every frame up to the signal, in order"
    assert sum(bool(f.persons) for f in frames) >= 0.5 * len(frames)  # real labels, not empty records


@pytest.mark.slow
def test_kill_9_leaves_a_readable_prefix(sports2d, tmp_path):
    labels = tmp_path / "labels.jsonl"
    proc = _start_label(sports2d, labels)
    _wait_for_frames(proc, labels, 10)
    proc.kill()
    proc.wait()
    on_disk = _frames_on_disk(labels)
    _, frames = load_labels(labels)
    assert len(frames) >= 10 and len(frames) in (on_disk, on_disk - 1)  # at most a torn last record lost
    assert [f.index for f in frames] == list(range(len(frames)))


def test_a_torn_last_record_is_dropped_and_the_rest_read(tmp_path):
    path = tmp_path / "labels.jsonl"
    person = PersonLabel(np.zeros((33, 3)), np.ones((33, 2)), np.ones(33), np.array([0, 0, 1, 1]))
    with LabelsWriter(path, teacher="mediapipe", skeleton="blazepose33") as writer:
        writer.video({"id": "clip.mp4", "provider": "file"})
        for i in range(3):
            writer.frame(FrameLabels(i, i / 30, (10, 10), "clip.mp4", [person]))
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[-1][:40])  # killed mid-record
    header, frames = load_labels(path)
    assert header["teacher"] == "mediapipe" and header["videos"] == [{"id": "clip.mp4", "provider": "file"}]
    assert [f.index for f in frames] == [0, 1, 2]
    np.testing.assert_array_equal(frames[2].persons[0].joints2d, person.joints2d)
    path.write_bytes(whole.replace(b'{"frame"', b'{"frame" oops', 1))
    with pytest.raises(StreamPoseError, match="line 3 is not a labels record"):
        load_labels(path)


@pytest.mark.slow
def test_label_skips_a_broken_search_result_but_not_a_named_file(sports2d, mediapipe_teacher, tmp_path):
    """#19.3: label uses the skip policy of train and eval, through the same handler."""
    good = sports2d.read_bytes()
    broken = good[:2000]  # a truncated upload: not a readable video
    found = [
        Video("pexels:1", broken, {"provider": "pexels"}),
        Video("pexels:2", good, {"provider": "pexels"}),
    ]
    with pytest.warns(UserWarning, match="skipping video: pexels:1"):
        counts = label(iter(found), mediapipe_teacher, max_frames=5, max_side=480, save=tmp_path / "l.jsonl")
    assert counts.videos == 1 and counts.frames == 5 and not counts.interrupted
    header, frames = load_labels(tmp_path / "l.jsonl")
    assert [v["id"] for v in header["videos"]] == ["pexels:2"] and {f.source for f in frames} == {"pexels:2"}
    named = [Video(str(tmp_path / "mine.mp4"), broken, {"provider": "file"})]
    with pytest.raises(DecodeError, match="mine.mp4"):
        label(iter(named), mediapipe_teacher, max_frames=5)


def test_a_local_file_over_the_size_cap_is_refused(sports2d, capsys):
    """Local files go through the same fetch as downloads, cap included (`--max-video-mb`)."""
    code, _, err = run(capsys, "label", sports2d, "--max-video-mb", "0.01")
    assert code == 2 and "sports2d.mp4" in err and "MB limit" in err
    with pytest.raises(SourceError, match="MB limit"):
        stages.one_video(str(sports2d), max_bytes=10_000)
    assert stages.one_video(str(sports2d)).data == sports2d.read_bytes()
