"""Checkpoints: everything needed to resume training exactly, or to run the student alone.

Students are meant to be shared, so a checkpoint is data, never code: it is read with
``torch.load(weights_only=True)``, whose unpickler builds only tensors and plain containers
(dict, list, tuple, str, int, float, bool, None) and refuses every other class or function a
crafted pickle names. `save_checkpoint` therefore writes only such values: numpy arrays become
``{"__ndarray__": tensor}`` (turned back into arrays on load), numpy scalars become Python
numbers, RNG states are lists and tensors (`rng_states`), and anything else is refused at save
time rather than producing a file that cannot be read back. Checkpoints of format 1 (pickles
holding numpy objects) and crafted files are refused with one line; nothing in them runs.

Written atomically (see `files`), so a crash or a kill mid-write leaves the previous
`last.pt` intact.
"""

from __future__ import annotations

import pickle
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streampose.errors import StreamPoseError
from streampose.files import atomic_torch_save
from streampose.model.student import BlockSpec, Student, StudentConfig
from streampose.poses.skeletons import get_skeleton
from streampose.stream.crops import MAX_CROP_SIZE

FORMAT = "streampose-checkpoint/2"
_NDARRAY = "__ndarray__"


def rng_states() -> dict:
    """torch's, numpy's and Python's global RNG states as a tensor, lists and ints."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss": python_gauss},
    }


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def _to_plain(value: Any, where: str) -> Any:
    """`value` as what the weights-only unpickler can rebuild (see the module docstring)."""
    if value is None or isinstance(value, (str, bool, int, float, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"checkpoint entry {where}: numpy arrays of Python objects cannot be stored")
        return {_NDARRAY: torch.from_numpy(np.array(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        if _is_state_dict(value):
            return value  # kept as it is (an OrderedDict with its version _metadata)
        if bad := [k for k in value if not isinstance(k, (str, int))]:
            raise TypeError(f"checkpoint entry {where}: keys must be strings or integers, not {bad[0]!r}")
        return {k: _to_plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"checkpoint entry {where}: {type(value).__name__} is not plain data (tensors, numbers, ...)")


def _from_plain(value: Any) -> Any:
    if isinstance(value, dict) and not _is_state_dict(value):
        if set(value) == {_NDARRAY}:
            return value[_NDARRAY].numpy()
        return {k: _from_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_from_plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def _is_state_dict(value: Mapping) -> bool:
    return bool(value) and _NDARRAY not in value and all(isinstance(v, torch.Tensor) for v in value.values())


def save_checkpoint(path: str | Path, **state) -> Path:
    """Write `state` (state dicts, numbers, strings, numpy arrays, `rng_states()`) to `path` atomically."""
    plain = {key: _to_plain(value, key) for key, value in state.items()}
    return atomic_torch_save({"format": FORMAT, **plain}, path)


def load_checkpoint(path: str | Path, *, student: bool = False) -> dict:
    """Read a checkpoint written by `save_checkpoint`, with a clear error for anything else;
    `student`: also check the student it holds (`check_student`), for callers that build it."""
    path = Path(path)
    if not path.is_file():
        raise StreamPoseError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        if named:
            raise StreamPoseError(
                f"{path}: refused: it holds pickled Python objects ({named.group(1)}) that loading could run "
                f"as code; {FORMAT} checkpoints hold only tensors and plain data (docs/training.md)"
            ) from None
        raise StreamPoseError(f"{path}: not a readable checkpoint (not a weights-only torch file)") from None
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise StreamPoseError(f"{path}: not a readable checkpoint ({type(e).__name__}: {reason})") from None
    if not isinstance(ckpt, dict) or not str(ckpt.get("format", "")).startswith("streampose-checkpoint/"):
        raise StreamPoseError(f"{path}: not a stream-pose checkpoint")
    if ckpt["format"] != FORMAT:
        raise StreamPoseError(f"{path}: a {ckpt['format']} checkpoint; this version reads {FORMAT} (retrain)")
    if student:
        try:
            check_student(ckpt)
        except ValueError as e:
            raise StreamPoseError(f"{path}: {e}") from None
    return _from_plain(ckpt)


def check_student(ckpt: dict) -> None:
    """A checkpoint's skeleton, student config and weights, checked before anything is built from
    them: the config against its schema (`StudentConfig.from_dict`), then the weights' names and
    shapes against those of the network it describes, built on the meta device (no memory)."""
    skeleton = ckpt.get("skeleton")
    try:
        joints = get_skeleton(skeleton).num_joints if isinstance(skeleton, str) else None
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    if joints is None:
        raise ValueError(f"the skeleton must be a name, not {type(skeleton).__name__}")
    config = student_config(ckpt.get("student"))
    if config.num_joints != joints:
        raise ValueError(f"the student predicts {config.num_joints} joints, skeleton {skeleton} has {joints}")
    weights = ckpt.get("model")
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError("the weights (model) must be a table of tensors")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Student(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        key = next(k for k in sorted(set(got) | set(expected)) if got.get(k) != expected.get(k))
        raise ValueError(
            f"the weights disagree with the student config (at {key}: {got.get(key, 'missing')} in the file, "
            f"{expected.get(key, 'none')} in the config)"
        )


#: The largest sizes a student config may ask for: several times any named size's, far below what
#: would not fit in memory (a crafted checkpoint must not allocate gigabytes before it is refused).
MAX_CHANNELS = 4096
MAX_BLOCKS = 64
MAX_KERNEL = 15
_LIMITS = {"num_joints": 512, "crop_size": MAX_CROP_SIZE} | dict.fromkeys(("stem", "neck", "head"), MAX_CHANNELS)


def student_config(d: Any) -> StudentConfig:
    """`StudentConfig.from_dict`, checked first (a checkpoint or an export is data from anywhere):
    its keys, their types, and sizes in the range a student has. ValueError says what is wrong."""
    if not isinstance(d, dict):
        raise ValueError(f"a student config must be a table, not {type(d).__name__}")
    fields = set(StudentConfig.__dataclass_fields__)
    if set(d) != fields:
        wrong = [f"unknown {', '.join(sorted(map(str, set(d) - fields)))}"] if set(d) - fields else []
        wrong += [f"missing {', '.join(sorted(fields - set(d)))}"] if fields - set(d) else []
        raise ValueError(f"student config keys: {'; '.join(wrong)}")
    if not isinstance(d["name"], str):
        raise ValueError("student config name must be a string")
    for key, high in _LIMITS.items():
        _check_int(d[key], key, high)
    blocks = d["blocks"]
    if not isinstance(blocks, list | tuple) or not 0 < len(blocks) <= MAX_BLOCKS:
        raise ValueError(f"student config blocks must be a list of 1 to {MAX_BLOCKS} blocks")
    for i, block in enumerate(blocks):
        if not isinstance(block, list | tuple) or len(block) != len(BlockSpec._fields):
            raise ValueError(f"student config block {i} must be [{', '.join(BlockSpec._fields)}]")
        kernel, expand, out, se, hswish, stride = block
        for value, name in ((kernel, "kernel"), (expand, "expand"), (out, "out"), (stride, "stride")):
            _check_int(value, f"block {i} {name}", MAX_KERNEL if name == "kernel" else MAX_CHANNELS)
        if not (isinstance(se, bool) and isinstance(hswish, bool)):
            raise ValueError(f"student config block {i}: se and hswish must be true or false")
    return StudentConfig.from_dict(d)


def _check_int(value: Any, what: str, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"student config {what} must be a whole number from 1 to {high}, not {value!r}")


def student_from(ckpt: dict, expect_skeleton: str | None = None) -> Student:
    """The trained student of a loaded checkpoint, in eval mode, on CPU."""
    if expect_skeleton and ckpt["skeleton"] != expect_skeleton:
        raise StreamPoseError(
            f"the checkpoint's student was trained on skeleton {ckpt['skeleton']}, not {expect_skeleton}"
        )
    get_skeleton(ckpt["skeleton"])
    model = Student.from_config(ckpt["student"])
    model.load_state_dict(ckpt["model"])
    return model.eval()
