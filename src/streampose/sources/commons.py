"""Wikimedia Commons video search through the MediaWiki Action API.

Commons media are under free licences (CC BY, CC BY-SA, CC0, public domain) that allow training
as long as attribution is kept, so every ref carries the licence, its URL, the author and the
file page for provenance.

Wikimedia's etiquette is followed: a User-Agent with contact information (STREAMPOSE_CONTACT;
without one the search is refused, since a made-up contact would reach nobody), API requests in
series and at most two downloads at once across every process on the machine (`slots.FileSlots`),
`maxlag=5` with the advertised wait honoured, and `Retry-After` honoured. A batch whose props
come in several responses (`iicontinue`/`vicontinue`) is requested until complete and merged per
page, so no page loses its transcodes. Where Commons has transcoded WebM derivatives, the one
nearest the target size is fetched; an original is fetched only when it fits under the size cap.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from html.parser import HTMLParser
from urllib.parse import quote, urljoin

import httpx

from streampose import __version__
from streampose.errors import SourceError
from streampose.sources.base import Page, SourceFilters, VideoRef, short_side
from streampose.sources.http import Http, retry_after, setting
from streampose.sources.slots import FileSlots

API_URL = "https://commons.wikimedia.org"
PAGE_SIZE = 50
MAX_CONTINUES = 20  # responses one batch may be split into before the server is judged broken
CONTACT_HELP = (
    "set STREAMPOSE_CONTACT (environment or .env) to an e-mail address or wiki user page where you can be reached"
)
API_SLOTS = FileSlots("commons-api", 1)  # Wikimedia asks for API requests in series
DOWNLOAD_SLOTS = FileSlots("commons-download", 2)  # and at most two concurrent downloads from upload.wikimedia.org


def user_agent() -> str:
    """The User-Agent Wikimedia's policy asks for: tool, version, contact, library."""
    contact = setting("STREAMPOSE_CONTACT")
    if not contact:
        raise SourceError(f"Wikimedia Commons requires a contact in every client's User-Agent: {CONTACT_HELP}")
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


def _merge(pages: dict[object, dict], batch: list) -> None:
    """Add one response's pages to a batch: props that come in a later response fill in, per page."""
    for page in batch:
        if not isinstance(page, dict):
            continue
        key = page.get("pageid", page.get("title"))
        have = pages.setdefault(key, {})
        for name, value in page.items():
            if name not in have or (not have[name] and value):
                have[name] = value


def _flag(value: str) -> bool | None:
    return {"true": True, "false": False}.get(value.strip().lower()) if value else None


