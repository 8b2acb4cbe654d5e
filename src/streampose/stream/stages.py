"""Pipeline stages, plain iterators composed in order: refs -> videos -> frames -> labelled frames.

This is the one road from a source spec to frames: `videos(refs(specs))` then `frames(...)`.
Every command, the producers, the demo and the benchmarks compose these same stages; person
crops (`crops.person_crops`) follow them on the training path.

What to do with a video that cannot be fetched or decoded is one `Handler`, passed down the
stages (as webdataset's `handler=`): it gets the error and the ref or video, and either raises
(the run stops) or returns (the video is skipped).
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from streampose.errors import SourceError, StreamPoseError
from streampose.poses.labels import FrameLabels
from streampose.sources import Video, VideoRef, fetch, refs
from streampose.sources.base import MAX_VIDEO_MB
from streampose.sources.refs import local_files
from streampose.stream.decode import Frame, decode_frames, probe
from streampose.teachers import Teacher

#: Bad-input policy: called with the error and the ref (fetch failed) or video (decode failed).
#: Raising stops the stage; returning skips that video.
Handler = Callable[[StreamPoseError, VideoRef | Video], None]

MAX_VIDEO_BYTES = int(MAX_VIDEO_MB * 1e6)

#: Frames decoded ahead of the teacher by `prefetch` in the producers, `label` and `eval`: two of
#: `labelled`'s batches, so the next batch is decoded while the teacher labels this one (with 4,
#: half of every batch waited for decoding: 0.80 of the teacher's own speed instead of 0.86 on
#: Sports2D at 720 px); 16 frames of 1280x720 RGB hold 44 MB.
DECODE_AHEAD = 16

T = TypeVar("T")
_END = object()


def warn_and_skip(error: StreamPoseError, item: VideoRef | Video) -> None:
    """Skip any bad video with a warning (training producers: a stream must not die of one upload)."""
    warnings.warn(f"skipping video: {error}", stacklevel=2)


def raise_named_skip_searched(error: StreamPoseError, item: VideoRef | Video) -> None:
    """A file or URL the user named stops the command; a search result that fails is skipped."""
    if item.meta.get("provider", "url") in ("file", "url"):
        raise error
    warn_and_skip(error, item)


def videos(
    refs: Iterable[VideoRef], *, max_bytes: int = MAX_VIDEO_BYTES, handler: Handler = raise_named_skip_searched
) -> Iterator[Video]:
    """Fetch each ref into memory (files too are capped at `max_bytes`), one at a time so memory
    stays bounded."""
    for ref in refs:
        try:
            video = fetch(ref, max_bytes=max_bytes)
        except SourceError as e:
            handler(e, ref)
            continue
        yield video


def one_video(spec: str, *, max_bytes: int = MAX_VIDEO_BYTES) -> Video:
    """The video a file path or URL names (view, predict): the head of the same road, cut to one."""
    stream = refs([spec], max_videos=1)
    try:
        for video in videos(stream, max_bytes=max_bytes):
            return video
    finally:
        stream.close()
    raise SourceError(f"{spec}: no video could be read")


def frames(
    videos: Iterable[Video],
    *,
    stride: int = 1,
    max_frames: int | None = None,
    max_side: int | None = None,
    handler: Handler = raise_named_skip_searched,
    max_videos: int | None = None,
) -> Iterator[tuple[Video, Frame]]:
    """Decode each video in turn; a video that fails part-way keeps the frames it gave.

    `max_videos` counts videos that gave frames, so a broken upload skipped by `handler` does
    not use up a place; no video is fetched past the last one needed.
    """
    used = 0
    for video in videos:
        gave = False
        try:
            for frame in decode_frames(video.data, video.id, stride=stride, max_frames=max_frames, max_side=max_side):
                gave = True
                yield video, frame
        except StreamPoseError as e:
            handler(e, video)
        used += gave
        if max_videos is not None and used >= max_videos:
            return


def frame_total(
    specs: Iterable[str], *, stride: int = 1, max_frames: int | None = None, max_videos: int | None = None
) -> int | None:
    """The frames `frames(videos(refs(specs)), stride=..., max_frames=...)` will yield, from the frame
    counts the containers declare, for a progress bar's total and ETA; None when unbounded or unknown
    (a search, a URL, a container that declares no count, a file that does not open)."""
    try:
        files = local_files(specs)
        declared = [probe(Path(f), f).frames for f in files[:max_videos]] if files is not None else [0]
    except StreamPoseError:
        return None  # the command itself reports it, with its own policy
    if not declared or min(declared) <= 0:
        return None
    kept = (-(-n // stride) for n in declared)  # frames 0, stride, 2 * stride, ...
    return sum(min(k, max_frames) if max_frames is not None else k for k in kept)


def count_frames(
    items: Iterable[tuple[Video, Frame]], done: Callable[[Video, int], None]
) -> Iterator[tuple[Video, Frame]]:
    """Pass frames through, calling `done(video, frames)` once per video: when its frames are all
    through, or when the stage is closed or fails part-way (a stop, an error downstream)."""
    current, count = None, 0
    try:
        for video, frame in items:
            if video is not current:
                if current is not None:
                    done(current, count)
                current, count = video, 0
            count += 1
            yield video, frame
    finally:
        if current is not None:
            done(current, count)


def labelled(
    teacher: Teacher, items: Iterable[tuple[Video, Frame]], *, batch: int = 8
) -> Iterator[tuple[Video, Frame, FrameLabels]]:
    """Label frames with `teacher`, in batches that never straddle two videos."""
    pending: list[tuple[Video, Frame]] = []

    def flush() -> Iterator[tuple[Video, Frame, FrameLabels]]:
        if not pending:
            return
        persons = teacher.label([f.image for _, f in pending])
        for (video, frame), people in zip(pending, persons, strict=True):
            size = frame.image.shape[:2]
            yield video, frame, FrameLabels(frame.index, frame.timestamp, size, video.id, people)
        pending.clear()

    current: Video | None = None
    for video, frame in items:
        # Identity, not id: a source read again on the next pass is a new video to the tracker.
        if video is not current:
            yield from flush()
            teacher.start_video(frame.image.shape[:2])
            current = video
        pending.append((video, frame))
        if len(pending) >= batch:
            yield from flush()
    yield from flush()


def prefetch(items: Iterable[T], depth: int = DECODE_AHEAD) -> Iterator[T]:
    """Run `items` in a thread of its own, at most `depth` items ahead of the consumer.

    Put after `frames`, it decodes (and converts and scales) the next frames while the teacher
    labels this one, so a producer's frame costs max(decode, teacher) instead of their sum: PyAV
    and the teacher both release the GIL. An exception in `items` reaches the consumer at the
    point it happened; closing this iterator stops the thread and closes `items` there.
    """
    if depth < 1:
        yield from items
        return
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def hand(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        it = iter(items)
        try:
            for item in it:
                if not hand((item, None)):
                    return
            hand((_END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            hand((_END, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()
