"""The no-raw-video-on-disk promise, checkable: an audit of every file the process writes.

`WriteAudit` installs a `sys.addaudithook` hook that records each file opened for writing or
created (`open` with a write mode or O_CREAT/O_WRONLY/O_RDWR flags, and os.mkdir, rename,
replace, symlink, link, truncate) outside the allowed folders. Audit hooks cannot be removed,
so the audit is meant for a whole process: `streampose --audit-writes ...` or a test's
subprocess. Native code that writes without Python (FFmpeg, MediaPipe) is invisible to the
hook; the test also checks that the process's temporary folder stays empty.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_CREATING_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.symlink", "os.link", "os.truncate", "shutil.copyfile"}


class WriteAudit:
    def __init__(self, allowed: list[str | Path]) -> None:
        self.allowed = [os.path.realpath(p) for p in allowed]
        self.violations: list[tuple[str, str]] = []
        self.writes: list[str] = []
        self.active = False
        sys.addaudithook(self._hook)

    def _allowed(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == a or real.startswith(a + os.sep) for a in self.allowed) or real == os.devnull

    def _hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        paths: list[object] = []
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if writing:
                paths = [path]
        elif event in _CREATING_EVENTS:
            paths = [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
        for p in paths:
            if isinstance(p, int):  # an already-open file descriptor
                continue
            path = os.fsdecode(p)
            self.writes.append(path)
            if not self._allowed(path):
                self.violations.append((event, path))

    def start(self) -> WriteAudit:
        self.active = True
        return self

    def stop(self) -> list[tuple[str, str]]:
        self.active = False
        return self.violations
