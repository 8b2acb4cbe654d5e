"""The Rerun viewer: a recording of real frames and teacher labels reads back with Rerun's own API."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streampose.errors import StreamPoseError
from streampose.stream.decode import decode_frames
from streampose.viz import rerun as viewer

rerun = pytest.importorskip("rerun", reason="rerun-sdk is an optional extra: pip install 'streampose[viz]'")


@pytest.mark.slow
def test_recording_holds_frames_and_every_persons_2d_and_3d_skeleton(clip, mediapipe_teacher, tmp_path):
    video = clip("pose2sim-single-cam01")
    frames = list(decode_frames(video.read_bytes(), video.name, stride=10, max_frames=6, max_side=480))
    mediapipe_teacher.start_video(frames[0].image.shape[:2])
    persons = mediapipe_teacher.label([f.image for f in frames])
    assert sum(map(len, persons)) >= 4  # the man on the platform is in most of these frames

    path = tmp_path / "labels.rrd"
    log = viewer.RerunLog(mediapipe_teacher.skeleton, path)
    for frame, people in zip(frames, persons, strict=True):
        log.frame(frame.index, frame.timestamp, frame.image, people)
    log.close()

    recording = rerun.dataframe.load_recording(str(path))
    table = recording.view(index="frame", contents="/**").select().read_all()
    assert table.num_rows == len(frames)
    assert sorted(table.column("frame").to_pylist()) == [f.index for f in frames]
    columns = set(table.column_names)
    assert "/video:Blob" in columns  # the frame, JPEG-encoded
    track = next(p.track_id for people in persons for p in people) or 0
    assert f"/video/person/{track}:Position2D" in columns
    assert f"/world/person/{track}/joints:Position3D" in columns
    # Each frame with a person holds that person's 33 joints in 3D.
    joints3d = table.column(f"/world/person/{track}/joints:Position3D").to_pylist()
    labelled = [len(j) for j, people in zip(joints3d, persons, strict=True) if people and j is not None]
    assert labelled and all(n == mediapipe_teacher.skeleton.num_joints for n in labelled)


def test_track_colours_differ_between_neighbouring_ids():
    """The viewer colours a track as the overlay videos do (`render.track_colour`), well apart."""
    colours = [np.array(viewer.track_colour(i)) for i in range(6)]
    assert all(np.abs(a - b).sum() > 60 for a, b in zip(colours, colours[1:], strict=False))


def test_missing_rerun_is_one_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_rerun(name, *args, **kwargs):
        if name == "rerun":
            raise ImportError("No module named 'rerun'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rerun)
    with pytest.raises(StreamPoseError, match=r"pip install 'streampose\[viz\]'"):
        viewer.import_rerun()


def _recorded(path) -> tuple[int, set[str]]:
    """Rows (frames) and columns of a recording, read back with Rerun's own API."""
    table = rerun.dataframe.load_recording(str(path)).view(index="frame", contents="/**").select().read_all()
    return table.num_rows, set(table.column_names)


@pytest.mark.slow
def test_view_and_predict_write_recordings_from_the_command_line(clip, tmp_path, capsys):
    from streampose.cli import main
    from streampose.model.checkpoint import save_checkpoint
    from streampose.model.student import build_student

    video = str(clip("pose2sim-single-cam01"))
    labels = tmp_path / "labels.jsonl"
    assert (
        main(["label", video, "--stride", "10", "--max-frames", "5", "--max-side", "320", "--save", str(labels)]) == 0
    )
    assert main(["view", str(labels), "--video", video, "--rerun", str(tmp_path / "labels.rrd")]) == 0
    assert "showed 5 labelled frames: Rerun" in capsys.readouterr().err
    rows, columns = _recorded(tmp_path / "labels.rrd")
    assert rows == 5 and {"/video:Blob", "/video/person/0:Position2D", "/world/person/0/joints:Position3D"} <= columns
    assert "/video/person/0/bones:LineStrip2D" in columns  # 2D bones drawn between visible joints only
    # The frames are shown at the size they were labelled at (--max-side 320), so the joints land on them.
    table = rerun.dataframe.load_recording(str(tmp_path / "labels.rrd")).view(index="frame", contents="/video").select()
    blob = np.asarray(table.read_all().column("/video:Blob")[0][0].values, dtype=np.uint8)
    assert cv2.imdecode(blob, cv2.IMREAD_COLOR).shape[:2] == (320, 180)

    model = build_student("micro", 33, 64)
    checkpoint = save_checkpoint(
        tmp_path / "s.pt", model=model.state_dict(), step=1, teacher="mediapipe", skeleton="blazepose33",
        student=model.config_dict(), preprocess={"crop_size": 64},
    )  # fmt: skip
    argv = ["predict", video, "--checkpoint", str(checkpoint), "--max-side", "240", "--rerun", str(tmp_path / "p.rrd")]
    assert main(argv) == 0
    rows, columns = _recorded(tmp_path / "p.rrd")
    assert rows == 100  # every frame of the clip, one person each
    assert {"/video:Blob", "/video/person/0/box:Position2D", "/world/person/0/joints:Position3D"} <= columns


def test_spawning_without_a_viewer_on_path_is_one_clear_error(monkeypatch, tmp_path):
    """rerun-sdk spawns the viewer found on PATH; the environment's own bin folder is tried too."""
    from streampose.poses.skeletons import get_skeleton

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(viewer.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(StreamPoseError, match=r"not on PATH: .*\(--rerun out\.rrd\)"):
        viewer.RerunLog(get_skeleton("blazepose33"), None)
