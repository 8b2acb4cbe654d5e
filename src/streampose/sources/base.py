"""What every source shares: a video in memory, a reference to one not fetched yet, search filters,
and the protocol a search provider implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from streampose.errors import SourceError

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
