"""The student on its own: ONNX export, tracking through a real clip, and clear errors on bad input.

A micro student trained briefly on MediaPipe's crops of one real clip (the module fixture) is
enough to check behaviour: it localises the person in that clip, so the tracker can follow them.
Its accuracy is not the point here (see `streampose eval` for that).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import train_micro
from streampose import sources
from streampose.cli import main
from streampose.engine.predict import parse_box
from streampose.engine.tracking import Tracker, TrackerConfig
from streampose.errors import StreamPoseError
from streampose.model.backends import OnnxBackend, TorchBackend, crops_per_second, open_backend
from streampose.model.checkpoint import load_checkpoint, save_checkpoint
from streampose.model.export import export_onnx, read_metadata
from streampose.model.preprocess import CPU_AMP_MIN_BATCH
from streampose.model.student import build_student
from streampose.poses.labels import PersonLabel
from streampose.poses.skeletons import get_skeleton
from streampose.stream import stages
from streampose.stream.crops import (
    apply_affine,
    background_crops,
    crop_matrix,
    crop_person,
    cut_square,
    invert_affine,
    person_crops,
    square_around,
)
from streampose.stream.decode import Frame, decode_frames

SKELETON = get_skeleton("blazepose33")
CROP = 64
CLIP = "pose2sim-single-cam01"
MAX_SIDE = 640  # keeps decoding and the overlay's encoding quick


@pytest.fixture(scope="module")
def labelled_clip(clip, mediapipe_teacher):
    """The clip's path, MediaPipe's box per frame (the reference for tracking) and its crops."""
    path = clip(CLIP)
    boxes: dict[int, list[np.ndarray]] = {}

    def items():
        frames = stages.frames(stages.videos(sources.refs([str(path)])), max_side=MAX_SIDE)
        for _, frame, labels in stages.labelled(mediapipe_teacher, frames):
            boxes[frame.index] = [p.box for p in labels.persons]
            yield frame.image, labels

    # Half the crops show nobody, so the student's confidence learns to mean "a person is here".
    samples = list(person_crops(items(), size=CROP, negatives=0.5, rng=np.random.default_rng(0)))
    negatives = sum(s.track_id < 0 for s in samples)
    assert len(boxes) == 100 and len(samples) - negatives > 80 and negatives > 40
    return path, boxes, samples


@pytest.fixture(scope="module")
def checkpoint(labelled_clip, tmp_path_factory) -> Path:
    """A micro student trained for 200 steps of 32 on the clip's crops (~12-20 s on 2 shared cores)."""
    _, _, samples = labelled_clip
    return train_micro(samples, tmp_path_factory.mktemp("student"), crop=CROP, steps=200)


@pytest.fixture(scope="module")
def onnx_model(checkpoint, tmp_path_factory) -> Path:
    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "student.onnx")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


# -- export ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_matches_torch_on_real_crops_at_any_batch(labelled_clip, checkpoint, onnx_model):
    _, _, samples = labelled_clip
    crops = np.stack([s.image for s in samples[::7][:5]])
    torch_fp32 = TorchBackend(checkpoint, precision="fp32")
    ort = OnnxBackend(onnx_model)
    for batch in (crops, crops[:1]):  # the batch axis is dynamic: 5 and 1 from one file
        expected, got = torch_fp32(batch), ort(batch)
        for key in ("joints3d", "joints2d", "vis_logits"):
            assert got[key].shape == expected[key].shape
            diff = float(np.abs(got[key] - expected[key]).max())
            assert diff < 1e-4, (key, len(batch), diff)
    # The default layout (channels_last, + bf16 autocast on CPU batches) stays within a crop pixel of fp32.
    batch = np.stack([s.image for s in samples[: max(CPU_AMP_MIN_BATCH, 1)]])
    fast = TorchBackend(checkpoint)(batch)
    assert np.abs(fast["joints2d"] - torch_fp32(batch)["joints2d"]).max() < 1.0 / CROP


