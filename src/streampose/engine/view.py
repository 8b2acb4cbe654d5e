"""`streampose view`: saved labels drawn over the video they came from (an overlay video, a contact
sheet), or logged with their frames into the interactive viewer (Rerun)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streampose.errors import StreamPoseError
from streampose.poses.labels import FrameLabels, load_labels
from streampose.poses.skeletons import get_skeleton
from streampose.stream import stages
from streampose.stream.decode import probe
from streampose.viz.render import VideoWriter, contact_sheet, overlay_frame, save_png
from streampose.viz.rerun import recording


def labels_for(labels_path: str | Path, video_id: str, video_spec: str) -> tuple[dict, dict[int, FrameLabels]]:
    """The labels file's header and its frames of one video, by frame index."""
    header, frames = load_labels(labels_path)
    if not frames:
        raise StreamPoseError(f"{labels_path} holds no labelled frames")
    by_index = {f.index: f for f in frames if f.source == video_id}
    if not by_index:
        if len({f.source for f in frames}) > 1:
            raise StreamPoseError(f"{labels_path} holds no labels for {video_spec}")
        by_index = {f.index: f for f in frames}  # one video, perhaps labelled from another path or URL
    return header, by_index


def view(
    labels_path: str | Path,
    video_spec: str,
    *,
    out: str | None = None,
    png: str | None = None,
    sheet_frames: int = 12,
    rerun: str | None = None,
    on_frame: Callable[[], object] | None = None,
) -> int:
    """Draw the labels over their video into `out` (MP4) and/or a contact sheet `png`, and/or log them
    to Rerun (`rerun`: a .rrd file, or "" to spawn the viewer); the labelled frames shown."""
    if not out and not png and rerun is None:
        raise StreamPoseError("nothing to do: give --out overlay.mp4, --png sheet.png and/or --rerun [out.rrd]")
    video = stages.one_video(video_spec)
    header, by_index = labels_for(labels_path, video.id, video_spec)
    skeleton = get_skeleton(header["skeleton"])
    sheet_every = max(1, len(by_index) // sheet_frames)
    sheet, shown = [], 0
    viewer = recording(skeleton, rerun)  # first: a missing rerun-sdk fails before any file exists
    writer = VideoWriter(out, fps=probe(video.data, video.id).fps) if out else None
    try:
        # Frames scaled as they were when labelled (`label --max-side`), so the 2D joints land on them.
        max_side = max(next(iter(by_index.values())).size)
        for _, frame in stages.frames([video], max_side=max_side):
            if on_frame is not None:
                on_frame()
            labels = by_index.get(frame.index)
            if labels is None:
                continue
            if viewer:
                viewer.frame(frame.index, frame.timestamp, frame.image, labels.persons)
            if writer or png:
                image = overlay_frame(frame.image, labels.persons, skeleton, caption=f"#{frame.index}", by_track=True)
                if writer:
                    writer.write(image)
                if png and shown % sheet_every == 0 and len(sheet) < sheet_frames:
                    sheet.append(image)
            shown += 1
    finally:
        if writer:
            writer.close()
        if viewer:
            viewer.close()
    if png:
        save_png(contact_sheet(sheet), png)
    return shown
