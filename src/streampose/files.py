"""Every file stream-pose persists (checkpoints, labels, exports, configs, reports) is written here.

Three promises, for every writer:
- a crash or Ctrl-C mid-write never leaves a half-written file where a good one was (`atomic_write`:
  a temporary file beside the target, fsynced, then renamed over it);
- only a regular file is ever replaced: an output path that is a symlink, a folder, a device or a
  FIFO is refused (`--poses /dev/stdout` must not replace /dev/stdout; `-` means stdout where a
  stream makes sense);
- an OSError (read-only folder, full disk, a file where a folder must be) is one `StreamPoseError`
  naming the path and the reason, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from streampose.errors import StreamPoseError

STDOUT = "-"  # as an output path: write to stdout (where the command streams)

# The process's umask, read once at import (reading it means setting it, which is not thread-safe).
_UMASK = os.umask(0o022)
os.umask(_UMASK)

_KINDS = {
    stat.S_IFLNK: "symlink",
    stat.S_IFDIR: "folder",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
}


@contextlib.contextmanager
def reported(path: str | Path, doing: str = "cannot write") -> Iterator[None]:
    """An OSError in the block as one line naming `path` and the reason (ENOSPC, EROFS, EISDIR, ...)."""
    try:
        yield
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        if e.filename is not None and str(path).startswith(str(e.filename)) and str(e.filename) != str(path):
            reason += f": {e.filename}"  # a folder above `path` (not our temporary file beside it)
        raise StreamPoseError(f"{path}: {doing} ({reason})") from None


def output_path(path: str | Path) -> Path:
    """`path`, checked as an output: nothing there or a regular file (never a symlink, a folder,
    a device), its folder made. The check and the later write are not one step: this guards against
    mistakes and crafted paths, not against a process racing to swap the path."""
    path = Path(path)
    with reported(path):
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "special file")
            raise StreamPoseError(f"{path}: is a {kind}; an output only ever replaces a regular file")
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def stdout_stream() -> Iterator[IO[bytes]]:
    """stdout, for an output named `-`. A reader that goes away (`| head`) ends the command quietly
    with exit status 141, as SIGPIPE ends other tools, instead of a BrokenPipeError traceback."""
    try:
        yield sys.stdout.buffer
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        raise SystemExit(141) from None


def open_output(path: str | Path) -> IO[str]:
    """A text file opened for writing in place, for outputs that grow as a run goes (labels, whose
    complete records a kill must leave readable); checked like every output."""
    path = output_path(path)
    with reported(path):
        return path.open("w", encoding="utf-8")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write `path` through `write(file)`: all of it, or (on any error) nothing, the old file kept."""
    path = output_path(path)
    with reported(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would create it: mkstemp's 0600 hides exports from others
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_torch_save(obj: object, path: str | Path) -> Path:
    """`torch.save` through `atomic_write`. Serialised in memory first: torch's zip writer turns a
    failed write (a full disk) into a RuntimeError from C++, a plain write keeps it an OSError."""
    import torch  # here, not at the top: `train` reads its config and takes its lock before torch loads

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def read_limited(path: str | Path, limit: int, what: str, error: type[StreamPoseError] = StreamPoseError) -> bytes:
    """The bytes of a small input file (a config, a list of sources), refused past `limit` bytes
    without reading more: `/dev/zero` or a huge file fails at once instead of filling memory."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if len(data) > limit:
        raise error(f"{path}: too large for a {what} (over {limit // 1024} KiB)")
    return data
