"""`make bench`: the streaming pipeline's headline figures P1-P7, each a ratio to its baseline or a value.

Why these figures: the project's promise is that a student trains from a teacher's labels on
streamed video without the plumbing (decoding, cropping, the ring buffer, the batch loader)
costing much on top of the unavoidable work (the teacher, the training step, FFmpeg's decoder).
So every figure is "what we get" over "what the bare unavoidable part gets":

- P1 producer overhead: labelled frames/s through the real `ProducerPool` (source -> decode ->
  teacher -> crops -> ring buffer) / the teacher alone on the same, already decoded frames.
- P2 trainer starvation: the share of live training steps (producers + `BatchLoader`, after a
  warm-up round) whose batch was not ready. Steps/s live / steps/s on preloaded in-memory batches
  of the same shape (and with the producer paused) stay as diagnostics: on 2 cores the live case
  shares the cores with the teacher, so that ratio measures CPU sharing, not starvation.
- P3 decode: `streampose.decode.decode_frames` to RGB / the `ffmpeg` command line on the same
  bytes through stdin, with the same pixel format conversion and comparable threads.
- P4 student inference: crops/s of the default student at the default crop size, batch 32, in the
  faster of torch's preferred layout/precision and onnxruntime (what `eval` runs a checkpoint in);
  torch fp32, the other backend, other sizes and batch 1 (what `predict` runs) as detail.
- P5 memory: RSS over a streaming training run against the ring buffer's bytes: growth slope
  after warm-up and the peak above the buffer.
- P6 persons per core and P7 producers that scale: see `scaling.py`.

How they are measured (see `benchutil`): every section runs in its own fresh process (models
alive in one process slowed each other here, and RSS must start clean); within a section the
two sides of a ratio are timed interleaved, after a warm-up, and the median of the repeats is
reported with the cores the process got. The machine is shared, so each section also records the
cores other jobs used while it ran (machine-wide busy time from /proc/stat minus ours; the load
average cannot tell, it counts our own work and lags a minute), and a figure taken while they
used more than `BUSY_CORES` is flagged: re-run it with `--sections`.

    .venv/bin/python benchmarks/pipeline.py --out bench.json            # full, ~22 min
    .venv/bin/python benchmarks/pipeline.py --quick --out bench.json    # under 2 minutes
    .venv/bin/python benchmarks/pipeline.py --smoke --out /tmp/b.json   # CI: plumbing only, < 60 s
    .venv/bin/python benchmarks/pipeline.py --sections P3 P4            # a few sections
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import scaling
from benchutil import (
    ForeignLoad,
    ThreadCPU,
    Timing,
    cpu_model,
    foreign_cores_now,
    interleaved,
    load1,
    rss_bytes,
    run_child,
)

SECTIONS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7")
GOALS = {"P1": 0.95, "P2": 0.01, "P3": 0.90, "P4": 1500.0, "P6": 1.5, "P7": 1.7}
#: Cores used by other jobs (while a section ran) above which its figure is flagged as taken on a
#: busy machine: on 2 cores, 0.25 of a core is already an eighth of the machine.
BUSY_CORES = 0.25


@dataclass(frozen=True)
class Budget:
    """How much work each section does; `full` is what the README's table comes from."""

    name: str
    p1_clips: tuple[str, ...]
    p1_max_frames: int | None  # per clip
    p1_repeats: int
    p2_min_fill: int
    p2_window_steps: int  # steps per timed window
    p2_rounds: int  # interleaved (live, paused, preloaded) rounds after one warm-up round
    p2_train_steps: int  # steps of the real train() cross-check per run; 0 skips it
    p3_clips: tuple[str, ...]
    p3_max_frames: int | None
    p3_repeats: int
    p4_sizes: tuple[str, ...]
    p4_crops: tuple[int, ...]
    p4_warmup_s: float
    p4_repeat_s: float
    p4_repeats: int
    p4_rounds: int
    p5_seconds: float
    p5_warmup_s: float
    p5_interval_s: float
    p5_buffer_gb: float
    p5_min_fill: int
    p6_max_frames: int | None
    p6_repeats: int
    p7_window_s: float
    p7_rounds: int


CLIPS = ("sports2d", "pose2sim-single-cam01")
BUDGETS = {
    "full": Budget(
        "full", CLIPS, None, 5, 256, 30, 4, 150, CLIPS, None, 7,
        ("micro", "small", "base"), (128, 192), 3.0, 1.0, 7, 1, 600.0, 120.0, 1.0, 0.25, 256,
        None, 3, 20.0, 2,
    ),
    "quick": Budget(
        "quick", ("sports2d",), 40, 3, 128, 6, 2, 0, CLIPS, 45, 3,
        ("small",), (128,), 0.4, 0.25, 3, 1, 36.0, 20.0, 0.5, 0.1, 128,
        60, 2, 6.0, 1,
    ),
    "smoke": Budget(
        "smoke", ("sports2d",), 12, 1, 32, 3, 1, 0, ("pose2sim-single-cam01",), 12, 1,
        ("micro",), (128,), 0.2, 0.1, 2, 1, 6.0, 2.0, 0.25, 0.02, 32,
        8, 1, 1.0, 1,
    ),
}  # fmt: skip


def _train_defaults():
    """The configuration `streampose train` runs with; the benchmarks measure that, not a tuned one."""
    from streampose.engine.train import TrainConfig

    return TrainConfig()


def _clip_paths(names: tuple[str, ...]) -> list[str]:
    from streampose.sources.samples import sample_clip

    return [str(sample_clip(n)) for n in names]


