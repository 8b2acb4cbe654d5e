"""The CoMotion teacher against the real ml-comotion code: random weights, a synthetic SMPL file, N frames via the CLI.

Why: the teacher's unit tests use a stand-in model. This runs the installed `comotion_demo`
package itself (see `make comotion`) on a real clip, without CoMotion's weights or the SMPL body
model, which cannot be fetched here and may not be shipped (non-commercial licences, SMPL after
registration only). It copies CoMotion's code into a work folder, writes there random-weight
checkpoints of the real architecture and an SMPL file with the real keys and shapes (a synthetic
body), puts that copy first on PYTHONPATH and runs
`streampose label --teacher comotion CLIP --max-frames N --json --save labels.pt`.

Random weights make the poses meaningless; what is checked is the interface: the CLI exits 0,
every frame is labelled with 27 joints, the first two frames of the video give no persons (the
age rule, min_age=3), and every person is pelvis-relative with its visible joints inside the
frame. The user's own CoMotion install is read, never written. On a machine with CUDA, the
teacher's `auto` device picks it.

    python benchmarks/comotion_smoke.py                          # sports2d, 3 frames, full size
    python benchmarks/comotion_smoke.py --max-side 640 --out comotion_smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from streampose.errors import StreamPoseError
from streampose.poses.labels import load_labels
from streampose.sources.samples import sample_clip
from streampose.teachers.comotion_install import SMPL_MODEL, find_comotion_package

ROOT = Path(__file__).resolve().parents[1]

# SMPL's 24 joints: parents, and an approximate neutral T-pose (metres, y up, +x = body's left).
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
T_POSE = [
    (0, 0, 0), (0.06, -0.09, 0), (-0.06, -0.09, 0), (0, 0.11, 0), (0.11, -0.47, 0), (-0.11, -0.47, 0),
    (0, 0.24, 0), (0.07, -0.87, -0.04), (-0.07, -0.87, -0.04), (0, 0.29, 0), (0.12, -0.93, 0.08),
    (-0.12, -0.93, 0.08), (0, 0.5, -0.02), (0.08, 0.41, 0), (-0.08, 0.41, 0), (0, 0.58, 0.03),
    (0.19, 0.44, -0.01), (-0.19, 0.44, -0.01), (0.44, 0.43, -0.03), (-0.44, 0.43, -0.03),
    (0.7, 0.43, -0.03), (-0.7, 0.43, -0.03), (0.78, 0.43, -0.03), (-0.78, 0.43, -0.03),
]  # fmt: skip
SMPL_VERTICES = 6890
SMPL_FACES = 13776
CPU_WARNING_START = "the comotion teacher is running on the CPU"


def synthetic_smpl(seed: int = 0) -> dict:
    """An SMPL neutral model with the real file's keys, shapes and types, but a made-up body.

    Vertices sit in blobs around the T-pose joints, each skinned to its blob's joint, which
    regresses from its blob. `shapedirs` is a chumpy array as in the real file (so unpickling
    needs chumpy, as it does for users), `J_regressor` a scipy sparse matrix.
    """
    import chumpy

    rng = np.random.default_rng(seed)
    joints = np.asarray(T_POSE, dtype=np.float64)
    part = np.arange(SMPL_VERTICES) % len(joints)
    v_template = joints[part] + rng.normal(0.0, 0.03, (SMPL_VERTICES, 3))
    weights = np.eye(len(joints))[part]
    regressor = (weights / weights.sum(axis=0)).T  # (24, 6890), rows sum to 1
    kintree = np.array([SMPL_PARENTS, range(len(joints))], dtype=np.int64)
    kintree[0, 0] = 4294967295  # the real file's "no parent"
    return {
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "J_regressor_prior": scipy.sparse.csc_matrix(regressor),
        "J": regressor @ v_template,
        "v_template": v_template,
        "shapedirs": chumpy.Ch(rng.normal(0.0, 0.01, (SMPL_VERTICES, 3, 10))),
        "posedirs": rng.normal(0.0, 0.001, (SMPL_VERTICES, 3, 207)),
        "weights": weights,
        "weights_prior": weights.copy(),
        "kintree_table": kintree,
        "f": rng.integers(0, SMPL_VERTICES, (SMPL_FACES, 3)).astype(np.uint32),
        "vert_sym_idxs": np.arange(SMPL_VERTICES),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def copy_comotion(package_dir: Path, work: Path, seed: int) -> Path:
    """CoMotion's code (not its data files) under work/, with a synthetic SMPL file and random-weight checkpoints.

    CoMotion reads both from fixed paths inside its package, hence the copy. The checkpoints are
    state dicts of its own modules built with `pretrained=False`, so every key and shape is real.
    """
    target = work / "comotion_demo"
    shutil.copytree(package_dir, target, ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.pkl", "*.mlpackage"))
    shutil.copy2(package_dir / "data/smpl/extra_smpl_reference.pt", target / "data/smpl/extra_smpl_reference.pt")
    with open(target / SMPL_MODEL, "wb") as f:
        pickle.dump(synthetic_smpl(seed), f, protocol=2)
    sys.path.insert(0, str(work))  # CoMotion's checkpoint paths are relative to the module imported
    from comotion_demo.models import detect, refine

    if not Path(detect.__file__).is_relative_to(target):
        raise SystemExit(f"imported CoMotion from {detect.__file__}, not from the copy in {target}")
    torch.manual_seed(seed)
    detection = detect.CoMotionDetect(pretrained=False)
    torch.save(detection.state_dict(), detect.PYTORCH_CHECKPOINT_PATH)
    refinement = refine.PoseRefinement(detection.feat_dim, detection.cfg.pose_embed_dim, pretrained=False)
    torch.save(refinement.state_dict(), refine.PYTORCH_CHECKPOINT_PATH)
    return target


def check_labels(path: Path, frames: int) -> list[int]:
    """Persons per frame, after checking every label the CLI saved; raises SystemExit on a fault."""
    header, labels = load_labels(path)
    if header["teacher"] != "comotion" or header["skeleton"] != "comotion27" or len(labels) != frames:
        raise SystemExit(f"labels file: {header['teacher']}/{header['skeleton']}, {len(labels)} frames")
    for i, frame in enumerate(labels):
        if i < 2 and frame.persons:
            raise SystemExit(f"frame {i} has persons, but no track is 3 frames old before the third frame")
        h, w = frame.size
        for p in frame.persons:
            seen = p.visibility >= 0.5
            x, y = p.joints2d[seen].T
            if not (
                p.joints3d.shape == (27, 3)
                and np.allclose(p.joints3d[0], 0.0)
                and np.isfinite(p.joints3d).all()
                and seen.sum() >= 8
                and ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).all()
                and p.track_id > 0
                and 0.0 <= p.score <= 1.0
            ):
                raise SystemExit(f"frame {i}: a malformed person (track {p.track_id})")
    return [len(frame.persons) for frame in labels]


def run(clip: Path, frames: int, max_side: int | None, work: Path, seed: int) -> dict:
    start = time.perf_counter()
    copy = copy_comotion(find_comotion_package(), work, seed)
    build_s = time.perf_counter() - start
    path = [str(work), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from streampose.teachers.comotion_install import find_comotion_package; print(find_comotion_package())",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if Path(found) != copy:
        raise SystemExit(f"the CLI would use CoMotion at {found}, not the copy in {copy}")
    labels = work / "labels.jsonl"  # JSON Lines since the engine merge; load_labels reads either format
    cmd = [sys.executable, "-m", "streampose", "label", "--teacher", "comotion", str(clip)]
    cmd += ["--max-frames", str(frames), "--json", "--save", str(labels)]
    cmd += ["--max-side", str(max_side)] if max_side else []
    start, cpu_before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    wall_s, cpu_after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    if (summary["frames"], summary["joints"], summary["skeleton"]) != (frames, 27, "comotion27"):
        raise SystemExit(f"unexpected summary: {summary}")
    on_cpu = not torch.cuda.is_available()
    if on_cpu and CPU_WARNING_START not in proc.stderr:
        raise SystemExit(f"no CPU warning on stderr:\n{proc.stderr[-2000:]}")
    return {
        "clip": clip.name,
        "device": "cpu" if on_cpu else "cuda",
        "frames": frames,
        "persons_per_frame": check_labels(labels, frames),
        "persons": summary["persons"],
        "joints": summary["joints"],
        "label_s": summary["seconds"],
        "s_per_frame": round(summary["seconds"] / frames, 1),
        "cli_wall_s": round(wall_s, 1),  # model loading included
        "cli_cpu_s": round(cpu_s, 1),  # CPU seconds of the CLI process, all threads: less sensitive to a shared machine
        "load_average": round(os.getloadavg()[0], 1),
        "build_s": round(build_s, 1),
        "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default="sports2d", help="a sample clip name or a video path")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--max-side", type=int, default=None, help="scale frames so the longest side is at most this")
    ap.add_argument("--seed", type=int, default=0, help="for the random weights and the synthetic body")
    ap.add_argument("--out", type=Path, default=None, help="also write the result here as JSON")
    args = ap.parse_args()
    clip = Path(args.clip) if Path(args.clip).is_file() else sample_clip(args.clip)
    with tempfile.TemporaryDirectory(prefix="comotion-smoke-") as work:
        try:
            result = run(clip, args.frames, args.max_side, Path(work), args.seed)
        except StreamPoseError as e:  # CoMotion not installed, a clip that does not decode, ...
            sys.exit(f"error: {e}")
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
