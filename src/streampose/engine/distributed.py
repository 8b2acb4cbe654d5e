"""Training on several processes with PyTorch's own engine: `torchrun` + DDP.

Each rank runs its own producers and ring buffer on its own share of the videos, and DDP
averages gradients. The share is a stable hash: a video belongs to rank
`sha1(key) mod world_size`, where the key is a file's name (not its path, so nodes that mount
the data at different places agree) and any other video's id (URL, `pexels:123`,
`commons:File:...`). Search results are filtered by the same rule as they arrive, so ranks
never label the same video. Only rank 0 writes files; what the other ranks know (provenance,
used videos, throughput) is gathered to it.

Failure: a rank that raises exits non-zero and torchrun stops the others; a rank killed
outright makes the others' next collective fail (gloo: connection closed by peer), bounded by
the process group timeout (`--dist-timeout`). Either way every rank exits with an error and
torchrun's elastic restart can resume from `last.pt` (`--resume`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from streampose.errors import RankFailure
from streampose.sources import VideoRef


def shard_key(ref: VideoRef) -> str:
    return Path(ref.url).name if ref.provider == "file" else ref.id


def shard_of(ref: VideoRef, world: int) -> int:
    return int.from_bytes(hashlib.sha1(shard_key(ref).encode()).digest()[:8], "big") % world


@dataclass
class Dist:
    """This process's place in the job; a job of one process needs no process group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def keeps(self, ref: VideoRef) -> bool:
        return shard_of(ref, self.world) == self.rank

    def gather(self, obj: object) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.cpu().tolist()

    def any(self, flag: bool) -> bool:
        return self.sum([float(flag)])[0] > 0

    def barrier(self) -> None:
        """Wait until every rank gets here (rank 0's validation, say)."""
        if self.active:
            dist.barrier()

    def failure(self, error: BaseException) -> RankFailure:
        """`error` as one clear line for this rank's log; torchrun then stops the job."""
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return RankFailure(
            f"rank {self.rank} of {self.world} stopped: {type(error).__name__}: {first[:300]} "
            "(another rank may have failed or been killed: check its log; --resume continues from last.pt)"
        )

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: torch.device, timeout_s: float) -> tuple[Dist, torch.device]:
    """Join the torchrun job described by the environment, if any; NCCL on CUDA, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Dist(rank, world, local_rank), device


def params_checksum(model: torch.nn.Module) -> float:
    """A cheap fingerprint of the weights, to check that every rank holds the same model."""
    with torch.no_grad():
        return float(sum(p.double().sum() * (i + 1) for i, p in enumerate(model.parameters())))