def _figure(value: float | None, unit: str, what: str) -> dict:
    return {"value": value, "unit": unit, "what": what}


def _timing(t: Timing) -> dict:
    return {
        "median": t.median,
        "rates": [round(r, 3) for r in t.rates],
        "cores": round(statistics.median(t.cores), 2) if t.cores else None,
    }


# -- P1: producer overhead ---------------------------------------------------------------------------


class _FrameCount:
    """A `producers.Recorder` that only counts the frames each video gave (provenance stays unwritten)."""

    def __init__(self) -> None:
        self.frames = 0

    def record(self, video, frames: int) -> dict:
        self.frames += frames
        return {}


def section_p1(b: Budget) -> dict:
    """Labelled frames/s through the real ProducerPool / the teacher alone on the same decoded frames.

    Also times decoding alone and cropping alone, so a missed goal says which stage the time
    went to. A producer decodes ahead in a thread of its own (`stages.prefetch`), so its frame
    time approaches max(decode, teacher) + crops; `serial_prediction_ratio` is what running the
    stages one after another would give.
    """
    from streampose import sources
    from streampose.poses.labels import FrameLabels
    from streampose.stream import stages
    from streampose.stream.buffer import RingBuffer
    from streampose.stream.crops import person_crops
    from streampose.stream.producers import ProducerConfig, ProducerPool
    from streampose.teachers import get_teacher, teacher_class

    d = _train_defaults()
    specs = _clip_paths(b.p1_clips)
    cfg = ProducerConfig(stride=d.stride, max_side=d.max_side, max_frames=b.p1_max_frames, crop_size=d.crop_size)
    skeleton = teacher_class(d.teacher).skeleton
    frame_opts = {"stride": cfg.stride, "max_frames": cfg.max_frames, "max_side": cfg.max_side}

    decoded = [
        [f.image for _, f in stages.frames(stages.videos(sources.refs([s])), **frame_opts)]
        for s in specs  # one list per video: the teacher restarts tracking per video, as producers do
    ]
    n_frames = sum(len(v) for v in decoded)
    teacher = get_teacher(d.teacher)
    labels: list[list] = []

    def teacher_alone() -> float:
        labels.clear()
        t0 = time.perf_counter()
        for frames in decoded:
            teacher.start_video(frames[0].shape[:2])
            for i in range(0, len(frames), 8):  # stages.labelled's batch
                labels.append(teacher.label(frames[i : i + 8]))
        return n_frames / (time.perf_counter() - t0)

    def decode_alone() -> float:
        t0 = time.perf_counter()
        n = 0
        for spec in specs:
            data = Path(spec).read_bytes()
            n += sum(1 for _ in stages.frames([sources.Video(spec, data)], **frame_opts))
        return n / (time.perf_counter() - t0)

    persons = {"teacher": 0, "pool": 0}
    budget = (2 * n_frames + 16) * RingBuffer.sample_nbytes(skeleton.num_joints, cfg.crop_size)
    crop_buffer = RingBuffer(skeleton.num_joints, cfg.crop_size, budget_bytes=budget)

    def crops_alone() -> float:
        """Crops of the teacher's persons, put into a ring buffer: the stages after the teacher."""
        flat = [p for batch in labels for p in batch]
        frames = [f for v in decoded for f in v]
        items = (
            (f, FrameLabels(i, 0.0, f.shape[:2], "bench", people))
            for i, (f, people) in enumerate(zip(frames, flat, strict=True))
        )
        t0 = time.perf_counter()
        n = 0
        for sample in person_crops(items, size=cfg.crop_size, margin=cfg.margin, min_visible=cfg.min_visible):
            crop_buffer.put(sample)
            n += 1
        persons["teacher"] = n
        return len(frames) / (time.perf_counter() - t0)

    counted: list[int] = []

    def producer_pool() -> float:
        buffer = RingBuffer(skeleton.num_joints, cfg.crop_size, budget_bytes=budget)
        count = _FrameCount()
        pool = ProducerPool(sources.refs(specs), buffer, lambda: get_teacher(d.teacher), cfg, 1, provenance=count)
        t0 = time.perf_counter()
        pool.start()
        while pool.alive:
            time.sleep(0.002)
        dt = time.perf_counter() - t0
        pool.stop()
        counted.append(count.frames)
        persons["pool"] = buffer.inserted
        return count.frames / dt

    runs = interleaved(
        {"pool": producer_pool, "teacher": teacher_alone, "decode": decode_alone, "crops": crops_alone},
        warmup=1,
        repeats=b.p1_repeats,
    )
    with ThreadCPU() as threads:  # one more, untimed run: which threads the pool's CPU went to
        producer_pool()
    teacher.close()
    pool_fps, teacher_fps = runs["pool"].median, runs["teacher"].median
    decode_fps, crops_fps = runs["decode"].median, runs["crops"].median
    serial = 1.0 / (1.0 / teacher_fps + 1.0 / decode_fps + 1.0 / crops_fps)
    return {
        "title": "P1 producer overhead",
        "numerator": _figure(pool_fps, "frames/s", "labelled frames/s through ProducerPool (1 producer)"),
        "denominator": _figure(teacher_fps, "frames/s", "teacher alone on the same decoded frames"),
        "ratio": pool_fps / teacher_fps,
        "goal": f">= {GOALS['P1']}",
        "met": pool_fps / teacher_fps >= GOALS["P1"],
        "details": {
            "clips": list(b.p1_clips),
            "frames": n_frames,
            "frames_counted_by_pool": counted[-1],
            "persons_cropped": persons,
            "max_side": cfg.max_side,
            "crop_size": cfg.crop_size,
            "pool": _timing(runs["pool"]),
            "teacher": _timing(runs["teacher"]),
            "decode_alone": _timing(runs["decode"]),
            "crops_and_put_alone": _timing(runs["crops"]),
            "stage_ms_per_frame": {
                "decode": 1e3 / decode_fps,
                "teacher": 1e3 / teacher_fps,
                "crops_and_put": 1e3 / crops_fps,
                "pool_total": 1e3 / pool_fps,
            },
            "serial_prediction_ratio": serial / teacher_fps,
            "thread_cores_pool": threads.cores,
        },
    }


