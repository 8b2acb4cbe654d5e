"""Pexels video search (https://www.pexels.com/api/documentation).

The key goes in a bare `Authorization: <key>` header, read from PEXELS_API_KEY or a `.env` file
in the working folder. It is held in a `_Secret` so no repr, message, log line or ref meta can
show it, and it is sent only to the API, never to the video CDN.

Rate limits are two. `X-Ratelimit-Limit/Remaining/Reset` on successful answers are the
*monthly* quota (20,000 by default; Reset is the month's rollover): they drive a budget that
warns when it runs low and stops the search with a SourceError when it is spent (unless the
rollover is within the hour). The hourly limit (200) shows only as a 429 without those headers:
it is waited out with capped exponential backoff (1 s doubling to 1 h, or
`STREAMPOSE_RATE_BACKOFF_CAP` seconds) and the search goes on. Search pages ask for 80 results
(the maximum) and are cached for the run (refs.py), as Pexels asks.

Pexels' terms forbid training or evaluating ML models on its content without Pexels'
permission: choosing the source prints that once per process, and `train`/`eval` refuse a
pexels: source without `--pexels-permission` (`require_pexels_permission`).
"""

from __future__ import annotations

import datetime
import os
import random
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from contextlib import nullcontext
from urllib.parse import urlsplit

import httpx

from streampose.errors import SourceError
from streampose.sources.base import Page, SourceFilters, VideoRef, short_side
from streampose.sources.http import Http, setting
from streampose.sources.refs import search_providers

API_URL = "https://api.pexels.com"
PER_PAGE = 80
LICENCE = "Pexels License"
LICENCE_URL = "https://www.pexels.com/license/"
KEY_HELP = (
    "set PEXELS_API_KEY in the environment or put a line PEXELS_API_KEY=<your key> in a .env file in the "
    "working folder (free keys: https://www.pexels.com/api/)"
)
TERM = (
    "Pexels' terms forbid using Pexels videos to train, fine-tune or evaluate machine-learning models "
    "without Pexels' explicit permission (https://www.pexels.com/terms-of-service/)"
)
TERMS_NOTICE = f"note: {TERM}; get it before training on pexels: sources"
HOURLY_BACKOFF_S = (1.0, 3600.0)  # first wait after an hourly 429, doubling to the cap (the hour resets by then)
LOW_QUOTA = 0.05  # warn when less than this share of the monthly quota is left
RESET_WAIT_S = 3600.0  # a spent quota whose rollover is nearer than this is waited for

_notice_lock = threading.Lock()
_notice_shown = False


def terms_notice() -> None:
    """Print the terms notice to stderr, once per process."""
    global _notice_shown
    with _notice_lock:
        if not _notice_shown:
            print(TERMS_NOTICE, file=sys.stderr, flush=True)
            _notice_shown = True


def require_pexels_permission(specs: Iterable[str], granted: bool) -> None:
    """Refuse to train or evaluate on pexels: sources (list files included) unless the user affirms
    having Pexels' permission (`--pexels-permission`)."""
    if not granted and "pexels" in search_providers(specs):
        raise SourceError(
            f"{TERM}. Give --pexels-permission to affirm that you have it, or use other sources "
            "(commons: media are freely licensed)"
        )


