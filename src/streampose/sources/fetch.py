"""Fetching: one ref's bytes into memory, with a size cap, never touching the disk."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import httpx

from streampose.errors import SourceError
from streampose.sources.base import PROVIDERS, Video, VideoRef, provider
from streampose.sources.http import Http, default_http

# -- fetching --------------------------------------------------------------------------------------

_NOT_VIDEO_TYPES = ("text/", "image/", "application/json", "application/xml", "application/xhtml")
_NOT_VIDEO_STARTS = (b"<", b"{")  # HTML, XML, JSON: an error or login page; no video container starts so


def _check_video_headers(what: str) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind.startswith(_NOT_VIDEO_TYPES) or kind.endswith(("+json", "+xml", "/html")):
            raise SourceError(f"{what}: the server sent {kind}, not a video (an error or login page?)")

    return check


def _check_video_bytes(data: bytes, what: str) -> None:
    head = data[:256].lstrip()
    if not head:
        raise SourceError(f"{what}: the server sent an empty body, not a video")
    if head.startswith(_NOT_VIDEO_STARTS):
        raise SourceError(f"{what}: the server sent a text page (HTML/JSON), not a video")


def fetch(ref: VideoRef, *, max_bytes: int, client: Http | None = None) -> Video:
    """Bytes of one ref in memory. Any failure raises SourceError naming the video; callers skip it.

    Failures: over `max_bytes`, a non-video response (an HTML error page), an HTTP error, a
    truncated body or a timeout (both retried first), an unreadable file. A provider's own
    download headers and concurrency limit (see base.Provider) apply to its refs.
    """
    what = ref.id if ref.id == ref.url else f"{ref.id} ({ref.url})"
    if ref.provider == "file":
        data = _read_file(Path(ref.url), what, max_bytes)
    else:
        http = client or default_http()
        source = provider(ref.provider) if ref.provider in PROVIDERS else None
        headers = source.download_headers() if source is not None else {}
        with source.download_slot() if source is not None else nullcontext():
            data = http.download(
                ref.url, what=what, max_bytes=max_bytes, headers=headers, check=_check_video_headers(what)
            )
        _check_video_bytes(data, what)
    return Video(ref.id, data, {**ref.meta, "bytes": len(data)})


def _read_file(path: Path, what: str, max_bytes: int | None) -> bytes:
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise SourceError(f"{what}: {size / 1e6:.1f} MB is over the {max_bytes / 1e6:.1f} MB limit")
        return path.read_bytes()
    except OSError as e:
        raise SourceError(f"{what}: {e.strerror}") from None
