"""`streampose` command line: label, view, train, eval.

Each subcommand parses its options here and calls into the modules that do the work.
A StreamPoseError (bad input, a missing dependency) becomes one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import cv2
from tqdm import tqdm

from . import pipeline, sources
from .decode import decode_frames, probe
from .errors import StreamPoseError
from .labels import load_labels, save_labels
from .render import VideoWriter, contact_sheet, overlay_frame, save_png
from .skeletons import get_skeleton
from .teachers import TEACHERS, get_teacher


def progress(**kwargs) -> tqdm:
    """A progress bar on an interactive terminal, silent otherwise (logs, CI, pipes)."""
    return tqdm(disable=not sys.stderr.isatty(), dynamic_ncols=True, **kwargs)


def emit_json(result: dict) -> None:
    """The machine-readable result: one JSON object, always the last line of stdout."""
    print(json.dumps(result), flush=True)


def cmd_label(args: argparse.Namespace) -> None:
    teacher = get_teacher(args.teacher)
    skeleton = teacher.skeleton
    specs = sources.expand(args.sources)
    start = time.perf_counter()
    all_labels = []
    counts = dict(videos=0, frames=0, labelled_frames=0, persons=0)
    writer = VideoWriter(args.render, fps=_render_fps(specs, args.stride)) if args.render else None
    render_size = None
    bar = progress(unit="frame", desc="label")
    try:
        stream = pipeline.frames(
            sources.videos(specs), stride=args.stride, max_frames=args.max_frames, max_side=args.max_side
        )
        last_video = None
        for video, frame, labels in pipeline.labelled(teacher, stream):
            if video is not last_video:
                counts["videos"] += 1
                last_video = video
            counts["frames"] += 1
            counts["labelled_frames"] += bool(labels.persons)
            counts["persons"] += len(labels.persons)
            all_labels.append(labels)
            if writer:
                image = overlay_frame(
                    frame.image, labels.persons, skeleton, caption=f"{Path(video.id).name} #{frame.index}"
                )
                render_size = render_size or (image.shape[1], image.shape[0])
                writer.write(cv2.resize(image, render_size) if image.shape[1::-1] != render_size else image)
            bar.update()
    finally:
        bar.close()
        if writer:
            writer.close()
        teacher.close()
    seconds = time.perf_counter() - start
    if args.save:
        save_labels(args.save, teacher=teacher.name, skeleton=skeleton.name, frames=all_labels)
    print(
        f"labelled {counts['labelled_frames']}/{counts['frames']} frames of {counts['videos']} video(s), "
        f"{counts['persons']} persons, {counts['frames'] / seconds:.1f} frames/s"
        + (f"; labels in {args.save}" if args.save else "")
        + (f"; overlay in {args.render}" if args.render else ""),
        file=sys.stderr,
    )
    if args.json:
        emit_json(
            {
                **counts,
                "joints": skeleton.num_joints,
                "skeleton": skeleton.name,
                "teacher": teacher.name,
                "seconds": round(seconds, 3),
                "frames_per_s": round(counts["frames"] / seconds, 2),
            }
        )


def _render_fps(specs: list[str], stride: int) -> float:
    try:
        return probe(sources.load(specs[0]).data, specs[0]).fps / stride
    except StreamPoseError:
        return 30.0 / stride


def cmd_view(args: argparse.Namespace) -> None:
    header, frames = load_labels(args.labels)
    skeleton = get_skeleton(header["skeleton"])
    video = sources.load(args.video)
    by_index = {f.index: f for f in frames if f.source == video.id}
    if not by_index:
        if len({f.source for f in frames}) > 1:
            raise StreamPoseError(f"{args.labels} holds no labels for {args.video}")
        by_index = {f.index: f for f in frames}  # one video, perhaps labelled from another path or URL
    if not args.out and not args.png:
        raise StreamPoseError("nothing to do: give --out overlay.mp4 and/or --png sheet.png")
    fps = probe(video.data, video.id).fps
    sheet_every = max(1, len(by_index) // args.sheet_frames)
    sheet, shown = [], 0
    writer = VideoWriter(args.out, fps=fps) if args.out else None
    try:
        for frame in progress(iterable=decode_frames(video.data, video.id), unit="frame", desc="view"):
            labels = by_index.get(frame.index)
            if labels is None:
                continue
            image = overlay_frame(frame.image, labels.persons, skeleton, caption=f"#{frame.index}")
            if writer:
                writer.write(image)
            if args.png and shown % sheet_every == 0 and len(sheet) < args.sheet_frames:
                sheet.append(image)
            shown += 1
    finally:
        if writer:
            writer.close()
    if args.png:
        save_png(contact_sheet(sheet), args.png)
    print(
        f"drew {shown} labelled frames"
        + (f" to {args.out}" if args.out else "")
        + (f", sheet {args.png}" if args.png else ""),
        file=sys.stderr,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streampose", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("label", help="label videos with a teacher")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="video file, folder, or http(s) URL")
    p.add_argument("--teacher", default="mediapipe", choices=sorted(TEACHERS))
    p.add_argument("--stride", type=int, default=1, help="label every n-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="per video, after stride")
    p.add_argument("--max-side", type=int, default=None, help="scale frames so the longest side is at most this")
    p.add_argument("--save", metavar="labels.pt", help="write the labels (never pixels)")
    p.add_argument("--render", metavar="overlay.mp4", help="write an overlay video")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("view", help="draw saved labels over their video")
    p.add_argument("labels", metavar="labels.pt")
    p.add_argument("--video", required=True, help="the video the labels came from")
    p.add_argument("--out", metavar="overlay.mp4", help="overlay video")
    p.add_argument("--png", metavar="sheet.png", help="contact sheet of a few frames")
    p.add_argument("--sheet-frames", type=int, default=12)
    p.set_defaults(func=cmd_view)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        args.func(args)
    except StreamPoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
