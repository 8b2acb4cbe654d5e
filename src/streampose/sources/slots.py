"""Node-wide slots: at most N holders at once across every thread and process of one machine.

Wikimedia asks for requests in series and at most two concurrent downloads per client. A
`threading.Lock` covers one process only, while `torchrun` starts one process per GPU, so the
limit is kept with `flock` on N lock files in a per-user folder under the system temp dir
(node-local, unlike a home folder on NFS), or `STREAMPOSE_LOCK_DIR`. `flock` locks belong to an
open file, so threads of one process exclude each other too, and the kernel frees a dead
process's slot at once: no stale lock survives a `kill -9`.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POLL_S = 0.05  # how often a waiting holder tries the slots again


def lock_dir() -> Path:
    """Where slot files live: `STREAMPOSE_LOCK_DIR`, else a per-user folder in the temp dir."""
    configured = os.environ.get("STREAMPOSE_LOCK_DIR")
    folder = Path(configured) if configured else Path(tempfile.gettempdir()) / f"streampose-locks-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


class FileSlots:
    """`with FileSlots("commons-download", 2).hold(): ...` runs with one of two node-wide slots."""

    def __init__(self, name: str, slots: int, folder: Path | None = None) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        self.name = name
        self.slots = slots
        self.folder = folder  # None: lock_dir(), read at each use so the environment can change it

    def __repr__(self) -> str:
        return f"FileSlots({self.name!r}, {self.slots})"

    @contextmanager
    def hold(self) -> Iterator[int]:
        """Wait for a free slot, hold it for the block, yield its number."""
        folder = self.folder or lock_dir()
        paths = [folder / f"{self.name}.{i}.lock" for i in range(self.slots)]
        while True:
            for number, path in enumerate(paths):
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield number
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            time.sleep(POLL_S)
