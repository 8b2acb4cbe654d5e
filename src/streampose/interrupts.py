"""Ctrl-C and SIGTERM: one way to stop, wherever the run is waiting.

SIGTERM (what Slurm, Kubernetes and `timeout` send before they kill) is handled like Ctrl-C: it
raises KeyboardInterrupt in the main thread, so every command keeps what it made (labels,
`last.pt`) exactly as it does for Ctrl-C. Threads that wait on the network for the main thread (a
Retry-After, a backoff, a slow read) are woken at once, so the main thread's clean-up never waits
for them. The exit status is 128 + the signal's number, the shell's convention: 130 for Ctrl-C,
143 for SIGTERM, so a scheduler's log tells the two apart.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from streampose.sources.http import stop_all

_received = signal.SIGINT


def handle_signals() -> Callable[[], None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread and stop every HTTP wait; the
    function returned puts the previous handlers back (`cli.main` runs inside tests too)."""
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def _interrupt(signum: int, frame: object) -> None:
    global _received
    _received = signal.Signals(signum)
    # From a thread: the handler runs in the main thread, which may hold a lock that stopping takes.
    threading.Thread(target=stop_all, name="interrupted", daemon=True).start()
    raise KeyboardInterrupt


def exit_status() -> int:
    """The status of a command a signal stopped: 128 + its number (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + _received
