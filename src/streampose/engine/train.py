"""`streampose train`: the student learns 3D pose from the live stream.

A `Trainer` runs in phases: `setup` (device, run folder lock, student and optimiser, `resume`),
`start` (ring buffer, producers, batch loader, logs), then the loop in `run`: `step`, `log`,
`save`, and `close`. Producers keep relabelling the sources into the buffer while the loop
draws augmented batches from it; offline clips are few, so each pass over them adds freshly
labelled crops and the augmentations keep the passes from being identical.

Under torchrun every rank runs the same Trainer (see `distributed`). Collectives (`rank.sum`,
`rank.gather`, `rank.any`) must be called by every rank in the same order: they sit only on
paths every rank takes at the same step (log, periodic save, a finished run's close), never on
a path one rank takes alone (an exception, Ctrl-C).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

from streampose.config import write_config
from streampose.engine.config import TrainConfig
from streampose.engine.distributed import init_distributed, params_checksum
from streampose.engine.evaluate import EvalSet
from streampose.engine.loss import LOSS_KEYS, lr_factor, pose_loss
from streampose.engine.runlock import RunLock
from streampose.engine.validation import BEST_KEY, best_so_far, check_disjoint, label_validation, validate
from streampose.errors import StreamPoseError
from streampose.files import output_path, reported
from streampose.model.backends import pick_device
from streampose.model.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from streampose.model.preprocess import IMAGE_MEAN, IMAGE_STD, preferred_layout
from streampose.model.student import build_student
from streampose.poses.metrics import facing_stratum
from streampose.sources import SourceFilters, refs
from streampose.sources.provenance import PendingEntries, ProvenanceLog
from streampose.stream.augment import AugmentConfig
from streampose.stream.buffer import RingBuffer
from streampose.stream.loader import BatchLoader
from streampose.stream.producers import ProducerConfig, ProducerPool, producer_count, teacher_factory
from streampose.teachers import teacher_class


class Trainer:
    """One training run; `run()` is the whole of it, the phases are methods so that tests and
    benchmarks can call them (`benchmarks/pipeline.py` times `step`).

    `buffer` replaces the live producers with a prepared buffer (tests, benchmarks). `lock` is
    the run folder's lock when the caller took it already (the CLI does, before the slow start).
    `val_set` is a validation set labelled already (`streampose experiment` shares one between runs).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        buffer: RingBuffer | None = None,
        progress=None,
        lock: RunLock | None = None,
        val_set: EvalSet | None = None,
    ) -> None:
        self.cfg, self.buffer, self.progress, self.lock = cfg, buffer, progress, lock
        self.val_set, self.validating = val_set, bool(cfg.val) or val_set is not None
        self.best_val, self.last_val, self.val_step = float("inf"), None, -1
        self.out = Path(cfg.out)
        self.last = self.out / "last.pt"
        self.global_step = self.window_samples = 0
        self.used_videos: set[str] = set()
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.interrupted = False
        self.model = self.pool = self.loader = self.provenance = self.tb = self.metrics_file = None
        self._own_lock = False
        self.checksums: list[float] = []

    # -- phases ----------------------------------------------------------------------------------

    def setup(self) -> None:
        """Device and process group, the run folder (locked by rank 0), student and optimiser, resume."""
        cfg = self.cfg
        check_disjoint(cfg.sources, cfg.val)
        self.rank, self.device = init_distributed(pick_device(cfg.device), cfg.dist_timeout)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        if self.rank.main and self.lock is None:
            self.lock, self._own_lock = RunLock(self.out).acquire(), True
        self.skeleton = teacher_class(cfg.teacher).skeleton
        self.model = build_student(cfg.student, self.skeleton.num_joints, cfg.crop_size).to(self.device)
        channels_last, self.amp_dtype = preferred_layout(cfg.student, self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup, cfg.steps)
        )
        self.pose_sum = np.zeros((self.skeleton.num_joints, 3))
        self.pose_weight = np.zeros(self.skeleton.num_joints)
        if cfg.resume and self.last.exists():
            self.resume(self.last)
        # DDP averages gradients over ranks (and broadcasts rank 0's weights at start).
        self.forward = self.model
        if self.rank.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        self.forward = torch.compile(self.forward) if cfg.compile else self.forward

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint of the same student: weights, optimiser, schedule, RNG, used videos."""
        ckpt = load_checkpoint(path, student=True)
        if ckpt["skeleton"] != self.skeleton.name or ckpt["student"] != self.model.config_dict():
            cfg = self.cfg
            raise StreamPoseError(
                f"{path} holds a {ckpt['student'].get('name')} student on {ckpt['skeleton']}, but this run asks "
                f"for {cfg.student} on {self.skeleton.name} at {cfg.crop_size} px: use another --out or the same "
                "options"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        restore_rng_states(ckpt["rng"])
        self.global_step, self.used_videos = ckpt["step"], set(ckpt["used_videos"])
        self.pose_sum, self.pose_weight = ckpt["pose_sum"], ckpt["pose_weight"]

    def start(self) -> None:
        """The stream (ring buffer, producers, batch loader) and rank 0's logs."""
        cfg, rank = self.cfg, self.rank
        self.start_validation()
        # Only rank 0 writes provenance; other ranks hold their entries until they are gathered.
        self.provenance = ProvenanceLog(self.out / "provenance.jsonl") if rank.main else None
        self.pending = PendingEntries(rank=rank.rank)
        if self.buffer is None:
            self.buffer, self.pool = self._live_stream()
            self.pool.start()
        augment = AugmentConfig(
            background=cfg.background > 0, background_p=cfg.background, rotate=cfg.rotate_degrees > 0,
            max_degrees=cfg.rotate_degrees, cutout=cfg.cutout > 0, cutout_p=cfg.cutout,
        ) if cfg.augment else AugmentConfig.off()  # fmt: skip
        seed = cfg.seed + 7919 * rank.rank  # ranks draw different batches
        self.loader = BatchLoader(
            self.buffer, cfg.batch_size, self.skeleton.flip, augment, seed=seed, start_step=self.global_step,
            device=self.device,
        )  # fmt: skip
        if rank.main:
            with reported(self.out):
                self.tb = SummaryWriter(str(self.out / "tb"))
                self.metrics_file = output_path(self.out / "metrics.jsonl").open("a")
            write_config(cfg, self.out / "config.toml")  # a valid `train --config`: repeat or vary the run
        self.start_time = self.window_start = time.perf_counter()
        self.start_step, self.window_samples = self.global_step, 0

    def start_validation(self) -> None:
        """Rank 0 labels the validation sources once, before the producers compete for the CPU
        (the other ranks wait: `--dist-timeout` must cover it)."""
        if not self.validating:
            return
        if self.rank.main:
            self.val_set = self.val_set or label_validation(self.cfg)
            self.best_val = best_so_far(self.out / "metrics.jsonl")
        self.rank.barrier()

    def _live_stream(self) -> tuple[RingBuffer, ProducerPool]:
        cfg, rank = self.cfg, self.rank
        buffer = RingBuffer(
            self.skeleton.num_joints, cfg.crop_size, budget_bytes=int(cfg.buffer_gb * 2**30), min_fill=cfg.min_fill,
            max_replay=cfg.max_replay, stratum=facing_stratum(self.skeleton) if cfg.balance_facing else None,
        )  # fmt: skip
        producer_cfg = ProducerConfig(
            stride=cfg.stride, max_side=cfg.max_side, max_frames=cfg.max_frames, crop_size=cfg.crop_size,
            negatives=cfg.negatives, max_video_bytes=int(cfg.max_video_mb * 1e6),
        )  # fmt: skip
        # Loop: offline clips are few, so every pass relabels them; searches keep paging for new
        # videos and skip those already used (the checkpoint's and the provenance's) and the
        # validation videos (local files are kept apart by `check_disjoint`).
        used = self.used_videos | (self.provenance.used_ids() if self.provenance else set())
        known = set().union(*rank.gather(used))
        held_out = set().union(*rank.gather(set(self.val_set.video_ids) if self.val_set else set()))
        stream = refs(
            cfg.sources, loop=True, max_videos=cfg.max_videos, filters=SourceFilters(**cfg.filters),
            skip_ids=known | held_out, keep=rank.keeps if rank.active else None,
            shard=(rank.rank, rank.world) if rank.active else None,
        )  # fmt: skip
        # One teacher per producer; a process per producer when there are several (benchmarks P7).
        workers = producer_count(cfg.producers, self.device.type)
        return buffer, ProducerPool(
            stream, buffer, teacher_factory(cfg.teacher, workers), producer_cfg, workers, self.pending, known,
            processes=workers > 1,
        )  # fmt: skip

    def step(self, batch: dict) -> dict[str, float]:
        """One optimiser step on a `BatchLoader` batch: loss parts and the gradient norm."""
        raw3d, raw_vis = batch.pop("raw_joints3d", None), batch.pop("raw_visibility", None)
        if raw3d is not None:  # the teacher's mean pose, the checkpoint's baseline
            self.pose_sum += (raw3d * raw_vis[..., None]).sum(0)
            self.pose_weight += raw_vis.sum(0)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.forward(batch["image"])
        loss, parts = pose_loss(outputs, batch, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        self.window_samples += self.cfg.batch_size
        self.first_loss = parts["loss"] if self.first_loss is None else self.first_loss
        self.last_loss = parts["loss"]
        return parts

    def log(self, parts: dict[str, float]) -> None:
        """Metrics of the window since the last log (a collective: every rank calls it at the same step)."""
        now, stats = time.perf_counter(), self.buffer.stats()
        # Losses are averaged over ranks; throughput and producer rates are summed.
        rates = [self.window_samples / (now - self.window_start), stats["frames_per_s"], stats["persons_per_s"]]
        totals = self.rank.sum([parts[k] for k in LOSS_KEYS] + rates)
        self.gather_videos()
        record = {
            "step": self.global_step,
            **{k: v / self.rank.world for k, v in zip(LOSS_KEYS, totals, strict=False)},
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": parts["grad_norm"],
            "samples_per_s": totals[4],
            "wait_fraction": self.loader.waits / max(1, self.loader.batches),
            **{f"buffer_{k}": v for k, v in stats.items()},
            "frames_per_s": totals[5],
            "persons_per_s": totals[6],
            "world_size": self.rank.world,
            "time_s": now - self.start_time,
        }
        self.window_start, self.window_samples = now, 0
        if self.rank.main:
            self.write_metrics(record)
            for key in ("loss", "loss_3d", "loss_2d", "loss_vis", "lr", "samples_per_s"):
                self.tb.add_scalar(f"train/{key}", record[key], self.global_step)
            for key in ("fill", "replay_ratio"):
                self.tb.add_scalar(f"buffer/{key}", stats[key], self.global_step)
            for key in ("frames_per_s", "persons_per_s"):
                self.tb.add_scalar(f"producers/{key}", record[key], self.global_step)
        if self.progress is not None:
            self.progress.set_postfix(
                loss=f"{record['loss']:.3f}", fill=stats["fill"], replay=f"{stats['replay_ratio']:.1f}",
                fps=f"{record['frames_per_s']:.0f}",
            )  # fmt: skip

    def write_metrics(self, record: dict) -> None:
        """One line of metrics.jsonl (rank 0), flushed so a crash keeps it."""
        with reported(self.metrics_file.name):
            self.metrics_file.write(json.dumps(record) + "\n")
            self.metrics_file.flush()

    def validate(self, final: bool = False) -> None:
        """Every `val_every` steps (and at the end): rank 0 scores the student on the validation set,
        logs `val_...` and keeps `best.pt`; the other ranks wait for it, so all stay in step."""
        due = self.val_step != self.global_step and (final or self.global_step % self.cfg.val_every == 0)
        if not (self.validating and due):
            return
        if self.rank.main:
            record = {"step": self.global_step, **validate(self.model, self.device, self.val_set, self.mean_pose())}
            self.write_metrics(record)
            for key, value in record.items():
                if key.startswith("val_") and key not in ("val_frames", "val_videos"):
                    self.tb.add_scalar(f"val/{key[4:]}", value, self.global_step)
            if record[BEST_KEY] < self.best_val:
                self.best_val = record[BEST_KEY]
                self.save(self.out / "best.pt")
            self.last_val = record
        self.val_step = self.global_step
        self.rank.barrier()

    def mean_pose(self) -> np.ndarray:
        """The mean teacher pose of the training batches so far: the baseline's prediction."""
        return (self.pose_sum / np.maximum(self.pose_weight, 1e-9)[:, None]).astype(np.float32)

    def gather_videos(self) -> None:
        """Every rank's used videos and provenance to rank 0 (a collective: all ranks call it)."""
        if self.pool is not None:
            self.used_videos |= set().union(*self.rank.gather(set(self.pool.used_videos)))
        for items in self.rank.gather(self.pending.drain()):
            for item in items:
                if self.provenance is not None:
                    self.provenance.write(item)

    def save(self, *paths: Path) -> None:
        """Rank 0 writes the run's state to each of `paths`, atomically (what is gathered so far)."""
        if not self.rank.main:
            return
        cfg = self.cfg
        state = dict(
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), step=self.global_step, config=asdict(cfg),
            world_size=self.rank.world, teacher=cfg.teacher, skeleton=self.skeleton.name,
            student=self.model.config_dict(),
            preprocess={"crop_size": cfg.crop_size, "mean": IMAGE_MEAN, "std": IMAGE_STD}, rng=rng_states(),
            used_videos=sorted(self.used_videos | (self.pool.used_videos if self.pool else set())),
            pose_sum=self.pose_sum, pose_weight=self.pose_weight,
            mean_pose=self.mean_pose(),
        )  # fmt: skip
        for path in paths:
            save_checkpoint(path, **state)

    def close(self, finished: bool = False) -> None:
        """Stop the stream, save `last.pt`, close the logs and the process group, free the folder.

        Collectives only when `finished`: a rank leaving by an exception or Ctrl-C gets here alone.
        """
        if self.loader is not None:
            self.loader.close()
        if self.pool is not None:
            self.pool.stop()
        if finished:
            self.gather_videos()
        if self.model is not None:
            self.save(self.last)
        if self.rank.main and self.provenance is not None:
            for item in self.pending.drain():  # entries not gathered yet (an interrupted run)
                self.provenance.write(item)
            self.tb.close()
            self.metrics_file.close()
            self.provenance.close()
        if self.model is not None:
            checksum = params_checksum(self.model)
            self.checksums = self.rank.gather(checksum) if finished else [checksum]
        self.rank.close()
        if self._own_lock:
            self.lock.release()

    # -- the loop --------------------------------------------------------------------------------

    def out_of_time(self) -> bool:
        # Every rank must stop at the same step, or the others would wait for it forever.
        minutes = self.cfg.minutes
        return minutes is not None and self.rank.any(time.perf_counter() - self.start_time > minutes * 60)

    def run(self) -> dict:
        """Train until `cfg.steps` (or `cfg.minutes`, or Ctrl-C); returns a summary."""
        cfg = self.cfg
        self.setup()
        self.start()
        if self.progress is not None and self.start_step:  # a resumed run's bar goes on from its step
            self.progress.n = self.progress.initial = self.start_step
            self.progress.refresh()
        self.model.train()
        finished = False
        try:
            while self.global_step < cfg.steps and not self.out_of_time():
                parts = self.step(self.loader.next())
                if self.global_step % cfg.log_every == 0 or self.global_step == cfg.steps:
                    self.log(parts)
                if self.progress is not None:
                    self.progress.update()
                if self.global_step % cfg.save_every == 0:
                    self.gather_videos()
                    self.save(self.out / f"step{self.global_step:07d}.pt", self.last)
                self.validate()
            self.validate(final=True)
            finished = True
        except KeyboardInterrupt:
            self.interrupted = True
        except Exception as e:
            if self.rank.active:
                raise self.rank.failure(e) from e
            raise
        finally:
            self.close(finished)
        return self.summary()

    def summary(self) -> dict:
        seconds = time.perf_counter() - self.start_time
        return {
            "step": self.global_step,
            "interrupted": self.interrupted,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "seconds": seconds,
            "samples_per_s": (self.global_step - self.start_step) * self.cfg.batch_size * self.rank.world / seconds,
            "world_size": self.rank.world,
            "rank": self.rank.rank,
            "ranks_in_sync": len(set(self.checksums)) == 1,
            "checkpoint": str(self.last),
            "buffer": self.buffer.stats(),
            "wait_fraction": self.loader.waits / max(1, self.loader.batches),
            "val": self.last_val,
            "best_val_pa_mpjpe_mm": self.best_val if self.last_val else None,
        }


def train(cfg: TrainConfig, buffer: RingBuffer | None = None, progress=None, lock: RunLock | None = None) -> dict:
    """`Trainer(cfg, buffer, progress, lock).run()`: the whole run, for callers that need no phase."""
    return Trainer(cfg, buffer, progress, lock).run()
