"""The CoMotion teacher's boundary, tested without CoMotion (no weights, no SMPL, no GPU here).

Inputs mimic CoMotion's documented outputs: tracks padded to 48 rows with id 0 for empty slots,
`pred_3d` (1, 48, 27, 3) in camera coordinates with the translation included, `pred_2d` its
projection with K in CoMotion's pixel convention (image spanning [0, W] x [0, H]).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from streampose.errors import StreamPoseError, TeacherUnavailable
from streampose.poses.skeletons import get_skeleton
from streampose.stream.crops import crop_person
from streampose.stream.decode import decode_frames
from streampose.teachers import TEACHERS, teacher_class
from streampose.teachers import comotion as cm
from streampose.teachers import comotion_install as cmi

ROOT = Path(__file__).resolve().parents[1]
SK = get_skeleton("comotion27")
SIZE = (480, 640)  # (height, width)
ROWS = 48

# A standing person facing the camera, metres relative to the pelvis (x right, y down, z forward).
_BODY = {
    "pelvis": (0.0, 0.0, 0.0), "left_hip": (0.09, 0.05, 0.0), "right_hip": (-0.09, 0.05, 0.0),
    "spine1": (0.0, -0.1, 0.0), "left_knee": (0.1, 0.45, 0.0), "right_knee": (-0.1, 0.45, 0.0),
    "spine2": (0.0, -0.22, 0.0), "left_ankle": (0.1, 0.85, 0.0), "right_ankle": (-0.1, 0.85, 0.0),
    "spine3": (0.0, -0.28, 0.0), "left_foot": (0.12, 0.9, -0.1), "right_foot": (-0.12, 0.9, -0.1),
    "neck": (0.0, -0.5, 0.0), "left_collar": (0.08, -0.45, 0.0), "right_collar": (-0.08, -0.45, 0.0),
    "head": (0.0, -0.6, 0.0), "left_shoulder": (0.18, -0.45, 0.0), "right_shoulder": (-0.18, -0.45, 0.0),
    "left_elbow": (0.25, -0.2, 0.0), "right_elbow": (-0.25, -0.2, 0.0), "left_wrist": (0.3, 0.05, 0.0),
    "right_wrist": (-0.3, 0.05, 0.0), "nose": (0.0, -0.65, -0.1), "right_eye": (-0.03, -0.68, -0.08),
    "left_eye": (0.03, -0.68, -0.08), "right_ear": (-0.07, -0.66, 0.0), "left_ear": (0.07, -0.66, 0.0),
}  # fmt: skip


def body(translation=(0.2, -0.1, 6.0)) -> np.ndarray:
    """(27, 3) camera-space joints, pelvis at `translation` (CoMotion includes the translation)."""
    return np.array([_BODY[name] for name in SK.joints]) + np.asarray(translation)


def comotion_project(K: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """What CoMotion's project_to_2d computes for its tracks' pred_2d."""
    z = np.maximum(pts[..., 2:], 1e-3)
    return pts[..., :2] / z * K[:, [0, 1]].diagonal() + K[:, 2]


def place_joint(K: np.ndarray, pts: np.ndarray, joint: str, u: float) -> np.ndarray:
    """Move one joint sideways so that it projects at CoMotion pixel x = u."""
    pts = pts.copy()
    j = SK.index(joint)
    pts[j, 0] = (u - K[0, 2]) * pts[j, 2] / K[0, 0]
    return pts


def make_tracks(people: dict[int, np.ndarray], K: np.ndarray, rows: dict[int, int] | None = None) -> dict:
    """CoMotion-shaped tracks: 48 rows, id 0 where empty, person `tid` in row `rows[tid]`."""
    out = {
        "betas": torch.zeros(1, ROWS, 10),
        "pose": torch.zeros(1, ROWS, 72),
        "trans": torch.zeros(1, ROWS, 3),
        "pred_3d": torch.zeros(1, ROWS, 27, 3),
        "pred_2d": torch.zeros(1, ROWS, 27, 2),
        "hidden": torch.zeros(1, ROWS, 512),
        "id": torch.zeros(1, ROWS, 1),
    }
    for i, (tid, pts) in enumerate(people.items()):
        r = (rows or {}).get(tid, i)
        out["id"][0, r, 0] = float(tid)
        out["pred_3d"][0, r] = torch.tensor(pts, dtype=torch.float32)
        out["pred_2d"][0, r] = torch.tensor(comotion_project(K, pts), dtype=torch.float32)
        out["trans"][0, r] = torch.tensor(pts[0], dtype=torch.float32)
    return out


def make_detections(people: list[tuple[np.ndarray, float]], K: np.ndarray) -> dict:
    n = len(people)
    pred_3d = np.stack([p for p, _ in people]) if n else np.zeros((0, 27, 3))
    return {
        "pred_3d": torch.tensor(pred_3d, dtype=torch.float32)[None],
        "pred_2d": torch.tensor(comotion_project(K, pred_3d), dtype=torch.float32)[None],
        "conf": torch.tensor([[c] for _, c in people], dtype=torch.float32).reshape(1, n, 1),
    }


K = cm.default_intrinsics(SIZE)


# ------------------------------------------------------------------ conversion


def test_default_intrinsics_follow_comotion_demo():
    h, w = SIZE
    assert np.allclose(K, [[2 * w, 0, w / 2], [0, 2 * w, h / 2]])
    assert np.allclose(cm.default_intrinsics(SIZE, focal=500.0)[[0, 1], [0, 1]], 500.0)
    # OpenCV-convention intrinsics move by half a pixel into CoMotion's convention.
    opencv = [[800.0, 0, (w - 1) / 2], [0, 800.0, (h - 1) / 2], [0, 0, 1]]
    assert np.allclose(cm.comotion_intrinsics(opencv), [[800, 0, w / 2], [0, 800, h / 2]])


def test_pelvis_relative_3d_and_pixel_centred_2d():
    pts = body()
    tracks = make_tracks({7: pts}, K)
    [person] = cm.tracks_to_persons(tracks, SIZE, K, {7: 3})
    assert np.allclose(person.joints3d[0], 0.0)
    assert np.allclose(person.joints3d, pts - pts[0], atol=1e-6)
    # CoMotion's image spans [0, W]; stream-pose puts pixel centres at integers: 0.5 less.
    assert np.allclose(person.joints2d, comotion_project(K, pts) - 0.5, atol=1e-3)
    assert person.visibility.shape == (27,) and (person.visibility == 1.0).all()
    x0, y0, x1, y1 = person.box
    assert x0 <= person.joints2d[:, 0].min() + 1e-3 and x1 >= person.joints2d[:, 0].max() - 1e-3
    assert y0 <= person.joints2d[:, 1].min() + 1e-3 and y1 >= person.joints2d[:, 1].max() - 1e-3


@pytest.mark.parametrize(
    "u, visible",
    [
        (640 - 0.5 - 0.01, 1.0),  # right edge: last pixel centre is x = 639 in stream-pose's pixels
        (640 - 0.5 + 0.01, 0.0),
        (0.5 + 0.01, 1.0),  # left edge: first pixel centre at x = 0
        (0.5 - 0.01, 0.0),
    ],
)
def test_visibility_at_the_frame_edges(u, visible):
    pts = place_joint(K, body(), "left_wrist", u)
    [person] = cm.tracks_to_persons(make_tracks({1: pts}, K), SIZE, K, {1: 5})
    j = SK.index("left_wrist")
    assert person.visibility[j] == visible
    others = np.delete(person.visibility, j)
    assert (others == 1.0).all()


def test_joints_behind_the_camera_or_off_the_2d_are_not_visible():
    pts = body()
    pts[SK.index("right_foot"), 2] = -0.5  # behind the camera
    tracks = make_tracks({1: pts}, K)
    tracks["pred_2d"][0, 0, SK.index("left_ear")] = torch.tensor([-50.0, 10.0])  # CoMotion's 2D disagrees
    [person] = cm.tracks_to_persons(tracks, SIZE, K, {1: 5})
    assert person.visibility[SK.index("right_foot")] == 0.0
    assert person.visibility[SK.index("left_ear")] == 0.0
    assert person.visibility.sum() == 25


def test_person_threshold():
    def with_visible(n: int) -> np.ndarray:
        pts = body()
        for name in SK.joints[n:]:
            pts = place_joint(K, pts, name, 5000.0)  # far right of the frame
        return pts

    for n, kept in [(8, True), (7, False)]:
        persons = cm.tracks_to_persons(make_tracks({1: with_visible(n)}, K), SIZE, K, {1: 5})
        assert bool(persons) == kept, n
        if kept:
            assert persons[0].visibility.sum() == 8
    assert cm.tracks_to_persons(make_tracks({1: with_visible(7)}, K), SIZE, K, {1: 5}, min_visible=7)


def test_track_ids_kept_and_empty_slots_skipped():
    a, b = body((-0.6, -0.1, 6.0)), body((0.7, -0.1, 7.0))
    tracks = make_tracks({4: a, 9: b}, K, rows={4: 0, 9: 2})  # row 1 and rows 3..47 are id 0
    assert cm.live_track_ids(tracks) == [4, 9]
    persons = cm.tracks_to_persons(tracks, SIZE, K, {4: 3, 9: 3})
    assert [p.track_id for p in persons] == [4, 9]
    assert np.allclose(persons[1].joints3d, b - b[0], atol=1e-6)


def test_accepts_comotions_tensorclass_style_attributes():
    tracks = types.SimpleNamespace(**make_tracks({2: body()}, K))
    [person] = cm.tracks_to_persons(tracks, SIZE, K, {2: 3})
    assert person.track_id == 2


def test_track_age_filter_across_consecutive_frames():
    tracks = make_tracks({1: body()}, K)
    ages: dict[int, int] = {}
    counts = []
    for _ in range(4):
        ages = cm.advance_ages(ages, cm.live_track_ids(tracks))
        counts.append(len(cm.tracks_to_persons(tracks, SIZE, K, ages, min_age=3)))
    assert counts == [0, 0, 1, 1]
    assert ages == {1: 4}


def test_vanished_tracks_are_forgotten():
    assert cm.advance_ages({1: 5, 2: 3}, [2, 3]) == {2: 4, 3: 1}
    assert cm.advance_ages({1: 5}, []) == {}


def test_score_comes_from_the_matching_detection():
    a, b = body((-0.6, -0.1, 6.0)), body((0.7, -0.1, 7.0))
    tracks = make_tracks({1: a, 2: b}, K)
    detections = make_detections([(a + [0.01, 0.0, 0.0], 2.0)], K)  # only person 1 is detected
    persons = cm.tracks_to_persons(tracks, SIZE, K, {1: 3, 2: 3}, detections=detections)
    assert [p.track_id for p in persons] == [1, 2]
    assert math.isclose(persons[0].score, 1 / (1 + math.exp(-2.0)), rel_tol=1e-5)
    assert persons[1].score == 0.0
    # No detections at all: no evidence, score 0 (never a made-up 1.0).
    empty = make_detections([], K)
    assert [p.score for p in cm.tracks_to_persons(tracks, SIZE, K, {1: 3, 2: 3}, detections=empty)] == [0.0, 0.0]


def test_flip_permutation_matches_the_names():
    documented = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 22, 24, 23, 26, 25]
    assert list(SK.flip) == documented
    assert cm.SKELETON is SK and SK.num_joints == 27
    for a, b in [("left_eye", "right_eye"), ("left_ear", "right_ear"), ("left_wrist", "right_wrist")]:
        assert SK.flip[SK.index(a)] == SK.index(b) and SK.flip[SK.index(b)] == SK.index(a)
    # CoMotion's face points after the 22 SMPL joints: nose, right_eye, left_eye, right_ear, left_ear.
    assert SK.joints[22:] == ("nose", "right_eye", "left_eye", "right_ear", "left_ear")
    assert SK.flip[SK.index("nose")] == SK.index("nose")


# ------------------------------------------------------------------ the teacher, with a stand-in model


# CoMotion's ImageNet mean, which it keeps on the CPU and subtracts from the full frame before
# moving the 512x512 crop to the model's device (comotion_demo/utils/dataloading.py).
COMOTION_IMG_MEAN = torch.tensor([0.4850, 0.4560, 0.4060]).view(-1, 1, 1)


class FakeCoMotion:
    """Stands in for CoMotion: same call shape, scripted tracks, records what it was given.

    Like CoMotion's forward, it normalises the full frame against a CPU tensor first, so a frame
    handed over on another device fails here as it does inside CoMotion.
    """

    def __init__(self, script: list[dict[int, np.ndarray]]) -> None:
        self.script = list(script)
        self.init_sizes: list[tuple[int, int]] = []
        self.calls: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
        self.frame_count = 0
        self.shot_detector = types.SimpleNamespace(seen=[])

    def init_tracks(self, res):
        self.init_sizes.append(tuple(res))

    def __call__(self, image, K, use_mps=False):
        self.calls.append((image, K, use_mps))
        _normalised = image.float() / 255 - COMOTION_IMG_MEAN
        self.frame_count += 1
        self.shot_detector.seen.append(self.frame_count)
        people = self.script.pop(0)
        Kn = K.cpu().numpy().astype(np.float64)
        return make_detections([(p, 3.0) for p in people.values()], Kn), make_tracks(people, Kn)


def test_teacher_feeds_chw_uint8_and_default_k_and_resets_per_video():
    p = body()
    fake = FakeCoMotion([{1: p}] * 4 + [{1: p}] + [{1: p}, {1: p}, {1: p}, {}, {1: p}])
    teacher = teacher_class("comotion")(model=fake)
    assert teacher.name == "comotion" and teacher.skeleton.name == "comotion27"
    frame = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)

    teacher.start_video(SIZE)
    assert fake.init_sizes == [SIZE]
    counts = [len(x) for x in teacher.label([frame] * 4)]
    assert counts == [0, 0, 1, 1]  # the track counts from its third frame
    image, k, use_mps = fake.calls[0]
    assert image.dtype == torch.uint8 and image.shape == (3, *SIZE) and image.device.type == "cpu"
    assert torch.equal(image, torch.from_numpy(frame).permute(2, 0, 1))
    assert np.allclose(k.numpy(), K) and use_mps is False

    # A new video: tracker, ages, CoMotion's frame counter and shot detector all start afresh.
    teacher.start_video(SIZE)
    assert fake.init_sizes == [SIZE, SIZE] and fake.frame_count == 0 and fake.shot_detector.seen == []
    assert teacher.label([frame]) == [[]]  # id 1 again, but a new track in a new video

    # Then id 1 lives 3 frames, vanishes, and reappears: it is young again.
    teacher.start_video(SIZE)
    counts = [len(x) for x in teacher.label([frame] * 5)]
    assert counts == [0, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="differs"):
        teacher.label([frame[:10]])
    teacher.close()


def test_frame_and_k_reach_comotion_on_the_cpu_whatever_the_models_device():
    """CoMotion's demo hands it the frame and K on the CPU; it moves only the 512x512 crop to CUDA.

    `meta` stands in for a GPU (none here): any `.to(model device)` of the frame would show.
    """
    fake = FakeCoMotion([{1: body()}] * 3)
    teacher = cm.CoMotionTeacher(model=fake, device="meta")
    frame = np.random.default_rng(1).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    teacher.start_video(SIZE)
    assert [len(x) for x in teacher.label([frame] * 3)] == [0, 0, 1]
    for image, k, _ in fake.calls:
        assert image.device.type == "cpu" and image.dtype == torch.uint8 and image.shape == (3, *SIZE)
        assert k.device.type == "cpu" and k.dtype == torch.float32 and np.allclose(k.numpy(), K)
    teacher.close()


def test_teacher_intrinsics_overrides():
    h, w = SIZE
    t = cm.CoMotionTeacher(model=FakeCoMotion([]), focal=1000.0)
    assert np.allclose(t.intrinsics_for(SIZE), [[1000, 0, w / 2], [0, 1000, h / 2]])
    t = cm.CoMotionTeacher(model=FakeCoMotion([]), intrinsics=np.array([[900.0, 0, 300], [0, 900, 200], [0, 0, 1]]))
    assert np.allclose(t.intrinsics_for(SIZE), [[900, 0, 300.5], [0, 900, 200.5]])
    with pytest.raises(StreamPoseError):
        cm.CoMotionTeacher(model=FakeCoMotion([]), focal=1.0, intrinsics=np.eye(3))


def test_device_plan():
    facts = dict(cuda=False, mps=False, macos=False, coreml=False)
    assert cmi.plan_device("auto", **{**facts, "cuda": True}) == cmi.DevicePlan("cuda", False, False, False)
    mac = cmi.plan_device("auto", **{**facts, "mps": True, "macos": True, "coreml": True})
    assert mac == cmi.DevicePlan("cpu", use_mps=True, use_coreml=True, slow=False)
    no_coreml = cmi.plan_device("auto", **{**facts, "mps": True, "macos": True})
    assert no_coreml.use_mps and not no_coreml.use_coreml
    assert cmi.plan_device("auto", **facts).slow
    with pytest.raises(TeacherUnavailable, match="CUDA"):
        cmi.plan_device("cuda", **facts)


# ------------------------------------------------------------------ install checks


def _make_package(root, *files: str):
    pkg = root / "comotion_demo"
    pkg.mkdir(exist_ok=True)
    for f in files:
        (pkg / f).parent.mkdir(parents=True, exist_ok=True)
        (pkg / f).write_bytes(b"")
    return pkg


def _message(search_path) -> str:
    with pytest.raises(TeacherUnavailable) as e:
        cmi.check_install(search_path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_pieces_are_named_one_at_a_time(tmp_path):
    path = [tmp_path]
    msg = _message(path)
    assert "comotion_demo" in msg and "git clone https://github.com/apple/ml-comotion" in msg
    assert "pip install -e ." in msg

    pkg = _make_package(tmp_path)  # an empty folder of that name is not CoMotion
    msg = _message(path)
    assert "not a complete ml-comotion package" in msg and "models/comotion.py" in msg

    _make_package(tmp_path, *cmi.PACKAGE_FILES)
    msg = _message(path)
    assert "get_pretrained_models.sh" in msg
    assert "comotion_detection_checkpoint.pt" in msg and "comotion_refine_checkpoint.pt" in msg

    _make_package(tmp_path, cmi.DETECTION_CHECKPOINT)
    msg = _message(path)
    assert "comotion_refine_checkpoint.pt" in msg and "comotion_detection_checkpoint.pt" not in msg

    _make_package(tmp_path, cmi.REFINE_CHECKPOINT)
    msg = _message(path)
    assert "SMPL_NEUTRAL.pkl" in msg and "smpl.is.tue.mpg.de" in msg and "non-commercial" in msg
    assert str(pkg / "data" / "smpl" / "SMPL_NEUTRAL.pkl") in msg

    _make_package(tmp_path, cmi.SMPL_MODEL)
    msg = _message(path)
    assert msg.startswith("chumpy is not installed") and "SMPL_NEUTRAL.pkl" in msg
    assert "git+https://github.com/mattloper/chumpy" in msg

    (tmp_path / "chumpy").mkdir()
    (tmp_path / "chumpy" / "__init__.py").write_text("")
    msg = _message(path)
    assert "scenedetect is not installed" in msg and "pip install 'scenedetect<0.7'" in msg

    dist = tmp_path / "scenedetect-0.7.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: scenedetect\nVersion: 0.7.1\n")
    msg = _message(path)
    assert "scenedetect 0.7.1 is installed" in msg and "scenedetect<0.7" in msg and "frame_rate" in msg

    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: scenedetect\nVersion: 0.6.5.2\n")
    assert cmi.check_install(path) == pkg


def test_package_found_on_sys_path(tmp_path, monkeypatch):
    pkg = _make_package(tmp_path, *cmi.PACKAGE_FILES)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cmi.find_comotion_package() == pkg


def test_check_functions_take_paths(tmp_path):
    pkg = _make_package(tmp_path, *cmi.PACKAGE_FILES, cmi.DETECTION_CHECKPOINT, cmi.REFINE_CHECKPOINT)
    cmi.check_checkpoints(pkg)
    with pytest.raises(TeacherUnavailable, match="SMPL_NEUTRAL.pkl"):
        cmi.check_smpl(pkg)
    with pytest.raises(TeacherUnavailable, match="chumpy"):
        cmi.check_chumpy([tmp_path])


@pytest.mark.skipif(importlib.util.find_spec("comotion_demo") is not None, reason="CoMotion is installed here")
def test_cli_label_exits_2_with_one_line(sports2d, tmp_path):
    assert "comotion" in TEACHERS
    result = subprocess.run(
        [sys.executable, "-m", "streampose", "label", "--teacher", "comotion", str(sports2d)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "comotion_demo" in lines[0] and "pip install -e ." in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("comotion_demo") is None,
    reason="CoMotion (comotion_demo) is not installed: it comes from GitHub (`make comotion`), which CI cannot reach",
)
def test_real_comotion_labels_a_clip_through_the_cli(sports2d, tmp_path):
    """The installed ml-comotion code, random weights and a synthetic SMPL file, 3 frames via the CLI.

    benchmarks/comotion_smoke.py checks every saved label (pelvis-relative, visible joints in the
    frame, ...) and fails otherwise; here: the first two frames give no persons (age rule) and the
    third does (two, with the seed's random weights, on the CPU).
    """
    out = tmp_path / "smoke.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "comotion_smoke.py"), "--clip", str(sports2d), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["frames"], result["joints"]) == (3, 27)
    assert result["persons_per_frame"][:2] == [0, 0] and result["persons_per_frame"][2] > 0


# ------------------------------------------------------------------ crops from CoMotion labels


def test_crop_from_comotion_labels_keeps_real_pixels(sports2d):
    frame = next(decode_frames(sports2d.read_bytes(), "sports2d", max_frames=1)).image
    size = frame.shape[:2]
    k = cm.default_intrinsics(size)
    [person] = cm.tracks_to_persons(make_tracks({1: body((0.0, -0.1, 12.0))}, k), size, k, {1: 3})
    assert person.visibility.sum() == 27  # the whole person, crop square inside the frame
    sample = crop_person(frame, person, source="sports2d", frame_index=0, size=192)
    assert sample is not None
    img = sample.image
    assert img.dtype == np.uint8 and img.shape == (192, 192, 3)
    assert len(np.unique(img)) > 100, "a crop of real video has many distinct values"
    assert np.isin(img, [0, 255]).mean() < 0.01, "not a 0/255 image (the seed multiplied uint8 by 255)"
    # The crop samples the frame: its pixels equal the frame bilinearly sampled at their preimages
    # (checked on a grid, so a shifted or rescaled crop would fail too).
    pts = person.joints2d[person.visibility > 0.5].astype(np.float64)
    lo, hi = pts.min(0), pts.max(0)
    scale = 192 / ((hi - lo).max() * 1.5)  # crop_person's default 25 % margin on each side
    for cy in range(0, 192, 13):
        for cx in range(0, 192, 13):
            x, y = (np.array([cx, cy], dtype=np.float64) - 95.5) / scale + (lo + hi) / 2
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            quad = frame[y0 : y0 + 2, x0 : x0 + 2].astype(np.float64)  # (2, 2, 3)
            weights = np.outer([1 - (y - y0), y - y0], [1 - (x - x0), x - x0])[..., None]
            expected = (quad * weights).sum(axis=(0, 1))
            assert np.abs(img[cy, cx] - expected).max() <= 2, (cx, cy)
