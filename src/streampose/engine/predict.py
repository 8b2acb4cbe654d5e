"""`streampose predict`: the student on its own, on every frame of a video (no teacher in the loop).

A person detector finds people, the student follows each of them (`engine.tracking`: detect,
then track), and every frame is written out with everyone followed in it: the poses as JSON
lines, the overlay video, a summary. The student runs through `model.backends` (a checkpoint in
PyTorch or an exported model in onnxruntime), the detector in onnxruntime.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from streampose.detect.yolox import PersonDetector
from streampose.engine.predicted import FramePoses
from streampose.engine.tracking import Detector, Tracker, TrackerConfig
from streampose.errors import StreamPoseError
from streampose.files import STDOUT, atomic_write, stdout_stream
from streampose.model.backends import Backend
from streampose.poses.skeletons import Skeleton
from streampose.stream import stages
from streampose.stream.decode import Frame, decode_frames, probe
from streampose.viz.render import VideoWriter, overlay_frame, track_colour
from streampose.viz.rerun import recording


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` (frame pixels) -> floats, with a clear error for anything else."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise StreamPoseError(f"--box {text!r}: expected four numbers x0,y0,x1,y1 in frame pixels")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise StreamPoseError(f"--box {text!r}: needs x1 > x0 and y1 > y0")
    return x0, y0, x1, y1


# -- the command ------------------------------------------------------------------------------------


def draw(image: np.ndarray, poses: FramePoses, skeleton: Skeleton) -> np.ndarray:
    """The overlay: each person's crop square, 2D skeleton, box and id in its track's colour, the 3D
    panel of the first, and a caption (frame, persons, whether the detector ran)."""
    image = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 500))
    for pose in poses.persons:
        x0, y0, x1, y1 = (round(float(v)) for v in pose.crop)
        cv2.rectangle(image, (x0, y0), (x1, y1), track_colour(pose.track_id), thickness, cv2.LINE_AA)
    caption = f"#{poses.index}  {len(poses.persons)} persons" + ("  detector" if poses.detected else "")
    return overlay_frame(image, [p.as_label() for p in poses.persons], skeleton, caption=caption, by_track=True)


@dataclass
class PredictResult:
    """What `predict_video` did, for the command's summary line. ``tracker_seconds`` is the time
    spent detecting, cropping, running the student and re-framing (``detector_seconds`` of it in
    the detector); the rest is decoding, drawing and encoding."""

    frames: int = 0
    persons: int = 0  # persons over all frames
    persons_per_frame: float = 0.0
    tracks: int = 0  # distinct track ids
    with_persons: int = 0  # frames with at least one person
    tracked: int = 0  # frames with at least one person followed from an earlier frame
    detections: int = 0  # frames the detector ran on
    mean_confidence: float = 0.0  # over persons
    seconds: float = 0.0
    tracker_seconds: float = 0.0
    detector_seconds: float = 0.0
    backend: str = ""
    skeleton: str = ""
    crop_size: int = 0
    outputs: list[str] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        """The command's one line on stderr."""
        return (
            f"{self.frames} frames ({self.backend}, {self.skeleton}, {self.crop_size} px crops): "
            f"{self.persons_per_frame:.2f} persons per frame in {self.tracks} tracks, {self.with_persons} frames "
            f"with someone, mean confidence {self.mean_confidence:.2f}, {self.frames_per_s:.1f} frames/s overall, "
            f"tracking alone {self.frames / max(self.tracker_seconds, 1e-9):.0f} frames/s "
            f"(detector {self.detections} times, {self.detector_seconds:.1f} s)"
            + (f"; wrote {', '.join(self.outputs)}" if self.outputs else "")
        )


def predict_video(
    video: str,
    backend: Backend,
    *,
    poses: str | Path | None = None,
    render: str | Path | None = None,
    rerun: str | None = None,
    box: tuple[float, float, float, float] | None = None,
    max_side: int | None = None,
    config: TrackerConfig | None = None,
    progress: Callable[[], None] | None = None,
    detector: Detector | None = None,
) -> PredictResult:
    """Follow every person through `video` (a file or URL); write one JSON line per frame
    (`FramePoses.to_json`) to `poses`, atomically, the overlay video to `render`, and frames with
    every person's 2D and 3D skeleton to Rerun (`rerun`: a .rrd file, or "" to spawn the viewer).

    `box` (in the pixels of the decoded frames, after `max_side` scaling) seeds one track on the
    first frame instead of the detector; `detector` defaults to YOLOX-Nano from the model store. A
    corrupt video raises `DecodeError` before either output exists.
    """
    start = time.perf_counter()
    config = config or TrackerConfig()
    detector = detector if detector is not None else PersonDetector(threads=1, min_score=config.confirm_score)
    data = stages.one_video(video)
    fps = probe(data.data, data.id).fps
    frames = decode_frames(data.data, data.id, max_side=max_side)
    first = next(frames, None)  # a video that decodes nothing raises here, before any output exists
    if first is None:
        raise StreamPoseError(f"{video}: no frames")
    if box is not None:
        h, w = first.image.shape[:2]
        x0, y0, x1, y1 = box
        if x1 <= 0 or y1 <= 0 or x0 >= w - 1 or y0 >= h - 1:
            raise StreamPoseError(f"--box {box}: lies outside the {w}x{h} frame")

    result = PredictResult(backend=backend.name, skeleton=backend.skeleton.name, crop_size=backend.crop_size)
    result.outputs = ["stdout" if p == STDOUT else str(p) for p in (poses, render, rerun) if p]
    confidence_sum = 0.0
    tracker = Tracker(backend, detector, config, box)
    viewer = recording(backend.skeleton, rerun)

    def run(sink: IO[bytes] | None) -> None:
        nonlocal confidence_sum
        with VideoWriter(render, fps=fps) if render is not None else contextlib.nullcontext() as writer:
            for frame in _chain(first, frames):
                t0 = time.perf_counter()
                found = tracker(frame)
                result.tracker_seconds += time.perf_counter() - t0
                if writer is not None:
                    writer.write(draw(frame.image, found, backend.skeleton))
                if viewer is not None:
                    viewer.frame(frame.index, frame.timestamp, frame.image, [p.as_label() for p in found.persons])
                if sink is not None:
                    sink.write((json.dumps(found.to_json()) + "\n").encode())
                result.frames += 1
                result.persons += len(found.persons)
                result.with_persons += bool(found.persons)
                result.tracked += any(p.tracked for p in found.persons)
                confidence_sum += sum(p.confidence for p in found.persons)
                if progress is not None:
                    progress()

    try:
        if poses == STDOUT:
            with stdout_stream() as sink:
                run(sink)
        elif poses is not None:
            atomic_write(poses, run)
        else:
            run(None)
    finally:
        if viewer is not None:
            viewer.close()
    result.tracks, result.detections = len(tracker.track_ids), tracker.detections
    result.detector_seconds = tracker.detector_seconds
    result.mean_confidence = confidence_sum / max(1, result.persons)
    result.persons_per_frame = result.persons / max(1, result.frames)
    result.seconds = time.perf_counter() - start
    return result


def _chain(first: Frame, rest: Iterator[Frame]) -> Iterator[Frame]:
    yield first
    yield from rest
