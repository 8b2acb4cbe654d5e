"""Producers: background workers that run sources -> decode -> teacher -> crops -> ring buffer.

Each producer has its own teacher instance. All producers pull video refs from one shared,
thread-safe `RefStream`, so no two label the same video in a pass and a slow video does not hold
up the others. A producer runs as a thread, or (``processes=True``) as a process of its own whose
crops come back over a pipe: a thread per process serves it refs and puts its crops in the ring
buffer, so the buffer, the provenance and the refs all stay in this process. Threads cost nothing
to hand over and suit one producer; processes keep two producers' Python work (PyAV's frame
objects, the teacher's per-person glue) off one GIL, so they scale with cores (benchmarks P7).
Inside a producer decoding runs ahead in its own thread (`stages.prefetch`), overlapping the
teacher. A producer that raises hands the exception to the buffer, so the consumer fails with a
clear error instead of waiting forever; a video that cannot be fetched or decoded is skipped with
a warning.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Protocol

from streampose.errors import StreamPoseError
from streampose.sources import RefStream, Video, VideoRef
from streampose.stream.buffer import RingBuffer
from streampose.stream.pipeline import ChildProducer, ProducerConfig, Stopped, labelled_samples
from streampose.teachers import Teacher, get_teacher, teacher_class

__all__ = ["ProducerConfig", "ProducerPool", "Recorder", "Stopped", "auto_producers", "producer_count"]


class Recorder(Protocol):
    """Where a used video is recorded: a `ProvenanceLog`, or `PendingEntries` on a distributed rank."""

    def record(self, video: Video | VideoRef, frames: int) -> dict: ...


def producer_count(value: int | str, device: str) -> int:
    """A `--producers` value (a count >= 1, or ``auto``: `auto_producers`) as a count."""
    if value == "auto":
        return auto_producers(device)
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise StreamPoseError(f"--producers must be a whole number >= 1 or auto, not {value!r}")
    return n


def auto_producers(device: str, cores: int | None = None) -> int:
    """How many producers to run: a teacher keeps about one core busy, so one per core the trainer
    leaves free. A trainer on a GPU needs one core to feed it; one on the CPU wants half of them."""
    cores = cores or len(os.sched_getaffinity(0))
    free = cores - 1 if device.split(":")[0] in ("cuda", "mps") else cores // 2
    return max(1, free)


def teacher_factory(spec: str, workers: int, cores: int | None = None) -> Callable[[], Teacher]:
    """What each of `workers` producers makes its teacher with (picklable, for producer processes).

    A teacher that spreads over every core by default (`takes_threads`: the top-down teacher's
    detector and landmark model) gets its share of the cores instead when several producers run,
    so they do not fight over them (`auto_producers` counts a teacher as about one core)."""
    cores = cores or len(os.sched_getaffinity(0))
    if workers > 1 and getattr(teacher_class(spec), "takes_threads", False):
        return partial(get_teacher, spec, threads=max(1, cores // workers))
    return partial(get_teacher, spec)


class ProducerPool:
    """`workers` producers filling one ring buffer from a shared stream of video refs.

    Each video id used is kept in `used_videos` and, the first time it is used, recorded in
    `provenance` (with the frames labelled from it). Ids in `known` (used by an earlier run
    that this one resumes) are not recorded again. With `processes`, `make_teacher` must pickle
    (`teacher_factory(name, workers)`, not a lambda): each process makes its own.
    """

    def __init__(
        self,
        refs: RefStream,
        buffer: RingBuffer,
        make_teacher: Callable[[], Teacher],
        config: ProducerConfig,
        workers: int = 1,
        provenance: Recorder | None = None,
        known: set[str] | frozenset[str] = frozenset(),
        *,
        processes: bool = False,
    ) -> None:
        self.refs = refs
        self.buffer = buffer
        self.config = config
        self.provenance = provenance
        self.processes = processes
        self._make_teacher = make_teacher
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.used_videos: set[str] = set(known)
        self._children: list = []
        self._threads = [
            threading.Thread(target=self._run, name=f"producer-{k}", daemon=True) for k in range(max(1, workers))
        ]
        self._finished = 0

    def start(self) -> ProducerPool:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every producer to stop after its current frame, and join them."""
        self._stop.set()
        for child in list(self._children):
            child.stop()
        self.refs.close()
        for t in self._threads:
            t.join(timeout)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            warnings.warn(f"producers still running after {timeout:.0f} s: {', '.join(alive)}", stacklevel=2)

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> ProducerPool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _refs(self) -> Iterator[VideoRef]:
        for ref in self.refs:
            if self._stop.is_set():
                raise Stopped
            yield ref

    def _next_ref(self) -> VideoRef | None:
        """The next ref for a producer process; None once the stream ends or the pool stops."""
        if self._stop.is_set():
            return None
        ref = next(self.refs, None)
        return None if self._stop.is_set() else ref

    def _done_with(self, video: Video | VideoRef, frames: int) -> None:
        with self._lock:
            first = video.id not in self.used_videos
            self.used_videos.add(video.id)
        if first and self.provenance is not None:
            self.provenance.record(video, frames)

    def _on_frame(self) -> None:
        if self._stop.is_set():
            raise Stopped
        self.buffer.note_frames(1)

    def _run(self) -> None:
        try:
            if self.processes:
                child = ChildProducer(self._make_teacher, self.config)
                with self._lock:
                    self._children.append(child)
                if self._stop.is_set():
                    child.stop()
                child.serve(self._next_ref, self.buffer, self._done_with)
            else:
                self._produce_here()
        except Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - every failure must reach the consumer
            self.buffer.fail(e)
        finally:
            with self._lock:
                self._finished += 1
                last = self._finished == len(self._threads)
            if last and not self._stop.is_set():
                self.buffer.close()  # all sources exhausted: consumers drain what is there

    def _produce_here(self) -> None:
        teacher = self._make_teacher()
        try:
            for sample in labelled_samples(self._refs(), teacher, self.config, self._done_with, self._on_frame):
                if not self.buffer.put(sample):
                    return  # the buffer was closed: nobody consumes any more
        finally:
            teacher.close()
