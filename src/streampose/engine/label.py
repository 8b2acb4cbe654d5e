"""`streampose label`: the teacher's labels for a stream of videos, saved as they are made.

Labels go to a `LabelsWriter` frame by frame, so Ctrl-C, a crash or `--loop` running for days
keep everything labelled so far and hold no list of labels in memory. The overlay video, when
asked for, is drawn from the same frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2

from streampose.poses.labels import FrameLabels, LabelsWriter
from streampose.sources import Video
from streampose.stream import stages
from streampose.stream.decode import Frame, probe
from streampose.teachers import Teacher
from streampose.viz.render import VideoWriter, overlay_frame


@dataclass
class LabelCounts:
    videos: int = 0
    frames: int = 0
    labelled_frames: int = 0
    persons: int = 0
    tracks: int = 0  # distinct track ids, summed over videos (ids restart with every video)
    seconds: float = 0.0
    interrupted: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


class _Overlay:
    """The labelled frames drawn into one overlay video, every frame scaled to the first's size."""

    def __init__(self, path: str | Path, teacher: Teacher, stride: int) -> None:
        self.path, self.skeleton, self.stride = path, teacher.skeleton, stride
        self.writer: VideoWriter | None = None
        self.size: tuple[int, int] | None = None

    def write(self, video: Video, frame: Frame, labels: FrameLabels) -> None:
        if self.writer is None:
            self.writer = VideoWriter(self.path, fps=probe(video.data, video.id).fps / self.stride)
        caption = f"{Path(video.id).name} #{frame.index}"
        image = overlay_frame(frame.image, labels.persons, self.skeleton, caption=caption, by_track=True)
        self.size = self.size or (image.shape[1], image.shape[0])
        self.writer.write(cv2.resize(image, self.size) if image.shape[1::-1] != self.size else image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def label(
    videos: Iterable[Video],
    teacher: Teacher,
    *,
    stride: int = 1,
    max_frames: int | None = None,
    max_side: int | None = None,
    save: str | Path | None = None,
    render: str | Path | None = None,
    handler: stages.Handler = stages.raise_named_skip_searched,
    max_videos: int | None = None,
    on_frame: Callable[[int], object] | None = None,
) -> LabelCounts:
    """Label every frame of `videos` (after `stride`) with `teacher`; Ctrl-C stops it cleanly.

    `save` gets each video's provenance and each frame's labels as they come; `handler` is the
    bad-input policy for videos that do not decode (the same one `eval` uses); `max_videos`
    counts the videos labelled, not those tried. Returns the
    counts, with `interrupted` set when Ctrl-C ended it: everything counted is in `save`.
    """
    counts = LabelCounts()
    start = time.perf_counter()
    writer = LabelsWriter(save, teacher=teacher.name, skeleton=teacher.skeleton.name) if save else None
    overlay = _Overlay(render, teacher, stride) if render else None
    stream = None
    try:
        stream = stages.frames(
            videos, stride=stride, max_frames=max_frames, max_side=max_side, handler=handler, max_videos=max_videos
        )
        stream = stages.prefetch(stream)
        last_video, video_tracks = None, set()
        for video, frame, labels in stages.labelled(teacher, stream):
            if video is not last_video:
                last_video, video_tracks = video, set()
                if writer:
                    writer.video({"id": video.id, **video.meta})
                counts.videos += 1
            if writer:
                writer.frame(labels)  # written before counted: the file never holds fewer than reported
            if overlay:
                overlay.write(video, frame, labels)
            counts.frames += 1
            counts.labelled_frames += bool(labels.persons)
            counts.persons += len(labels.persons)
            new_tracks = {p.track_id for p in labels.persons} - video_tracks
            counts.tracks += len(new_tracks)
            video_tracks |= new_tracks
            if on_frame is not None:
                on_frame(len(labels.persons))
    except KeyboardInterrupt:
        counts.interrupted = True
    finally:
        if stream is not None:
            stream.close()  # stops the decoding thread
        if writer:
            writer.close()
        if overlay:
            overlay.close()
        counts.seconds = time.perf_counter() - start
    return counts