# -- P2: trainer starvation --------------------------------------------------------------------------


def section_p2(b: Budget) -> dict:
    """Training steps/s fed live by producers through the BatchLoader / steps/s on preloaded batches.

    Three feeds, interleaved round by round with the same model, optimiser and step (a
    `Trainer`'s own `step`, set up on a prepared buffer): `live` (a ProducerPool fills the ring buffer while the
    BatchLoader samples and augments from it), `paused` (the producers stopped, the loader still
    sampling and augmenting from the filled buffer) and `preloaded` (a few ready batches made by
    the same loader, cycled: no loader, no producer). On 2 cores the live case also runs the
    teacher on the trainer's cores, so live/preloaded measures CPU sharing as much as
    starvation; paused/preloaded isolates the loader's cost and the wait fraction isolates
    starvation proper (steps whose batch was not ready).
    """
    import torch

    from streampose.engine.train import Trainer
    from streampose.sources import refs
    from streampose.stream.augment import AugmentConfig
    from streampose.stream.buffer import RingBuffer
    from streampose.stream.loader import BatchLoader
    from streampose.stream.producers import ProducerConfig, ProducerPool, producer_count, teacher_factory
    from streampose.teachers import teacher_class

    d = _train_defaults()
    d.min_fill = b.p2_min_fill
    specs = _clip_paths(CLIPS)
    skeleton = teacher_class(d.teacher).skeleton
    buffer = RingBuffer(
        skeleton.num_joints, d.crop_size, budget_bytes=int(0.25 * 2**30), min_fill=d.min_fill, max_replay=d.max_replay
    )
    pcfg = ProducerConfig(stride=d.stride, max_side=d.max_side, crop_size=d.crop_size)

    workers = producer_count(d.producers, "cpu")

    def start_pool() -> ProducerPool:
        stream = refs(specs, loop=True)
        teacher = teacher_factory(d.teacher, workers)
        return ProducerPool(stream, buffer, teacher, pcfg, workers, processes=workers > 1).start()

    pool: ProducerPool | None = start_pool()
    t0 = time.perf_counter()
    while buffer.fill < d.min_fill:
        time.sleep(0.01)
    fill_s = time.perf_counter() - t0

    # The trainer's own step (autocast, loss, clip, optimiser, schedule), on this benchmark's feeds.
    work = tempfile.TemporaryDirectory()
    cfg = replace(d, out=work.name, device="cpu", steps=10**6)
    trainer = Trainer(cfg, buffer=buffer)
    trainer.setup()
    trainer.model.train()
    step = trainer.step

    augment = AugmentConfig() if d.augment else AugmentConfig.off()
    loader = BatchLoader(buffer, d.batch_size, skeleton.flip, augment, seed=d.seed)

    def strip(batch: dict) -> dict:
        batch.pop("raw_joints3d", None)
        batch.pop("raw_visibility", None)
        return batch

    preloaded_batches = [strip(loader.next()) for _ in range(4)]
    window = b.p2_window_steps
    waits = {"live": [0, 0], "paused": [0, 0]}  # [waited, steps] over the timed windows
    calls = {"live": 0, "paused": 0}
    produced: list[float] = []

    def from_loader(name: str) -> float:
        w0, n0, i0 = loader.waits, loader.batches, buffer.inserted
        t0 = time.perf_counter()
        for _ in range(window):
            step(strip(loader.next()))
        dt = time.perf_counter() - t0
        calls[name] += 1
        if calls[name] > 1:  # the first call is the warm-up round: not counted
            waits[name][0] += loader.waits - w0
            waits[name][1] += loader.batches - n0
            if name == "live":
                produced.append((buffer.inserted - i0) / dt)
        return window / dt

    def ensure_pool() -> None:
        nonlocal pool
        if pool is None:
            pool = start_pool()
            time.sleep(1.0)  # past the teacher's start-up: time the steady state

    def live() -> float:
        ensure_pool()
        return from_loader("live")

    def stop_pool() -> None:
        nonlocal pool
        if pool is not None:
            pool.stop()
            pool = None

    def paused() -> float:
        stop_pool()
        return from_loader("paused")

    def preloaded() -> float:
        t0 = time.perf_counter()
        for i in range(window):
            step(preloaded_batches[i % len(preloaded_batches)])
        return window / (time.perf_counter() - t0)

    runs = interleaved({"live": live, "paused": paused, "preloaded": preloaded}, warmup=1, repeats=b.p2_rounds)
    thread_cores = {}
    for name, feed in (("live", live), ("paused", paused)):  # untimed: where the CPU went
        # Switch feeds before the count starts: a starting or stopping producer is neither feed.
        if name == "live":
            ensure_pool()
        else:
            stop_pool()
        with ThreadCPU() as threads:
            feed()
        thread_cores[name] = threads.cores
    loader.close()
    stop_pool()
    trainer.close()
    work.cleanup()
    live_r, paused_r, pre_r = (runs[k].median for k in ("live", "paused", "preloaded"))
    wait_live = waits["live"][0] / max(1, waits["live"][1])
    details = {
        "student": d.student,
        "crop_size": d.crop_size,
        "batch_size": d.batch_size,
        "producers": workers,
        "live_over_preloaded_diagnostic": live_r / pre_r,
        "steps_counted_for_waits": waits["live"][1],
        "min_fill": d.min_fill,
        "fill_seconds": fill_s,
        "torch_threads": torch.get_num_threads(),
        "window_steps": window,
        "live": _timing(runs["live"]),
        "paused": _timing(runs["paused"]),
        "preloaded": _timing(runs["preloaded"]),
        "paused_over_preloaded": paused_r / pre_r,
        "live_over_paused": live_r / paused_r,
        "wait_fraction_live": wait_live,
        "wait_fraction_paused": waits["paused"][0] / max(1, waits["paused"][1]),
        "thread_cores": thread_cores,
        "crops_per_s_produced_while_live": statistics.median(produced) if produced else None,
        "samples_per_s": {"live": live_r * d.batch_size, "preloaded": pre_r * d.batch_size},
    }
    return {
        "title": "P2 trainer starvation",
        "numerator": _figure(wait_live, "of steps", "share of live training steps whose batch was not ready"),
        "denominator": _figure(live_r, "steps/s", f"live; diagnostic: preloaded {pre_r:.2f} steps/s"),
        "value": wait_live,
        "goal": f"<= {GOALS['P2']} of steps after warm-up",
        "met": wait_live <= GOALS["P2"],
        "details": details,
    }


