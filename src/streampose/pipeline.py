"""Pipeline stages, plain iterators composed in order: videos -> frames -> labelled frames.

`label`, the producers and `eval` all compose these same stages; person crops
(`crops.person_crops`) follow them on the training path.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

from .decode import Frame, decode_frames
from .errors import DecodeError
from .labels import FrameLabels
from .sources import Video
from .teachers import Teacher


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
