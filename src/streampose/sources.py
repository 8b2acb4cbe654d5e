"""Video sources: specs in, lazily resolved `VideoRef`s out, video bytes in memory.

A spec is one of:

- `pexels:QUERY`   Pexels video search (needs PEXELS_API_KEY; see pexels.py for its terms notice)
- `commons:QUERY`  Wikimedia Commons video search (free licences, attribution recorded)
- `https://...`    one video by URL
- `@list.txt`      one spec per line; blank lines and lines starting with `#` are skipped, and
                   relative paths are relative to the list file
- a file or folder a video file, or every video file under a folder (sorted)

`refs()` turns specs into `VideoRef`s lazily: a search is paged only as far as it is consumed,
so `--max-videos 5` costs one API request. `fetch()` streams one ref's bytes into memory with a
size cap and never touches the disk. `expand`, `load` and `videos` keep the older files-and-URLs
interface for commands that read a fixed list.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from .errors import SourceError
from .http import USER_AGENT, Http, TransientSourceError, default_http

__all__ = [
    "USER_AGENT",
    "VIDEO_SUFFIXES",
    "Page",
    "RefStream",
    "SourceError",
    "SourceFilters",
    "Video",
    "VideoRef",
    "expand",
    "fetch",
    "load",
    "refs",
    "videos",
]

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".ogv", ".mpg", ".mpeg"}
SEARCH_PROVIDERS = ("pexels", "commons")
ORIENTATIONS = ("landscape", "portrait", "square")
TRANSIENT_REST_S = 300.0  # a looping search whose provider keeps failing tries again after this


@dataclass
class Video:
    """One video's bytes and where they came from (kept for provenance, never the bytes)."""

    id: str
    data: bytes
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class VideoRef:
    """A video not fetched yet: a stable `id` for dedupe and provenance, where to get it, and credits.

    `id` is `pexels:<id>`, `commons:File:<name>`, an absolute file path or a URL. `url` is the
    download URL or the file path. `meta` holds provider, page_url, licence, licence_url, author,
    title, width, height, duration... and never secrets.
    """

    id: str
    url: str
    meta: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def provider(self) -> str:
        return str(self.meta.get("provider", "url"))


@dataclass(frozen=True)
class SourceFilters:
    """What to ask search providers for. Local files and URLs are not filtered (nothing is known yet).

    `target_height` is the wanted length of the frame's shorter side (the height of a landscape
    video): providers pick the rendition that fits it, so no bandwidth goes on pixels the
    pipeline scales away.
    """

    orientation: str | None = None  # landscape | portrait | square
    min_duration: float | None = None  # seconds
    max_duration: float | None = None
    target_height: int = 480

    def __post_init__(self) -> None:
        if self.orientation is not None and self.orientation not in ORIENTATIONS:
            raise SourceError(f"orientation must be one of {', '.join(ORIENTATIONS)}, not {self.orientation!r}")
        lo, hi = self.min_duration, self.max_duration
        if (
            (lo is not None and lo < 0)
            or (hi is not None and hi < 0)
            or (lo is not None and hi is not None and lo > hi)
        ):
            raise SourceError(f"bad duration range: min {lo}, max {hi}")
        if self.target_height <= 0:
            raise SourceError(f"target height must be positive, not {self.target_height}")

    def accepts(self, width: float | None, height: float | None, duration: float | None) -> bool:
        """Whether a video passes the filters; unknown sizes or durations pass."""
        if self.orientation and width and height and orientation_of(width, height) != self.orientation:
            return False
        if duration is not None:
            if self.min_duration is not None and duration < self.min_duration:
                return False
            if self.max_duration is not None and duration > self.max_duration:
                return False
        return True


def orientation_of(width: float, height: float) -> str:
    """landscape, portrait or square (within 5 %)."""
    if abs(width - height) <= 0.05 * max(width, height):
        return "square"
    return "landscape" if width > height else "portrait"


def short_side(width: int, height: int) -> int:
    return min(width, height)


# -- search providers ------------------------------------------------------------------------------