@pytest.mark.slow
def test_a_checkpoint_runs_in_the_fastest_installed_backend(labelled_clip, checkpoint, onnx_model):
    """onnxruntime is installed here: a checkpoint run one crop at a time (predict) runs there,
    exported in memory, exactly as its exported file does; batches (eval) and `backend="torch"` run
    PyTorch."""
    _, _, samples = labelled_clip
    batch = np.stack([s.image for s in samples[:8]])
    auto = open_backend(checkpoint=checkpoint)
    assert auto.name == "onnxruntime" and auto.skeleton.name == SKELETON.name and auto.crop_size == CROP
    assert auto.mean_pose is not None and auto.teacher
    from_file = OnnxBackend(onnx_model)(batch)
    for key, value in auto(batch).items():
        assert np.array_equal(value, from_file[key]), key
    assert open_backend(checkpoint=checkpoint, backend="torch").name == "torch"
    assert open_backend(checkpoint=checkpoint, batch=32).name == "torch"
    with pytest.raises(StreamPoseError, match="unknown backend"):
        open_backend(checkpoint=checkpoint, backend="tensorrt")


def test_export_metadata_round_trips(checkpoint, onnx_model):
    ckpt = load_checkpoint(checkpoint)
    onnx.checker.check_model(onnx.load(str(onnx_model)), full_check=True)
    meta = read_metadata(onnx_model)
    assert meta["skeleton"] == "blazepose33" and meta["teacher"] == "topdown"
    assert tuple(json.loads(meta["joints"])) == SKELETON.joints
    assert tuple(json.loads(meta["flip"])) == SKELETON.flip
    assert int(meta["crop_size"]) == CROP == ckpt["preprocess"]["crop_size"]
    assert json.loads(meta["mean"]) == list(ckpt["preprocess"]["mean"])
    assert json.loads(meta["std"]) == list(ckpt["preprocess"]["std"])
    assert json.loads(meta["student"]) == ckpt["student"]
    model = onnx.load(str(onnx_model))
    assert model.opset_import[0].version == 17
    assert [o.name for o in model.graph.output] == ["joints3d", "joints2d", "vis_logits"]


@pytest.mark.slow
def test_eval_gives_the_same_metrics_from_the_checkpoint_and_its_onnx_export(clip, checkpoint, onnx_model, capsys):
    """One inference path: `eval --onnx` and `eval --checkpoint` run the same student through
    `model.backends` and must agree to 1 mm, baseline included (the mean pose rides in the ONNX metadata)."""
    held_out = str(clip("pose2sim-single-cam02"))
    results = {}
    for flag, model in (("--checkpoint", checkpoint), ("--onnx", onnx_model)):
        backend = ["--backend", "torch"] if flag == "--checkpoint" else []
        args = ["eval", held_out, flag, str(model), *backend, "--stride", "4", "--max-side", str(MAX_SIDE), "--json"]
        assert main(args) == 0
        results[flag] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    torch_result, onnx_result = results["--checkpoint"], results["--onnx"]
    assert torch_result["backend"] == "torch" and onnx_result["backend"] == "onnxruntime"
    assert torch_result["persons"] == onnx_result["persons"] >= 20
    for key in ("mpjpe_mm", "pa_mpjpe_mm", "baseline_mpjpe_mm", "baseline_pa_mpjpe_mm"):
        assert abs(torch_result[key] - onnx_result[key]) < 1.0, (key, torch_result[key], onnx_result[key])
    assert abs(torch_result["pck_150mm"] - onnx_result["pck_150mm"]) < 0.02
    # Not a vacuous match: the student is not the mean pose.
    assert abs(torch_result["mpjpe_mm"] - torch_result["baseline_mpjpe_mm"]) > 1.0


