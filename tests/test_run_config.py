"""`train --config`: a run folder's config.toml repeats the run; options given on the command line win."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from streampose.cli import build_parser, early_train_options, main, train_config
from streampose.config import read_config, write_config
from streampose.engine.config import TrainConfig, config_defaults


def parsed(argv: list[str]) -> TrainConfig:
    """What `streampose train ARGV` would run, without running it."""
    return train_config(build_parser(early_train_options(argv)).parse_args(argv))


@pytest.fixture
def saved(tmp_path) -> tuple[TrainConfig, str]:
    """A config unlike the defaults in every kind of field: lists, None over a non-None default, filters."""
    cfg = parsed(
        ["train", "--source", "a.mp4", "commons:tai chi", "--steps", "7", "--lr", "0.0005", "--max-side", "0",
         "--minutes", "1.5", "--no-augment", "--orientation", "portrait", "--min-duration", "3",
         "--max-video-mb", "20", "--out", str(tmp_path / "x")]
    )  # fmt: skip
    cfg = replace(cfg, max_side=None, weight_decay=0.05)  # a field with no option, and None over 720
    return cfg, str(write_config(cfg, tmp_path / "config.toml"))


def test_a_saved_config_with_no_options_is_the_same_run(saved):
    cfg, path = saved
    assert parsed(["train", "--config", path]) == cfg


def test_options_override_the_config_file(saved, tmp_path):
    cfg, path = saved
    out = str(tmp_path / "y")
    again = parsed(["train", "--config", path, "--steps", "5000", "--out", out, "--orientation", "landscape"])
    assert again == replace(cfg, steps=5000, out=out, filters=cfg.filters | {"orientation": "landscape"})
    # --source replaces the file's sources rather than adding to them.
    assert parsed(["train", "--config", path, "--source", "b.mp4"]).sources == ["b.mp4"]


def test_a_config_holds_only_trainconfig_fields_and_filters_follow_max_video_mb(saved):
    cfg, path = saved
    values = read_config(path, TrainConfig)
    assert TrainConfig(**values) == cfg
    assert values["filters"]["max_bytes"] == 20_000_000 and config_defaults(path)["orientation"] == "portrait"


@pytest.mark.parametrize(
    ("text", "named"),
    [("steps = 3\nstepz = 4\n", "unknown key stepz"), ('steps = "many"\n', "steps must be int, not str"),
     ("[filters]\ncolour = 1\n", "unknown filters key(s) colour")],
)  # fmt: skip
def test_a_bad_config_exits_2_naming_the_key(text, named, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('sources = ["a.mp4"]\n' + text)
    done = subprocess.run(
        [sys.executable, "-m", "streampose", "train", "--config", str(path)], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and named in done.stderr


FAST_RUN = [
    "--student", "micro", "--crop-size", "64", "--batch-size", "8", "--min-fill", "16", "--buffer-gb", "0.05",
    "--max-frames", "8", "--stride", "2", "--max-side", "320", "--log-every", "1", "--save-every", "100",
    "--threads", "1", "--steps", "2",
]  # fmt: skip


@pytest.mark.slow
def test_a_run_from_its_saved_config_repeats_it(sports2d, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--source", str(sports2d), *FAST_RUN, "--out", str(first)]) == 0
    assert main(["train", "--config", str(first / "config.toml"), "--out", str(second)]) == 0
    a, b = (read_config(run / "config.toml", TrainConfig) for run in (first, second))
    assert a.pop("out") == str(first) and b.pop("out") == str(second)
    assert a == b and a["sources"] == [str(sports2d)] and a["student"] == "micro" and a["steps"] == 2
