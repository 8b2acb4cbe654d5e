"""CoMotion's install and device checks: each names the one missing piece and the step that supplies it.

CoMotion is not on PyPI and some of its modules assert at import time, so everything it needs is
checked file by file before anything of it is imported (see `check_install`).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from streampose.errors import StreamPoseError, TeacherUnavailable

# Files inside the installed `comotion_demo` package folder (src/comotion_demo in the clone).
DETECTION_CHECKPOINT = "data/comotion_detection_checkpoint.pt"
REFINE_CHECKPOINT = "data/comotion_refine_checkpoint.pt"
COREML_PACKAGE = "data/comotion_detection.mlpackage"  # macOS only, from the same download
SMPL_MODEL = "data/smpl/SMPL_NEUTRAL.pkl"
# Shipped in the git repository itself; its absence means an incomplete clone.
PACKAGE_FILES = ("models/comotion.py", "data/smpl/extra_smpl_reference.pt")

CHUMPY_REQUIREMENT = "chumpy @ git+https://github.com/mattloper/chumpy@9b045ff5d6588a24a0bab52c83f032e2ba433e17"
SCENEDETECT_BELOW = (0, 7)

# A plain `pip install -e .` would replace stream-pose's torch with the torch==2.5.1 CoMotion pins.
CLONE_STEP = (
    "`make comotion` in the stream-pose checkout, or `git clone https://github.com/apple/ml-comotion && "
    "cd ml-comotion && pip install -e . --no-deps` and the dependencies docs/teachers.md lists"
)
SEE_README = "(docs/teachers.md, 'CoMotion teacher (optional)')"


def _spec(name: str, search_path: Sequence[str | Path] | None):
    """Find a top-level module without importing it (on sys.path, or only on `search_path`)."""
    if search_path is None:
        importlib.invalidate_caches()
        return importlib.util.find_spec(name)
    return importlib.machinery.PathFinder.find_spec(name, [str(p) for p in search_path])


def find_comotion_package(search_path: Sequence[str | Path] | None = None) -> Path:
    """The folder of the installed `comotion_demo` package (src/comotion_demo in the clone).

    Found by spec, not imported: importing it would run `smpl_kinematics`' import-time assert.
    The package has no __init__.py (a namespace package), so any stray `comotion_demo` folder
    would match too; the folder that holds CoMotion's model code and shipped files wins.
    """
    spec = _spec("comotion_demo", search_path)
    if spec is None:
        raise TeacherUnavailable(
            f"the comotion teacher needs Apple's CoMotion (Python package `comotion_demo`), which is not "
            f"installed: {CLONE_STEP} {SEE_README}"
        )
    locations = [Path(p) for p in (spec.submodule_search_locations or [])]
    for folder in locations:
        if all((folder / f).is_file() for f in PACKAGE_FILES):
            return folder
    where = ", ".join(str(p) for p in locations) or str(spec.origin)
    missing = [f for f in PACKAGE_FILES if not any((p / f).is_file() for p in locations)]
    raise TeacherUnavailable(
        f"`comotion_demo` at {where} is not a complete ml-comotion package (no {', '.join(missing)}): "
        f"{CLONE_STEP} {SEE_README}"
    )


def check_checkpoints(package_dir: Path) -> None:
    """CoMotion's two PyTorch checkpoints, which `get_pretrained_models.sh` downloads into data/."""
    missing = [package_dir / f for f in (DETECTION_CHECKPOINT, REFINE_CHECKPOINT) if not (package_dir / f).is_file()]
    if missing:
        raise TeacherUnavailable(
            f"CoMotion checkpoint missing: {', '.join(str(p) for p in missing)}; run "
            f"`bash get_pretrained_models.sh` in the ml-comotion clone {SEE_README}"
        )


def check_smpl(package_dir: Path) -> None:
    """The SMPL neutral body model, which only its owners may hand out (registration, non-commercial)."""
    path = package_dir / SMPL_MODEL
    if not path.is_file():
        raise TeacherUnavailable(
            f"SMPL neutral body model missing: {path}; register at https://smpl.is.tue.mpg.de (non-commercial "
            f"licence), download 'SMPL for Python' and copy its neutral model there as SMPL_NEUTRAL.pkl {SEE_README}"
        )