class CommonsSearch:
    """One Commons search for video files, `PAGE_SIZE` files a page (see sources.Search)."""

    provider = "commons"

    def __init__(
        self, query: str, *, http: Http, filters: SourceFilters | None = None, base_url: str | None = None
    ) -> None:
        if not query:
            raise SourceError("commons: needs a search query, e.g. commons:people walking")
        self.agent = user_agent()  # refuses now, before any request, when there is no contact
        self.query = query
        self.spec = f"commons:{query}"
        self.http = http
        self.filters = filters or SourceFilters()
        self.base_url = (base_url or setting("COMMONS_API_URL") or API_URL).rstrip("/")
        self._hook = MaxLag()

    def __repr__(self) -> str:
        return f"CommonsSearch({self.query!r}, base_url={self.base_url!r})"

    def page(self, index: int) -> Page:
        params: dict[str, str | int] = {
            "action": "query",
            "generator": "search",
            "gsrsearch": f"filetype:video {self.query}",
            "gsrnamespace": 6,
            "gsrlimit": PAGE_SIZE,
            "gsroffset": index * PAGE_SIZE,
            "prop": "imageinfo|videoinfo",
            "iiprop": "url|size|mime|extmetadata",
            "viprop": "derivatives",
            "format": "json",
            "formatversion": 2,
            "maxlag": 5,
        }
        if not index:
            del params["gsroffset"]
        what = f"Commons search {self.query!r}" + (f" page {index + 1}" if index else "")
        merged: dict[object, dict] = {}
        following: dict = {}
        for _ in range(MAX_CONTINUES):
            data = self._ask({**params, **following}, what)
            _merge(merged, list((data.get("query") or {}).get("pages") or []))
            following = data.get("continue") if isinstance(data.get("continue"), dict) else {}
            if data.get("batchcomplete") or not following:
                break  # what `continue` holds now is the next batch's offset
        else:
            raise SourceError(f"{what}: the batch was still incomplete after {MAX_CONTINUES} continuations")
        pages = sorted(merged.values(), key=lambda p: p.get("index", 0))
        found = [ref for p in pages if (ref := self._ref(p)) is not None]
        return Page(found, bool(following), len(pages))

    def _ask(self, params: dict[str, str | int], what: str) -> dict:
        with API_SLOTS.hold():
            response = self.http.request(
                "GET",
                f"{self.base_url}/w/api.php",
                params=params,
                headers={"User-Agent": self.agent},
                what=what,
                hook=self._hook,
            )
        if response.status_code == 403:
            raise SourceError(f"{what}: HTTP 403 Forbidden; Wikimedia refuses clients it cannot reach: {CONTACT_HELP}")
        if response.status_code >= 400:
            raise SourceError(f"{what}: HTTP {response.status_code} {response.reason_phrase}")
        try:
            data = response.json()
            error = data.get("error")
        except (ValueError, AttributeError):
            raise SourceError(f"{what}: the answer is not MediaWiki API JSON (wrong COMMONS_API_URL?)") from None
        if error:
            raise SourceError(f"{what}: API error {error.get('code')}: {error.get('info')}")
        return data

    def _ref(self, page: dict) -> VideoRef | None:
        if page.get("missing") or not page.get("title"):
            return None
        info = (page.get("imageinfo") or [None])[0]
        if not info or not info.get("url"):
            return None
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
        elif self.filters.max_bytes is not None and int(info.get("size") or 0) > self.filters.max_bytes:
            return None  # no transcode yet, and the original is over the cap: never fetched
        else:
            url, w, h, rendition = str(info["url"]), width, height, "original"
        url = urljoin(self.base_url + "/", url)  # derivative URLs may be protocol- or host-relative
        ext = info.get("extmetadata") or {}

        def field(name: str) -> str:
            value = ext.get(name)
            return strip_html(value.get("value") if isinstance(value, dict) else None)

        title = str(page["title"])
        licence = field("LicenseShortName") or "unknown (see the file page)"
        author = field("Artist") or "unknown (see the file page)"
        meta = {
            "provider": "commons",
            "page_url": info.get("descriptionurl") or f"{self.base_url}/wiki/{quote(title.replace(' ', '_'))}",
            "licence": licence,
            "licence_url": field("LicenseUrl") or None,
            "author": author,
            "attribution": field("Attribution") or f"{author}, {licence}, via Wikimedia Commons",
            "attribution_required": _flag(field("AttributionRequired")),
            "usage_terms": field("UsageTerms") or None,
            "title": field("ObjectName") or title.removeprefix("File:"),
            "file": title,
            "width": w,
            "height": h,
            "duration": duration,
            "source_width": width,
            "source_height": height,
            "source_bytes": info.get("size"),
            "rendition": rendition,
            "mime": mime,
            "query": self.query,
        }
        return VideoRef(f"commons:{title}", url, meta)


class Commons:
    """The Commons provider (see base.Provider): contact User-Agent and two download slots per machine."""

    name = "commons"
    search_interval = 1.0  # requests in series, and a second apart

    def search(self, query: str, *, http: Http, filters: SourceFilters) -> CommonsSearch:
        return CommonsSearch(query, http=http, filters=filters)

    def download_headers(self) -> dict[str, str]:
        return {"User-Agent": user_agent()}

    def download_slot(self) -> AbstractContextManager[int]:
        return DOWNLOAD_SLOTS.hold()


PROVIDER = Commons()
