"""Drawing poses so a person can judge them by eye: 2D overlays, a 3D panel, videos, sheets.

Colours follow the side of the body (left blue, right orange, centre grey) in every view, so
a left/right swap is visible at a glance. With several tracked people, each track's bones and box
take a colour of their own (`TRACK_COLOURS`, by track id) while the joints keep the side colours.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from streampose.files import atomic_write, output_path, reported
from streampose.poses.labels import PersonLabel
from streampose.poses.skeletons import Skeleton

SIDE_COLOURS = {"left": (40, 120, 255), "right": (255, 140, 20), "centre": (200, 200, 200)}  # RGB
# Distinct from the side colours and from each other, cycled by track id.
TRACK_COLOURS = [(60, 220, 60), (230, 60, 230), (250, 230, 40), (40, 230, 230), (230, 40, 40), (150, 90, 250)]


def track_colour(track_id: int) -> tuple[int, int, int]:
    return TRACK_COLOURS[track_id % len(TRACK_COLOURS)]


def draw_skeleton(
    image: np.ndarray,
    joints2d: np.ndarray,
    visibility: np.ndarray,
    skeleton: Skeleton,
    *,
    threshold: float = 0.5,
    thickness: int | None = None,
    colours: dict[str, tuple[int, int, int]] | None = None,
    side_joints: bool = False,
) -> np.ndarray:
    """Draw bones and joints of one person onto an RGB image, in place.

    Joints are white, or coloured by body side with `side_joints`."""
    colours = colours or SIDE_COLOURS
    thickness = thickness or max(1, round(max(image.shape[:2]) / 400))
    pts = np.round(joints2d).astype(int)
    for a, b in skeleton.bones:
        if visibility[a] >= threshold and visibility[b] >= threshold:
            colour = colours[skeleton.side_of_bone((a, b))]
            cv2.line(image, tuple(pts[a]), tuple(pts[b]), colour, thickness, cv2.LINE_AA)
    for i, p in enumerate(pts):
        if visibility[i] >= threshold:
            colour = SIDE_COLOURS[skeleton.side_of_bone((i, i))] if side_joints else (255, 255, 255)
            cv2.circle(image, tuple(p), thickness + 1, colour, -1, cv2.LINE_AA)
    return image


def pose_panel(
    poses: Sequence[tuple[np.ndarray, np.ndarray, tuple[int, int, int] | None]],
    skeleton: Skeleton,
    size: int,
    *,
    yaw_degrees: float = 35.0,
    metres: float = 2.2,
    title: str = "",
) -> np.ndarray:
    """A square RGB panel showing root-relative 3D poses from a camera turned by `yaw_degrees`.

    Each pose is (joints3d, visibility, colour); colour None means colour by body side. The view
    is orthographic with y down, `metres` across the panel, and a floor grid for depth cues.
    """
    panel = np.full((size, size, 3), 24, np.uint8)
    yaw = math.radians(yaw_degrees)
    rot = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    scale = size / metres
    for g in np.linspace(-1.0, 1.0, 5):  # floor grid 1 m below the root
        for a, b in (((g, 0.9, -1.0), (g, 0.9, 1.0)), ((-1.0, 0.9, g), (1.0, 0.9, g))):
            pa, pb = (rot @ np.array(a))[:2] * scale + size / 2, (rot @ np.array(b))[:2] * scale + size / 2
            cv2.line(panel, tuple(pa.astype(int)), tuple(pb.astype(int)), (60, 60, 60), 1, cv2.LINE_AA)
    for joints3d, visibility, colour in poses:
        p2 = (joints3d @ rot.T)[:, :2] * scale + size / 2
        colours = {k: colour for k in SIDE_COLOURS} if colour else None
        draw_skeleton(panel, p2, visibility, skeleton, thickness=max(1, size // 160), colours=colours)
    if title:
        cv2.putText(panel, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1, cv2.LINE_AA)
    return panel


def overlay_frame(
    image: np.ndarray,
    persons: Iterable[PersonLabel],
    skeleton: Skeleton,
    *,
    caption: str = "",
    by_track: bool = False,
) -> np.ndarray:
    """The frame with every person's 2D skeleton, and beside it a 3D panel of the first person.

    With `by_track`, each person is drawn in its track's colour, with its box and track id."""
    canvas = image.copy()
    persons = list(persons)
    h = canvas.shape[0]
    for person in persons:
        if not by_track:
            draw_skeleton(canvas, person.joints2d, person.visibility, skeleton)
            continue
        colour = track_colour(person.track_id)
        draw_skeleton(
            canvas,
            person.joints2d,
            person.visibility,
            skeleton,
            colours=dict.fromkeys(SIDE_COLOURS, colour),
            side_joints=True,
        )
        x0, y0, x1, y1 = (int(round(v)) for v in person.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, max(1, h // 540))
        cv2.putText(
            canvas,
            f"id {person.track_id}",
            (x0, max(12, y0 - 6)),
            cv2.FONT_HERSHEY_SIMPLEX,
            max(0.4, h / 1200),
            colour,
            max(1, h // 540),
            cv2.LINE_AA,
        )
    panel = pose_panel([(p.joints3d, p.visibility, None) for p in persons[:1]], skeleton, h, title="3D")
    out = np.concatenate([canvas, panel], axis=1)
    if caption:
        cv2.putText(
            out,
            caption,
            (8, h - 10),
            cv2.FONT_HERSHEY_SIMPLEX,
            max(0.4, h / 900),
            (255, 255, 0),
            1,
            cv2.LINE_AA,
        )
    return out


class VideoWriter:
    """Encode RGB frames to a video file the user asked for (H.264 when FFmpeg has it)."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = output_path(path)
        with reported(self.path):
            self._container = av.open(str(self.path), mode="w")
        self._fps = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30)
        self._stream = None

    def write(self, image: np.ndarray) -> None:
        with reported(self.path):
            self._write(image)

    def _write(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if self._stream is None:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self._stream = self._container.add_stream(codec, rate=self._fps)
            self._stream.width, self._stream.height = w - w % 2, h - h % 2
            self._stream.pix_fmt = "yuv420p"
        image = np.ascontiguousarray(image[: self._stream.height, : self._stream.width])
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        with reported(self.path):
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def contact_sheet(images: Sequence[np.ndarray], columns: int = 4, width: int = 1600) -> np.ndarray:
    """Tile images (each resized to one cell) into one RGB sheet."""
    if not images:
        raise ValueError("no images for a contact sheet")
    columns = min(columns, len(images))
    cell_w = width // columns
    h0, w0 = images[0].shape[:2]
    cell_h = round(cell_w * h0 / w0)
    rows = math.ceil(len(images) / columns)
    sheet = np.zeros((rows * cell_h, columns * cell_w, 3), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * cell_h : (r + 1) * cell_h, c * cell_w : (c + 1) * cell_w] = cv2.resize(img, (cell_w, cell_h))
    return sheet


def save_png(image: np.ndarray, path: str | Path) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as PNG")
    atomic_write(path, lambda f: f.write(data.tobytes()))