def check_chumpy(search_path: Sequence[str | Path] | None = None) -> None:
    """chumpy, needed only to unpickle SMPL_NEUTRAL.pkl (its arrays are pickled chumpy objects)."""
    if _spec("chumpy", search_path) is None:
        raise TeacherUnavailable(
            f"chumpy is not installed (CoMotion needs it to read SMPL_NEUTRAL.pkl): "
            f"`make comotion`, or pip install --no-build-isolation --no-deps '{CHUMPY_REQUIREMENT}' (the commit "
            f"ml-comotion pins; its setup.py imports pip) {SEE_README}"
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def check_scenedetect(search_path: Sequence[str | Path] | None = None) -> None:
    """scenedetect below 0.7: CoMotion's shot detector calls the 0.6 API, which 0.7 changed."""
    where = {} if search_path is None else {"path": [str(p) for p in search_path]}
    dist = next(iter(importlib.metadata.distributions(name="scenedetect", **where)), None)
    if dist is None:
        raise TeacherUnavailable(
            f"scenedetect is not installed (CoMotion's shot-change detector needs it): "
            f"pip install 'scenedetect<0.7' {SEE_README}"
        )
    version = dist.version
    if _version_tuple(version) >= SCENEDETECT_BELOW:
        raise TeacherUnavailable(
            f"scenedetect {version} is installed but CoMotion needs scenedetect<0.7 (0.7 breaks CoMotion.forward "
            f"with \"'int' object has no attribute 'frame_rate'\"): pip install 'scenedetect<0.7' {SEE_README}"
        )


def check_install(search_path: Sequence[str | Path] | None = None) -> Path:
    """Every piece CoMotion needs, in install order; returns the package folder.

    Files are checked before anything of CoMotion's is imported, because its SMPL module asserts
    at import time and a missing checkpoint only fails later, inside the constructor.
    """
    package_dir = find_comotion_package(search_path)
    check_checkpoints(package_dir)
    check_smpl(package_dir)
    check_chumpy(search_path)
    check_scenedetect(search_path)
    return package_dir


def import_comotion() -> type:
    try:
        from comotion_demo.models.comotion import CoMotion
    except (ImportError, AssertionError, AttributeError) as e:
        # A dependency of CoMotion's (pypose, tensordict, timm, transformers, torchvision, ...)
        # is missing or does not fit this torch/numpy.
        detail = " ".join(f"{type(e).__name__}: {e}".split())
        raise TeacherUnavailable(
            f"CoMotion is installed but does not import ({detail}); install its dependencies as "
            f"`make comotion` does {SEE_README}"
        ) from None
    return CoMotion


# --------------------------------------------------------------------------------------------
# Device


@dataclass(frozen=True)
class DevicePlan:
    """Where CoMotion runs. On macOS it follows CoMotion's own demo rather than moving it whole to MPS."""

    device: str  # where the model's parameters and inputs live
    use_mps: bool  # CoMotion.forward(use_mps=True): the refinement step runs on MPS
    use_coreml: bool  # CoMotion(use_coreml=True): detection runs through CoreML (macOS only)
    slow: bool  # the whole model on the CPU (tens of seconds per frame)


def plan_device(requested: str, *, cuda: bool, mps: bool, macos: bool, coreml: bool) -> DevicePlan:
    """CUDA, else Apple Silicon (MPS, with CoreML detection when available), else the CPU.

    On macOS CoMotion's demo keeps the model on the CPU, runs the detector through CoreML and
    moves only the refinement step to MPS (`forward(use_mps=True)`); that is the path its authors
    ran, so it is the one used here. `coreml` says whether coremltools and the CoreML package are
    both present; without them detection runs in PyTorch on the CPU.
    """
    if requested == "auto":
        requested = "cuda" if cuda else "mps" if (mps and macos) else "cpu"
    if requested.startswith("cuda"):
        if not cuda:
            raise TeacherUnavailable("the comotion teacher was asked for CUDA, but torch sees no CUDA device")
        return DevicePlan(requested, use_mps=False, use_coreml=False, slow=False)
    if requested == "mps":
        if not (mps and macos):
            raise TeacherUnavailable("the comotion teacher was asked for MPS, which needs macOS on Apple Silicon")
        return DevicePlan("cpu", use_mps=True, use_coreml=coreml, slow=False)
    if requested == "cpu":
        return DevicePlan("cpu", use_mps=False, use_coreml=False, slow=True)
    raise StreamPoseError(f"unknown device {requested!r} for the comotion teacher; use auto, cuda, mps or cpu")


def _device_facts(package_dir: Path) -> dict[str, bool]:
    macos = sys.platform == "darwin"
    coreml = macos and _spec("coremltools", None) is not None and (package_dir / COREML_PACKAGE).exists()
    return dict(cuda=torch.cuda.is_available(), mps=torch.backends.mps.is_available(), macos=macos, coreml=coreml)
