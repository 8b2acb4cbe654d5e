"""`streampose train`: the student learns 3D pose from the live stream.

Read top to bottom: config, device and run folder, student and optimiser (or resume),
the stream (ring buffer, producers, batch loader), then the loop. Producers keep relabelling
the sources into the buffer while the loop draws augmented batches from it; offline clips
are few, so each pass over them adds freshly labelled crops and the augmentations keep the
passes from being identical.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

from streampose.engine.distributed import init_distributed, params_checksum
from streampose.errors import StreamPoseError
from streampose.model.backends import pick_device
from streampose.model.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from streampose.model.preprocess import IMAGE_MEAN, IMAGE_STD, preferred_layout
from streampose.model.student import build_student
from streampose.sources import SourceFilters, refs
from streampose.sources.provenance import PendingEntries, ProvenanceLog
from streampose.stream.augment import AugmentConfig
from streampose.stream.buffer import RingBuffer
from streampose.stream.loader import BatchLoader
from streampose.stream.producers import ProducerConfig, ProducerPool
from streampose.teachers import get_teacher, teacher_class


@dataclass
class TrainConfig:
    sources: list[str] = field(default_factory=list)
    out: str = "runs/train"
    teacher: str = "mediapipe"
    student: str = "small"
    steps: int = 2000
    minutes: float | None = None  # optional wall-clock cap
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    loss_3d: float = 1.0
    loss_2d: float = 1.0
    loss_vis: float = 0.1
    crop_size: int = 128
    buffer_gb: float = 1.0
    min_fill: int = 256
    max_replay: float | None = None
    producers: int = 1
    stride: int = 1
    max_side: int | None = 720
    max_frames: int | None = None  # per video and pass
    max_videos: int | None = None
    max_video_mb: float = 500.0
    filters: dict = field(default_factory=dict)  # SourceFilters fields
    augment: bool = True
    device: str = "auto"
    compile: bool = False
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    dist_timeout: float = 300.0  # seconds a rank waits for the others before failing
    log_every: int = 10
    save_every: int = 500
    seed: int = 0
    resume: bool = False


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup, then cosine decay to 5 % of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def pose_loss(out: dict, batch: dict, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Visibility-weighted L1 on 3D (metres) and 2D (crop fractions), BCE on visibility."""
    vis = batch["visibility"]
    weight = vis / vis.sum().clamp(min=1.0)
    l3d = ((out["joints3d"] - batch["joints3d"]).abs().sum(-1) * weight).sum()
    target2d = batch["joints2d"] / cfg.crop_size
    l2d = ((out["joints2d"] - target2d).abs().sum(-1) * weight).sum()
    lvis = F.binary_cross_entropy_with_logits(out["vis_logits"], vis)
    total = cfg.loss_3d * l3d + cfg.loss_2d * l2d + cfg.loss_vis * lvis
    return total, {"loss": total.item(), "loss_3d": l3d.item(), "loss_2d": l2d.item(), "loss_vis": lvis.item()}