def section_p2_train(b: Budget) -> dict:
    """P2 cross-check with the real `train()` (`Trainer.run`): live producers / a prepared buffer.

    Run as its own process after P2 (full budget only), so P2's model is not alive next to
    train()'s. Read from metrics.jsonl: samples/s of the log windows after the buffer reached
    min_fill (the first two windows, which hold the fill wait and the warm-up, are dropped) and
    train()'s own wait fraction (it counts the first batch, which always waits for min_fill).
    """
    from streampose.engine.train import TrainConfig, train
    from streampose.sources import refs
    from streampose.stream.buffer import RingBuffer
    from streampose.stream.producers import ProducerConfig, ProducerPool, producer_count, teacher_factory
    from streampose.teachers import teacher_class

    d = _train_defaults()
    specs = _clip_paths(CLIPS)
    skeleton = teacher_class(d.teacher).skeleton
    filled = RingBuffer(skeleton.num_joints, d.crop_size, budget_bytes=int(0.25 * 2**30), min_fill=b.p2_min_fill)
    pcfg = ProducerConfig(stride=d.stride, max_side=d.max_side, crop_size=d.crop_size)
    workers = producer_count(d.producers, "cpu")
    teacher = teacher_factory(d.teacher, workers)
    pool = ProducerPool(refs(specs, loop=True), filled, teacher, pcfg, workers, processes=workers > 1).start()
    while filled.fill < 2 * b.p2_min_fill:
        time.sleep(0.05)
    pool.stop()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, buffer in (("prepared_buffer", filled), ("live", None)):
            cfg = TrainConfig(
                sources=specs,
                out=f"{tmp}/{name}",
                steps=b.p2_train_steps,
                min_fill=b.p2_min_fill,
                buffer_gb=0.25,
                log_every=10,
                save_every=10**9,
            )
            result = train(cfg, buffer=buffer)
            rows = [json.loads(line) for line in Path(cfg.out, "metrics.jsonl").read_text().splitlines()]
            rates = [r["samples_per_s"] for r in rows[2:]]
            out[name] = {
                "samples_per_s": statistics.median(rates) if rates else None,
                "wait_fraction": result["wait_fraction"],
                "steps": result["step"],
            }
    live, base = out["live"]["samples_per_s"], out["prepared_buffer"]["samples_per_s"]
    out["ratio"] = live / base if live and base else None
    return out


# -- P3: decode ----------------------------------------------------------------------------------------


def _streamable(data: bytes) -> bytes:
    """The same packets in a container FFmpeg can read from a pipe.

    An MP4 whose index (moov) comes after the media data cannot be read from stdin; such a file
    is remuxed in memory (packets copied, nothing re-encoded) into fragmented MP4, and both
    sides of P3 then decode these same bytes.
    """
    import av

    top, i = [], 0
    while i + 8 <= len(data) and len(top) < 16:
        size = int.from_bytes(data[i : i + 4], "big")
        top.append(data[i + 4 : i + 8])
        i += size if size >= 8 else len(data)
    if b"moov" not in top or b"mdat" not in top or top.index(b"moov") < top.index(b"mdat"):
        return data
    src = av.open(io.BytesIO(data))
    buf = io.BytesIO()
    out = av.open(buf, mode="w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"})
    s_in = src.streams.video[0]
    s_out = out.add_stream_from_template(s_in)
    for packet in src.demux(s_in):
        if packet.size:
            packet.stream = s_out
            out.mux(packet)
    out.close()
    src.close()
    return buf.getvalue()


def _ffmpeg_cmd(threads: str, max_frames: int | None) -> list[str]:
    """Decode stdin to RGB and drop it: `-threads 0` (auto) decoding, like PyAV's thread_count 0 with
    frame+slice threads; swscale's own threads left automatic, like PyAV's reformat (threads=0);
    bilinear like PyAV's default interpolation."""
    limit = ["-frames:v", str(max_frames)] if max_frames else []
    return (
        ["ffmpeg", "-hide_banner", "-nostdin", "-threads", threads, "-i", "pipe:0", "-an", "-sn", "-dn"]
        + limit
        + ["-sws_flags", "bilinear", "-pix_fmt", "rgb24", "-f", "null", "-"]
    )


