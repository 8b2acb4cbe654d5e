"""Pipeline stages, plain iterators composed in order: refs -> videos -> frames -> labelled frames.

`label`, the producers and `eval` all compose these same stages; person crops
(`crops.person_crops`) follow them on the training path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator

from streampose.errors import DecodeError, SourceError
from streampose.poses.labels import FrameLabels
from streampose.sources import Video, VideoRef, fetch
from streampose.stream.decode import Frame, decode_frames
from streampose.teachers import Teacher


def fetch_or_skip(ref: VideoRef, *, max_bytes: int) -> Video | None:
    """The video's bytes, or None with a warning when it cannot be had (too big, not a video, ...)."""
    try:
        return fetch(ref, max_bytes=max_bytes)
    except SourceError as e:
        warnings.warn(f"skipping video: {e}", stacklevel=2)
        return None


def videos(refs: Iterable[VideoRef], *, max_bytes: int, skip_bad: bool = False) -> Iterator[Video]:
    """Fetch each ref into memory, one at a time so memory stays bounded.

    With `skip_bad`, a video that cannot be fetched is skipped with a warning; without it, only
    search results are skipped (one bad upload among many), while a file or URL the user named
    raises.
    """
    for ref in refs:
        if skip_bad or ref.provider not in ("file", "url"):
            video = fetch_or_skip(ref, max_bytes=max_bytes)
            if video is not None:
                yield video
        else:
            yield fetch(ref, max_bytes=max_bytes)


def frames(
    videos: Iterable[Video],
    *,
    stride: int = 1,
    max_frames: int | None = None,
    max_side: int | None = None,
    skip_bad: bool = False,
) -> Iterator[tuple[Video, Frame]]:
    """Decode each video in turn. With `skip_bad`, an undecodable video is skipped with a warning."""
    for video in videos:
        try:
            for frame in decode_frames(video.data, video.id, stride=stride, max_frames=max_frames, max_side=max_side):
                yield video, frame
        except DecodeError as e:
            if not skip_bad:
                raise
            warnings.warn(f"skipping video: {e}", stacklevel=2)


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
