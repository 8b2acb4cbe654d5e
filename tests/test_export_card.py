"""`export` writes a model card beside every export, and `--safetensors` weights that rebuild the student."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from streampose.cli import main
from streampose.model.checkpoint import load_checkpoint, save_checkpoint, student_from
from streampose.model.export import load_safetensors
from streampose.model.student import build_student
from streampose.poses.skeletons import get_skeleton
from streampose.sources.base import VideoRef
from streampose.sources.provenance import ProvenanceLog


def run_folder(tmp_path: Path, teacher: str, skeleton: str) -> Path:
    """A run folder as training leaves it: last.pt of a micro student, its provenance and metrics."""
    run = tmp_path / f"run-{teacher}"
    run.mkdir()
    joints = get_skeleton(skeleton).num_joints
    model = build_student("micro", joints, 64)
    with torch.no_grad():  # weights no fresh student has, so a loader that ignored them would fail below
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_checkpoint(
        run / "last.pt", model=model.state_dict(), step=120, world_size=1, teacher=teacher, skeleton=skeleton,
        student=model.config_dict(), preprocess={"crop_size": 64, "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225]}, mean_pose=np.zeros((joints, 3), np.float32),
    )  # fmt: skip
    log = ProvenanceLog(run)
    log.record(
        VideoRef("commons:File:A.webm", "u1", {"provider": "commons", "licence": "CC BY 4.0", "author": "A"}), 12
    )
    log.record(VideoRef("/clips/own.mp4", "/clips/own.mp4", {"provider": "file"}), 8)
    log.close()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 100, "val_pa_mpjpe_mm": 151.25}) + "\n")
    return run


def licence_section(md: str) -> str:
    return md.split("## Licence and use")[1].split("\n## ")[0]


def test_a_comotion_students_export_says_research_only(tmp_path):
    run = run_folder(tmp_path, "comotion", "comotion27")
    out = tmp_path / "export" / "student.onnx"
    assert main(["export", "--checkpoint", str(run / "last.pt"), "--onnx", str(out)]) == 0
    umask = os.umask(0o022)
    os.umask(umask)
    for written in ("student.onnx", "student.card.md", "student.card.json"):  # readable as open() would leave them
        assert (out.parent / written).stat().st_mode & 0o777 == 0o666 & ~umask
    card = json.loads((out.parent / "student.card.json").read_text())
    assert card["licence"]["research_only"] is True and card["files"] == {"onnx": "student.onnx"}
    assert card["skeleton"]["name"] == "comotion27" and card["training"]["steps"] == 120
    section = licence_section((out.parent / "student.card.md").read_text())
    assert "research only" in section and "derivatives included" in section
    assert "attribution to 1 author(s)" in section and "trainer's responsibility" in section


def test_a_mediapipe_students_export_has_no_research_only_line_and_safetensors_rebuild_it(tmp_path):
    run = run_folder(tmp_path, "mediapipe", "blazepose33")
    onnx_path, weights = tmp_path / "m.onnx", tmp_path / "w" / "m.safetensors"
    argv = ["export", "--checkpoint", str(run / "last.pt"), "--onnx", str(onnx_path), "--safetensors", str(weights)]
    assert main(argv) == 0
    md = (tmp_path / "m.card.md").read_text()
    assert "research only" not in licence_section(md) and "Apache-2.0" in md
    assert "Latest validation: step 100, val_pa_mpjpe_mm 151.25" in md
    assert json.loads((tmp_path / "m.card.json").read_text())["files"] == {
        "onnx": "m.onnx", "safetensors": "w/m.safetensors"
    }  # fmt: skip

    model, meta = load_safetensors(weights)
    assert meta["skeleton"] == "blazepose33" and meta["teacher"] == "mediapipe" and meta["crop_size"] == "64"
    reference = student_from(load_checkpoint(run / "last.pt"))
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got, want = model(x), reference(x)
    for key in ("joints3d", "joints2d", "vis_logits"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


@pytest.mark.parametrize("teacher", ["mediapipe", "comotion", "topdown"])
def test_every_teacher_states_its_licence_on_the_card(teacher, tmp_path):
    from streampose.teachers import teacher_class

    cls = teacher_class(teacher)
    run = run_folder(tmp_path, teacher, cls.skeleton.name)
    assert main(["export", "--checkpoint", str(run / "last.pt"), "--safetensors", str(tmp_path / "s.safetensors")]) == 0
    card = json.loads((tmp_path / "s.card.json").read_text())
    assert card["teacher"] == {"name": teacher, "licence": cls.licence} and cls.licence
    assert card["licence"]["research_only"] is (cls.terms is not None)


def test_safetensors_alone_gets_its_card_and_no_export_is_an_error(tmp_path, capsys):
    run = run_folder(tmp_path, "mediapipe", "blazepose33")
    assert main(["export", "--checkpoint", str(run / "last.pt"), "--safetensors", str(tmp_path / "s.safetensors")]) == 0
    assert json.loads((tmp_path / "s.card.json").read_text())["files"] == {"safetensors": "s.safetensors"}
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(run / "last.pt")]) == 2
    assert "nothing to do" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(Exception, match="junk.safetensors: not a readable safetensors file"):
        load_safetensors(junk)
