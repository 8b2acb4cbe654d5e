"""Producers: background workers that run sources -> decode -> teacher -> crops -> ring buffer.

Each producer is a thread with its own teacher instance and its own shard of the sources.
Threads suffice: PyAV decoding, OpenCV warps and the MediaPipe graph all run in C++ with the
GIL released, which is where a producer spends its time. A producer that raises hands the
exception to the buffer, so the consumer fails with a clear error instead of waiting forever;
a video that does not decode is skipped with a warning.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import pipeline, sources
from .buffer import RingBuffer
from .crops import person_crops
from .teachers import Teacher


@dataclass
class ProducerConfig:
    stride: int = 1
    max_side: int | None = None
    max_frames: int | None = None  # per video and pass
    crop_size: int = 192
    margin: float = 0.25
    min_visible: int = 8
    passes: int | None = 1  # None: read the sources again and again until stopped
    max_video_bytes: int = 500_000_000


class _Stopped(Exception):
    pass


class ProducerPool:
    """`workers` producer threads filling one ring buffer from a list of source specs.

    Specs are split round-robin, so no two producers label the same video in a pass.
    """

    def __init__(
        self,
        specs: Sequence[str],
        buffer: RingBuffer,
        make_teacher: Callable[[], Teacher],
        config: ProducerConfig,
        workers: int = 1,
    ) -> None:
        self.specs = sources.expand(specs)
        if not self.specs:
            raise ValueError("no sources to produce from")
        self.buffer = buffer
        self.config = config
        self._make_teacher = make_teacher
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.used_videos: set[str] = set()
        workers = max(1, min(workers, len(self.specs)))
        self._threads = [
            threading.Thread(target=self._run, args=(self.specs[k::workers],), name=f"producer-{k}", daemon=True)
            for k in range(workers)
        ]
        self._finished = 0

    def start(self) -> ProducerPool:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every producer to stop after its current frame, and join them."""
        self._stop.set()
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

    def _videos(self, specs: list[str]):
        passes = 0
        while self.config.passes is None or passes < self.config.passes:
            for spec in specs:
                if self._stop.is_set():
                    raise _Stopped
                try:
                    video = sources.load(spec, max_bytes=self.config.max_video_bytes)
                except sources.SourceError as e:
                    warnings.warn(f"skipping source: {e}", stacklevel=2)
                    continue
                with self._lock:
                    self.used_videos.add(video.id)
                yield video
            passes += 1

    def _run(self, specs: list[str]) -> None:
        cfg = self.config
        teacher = None
        try:
            teacher = self._make_teacher()
            frames = pipeline.frames(
                self._videos(specs), stride=cfg.stride, max_frames=cfg.max_frames, max_side=cfg.max_side, skip_bad=True
            )
            labelled = pipeline.labelled(teacher, frames)

            def images_and_labels():
                for _, frame, labels in labelled:
                    if self._stop.is_set():
                        raise _Stopped
                    self.buffer.note_frames(1)
                    yield frame.image, labels

            crops = person_crops(
                images_and_labels(), size=cfg.crop_size, margin=cfg.margin, min_visible=cfg.min_visible
            )
            for sample in crops:
                if not self.buffer.put(sample):
                    return  # the buffer was closed: nobody consumes any more
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - every failure must reach the consumer
            self.buffer.fail(e)
        finally:
            if teacher is not None:
                teacher.close()
            with self._lock:
                self._finished += 1
                last = self._finished == len(self._threads)
            if last and not self._stop.is_set():
                self.buffer.close()  # all sources exhausted: consumers drain what is there
