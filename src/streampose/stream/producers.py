"""Producers: background workers that run sources -> decode -> teacher -> crops -> ring buffer.

Each producer is a thread with its own teacher instance. All producers pull video refs from
one shared, thread-safe `RefStream`, so no two label the same video in a pass and a slow
video does not hold up the others. Threads suffice: PyAV decoding, OpenCV warps and the
MediaPipe graph all run in C++ with the GIL released, which is where a producer spends its
time. A producer that raises hands the exception to the buffer, so the consumer fails with
a clear error instead of waiting forever; a video that cannot be fetched or decoded is
skipped with a warning.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from streampose.sources import RefStream, Video, VideoRef
from streampose.stream import stages
from streampose.stream.buffer import RingBuffer
from streampose.stream.crops import CROP_SIZE, person_crops
from streampose.teachers import Teacher


@dataclass
class ProducerConfig:
    stride: int = 1
    max_side: int | None = None
    max_frames: int | None = None  # per video
    crop_size: int = CROP_SIZE
    margin: float = 0.25
    min_visible: int = 8
    max_video_bytes: int = stages.MAX_VIDEO_BYTES


class Recorder(Protocol):
    """Where a used video is recorded: a `ProvenanceLog`, or `PendingEntries` on a distributed rank."""

    def record(self, video: Video, frames: int) -> dict: ...


class _Stopped(Exception):
    pass


class ProducerPool:
    """`workers` producer threads filling one ring buffer from a shared stream of video refs.

    Each video id used is kept in `used_videos` and, the first time it is used, recorded in
    `provenance` (with the frames labelled from it). Ids in `known` (used by an earlier run
    that this one resumes) are not recorded again.
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
    ) -> None:
        self.refs = refs
        self.buffer = buffer
        self.config = config
        self.provenance = provenance
        self._make_teacher = make_teacher
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.used_videos: set[str] = set(known)
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
                raise _Stopped
            yield ref

    def _done_with(self, video: Video, frames: int) -> None:
        with self._lock:
            first = video.id not in self.used_videos
            self.used_videos.add(video.id)
        if first and self.provenance is not None:
            self.provenance.record(video, frames)

    def _run(self) -> None:
        cfg = self.config
        teacher = frames = None
        try:
            teacher = self._make_teacher()
            skip = stages.warn_and_skip
            videos = stages.videos(self._refs(), max_bytes=cfg.max_video_bytes, handler=skip)
            frames = stages.frames(
                videos, stride=cfg.stride, max_frames=cfg.max_frames, max_side=cfg.max_side, handler=skip
            )
            frames = stages.count_frames(stages.prefetch(frames), self._done_with)

            def images_and_labels():
                for _, frame, labels in stages.labelled(teacher, frames):
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
            if frames is not None:
                frames.close()  # records the video in progress in the provenance
            if teacher is not None:
                teacher.close()
            with self._lock:
                self._finished += 1
                last = self._finished == len(self._threads)
            if last and not self._stop.is_set():
                self.buffer.close()  # all sources exhausted: consumers drain what is there
