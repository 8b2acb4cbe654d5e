"""One training run per run folder: an exclusive lock on `OUT/.lock` that holds the owner's PID.

`fcntl.flock` belongs to the open file, so the kernel drops it when the owner exits in any way
(Ctrl-C, a crash, `kill -9`): a lock left by a dead run is never in the way, and there is no
stale file to clean up by hand. Under torchrun only rank 0 writes the folder, so only it locks.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from streampose.errors import StreamPoseError
from streampose.files import reported


class RunLock:
    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / ".lock"
        self._file = None

    def acquire(self) -> RunLock:
        """Take the lock now, or raise StreamPoseError naming the process that holds it."""
        with reported(self.path.parent, "cannot use as a run folder"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = self.path.open("a+")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            owner = file.read().strip() or "unknown"
            file.close()
            raise StreamPoseError(
                f"{self.path.parent} is in use by another training run (PID {owner}): "
                "wait for it to finish, stop it, or give another --out"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
