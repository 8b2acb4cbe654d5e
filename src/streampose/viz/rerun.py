"""The interactive viewer: frames, 2D and 3D skeletons per person on one timeline, in Rerun.

Rerun (`rerun-sdk`) is an optional extra (`pip install 'streampose[viz]'`): it is a large wheel
and only people who look at results need it. A recording is written to an `.rrd` file the user
named (like `--render overlay.mp4`, it holds frames on purpose), or streamed to a viewer that
is spawned when no file is given.

Entities: `video` (the frame), `video/person/<track>` (2D joints, bones, box) and
`world/person/<track>` (3D joints and bones). The skeleton's joint names and bones are logged
once as an annotation context, so keypoints are labelled and joined in both views. Every frame
clears the persons of the frame before, so a person who left is not drawn on.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from streampose.errors import StreamPoseError
from streampose.files import output_path, reported
from streampose.poses.labels import PersonLabel
from streampose.poses.skeletons import Skeleton
from streampose.viz.render import track_colour

INSTALL_HINT = "pip install 'streampose[viz]'"
# 3D joints are root-relative, so every person stands at the origin; spreading them along x by
# where they stand in the frame keeps several people apart and in their left-to-right order.
WORLD_SPREAD_M = 4.0


def import_rerun() -> ModuleType:
    try:
        import rerun
    except ImportError as e:
        raise StreamPoseError(f"the viewer needs rerun-sdk, which is not installed ({e}): {INSTALL_HINT}") from None
    return rerun


def _find_viewer() -> None:
    """Put the `rerun` viewer on PATH for rerun-sdk's spawn, which looks for it only there: the
    environment's own bin folder is tried when it is not activated (`.venv/bin/streampose ...`)."""
    if shutil.which("rerun"):
        return
    bin_dir = Path(sys.executable).parent
    if not shutil.which("rerun", path=str(bin_dir)):
        raise StreamPoseError(
            "--rerun without a file spawns the `rerun` viewer, which is not on PATH: activate the environment "
            "rerun-sdk is installed in, or write a recording (--rerun out.rrd) and open it with `rerun out.rrd`"
        )
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


class RerunLog:
    """One recording: call `frame` for each frame in order, then `close`.

    `path` None spawns a viewer and streams to it; otherwise the recording goes to that file.
    """

    def __init__(self, skeleton: Skeleton, path: str | Path | None, *, app: str = "streampose") -> None:
        self.rr = rr = import_rerun()
        self.skeleton = skeleton
        if path is None:
            _find_viewer()
        self.recording = rr.new_recording(app, spawn=path is None)
        if path is not None:
            with reported(path):
                self.recording.save(str(output_path(path)))
        joints = [rr.AnnotationInfo(id=i, label=name) for i, name in enumerate(skeleton.joints)]
        # Class 0 joins the joints (3D: every joint is logged); class 1 only names them (2D: only visible
        # joints are logged, and a connection to a joint left out would be an unresolved-keypoint warning).
        context = rr.AnnotationContext(
            [rr.ClassDescription(info=rr.AnnotationInfo(id=0, label=skeleton.name), keypoint_annotations=joints,
                                 keypoint_connections=list(skeleton.bones)),
             rr.ClassDescription(info=rr.AnnotationInfo(id=1, label=skeleton.name), keypoint_annotations=joints)]
        )  # fmt: skip
        self.recording.log("/", context, static=True)
        # stream-pose's 3D axes: x right, y down, z forward (poses/labels.py).
        self.recording.log("world", rr.ViewCoordinates.RDF, static=True)

    def frame(self, index: int, timestamp: float, image: np.ndarray | None, persons: Sequence[PersonLabel]) -> None:
        """Log one frame: the RGB image (optional), then each person's 2D and 3D skeleton."""
        rr, rec = self.rr, self.recording
        rec.set_time_sequence("frame", index)
        rec.set_time_seconds("time", timestamp)
        rec.log("video/person", rr.Clear(recursive=True))
        rec.log("world/person", rr.Clear(recursive=True))
        width = None
        if image is not None:
            rec.log("video", rr.Image(image, color_model="RGB").compress(jpeg_quality=85))
            width = image.shape[1]
        ids = np.arange(self.skeleton.num_joints)
        for slot, person in enumerate(persons):
            track = person.track_id if person.track_id else slot
            colour = track_colour(track)
            shown = person.visibility >= 0.5
            rec.log(
                f"video/person/{track}",
                rr.Points2D(person.joints2d[shown], keypoint_ids=ids[shown], class_ids=1, colors=colour, radii=3,
                            show_labels=False),
            )  # fmt: skip
            bones = [person.joints2d[[a, b]] for a, b in self.skeleton.bones if shown[a] and shown[b]]
            rec.log(f"video/person/{track}/bones", rr.LineStrips2D(bones, colors=colour, radii=1.5))
            rec.log(
                f"video/person/{track}/box",
                rr.Boxes2D(array=person.box, array_format=rr.Box2DFormat.XYXY, colors=colour, labels=f"#{track}"),
            )
            centre = (person.box[0] + person.box[2]) / 2
            x = (centre / width - 0.5) * WORLD_SPREAD_M if width else slot * WORLD_SPREAD_M / 4
            rec.log(f"world/person/{track}", rr.Transform3D(translation=[x, 0.0, 0.0]))
            rec.log(
                f"world/person/{track}/joints",
                rr.Points3D(
                    person.joints3d, keypoint_ids=ids, class_ids=0, colors=colour, radii=0.02, show_labels=False
                ),
            )

    def close(self) -> None:
        self.recording.flush(blocking=True)
        self.recording.disconnect()


def recording(skeleton: Skeleton, target: str | Path | None) -> RerunLog | None:
    """`--rerun`'s recording: none when not asked for, a spawned viewer for "" (the flag without a
    file), else the file."""
    if target is None:
        return None
    return RerunLog(skeleton, target or None)