# -- predict on a real clip ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predict_tracks_the_person_through_a_real_clip(
    labelled_clip, checkpoint, onnx_model, backend, tmp_path, capsys
):
    path, boxes, _ = labelled_clip
    torch_model = ["--checkpoint", str(checkpoint), "--backend", "torch"]
    model = torch_model if backend == "torch" else ["--onnx", str(onnx_model)]
    out, poses = tmp_path / "overlay.mp4", tmp_path / "poses.jsonl"
    args = ["predict", str(path), *model, "--render", str(out), "--poses", str(poses), "--max-side", str(MAX_SIDE)]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # --json: the last stdout line
    assert summary["frames"] == len(boxes) and summary["backend"] == ("torch" if backend == "torch" else "onnxruntime")
    assert summary["outputs"] == [str(poses), str(out)] and summary["tracked"] >= 90

    lines = [json.loads(line) for line in poses.read_text().splitlines()]
    assert [p["frame"] for p in lines] == sorted(boxes)  # one line per frame, in order
    # The man in front, as the teacher saw him: of every frame's persons, the one nearest its box.
    lines = [
        max(line["persons"], key=lambda p, f=line["frame"]: _iou(np.array(p["box"]), boxes[f][0]) if boxes[f] else 0)
        | {"frame": line["frame"]}
        for line in lines
        if line["persons"]
    ]
    first = lines[0]
    assert first["frame"] == 0 and first["init"] == "detect" and not first["tracked"]
    assert np.array(first["joints2d"]).shape == (SKELETON.num_joints, 2)
    assert np.array(first["joints3d"]).shape == (SKELETON.num_joints, 3)
    assert len(first["visibility"]) == SKELETON.num_joints and 0 <= first["confidence"] <= 1
    assert sum(p["tracked"] for p in lines) >= 90  # it keeps the person rather than starting over

    # The student's own box stays on the person: its centre lies in the teacher's box and the two
    # overlap in most frames. Measured with this fixture's student: centre inside in 100/100 frames,
    # IoU > 0.3 in 100/100 (median 0.64), fp32 and bf16 alike; a student trained on half as many
    # samples still had its centre inside in 100/100 but IoU > 0.3 in only 78-83, so the margin is wide
    # for the centre and moderate for the overlap.
    pairs = [(np.array(p["box"]), boxes[p["frame"]][0]) for p in lines if boxes[p["frame"]]]
    ious = np.array([_iou(a, b) for a, b in pairs])
    inside = [b[0] <= (a[0] + a[2]) / 2 <= b[2] and b[1] <= (a[1] + a[3]) / 2 <= b[3] for a, b in pairs]
    assert len(pairs) >= 90 and np.mean(inside) >= 0.9, np.round(ious, 2)
    assert np.mean(ious > 0.3) >= 0.8, np.round(ious, 2)

    video = stages.one_video(str(out))
    frames = list(decode_frames(video.data, video.id))
    h, w = 640, 360  # the clip is portrait 1080x1920, scaled to MAX_SIDE; the 3D panel is h wide
    assert len(frames) == summary["frames"] and frames[0].image.shape == (h, w + h, 3)


@pytest.mark.slow
def test_a_user_box_starts_the_track(labelled_clip, checkpoint, tmp_path):
    path, boxes, _ = labelled_clip
    x0, y0, x1, y1 = boxes[0][0]
    poses = tmp_path / "poses.jsonl"
    args = ["predict", str(path), "--checkpoint", str(checkpoint), "--poses", str(poses)]
    args += ["--box", f"{x0},{y0},{x1},{y1}", "--max-side", str(MAX_SIDE)]
    assert main(args) == 0
    lines = [json.loads(line)["persons"] for line in poses.read_text().splitlines()]
    assert lines[0][0]["init"] == "box" and lines[0][0]["id"] == 0
    assert all(any(p["id"] == 0 and p["tracked"] for p in persons) for persons in lines[1:10])
    assert _iou(np.array(lines[0][0]["box"]), boxes[0][0]) > 0.3


