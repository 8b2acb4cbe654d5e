"""The teacher's disagreement with itself: the floor for any student judged against it.

The four Pose2Sim single-person cameras film the same instants. MediaPipe labels each view;
for every pair of views, the 3D poses of the same frame are compared by PA-MPJPE (rotation,
translation and scale removed, since each view's world landmarks keep that camera's
orientation) and by raw MPJPE. A student evaluated against this teacher cannot be expected to
score below these numbers.

    .venv/bin/python benchmarks/teacher_cross_view.py [--views 1 2 3 4] [--offset 0]
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np

from streampose import sources
from streampose.poses.metrics import pose_metrics
from streampose.sources.samples import sample_clip
from streampose.stream import stages
from streampose.teachers import get_teacher


def label_view(view: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """frame index -> (joints3d, visibility) of the one person MediaPipe follows."""
    teacher = get_teacher("mediapipe")
    try:
        stream = stages.frames(stages.videos(sources.refs([str(sample_clip(f"pose2sim-single-cam0{view}"))])))
        return {
            f.index: (labels.persons[0].joints3d, labels.persons[0].visibility)
            for _, f, labels in stages.labelled(teacher, stream)
            if labels.persons
        }
    finally:
        teacher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--offset", type=int, default=0, help="frames between the views (they are synchronised)")
    args = parser.parse_args()
    skeleton = get_teacher("mediapipe").skeleton
    labels = {v: label_view(v) for v in args.views}
    results = {}
    for a, b in itertools.combinations(args.views, 2):
        common = sorted(set(labels[a]) & {i - args.offset for i in labels[b]})
        pa = np.stack([labels[a][i][0] for i in common])
        pb = np.stack([labels[b][i + args.offset][0] for i in common])
        vis = np.minimum(
            np.stack([labels[a][i][1] for i in common]), np.stack([labels[b][i + args.offset][1] for i in common])
        )
        m = pose_metrics(pa, pb, vis, skeleton)
        results[f"cam0{a}-cam0{b}"] = {
            "frames": len(common),
            **{k: round(v, 1) for k, v in m.items() if k != "pck_150mm"},
        }
        print(
            f"cam0{a} vs cam0{b}: {len(common)} frames, "
            f"PA-MPJPE {m['pa_mpjpe_mm']:.0f} mm, MPJPE {m['mpjpe_mm']:.0f} mm"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
