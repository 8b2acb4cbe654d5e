"""Model cards: the licence lines follow the teacher and the videos a student was trained on."""

from __future__ import annotations

import json

import pytest

from streampose.model.card import card_markdown, model_card, write_model_card
from streampose.sources.base import VideoRef
from streampose.sources.provenance import ProvenanceLog


def checkpoint_meta(teacher: str, skeleton: str) -> dict:
    return {
        "teacher": teacher,
        "skeleton": skeleton,
        "student": {"name": "small", "num_joints": 33, "crop_size": 128},
        "preprocess": {"crop_size": 128, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "step": 600,
        "world_size": 1,
    }


@pytest.fixture
def run(tmp_path):
    log = ProvenanceLog(tmp_path)
    refs = [
        VideoRef("commons:File:A.webm", "u1", {"provider": "commons", "licence": "CC BY-SA 4.0", "author": "Ann"}),
        VideoRef("commons:File:B.webm", "u2", {"provider": "commons", "licence": "CC0", "author": "Bo"}),
        VideoRef("/clips/mine.mp4", "/clips/mine.mp4", {"provider": "file"}),
    ]
    for ref in refs + refs[:1]:  # a video used on two passes counts once
        log.record(ref, frames=10)
    log.close()
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 10, "loss": 1.0}) + "\n" + json.dumps({"step": 20, "val_pa_mpjpe_mm": 140.5}) + "\n{cut"
    )
    return tmp_path


def test_a_comotion_student_is_research_only(run):
    card = model_card(checkpoint_meta("comotion", "comotion27"), run, {"onnx": "student.onnx"})
    assert card["licence"]["research_only"] is True
    text = card_markdown(card)
    licence_section = text.split("## Licence and use")[1].split("##")[0]
    assert "research only" in licence_section and "derivatives included" in licence_section
    assert "Apple ML Research Model License" in text


def test_a_mediapipe_student_lists_its_videos_licences_and_authors(run):
    card = model_card(checkpoint_meta("mediapipe", "blazepose33"), run, {"onnx": "student.onnx"})
    assert card["licence"]["research_only"] is False
    data = card["training"]["data"]
    assert data["videos"] == 3 and data["authors"] == 2 and data["frames_labelled"] == 30
    assert data["providers"] == {"commons": 2, "file": 1}
    assert data["licences"] == {"CC BY-SA 4.0": 1, "CC0": 1}
    assert card["metrics"]["validation"] == {"step": 20, "val_pa_mpjpe_mm": 140.5}
    text = card_markdown(card)
    licence_section = text.split("## Licence and use")[1].split("##")[0]
    assert "research only" not in licence_section
    assert "attribution to 2 author(s)" in licence_section and "trainer's responsibility" in licence_section
    assert "0 nose" in text and "Apache-2.0" in text


def test_pexels_videos_bring_pexels_terms(tmp_path):
    log = ProvenanceLog(tmp_path)
    log.record(VideoRef("pexels:1", "u", {"provider": "pexels", "licence": "Pexels License"}), frames=5)
    log.close()
    card = model_card(checkpoint_meta("mediapipe", "blazepose33"), tmp_path, {})
    assert any("Pexels' terms forbid" in r for r in card["licence"]["restrictions"])
    md, js = write_model_card(card, tmp_path, "student")
    assert json.loads(js.read_text())["licence"] == card["licence"]
    assert "Pexels' terms forbid" in md.read_text()