@pytest.mark.slow
def test_confidence_means_a_person_is_here_on_a_held_out_view(clip, checkpoint, mediapipe_teacher):
    """Trained with background crops, the student scores crops of nobody low and persons high, on
    a camera it never saw (Pose2Sim cam02). Background crops keep clear of the teacher's person and
    of every box the detector finds (a second man stands at the back). Measured with this fixture's
    student: person 0.90, background 0.03."""
    from streampose.detect.yolox import PersonDetector

    detector = PersonDetector(threads=1)
    backend = TorchBackend(checkpoint, precision="fp32")
    rng = np.random.default_rng(1)
    persons, background = [], []
    frames = stages.frames(stages.videos(sources.refs([str(clip("pose2sim-single-cam02"))])), max_side=MAX_SIDE)
    for _, frame, labels in stages.labelled(mediapipe_teacher, frames):
        crops = [crop_person(frame.image, p, source="v", frame_index=frame.index, size=CROP) for p in labels.persons]
        persons += [c.image for c in crops if c is not None]
        background += [
            b.image
            for b in background_crops(
                frame.image, labels.persons, 2, rng, num_joints=SKELETON.num_joints, source="v",
                frame_index=frame.index, size=CROP, avoid=detector(frame.image)[0],
            )
        ]  # fmt: skip

    def confidence(images: list[np.ndarray]) -> float:
        logits = backend(np.stack(images))["vis_logits"].astype(np.float64)
        return float((1 / (1 + np.exp(-logits))).mean())

    assert len(persons) >= 90 and len(background) >= 30
    person, nobody = confidence(persons), confidence(background)
    assert nobody < 0.3 and person > 0.7, (person, nobody)