def section_p3(b: Budget) -> dict:
    """In-memory PyAV decode to RGB / `ffmpeg -i - -pix_fmt rgb24 -f null -` on the same bytes.

    The ffmpeg side is timed around the whole subprocess, minus its start-up (the median time of
    `ffmpeg -version`, which loads the same libraries), so both sides count decoding from bytes
    already in memory. Without ffmpeg on PATH the PyAV side is still measured and the ratio skipped.
    """
    import av

    from streampose.stream.decode import decode_frames

    clips = {
        name: _streamable(Path(p).read_bytes()) for name, p in zip(b.p3_clips, _clip_paths(b.p3_clips), strict=True)
    }
    ffmpeg = shutil.which("ffmpeg")
    counts: dict[str, int] = {}

    def pyav(name: str):
        def run() -> float:
            t0 = time.perf_counter()
            n = sum(1 for _ in decode_frames(clips[name], name, max_frames=b.p3_max_frames))
            counts[name] = n
            return n / (time.perf_counter() - t0)

        return run

    def pyav_sws1(name: str):
        """Diagnostic, not the product: decode_frames' loop with swscale held to one thread.

        PyAV's `to_ndarray` builds a new swscale context for every frame, and with its default
        threads=0 that context starts (and ends) a pool of worker threads each time; this case
        shows what that costs.
        """

        def run() -> float:
            container = av.open(io.BytesIO(clips[name]))
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # as decode_frames
            t0 = time.perf_counter()
            n = 0
            for frame in container.decode(stream):
                frame.to_ndarray(format="rgb24", threads=1)
                n += 1
                if b.p3_max_frames is not None and n >= b.p3_max_frames:
                    break
            container.close()
            return n / (time.perf_counter() - t0)

        return run

    startup: list[float] = []
    ffmpeg_frames: dict[str, int] = {}

    def measure_startup() -> None:
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, check=True)
            startup.append(time.perf_counter() - t0)

    def cli(name: str, threads: str):
        def run() -> float:
            t0 = time.perf_counter()
            proc = subprocess.run(_ffmpeg_cmd(threads, b.p3_max_frames), input=clips[name], capture_output=True)
            dt = time.perf_counter() - t0 - statistics.median(startup)
            if proc.returncode != 0:
                raise RuntimeError(f"ffmpeg failed on {name}: {proc.stderr.decode(errors='replace')[-300:]}")
            found = re.findall(rb"frame=\s*(\d+)", proc.stderr)
            ffmpeg_frames[name] = int(found[-1]) if found else counts[name]
            return ffmpeg_frames[name] / dt

        return run

    cases = {}
    for name in clips:
        cases[f"pyav:{name}"] = pyav(name)
        cases[f"pyav-sws1:{name}"] = pyav_sws1(name)
        if ffmpeg:
            cases[f"ffmpeg:{name}"] = cli(name, "0")
            cases[f"ffmpeg-1thread:{name}"] = cli(name, "1")
    if ffmpeg:
        measure_startup()
    runs = interleaved(cases, warmup=1, repeats=b.p3_repeats)

    def total(prefix: str) -> float:
        """Frames/s over all clips together: total frames / total median time."""
        frames = sum(counts[n] for n in clips)
        return frames / sum(counts[n] / runs[f"{prefix}:{n}"].median for n in clips)

    per_clip = {}
    for name in clips:
        entry = {
            "frames": counts[name],
            "pyav": _timing(runs[f"pyav:{name}"]),
            "pyav_sws_1thread_diagnostic": _timing(runs[f"pyav-sws1:{name}"]),
        }
        if ffmpeg:
            entry |= {
                "ffmpeg_frames": ffmpeg_frames[name],
                "ffmpeg": _timing(runs[f"ffmpeg:{name}"]),
                "ffmpeg_1thread": _timing(runs[f"ffmpeg-1thread:{name}"]),
                "ratio": runs[f"pyav:{name}"].median / runs[f"ffmpeg:{name}"].median,
            }
        per_clip[name] = entry
    pyav_fps = total("pyav")
    result = {
        "title": "P3 decode",
        "numerator": _figure(pyav_fps, "frames/s", "PyAV decode_frames to RGB, in memory"),
        "goal": f">= {GOALS['P3']}",
        "details": {
            "clips": per_clip,
            "max_frames": b.p3_max_frames,
            "pyav_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        },
    }
    if not ffmpeg:
        reason = "ffmpeg is not on PATH (make bench installs Debian's ffmpeg when run as root with apt-get)"
        return result | {"denominator": _figure(None, "frames/s", "ffmpeg CLI"), "skipped": reason, "met": None}
    version = subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True).stdout
    ffmpeg_fps = total("ffmpeg")
    result["details"] |= {
        "ffmpeg_version": version.split("\n", 1)[0],
        "ffmpeg_command": " ".join(_ffmpeg_cmd("0", b.p3_max_frames)),
        "ffmpeg_startup_s": statistics.median(startup),
        "ffmpeg_1thread_fps": total("ffmpeg-1thread"),
    }
    return result | {
        "denominator": _figure(ffmpeg_fps, "frames/s", "ffmpeg -i - -pix_fmt rgb24 -f null - (stdin, same bytes)"),
        "ratio": pyav_fps / ffmpeg_fps,
        "met": pyav_fps / ffmpeg_fps >= GOALS["P3"],
    }


# -- P4: student inference ---------------------------------------------------------------------------