def train(cfg: TrainConfig, buffer: RingBuffer | None = None, progress=None) -> dict:
    """Train until `cfg.steps` (or `cfg.minutes`, or Ctrl-C); returns a summary.

    Under torchrun every rank runs this same function (see `distributed`). `buffer` replaces
    the live producers with a prepared buffer (tests, benchmarks).
    """
    # -- setup ---------------------------------------------------------------------------------
    rank, device = init_distributed(pick_device(cfg.device), cfg.dist_timeout)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    if rank.main:
        out.mkdir(parents=True, exist_ok=True)
    skeleton = teacher_class(cfg.teacher).skeleton

    model = build_student(cfg.student, skeleton.num_joints, cfg.crop_size).to(device)
    channels_last, amp_dtype = preferred_layout(cfg.student, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup, cfg.steps))
    step, used_videos = 0, set()
    pose_sum = np.zeros((skeleton.num_joints, 3))
    pose_weight = np.zeros(skeleton.num_joints)

    last = out / "last.pt"
    if cfg.resume and last.exists():
        ckpt = load_checkpoint(last)
        if ckpt["skeleton"] != skeleton.name or ckpt["student"] != model.config_dict():
            raise StreamPoseError(
                f"{last} holds a {ckpt['student'].get('name')} student on {ckpt['skeleton']}, but this run asks for "
                f"{cfg.student} on {skeleton.name} at {cfg.crop_size} px: use another --out or the same options"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        restore_rng_states(ckpt["rng"])
        step, used_videos = ckpt["step"], set(ckpt["used_videos"])
        pose_sum, pose_weight = ckpt["pose_sum"], ckpt["pose_weight"]
    # DDP averages gradients over ranks (and broadcasts rank 0's weights at start).
    forward = model
    if rank.active:
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(forward) if cfg.compile else forward

    # -- the stream ----------------------------------------------------------------------------
    # Only rank 0 writes provenance; other ranks hold their entries until they are gathered.
    provenance = ProvenanceLog(out / "provenance.jsonl") if rank.main else None
    pending = PendingEntries(rank=rank.rank)
    pool = None
    if buffer is None:
        buffer = RingBuffer(
            skeleton.num_joints,
            cfg.crop_size,
            budget_bytes=int(cfg.buffer_gb * 2**30),
            min_fill=cfg.min_fill,
            max_replay=cfg.max_replay,
        )
        producer_cfg = ProducerConfig(
            stride=cfg.stride,
            max_side=cfg.max_side,
            max_frames=cfg.max_frames,
            crop_size=cfg.crop_size,
            max_video_bytes=int(cfg.max_video_mb * 1e6),
        )
        # Loop: offline clips are few, so every pass relabels them; searches keep paging for new
        # videos and skip those already used (the checkpoint's and the provenance's).
        known = set().union(*rank.gather(used_videos | (provenance.used_ids() if provenance else set())))
        stream = refs(
            cfg.sources,
            loop=True,
            max_videos=cfg.max_videos,
            filters=SourceFilters(**cfg.filters),
            skip_ids=known,
            keep=rank.keeps if rank.active else None,
        )
        make_teacher = lambda: get_teacher(cfg.teacher)  # noqa: E731 - one per producer thread
        pool = ProducerPool(stream, buffer, make_teacher, producer_cfg, cfg.producers, pending, known=known)
        pool.start()
    augment = AugmentConfig() if cfg.augment else AugmentConfig.off()
    seed = cfg.seed + 7919 * rank.rank  # ranks draw different batches
    loader = BatchLoader(buffer, cfg.batch_size, skeleton.flip, augment, seed=seed, start_step=step, device=device)

    # -- logging (rank 0) ----------------------------------------------------------------------
    tb = metrics_file = None
    if rank.main:
        tb = SummaryWriter(str(out / "tb"))
        metrics_file = (out / "metrics.jsonl").open("a")
        (out / "config.json").write_text(json.dumps(asdict(cfg) | {"world_size": rank.world}, indent=2))

    def gather_videos() -> None:
        """Every rank's used videos and provenance to rank 0 (a collective: all ranks call it)."""
        nonlocal used_videos
        if pool is not None:
            used_videos |= set().union(*rank.gather(set(pool.used_videos)))
        for items in rank.gather(pending.drain()):
            for item in items:
                if provenance is not None:
                    provenance.write(item)

    def checkpoint(path: Path) -> None:
        if not rank.main:
            return
        save_checkpoint(
            path,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            step=step,
            config=asdict(cfg),
            world_size=rank.world,
            teacher=cfg.teacher,
            skeleton=skeleton.name,
            student=model.config_dict(),
            preprocess={"crop_size": cfg.crop_size, "mean": IMAGE_MEAN, "std": IMAGE_STD},
            rng=rng_states(),
            used_videos=sorted(used_videos | (pool.used_videos if pool else set())),
            pose_sum=pose_sum,
            pose_weight=pose_weight,
            mean_pose=(pose_sum / np.maximum(pose_weight, 1e-9)[:, None]).astype(np.float32),
        )

    # -- the loop ------------------------------------------------------------------------------
    start = time.perf_counter()
    start_step = step
    window_start, window_samples = start, 0
    first_loss = parts = None
    interrupted = finished = False
    model.train()
    try:
        while step < cfg.steps:
            # Every rank must stop at the same step, or the others would wait for it forever.
            if cfg.minutes is not None and rank.any(time.perf_counter() - start > cfg.minutes * 60):
                break
            batch = loader.next()
            raw3d, raw_vis = batch.pop("raw_joints3d"), batch.pop("raw_visibility")
            pose_sum += (raw3d * raw_vis[..., None]).sum(0)
            pose_weight += raw_vis.sum(0)

            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = forward(batch["image"])
            loss, parts = pose_loss(outputs, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            window_samples += cfg.batch_size
            first_loss = first_loss if first_loss is not None else parts["loss"]

            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                stats = buffer.stats()
                # Losses are averaged over ranks; throughput and producer rates are summed.
                keys = ("loss", "loss_3d", "loss_2d", "loss_vis")
                totals = rank.sum(
                    [parts[k] for k in keys]
                    + [window_samples / (now - window_start), stats["frames_per_s"], stats["persons_per_s"]]
                )
                gather_videos()
                record = {
                    "step": step,
                    **{k: v / rank.world for k, v in zip(keys, totals, strict=False)},
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                    "samples_per_s": totals[4],
                    "wait_fraction": loader.waits / max(1, loader.batches),
                    **{f"buffer_{k}": v for k, v in stats.items()},
                    "frames_per_s": totals[5],
                    "persons_per_s": totals[6],
                    "world_size": rank.world,
                    "time_s": now - start,
                }
                window_start, window_samples = now, 0
                if rank.main:
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    for key in ("loss", "loss_3d", "loss_2d", "loss_vis", "lr", "samples_per_s"):
                        tb.add_scalar(f"train/{key}", record[key], step)
                    for key in ("fill", "replay_ratio"):
                        tb.add_scalar(f"buffer/{key}", stats[key], step)
                    for key in ("frames_per_s", "persons_per_s"):
                        tb.add_scalar(f"producers/{key}", record[key], step)
                if progress is not None:
                    progress.set_postfix(
                        loss=f"{record['loss']:.3f}",
                        fill=stats["fill"],
                        replay=f"{stats['replay_ratio']:.1f}",
                        fps=f"{record['frames_per_s']:.0f}",
                    )
            if progress is not None:
                progress.update()
            if step % cfg.save_every == 0:
                gather_videos()
                checkpoint(out / f"step{step:07d}.pt")
                checkpoint(last)
        finished = True
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:
        if rank.active:
            raise rank.failure(e) from e
        raise
    finally:
        loader.close()
        if pool is not None:
            pool.stop()
        if finished:
            gather_videos()  # collectives only when every rank got here the same way
        checkpoint(last)
        if rank.main:
            for item in pending.drain():  # entries not gathered yet (an interrupted run)
                provenance.write(item)
            tb.close()
            metrics_file.close()
            provenance.close()
    checksums = rank.gather(params_checksum(model)) if finished else [params_checksum(model)]
    rank.close()
    seconds = time.perf_counter() - start
    return {
        "step": step,
        "interrupted": interrupted,
        "first_loss": first_loss,
        "last_loss": parts["loss"] if parts else None,
        "seconds": seconds,
        "samples_per_s": (step - start_step) * cfg.batch_size * rank.world / seconds,
        "world_size": rank.world,
        "rank": rank.rank,
        "ranks_in_sync": len(set(checksums)) == 1,
        "checkpoint": str(last),
        "buffer": buffer.stats(),
        "wait_fraction": loader.waits / max(1, loader.batches),
    }
