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
    """A graph with a student's input and outputs whose 3D and 2D joints are NaN, built with onnx.helper."""
    shapes = {"joints3d": ["batch", JOINTS, 3], "joints2d": ["batch", JOINTS, 2], "vis_logits": ["batch", JOINTS]}
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, CROP, CROP])
    outputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in shapes.items()]
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
        helper.make_tensor("to3", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("to2", TensorProto.INT64, [1], [1]),
        helper.make_tensor("joints3d_c", TensorProto.FLOAT, [1, JOINTS, 3], [float("nan")] * JOINTS * 3),
        helper.make_tensor("joints2d_c", TensorProto.FLOAT, [1, JOINTS, 2], [float("nan")] * JOINTS * 2),
        helper.make_tensor("vis_logits_c", TensorProto.FLOAT, [1, JOINTS], [0.0] * JOINTS),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=0),  # (batch,)
        helper.make_node("Unsqueeze", ["mean", "to3"], ["mean3"]),
        helper.make_node("Unsqueeze", ["mean", "to2"], ["mean2"]),
        helper.make_node("Add", ["mean3", "joints3d_c"], ["joints3d"]),
        helper.make_node("Add", ["mean3", "joints2d_c"], ["joints2d"]),
        helper.make_node("Add", ["mean2", "vis_logits_c"], ["vis_logits"]),
    ]
    graph = helper.make_graph(nodes, "nan-student", [image], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    return with_metadata(model, **metadata)
