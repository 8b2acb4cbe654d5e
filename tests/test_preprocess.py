"""The model's input contract and device preparation: normalisation, memory layout, precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streampose.model.preprocess import (
    CPU_AMP_MIN_BATCH,
    IMAGE_MEAN,
    IMAGE_STD,
    fold_batchnorm,
    normalize_images,
    preferred_layout,
    prepare_model,
)
from streampose.model.student import STUDENT_SIZES, build_student


def test_normalize_images_accepts_tensors_and_rejects_floats() -> None:
    images = np.random.default_rng(20).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    from_numpy = normalize_images(images)
    from_tensor = normalize_images(torch.from_numpy(images))
    torch.testing.assert_close(from_numpy, from_tensor)
    assert from_tensor.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="uint8"):
        normalize_images(images.astype(np.float32))


def test_preferred_layout() -> None:
    for size in [*STUDENT_SIZES, "custom"]:
        for train in (True, False):
            channels_last, dtype = preferred_layout(size, "cpu", train=train)
            assert isinstance(channels_last, bool)
            assert dtype in (None, torch.bfloat16, torch.float16)


def test_prepare_model_places_the_model_and_says_how_to_run_it() -> None:
    images = np.random.default_rng(1).integers(0, 256, (CPU_AMP_MIN_BATCH, 64, 64, 3), dtype=np.uint8)
    model = build_student("micro", 33, 64).eval()
    fp32 = prepare_model(model, "cpu", train=False, precision="fp32")
    assert not fp32.channels_last and fp32.amp_dtype is None
    x = fp32.inputs(images)
    assert x.is_contiguous() and x.dtype == torch.float32
    pixel = images[3, 10, 20].astype(np.float64)
    expected = (pixel / 255.0 - np.array(IMAGE_MEAN)) / np.array(IMAGE_STD)
    np.testing.assert_allclose(x[3, :, 10, 20].numpy(), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), fp32.autocast(len(images)):
        reference = model(x)["joints2d"]

    # The measured CPU choice: channels_last weights and inputs; bf16 autocast on batches only.
    fast = prepare_model(model, "cpu", train=False)
    assert (fast.channels_last, fast.amp_dtype) == preferred_layout("micro", "cpu", train=False)
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.inputs(images).is_contiguous(memory_format=torch.channels_last)
    assert not torch.is_autocast_enabled("cpu")
    with fast.autocast(1):
        assert not torch.is_autocast_enabled("cpu")
    with fast.autocast(CPU_AMP_MIN_BATCH):
        assert torch.is_autocast_enabled("cpu") == (fast.amp_dtype is not None)
    with torch.no_grad(), fast.autocast(len(images)):
        out = model(fast.inputs(images))["joints2d"]
    assert out.dtype == torch.float32
    assert float((out - reference).abs().max()) < 1.0 / 64  # within a crop pixel of fp32
    assert prepare_model(model, "cpu", train=True).amp_dtype == preferred_layout("micro", "cpu", train=True)[1]
    with pytest.raises(ValueError, match="precision"):
        prepare_model(model, "cpu", train=False, precision="int8")


def test_folding_batchnorm_keeps_the_outputs_and_removes_every_batchnorm() -> None:
    torch.manual_seed(2)
    model = build_student("small", 33, 64)
    # Statistics as training leaves them, not the identity a fresh BatchNorm starts as.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 64, 64) * 2 + 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(model)
        got = folded(x)
    assert folded is model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)
