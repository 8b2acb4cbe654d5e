"""Video sources: specifications in, video bytes in memory out.

A source spec is a local file, a folder (its video files, sorted) or an http(s) URL of one
video. Each yields `Video` objects whose bytes live only in memory: a URL is streamed into a
bytearray with a size cap and never touches the disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from . import __version__
from .errors import SourceError

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".ogv", ".mpg", ".mpeg"}
USER_AGENT = f"stream-pose/{__version__} (3D pose research tool; https://github.com/stream-pose)"


@dataclass
class Video:
    """One video's bytes and where they came from (kept for provenance, never the bytes)."""

    id: str
    data: bytes
    meta: dict = field(default_factory=dict)


def _is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def expand(specs: Iterable[str]) -> list[str]:
    """Turn specs into a list of single-video specs (files and URLs), checking local paths now."""
    out: list[str] = []
    for spec in specs:
        if _is_url(spec):
            out.append(spec)
            continue
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not files:
                raise SourceError(f"{spec}: folder holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
            out.extend(str(p) for p in files)
        elif path.is_file():
            out.append(str(path))
        else:
            raise SourceError(f"{spec}: no such file or folder, and not an http(s) URL")
    return out


def fetch_url(url: str, *, max_bytes: int, timeout: float = 30.0, client: httpx.Client | None = None) -> bytes:
    """Stream one URL into memory, refusing anything over `max_bytes`."""
    own = client is None
    client = client or httpx.Client(headers={"User-Agent": USER_AGENT}, follow_redirects=True)
    try:
        with client.stream("GET", url, timeout=httpx.Timeout(timeout, connect=10.0)) as response:
            if response.status_code >= 400:
                raise SourceError(f"{url}: HTTP {response.status_code}")
            declared = int(response.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise SourceError(f"{url}: {declared / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB cap")
            buf = bytearray()
            for chunk in response.iter_bytes():
                buf += chunk
                if len(buf) > max_bytes:
                    raise SourceError(f"{url}: more than the {max_bytes / 1e6:.0f} MB cap")
            if declared and len(buf) < declared:
                raise SourceError(f"{url}: body truncated ({len(buf)} of {declared} bytes)")
            return bytes(buf)
    except httpx.HTTPError as e:
        raise SourceError(f"{url}: {type(e).__name__}: {e}") from None
    finally:
        if own:
            client.close()


def load(spec: str, *, max_bytes: int = 500_000_000) -> Video:
    """Bytes of one single-video spec (a file path or a URL)."""
    if _is_url(spec):
        return Video(spec, fetch_url(spec, max_bytes=max_bytes), {"provider": "url", "url": spec})
    path = Path(spec)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SourceError(f"{spec}: {e.strerror}") from None
    return Video(str(path.resolve()), data, {"provider": "file", "path": str(path.resolve())})


def videos(specs: Iterable[str], *, max_bytes: int = 500_000_000) -> Iterator[Video]:
    """Pipeline stage: specs -> videos in memory, one at a time so memory stays bounded."""
    for spec in expand(specs):
        yield load(spec, max_bytes=max_bytes)
