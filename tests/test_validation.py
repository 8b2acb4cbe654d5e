"""`train --val`: held-out video labelled once, scored while training, never trained on; best.pt."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from streampose.cli import build_parser, main, train_config
from streampose.engine import evaluate
from streampose.engine.runlock import RunLock
from streampose.engine.train import TrainConfig, Trainer
from streampose.model.checkpoint import load_checkpoint
from streampose.teachers import get_teacher, teacher_class

pytest_plugins = ["fake_providers"]  # a local server speaking the Commons protocol


def test_validation_is_labelled_once_never_feeds_the_buffer_and_keeps_the_best(clip, tmp_path, monkeypatch):
    train_clip, val_clip = clip("pose2sim-single-cam01"), clip("pose2sim-single-cam02")
    made, labelled = [], []

    def counting_teacher(name):  # the validation labeller, counted: made once, every frame labelled once
        teacher = get_teacher(name)
        made.append(name)
        label = teacher.label
        teacher.label = lambda images: labelled.extend(range(len(images))) or label(images)
        return teacher

    monkeypatch.setattr(evaluate, "get_teacher", counting_teacher)
    cfg = TrainConfig(
        sources=[str(train_clip)], val=[str(val_clip)], out=str(tmp_path / "run"), student="micro", crop_size=64,
        batch_size=8, steps=30, warmup=2, min_fill=16, max_frames=12, val_stride=2, val_every=10, log_every=10,
        save_every=10_000, threads=2,
    )  # fmt: skip
    trainer = Trainer(cfg)
    summary = trainer.run()

    assert made == ["topdown"] and len(labelled) == 12  # 12 frames (stride 2), once for three validations
    buffered = set(trainer.buffer.snapshot()["source"])
    assert buffered and all("cam01" in s for s in buffered), buffered
    assert trainer.buffer.stats()["inserted"] > 12  # the training clip was read more than once meanwhile

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_pa_mpjpe_mm" in r]
    assert [r["step"] for r in val] == [10, 20, 30]
    for r in val:
        assert r["val_persons"] == 24  # 12 frames: the man and the person behind him in each
        assert 0 < r["val_mpjpe_mm"] < 2000 and 0 <= r["val_pck_150mm"] <= 1
        assert 0 < r["val_baseline_pa_mpjpe_mm"] < 2000
    best = min(val, key=lambda r: r["val_pa_mpjpe_mm"])
    assert load_checkpoint(tmp_path / "run" / "best.pt")["step"] == best["step"]
    assert summary["best_val_pa_mpjpe_mm"] == pytest.approx(best["val_pa_mpjpe_mm"])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    assert [e.step for e in events.Scalars("val/pa_mpjpe_mm")] == [10, 20, 30]
    assert "val/baseline_mpjpe_mm" in events.Tags()["scalars"]


def test_a_source_both_trained_on_and_validated_on_is_refused(clip, tmp_path, capsys):
    cam01 = str(clip("pose2sim-single-cam01"))
    argv = ["train", "--source", cam01, "--val", str(clip("pose2sim-single-cam02")), cam01]
    assert main([*argv, "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "--val" in err and "also a training source" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "last.pt").exists()


def test_val_options_are_repeatable_and_default_to_the_config():
    args = build_parser().parse_args(["train", "--source", "a", "--val", "b", "c", "--val", "d", "--val-every", "5"])
    cfg = train_config(args)
    assert cfg.val == ["b", "c", "d"] and cfg.val_every == 5 and cfg.val_gb == TrainConfig.val_gb
    assert train_config(build_parser().parse_args(["train", "--source", "a"])).val == []


def test_a_search_result_that_is_a_validation_video_is_never_trained_on(fake, tmp_path):
    held_out = "commons:File:Walking person 1.webm"
    skeleton = teacher_class("mediapipe").skeleton
    val_set = evaluate.EvalSet(
        images=np.zeros((1, 64, 64, 3), np.uint8), joints3d=np.zeros((1, skeleton.num_joints, 3), np.float32),
        visibility=np.ones((1, skeleton.num_joints), np.float32), skeleton=skeleton, frames=1,
        video_ids=frozenset({held_out}),
    )  # fmt: skip
    cfg = TrainConfig(sources=["commons:people walking"], out=str(tmp_path / "run"), student="micro", crop_size=64)
    lock = RunLock(cfg.out).acquire()
    try:
        trainer = Trainer(cfg, lock=lock, val_set=val_set)
        trainer.setup()
        trainer.provenance = trainer.pending = None  # what `start` would open; only the refs are read here
        _, pool = trainer._live_stream()
        ids = [ref.id for ref in itertools.islice(pool.refs, 6)]
    finally:
        lock.release()
    assert "commons:File:Walking person 0.webm" in ids and held_out not in ids and len(ids) == 6
