"""Source specs in, lazily resolved `VideoRef`s out.

A spec is one of:

- `pexels:QUERY`   Pexels video search (needs PEXELS_API_KEY; see pexels.py for its terms notice)
- `commons:QUERY`  Wikimedia Commons video search (needs STREAMPOSE_CONTACT; free licences, attribution recorded)
- `https://...`    one video by URL
- `@list.txt`      one spec per line; blank lines and lines starting with `#` are skipped, and
                   relative paths are relative to the list file
- a file or folder a video file, or every video file under a folder (sorted)

`refs()` turns specs into `VideoRef`s lazily: a search is paged only as far as it is consumed,
so `--max-videos 5` costs one API request. Pages come through the run's cache (pages.py), and
the ranks of a distributed run split a search's pages instead of each paging all of them.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from streampose.errors import SourceError
from streampose.files import read_limited
from streampose.sources.base import PROVIDERS, VIDEO_SUFFIXES, Search, SourceFilters, VideoRef, provider
from streampose.sources.http import Http, TransientSourceError, default_http
from streampose.sources.pages import PAGES

MAX_LIST_BYTES = 16 << 20  # some 200,000 URLs; `@/dev/zero` fails at once
TRANSIENT_REST_S = 300.0  # a looping search whose provider keeps failing tries again after this


# -- spec parsing ----------------------------------------------------------------------------------


def _is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def _search_spec(spec: str) -> tuple[str, str] | None:
    """(provider, query) for `pexels:QUERY` / `commons:QUERY`, else None."""
    head, sep, query = spec.partition(":")
    if sep and head.lower() in PROVIDERS:
        return head.lower(), query.strip()
    return None


def search_providers(specs: Iterable[str]) -> set[str]:
    """The providers the specs search (list files read), e.g. to check their terms before a run."""
    return {found[0] for spec in _flatten(specs) if (found := _search_spec(spec)) is not None}


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
                lines = read_limited(path, MAX_LIST_BYTES, "list file", SourceError).decode("utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise SourceError(f"{spec}: cannot read the list file ({e})") from None
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


def local_files(specs: Iterable[str]) -> list[str] | None:
    """The fixed list of local video files `specs` name (folders and @lists expanded), or None when
    any spec is a search or a URL (their videos are not known before they are fetched)."""
    files = []
    for spec in _flatten(specs):
        if _search_spec(spec) is not None or _is_url(spec):
            return None
        files += _local_specs(spec)
    return files


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


def _next_index(index: int, shard: tuple[int, int] | None) -> int:
    """The page after `index` for this rank: page 0 is every rank's (its videos split by `keep`,
    so no rank goes without on a small search); later pages go to ranks in turn, whole."""
    rank, world = shard or (0, 1)
    if world <= 1:
        return index + 1
    return rank + 1 if index == 0 else index + world


def _search_refs(
    search: Search,
    stream: _Stream,
    *,
    loop: bool,
    seen: set[str],
    research_interval: float,
    filters: SourceFilters,
    http: Http,
    keep: Callable[[VideoRef], bool] | None = None,
    shard: tuple[int, int] | None = None,
) -> Iterator[VideoRef | _Rest]:
    """Page a search, skipping seen ids; when looping, search again after the last page for new uploads."""
    passes = 0
    while True:
        index: int | None = 0
        found = filtered = used = new = elsewhere = 0
        while index is not None:
            try:
                page = PAGES.get(search, index, filters=filters, http=http)
            except TransientSourceError as e:
                if not loop or (passes == 0 and new == 0):
                    raise  # failing from the start is news to the user, not something to wait out
                warnings.warn(f"{e}; trying {search.spec} again in {TRANSIENT_REST_S / 60:.0f} min", stacklevel=2)
                yield _Rest(TRANSIENT_REST_S)
                continue
            if passes == 0 and index == 0 and page.found == 0:
                raise SourceError(f"{search.spec}: no videos found for {search.query!r}")
            found += page.found
            filtered += page.found - len(page.refs)
            split = keep if shard is None or index == 0 else None  # a later page of a shard is all ours
            for ref in page.refs:
                if ref.id in seen:
                    used += 1
                    continue
                if split is not None and not split(ref):
                    elsewhere += 1  # another rank's share
                    continue
                seen.add(ref.id)
                new += 1
                yield ref
            index = _next_index(index, shard) if page.more and page.found else None
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
    shard: tuple[int, int] | None = None,
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
    `keep` selects this process's share of the videos (distributed training's shard). With
    `shard=(rank, world)` a search is split by pages instead: every rank reads the first page
    (keeping its `keep` share of it) and the later pages go to ranks in turn, so no page is
    asked for by every rank; `keep` then applies to local files and the first page only.
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
        name, query = search
        stream = _Stream(spec, iter(()))
        stream.items = _search_refs(
            provider(name).search(query, http=http, filters=filters),
            stream,
            loop=loop,
            seen=seen,
            research_interval=research_interval,
            filters=filters,
            http=http,
            keep=keep,
            shard=shard if shard is not None and shard[1] > 1 else None,
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
