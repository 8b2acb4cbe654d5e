"""`make bench` figures P6 and P7: how much labelling one core, and two, get done.

- P6 persons per core: labelled persons/s of the `topdown` teacher on Pose2Sim multi-person cam01
  (three people in view) / persons/s of the single-person `mediapipe` teacher on the same decoded
  frames. Both run interleaved in this process, one whole pass over the frames per repeat.
- P7 producers that scale: labelled frames/s of 2 producers / 1 producer, no trainer running,
  as `train` runs them (a process per producer when there are several, a thread for one); the
  other mode of each count is measured too, so the choice stays a measured one.

Both are imported by `pipeline.py`, which runs each section in a fresh process.
"""

from __future__ import annotations

import threading
import time

MULTI_CLIP = "pose2sim-multi-cam01"


def section_p6(b) -> dict:
    from benchutil import interleaved
    from pipeline import GOALS, _clip_paths, _figure, _timing, _train_defaults

    from streampose import sources
    from streampose.stream import stages
    from streampose.teachers import get_teacher

    d = _train_defaults()
    (spec,) = _clip_paths((MULTI_CLIP,))
    opts = {"stride": d.stride, "max_frames": b.p6_max_frames, "max_side": d.max_side}
    frames = [f.image for _, f in stages.frames(stages.videos(sources.refs([spec])), **opts)]
    teachers = {name: get_teacher(name) for name in ("topdown", "mediapipe")}
    counts: dict[str, dict] = {}

    def persons_per_s(name: str):
        teacher = teachers[name]

        def run() -> float:
            teacher.start_video(frames[0].shape[:2])
            persons = labelled = 0
            t0 = time.perf_counter()
            for i in range(0, len(frames), 8):  # stages.labelled's batch
                for people in teacher.label(frames[i : i + 8]):
                    persons += len(people)
                    labelled += bool(people)
            dt = time.perf_counter() - t0
            counts[name] = {"persons": persons, "labelled_frames": labelled, "frames_per_s": len(frames) / dt}
            return persons / dt

        return run

    runs = interleaved({name: persons_per_s(name) for name in teachers}, warmup=1, repeats=b.p6_repeats)
    for teacher in teachers.values():
        teacher.close()
    top, single = runs["topdown"].median, runs["mediapipe"].median
    top_cores, single_cores = (_timing(runs[n])["cores"] for n in ("topdown", "mediapipe"))
    return {
        "title": "P6 persons per core",
        "numerator": _figure(top, "persons/s", f"topdown teacher on {MULTI_CLIP} ({top_cores} cores)"),
        "denominator": _figure(single, "persons/s", f"single-person mediapipe, same frames ({single_cores} cores)"),
        "ratio": top / single,
        "goal": f">= {GOALS['P6']}",
        "met": top / single >= GOALS["P6"],
        "details": {
            "clip": MULTI_CLIP,
            "frames": len(frames),
            "frame_size": list(frames[0].shape[:2]),
            "topdown": _timing(runs["topdown"]) | counts["topdown"],
            "mediapipe": _timing(runs["mediapipe"]) | counts["mediapipe"],
            "persons_per_core_second": {"topdown": top / top_cores, "mediapipe": single / single_cores}
            if top_cores and single_cores
            else None,
        },
    }


def _frames_per_s(specs: list[str], workers: int, processes: bool, window_s: float) -> float:
    """Labelled frames/s of a ProducerPool over looping clips, timed after every producer has labelled."""
    from pipeline import _train_defaults

    from streampose.sources import refs
    from streampose.stream.buffer import RingBuffer
    from streampose.stream.producers import ProducerConfig, ProducerPool, teacher_factory
    from streampose.teachers import teacher_class

    class CountingBuffer(RingBuffer):
        frames = 0
        lock = threading.Lock()

        def note_frames(self, n: int = 1) -> None:
            with self.lock:
                self.frames += n
            super().note_frames(n)

    d = _train_defaults()
    joints = teacher_class(d.teacher).skeleton.num_joints
    buffer = CountingBuffer(joints, d.crop_size, budget_bytes=64 * 2**20)
    cfg = ProducerConfig(stride=d.stride, max_side=d.max_side, crop_size=d.crop_size)
    teacher = teacher_factory(d.teacher, workers)
    pool = ProducerPool(refs(specs, loop=True), buffer, teacher, cfg, workers, processes=processes).start()
    try:
        deadline = time.monotonic() + 120
        while buffer.frames < 8 * workers and time.monotonic() < deadline:  # past start-up and model loading
            time.sleep(0.05)
        f0, t0 = buffer.frames, time.perf_counter()
        time.sleep(window_s)
        return (buffer.frames - f0) / (time.perf_counter() - t0)
    finally:
        pool.stop()


def section_p7(b) -> dict:
    from pipeline import CLIPS, GOALS, _clip_paths, _figure

    specs = _clip_paths(CLIPS)
    cases = [(1, False), (2, True), (1, True), (2, False)]
    rates: dict[str, list[float]] = {}
    for _ in range(b.p7_rounds):
        for workers, processes in cases:
            key = f"{workers} {'processes' if processes else 'threads'}"
            rates.setdefault(key, []).append(_frames_per_s(specs, workers, processes, b.p7_window_s))
    best = {k: max(v) for k, v in rates.items()}  # foreign load only ever slows a window down
    one, two = best["1 threads"], best["2 processes"]
    return {
        "title": "P7 producers that scale",
        "numerator": _figure(two, "frames/s", "2 producers (processes, as train runs them), no trainer"),
        "denominator": _figure(one, "frames/s", "1 producer (a thread, as train runs it)"),
        "ratio": two / one,
        "goal": f">= {GOALS['P7']}",
        "met": two / one >= GOALS["P7"],
        "details": {
            "frames_per_s": best,
            "rates": rates,
            "threads_2_over_1": best["2 threads"] / best["1 threads"],
            "processes_2_over_1": best["2 processes"] / best["1 processes"],
            "window_s": b.p7_window_s,
        },
    }


def table_rows(key: str, d: dict) -> list[str]:
    if key == "P6":
        t, m = d["topdown"], d["mediapipe"]
        return [
            f"| P6 frames/s, persons per labelled frame | topdown {t['frames_per_s']:.1f}, "
            f"{t['persons'] / max(t['labelled_frames'], 1):.2f} | mediapipe {m['frames_per_s']:.1f}, "
            f"{m['persons'] / max(m['labelled_frames'], 1):.2f} | | | |"
        ]
    fps = d["frames_per_s"]
    return [
        f"| P7 frames/s | {', '.join(f'{k}: {v:.1f}' for k, v in fps.items())} | | "
        f"threads 2/1 {d['threads_2_over_1']:.2f}, processes 2/1 {d['processes_2_over_1']:.2f} | | |"
    ]
