"""`streampose export`: the trained student as one self-describing ONNX file (and, for users who
stay in PyTorch, its weights as safetensors with the same metadata), with a model card beside it.

Why ONNX: the student then runs wherever onnxruntime does (no PyTorch). Why self-describing:
everything `streampose predict --onnx` and `eval --onnx` need besides pixels (the skeleton, the
crop size, the normalisation, the student's config, the teacher it learnt from, the mean
training pose for eval's baseline) rides in the model's ``metadata_props``, so the .onnx file is
the whole deliverable.

Graph contract (``FORMAT``):
- input ``image``: float32 (batch, 3, S, S), RGB, ``(pixel / 255 - mean) / std`` with ``mean``
  and ``std`` from the metadata (ImageNet statistics), S = ``crop_size``. A float input keeps
  the graph identical to the trained network, so ONNX and PyTorch agree to float rounding;
  the price is that callers normalise (one multiply-add per value).
- outputs ``joints3d`` (batch, J, 3) metres root-relative, ``joints2d`` (batch, J, 2) crop
  pixels / S, ``vis_logits`` (batch, J); see `streampose.model.student`.
- the batch axis is dynamic; opset 17 (what onnxruntime 1.1x and later all run).

Exported with the TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which this project does not depend on.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from streampose.errors import StreamPoseError
from streampose.files import atomic_write
from streampose.model.card import model_card, write_model_card
from streampose.model.checkpoint import check_student, load_checkpoint, student_from
from streampose.model.preprocess import IMAGE_MEAN, IMAGE_STD
from streampose.model.student import Student
from streampose.poses.skeletons import get_skeleton

FORMAT = "streampose-student-onnx/1"
SAFETENSORS_FORMAT = "streampose-student-safetensors/1"
OPSET = 17
INPUT = "image"
OUTPUTS = ("joints3d", "joints2d", "vis_logits")


class _TupleOutputs(nn.Module):
    """The student with its dict outputs as a tuple in `OUTPUTS` order: the exporter names
    outputs positionally, so the order must not depend on dict iteration."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[k] for k in OUTPUTS)


def onnx_metadata(ckpt: dict) -> dict[str, str]:
    """The metadata_props written into the ONNX file (every value a string; JSON where structured)."""
    try:
        skeleton = get_skeleton(ckpt["skeleton"])
    except KeyError as e:
        raise StreamPoseError(f"the checkpoint's skeleton is unknown: {e.args[0]}") from None
    pre = ckpt.get("preprocess", {})
    meta = {
        "streampose.format": FORMAT,
        "skeleton": skeleton.name,
        "joints": json.dumps(list(skeleton.joints)),
        "flip": json.dumps(list(skeleton.flip)),
        "bones": json.dumps([list(b) for b in skeleton.bones]),
        "root": json.dumps(list(skeleton.root)),
        "crop_size": str(int(ckpt["student"]["crop_size"])),
        "mean": json.dumps(list(pre.get("mean", IMAGE_MEAN))),
        "std": json.dumps(list(pre.get("std", IMAGE_STD))),
        "student": json.dumps(ckpt["student"]),
        "teacher": str(ckpt.get("teacher", "")),
        "step": str(ckpt.get("step", "")),
        "input": f"{INPUT}: float32 (batch, 3, S, S) RGB, (pixel / 255 - mean) / std",
        "outputs": "joints3d (batch, J, 3) metres root-relative; joints2d (batch, J, 2) crop pixels / S; "
        "vis_logits (batch, J)",
    }
    if "mean_pose" in ckpt:
        meta["mean_pose"] = json.dumps(np.asarray(ckpt["mean_pose"], dtype=np.float64).tolist())
    return meta


def export_onnx(checkpoint: str | Path | dict, path: str | Path) -> Path:
    """Write the checkpoint's student to `path` as ONNX (see the module docstring); returns `path`.

    `checkpoint` is a checkpoint file or an already loaded checkpoint dict. The file is checked
    with ``onnx.checker`` before it is written, and written atomically, so `path` is either the
    previous file or a complete, valid model.
    """
    data = onnx_bytes(checkpoint)
    return atomic_write(path, lambda f: f.write(data))