def _video_of_nobody(path: Path, frames: int = 12) -> Path:
    """A short clip of an empty scene: a gradient with a grey square sliding across."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        base = np.broadcast_to(np.linspace(40, 200, 320, dtype=np.uint8)[None, :, None], (240, 320, 3)).copy()
        for k in range(frames):
            image = base.copy()
            image[100:140, 20 + 20 * k : 60 + 20 * k] = 128
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_video_of_nobody_writes_every_frame_with_no_persons(tmp_path, capsys):
    ckpt = _untrained_checkpoint(tmp_path, SKELETON.name, "mediapipe")
    poses = tmp_path / "poses.jsonl"
    video = _video_of_nobody(tmp_path / "empty.mp4")
    assert main(["predict", str(video), "--checkpoint", str(ckpt), "--poses", str(poses), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = [json.loads(line) for line in poses.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(12)) and all(line["persons"] == [] for line in lines)
    assert summary["tracks"] == 0 and summary["persons"] == 0 and summary["detections"] == 12


# -- bad input ----------------------------------------------------------------------------------------


def _untrained_checkpoint(tmp_path: Path, skeleton: str = "comotion27", teacher: str = "comotion") -> Path:
    other = get_skeleton(skeleton)
    model = build_student("micro", other.num_joints, CROP)
    path = tmp_path / f"{skeleton}.pt"
    save_checkpoint(
        path, model=model.state_dict(), step=0, teacher=teacher, skeleton=other.name,
        student=model.config_dict(), preprocess={"crop_size": CROP}, mean_pose=np.zeros((other.num_joints, 3)),
    )  # fmt: skip
    return path


def _predict(video, *model: str, out: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["predict", str(video), *model, "--render", str(out), *extra])


def test_bad_inputs_get_one_clear_line_and_exit_2(tmp_path, sports2d, capsys):
    out = tmp_path / "o.mp4"
    assert _predict(sports2d, "--checkpoint", str(tmp_path / "none.pt"), out=out) == 2
    assert "no such checkpoint" in capsys.readouterr().err

    other = _untrained_checkpoint(tmp_path)
    assert _predict(sports2d, "--checkpoint", str(other), out=out, extra=("--skeleton", "blazepose33")) == 2
    assert "comotion27, not blazepose33" in capsys.readouterr().err
    export = ["export", "--checkpoint", str(other), "--onnx", str(tmp_path / "x.onnx")]
    assert main([*export, "--skeleton", "blazepose33"]) == 2
    assert "comotion27, not blazepose33" in capsys.readouterr().err

    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert _predict(sports2d, "--checkpoint", str(other), out=out, extra=("--detector", str(tmp_path / "no.onnx"))) == 2
    err = capsys.readouterr().err
    assert "no.onnx: no such detector file" in err and err.count("\n") == 1
    assert _predict(sports2d, "--onnx", str(tmp_path / "none.onnx"), out=out) == 2
    assert "no such ONNX model" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07not an onnx model at all")
    assert _predict(sports2d, "--onnx", str(junk), out=out) == 2
    assert "junk.onnx" in capsys.readouterr().err

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    assert _predict(corrupt, "--checkpoint", str(other), out=out) == 2
    assert "corrupt.mp4" in capsys.readouterr().err
    assert not out.exists()  # nothing written for a video that does not decode
    assert main(["predict", str(sports2d), "--checkpoint", str(other)]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert main(["eval", str(sports2d), "--checkpoint", str(other), "--teacher", "mediapipe"]) == 2
    assert "predicts skeleton comotion27, but teacher mediapipe labels blazepose33" in capsys.readouterr().err

    for box, message in [
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "four numbers"),
        ("10,10,5,50", "x1 > x0"),
        ("nan,0,5,5", "four numbers"),
        ("5000,5000,6000,6000", "outside"),
    ]:
        assert _predict(sports2d, "--checkpoint", str(other), out=out, extra=(f"--box={box}",)) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.slow
def test_an_onnx_model_of_another_skeleton_is_refused(onnx_model, sports2d, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert _predict(sports2d, "--onnx", str(onnx_model), out=out, extra=("--skeleton", "comotion27")) == 2
    assert "blazepose33, not comotion27" in capsys.readouterr().err

    # Metadata that disagrees with the skeleton it names (a hand-edited or foreign file).
    model = onnx.load(str(onnx_model))
    for prop in model.metadata_props:
        if prop.key == "joints":
            prop.value = json.dumps(list(reversed(SKELETON.joints)))
    edited = tmp_path / "edited.onnx"
    onnx.save(model, str(edited))
    assert _predict(sports2d, "--onnx", str(edited), out=out) == 2
    assert "disagree with skeleton blazepose33" in capsys.readouterr().err
    assert not out.exists()


def test_parse_box():
    assert parse_box("1,2.5,30,40") == (1.0, 2.5, 30.0, 40.0)
    assert parse_box(" -5, 0, 10, 10 ") == (-5.0, 0.0, 10.0, 10.0)


# -- the tracker's rules, with a scripted student -------------------------------------------------


class _ScriptedStudent:
    """Predicts a person framed exactly like a training crop (joints spanning the middle 2/3 of the
    crop, i.e. a 25 % margin on each side), shifted by `shift` crop fractions, with visibility `vis`;
    `spread` overrides the span to put joints elsewhere in the crop."""

    name = "scripted"
    skeleton = SKELETON
    crop_size = 48
    teacher = "none"

    def __init__(self) -> None:
        self.vis, self.shift, self.spread = 0.9, (0.0, 0.0), (1 / 6, 5 / 6)
        self.seen: list[np.ndarray] = []

    def __call__(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        self.seen.extend(crops)
        j, s = SKELETON.num_joints, self.crop_size
        t = np.linspace(0.0, 1.0, j)
        lo, hi = self.spread
        # Fractions of the crop measured from its outer edge -> crop pixel centres / size.
        fx = lo + (hi - lo) * (t * 7 % 1.0) + self.shift[0]
        fy = lo + (hi - lo) * t + self.shift[1]
        fx[0], fx[-1] = lo + self.shift[0], hi + self.shift[0]  # the extent is exactly [lo, hi] both ways
        joints2d = (np.stack([fx, fy], -1) * s - 0.5) / s
        logit = np.log(self.vis / (1 - self.vis))
        b = len(crops)
        return {
            "joints3d": np.zeros((b, j, 3), np.float32),
            "joints2d": np.broadcast_to(joints2d, (b, j, 2)).astype(np.float32),
            "vis_logits": np.full((b, j), logit, np.float32),
        }


def _frames(n: int, h: int = 200, w: int = 300):
    image = np.zeros((h, w, 3), np.uint8)
    return [Frame(i, i / 30, image) for i in range(n)]


class _ScriptedDetector:
    """Finds the persons whose boxes it is given, on every frame it is asked about."""

    def __init__(self, *boxes: tuple[float, float, float, float]) -> None:
        self.boxes = np.array(boxes, np.float32).reshape(-1, 4)
        self.score = 0.9
        self.calls: list[int] = []

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(self.calls))
        return self.boxes.copy(), np.full(len(self.boxes), self.score, np.float32)


def _box_of_square(cx: float, cy: float, side: float) -> tuple[float, float, float, float]:
    """The person box a training-style square of `side` around (cx, cy) frames: its middle 2/3."""
    half = side / 3
    return cx - half, cy - half, cx + half, cy + half


def _one_person(**config) -> tuple[_ScriptedStudent, _ScriptedDetector, Tracker]:
    """A scripted student, a detector that finds one person framed by a 200 px square at (149.5,
    99.5) of 300x200 frames, and a tracker of both with `config`."""
    student, detector = _ScriptedStudent(), _ScriptedDetector(_box_of_square(149.5, 99.5, 200))
    return student, detector, Tracker(student, detector, TrackerConfig(**config))


def test_a_well_framed_person_keeps_the_square_and_misses_end_the_track_after_patience():
    student = _ScriptedStudent()
    detector = _ScriptedDetector(_box_of_square(149.5, 99.5, 200))
    tracker = Tracker(student, detector, TrackerConfig(patience=3, detect_every=100))
    confidence = [0.9] * 5 + [0.1] + [0.9] * 3 + [0.1] * 4 + [0.9] * 3
    in_view = [True] * 9 + [False] * 4 + [True] * 3  # what the detector sees
    found = []
    for frame, vis, seen in zip(_frames(len(confidence)), confidence, in_view, strict=True):
        student.vis = vis
        detector.boxes = np.array([_box_of_square(149.5, 99.5, 200)] * seen, np.float32).reshape(-1, 4)
        found.append(tracker(frame))
    # The detector starts a track. A doubt (frame 5) while the detector vouches for the person is
    # reported with its low confidence, and the detector looks again on the next frame. Once the
    # detector no longer sees them (frame 10), doubts are misses: three in a row end the track, the
    # detector looks again on the next frame, which starts a new one.
    assert [len(f.persons) for f in found] == [1] * 10 + [0] * 3 + [1] * 3
    assert [round(found[i].persons[0].confidence, 1) for i in (4, 5, 9, 13)] == [0.9, 0.1, 0.1, 0.9]
    assert [f.persons[0].track_id for f in found if f.persons] == [0] * 10 + [1] * 3
    assert [f.persons[0].tracked for f in found if f.persons] == [False] + [True] * 9 + [False, True, True]
    assert [f.index for f in found if f.detected] == [0, 6, 10, 13] and len(detector.calls) == 4
    assert found[0].persons[0].init == "detect" and found[13].persons[0].init == "detect"
    # A student that frames the person as training did leaves the detector's square where it is.
    for f in found:
        for p in f.persons:
            np.testing.assert_allclose(p.crop, [50 - 0.5, -0.5, 250 - 0.5, 200 - 0.5], atol=1e-3)
    # Predicted joints come back in frame pixels: the middle 2/3 of that square.
    np.testing.assert_allclose(
        found[0].persons[0].box, [49.5 + 200 / 6, 200 / 6 - 0.5, 249.5 - 200 / 6, 199.5 - 200 / 6], atol=0.1
    )


def test_the_square_follows_the_person_smoothly():
    student = _ScriptedStudent()
    tracker = Tracker(student, _ScriptedDetector(_box_of_square(149.5, 99.5, 200)), TrackerConfig(smoothing=0.5))
    frames = _frames(3)
    first = tracker(frames[0]).persons[0]
    student.shift = (0.1, 0.0)  # the person moved right by a tenth of the crop
    second = tracker(frames[1]).persons[0]
    third = tracker(frames[2]).persons[0]
    centre = [(p.crop[0] + p.crop[2]) / 2 for p in (first, second, third)]
    # The joints follow at once; the square moves half way (EMA 0.5), so the crop does not jitter.
    assert second.box[0] - first.box[0] == pytest.approx(20, abs=0.1)
    assert centre[1] == pytest.approx(centre[0], abs=1e-3)  # square for frame 1 was set from frame 0
    assert centre[2] - centre[1] == pytest.approx(10, abs=0.1)


def test_joints_crowding_the_crop_edge_grow_the_square():
    student = _ScriptedStudent()
    detector = _ScriptedDetector(_box_of_square(199.5, 199.5, 400))
    tracker = Tracker(student, detector, TrackerConfig(smoothing=1.0))
    frames = _frames(3, 400, 400)
    first = tracker(frames[0]).persons[0]
    # A cut-off person: joints fill only the crop's top-left corner, touching its edges. The margin
    # rule alone would shrink the square to 0.4 x 1.5 = 0.6 of its side; the edge rule grows it.
    student.spread = (0.0, 0.4)
    tracker(frames[1])
    (third,) = tracker(frames[2]).persons
    side = lambda p: p.crop[2] - p.crop[0]  # noqa: E731
    assert side(third) == pytest.approx(1.15 * side(first), rel=1e-3)


def test_every_person_gets_a_track_of_their_own_and_keeps_its_id():
    student = _ScriptedStudent()
    left, right = _box_of_square(80, 100, 120), _box_of_square(320, 120, 150)
    detector = _ScriptedDetector(left, right)
    tracker = Tracker(student, detector, TrackerConfig(detect_every=4))
    found = [tracker(f) for f in _frames(10, 240, 420)]
    assert all(len(f.persons) == 2 for f in found)
    assert all([p.track_id for p in f.persons] == [0, 1] for f in found)  # ids stay with their person
    assert [f.index for f in found if f.detected] == [0, 4, 8]  # every K frames while all tracks hold
    assert all(p.tracked for f in found[1:] for p in f.persons)  # re-detected persons keep their track
    centres = [(p.box[0] + p.box[2]) / 2 for p in found[-1].persons]
    assert centres == [pytest.approx(80, abs=1), pytest.approx(320, abs=1)]

    capped = Tracker(student, _ScriptedDetector(left, right), TrackerConfig(max_persons=1))
    assert [len(capped(f).persons) for f in _frames(5, 240, 420)] == [1] * 5


def test_a_detection_puts_a_drifted_square_back_on_its_person():
    student, _, tracker = _one_person(detect_every=3, smoothing=1.0)
    frames = _frames(4)
    tracker(frames[0])
    student.shift = (0.1, 0.0)  # the student drifts: its joints sit right of where the person is
    tracker(frames[1])
    drifted = tracker(frames[2]).persons[0]
    student.shift = (0.0, 0.0)
    back = tracker(frames[3])  # a detection frame: the square comes from the detector's box again
    assert back.detected and back.persons[0].track_id == drifted.track_id
    assert (drifted.crop[0] + drifted.crop[2]) / 2 == pytest.approx(149.5 + 20, abs=0.1)
    np.testing.assert_allclose(back.persons[0].crop, [49.5, -0.5, 249.5, 199.5], atol=1e-3)


def test_the_square_keeps_the_detectors_size_while_the_students_joints_shrink():
    student, _, tracker = _one_person(detect_every=5)
    frames = _frames(5)
    tracker(frames[0])
    student.spread = (0.3, 0.7)  # a weak student's joints span 0.4 of the crop instead of 2/3
    found = [tracker(f) for f in frames[1:]]
    # Sized on the joints the square would shrink to 0.6x in a frame, then again and again onto
    # a body part; the detector measured the person, and a person does not shrink between two runs.
    assert [p.crop[2] - p.crop[0] for f in found for p in f.persons] == [pytest.approx(200, abs=1e-3)] * 4


def test_two_people_the_detector_sees_apart_stay_two_when_one_box_lies_inside_the_other():
    student = _ScriptedStudent()
    # A wide box (a man leaning, arms out) and a narrow one mostly inside it (the woman in front).
    man, woman = (40.0, 40.0, 280.0, 190.0), (150.0, 50.0, 210.0, 180.0)
    tracker = Tracker(student, _ScriptedDetector(man, woman), TrackerConfig(detect_every=3))
    found = [tracker(f) for f in _frames(7, 240, 320)]
    # The box-inside rule alone would drop her as the man counted twice.
    assert [[p.track_id for p in f.persons] for f in found] == [[0, 1]] * 7


def test_a_track_the_detector_stops_seeing_ends_and_a_weak_box_keeps_it_but_starts_none():
    student, detector, tracker = _one_person(detect_every=2, max_unseen=3)
    frames = iter(_frames(20))
    assert len(tracker(next(frames)).persons) == 1
    detector.score = 0.2  # below `detector_score`, above `confirm_score`: it keeps the track alive
    assert all([p.track_id for p in tracker(next(frames)).persons] == [0] for _ in range(6))
    detector.boxes = detector.boxes[:0]  # the detector sees nobody; the student stays confident
    counts = [len(tracker(next(frames)).persons) for _ in range(7)]
    assert counts == [1] * 5 + [0] * 2  # detector runs 4, 6 and 8 frames on: the third ends it
    _, weak_box, weak = _one_person()
    weak_box.score = 0.2
    assert [weak(f).persons for f in _frames(3)] == [[]] * 3


def test_a_doubted_pose_holds_its_square_and_brings_the_detector_back():
    student, _, tracker = _one_person(detect_every=10, smoothing=1.0)
    frames = _frames(4)
    tracker(frames[0])
    student.vis, student.shift = 0.6, (0.1, 0.0)  # unsure (below `trust`), and drifting right
    doubted = tracker(frames[1])
    student.vis, student.shift = 0.9, (0.0, 0.0)
    again = tracker(frames[2])
    assert doubted.persons and not doubted.detected and again.detected
    np.testing.assert_allclose(again.persons[0].crop, doubted.persons[0].crop, atol=1e-3)  # held, not moved


def test_nobody_gives_empty_frames_and_the_detector_keeps_looking():
    student = _ScriptedStudent()
    empty = _ScriptedDetector()
    tracker = Tracker(student, empty)
    assert [tracker(f).persons for f in _frames(5)] == [[]] * 5
    assert len(empty.calls) == 5 and student.seen == []  # no box, no crop
    # A box the detector takes for a person but the student does not (low confidence) starts nothing.
    student.vis = 0.1
    fooled = Tracker(student, _ScriptedDetector(_box_of_square(149.5, 99.5, 200)))
    assert [fooled(f).persons for f in _frames(3)] == [[]] * 3


def test_crops_per_second_runs_the_backend_on_real_sized_batches():
    student = _ScriptedStudent()
    assert crops_per_second(student, 3, rounds=2) > 0  # a number, never asserted against a speed
    assert {c.shape for c in student.seen} == {(48, 48, 3)} and len(student.seen) == 3 * (5 + 2 * 21)


def test_the_crop_helpers_share_one_geometry(rng):
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    joints2d = rng.uniform([30, 20], [110, 100], size=(SKELETON.num_joints, 2)).astype(np.float32)
    person = PersonLabel(np.zeros((SKELETON.num_joints, 3)), joints2d, np.ones(SKELETON.num_joints), np.zeros(4))
    sample = crop_person(frame, person, source="v", frame_index=0, size=64)
    centre, side = square_around(joints2d)
    image, matrix = cut_square(frame, centre, side, 64)
    np.testing.assert_array_equal(sample.image, image)
    np.testing.assert_allclose(matrix, crop_matrix(centre, side, 64))
    back = apply_affine(invert_affine(matrix), sample.joints2d)
    np.testing.assert_allclose(back, joints2d, atol=1e-3)
