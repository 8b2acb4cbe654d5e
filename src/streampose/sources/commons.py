"""Wikimedia Commons video search through the MediaWiki Action API.

Commons media are under free licences (CC BY, CC BY-SA, CC0, public domain) that allow training
as long as attribution is kept, so every ref carries the licence, its URL, the author and the
file page for provenance.

Wikimedia's etiquette is followed: a User-Agent with contact information (STREAMPOSE_CONTACT),
one request at a time per process (`REQUEST_LOCK`, downloads included), `maxlag=5` with the
advertised wait honoured, and `Retry-After` honoured. Where Commons has transcoded WebM
derivatives, the one nearest the target size is fetched instead of a large original.
"""

from __future__ import annotations

import threading
from html.parser import HTMLParser
from urllib.parse import quote, urljoin

import httpx

from streampose import __version__
from streampose.errors import SourceError
from streampose.sources.base import Page, SourceFilters, VideoRef, short_side
from streampose.sources.http import Http, retry_after, setting

API_URL = "https://commons.wikimedia.org"
PAGE_SIZE = 50
CONTACT_HELP = "set STREAMPOSE_CONTACT to your e-mail or wiki user page"
REQUEST_LOCK = threading.Lock()  # Wikimedia asks clients to send requests serially


def user_agent() -> str:
    """The User-Agent Wikimedia's policy asks for: tool, version, contact, library."""
    contact = setting("STREAMPOSE_CONTACT") or CONTACT_HELP
    return f"stream-pose/{__version__} (https://github.com/stream-pose; {contact}) httpx/{httpx.__version__}"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def strip_html(value: object) -> str:
    """Plain text of an extmetadata value (`Artist` is often a link or a formatted block)."""
    if value is None:
        return ""
    parser = _Text()
    parser.feed(str(value))
    parser.close()
    return " ".join("".join(parser.parts).split())


class MaxLag:
    """Turns a `maxlag` error (HTTP 200 or 503 with a JSON error) into a retry after the advertised lag."""

    def before_request(self) -> float:
        return 0.0

    def after_response(self, response: httpx.Response) -> tuple[float, str] | None:
        if "json" not in response.headers.get("content-type", "") or b'"maxlag"' not in response.content:
            return None  # the common case, without parsing the body twice
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            return None
        if error.get("code") != "maxlag":
            return None
        lag = retry_after(response)
        if lag is None:
            try:
                lag = max(1.0, float(error.get("lag") or 5))
            except (TypeError, ValueError):
                lag = 5.0
        return lag, f"Commons servers lagging ({error.get('info') or 'maxlag'})"


def choose_rendition(derivatives: list[dict], target: int) -> dict | None:
    """The transcoded WebM whose shorter side is nearest `target` (ties: the smaller, then VP9); None if none."""
    webm = [
        d
        for d in derivatives
        if d.get("transcodekey")
        and d.get("src")
        and str(d.get("type") or "").startswith("video/webm")
        and isinstance(d.get("width"), int | float)
        and isinstance(d.get("height"), int | float)
        and d["width"] > 0
        and d["height"] > 0
    ]
    if not webm:
        return None

    def key(d: dict) -> tuple[float, float, bool]:
        side = short_side(d["width"], d["height"])
        return abs(side - target), side, "vp9" not in str(d.get("transcodekey"))

    return min(webm, key=key)


class CommonsSearch:
    """One Commons search for video files, paged with the API's `continue` object (see sources.Search)."""

    def __init__(
        self, query: str, *, http: Http, filters: SourceFilters | None = None, base_url: str | None = None
    ) -> None:
        if not query:
            raise SourceError("commons: needs a search query, e.g. commons:people walking")
        self.query = query
        self.spec = f"commons:{query}"
        self.http = http
        self.filters = filters or SourceFilters()
        self.base_url = (base_url or setting("COMMONS_API_URL") or API_URL).rstrip("/")
        self._hook = MaxLag()

    def __repr__(self) -> str:
        return f"CommonsSearch({self.query!r}, base_url={self.base_url!r})"

    def page(self, token: object | None) -> Page:
        params: dict[str, str | int] = {
            "action": "query",
            "generator": "search",
            "gsrsearch": f"filetype:video {self.query}",
            "gsrnamespace": 6,
            "gsrlimit": PAGE_SIZE,
            "prop": "imageinfo|videoinfo",
            "iiprop": "url|size|mime|extmetadata",
            "viprop": "derivatives",
            "format": "json",
            "formatversion": 2,
            "maxlag": 5,
        }
        if isinstance(token, dict):
            params.update({str(k): v for k, v in token.items()})
        what = f"Commons search {self.query!r}"
        with REQUEST_LOCK:
            response = self.http.request(
                "GET",
                f"{self.base_url}/w/api.php",
                params=params,
                headers={"User-Agent": user_agent()},
                what=what,
                hook=self._hook,
            )
        if response.status_code == 403:
            raise SourceError(
                f"{what}: HTTP 403 Forbidden; Wikimedia refuses clients without contact details: {CONTACT_HELP}"
            )
        if response.status_code >= 400:
            raise SourceError(f"{what}: HTTP {response.status_code} {response.reason_phrase}")
        try:
            data = response.json()
            error = data.get("error")
            pages = list((data.get("query") or {}).get("pages") or [])
        except (ValueError, AttributeError):
            raise SourceError(f"{what}: the answer is not MediaWiki API JSON (wrong COMMONS_API_URL?)") from None
        if error:
            raise SourceError(f"{what}: API error {error.get('code')}: {error.get('info')}")
        pages.sort(key=lambda p: p.get("index", 0) if isinstance(p, dict) else 0)
        found = [ref for p in pages if (ref := self._ref(p)) is not None]
        following = data.get("continue")
        return Page(found, following if isinstance(following, dict) and following else None, len(pages))

    def _ref(self, page: dict) -> VideoRef | None:
        if not isinstance(page, dict) or page.get("missing") or not page.get("title"):
            return None
        info = (page.get("imageinfo") or [None])[0]
        if not info or not info.get("url"):
            return None  # its imageinfo comes in a continuation
        mime = str(info.get("mime") or "")
        if not (mime.startswith("video/") or mime == "application/ogg"):
            return None
        width, height, duration = info.get("width"), info.get("height"), info.get("duration")
        if not self.filters.accepts(width, height, duration):
            return None
        derivatives = ((page.get("videoinfo") or [{}])[0] or {}).get("derivatives") or []
        chosen = choose_rendition(list(derivatives), self.filters.target_height)
        if chosen is not None:
            url, w, h, rendition = str(chosen["src"]), chosen["width"], chosen["height"], chosen["transcodekey"]
        else:
            url, w, h, rendition = str(info["url"]), width, height, "original"
        url = urljoin(self.base_url + "/", url)  # derivative URLs may be protocol- or host-relative
        ext = info.get("extmetadata") or {}

        def field(name: str) -> str:
            return strip_html((ext.get(name) or {}).get("value"))

        title = str(page["title"])
        meta = {
            "provider": "commons",
            "page_url": info.get("descriptionurl") or f"{self.base_url}/wiki/{quote(title.replace(' ', '_'))}",
            "licence": field("LicenseShortName") or "unknown (see the file page)",
            "licence_url": field("LicenseUrl") or None,
            "author": field("Artist") or "unknown (see the file page)",
            "title": field("ObjectName") or title.removeprefix("File:"),
            "file": title,
            "width": w,
            "height": h,
            "duration": duration,
            "source_width": width,
            "source_height": height,
            "rendition": rendition,
            "mime": mime,
            "query": self.query,
        }
        return VideoRef(f"commons:{title}", url, meta)
