"""Checkpoints hold data, never code: what goes in comes back, and a crafted pickle runs nothing.

Every command that loads a checkpoint (export, eval, predict, train --resume) is fed files whose
pickle would run a payload that creates a marker file; the marker must never appear and the
command must exit 2 with one line. A control shows the payload does run when loaded unsafely, so
the test would catch a loader that trusted it.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from streampose.cli import main
from streampose.errors import StreamPoseError
from streampose.model.checkpoint import FORMAT, load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from streampose.model.student import build_student


class _Payload:
    """Unpickling this creates `marker`: what a crafted checkpoint does instead of `touch pwned`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _crafted(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """A crafted checkpoint in torch's zip format and one as a bare pickle (torch's legacy format)."""
    state = {"format": FORMAT, "skeleton": "blazepose33", "model": {}, "payload": _Payload(marker)}
    zipped = tmp_path / "evil-zip.pt"
    torch.save(state, zipped)
    bare = tmp_path / "evil-pickle.pt"
    bare.write_bytes(pickle.dumps(state, protocol=2))
    return {"zip": zipped, "pickle": bare}


def test_the_payload_runs_when_loaded_unsafely(tmp_path):
    # The control: without weights_only the same files do run code, so the tests below can fail.
    for kind, path in _crafted(tmp_path, tmp_path / "marker").items():
        marker = tmp_path / "marker"
        if kind == "zip":
            torch.load(path, weights_only=False)
        else:
            pickle.loads(path.read_bytes())
        assert marker.exists(), kind
        marker.unlink()


def _assert_refused(code: int, err: str, marker: Path, path: Path) -> None:
    assert not marker.exists(), "the checkpoint's payload ran"
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err and "refused" in err and "could run as code" in err, err


@pytest.mark.parametrize("kind", ["zip", "pickle"])
def test_export_eval_and_predict_never_run_a_crafted_checkpoint(kind, tmp_path, sports2d, capsys):
    marker = tmp_path / "marker"
    evil = _crafted(tmp_path, marker)[kind]
    commands = {
        "export": ["export", "--checkpoint", str(evil), "--onnx", str(tmp_path / "x.onnx")],
        "eval": ["eval", str(sports2d), "--checkpoint", str(evil), "--max-frames", "2"],
        "predict": ["predict", str(sports2d), "--checkpoint", str(evil), "--poses", str(tmp_path / "p.jsonl")],
    }
    for name, argv in commands.items():
        code = main(argv)
        _assert_refused(code, capsys.readouterr().err, marker, evil)
        assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "p.jsonl").exists(), name


@pytest.mark.slow
def test_train_resume_never_runs_a_crafted_last_pt(tmp_path, sports2d, capsys):
    marker = tmp_path / "marker"
    out = tmp_path / "run"
    out.mkdir()
    evil = _crafted(tmp_path, marker)["zip"]
    evil.rename(out / "last.pt")
    argv = ["train", "--source", str(sports2d), "--out", str(out), "--resume", "--student", "micro"]
    code = main([*argv, "--steps", "2", "--crop-size", "64", "--min-fill", "8", "--max-frames", "4"])
    _assert_refused(code, capsys.readouterr().err, marker, out / "last.pt")


def test_an_old_pickled_checkpoint_is_refused_with_one_line(tmp_path):
    # What format 1 wrote: numpy RNG state and arrays, readable only by a trusting unpickler.
    path = tmp_path / "old.pt"
    torch.save({"format": "streampose-checkpoint/1", "rng": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(StreamPoseError, match=r"refused: it holds pickled Python objects \(numpy"):
        load_checkpoint(path)


def test_what_is_saved_comes_back_with_its_types(tmp_path):
    model = build_student("micro", 33, 64)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3, 64, 64))["joints3d"].sum().backward()
    optimizer.step()
    pose_sum = np.random.default_rng(0).normal(size=(33, 3))
    path = save_checkpoint(
        tmp_path / "c.pt", model=model.state_dict(), optimizer=optimizer.state_dict(), step=np.int64(7),
        pose_sum=pose_sum, mean_pose=pose_sum.astype(np.float32), preprocess={"mean": (0.5, 0.5, 0.5)},
        used_videos=["a", "b"], nested=[{"w": np.arange(3)}],
    )  # fmt: skip
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 7 and type(ckpt["step"]) is int
    assert isinstance(ckpt["pose_sum"], np.ndarray) and ckpt["pose_sum"].dtype == np.float64
    np.testing.assert_array_equal(ckpt["pose_sum"], pose_sum)
    assert ckpt["mean_pose"].dtype == np.float32
    assert ckpt["preprocess"] == {"mean": (0.5, 0.5, 0.5)} and ckpt["used_videos"] == ["a", "b"]
    np.testing.assert_array_equal(ckpt["nested"][0]["w"], np.arange(3))
    restored = build_student("micro", 33, 64)
    restored.load_state_dict(ckpt["model"])
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    torch.optim.AdamW(restored.parameters()).load_state_dict(ckpt["optimizer"])


def test_anything_but_plain_data_is_refused_at_save_time(tmp_path):
    with pytest.raises(TypeError, match=r"config\.out: PosixPath"):
        save_checkpoint(tmp_path / "c.pt", config={"out": Path("runs")})
    with pytest.raises(TypeError, match="keys must be"):
        save_checkpoint(tmp_path / "c.pt", videos={Path("a.mp4"): 1})
    with pytest.raises(TypeError, match="objects"):
        save_checkpoint(tmp_path / "c.pt", ids=np.array(["a", None], dtype=object))
    assert not (tmp_path / "c.pt").exists()


def test_rng_states_round_trip_exactly_through_a_file(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    path = save_checkpoint(tmp_path / "c.pt", rng=rng_states())
    expected = (torch.rand(4), np.random.normal(size=4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_states(load_checkpoint(path)["rng"])
    got = (torch.rand(4), np.random.normal(size=4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    assert got[3] == expected[3]