class _Secret:
    """A string that never shows itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


def _header_int(response: httpx.Response, name: str) -> int | None:
    try:
        return int(float(response.headers[name]))
    except (KeyError, ValueError):
        return None


def _when(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


class Quota:
    """Pexels' monthly budget and hourly backoff, shared by every search in the process (one key)."""

    def __init__(self, clock=time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.clear()

    def clear(self) -> None:
        """Forget what the server said (a new process, or a test starting afresh)."""
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset: float | None = None  # UNIX time of the month's rollover
        self.hourly_hits = 0  # 429s in a row
        self.warned = False

    def before_request(self) -> float:
        with self._lock:
            if self.remaining is None or self.remaining > 0 or self.reset is None:
                return 0.0
            wait = self.reset - self._clock()
            if wait <= 0:
                self.remaining = None  # a new month: the next response tells the new count
                return 0.0
            if wait > RESET_WAIT_S:
                raise SourceError(
                    f"Pexels' monthly quota of {self.limit or '?'} requests is used up; it renews on "
                    f"{_when(self.reset)}, in {wait / 86400:.1f} days (commons: sources need no quota)"
                )
            return wait + 1.0  # a second's margin for clock skew

    def after_response(self, response: httpx.Response) -> tuple[float, str] | None:
        with self._lock:
            if response.status_code == 429:  # it carries no rate headers: the hourly limit
                return self._hourly_wait(), "HTTP 429 Too Many Requests (the hourly limit)"
            remaining = _header_int(response, "x-ratelimit-remaining")
            if response.is_success:
                self.hourly_hits = 0
                if remaining is not None:
                    self.remaining = remaining
                    self.limit = _header_int(response, "x-ratelimit-limit") or self.limit
                    reset = _header_int(response, "x-ratelimit-reset")
                    self.reset = float(reset) if reset is not None else self.reset
                    self._warn_if_low()
            return None

    def _hourly_wait(self) -> float:
        first, cap = HOURLY_BACKOFF_S
        cap = float(os.environ.get("STREAMPOSE_RATE_BACKOFF_CAP") or cap)
        wait = min(cap, first * 2**self.hourly_hits)
        self.hourly_hits += 1
        return wait * random.uniform(0.9, 1.0)  # a little jitter, so processes sharing a key spread out

    def _warn_if_low(self) -> None:
        if self.warned or not self.limit or self.remaining is None or self.remaining >= LOW_QUOTA * self.limit:
            return
        self.warned = True
        renews = f"; it renews on {_when(self.reset)}" if self.reset else ""
        warnings.warn(
            f"Pexels' monthly quota is running low: {self.remaining} of {self.limit} requests left{renews}",
            stacklevel=4,
        )


QUOTA = Quota()


def _positive(value: object) -> bool:
    """A usable size or rate: the API sends null (HLS), integers, and floats (`fps: 29.97`)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def choose_file(files: list[dict], target: int) -> dict | None:
    """The smallest MP4 whose shorter side reaches `target`, else the largest.

    Skipped: HLS playlists (`quality: "hls"` or an `.m3u8` link, whose sizes are null) and files
    without a size. `quality` may be null on a real MP4, so it is not required.
    """
    usable = [
        f
        for f in files
        if isinstance(f, dict)
        and f.get("link")
        and str(f.get("file_type") or "").lower() == "video/mp4"
        and f.get("quality") != "hls"
        and not urlsplit(str(f["link"])).path.lower().endswith(".m3u8")
        and _positive(f.get("width"))
        and _positive(f.get("height"))
    ]
    if not usable:
        return None
    big_enough = [f for f in usable if short_side(f["width"], f["height"]) >= target]
    if big_enough:
        return min(big_enough, key=lambda f: (short_side(f["width"], f["height"]), f["width"] * f["height"]))
    return max(usable, key=lambda f: (short_side(f["width"], f["height"]), f["width"] * f["height"]))


def _title(page_url: str | None, video_id: object) -> str:
    """Pexels has no title field; the page URL's slug (`/video/a-man-running-1234/`) reads as one."""
    slug = urlsplit(page_url or "").path.rstrip("/").rsplit("/", 1)[-1]
    words = re.sub(r"-?\d+$", "", slug).replace("-", " ").strip()
    return words or f"Pexels video {video_id}"


class PexelsSearch:
    """One Pexels video search, paged on demand (see sources.Search)."""

    provider = "pexels"

    def __init__(
        self,
        query: str,
        *,
        http: Http,
        filters: SourceFilters | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
    ) -> None:
        if not query:
            raise SourceError("pexels: needs a search query, e.g. pexels:people walking")
        key = api_key or setting("PEXELS_API_KEY")
        if not key:
            raise SourceError(f"pexels:{query} needs a Pexels API key: {KEY_HELP}")
        self.query = query
        self.spec = f"pexels:{query}"
        self.http = http
        self.filters = filters or SourceFilters()
        self.base_url = (base_url or setting("PEXELS_API_URL") or API_URL).rstrip("/")
        self._key = _Secret(key)
        terms_notice()

    def __repr__(self) -> str:
        return f"PexelsSearch({self.query!r}, base_url={self.base_url!r})"

    def page(self, index: int) -> Page:
        number = index + 1  # Pexels counts pages from 1
        params: dict[str, str | int] = {"query": self.query, "per_page": PER_PAGE, "page": number}
        if self.filters.orientation:
            params["orientation"] = self.filters.orientation
        what = f"Pexels search {self.query!r} page {number}"
        # Pages are asked for by number from our own base URL, so the key goes to no other address.
        response = self.http.request(
            "GET",
            f"{self.base_url}/videos/search",
            params=params,
            headers={"Authorization": self._key.reveal()},
            what=what,
            hook=QUOTA,
        )
        if response.status_code in (401, 403):
            agent = self.http.client.headers.get("User-Agent", "?")
            raise SourceError(
                f"{what}: Pexels refused the request (HTTP {response.status_code}): the API key is wrong or revoked "
                f"(check PEXELS_API_KEY), or Pexels blocks this client's User-Agent ({agent!r})"
            )
        if response.status_code >= 400:
            raise SourceError(f"{what}: HTTP {response.status_code} {response.reason_phrase}")
        try:
            data = response.json()
            videos = list(data.get("videos") or [])
        except (ValueError, AttributeError):
            raise SourceError(f"{what}: the answer is not the JSON Pexels sends (wrong PEXELS_API_URL?)") from None
        found = [ref for v in videos if (ref := self._ref(v)) is not None]
        # An empty page deep into the results ends the search even if `next_page` says otherwise.
        return Page(found, bool(data.get("next_page") and videos), len(videos), data.get("total_results"))

    def _ref(self, video: dict) -> VideoRef | None:
        if not isinstance(video, dict) or video.get("id") is None:
            return None
        width, height, duration = video.get("width"), video.get("height"), video.get("duration")
        if not self.filters.accepts(width, height, duration):
            return None
        chosen = choose_file(list(video.get("video_files") or []), self.filters.target_height)
        if chosen is None:
            return None
        user = video.get("user") or {}
        author = str(user.get("name") or "unknown")
        meta = {
            "provider": "pexels",
            "page_url": video.get("url"),
            "licence": LICENCE,
            "licence_url": LICENCE_URL,
            "author": author,
            "author_url": user.get("url"),
            "attribution": f"Video by {author} on Pexels",
            "title": _title(video.get("url"), video["id"]),
            "width": chosen["width"],
            "height": chosen["height"],
            "fps": float(chosen["fps"]) if _positive(chosen.get("fps")) else None,
            "rendition": f"{chosen.get('quality') or 'mp4'} {chosen['width']}x{chosen['height']}",
            "duration": duration,
            "source_width": width,
            "source_height": height,
            "query": self.query,
        }
        return VideoRef(f"pexels:{video['id']}", str(chosen["link"]), meta)


class Pexels:
    """The Pexels provider (see base.Provider): downloads come from its CDN without the key."""

    name = "pexels"
    search_interval = 3600.0 / 200  # the hourly limit, spread evenly

    def search(self, query: str, *, http: Http, filters: SourceFilters) -> PexelsSearch:
        return PexelsSearch(query, http=http, filters=filters)

    def download_headers(self) -> dict[str, str]:
        return {}

    def download_slot(self) -> nullcontext[None]:
        return nullcontext()


PROVIDER = Pexels()
