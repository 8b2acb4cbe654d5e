"""Pexels video search (https://www.pexels.com/api/documentation).

The key goes in a bare `Authorization: <key>` header, read from PEXELS_API_KEY or a `.env` file
in the working folder. It is held in a `_Secret` so no repr, message, log line or ref meta can
show it, and it is sent only to the API, never to the video CDN.

The quota (200 requests/hour by default) is watched through `X-Ratelimit-Remaining` and
`X-Ratelimit-Reset`: at 0 remaining the next request waits for the reset. A 429 carries no such
headers, so the last Reset seen decides the wait (else the client's backoff). Search pages ask
for 80 results (the maximum), as Pexels asks, so a run spends few requests.

Pexels' terms forbid training ML models on its content without Pexels' permission; choosing the
source prints that once per process.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

import httpx

from streampose.errors import SourceError
from streampose.sources.base import Page, SourceFilters, VideoRef, short_side
from streampose.sources.http import Http, setting

API_URL = "https://api.pexels.com"
PER_PAGE = 80
LICENCE = "Pexels License"
LICENCE_URL = "https://www.pexels.com/license/"
KEY_HELP = (
    "set PEXELS_API_KEY in the environment or put a line PEXELS_API_KEY=<your key> in a .env file in the "
    "working folder (free keys: https://www.pexels.com/api/)"
)
TERMS_NOTICE = (
    "note: Pexels' terms forbid using Pexels videos to train, fine-tune or evaluate machine-learning models "
    "without Pexels' explicit permission (https://www.pexels.com/terms-of-service/); get it before training "
    "on pexels: sources"
)

_notice_lock = threading.Lock()
_notice_shown = False


def terms_notice() -> None:
    """Print the terms notice to stderr, once per process."""
    global _notice_shown
    with _notice_lock:
        if not _notice_shown:
            print(TERMS_NOTICE, file=sys.stderr, flush=True)
            _notice_shown = True


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


class Quota:
    """Pexels' rate-limit bookkeeping, shared by every search in the process (one key, one quota)."""

    def __init__(self, clock=time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.remaining: int | None = None
        self.reset: float | None = None  # UNIX time

    def before_request(self) -> float:
        with self._lock:
            if self.remaining is None or self.remaining > 0 or self.reset is None:
                return 0.0
            wait = self.reset - self._clock()
            if wait <= 0:
                self.remaining = None  # a new window: the next response tells the new count
                return 0.0
            return wait + 1.0  # a second's margin for clock skew

    def after_response(self, response: httpx.Response) -> tuple[float, str] | None:
        with self._lock:
            if response.status_code == 429:
                # No rate headers on a 429: the last Reset seen is the best guess, else back off.
                if self.reset is not None and self.reset > self._clock():
                    return self.reset - self._clock() + 1.0, "HTTP 429 Too Many Requests (hourly quota used up)"
                return None
            if response.is_success:
                try:
                    self.remaining = int(response.headers["x-ratelimit-remaining"])
                    self.reset = float(response.headers["x-ratelimit-reset"])
                except (KeyError, ValueError):
                    pass
            return None


QUOTA = Quota()


def choose_file(files: list[dict], target: int) -> dict | None:
    """The smallest MP4 whose shorter side reaches `target`, else the largest; HLS and unsized files skipped."""
    usable = [
        f
        for f in files
        if f.get("link")
        and str(f.get("file_type") or "").lower() == "video/mp4"
        and f.get("quality") != "hls"
        and isinstance(f.get("width"), int)
        and isinstance(f.get("height"), int)
        and f["width"] > 0
        and f["height"] > 0
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

    def page(self, token: object | None) -> Page:
        number = int(token) if isinstance(token, int) else 1
        params: dict[str, str | int] = {"query": self.query, "per_page": PER_PAGE, "page": number}
        if self.filters.orientation:
            params["orientation"] = self.filters.orientation
        what = f"Pexels search {self.query!r} page {number}"
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
        following = data.get("next_page")
        # Pages are asked for by number from our own base URL, so the key goes to no other address.
        next_number = None
        if following and videos:
            pages = parse_qs(urlsplit(str(following)).query).get("page") or [str(number + 1)]
            next_number = int(pages[0]) if pages[0].isdigit() and int(pages[0]) > number else number + 1
        return Page(found, next_number, len(videos), data.get("total_results"))

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
            "fps": chosen.get("fps"),
            "duration": duration,
            "source_width": width,
            "source_height": height,
            "query": self.query,
        }
        return VideoRef(f"pexels:{video['id']}", str(chosen["link"]), meta)
