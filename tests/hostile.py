"""Crafted inputs for the hostile-input tests (issue 23): the real CLI in a subprocess, real
checkpoints, real ONNX files and labels files, made small and broken on purpose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from streampose.poses.labels import LABELS_FORMAT

JOINTS = 33  # blazepose33, the mediapipe teacher's skeleton
CROP = 64
HEADER = {"format": LABELS_FORMAT, "teacher": "mediapipe", "skeleton": "blazepose33"}


def run_cli(*args: object, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m streampose ARGS` as a user runs it."""
    cmd = [sys.executable, "-m", "streampose", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


#: Runs `python -m streampose ARGS` as its child and prints the child's peak RSS. Measured from a
#: small process, not from pytest: Linux carries the forking process's peak RSS across exec, so a
#: child forked from a 2 GB pytest would report 2 GB whatever it did.
_PEAK = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "streampose", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(f"peak_kib={usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_cli_peak(*args: object, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    """`run_cli`, and the command's peak resident memory in GB."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    stderr, _, peak = proc.stderr.rstrip("\n").rpartition("\n")
    assert peak.startswith("peak_kib="), proc.stderr[-2000:]
    proc.stderr = stderr + "\n"
    return proc, int(peak.removeprefix("peak_kib=")) / 2**20


def assert_one_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 2, exactly one `error:` line on stderr (holding `words`), no traceback; the line."""
    tail = proc.stderr[-3000:]
    assert proc.returncode == 2, f"exit {proc.returncode}: {tail}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, tail
    assert all(w in errors[0] for w in words), errors[0]
    return errors[0]


def person(joints: int = JOINTS, **fields) -> dict:
    return {
        "joints3d": [[0.0, 0.1, 0.2]] * joints,
        "joints2d": [[10.0, 20.0]] * joints,
        "visibility": [1.0] * joints,
        "box": [0.0, 0.0, 50.0, 80.0],
        "track_id": 0,
        "score": 0.9,
    } | fields


def frame(**fields) -> dict:
    return {"index": 0, "timestamp": 0.0, "size": [180, 320], "source": "clip", "persons": [person()]} | fields


def write_labels(path: Path, *records: dict, header: dict = HEADER) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in (header, *records)))
    return path


def student_state(**override) -> dict:
    """A real (untrained) micro student's checkpoint entries, with `override` replacing some."""
    from streampose.model.preprocess import IMAGE_MEAN, IMAGE_STD
    from streampose.model.student import build_student

    model = build_student("micro", JOINTS, CROP)
    return {
        "model": model.state_dict(), "step": 1, "teacher": "mediapipe", "skeleton": "blazepose33",
        "student": model.config_dict(), "preprocess": {"crop_size": CROP, "mean": IMAGE_MEAN, "std": IMAGE_STD},
        "mean_pose": np.zeros((JOINTS, 3), np.float32), "used_videos": [],
    } | override  # fmt: skip


def with_metadata(model: onnx.ModelProto, **props: str) -> onnx.ModelProto:
    """A copy of `model` whose metadata_props have `props` set."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    merged = {p.key: p.value for p in out.metadata_props} | props
    del out.metadata_props[:]
    for key, value in merged.items():
        out.metadata_props.add(key=key, value=value)
    return out


def nan_student(metadata: dict[str, str]) -> onnx.ModelProto:
    """A student whose 3D and 2D joints are NaN for every crop (built with onnx.helper)."""
    inits = [helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])]
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["per_crop"], keepdims=0)]
    return _student_graph(metadata, inits, nodes, joints=float("nan"))


def memory_bomb(metadata: dict[str, str], shape: tuple[int, ...] = (1 << 16, 1 << 15)) -> onnx.ModelProto:
    """A student that asks onnxruntime for a tensor of `shape` (8 GB of float32 by default) as it runs."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    inits = [helper.make_tensor("shape", TensorProto.INT64, [len(shape)], list(shape)),
             helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])]  # fmt: skip
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=one),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=0),
        helper.make_node("Add", ["mean", "total"], ["per_crop"]),
    ]
    return _student_graph(metadata, inits, nodes, joints=0.0)


def _student_graph(metadata: dict[str, str], inits: list, nodes: list, joints: float) -> onnx.ModelProto:
    """A graph with a student's input and outputs, `nodes` computing one value per crop (`per_crop`);
    each output is that value plus a constant: `joints` for the joints, 0 for the visibility logits."""
    shapes = {"joints3d": ["batch", JOINTS, 3], "joints2d": ["batch", JOINTS, 2], "vis_logits": ["batch", JOINTS]}
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, CROP, CROP])
    outputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in shapes.items()]
    inits = [*inits, helper.make_tensor("to3", TensorProto.INT64, [2], [1, 2]),
             helper.make_tensor("to2", TensorProto.INT64, [1], [1])]  # fmt: skip
    nodes = [*nodes, helper.make_node("Unsqueeze", ["per_crop", "to3"], ["per_crop3"]),
             helper.make_node("Unsqueeze", ["per_crop", "to2"], ["per_crop2"])]  # fmt: skip
    for key, shape in shapes.items():
        size = JOINTS * (shape[2] if len(shape) == 3 else 1)
        value = joints if key != "vis_logits" else 0.0
        inits.append(helper.make_tensor(f"{key}_c", TensorProto.FLOAT, [1, *shape[1:]], [value] * size))
        nodes.append(helper.make_node("Add", [f"per_crop{len(shape)}", f"{key}_c"], [key]))
    graph = helper.make_graph(nodes, "crafted-student", [image], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    return with_metadata(model, **metadata)
