"""Batches for the trainer: sample the ring buffer, augment, tensorise, one step ahead.

A background thread keeps `prefetch` ready batches in a queue, so the trainer's step never
includes sampling or augmentation time; it only waits when the buffer itself is not ready
(below `min_fill`, or over `max_replay`). Exceptions from the buffer (a failed producer)
are re-raised in the trainer's thread.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from streampose.stream.augment import AugmentConfig, augment_batch, to_model_inputs
from streampose.stream.buffer import RingBuffer

#: Seconds the trainer waits for a batch before it says why (a video with nobody in it, a stalled
#: download), then again every `STALL_REPEAT_S`: a run must never wait in silence.
STALL_NOTICE_S = 30.0
STALL_REPEAT_S = 120.0


class BatchLoader:
    def __init__(
        self,
        buffer: RingBuffer,
        batch_size: int,
        flip_perm: Sequence[int],
        augment: AugmentConfig,
        *,
        seed: int = 0,
        start_step: int = 0,
        device: torch.device | str = "cpu",
        prefetch: int = 2,
        notice_s: tuple[float, float] = (STALL_NOTICE_S, STALL_REPEAT_S),
    ) -> None:
        self.buffer = buffer
        self.batch_size = batch_size
        self._flip_perm = list(flip_perm)
        self._augment = augment
        self._device = torch.device(device)
        self._seed = seed
        self._step = start_step
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._notice_s = notice_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-loader", daemon=True)
        self.waited_s = 0.0  # total time the consumer spent waiting for a batch
        self.waits = 0  # batches that were not ready when asked for
        self.batches = 0
        self._error: BaseException | None = None
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                # One generator per step: batch k is the same whenever it is drawn, so a resumed run
                # sees the draws an uninterrupted one would have seen (on the same buffer content).
                rng = np.random.default_rng([self._seed, self._step])
                try:
                    # A short timeout so a stop() is noticed while the buffer is still filling.
                    batch = self.buffer.sample(self.batch_size, rng=rng, timeout=1.0)
                except TimeoutError:
                    continue
                # Images cross to the device as uint8 and are normalised there (1 byte per value on the bus).
                item = to_model_inputs(augment_batch(batch, self._flip_perm, self._augment, rng), self._device)
                # The un-augmented 3D labels, for the mean training pose (the evaluation baseline).
                item["raw_joints3d"], item["raw_visibility"] = batch["joints3d"], batch["visibility"]
                self._step += 1
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._error = e

    def next(self) -> dict[str, torch.Tensor]:
        """The next batch, on the loader's device; raises what the buffer or a producer raised."""
        start = time.perf_counter()
        try:
            item, waited = self._queue.get_nowait(), False
        except queue.Empty:
            item, waited = None, True
        notice_at = start + self._notice_s[0]
        while item is None:
            if self._error is not None:
                raise self._error
            if not self._thread.is_alive():
                raise RuntimeError("the batch loader has stopped")
            if time.perf_counter() >= notice_at:
                self._stalled(time.perf_counter() - start)
                notice_at += self._notice_s[1]
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
        self.waits += waited
        self.waited_s += time.perf_counter() - start
        self.batches += 1
        return item

    def _stalled(self, waited: float) -> None:
        """Say that training waits, for what, since when, and what the producers did meanwhile."""
        buffer, clock = self.buffer, "%H:%M:%S"
        since = time.strftime(clock, time.localtime(time.time() - waited))
        last = f"the last at {time.strftime(clock, time.localtime(buffer.last_put))}" if buffer.last_put else "none yet"
        warnings.warn(
            f"no batch to train on since {since} ({waited:.0f} s): waiting for "
            f"{buffer.waiting_for() or 'the batch loader'}; the producers decoded {buffer.frames} frames and "
            f"put {buffer.inserted} samples in ({last})",
            stacklevel=3,
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