def section_p4(b: Budget) -> dict:
    """Crops/s of the student's inference, batch 32: fp32, torch's `preferred_layout(train=False)`,
    and onnxruntime (`OnnxBackend` on the exported student, uint8 crops in); batch 1 of the default
    cell too. The figure is the faster backend at batch 32, which `eval` runs a checkpoint in.

    Each configuration runs in its own fresh process through `student_speed`'s child (the same
    measurement as the README's student table); the modes of one cell run back to back so they see
    similar foreign load, and with several rounds each cell keeps its best median (foreign load
    only ever slows a run down). The figure is the default student at the default crop size.
    """
    import student_speed
    import torch

    from streampose.model.preprocess import preferred_layout
    from streampose.teachers import teacher_class

    d = _train_defaults()
    joints = teacher_class(d.teacher).skeleton.num_joints
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    modes = {v: k for k, v in student_speed.MODES.items() if k != "ort"}
    default = d.student if d.student in b.p4_sizes else b.p4_sizes[0]
    results: dict[str, dict] = {}

    def best_mode(device: str, size: str) -> str:
        channels_last, dtype = preferred_layout(size, device, train=False)
        return modes[(channels_last, str(dtype).removeprefix("torch.") if dtype else None)]

    def measure(device: str, size: str, crop: int, mode: str, batch: int) -> None:
        spec = {
            "size": size, "crop": crop, "mode": mode, "phase": "infer", "batch": batch, "joints": joints,
            "threads": 0, "warmup_s": b.p4_warmup_s, "repeat_s": b.p4_repeat_s, "repeats": b.p4_repeats,
            "device": device,
        }  # fmt: skip
        r = student_speed._run_child(spec)
        key = f"{device}/{size}/{crop}/{mode}/{batch}"
        if key not in results or r.get("median", 0) > results[key].get("median", 0):
            results[key] = r
        print(f"  P4 {key}: {r.get('median', r.get('error'))}", file=sys.stderr, flush=True)

    for _ in range(b.p4_rounds):
        for device in devices:
            for size in b.p4_sizes:
                for crop in b.p4_crops:
                    for mode in dict.fromkeys(("fp32", best_mode(device, size), "ort")):
                        measure(device, size, crop, mode, 32)
            for mode in dict.fromkeys((best_mode(device, default), "ort")):
                measure(device, default, d.crop_size, mode, 1)
    cells = []
    for key, r in results.items():
        device, size, crop, mode, batch = key.split("/")
        fp32 = results.get(f"{device}/{size}/{crop}/fp32/32", {})
        cells.append(
            {
                "device": device, "size": size, "crop": int(crop), "mode": mode, "batch": int(batch),
                "crops_per_s": r.get("median"), "fp32_crops_per_s": fp32.get("median"),
                "cores": r.get("cpu_util"), "params": r.get("params"), "error": r.get("error"),
            }
        )  # fmt: skip
    # The fastest installed backend at batch 32, as `backends.fastest_backend` picks it for eval.
    mode = max(
        dict.fromkeys((best_mode("cpu", default), "ort")),
        key=lambda m: results.get(f"cpu/{default}/{d.crop_size}/{m}/32", {}).get("median", 0),
    )
    head = results.get(f"cpu/{default}/{d.crop_size}/{mode}/32", {})
    fp32 = results.get(f"cpu/{default}/{d.crop_size}/fp32/32", {})
    value = head.get("median")
    ratio = value / fp32["median"] if value and fp32.get("median") else None
    batch1 = {c["mode"]: c["crops_per_s"] for c in cells if c["batch"] == 1 and c["device"] == "cpu"}
    return {
        "title": "P4 student inference",
        "numerator": _figure(value, "crops/s", f"{default} student, {d.crop_size} px, CPU, {mode}, batch 32"),
        "denominator": _figure(fp32.get("median"), "crops/s", "same in torch, fp32 (NCHW)"),
        "ratio": ratio,
        "value": value,
        "goal": f">= {GOALS['P4']:.0f} crops/s at {d.crop_size} px (the default crop) on CPU, batch 32",
        "met": bool(value and value >= GOALS["P4"]),
        "details": {"cells": cells, "batch1": batch1, "batch": 32},
    }


# -- P5: memory ----------------------------------------------------------------------------------------


