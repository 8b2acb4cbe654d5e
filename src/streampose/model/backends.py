"""One way to run a student: a checkpoint in PyTorch or an exported model in onnxruntime.

`evaluate` and `predict` both run the student through a `Backend`, so every command takes
``--checkpoint`` or ``--onnx`` alike and gets the same numbers from either. A checkpoint runs in
the fastest backend installed for the batches it will get (`open_backend`'s ``backend="auto"``,
`fastest_backend`): one crop at a time (`predict`) on a CPU with onnxruntime, its student
exported in memory (`export.onnx_bytes`); batches (`eval`) in torch's preferred layout and
precision (docs/benchmarks.md, P4). Both backends take
uint8 crops and share one preprocessing (`preprocess.normalize_images`); `TorchBackend` runs in
the layout and precision `preprocess.prepare_model` picks, `OnnxBackend` in float32.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from streampose.errors import StreamPoseError
from streampose.model.checkpoint import load_checkpoint, student_from
from streampose.model.export import FORMAT as ONNX_FORMAT
from streampose.model.export import INPUT as ONNX_INPUT
from streampose.model.export import OUTPUTS, onnx_bytes, read_metadata
from streampose.model.preprocess import (
    CPU_AMP_MIN_BATCH,
    IMAGE_MEAN,
    IMAGE_STD,
    fold_batchnorm,
    normalize_images,
    prepare_model,
)
from streampose.poses.skeletons import Skeleton, get_skeleton
from streampose.stream.crops import CROP_SIZES


def pick_device(name: str) -> torch.device:
    """``"auto"``: CUDA, else MPS, else the CPU; any other name as torch spells it."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Backend(Protocol):
    """Runs the student on a batch of crops. Implementations: `TorchBackend`, `OnnxBackend`.

    ``mean_pose`` is the mean training pose (J, 3), for the baseline `evaluate` reports; None when
    the model does not carry it (ONNX files exported before it was written into the metadata).
    """

    name: str
    skeleton: Skeleton
    crop_size: int
    teacher: str
    mean_pose: np.ndarray | None

    def __call__(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (B, S, S, 3) RGB crops -> float32 numpy ``joints3d`` (B, J, 3), ``joints2d``
        (B, J, 2) in crop pixels / S, ``vis_logits`` (B, J)."""
        ...


def _check_normalisation(mean: Iterable[float], std: Iterable[float], what: str) -> None:
    """Both backends normalise with `normalize_images` (one definition of preprocessing), which uses
    the ImageNet statistics every student so far trained with; refuse anything else rather than
    feed a model inputs scaled unlike its training data."""
    if not (np.allclose(list(mean), IMAGE_MEAN, atol=1e-6) and np.allclose(list(std), IMAGE_STD, atol=1e-6)):
        raise StreamPoseError(
            f"{what} expects normalisation mean {list(mean)}, std {list(std)}; this version only knows "
            f"mean {list(IMAGE_MEAN)}, std {list(IMAGE_STD)}"
        )


def _check_skeleton(name: str, expect: str | None, what: str) -> Skeleton:
    if expect and name != expect:
        raise StreamPoseError(f"{what} predicts skeleton {name}, not {expect}")
    try:
        return get_skeleton(name)
    except KeyError as e:
        raise StreamPoseError(f"{what}: {e.args[0]}") from None


class TorchBackend:
    """A checkpoint's student in PyTorch, its BatchNorms folded into the convolutions (`fold_batchnorm`).

    ``precision="auto"`` runs it as `prepare_model` prefers for inference (on this CPU:
    channels_last, with bf16 autocast for batches of `preprocess.CPU_AMP_MIN_BATCH` or more, whose
    2D joints differ from fp32 by a fraction of a crop pixel); ``"fp32"`` runs plain float32 NCHW,
    which is what `OnnxBackend` matches to float rounding.
    """

    name = "torch"

    def __init__(
        self,
        checkpoint: str | Path | dict,
        *,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        expect_skeleton: str | None = None,
        threads: int | None = None,
    ) -> None:
        """`threads` sets torch's CPU threads, for the whole process (torch has no per-model setting)."""
        ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, student=True)
        self.what = what = "the checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
        self.skeleton = _check_skeleton(ckpt["skeleton"], expect_skeleton, what)
        pre = ckpt.get("preprocess", {})
        _check_normalisation(pre.get("mean", IMAGE_MEAN), pre.get("std", IMAGE_STD), what)
        if threads:
            torch.set_num_threads(threads)
        self.model = fold_batchnorm(student_from(ckpt))
        self.layout = prepare_model(self.model, device, train=False, precision=precision)
        self.crop_size = self.model.config.crop_size
        self.teacher = str(ckpt.get("teacher", ""))
        mean_pose = ckpt.get("mean_pose")
        self.mean_pose = None if mean_pose is None else np.asarray(mean_pose, dtype=np.float32)

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        x = self.layout.inputs(crops)
        with self.layout.autocast(len(crops)):
            out = self.model(x)
        return checked_outputs({k: out[k].float().cpu().numpy() for k in OUTPUTS}, len(crops), self.skeleton, self.what)


