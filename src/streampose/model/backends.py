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
        ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        what = "the checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
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
        return {k: out[k].float().cpu().numpy() for k in OUTPUTS}


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
        try:
            self.skeleton = _check_skeleton(meta["skeleton"], expect_skeleton, str(path))
            joints = json.loads(meta["joints"])
            self.crop_size = int(meta["crop_size"])
            _check_normalisation(json.loads(meta["mean"]), json.loads(meta["std"]), str(path))
            mean_pose = json.loads(meta["mean_pose"]) if "mean_pose" in meta else None
        except (KeyError, ValueError) as e:
            raise StreamPoseError(f"{path}: incomplete stream-pose metadata ({type(e).__name__}: {e})") from None
        if tuple(joints) != self.skeleton.joints:
            raise StreamPoseError(
                f"{path}: its metadata lists {len(joints)} joints that disagree with skeleton {self.skeleton.name}"
            )
        self.mean_pose = None if mean_pose is None else np.asarray(mean_pose, dtype=np.float32)
        self.teacher = meta.get("teacher", "")
        self.metadata = meta
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise StreamPoseError("--device cuda: this onnxruntime build has no CUDA execution provider")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
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
        shape = self.session.get_inputs()[0].shape
        if shape[1:] != [3, self.crop_size, self.crop_size]:
            raise StreamPoseError(f"{path}: input shape {shape} disagrees with crop size {self.crop_size}")

    def __call__(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        x = normalize_images(torch.from_numpy(np.ascontiguousarray(crops))).contiguous().numpy()
        outs = self.session.run(list(OUTPUTS), {ONNX_INPUT: x})
        return dict(zip(OUTPUTS, outs, strict=True))


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
        ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
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
