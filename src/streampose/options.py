"""Options and output that several `streampose` commands share: sources, the model to run, the
progress bar and the JSON result line."""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from streampose import sources
from streampose.config import MAX_SIDE, NON_NEGATIVE_FLOAT, POSITIVE, POSITIVE_FLOAT
from streampose.errors import StreamPoseError
from streampose.sources.base import MAX_VIDEO_MB
from streampose.stream import stages
from streampose.teachers import TEACHERS, split_spec

TEACHER_HELP = f"{' | '.join(sorted(TEACHERS))}, or NAME:MODEL (topdown:lite, topdown:heavy)"


def teacher_spec(spec: str) -> str:
    """An argparse type: a teacher's name, or name:model (`teachers.split_spec`)."""
    try:
        split_spec(spec)
    except StreamPoseError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec


def progress(disable: bool = False, **kwargs) -> tqdm:
    """A progress bar on an interactive terminal, silent otherwise (logs, CI, pipes)."""
    return tqdm(disable=disable or not sys.stderr.isatty(), dynamic_ncols=True, **kwargs)


def tick(bar: tqdm, persons: int) -> None:
    """One frame done with `persons` found on it: the bar counts frames (frames/s) and shows persons/s."""
    if bar.disable:
        return
    bar.update()
    bar.persons = getattr(bar, "persons", 0) + persons
    elapsed = bar.format_dict["elapsed"]
    if elapsed > 0:
        bar.set_postfix_str(f"{bar.persons / elapsed:.1f} persons/s", refresh=False)


def emit_json(result: dict) -> None:
    """The machine-readable result: one JSON object, always the last line of stdout."""
    print(json.dumps(result), flush=True)


def add_source_options(p: argparse.ArgumentParser, loop: bool = True, permission: bool = False) -> None:
    """The source options; `permission` adds --pexels-permission (commands that train or evaluate)."""
    g = p.add_argument_group(
        "sources",
        "SOURCE is a file, a folder, an http(s) URL, @list.txt (one source per line), pexels:QUERY or "
        "commons:QUERY. Pexels' terms forbid training ML models on its content without Pexels' permission; "
        "Wikimedia Commons media are freely licensed (set STREAMPOSE_CONTACT for its User-Agent).",
    )
    g.add_argument("--max-videos", type=POSITIVE.parse, default=None, help="stop after this many videos")
    if loop:
        g.add_argument("--loop", action="store_true", help="keep paging search sources for new videos forever")
    g.add_argument("--orientation", choices=["landscape", "portrait", "square"], default=None)
    g.add_argument("--min-duration", type=NON_NEGATIVE_FLOAT.parse, default=None, help="seconds (search sources)")
    g.add_argument("--max-duration", type=NON_NEGATIVE_FLOAT.parse, default=None, help="seconds (search sources)")
    g.add_argument("--target-height", type=POSITIVE.parse, default=480, help="preferred rendition's short side, pixels")
    g.add_argument(
        "--max-video-mb", type=POSITIVE_FLOAT.parse, default=MAX_VIDEO_MB, help="skip videos larger than this"
    )
    if permission:
        g.add_argument(
            "--pexels-permission",
            action="store_true",
            help="affirm that you have Pexels' explicit permission to train or evaluate models on its videos "
            "(required for pexels: sources)",
        )


def add_frame_options(p: argparse.ArgumentParser, max_side: int | None, stride: bool = True) -> None:
    """Which frames a command sees and at what size (label, eval; predict: `stride` False)."""
    if stride:
        p.add_argument("--stride", type=POSITIVE.parse, default=1, help="every n-th frame")
        p.add_argument("--max-frames", type=POSITIVE.parse, default=None, help="per video, after stride")
    p.add_argument(
        "--max-side",
        type=MAX_SIDE.parse,
        default=max_side,
        help="scale frames so the longest side is at most this (0: full size)",
    )


def add_model_options(p: argparse.ArgumentParser) -> None:
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a training checkpoint (runs in the fastest backend installed)")
    model.add_argument("--onnx", metavar="student.onnx", help="an exported student (runs in onnxruntime)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"), help="what runs --checkpoint")


def source_filters(args: argparse.Namespace) -> dict:
    filters = {k: getattr(args, k) for k in ("orientation", "min_duration", "max_duration", "target_height")}
    return filters | {"max_bytes": int(args.max_video_mb * 1e6)}


def source_videos(args: argparse.Namespace, specs: list[str], *, max_videos: int | None = None):
    """Pipeline head shared by label and eval: refs resolved lazily, fetched one at a time; a file or
    URL the user named that fails stops the command, a search result that fails is skipped.
    `max_videos` caps the refs tried (label instead caps the videos that decode, after this)."""
    filters = source_filters(args)
    stream = sources.refs(
        specs, max_videos=max_videos, loop=getattr(args, "loop", False), filters=sources.SourceFilters(**filters)
    )
    return stages.videos(stream, max_bytes=filters["max_bytes"], handler=stages.raise_named_skip_searched)


def frame_total(args: argparse.Namespace) -> int | None:
    """The frames label or eval will see, when bounded (see `stages.frame_total`), for the bar's ETA."""
    if getattr(args, "loop", False):
        return None
    return stages.frame_total(args.sources, stride=args.stride, max_frames=args.max_frames, max_videos=args.max_videos)


def add_rerun_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rerun", nargs="?", const="", metavar="out.rrd",
        help="log frames, 2D and 3D skeletons to the interactive viewer: to a recording (open it with `rerun out.rrd`) "
        "or, without a file, to a viewer spawned now (needs pip install 'streampose[viz]')",
    )  # fmt: skip
