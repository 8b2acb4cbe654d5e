"""One producer's pipeline (`labelled_samples`), and a producer in a process of its own
(`ChildProducer`), its crops handed back over a pipe.

The parent's side (`ChildProducer.serve`, on a producer thread) answers the child's requests for
refs from the shared `RefStream`, puts the crops it sends into the ring buffer and records the
videos it finished; so no two processes label one video, and the buffer and the provenance stay
in one place. The child runs `labelled_samples`, the same pipeline a producer thread
runs. Processes start with "spawn": forking a process whose MediaPipe and FFmpeg threads are
running can copy a lock that some thread holds. A child never outlives its parent: on Linux the
kernel kills it when the parent dies, even by SIGKILL (`_end_with_parent`); SIGTERM or Ctrl-C
reaching the child itself end it quietly, like its parent.

Messages, child to parent: ("ref",) asks for the next ref (answered with a ref, or None at the
end); ("frame",) a labelled frame; ("sample", Sample); ("done", VideoRef, frames) a video
finished, its byte count in the ref's meta (its bytes stay in the child); ("error", exception);
("end",) last.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from streampose.errors import ProducerError
from streampose.interrupts import handle_signals
from streampose.sources import Video, VideoRef
from streampose.sources.http import stop_all
from streampose.stream import stages
from streampose.stream.buffer import RingBuffer
from streampose.stream.crops import CROP_SIZE, Sample, person_crops
from streampose.teachers import Teacher

_CONTEXT = multiprocessing.get_context("spawn")
POLL_S = 0.1
_PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass
class ProducerConfig:
    stride: int = 1
    max_side: int | None = None
    max_frames: int | None = None  # per video
    crop_size: int = CROP_SIZE
    margin: float = 0.25
    min_visible: int = 8
    negatives: float = 0.0  # fraction of the buffer that is background crops (`crops.background_crops`)
    max_video_bytes: int = stages.MAX_VIDEO_BYTES


class Stopped(Exception):
    """Raised inside a producer's pipeline when it is asked to stop."""


def labelled_samples(
    refs: Iterator[VideoRef],
    teacher: Teacher,
    cfg: ProducerConfig,
    done: Callable[[Video, int], None],
    on_frame: Callable[[], None],
) -> Iterator[Sample]:
    """One producer's pipeline: refs -> videos -> frames (decoded ahead) -> labels -> crops.

    `done(video, frames)` is called once per video, also when the pipeline is closed part-way;
    `on_frame()` after each labelled frame (it may raise `Stopped`)."""
    skip = stages.warn_and_skip
    videos = stages.videos(refs, max_bytes=cfg.max_video_bytes, handler=skip)
    frames = stages.frames(videos, stride=cfg.stride, max_frames=cfg.max_frames, max_side=cfg.max_side, handler=skip)
    frames = stages.count_frames(stages.prefetch(frames), done)

    def images_and_labels():
        for _, frame, labels in stages.labelled(teacher, frames):
            on_frame()
            yield frame.image, labels

    try:
        yield from person_crops(
            images_and_labels(), size=cfg.crop_size, margin=cfg.margin, min_visible=cfg.min_visible,
            negatives=cfg.negatives,
        )  # fmt: skip
    finally:
        frames.close()  # records the video in progress


class ChildProducer:
    """One producer process and the parent's end of its pipe."""

    def __init__(self, make_teacher: Callable[[], Teacher], config: ProducerConfig) -> None:
        self._stop = _CONTEXT.Event()
        self._conn, child_end = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(
            target=_child_main, args=(child_end, make_teacher, config, self._stop), name="producer", daemon=True
        )
        self.process.start()
        child_end.close()

    def stop(self) -> None:
        """Ask the child to stop after its current frame; `serve` returns once it has said so."""
        self._stop.set()

    def serve(
        self,
        next_ref: Callable[[], VideoRef | None],
        buffer: RingBuffer,
        done: Callable[[VideoRef, int], None],
        timeout: float = 30.0,
    ) -> None:
        """Serve the child until it ends: `next_ref()` gives the ref it asks for (None: no more).
        Raises what the child raised, or ProducerError when it dies."""
        try:
            while True:
                if not self._conn.poll(POLL_S):
                    if not self.process.is_alive():
                        raise ProducerError(f"a producer process died (exit code {self.process.exitcode})")
                    continue
                kind, *args = self._conn.recv()
                if kind == "ref":
                    self._conn.send(None if self._stop.is_set() else next_ref())
                elif kind == "frame":
                    buffer.note_frames(1)
                elif kind == "sample":
                    if not buffer.put(args[0]):
                        self._stop.set()  # the buffer was closed: nobody consumes any more
                elif kind == "done":
                    done(*args)
                elif kind == "error":
                    raise args[0]
                else:  # "end"
                    return
        except EOFError:
            raise ProducerError(f"a producer process died (exit code {self.process.exitcode})") from None
        finally:
            self._stop.set()
            self.process.join(timeout)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(5)
            self._conn.close()


def _end_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies, however it dies (Linux's
    PR_SET_PDEATHSIG; strictly, when the parent's thread that started it ends: `ChildProducer.serve`'s
    thread, which outlives the child). Elsewhere the pipe's EOF ends the child at its next request."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(0)  # the parent died before the prctl above: nobody to signal this process


def _stop_network_on(stop) -> None:
    """Cut this process's network waits short (a Retry-After, a slow read) once the parent says stop,
    so a trainer stopped by SIGTERM alone (Kubernetes signals only the main process) is not held up.
    Polled: a process that dies inside `stop.wait()` leaves the parent's `stop.set()` hanging."""
    while not stop.is_set():
        time.sleep(POLL_S)
    stop_all()


def _child_main(conn, make_teacher: Callable[[], Teacher], config: ProducerConfig, stop) -> None:
    """The child: label what the parent hands over, send the crops back, end with ("end",)."""
    _end_with_parent()
    handle_signals()
    threading.Thread(target=_stop_network_on, args=(stop,), name="stop-watch", daemon=True).start()
    lock = threading.Lock()  # sent to from two threads: the decoder (ref requests) and this one

    def send(*message) -> None:
        with lock:
            conn.send(message)

    def refs() -> Iterator[VideoRef]:
        while True:
            send("ref")
            ref = conn.recv()
            if ref is None:
                return
            yield ref

    def done(video: Video, frames: int) -> None:
        send("done", VideoRef(video.id, "", {**video.meta, "bytes": len(video.data)}), frames)

    def on_frame() -> None:
        if stop.is_set():
            raise Stopped
        send("frame")

    teacher = None
    try:
        teacher = make_teacher()
        for sample in labelled_samples(refs(), teacher, config, done, on_frame):
            send("sample", sample)
    except Stopped:
        pass
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        return  # the parent is gone or interrupted: nobody to tell
    except BaseException as e:  # noqa: BLE001 - every failure must reach the consumer
        try:
            send("error", e)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            send("error", ProducerError(f"{type(e).__name__}: {e}"))
    finally:
        if teacher is not None:
            teacher.close()
    with contextlib.suppress(BrokenPipeError, EOFError):
        send("end")
    conn.close()
