"""Run configs: what is saved reads back to the same values; unknown keys are named."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streampose.config import config_toml, read_config, write_config
from streampose.errors import StreamPoseError


@dataclass
class Example:
    sources: list[str] = field(default_factory=list)
    steps: int = 10
    lr: float = 2e-3
    minutes: float | None = None
    max_side: int | None = 720
    name: str = "run"
    augment: bool = True
    filters: dict = field(default_factory=dict)


def test_a_saved_config_reads_back_to_the_same_values(tmp_path):
    cfg = Example(
        sources=['pexels:a "quoted" query', "/data/clip é.mp4"],
        steps=5,
        lr=1e-05,
        max_side=None,  # None although the default is not: must not come back as 720
        augment=False,
        filters={"orientation": None, "min_duration": 2.5, "target_height": 480},
    )
    path = write_config(cfg, tmp_path / "config.toml")
    assert Example(**read_config(path, Example)) == cfg


def test_extra_keys_are_written_and_an_unknown_key_is_named(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(config_toml(Example(), world_size=2))
    with pytest.raises(StreamPoseError, match=r"unknown key world_size \(a Example has: augment, filters"):
        read_config(path, Example)
    path.write_text("steps = 3\nstep_count = 4\nlearning_rate = 0.1\n")
    with pytest.raises(StreamPoseError, match="unknown keys learning_rate, step_count"):
        read_config(path, Example)


def test_a_broken_or_missing_config_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("steps = \n")
    with pytest.raises(StreamPoseError, match="not a valid TOML config"):
        read_config(path, Example)
    with pytest.raises(StreamPoseError, match="cannot read the config"):
        read_config(tmp_path / "missing.toml", Example)