def onnx_bytes(checkpoint: str | Path | dict) -> bytes:
    """The checkpoint's student as a checked ONNX model, in memory (what `export_onnx` writes)."""
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, student=True)
    metadata = onnx_metadata(ckpt)
    model = student_from(ckpt).float().to(memory_format=torch.contiguous_format)
    size = model.config.crop_size
    if "crop_size" in ckpt.get("preprocess", {}) and ckpt["preprocess"]["crop_size"] != size:
        raise StreamPoseError(
            f"the checkpoint's preprocess crop size {ckpt['preprocess']['crop_size']} differs from its student's {size}"
        )
    # Batch 2 in the example, so no size-1 special case can be baked into the trace.
    example = torch.zeros(2, 3, size, size)
    buffer = io.BytesIO()
    batch_axis = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript (see above).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            _TupleOutputs(model).eval(),
            (example,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes={name: batch_axis for name in (INPUT, *OUTPUTS)},
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    # The tracer names the joint axis after an internal Slice; state the real, fixed shapes.
    j = model.config.num_joints
    for output, dims in zip(proto.graph.output, (("batch", j, 3), ("batch", j, 2), ("batch", j)), strict=True):
        shape = output.type.tensor_type.shape
        shape.ClearField("dim")
        for d in dims:
            dim = shape.dim.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d
    proto.doc_string = "stream-pose student: person crop -> 3D/2D joints and visibility"
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def read_metadata(path: str | Path | bytes) -> dict[str, str]:
    """The metadata_props of an ONNX file or model bytes (without loading its weights into a session)."""
    if isinstance(path, bytes):
        return {p.key: p.value for p in onnx.load_from_string(path).metadata_props}
    path = Path(path)
    if not path.is_file():
        raise StreamPoseError(f"{path}: no such ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise StreamPoseError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    return {p.key: p.value for p in proto.metadata_props}


def export_safetensors(checkpoint: str | Path | dict, path: str | Path) -> Path:
    """Write the student's weights to `path` as safetensors (data only, never code), atomically, with
    the ONNX file's metadata; `load_safetensors` rebuilds the student from it."""
    from safetensors.torch import save

    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, student=True)
    metadata = onnx_metadata(ckpt) | {"streampose.format": SAFETENSORS_FORMAT}
    metadata["input"] = metadata["input"].removeprefix(f"{INPUT}: ")
    tensors = {k: v.detach().contiguous() for k, v in student_from(ckpt).state_dict().items()}
    data = save(tensors, metadata=metadata)
    return atomic_write(path, lambda f: f.write(data))


def load_safetensors(path: str | Path) -> tuple[Student, dict[str, str]]:
    """The student in a `--safetensors` export, in eval mode on CPU, and the file's metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as e:
        raise StreamPoseError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    if metadata.get("streampose.format") != SAFETENSORS_FORMAT:
        raise StreamPoseError(f"{path}: not a stream-pose student (no {SAFETENSORS_FORMAT} metadata)")
    try:
        student = json.loads(metadata["student"])
        check_student({"skeleton": metadata.get("skeleton"), "student": student, "model": weights})
    except (KeyError, ValueError, RecursionError) as e:
        raise StreamPoseError(f"{path}: not a usable stream-pose student ({e})") from None
    model = Student.from_config(student)
    model.load_state_dict(weights)
    return model.eval(), metadata


def export(
    checkpoint: str | Path,
    onnx_path: str | Path | None,
    safetensors_path: str | Path | None,
    expect_skeleton: str | None = None,
) -> list[Path]:
    """The exports asked for, then the model card beside the first (`<stem>.card.md` and `.card.json`,
    from the checkpoint and its run folder); the paths written."""
    if onnx_path is None and safetensors_path is None:
        raise StreamPoseError("nothing to do: give --onnx student.onnx and/or --safetensors student.safetensors")
    ckpt = load_checkpoint(checkpoint, student=True)
    if expect_skeleton and ckpt["skeleton"] != expect_skeleton:
        raise StreamPoseError(f"{checkpoint}: its student predicts skeleton {ckpt['skeleton']}, not {expect_skeleton}")
    written = {}
    if onnx_path is not None:
        written["onnx"] = export_onnx(ckpt, onnx_path)
    if safetensors_path is not None:
        written["safetensors"] = export_safetensors(ckpt, safetensors_path)
    first = next(iter(written.values()))
    files = {kind: os.path.relpath(path, first.parent) for kind, path in written.items()}
    card = model_card(ckpt, Path(checkpoint).parent, files)
    return [*written.values(), *write_model_card(card, first.parent, first.stem)]