@dataclass
class Page:
    """One page of search results, already filtered and with a rendition chosen per video."""

    refs: list[VideoRef]
    next: object | None  # the provider's token for the next page; None on the last page
    found: int  # results on this page before filtering
    total: int | None = None  # results the provider reports for the whole search


class Search(Protocol):
    """A provider's search for one query (see pexels.PexelsSearch, commons.CommonsSearch)."""

    spec: str  # e.g. "pexels:people walking", used in messages
    query: str

    def page(self, token: object | None) -> Page:
        """The first page (token None) or the page a previous `Page.next` points at."""
        ...


def _make_search(provider: str, query: str, http: Http, filters: SourceFilters) -> Search:
    if provider == "pexels":
        from .pexels import PexelsSearch

        return PexelsSearch(query, http=http, filters=filters)
    from .commons import CommonsSearch

    return CommonsSearch(query, http=http, filters=filters)


# -- spec parsing ----------------------------------------------------------------------------------


def _is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def _search_spec(spec: str) -> tuple[str, str] | None:
    """(provider, query) for `pexels:QUERY` / `commons:QUERY`, else None."""
    head, sep, query = spec.partition(":")
    if sep and head.lower() in SEARCH_PROVIDERS:
        return head.lower(), query.strip()
    return None


def _flatten(specs: Iterable[str], base: Path | None = None, lists: tuple[Path, ...] = ()) -> list[str]:
    """Specs with every `@list.txt` replaced by its lines (recursively, relative paths made absolute)."""
    out: list[str] = []
    for raw in specs:
        spec = raw.strip()
        if not spec:
            continue
        if spec.startswith("@"):
            path = Path(spec[1:]).expanduser()
            if base is not None and not path.is_absolute():
                path = base / path
            path = path.resolve()
            if path in lists:
                raise SourceError(f"{spec}: list files include each other ({' -> '.join(map(str, lists))})")
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise SourceError(f"{spec}: cannot read the list file ({getattr(e, 'strerror', None) or e})") from None
            kept = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
            out.extend(_flatten(kept, path.parent, (*lists, path)))
        elif base is not None and not _is_url(spec) and _search_spec(spec) is None and not Path(spec).is_absolute():
            out.append(str(base / Path(spec).expanduser()))
        else:
            out.append(spec)
    return out


