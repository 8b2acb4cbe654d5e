"""Helpers shared by the benchmarks in this folder: timing, subprocess children, machine facts.

Why these rules: this project's machines have 2 CPU cores shared with other jobs, so a single
timing means little. Every figure is measured after a warm-up, as the median of several repeats,
and a ratio's two sides are timed in the same process run, interleaved (A, B, A, B, ...), so that
foreign load hits both sides alike. Each measurement also records the cores the process actually
got (CPU time / wall time) and the load average, which tells a slow figure from a busy machine.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Timing:
    """Rates (work units per second) of timed repeats after a warm-up, and the cores used in each."""

    rates: list[float]
    cores: list[float]
    units_per_repeat: int

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def timed_repeats(
    step: Callable[[], None],
    *,
    units_per_step: int = 1,
    warmup_s: float = 3.0,
    repeat_s: float = 1.0,
    repeats: int = 7,
    sync: Callable[[], None] | None = None,
) -> Timing:
    """Warm `step` up for `warmup_s` (at least twice), then time `repeats` repeats of ~`repeat_s` each.

    The first calls pick kernels and allocate (oneDNN primitive caches, CUDA context), so they
    are never timed. The steps per repeat are judged from one timed step. `sync` (e.g.
    ``torch.cuda.synchronize``) runs before every clock read, for asynchronous devices.
    """
    sync = sync or (lambda: None)
    t_end = time.perf_counter() + warmup_s
    n = 0
    while n < 2 or time.perf_counter() < t_end:
        step()
        n += 1
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    per_step = time.perf_counter() - t0
    steps = max(1, round(repeat_s / max(per_step, 1e-6)))
    rates, cores = [], []
    for _ in range(repeats):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        sync()
        wall = time.perf_counter() - t0
        rates.append(steps * units_per_step / wall)
        cores.append((time.process_time() - c0) / wall)
    return Timing(rates, cores, steps * units_per_step)


def interleaved(cases: dict[str, Callable[[], float]], *, warmup: int = 1, repeats: int = 5) -> dict[str, Timing]:
    """Run each case's callable (one measured run returning its rate) in turn: warm-up rounds, then repeats.

    Interleaving A, B, A, B, ... rather than A, A, ..., B, B, ... spreads foreign load on the
    shared cores over both sides of a ratio instead of loading it onto one.
    """
    for _ in range(warmup):
        for run in cases.values():
            run()
    out = {name: Timing([], [], 0) for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out[name].rates.append(run())
            out[name].cores.append((time.process_time() - c0) / max(time.perf_counter() - t0, 1e-9))
    return out


def run_child(script: str | Path, args: Sequence[str], *, timeout: float | None = None) -> dict:
    """Run `python script args...` in a fresh process and parse the JSON on its last stdout line.

    Fresh processes because several models (or a teacher and a model) alive in one process
    slowed each other up to 2x on this machine, and so RSS figures start from a clean process.
    A failure comes back as ``{"error": ...}`` instead of raising, so one broken figure does not
    lose the others.
    """
    try:
        proc = subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-3:] if proc.stderr else ["failed"]
        return {"error": " | ".join(tail)}
    return json.loads(lines[-1])


def rss_bytes() -> int:
    """This process's resident set size now (VmRSS from /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def load1() -> float:
    """The 1-minute load average: above ~0.5 on 2 cores before a figure, other jobs were running."""
    return os.getloadavg()[0]


def busy_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used so far (all non-idle time in /proc/stat).

    Steal (time the hypervisor gave to other guests) counts as busy: it is foreign load too.
    """
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its finished (waited-for) descendants."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


class ForeignLoad:
    """Cores other jobs used while a block ran: (machine busy time - ours) / wall time.

    The load average cannot tell this: it includes our own work, and it lags by a minute, so a
    section that follows a busy one always looks loaded. Use around a child process that has
    finished by the end of the block (its CPU time is counted only once it is waited for).
    """

    def __enter__(self) -> ForeignLoad:
        self._t, self._busy, self._own = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.perf_counter() - self._t, 1e-9)
        foreign = (busy_cpu_seconds() - self._busy) - (own_cpu_seconds() - self._own)
        self.cores = max(0.0, foreign / wall)


def foreign_cores_now(seconds: float = 1.0) -> float:
    """Cores other jobs use right now, measured while this process sleeps for `seconds`."""
    with ForeignLoad() as load:
        time.sleep(seconds)
    return load.cores


class ThreadCPU:
    """Cores used per group of this process's threads while the block ran: where the CPU went.

    Why not a profiler: py-spy and cProfile see Python frames, but here the work happens in
    native threads (MediaPipe's graph, FFmpeg's decoder and swscale threads, torch's OpenMP
    workers). The kernel counts every thread's CPU time in /proc/self/task, and threads are
    named: Python threads by `threading` name (producer-0, batch-loader, MainThread), native
    ones by their comm with the number dropped ("mediapipe/", "av:vp9:df", "python" for
    unnamed workers such as OpenMP's). Threads come and go (a new MediaPipe graph and decoder per
    video), so the tasks are polled every `interval` s and a thread's last reading is kept; the
    CPU a thread spends after its last poll is lost (at most `interval` per exited thread).
    The polling costs ~1 % of a core: use this in a diagnostic run, not inside a timed figure.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._names: dict[int, str] = {}  # Python thread names, kept after the thread ends
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="thread-cpu", daemon=True)
        self.cores: dict[str, float] = {}

    def _read(self) -> dict[int, tuple[str, float]]:
        out = {}
        tick = os.sysconf("SC_CLK_TCK")
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    comm = f.read().strip()
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited between listdir and open
            out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / tick)
        return out

    def _poll(self) -> None:
        while True:
            self._names |= {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
            for tid, (comm, cpu) in self._read().items():
                self._first.setdefault(tid, cpu if tid in self._baseline else 0.0)
                self._last[tid] = (comm, cpu)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> ThreadCPU:
        self._baseline = self._read()
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wall = max(time.perf_counter() - self._t0, 1e-9)
        cores: dict[str, float] = {}
        for tid, (comm, cpu) in self._last.items():
            if tid == self._thread.native_id:
                continue
            group = self._names.get(tid) or re.sub(r"\d+$", "", comm)
            cores[group] = cores.get(group, 0.0) + (cpu - self._first.get(tid, 0.0)) / wall
        self.cores = {k: round(v, 3) for k, v in sorted(cores.items(), key=lambda kv: -kv[1]) if v > 0.005}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
