"""The student network: shapes for every skeleton, config round trip, errors, and that it learns."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from streampose.model.student import (
    HEAD_MAPS,
    STUDENT_SIZES,
    Student,
    build_student,
    count_parameters,
)
from streampose.poses.skeletons import get_skeleton


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("skeleton", ["blazepose33", "comotion27"])
@pytest.mark.parametrize("crop", [128, 192])
def test_output_shapes_and_dtypes(skeleton: str, crop: int) -> None:
    j = get_skeleton(skeleton).num_joints
    model = build_student("micro", j, crop).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, crop, crop))
    assert set(out) == {"joints3d", "joints2d", "vis_logits"}
    assert out["joints3d"].shape == (2, j, 3)
    assert out["joints2d"].shape == (2, j, 2)
    assert out["vis_logits"].shape == (2, j)
    for v in out.values():
        assert v.dtype == torch.float32
        assert torch.isfinite(v).all()
    # A fresh head predicts (nearly) the crop centre in normalised pixel-centre coordinates.
    centre = (crop - 1) / 2 / crop
    assert torch.allclose(out["joints2d"], torch.full_like(out["joints2d"], centre), atol=0.02)


@pytest.mark.parametrize("size", list(STUDENT_SIZES))
def test_every_size_builds_and_runs(size: str) -> None:
    j = get_skeleton("comotion27").num_joints
    model = build_student(size, j, 128)
    out = model(torch.randn(2, 3, 128, 128))  # train mode: BN with batch statistics
    assert out["joints3d"].shape == (2, j, 3)
    assert model.config.name == size


def test_sizes_are_ordered_by_parameters() -> None:
    counts = [count_parameters(build_student(s, 33, 128)) for s in ("micro", "small", "base")]
    assert counts == sorted(counts)


def test_outputs_stay_float32_under_bf16_autocast() -> None:
    model = build_student("micro", 33, 128).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert all(v.dtype == torch.float32 for v in out.values())


def test_config_round_trip_reproduces_outputs() -> None:
    model = build_student("small", 27, 192)
    # Perturb every weight and BN statistic so the comparison is not between near-zero outputs.
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.mul_(1 + torch.rand_like(t))
            elif t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.05)
    model.eval()
    config = json.loads(json.dumps(model.config_dict()))  # as stored in a JSON/torch checkpoint
    clone = Student.from_config(config)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    assert clone.config == model.config
    x = torch.randn(3, 3, 192, 192)
    with torch.no_grad():
        a, b = model(x), clone(x)
    assert a["joints3d"].abs().max() > 1e-3  # the comparison below is not trivially true
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_unknown_size_names_known_sizes() -> None:
    with pytest.raises(ValueError, match="unknown student size 'huge'.*micro.*small.*base"):
        build_student("huge", 33, 128)


def test_torchvision_size_gives_clear_error() -> None:
    with pytest.raises(ValueError, match="torchvision"):
        build_student("torchvision:mobilenet_v3_small", 33, 128)


def test_bad_crop_size_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        build_student("micro", 33, 100)


def _fit(lr: float, steps: int = 25) -> tuple[float, float]:
    """L1 loss on a fixed random batch before and after `steps` AdamW steps."""
    torch.manual_seed(1)
    j = get_skeleton("blazepose33").num_joints
    model = build_student("micro", j, 128)
    x = torch.randn(8, 3, 128, 128)
    t3d = torch.randn(8, j, 3) * 0.3
    t2d = torch.rand(8, j, 2)
    tvis = torch.randint(0, 2, (8, j)).float() * 4 - 2

    def loss_of(out: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.l1_loss(out["joints3d"], t3d) + F.l1_loss(out["joints2d"], t2d) + F.l1_loss(out["vis_logits"], tvis)

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_of(model(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = loss_of(model(x)).item()
    return losses[0], final


def test_optimizer_steps_lower_l1_loss() -> None:
    first, final = _fit(lr=3e-3)
    assert final < 0.6 * first, (first, final)


def test_loss_does_not_drop_without_learning() -> None:
    # The control for the test above: with lr=0 the same procedure must not pass its threshold.
    first, final = _fit(lr=0.0)
    assert final > 0.95 * first, (first, final)


def test_head_maps_describe_the_output_channels() -> None:
    # Other code (e.g. a mean-pose baseline student) sets the head's bias through HEAD_MAPS.
    j = get_skeleton("comotion27").num_joints
    model = build_student("micro", j, 128).eval()
    pose = torch.randn(j, 3)
    vis = torch.randn(j)
    with torch.no_grad():
        model.out.weight.zero_()
        bias = model.out.bias.view(j, -1)
        bias[:, HEAD_MAPS["joints3d"]] = pose
        bias[:, HEAD_MAPS["vis_logits"]] = vis[:, None]
        out = model(torch.randn(2, 3, 128, 128))
    torch.testing.assert_close(out["joints3d"], pose.expand(2, j, 3))
    torch.testing.assert_close(out["vis_logits"], vis.expand(2, j))
