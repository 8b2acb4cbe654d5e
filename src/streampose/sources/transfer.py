"""Reading one HTTP body: a byte cap, a minimum rate, and a stop that cuts it short from any thread.

A per-read timeout never fires on a server that trickles a byte every few seconds, so each
transfer keeps to a schedule: `GRACE_S` seconds in, it must have delivered its bytes at
`MIN_RATE` since then. A download of the whole size cap thus has a total deadline of `GRACE_S` +
cap / `MIN_RATE`, and a trickling server is given up about `GRACE_S` in, with a SourceError
naming it. `Transfers.stop()` shuts the sockets of transfers in flight (`shutdown`, which wakes a
thread blocked reading one; `close` would not), so Ctrl-C never waits for a slow read.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx

from streampose.errors import SourceError

MIN_RATE = 100_000  # bytes/s (0.8 Mbit/s) on average: any real host is many times faster
GRACE_S = 30.0  # seconds before a transfer is held to MIN_RATE: connecting, the first bytes


def declared_length(response: httpx.Response, what: str, max_bytes: int) -> int:
    """The Content-Length the server declares (0: none or unreadable); over `max_bytes` is refused
    before a byte of the body is read."""
    try:
        declared = int(response.headers.get("content-length") or 0)
    except ValueError:
        return 0
    if declared > max_bytes:
        raise SourceError(f"{what}: {declared / 1e6:.1f} MB is over the {max_bytes / 1e6:.1f} MB limit")
    return declared


class Transfers:
    """One client's transfers: each read under a cap and on schedule; `stop()` ends them all, and
    `stopped` (an Event) wakes the client's waits."""

    def __init__(self, min_rate: float = MIN_RATE, grace: float = GRACE_S) -> None:
        self.min_rate, self.grace = min_rate, grace
        self.stopped = threading.Event()
        self._sockets: set[socket.socket] = set()  # of transfers in flight
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def raise_if_stopped(self, what: str) -> None:
        if self.stopped.is_set():
            raise SourceError(f"{what}: stopped")

    def read(self, response: httpx.Response, what: str, max_bytes: int, started: float, into: bytearray) -> None:
        """Read the body into `into` (what came is there when this raises): at most `max_bytes`, on
        the schedule of a transfer `started` then (`time.monotonic()`), unless stopped."""
        declared_length(response, what, max_bytes)
        with self._watching(response, what):
            for chunk in response.iter_bytes():
                into += chunk
                if len(into) > max_bytes:
                    raise SourceError(f"{what}: more than the {max_bytes / 1e6:.1f} MB limit")
                if len(into) < (time.monotonic() - started - self.grace) * self.min_rate:
                    raise SourceError(
                        f"{what}: the server sends slower than {self.min_rate / 1e3:.0f} kB/s "
                        f"({len(into)} bytes in {time.monotonic() - started:.0f} s); given up"
                    )
        self.raise_if_stopped(what)  # a stop ends a body of undeclared length as if it were complete

    @contextlib.contextmanager
    def _watching(self, response: httpx.Response, what: str) -> Iterator[None]:
        """Keep the response's socket where `stop()` shuts it while the body is read."""
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            yield
            return
        with self._lock:
            self._sockets.add(sock)
        try:
            self.raise_if_stopped(what)  # a stop() just before the add did not see this socket
            yield
        finally:
            with self._lock:
                self._sockets.discard(sock)