def section_p5(b: Budget) -> dict:
    """RSS over a real `train()` streaming run (producers, buffer, loader, student) against the buffer.

    VmRSS is sampled from a thread every `p5_interval_s`. The ring buffer preallocates and touches
    its whole budget at start, so after warm-up RSS should be flat: the slope (linear fit over
    the post-warm-up samples, MB/minute) shows leaks, and the peak minus the buffer's bytes is
    what everything else (Python, torch, MediaPipe, the model, frames in flight) costs.
    """
    from streampose.engine.train import TrainConfig, train
    from streampose.stream.buffer import RingBuffer
    from streampose.teachers import teacher_class

    specs = _clip_paths(CLIPS)
    rss_start = rss_bytes()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, rss_bytes()))
            stop.wait(b.p5_interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            sources=specs,
            out=tmp,
            steps=10**9,
            minutes=b.p5_seconds / 60,
            buffer_gb=b.p5_buffer_gb,
            min_fill=b.p5_min_fill,
            log_every=10,
            save_every=10**9,
        )
        result = train(cfg)
    stop.set()
    sampler.join()
    hwm = _status_kb("VmHWM") * 1024
    skeleton = teacher_class(cfg.teacher).skeleton
    nbytes = result["buffer"]["capacity"] * RingBuffer.sample_nbytes(skeleton.num_joints, cfg.crop_size)
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples], dtype=np.float64) / 1e6
    post = t >= b.p5_warmup_s
    slope = float(np.polyfit(t[post] / 60.0, rss[post], 1)[0]) if post.sum() >= 2 else float("nan")
    peak = max(hwm / 1e6, float(rss.max()))
    mb = 1e6
    return {
        "title": "P5 memory",
        "numerator": _figure(peak, "MB", "peak RSS (VmHWM) of the streaming training process"),
        "denominator": _figure(nbytes / mb, "MB", f"ring buffer nbytes (budget {b.p5_buffer_gb} GiB)"),
        "ratio": peak / (nbytes / mb),
        "goal": "slope ~0 MB/min after warm-up (no growth)",
        "met": None,
        "details": {
            "slope_mb_per_min": slope,
            "peak_minus_buffer_mb": peak - nbytes / mb,
            "rss_start_mb": rss_start / mb,
            "rss_after_warmup_mb": float(rss[post][0]) if post.any() else None,
            "rss_end_mb": float(rss[-1]),
            "seconds": b.p5_seconds,
            "warmup_s": b.p5_warmup_s,
            "samples": len(samples),
            "post_warmup_samples": int(post.sum()),
            "steps": result["step"],
            "samples_per_s": result["samples_per_s"],
            "buffer": result["buffer"],
            # Thinned to ~120 points: enough to plot the curve.
            "series_mb": [[round(float(a), 1), round(float(r), 1)] for a, r in zip(t, rss, strict=True)][
                :: max(1, len(t) // 120)
            ],
        },
    }


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


SECTION_FUNCS = {
    "P6": scaling.section_p6,
    "P7": scaling.section_p7,
    "P1": section_p1,
    "P2": section_p2,
    "P2train": section_p2_train,
    "P3": section_p3,
    "P4": section_p4,
    "P5": section_p5,
}


# -- orchestration -------------------------------------------------------------------------------------


def _fmt(x: object, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if math.isfinite(x) else str(x)
    return str(x)


def _cores(cores: dict[str, float]) -> str:
    return ", ".join(f"{name} {c:.2f}" for name, c in list(cores.items())[:6]) or "-"


def table(results: dict) -> str:
    """The README table: one row per figure plus the sub-figures that explain it."""
    rows = ["| figure | numerator | denominator | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for key in SECTIONS:
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            rows.append(f"| {key} | error: {r['error'][:80]} | | | | |")
            continue
        num, den = r["numerator"], r["denominator"]
        met = {True: "yes", False: "**no**", None: "-"}[r.get("met")]
        if r.get("busy_machine"):
            met += f" (busy: other jobs used {r['foreign_cores_during']:.1f} cores)"
        ratio = _fmt(r.get("ratio"), 2)
        if key == "P2":
            ratio = _fmt(r.get("value"), 3)
        elif key == "P4":
            ratio = f"{_fmt(r.get('value'), 0)} crops/s ({ratio}x fp32)"
        if r.get("skipped"):
            ratio, met = "skipped", r["skipped"]
        rows.append(
            f"| {r['title']} | {_fmt(num['value'])} {num['unit']} ({num['what']}) | "
            f"{_fmt(den['value'])} {den['unit']} ({den['what']}) | {ratio} | {r['goal']} | {met} |"
        )
        d = r["details"]
        if key == "P1":
            ms = d["stage_ms_per_frame"]
            rows.append(
                f"| P1 stages | ms/frame: decode {ms['decode']:.1f}, teacher {ms['teacher']:.1f}, "
                f"crops+put {ms['crops_and_put']:.2f}, pool {ms['pool_total']:.1f} | cores: pool {d['pool']['cores']}, "
                f"teacher {d['teacher']['cores']} | serial model {d['serial_prediction_ratio']:.2f} | | |"
            )
            rows.append(f"| P1 cores by thread (pool) | {_cores(d['thread_cores_pool'])} | | | | |")
        elif key == "P2":
            rows.append(
                f"| P2 live vs preloaded (diagnostic) | {_fmt(d['live']['median'], 2)} steps/s | "
                f"{_fmt(d['preloaded']['median'], 2)} steps/s | {_fmt(d['live_over_preloaded_diagnostic'], 2)} | | |"
            )
            rows.append(
                f"| P2 paused producer | {_fmt(d['paused']['median'], 2)} steps/s (loader only) | "
                f"{_fmt(d['preloaded']['median'], 2)} steps/s | {_fmt(d['paused_over_preloaded'], 2)} | | |"
            )
            rows.append(
                f"| P2 live vs paused | {_fmt(d['live']['median'], 2)} steps/s | "
                f"{_fmt(d['paused']['median'], 2)} steps/s | {_fmt(d['live_over_paused'], 2)} | | |"
            )
            rows.append(
                f"| P2 steps that waited | live {_fmt(d['wait_fraction_live'], 3)}, "
                f"paused {_fmt(d['wait_fraction_paused'], 3)} | | | | |"
            )
            for feed, cores in d["thread_cores"].items():
                rows.append(f"| P2 cores by thread ({feed}) | {_cores(cores)} | | | | |")
            tr = d.get("train")
            if tr and "error" in tr:
                rows.append(f"| P2 real train() | error: {tr['error'][:80]} | | | | |")
            elif tr:
                rows.append(
                    f"| P2 real train() | live {_fmt(tr['live']['samples_per_s'])} samples/s, "
                    f"wait {_fmt(tr['live']['wait_fraction'], 3)} | prepared buffer "
                    f"{_fmt(tr['prepared_buffer']['samples_per_s'])} samples/s | {_fmt(tr['ratio'], 2)} | | |"
                )
        elif key == "P3" and not r.get("skipped"):
            for name, c in d["clips"].items():
                rows.append(
                    f"| P3 {name} ({c['frames']} frames) | PyAV {_fmt(c['pyav']['median'])} frames/s "
                    f"(diagnostic, swscale 1 thread: {_fmt(c['pyav_sws_1thread_diagnostic']['median'])}) | "
                    f"ffmpeg {_fmt(c['ffmpeg']['median'])} (1 thread {_fmt(c['ffmpeg_1thread']['median'])}) | "
                    f"{_fmt(c['ratio'], 2)} | | |"
                )
        elif key == "P4":
            for c in d["cells"]:
                rows.append(
                    f"| P4 {c['device']} {c['size']} {c['crop']} px batch {c['batch']} | "
                    f"{_fmt(c['crops_per_s'], 0)} crops/s ({c['mode']}) | {_fmt(c['fp32_crops_per_s'], 0)} crops/s "
                    f"(fp32, batch 32) | | | {'yes' if (c['crops_per_s'] or 0) >= GOALS['P4'] else 'no'} |"
                )
        elif key in ("P6", "P7"):
            rows += scaling.table_rows(key, d)
        elif key == "P5":
            rows.append(
                f"| P5 growth | slope {_fmt(d['slope_mb_per_min'], 2)} MB/min after {d['warmup_s']:.0f} s warm-up "
                f"({d['post_warmup_samples']} samples) | peak - buffer {_fmt(d['peak_minus_buffer_mb'], 0)} MB | | | |"
            )
    return "\n".join(rows)


def machine() -> dict:
    import av
    import torch

    ffmpeg = shutil.which("ffmpeg")
    version = None
    if ffmpeg:
        version = subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True).stdout
        version = version.split("\n", 1)[0]
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "av": av.__version__,
        "ffmpeg": version,
        "python": platform.python_version(),
        "host": platform.node(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="under 2 minutes (make bench-quick)")
    size.add_argument("--smoke", action="store_true", help="tiny budget for CI: checks the plumbing, not speed")
    p.add_argument("--out", default="bench.json", help="where to write the results (default bench.json)")
    p.add_argument(
        "--sections",
        nargs="+",
        default=list(SECTIONS),
        choices=SECTIONS,
        help="run only these; an existing --out of the same budget keeps its other sections (re-run a busy figure)",
    )
    p.add_argument("--section", default=None, help=argparse.SUPPRESS)  # child: run one section, print JSON
    p.add_argument("--budget", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.section:
        budget = BUDGETS[args.budget]
        load = load1()
        t0 = time.perf_counter()
        result = SECTION_FUNCS[args.section](budget)
        result |= {"seconds": time.perf_counter() - t0, "load_before": load, "load_after": load1()}
        result["budget"] = asdict(budget)  # per section: a re-run section may follow other settings
        print(json.dumps(result, default=float))
        return

    budget = BUDGETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    started = datetime.datetime.now(datetime.UTC)
    foreign = foreign_cores_now()
    print(
        f"benchmarks ({budget.name}) on {cpu_model()}: other jobs use {foreign:.2f} cores now, load {load1():.2f}",
        file=sys.stderr,
        flush=True,
    )
    if foreign > BUSY_CORES:
        print("  warning: other jobs share the cores: figures will be lower and noisier", file=sys.stderr)
    meta = {
        "budget": budget.name,
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "budget_config": asdict(budget),
    }
    results: dict = {"meta": meta}
    merged = False
    out = Path(args.out)
    if set(args.sections) != set(SECTIONS) and out.exists():
        # Re-running a few figures (say, one taken while other jobs were busy): keep the rest.
        old = json.loads(out.read_text())
        if old.get("meta", {}).get("budget") == budget.name:
            results = old | {"meta": old["meta"] | {"updated": meta["date"], "update_command": meta["command"]}}
            merged = True
    for key in args.sections:
        t0 = time.perf_counter()
        before = foreign_cores_now(0.5 if budget.name == "full" else 0.2)
        print(f"{key} ... (other jobs: {_fmt(before, 2)} cores)", file=sys.stderr, flush=True)
        with ForeignLoad() as during:
            r = run_child(__file__, ["--section", key, "--budget", budget.name], timeout=3600)
        if "error" in r:
            print(f"{key} failed: {r['error']}", file=sys.stderr, flush=True)
        else:
            r |= {
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "foreign_cores_before": before,
                "foreign_cores_during": during.cores,
            }
            r["busy_machine"] = during.cores > BUSY_CORES
            if key == "P2" and budget.p2_train_steps:
                print("P2 cross-check with the real train() ...", file=sys.stderr, flush=True)
                r["details"]["train"] = run_child(__file__, ["--section", "P2train", "--budget", budget.name])
            print(
                f"{key} done in {time.perf_counter() - t0:.0f} s: ratio {_fmt(r.get('ratio'), 3)}, "
                f"other jobs used {during.cores:.2f} cores meanwhile"
                + ("  (BUSY MACHINE: re-run this figure when it is quiet)" if r["busy_machine"] else ""),
                file=sys.stderr,
                flush=True,
            )
        results[key] = r
    seconds = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    results["meta"]["update_seconds" if merged else "seconds"] = seconds
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(table(results))
    print(f"\nwrote {args.out}", file=sys.stderr)
    bad = [k for k in args.sections if "error" in results[k]]
    if bad:
        sys.exit(f"sections failed: {', '.join(bad)}")


if __name__ == "__main__":
    main()
