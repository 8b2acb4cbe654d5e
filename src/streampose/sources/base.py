"""What every source shares: a video in memory, a reference to one not fetched yet, search filters,
and the protocol a search provider implements, with the registry that finds providers by name."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from streampose.errors import SourceError

if TYPE_CHECKING:
    from streampose.sources.http import Http

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".ogv", ".mpg", ".mpeg"}
ORIENTATIONS = ("landscape", "portrait", "square")
MAX_VIDEO_MB = 500.0  # the default cap on one video's bytes in memory, in every command


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
    max_bytes: int | None = None  # skip results whose chosen file is known to be larger

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
    more: bool  # whether the provider has a page after this one
    found: int  # results on this page before filtering
    total: int | None = None  # results the provider reports for the whole search


class Search(Protocol):
    """A provider's search for one query (see pexels.PexelsSearch, commons.CommonsSearch).

    Pages are addressed by index (0 is the first), so a run can cache them by index and the
    ranks of a distributed run can each take their own pages without paging the others'.
    """

    provider: str  # its provider's name in PROVIDERS
    spec: str  # e.g. "pexels:people walking", used in messages
    query: str

    def page(self, index: int) -> Page:
        """Page `index` of the results; an index past the end gives an empty page."""
        ...


class Provider(Protocol):
    """What a search provider declares: how to search, and how its files may be downloaded."""

    name: str
    search_interval: float  # the least seconds between two of its search requests in one process

    def search(self, query: str, *, http: Http, filters: SourceFilters) -> Search:
        """A search, checked now (a missing key or contact raises SourceError before any request)."""
        ...

    def download_headers(self) -> dict[str, str]:
        """Extra headers for downloading its files (never the API key)."""
        ...

    def download_slot(self) -> AbstractContextManager[object]:
        """Held around each download: the provider's limit on concurrent downloads."""
        ...


# name -> "module:attribute" of its `Provider`, imported on first use: the core names providers
# but never imports one, and providers import only this module and http.
PROVIDERS = {
    "pexels": "streampose.sources.pexels:PROVIDER",
    "commons": "streampose.sources.commons:PROVIDER",
}
_loaded: dict[str, Provider] = {}
_loaded_lock = threading.Lock()


def provider(name: str) -> Provider:
    """The registered provider called `name` (local files and plain URLs have none: see PROVIDERS)."""
    if name not in PROVIDERS:
        raise SourceError(f"no video provider called {name!r}; known: {', '.join(PROVIDERS)}")
    with _loaded_lock:
        if name not in _loaded:
            module, attribute = PROVIDERS[name].split(":")
            _loaded[name] = getattr(importlib.import_module(module), attribute)
        return _loaded[name]