class OnnxBackend:
    """An exported student (`streampose.model.export`) in onnxruntime; the file's metadata says
    everything else (skeleton, crop size, normalisation), and is checked against what this version knows.
    `path` may also be the model's bytes (`export.onnx_bytes` of a checkpoint)."""

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path | bytes,
        *,
        device: str | torch.device = "cpu",
        expect_skeleton: str | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        model = path if isinstance(path, bytes) else str(path)
        path = "the checkpoint's student" if isinstance(path, bytes) else Path(path)
        meta = read_metadata(model)
        if meta.get("streampose.format") != ONNX_FORMAT:
            raise StreamPoseError(f"{path}: not a stream-pose student ONNX model (no {ONNX_FORMAT} metadata)")
        self.skeleton = _check_skeleton(meta.get("skeleton", ""), expect_skeleton, str(path))
        try:
            self.crop_size, self.mean_pose = _check_metadata(meta, self.skeleton)
        except (KeyError, ValueError, TypeError, RecursionError) as e:
            reason = f"no {e.args[0]}" if isinstance(e, KeyError) else e
            raise StreamPoseError(f"{path}: its stream-pose metadata is not usable ({reason})") from None
        self.teacher = meta.get("teacher", "")
        self.metadata = meta
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise StreamPoseError("--device cuda: this onnxruntime build has no CUDA execution provider")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 4  # its errors come back as exceptions, reported here in one line
        _capped_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
        if threads:
            options.intra_op_num_threads = threads
            # The crops are normalised in torch (`normalize_images`): left at torch's default, a
            # batch of a few crops is split over every core, and on a busy 2-core CPU that cost
            # 3x the frames/s of predict with three people in view.
            torch.set_num_threads(threads)
        try:
            self.session = ort.InferenceSession(model, options, providers=providers)
        except Exception as e:
            raise StreamPoseError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {e})") from None
        inputs, outputs = self.session.get_inputs(), {o.name for o in self.session.get_outputs()}
        if [i.name for i in inputs] != [ONNX_INPUT] or inputs[0].shape[1:] != [3, self.crop_size, self.crop_size]:
            raise StreamPoseError(
                f"{path}: inputs {[(i.name, i.shape) for i in inputs]} are not one {ONNX_INPUT} of "
                f"(batch, 3, {self.crop_size}, {self.crop_size})"
            )
        if missing := [name for name in OUTPUTS if name not in outputs]:
            raise StreamPoseError(f"{path}: no output {', '.join(missing)} (a student has {', '.join(OUTPUTS)})")
        self.what = str(path)

    def __call__(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        x = normalize_images(torch.from_numpy(np.ascontiguousarray(crops))).contiguous().numpy()
        try:
            outs = self.session.run(list(OUTPUTS), {ONNX_INPUT: x})
        except Exception as e:  # onnxruntime raises its own Fail/RuntimeException types
            reason = " ".join(str(e).split())  # onnxruntime's messages span lines
            raise StreamPoseError(f"{self.what}: onnxruntime cannot run it ({type(e).__name__}: {reason})") from None
        return checked_outputs(dict(zip(OUTPUTS, outs, strict=True)), len(crops), self.skeleton, self.what)


#: What student sessions may allocate on the CPU (onnxruntime's arena): a student's activations at
#: eval's batch take a few hundred MB; a crafted graph that asks for more fails in one line instead
#: of filling the machine's memory.
ONNX_MEMORY_LIMIT = 2 << 30


@functools.cache
def _capped_cpu_arena() -> None:
    """Register, once per process, the CPU arena capped at `ONNX_MEMORY_LIMIT` that student sessions share."""
    import onnxruntime as ort

    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(ONNX_MEMORY_LIMIT, -1, -1, -1))


