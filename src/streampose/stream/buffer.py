"""A preallocated, thread-safe ring buffer of person crops between producers and the trainer.

Producers (decode -> teacher -> crop) and the training loop run at different, varying speeds.
The buffer decouples them: producers overwrite the oldest crops, the trainer draws random
batches from whatever is there. It is allocated once, up front, from a byte budget, so memory
use is fixed and known before training starts (no raw video is kept, and neither is an
unbounded backlog of crops). A budget over the memory available now is refused before any of it
is allocated.

Drawing is uniform with replacement, so the trainer never waits for a batch's worth of new data,
but it can be told (`max_replay`) not to reuse each sample more than so many times on average,
which keeps a fast trainer from overfitting a slow stream. Given a `stratum` (which way a person
faces, say), persons are drawn balanced across strata instead, so rare ones are not drowned;
crops of nobody keep their share.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streampose.errors import ProducerError, StreamPoseError
from streampose.stream.crops import Sample


def available_memory() -> int | None:
    """Bytes of memory this process could still take: the kernel's MemAvailable, lowered to what is
    left under a cgroup v2 limit (a container's); None where neither can be read."""
    limits = []
    try:
        meminfo = Path("/proc/meminfo").read_text()
        limits += [int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        limits.append(int((cgroup / "memory.max").read_text()) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):  # no cgroup v2 here, or "max": no limit
        pass
    return min(limits) if limits else None


class BufferClosedError(RuntimeError):
    """The buffer was closed while empty: no sample will ever arrive."""


class RingBuffer:
    """Fixed-capacity store of Samples; the newest overwrites the oldest.

    All state changes and reads of slots happen under one lock, so a batch never mixes the
    image of one sample with the labels of another, even while producers overwrite slots.
    """

    def __init__(
        self,
        num_joints: int,
        crop_size: int,
        *,
        budget_bytes: int,
        min_fill: int = 1,
        max_replay: float | None = None,
        rate_window_s: float = 10.0,
        stratum: Callable[[np.ndarray], int] | None = None,
    ) -> None:
        self.num_joints = int(num_joints)
        self.crop_size = int(crop_size)
        self.bytes_per_sample = self.sample_nbytes(self.num_joints, self.crop_size)
        capacity = int(budget_bytes) // self.bytes_per_sample
        if capacity < 1:
            raise ValueError(
                f"budget of {budget_bytes} bytes holds no sample; one {crop_size}px sample with "
                f"{num_joints} joints needs {self.bytes_per_sample} bytes"
            )
        if min_fill < 1:
            raise ValueError(f"min_fill must be >= 1, got {min_fill}")
        if max_replay is not None and max_replay <= 0:
            raise ValueError(f"max_replay must be > 0 or None, got {max_replay}")
        available = available_memory()
        if available is not None and capacity * self.bytes_per_sample > available:
            raise StreamPoseError(
                f"the ring buffer's budget of {budget_bytes / 2**30:.3g} GB (--buffer-gb) is more than the "
                f"{available / 2**30:.1f} GB of memory available"
            )
        self.capacity = capacity
        # min_fill above capacity could never be reached; waiting for a full buffer is what is meant.
        self.min_fill = min(int(min_fill), capacity)
        self.max_replay = max_replay
        self.rate_window_s = float(rate_window_s)
        self.stratum = stratum  # a person's stratum (>= 0) from their 3D joints: draws balance across them

        n, s, j = capacity, self.crop_size, self.num_joints
        self._images = np.zeros((n, s, s, 3), dtype=np.uint8)
        self._masks = np.zeros((n, s, s), dtype=np.uint8)  # all zero: no silhouette (augment.composite)
        self._joints3d = np.zeros((n, j, 3), dtype=np.float32)
        self._joints2d = np.zeros((n, j, 2), dtype=np.float32)
        self._visibility = np.zeros((n, j), dtype=np.float32)
        self._frame = np.zeros(n, dtype=np.int64)
        self._track_id = np.zeros(n, dtype=np.int64)
        self._source = np.zeros(n, dtype=np.int64)
        self._strata = np.zeros(n, dtype=np.int64)  # -1 for crops of nobody
        # Touch every page now: the memory is then really committed at start-up (an
        # over-budget machine fails here, not with an OOM kill hours in), and the first pass
        # of puts does not pay page faults while holding the lock.
        for array in self._arrays():
            array.fill(0)
        self._source_names: list[str] = []
        self._source_index: dict[str, int] = {}

        self._cond = threading.Condition(threading.Lock())
        self._rng = np.random.default_rng()
        self.inserted = 0
        self.evicted = 0
        self.drawn = 0
        self.frames = 0  # decoded frames the producers reported (`note_frames`), with or without persons
        self.last_put: float | None = None  # wall-clock time of the last sample in
        self._closed = False
        self._error: BaseException | None = None
        self._created = time.monotonic()
        # (time, frames, persons) events inside the last rate_window_s seconds.
        self._events: deque[tuple[float, int, int]] = deque()

    @staticmethod
    def sample_nbytes(num_joints: int, crop_size: int) -> int:
        """Bytes one slot takes: image, person mask, float32 labels and four int64 metadata fields."""
        return crop_size * crop_size * 4 + num_joints * (3 + 2 + 1) * 4 + 4 * 8

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays (the source-name table is not counted)."""
        return sum(a.nbytes for a in self._arrays())

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self._images,
            self._masks,
            self._joints3d,
            self._joints2d,
            self._visibility,
            self._frame,
            self._track_id,
            self._source,
            self._strata,
        )

    @property
    def fill(self) -> int:
        return min(self.inserted, self.capacity)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, sample: Sample) -> bool:
        """Store `sample` in the next slot, overwriting the oldest when full.

        Returns False (and stores nothing) once the buffer is closed, so producers racing a
        shutdown just stop instead of failing.
        """
        s, j = self.crop_size, self.num_joints
        if sample.image.shape != (s, s, 3) or sample.image.dtype != np.uint8:
            raise ValueError(f"image must be ({s}, {s}, 3) uint8, got {sample.image.shape} {sample.image.dtype}")
        if sample.mask is not None and (sample.mask.shape != (s, s) or sample.mask.dtype != np.uint8):
            raise ValueError(f"mask must be ({s}, {s}) uint8, got {sample.mask.shape} {sample.mask.dtype}")
        if sample.joints3d.shape != (j, 3) or sample.joints2d.shape != (j, 2) or sample.visibility.shape != (j,):
            raise ValueError(
                f"labels must have {j} joints, got 3D {sample.joints3d.shape}, 2D {sample.joints2d.shape}, "
                f"visibility {sample.visibility.shape}"
            )
        with self._cond:
            if self._closed:
                return False
            slot = self.inserted % self.capacity
            if self.inserted >= self.capacity:
                self.evicted += 1
            self._images[slot] = sample.image
            self._masks[slot] = 0 if sample.mask is None else sample.mask
            self._joints3d[slot] = sample.joints3d
            self._joints2d[slot] = sample.joints2d
            self._visibility[slot] = sample.visibility
            self._frame[slot] = sample.frame
            self._track_id[slot] = sample.track_id
            self._source[slot] = self._source_id(sample.source)
            self._strata[slot] = self.stratum(sample.joints3d) if self.stratum and sample.visibility.any() else -1
            self.inserted += 1
            self.last_put = time.time()
            self._record(0, 1)
            self._cond.notify_all()
        return True

    def sample(
        self, batch: int, rng: np.random.Generator | None = None, timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        """Draw `batch` samples uniformly with replacement from the filled slots.

        Blocks until at least `min_fill` samples are in and, with `max_replay` set, until the
        replay ratio (drawn / inserted) is back under it. After `close()` it stops waiting and
        draws from whatever is there. Returns copies: image (B, S, S, 3) uint8, mask (B, S, S) uint8
        (zero where the teacher gave none), joints3d (B, J, 3), joints2d (B, J, 2), visibility (B, J)
        float32.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._producer_error()
                fill = self.fill
                if self._closed:
                    if fill == 0:
                        raise BufferClosedError("ring buffer is closed and empty: no sample will ever arrive")
                    break
                waiting_for = self._waiting_for(fill)
                if waiting_for is None:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"ring buffer sample() timed out after {timeout:g} s waiting for {waiting_for}")
                self._cond.wait(remaining)
            rng = rng if rng is not None else self._rng
            idx = (
                rng.integers(0, fill, size=batch) if self.stratum is None else rng.choice(fill, batch, p=self._p(fill))
            )
            out = {
                "image": self._images[idx],
                "mask": self._masks[idx],
                "joints3d": self._joints3d[idx],
                "joints2d": self._joints2d[idx],
                "visibility": self._visibility[idx],
            }
            self.drawn += batch
        return out

    def _p(self, fill: int) -> np.ndarray:
        """Each filled slot's chance to be drawn: persons' total as under uniform draws, shared
        equally between the strata present; crops of nobody as under uniform draws."""
        strata = self._strata[:fill]
        persons = strata >= 0
        weight = np.ones(fill)
        if persons.any():
            counts = np.bincount(strata[persons])
            weight[persons] = persons.sum() / (np.count_nonzero(counts) * counts[strata[persons]])
        return weight / weight.sum()

    def waiting_for(self) -> str | None:
        """Why a `sample` would wait now, in words; None if it would not."""
        with self._cond:
            return self._waiting_for(self.fill)

    def _waiting_for(self, fill: int) -> str | None:
        """Why a sample() must wait now, in words for the timeout message; None if it need not."""
        if fill < self.min_fill:
            return f"min_fill: {fill} of {self.min_fill} samples in"
        if self.max_replay is not None and self.drawn / self.inserted > self.max_replay:
            ratio = self.drawn / self.inserted
            return (
                f"fresh data: replay ratio {ratio:.2f} (drawn {self.drawn} / inserted {self.inserted}) "
                f"is above max_replay {self.max_replay:g}"
            )
        return None

    def fail(self, exc: BaseException) -> None:
        """A producer failed: every waiting and future `sample` raises ProducerError from `exc`.

        Only the first error is kept; later ones are usually consequences of it.
        """
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()

    def close(self) -> None:
        """No more data will come: waiters stop waiting and draw from what is there."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def note_frames(self, n: int = 1) -> None:
        """Producers report decoded frames here, so throughput counts frames without persons too."""
        with self._cond:
            self._record(int(n), 0)

    def stats(self) -> dict[str, float | int]:
        """Counters and throughput (frames and persons per second over the last rate window)."""
        with self._cond:
            now = time.monotonic()
            self._prune(now)
            span = max(min(self.rate_window_s, now - self._created), 1e-3)
            frames = sum(e[1] for e in self._events)
            persons = sum(e[2] for e in self._events)
            return {
                "inserted": self.inserted,
                "evicted": self.evicted,
                "drawn": self.drawn,
                "fill": self.fill,
                "capacity": self.capacity,
                "replay_ratio": self.drawn / self.inserted if self.inserted else 0.0,
                "frames_per_s": frames / span,
                "persons_per_s": persons / span,
            }

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of every filled slot, oldest first, with metadata; for inspection and tests."""
        with self._cond:
            fill = self.fill
            start = self.inserted % self.capacity if self.inserted > self.capacity else 0
            order = (start + np.arange(fill)) % self.capacity
            return {
                "image": self._images[order],
                "mask": self._masks[order],
                "joints3d": self._joints3d[order],
                "joints2d": self._joints2d[order],
                "visibility": self._visibility[order],
                "frame": self._frame[order],
                "track_id": self._track_id[order],
                "source": np.array([self._source_names[i] for i in self._source[order]], dtype=object),
            }

    def _source_id(self, source: str) -> int:
        index = self._source_index.get(source)
        if index is None:
            index = len(self._source_names)
            self._source_names.append(source)
            self._source_index[source] = index
        return index

    def _record(self, frames: int, persons: int) -> None:
        self.frames += frames
        now = time.monotonic()
        self._events.append((now, frames, persons))
        self._prune(now)

    def _prune(self, now: float) -> None:
        cutoff = now - self.rate_window_s
        while self._events and self._events[0][0] < cutoff:
            self._events.popleft()

    def _producer_error(self) -> ProducerError:
        exc = self._error
        assert exc is not None
        err = ProducerError(f"a producer failed: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return err
