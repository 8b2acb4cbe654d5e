"""`streampose experiment`: nested subsets of the sources, the same steps each, one held-out set."""

from __future__ import annotations

import json

import pytest

from streampose.cli import build_parser, cmd_experiment, early_train_options, main, train_config
from streampose.config import write_config
from streampose.engine import experiment as exp
from streampose.engine.train import TrainConfig
from streampose.errors import StreamPoseError


def tiny(tmp_path, sources, val) -> TrainConfig:
    return TrainConfig(
        sources=sources, val=val, out=str(tmp_path / "exp"), student="micro", crop_size=64, batch_size=8, steps=6,
        warmup=1, min_fill=8, max_frames=8, stride=2, val_stride=4, val_every=3, log_every=3, save_every=10_000,
        threads=2,
    )  # fmt: skip


def test_nested_sizes_are_trained_once_each_and_scored_on_the_same_held_out_set(clip, tmp_path, monkeypatch):
    cams = [str(clip(f"pose2sim-single-cam0{i}")) for i in (1, 2, 3)]
    val = [str(clip("pose2sim-multi-cam04"))]
    runs = []

    class CountingTrainer(exp.Trainer):
        def run(self):
            runs.append(self.cfg.max_videos)
            return super().run()

    monkeypatch.setattr(exp, "Trainer", CountingTrainer)
    report = exp.experiment(tiny(tmp_path, cams, val), [1, 2])
    assert runs == [1, 2]
    assert report["unit"] == "videos" and report["videos"] == cams[:2]
    one, two = report["runs"]["1"], report["runs"]["2"]
    assert one["steps"] == two["steps"] == 6
    assert one["val_persons"] == two["val_persons"] == report["val_persons"] > 0
    assert two["persons_trained"] > one["persons_trained"] > 0  # two videos gave more crops than one
    for r in (one, two):
        assert r["val_mpjpe_mm"] > 0 and r["val_baseline_pa_mpjpe_mm"] > 0
    saved = json.loads((tmp_path / "exp" / "experiment.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(report["runs"]))
    assert (tmp_path / "exp" / "experiment.png").stat().st_size > 10_000

    # Resumable: the finished sizes are read back, only the new one trains.
    report = exp.experiment(tiny(tmp_path, cams, val), [1, 2, 3])
    assert runs == [1, 2, 3] and sorted(report["runs"]) == ["1", "2", "3"]
    assert report["runs"]["1"] == one


def test_one_video_is_split_by_seconds(clip, tmp_path):
    unit, configs, found = exp.subset_configs(tiny(tmp_path, [str(clip("pose2sim-single-cam01"))], []), [1, 2])
    assert unit == "seconds" and len(found) == 1
    assert configs[2].max_frames == 2 * configs[1].max_frames == 60  # 60 fps, stride 2


@pytest.mark.parametrize("sizes", ["", "2,1", "0,1", "a"])
def test_bad_sizes_are_refused(sizes):
    with pytest.raises(StreamPoseError, match="--sizes"):
        exp.parse_sizes(sizes)


def test_experiment_without_val_or_with_too_few_videos_exits_2(clip, tmp_path, capsys):
    cams = [str(clip(f"pose2sim-single-cam0{i}")) for i in (1, 2)]
    assert main(["experiment", "--source", *cams, "--out", str(tmp_path / "a")]) == 2
    assert "--val" in capsys.readouterr().err
    val = str(clip("sports2d"))
    assert main(["experiment", "--source", *cams, "--val", val, "--sizes", "1,4", "--out", str(tmp_path / "b")]) == 2
    assert "needs that many distinct videos" in capsys.readouterr().err


def test_experiment_takes_train_options_and_a_run_config(tmp_path):
    cfg = TrainConfig(sources=["a.mp4", "b.mp4"], val=["c.mp4"], steps=7, student="micro", val_every=3)
    path = str(write_config(cfg, tmp_path / "run.toml"))
    argv = ["experiment", "--config", path, "--sizes", "1,2", "--steps", "9"]
    args = build_parser(early_train_options(argv)).parse_args(argv)
    got = train_config(args)
    assert (got.sources, got.val, got.student, got.val_every, got.steps) == (
        ["a.mp4", "b.mp4"],
        ["c.mp4"],
        "micro",
        3,
        9,
    )
    assert args.func is cmd_experiment and exp.parse_sizes(args.sizes) == [1, 2]
