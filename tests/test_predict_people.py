"""`predict` without a box, on real clips with several people: the detector finds them, the student
follows them. The module's student (micro, 64 px, 400 steps, ~1 min here) learns from the top-down
teacher's labels of every person in half the frames of Sports2D and of Pose2Sim's multi-person
cam01, with background crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import train_micro
from streampose import sources
from streampose.cli import main
from streampose.poses.metrics import farthest_travelled, square_on
from streampose.poses.skeletons import get_skeleton
from streampose.stream import stages
from streampose.stream.crops import person_crops

SKELETON = get_skeleton("blazepose33")
CROP = 64
MAX_SIDE = 720
CLIPS = ("sports2d", "pose2sim-multi-cam01")


@pytest.fixture(scope="module")
def people(clip) -> list:
    """(frame, labels) of every second frame of the clips, every person labelled by the top-down teacher."""
    from streampose.teachers.topdown import TopDownTeacher

    teacher = TopDownTeacher(threads=1)
    out = []
    try:
        for name in CLIPS:
            frames = stages.frames(stages.videos(sources.refs([str(clip(name))])), max_side=MAX_SIDE, stride=2)
            out += [(frame.image, labels) for _, frame, labels in stages.labelled(teacher, frames)]
    finally:
        teacher.close()
    return out


@pytest.fixture(scope="module")
def student(people, tmp_path_factory) -> Path:
    samples = list(person_crops(people, size=CROP, negatives=0.4, rng=np.random.default_rng(0)))
    # Trained as the students these figures were measured with, before background replacement: this
    # micro 64 px student of two clips, trained with it, follows a third track between the two people
    # crossing in cam04 (10 of 100 frames); the demo's default student does not (docs/student.md).
    return train_micro(samples, tmp_path_factory.mktemp("people"), crop=CROP, steps=400, background=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("camera, in_view", [("cam01", 3), ("cam02", 3), ("cam03", 2), ("cam04", 2)])
def test_the_people_of_a_pose2sim_multi_person_camera_are_followed(student, clip, tmp_path, capsys, camera, in_view):
    """Pose2Sim multi-person cameras: a man and a composited woman in front, a woman at the back
    (out of cam03's and cam04's view). cam01 is the trained view (half its frames in the training
    set); cam02-04 were never seen. Measured with three students of this kind (400, 1500 and 3000
    steps): 2.8, 3.0, 2.0 and 2.0 persons per frame, in 3, 3, 2 and 2 tracks (docs/student.md)."""
    path = clip(f"pose2sim-multi-{camera}")
    args = ["predict", str(path), "--checkpoint", str(student), "--poses", str(tmp_path / "p.jsonl")]
    assert main([*args, "--max-side", str(MAX_SIDE), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert summary["frames"] == len(lines) == 100
    assert summary["persons_per_frame"] >= 1.8, summary
    assert sum(len(line["persons"]) >= 2 for line in lines) >= 80
    assert max(len(line["persons"]) for line in lines) <= in_view  # nobody counted twice
    ids = {p["id"] for line in lines for p in line["persons"]}
    assert len(ids) <= 15, ids  # followed, not found afresh every few frames


@pytest.mark.slow
def test_the_sports2d_walker_is_tracked_with_one_id(people, student, clip, tmp_path, capsys):
    """Sports2D: the walker crosses the whole frame, small and fast. He counts as tracked in a frame
    when a track's crop is on him (his teacher box's centre inside the square the student looked
    at, the square at most twice his height), and it must be one track throughout. Measured with
    students of this kind (400, 1500, 3000 steps) and the demo's (which never saw Sports2D): 98.8 %
    of his 160 frames, one id; how well their joints fit him is another matter (the teacher's box
    overlapped by IoU > 0.3 in 48-92 % of frames, docs/student.md)."""
    tracks: dict[int, dict[int, np.ndarray]] = {}
    for _, labels in people:
        if "sports2d" in labels.source:
            for p in labels.persons:
                tracks.setdefault(p.track_id, {})[labels.index] = p.box
    walker = farthest_travelled(tracks)
    path = clip("sports2d")
    args = ["predict", str(path), "--checkpoint", str(student), "--poses", str(tmp_path / "p.jsonl")]
    assert main([*args, "--max-side", str(MAX_SIDE), "--json"]) == 0
    lines = {line["frame"]: line for line in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    on_him, ids = 0, set()
    for index, box in walker.items():
        on = [p["id"] for p in lines[index]["persons"] if square_on(p["crop"], box, max_ratio=2.0)]
        on_him, ids = on_him + bool(on), ids | set(on[:1])
    assert len(walker) >= 70 and on_him >= 0.9 * len(walker), (on_him, len(walker))
    assert len(ids) == 1, ids