def _check_metadata(meta: dict[str, str], skeleton: Skeleton) -> tuple[int, np.ndarray | None]:
    """An exported student's metadata, checked against its schema before any of it is used: the
    crop size (a whole number in the range a student has: a crafted 40000 would make every crop
    gigabytes), the joints, the normalisation, the mean pose; (crop size, mean pose)."""
    crop_size = int(meta["crop_size"])
    if not CROP_SIZES.ok(crop_size):
        raise ValueError(f"crop_size must be {CROP_SIZES}, not {crop_size}")
    if json.loads(meta["joints"]) != list(skeleton.joints):
        raise ValueError(f"its joints disagree with skeleton {skeleton.name}")
    mean, std = (np.asarray(json.loads(meta[k]), dtype=np.float64) for k in ("mean", "std"))
    if mean.shape != (3,) or std.shape != (3,):
        raise ValueError("mean and std must be three numbers each")
    _check_normalisation(mean, std, "the model")
    if "mean_pose" not in meta:
        return crop_size, None
    mean_pose = np.asarray(json.loads(meta["mean_pose"]), dtype=np.float32)
    if mean_pose.shape != (skeleton.num_joints, 3) or not np.isfinite(mean_pose).all():
        raise ValueError(f"mean_pose must be {skeleton.num_joints} finite (x, y, z)")
    return crop_size, mean_pose


def checked_outputs(out: dict[str, np.ndarray], batch: int, skeleton: Skeleton, what: str) -> dict[str, np.ndarray]:
    """A student's outputs for `batch` crops, refused when misshapen or not finite: a NaN from a
    broken or crafted model must stop the command with one line, not reach tracking or the metrics."""
    j = skeleton.num_joints
    for key, shape in {"joints3d": (batch, j, 3), "joints2d": (batch, j, 2), "vis_logits": (batch, j)}.items():
        if out[key].shape != shape:
            raise StreamPoseError(f"{what}: its {key} output is shaped {out[key].shape}, not {shape}")
        if not np.isfinite(out[key]).all():
            raise StreamPoseError(f"{what}: its {key} output is not finite (NaN or infinity): the model is broken")
    return out


def open_backend(
    *,
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    device: str = "cpu",
    expect_skeleton: str | None = None,
    threads: int | None = None,
    backend: str = "auto",
    batch: int = 1,
) -> Backend:
    """The onnxruntime backend for an ONNX file; for a checkpoint (exactly one of the two) the
    `backend` named, ``torch`` or ``onnxruntime``, or with ``auto`` the fastest installed for
    batches of `batch` crops (`fastest_backend`).

    `device` may be ``"auto"`` (`pick_device`). `threads`: CPU threads for inference (None: the
    library's default, all cores).
    """
    if (checkpoint is None) == (onnx is None):
        raise StreamPoseError("give exactly one of a checkpoint and an ONNX model")
    if backend not in ("auto", "torch", "onnxruntime"):
        raise StreamPoseError(f"unknown backend {backend!r}: auto, torch or onnxruntime")
    device = pick_device(device)
    if onnx is not None:
        return OnnxBackend(onnx, device=device, expect_skeleton=expect_skeleton, threads=threads)
    if (fastest_backend(device, batch) if backend == "auto" else backend) == "onnxruntime":
        ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, student=True)
        return OnnxBackend(onnx_bytes(ckpt), device=device, expect_skeleton=expect_skeleton, threads=threads)
    return TorchBackend(checkpoint, device=device, expect_skeleton=expect_skeleton, threads=threads)


def fastest_backend(device: torch.device, batch: int) -> str:
    """onnxruntime for batches under `CPU_AMP_MIN_BATCH` on a CPU when it is installed; torch otherwise.

    Measured with `small` at 128 px on this project's 2-core AMD EPYC (benchmarks P4, quiet):
    batch 1, onnxruntime 1,011 crops/s against torch's 318; batch 32, torch channels_last + bf16
    2,094 against onnxruntime's 1,270. On a GPU the two were not compared: torch.
    """
    if device.type != "cpu" or batch >= CPU_AMP_MIN_BATCH:
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnxruntime"


def crops_per_second(backend: Backend, batch: int, *, rounds: int = 12, warmup: int = 5) -> float:
    """Crops/s of `backend` on random crops at `batch`: the best of `rounds` medians, after a warm-up.

    Each round times ``max(5, 64 // batch)`` calls and keeps their median, which drops the odd
    slow call; the best round is the least disturbed moment, since on a CPU shared with other jobs
    one timing says more about them than about the model. Preprocessing is included (uint8 crops
    in, numpy out), as `predict` pays it; cutting the crops out of frames is not.
    """
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (batch, backend.crop_size, backend.crop_size, 3), dtype=np.uint8)
    for _ in range(warmup):
        backend(crops)
    best = 0.0
    for _ in range(rounds):
        times = []
        for _ in range(max(5, 64 // batch)):
            t0 = time.perf_counter()
            backend(crops)
            times.append(time.perf_counter() - t0)
        best = max(best, batch / float(np.median(times)))
    return best
