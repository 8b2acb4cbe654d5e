import warnings

import numpy as np
import pytest

from conftest import transcode
from streampose.errors import DecodeError
from streampose.stream.decode import decode_frames, probe


def test_decodes_real_vp9_clip_from_memory(sports2d):
    data = sports2d.read_bytes()
    info = probe(data, "sports2d")
    assert (info.width, info.height, info.codec) == (1768, 994, "vp9")
    frames = list(decode_frames(data, "sports2d", stride=10, max_frames=5, max_side=640))
    assert [f.index for f in frames] == [0, 10, 20, 30, 40]
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8
    assert frames[1].timestamp == pytest.approx(10 / 30, abs=1e-3)
    assert frames[0].image.std() > 20  # real picture content, not a blank frame


@pytest.mark.parametrize(
    "container,codec", [("mp4", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4"), ("matroska", "libx264")]
)
def test_every_common_container(sports2d, container, codec):
    data = transcode(sports2d.read_bytes(), container, codec, max_frames=8)
    frames = list(decode_frames(data, f"clip.{container}"))
    assert len(frames) == 8
    assert frames[0].image.shape == (180, 320, 3)


@pytest.mark.parametrize(
    "payload,message",
    [
        (b"", "empty input"),
        (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not a readable video"),
        (b"just some text, not a video\n" * 20, "not a readable video"),
    ],
    ids=["zero-bytes", "random-bytes", "text"],
)
def test_bad_input_names_the_source(payload, message):
    with pytest.raises(DecodeError, match=f"^bad.mp4: {message}"):
        list(decode_frames(payload, "bad.mp4"))


def test_truncated_file_yields_what_decodes_then_warns(sports2d):
    data = sports2d.read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = list(decode_frames(data[: len(data) // 2], "half.mp4", max_side=320))
    assert 50 < len(frames) < 230
    assert any("half.mp4" in str(w.message) and "truncated" in str(w.message) for w in caught)
