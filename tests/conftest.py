"""Shared fixtures: real clips of people from registry packages, cached outside the repo."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from streampose.errors import SourceError
from streampose.sources.samples import sample_clip


@pytest.fixture(scope="session")
def clip():
    """clip(name) -> Path of a real sample clip (downloaded once into the cache)."""

    def get(name: str) -> Path:
        try:
            return sample_clip(name)
        except SourceError as e:
            pytest.skip(f"no package registry reachable for the sample clips: {e}")

    return get


@pytest.fixture(scope="session")
def sports2d(clip) -> Path:
    return clip("sports2d")


@pytest.fixture(scope="session")
def mediapipe_teacher():
    from streampose.teachers import get_teacher

    teacher = get_teacher("mediapipe")
    yield teacher
    teacher.close()


def transcode(data: bytes, container: str, codec: str, max_frames: int = 30, width: int = 320) -> bytes:
    """Re-encode the first frames of a clip into another container/codec, in memory."""
    src = av.open(io.BytesIO(data))
    out_buf = io.BytesIO()
    out = av.open(out_buf, mode="w", format=container)
    stream = None
    for i, frame in enumerate(src.decode(video=0)):
        if i >= max_frames:
            break
        img = frame.to_ndarray(format="rgb24")
        h = round(img.shape[0] * width / img.shape[1] / 2) * 2
        if stream is None:
            stream = out.add_stream(codec, rate=30)
            stream.width, stream.height, stream.pix_fmt = width, h, "yuv420p"
        small = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(width=width, height=h)
        for packet in stream.encode(small):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    src.close()
    return out_buf.getvalue()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def train_micro(samples, out: Path, *, crop: int, steps: int, **config) -> Path:
    """A micro student trained for `steps` batches of 32 on these crops alone (`config`: other
    TrainConfig fields); its checkpoint."""
    from streampose.engine.train import TrainConfig, train
    from streampose.stream.buffer import RingBuffer

    buffer = RingBuffer(len(samples[0].visibility), crop, budget_bytes=40_000_000)
    for s in samples:
        buffer.put(s)
    buffer.close()
    cfg = TrainConfig(
        out=str(out), student="micro", crop_size=crop, batch_size=32, lr=3e-3, warmup=10, log_every=50,
        save_every=10**6, threads=2, steps=steps, **config,
    )  # fmt: skip
    assert train(cfg, buffer=buffer)["step"] == steps
    return out / "last.pt"