def _local_specs(spec: str) -> list[str]:
    """A file or URL spec as itself, a folder as its video files; checked now so typos fail early."""
    if _is_url(spec):
        return [spec]
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise SourceError(f"{spec}: folder holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
        return [str(p) for p in files]
    if path.is_file():
        return [str(path)]
    raise SourceError(f"{spec}: no such file or folder, not an http(s) URL, and not a pexels:/commons: search")


def expand(specs: Iterable[str]) -> list[str]:
    """Turn specs into a list of single-video specs (files and URLs), checking local paths now.

    `@list.txt` files are read; searches cannot be listed up front and raise SourceError.
    """
    out: list[str] = []
    for spec in _flatten(specs):
        if _search_spec(spec) is not None:
            raise SourceError(f"{spec}: search sources (pexels:, commons:) are not supported by this command")
        out.extend(_local_specs(spec))
    return out


def local_ref(spec: str) -> VideoRef:
    """The ref of one file path or URL."""
    if _is_url(spec):
        return VideoRef(
            spec, spec, {"provider": "url", "url": spec, "page_url": spec, "title": spec.rsplit("/", 1)[-1]}
        )
    path = Path(spec).expanduser().resolve()
    return VideoRef(str(path), str(path), {"provider": "file", "path": str(path), "title": path.name})


# -- refs ------------------------------------------------------------------------------------------


@dataclass
class _Rest:
    """Yielded by a stream that has nothing now: ask again after `seconds`."""

    seconds: float
    reason: str = ""  # announced when the rest is long and other videos are flowing


@dataclass
class _Stream:
    name: str
    items: Iterator[VideoRef | _Rest]
    note: str = ""  # what it found, for the error when nothing at all comes out
    until: float | None = None  # monotonic time it rests until; None when ready


def _local_refs(items: list[VideoRef], loop: bool) -> Iterator[VideoRef]:
    while True:
        yield from items
        if not loop:
            return


def _search_refs(
    search: Search,
    stream: _Stream,
    *,
    loop: bool,
    seen: set[str],
    research_interval: float,
    keep: Callable[[VideoRef], bool] | None = None,
) -> Iterator[VideoRef | _Rest]:
    """Page a search, skipping seen ids; when looping, search again after the last page for new uploads."""
    passes = 0
    while True:
        token: object | None = None
        found = filtered = used = new = elsewhere = 0
        while True:
            try:
                page = search.page(token)
            except TransientSourceError as e:
                if not loop or (passes == 0 and new == 0):
                    raise  # failing from the start is news to the user, not something to wait out
                warnings.warn(f"{e}; trying {search.spec} again in {TRANSIENT_REST_S / 60:.0f} min", stacklevel=2)
                yield _Rest(TRANSIENT_REST_S)
                continue
            if passes == 0 and token is None and page.found == 0:
                raise SourceError(f"{search.spec}: no videos found for {search.query!r}")
            found += page.found
            filtered += page.found - len(page.refs)
            for ref in page.refs:
                if ref.id in seen:
                    used += 1
                    continue
                if keep is not None and not keep(ref):
                    elsewhere += 1  # another rank's share
                    continue
                seen.add(ref.id)
                new += 1
                yield ref
            token = page.next
            if token is None:
                break
        stream.note = (
            f"{search.spec}: {found} results, {used} already used, "
            f"{filtered} outside the filters or without a usable video file"
            + (f", {elsewhere} for other ranks" if elsewhere else "")
        )
        if not loop:
            return
        passes += 1
        yield _Rest(research_interval, f"{stream.note}; {new} were new this pass")


def _schedule(streams: list[_Stream], max_videos: int | None, http: Http) -> Iterator[VideoRef]:
    """Round-robin over the streams; wait only when every stream rests; fail if nothing ever comes."""
    live = list(streams)
    yielded = turn = 0
    while live and (max_videos is None or yielded < max_videos):
        now = time.monotonic()
        ready = [s for s in live if s.until is None or s.until <= now]
        if not ready:
            if yielded == 0:
                break  # every search is used up before the first video: say so instead of waiting
            first = min(live, key=lambda s: s.until or 0.0)
            http.wait((first.until or now) - now, "sources", "every source is used up for now")
            first.until = None  # woken on purpose: an injected test sleep does not move the clock
            continue
        stream = ready[turn % len(ready)]
        turn += 1
        try:
            item = next(stream.items)
        except StopIteration:
            live.remove(stream)
            continue
        if isinstance(item, _Rest):
            stream.until = time.monotonic() + item.seconds if item.seconds > 0 else None
            if item.reason and yielded and item.seconds >= 60:
                warnings.warn(f"{item.reason}; searching again in {item.seconds / 60:.0f} min", stacklevel=2)
            continue
        yielded += 1
        yield item
    if yielded == 0 and (max_videos is None or max_videos > 0):
        notes = "; ".join(s.note for s in streams if s.note)
        names = ", ".join(s.name for s in streams)
        raise SourceError(f"no videos to use from {names}" + (f" ({notes})" if notes else ""))


class RefStream(Iterator[VideoRef]):
    """A thread-safe iterator of refs: producer threads may share one and call next() freely.

    Waiting (rate limits, a looping search resting) happens inside next() while holding the lock,
    which is what the other threads would have to do anyway. An error ends the stream for all.
    To cut a long wait short at shutdown, give `refs()` an `Http` of your own and call its
    `stop()` as well as `close()` here.
    """

    def __init__(self, items: Iterator[VideoRef], http: Http) -> None:
        self._items = items
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.http = http

    def __iter__(self) -> RefStream:
        return self

    def __next__(self) -> VideoRef:
        with self._lock:
            if self._closed.is_set():
                raise StopIteration
            return next(self._items)

    def close(self) -> None:
        """End the stream for every consumer; does not wait for a consumer blocked in next()."""
        self._closed.set()
        if self._lock.acquire(blocking=False):
            try:
                self._items.close()  # type: ignore[attr-defined]
            finally:
                self._lock.release()


def refs(
    specs: Iterable[str],
    *,
    max_videos: int | None = None,
    loop: bool = False,
    filters: SourceFilters | None = None,
    skip_ids: Iterable[str] = frozenset(),
    http: Http | None = None,
    research_interval: float = 900.0,
    keep: Callable[[VideoRef], bool] | None = None,
) -> RefStream:
    """Resolve specs lazily into `VideoRef`s.

    Specs are checked now (missing files, a missing Pexels key, a bad list file raise SourceError
    here); searches run only as refs are consumed. Local files and URLs form one stream in spec
    order and each search is a stream of its own; streams take turns, so a search never starves
    the others. Search results whose id is in `skip_ids` (already used, e.g. from provenance) or
    was already yielded are skipped; local files and URLs are never skipped.

    `loop=False` goes through each stream once. `loop=True` cycles local files and URLs forever
    and, after a search's last page, searches again every `research_interval` seconds for new
    uploads. `max_videos` caps the refs handed out (not the fetches that succeed). An empty
    search raises SourceError on first use; so does a set of specs that yields nothing at all.
    `keep` selects this process's share of the videos (distributed training's shard).
    """
    filters = filters or SourceFilters()
    http = http or default_http()
    seen = set(skip_ids)
    local: list[VideoRef] = []
    streams: list[_Stream] = []
    for spec in _flatten(specs):
        search = _search_spec(spec)
        if search is None:
            local.extend(local_ref(s) for s in _local_specs(spec))
            continue
        provider, query = search
        stream = _Stream(spec, iter(()))
        stream.items = _search_refs(
            _make_search(provider, query, http, filters),
            stream,
            loop=loop,
            seen=seen,
            research_interval=research_interval,
            keep=keep,
        )
        streams.append(stream)
    if local and keep is not None:
        kept = [r for r in local if keep(r)]
        if not kept and not streams:
            raise SourceError(f"none of the {len(local)} local videos falls to this process's shard: give more videos")
        local = kept
    if local:
        streams.insert(0, _Stream("local files and URLs", _local_refs(local, loop)))
    if not streams:
        raise SourceError("no video sources given")
    return RefStream(_schedule(streams, max_videos, http), http)


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


def _download_policy(ref: VideoRef) -> tuple[dict[str, str], threading.Lock | None]:
    """Extra headers and a lock for one provider's downloads (Wikimedia asks for serial requests)."""
    if ref.provider == "commons":
        from . import commons

        return {"User-Agent": commons.user_agent()}, commons.REQUEST_LOCK
    return {}, None


def fetch(ref: VideoRef, *, max_bytes: int, client: Http | None = None) -> Video:
    """Bytes of one ref in memory. Any failure raises SourceError naming the video; callers skip it.

    Failures: over `max_bytes`, a non-video response (an HTML error page), an HTTP error, a
    truncated body or a timeout (both retried first), an unreadable file.
    """
    what = ref.id if ref.id == ref.url else f"{ref.id} ({ref.url})"
    if ref.provider == "file":
        data = _read_file(Path(ref.url), what, max_bytes)
    else:
        http = client or default_http()
        headers, lock = _download_policy(ref)
        check = _check_video_headers(what)
        if lock is None:
            data = http.download(ref.url, what=what, max_bytes=max_bytes, headers=headers, check=check)
        else:
            with lock:
                data = http.download(ref.url, what=what, max_bytes=max_bytes, headers=headers, check=check)
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


# -- the fixed-list interface ----------------------------------------------------------------------


def load(spec: str, *, max_bytes: int = 500_000_000) -> Video:
    """Bytes of one single-video spec (a file path or a URL)."""
    if _is_url(spec):
        return fetch(local_ref(spec), max_bytes=max_bytes)
    ref = local_ref(spec)
    return Video(ref.id, _read_file(Path(ref.url), spec, None), dict(ref.meta))


def videos(specs: Iterable[str], *, max_bytes: int = 500_000_000) -> Iterator[Video]:
    """Pipeline stage: specs -> videos in memory, one at a time so memory stays bounded."""
    for spec in expand(specs):
        yield load(spec, max_bytes=max_bytes)
