"""Keep MediaPipe's native start-up chatter (glog, absl, TFLite) off the user's stderr.

That chatter is written by C++ straight to file descriptor 2 while a graph is built and runs
its first frame, before any Python logging setting can reach it. So fd 2 is pointed at a pipe
for that moment (drained by a thread, so a long message cannot block the writer, and nothing
touches the disk); afterwards every line that is not such chatter (a real warning) is written
back to stderr.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

CHATTER = re.compile(
    r"^(?:[WI]\d{4} |INFO: Created TensorFlow Lite|WARNING: All log messages before absl::InitializeLog"
    r"|Created TensorFlow Lite)"
)


_LOCK = threading.Lock()  # fd 2 is process-wide: one redirection at a time (producer threads)


@contextmanager
def native_chatter_filtered() -> Iterator[None]:
    with _LOCK:
        yield from _filtered()


def _filtered() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b"")), daemon=True)
    drain.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the drain sees end of file
        os.close(saved)
        drain.join()
        os.close(read_end)
        text = b"".join(chunks).decode(errors="replace")
        kept = [line for line in text.splitlines() if not CHATTER.match(line)]
        if kept:
            print("\n".join(kept), file=sys.stderr, flush=True)
