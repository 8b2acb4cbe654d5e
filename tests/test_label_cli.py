"""`streampose label` and `view` on real clips with the real MediaPipe teacher."""

import json

import numpy as np
import pytest

from streampose.cli import main
from streampose.poses.labels import load_labels
from streampose.poses.skeletons import get_skeleton


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_label_sports2d_finds_a_person_with_plausible_3d(sports2d, tmp_path, capsys):
    labels_path = tmp_path / "labels.pt"
    code, out, err = run(capsys, "label", sports2d, "--save", labels_path, "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == 230 and summary["videos"] == 1
    assert summary["labelled_frames"] >= 0.9 * summary["frames"]
    assert summary["skeleton"] == "blazepose33" and summary["joints"] == 33 and summary["teacher"] == "mediapipe"
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
    labels_path, overlay, sheet, view_video = (tmp_path / n for n in ("l.pt", "o.mp4", "s.png", "v.mp4"))
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
