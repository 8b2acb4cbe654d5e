"""A local server that speaks the Pexels and Commons protocols, with their real odd shapes.

Stdlib `ThreadingHTTPServer` on 127.0.0.1: same paths, parameters, headers and JSON fields as the
real APIs (see shared/notes/sources.md), serving real clip bytes for downloads. Besides the
common case it can answer with what the real services send on a bad day: Pexels' monthly
`X-Ratelimit-*` headers with a reset weeks away, an hourly 429 without them, `quality: null`,
HLS files with null sizes, float or missing `fps`, an empty `videos` list deep into the results,
the same id on two pages; Commons' prop continuation split across responses, files with only
their original (no transcodes yet), `m3u8` and `.mjpeg.mov` derivatives, no `Artist`,
public-domain files without `LicenseUrl`, `maxlag` with a float lag, a 429 with `Retry-After`
and an HTML body. And what a hostile or broken host sends: a body trickled a byte at a time, a
redirect loop, a gzip body that is not gzip.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from conftest import transcode
from streampose.sources import pexels
from streampose.sources.http import Http
from streampose.sources.pages import PAGES

KEY = "test-key-5ecr3t-0123456789"
SEARCH_KEYS = {"query", "per_page", "page", "orientation", "size", "locale"}
COMMONS_PARAMS = {
    "action": "query",
    "generator": "search",
    "gsrnamespace": "6",
    "gsrlimit": "50",
    "prop": "imageinfo|videoinfo",
    "iiprop": "url|size|mime|extmetadata",
    "viprop": "derivatives",
    "format": "json",
    "formatversion": "2",
    "maxlag": "5",
}
MONTH_LIMIT = 20_000
TRICKLE_S = 0.2
HTML_429 = b"<!DOCTYPE html><html><head><title>Wikimedia Error</title></head><body>Too many requests</body></html>"


class FakeProviders:
    """Pexels API, Commons API and a file host on one port, with scripted faults per route."""

    def __init__(self, mp4: bytes, webm: bytes) -> None:
        self.mp4, self.webm = mp4, webm
        self.log: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.faults: dict[str, list[object]] = defaultdict(list)  # route -> actions, consumed in order
        self.pexels: dict[str, list[dict]] = {}
        self.commons: dict[str, list[dict]] = {}
        self.claimed: dict[str, int] = {}  # query -> total_results Pexels claims (more than it serves)
        self.max_per_page: int | None = None  # serve fewer than asked, as a page of a real search may
        self.split_props = False  # Commons: each batch's imageinfo comes in two responses
        # Pexels' headers are the monthly quota; Reset is the month's rollover, weeks away.
        self.limit, self.remaining, self.reset = MONTH_LIMIT, MONTH_LIMIT - 1, time.time() + 20 * 86400
        self.delay: dict[str, float] = {}  # "search" | "api" | "file" -> seconds each answer takes
        self.busy: dict[str, int] = defaultdict(int)  # requests being answered now, by kind
        self.most: dict[str, int] = defaultdict(int)  # the most answered at once, by kind
        self._count_lock = threading.Lock()
        self.release = threading.Event()  # ends "slow" responses at teardown
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def requests(self, prefix: str) -> list[tuple[str, dict[str, str], dict[str, str]]]:
        return [r for r in self.log if r[0].startswith(prefix)]

    # -- Pexels catalogue ------------------------------------------------------------------------

    def add_pexels(self, query: str, count: int, first_id: int = 1000) -> None:
        self.pexels.setdefault(query, []).extend(self.pexels_video(first_id + i) for i in range(count))

    def pexels_video(self, vid: int, stem: str | None = None) -> dict:
        """A video as the API lists it; `stem` names its files (e.g. "truncated" for a cut MP4)."""
        link = f"{self.url}/files/{stem or 'pexels'}-{vid}"
        files = [
            {"id": vid * 10 + 1, "quality": "hls", "file_type": "video/mp4", "width": None, "height": None,
             "fps": None, "link": f"{link}-hls.m3u8"},
            {"id": vid * 10 + 2, "quality": "uhd", "file_type": "video/mp4", "width": 3840, "height": 2160,
             "fps": 25, "link": f"{link}-2160.mp4"},
            {"id": vid * 10 + 3, "quality": "sd", "file_type": "video/mp4", "width": 640, "height": 360,
             "fps": 25, "link": f"{link}-360.mp4"},
            {"id": vid * 10 + 4, "quality": "sd", "file_type": "video/mp4", "width": 960, "height": 540,
             "fps": 25, "link": f"{link}-540.mp4"},
            {"id": vid * 10 + 5, "quality": "hd", "file_type": "video/mp4", "width": 1280, "height": 720,
             "fps": 25, "link": f"{link}-720.mp4"},
        ]  # fmt: skip
        return {
            "id": vid,
            "width": 3840,
            "height": 2160,
            "url": f"https://www.pexels.com/video/people-walking-in-a-park-{vid}/",
            "image": f"https://images.pexels.com/videos/{vid}/poster.jpeg",
            "duration": 5 + vid % 20,
            "user": {"id": 7, "name": "Jane Filmer", "url": "https://www.pexels.com/@jane"},
            "video_files": files,
            "video_pictures": [{"id": 1, "picture": f"https://images.pexels.com/videos/{vid}/p0.jpeg", "nr": 0}],
        }

    def pexels_odd_video(self, vid: int) -> dict:
        """A portrait video listed as the API does today: null qualities, an HLS playlist with null
        sizes under `video/mp4`, a float `fps` on one file and none on another."""
        link = f"{self.url}/files/pexels-{vid}"
        files = [
            {"id": 1, "quality": None, "file_type": "video/mp4", "width": None, "height": None, "fps": None,
             "link": f"{link}/playlist.m3u8"},
            {"id": 2, "quality": None, "file_type": "video/mp4", "width": 1080, "height": 1920, "fps": 29.97,
             "link": f"{link}-1080.mp4"},
            {"id": 3, "quality": "sd", "file_type": "video/mp4", "width": 360, "height": 640, "fps": None,
             "link": f"{link}-360.mp4"},
        ]  # fmt: skip
        return dict(self.pexels_video(vid), width=1080, height=1920, video_files=files)

    # -- Commons catalogue -----------------------------------------------------------------------

    def add_commons(self, query: str, count: int) -> None:
        self.commons.setdefault(query, []).extend(self.commons_page(i) for i in range(count))

    def commons_page(self, i: int) -> dict:
        name = f"Walking person {i}.webm"
        base = f"{self.url}/files/commons-{i}"
        derivative = {"src": f"{base}.webm", "type": 'video/webm; codecs="vp9"', "width": 1920, "height": 1080}
        transcodes = [
            ("240p.vp9.webm", 426, 240, 'video/webm; codecs="vp9, opus"'),
            ("480p.vp9.webm", 854, 480, 'video/webm; codecs="vp9, opus"'),
            ("480p.webm", 854, 480, 'video/webm; codecs="vp8, vorbis"'),
            ("720p.vp9.webm", 1280, 720, 'video/webm; codecs="vp9, opus"'),
            ("144p.mjpeg.mov", 256, 144, "video/quicktime"),
        ]
        derivatives = [derivative] + [
            {"src": f"{base}.webm/{name}.{k}", "type": t, "transcodekey": k, "width": w, "height": h}
            for k, w, h, t in transcodes
        ]
        ext = {
            "ObjectName": {"value": f"Walking person {i}", "source": "mediawiki-metadata"},
            "LicenseShortName": {"value": "CC BY-SA 4.0", "source": "commons-desc-page"},
            "LicenseUrl": {"value": "https://creativecommons.org/licenses/by-sa/4.0", "source": "commons-desc-page"},
            "Artist": {"value": '<a href="//commons.wikimedia.org/wiki/User:Jo">Jo &amp; Ann</a>', "source": "x"},
            "Attribution": {"value": "Jo &amp; Ann / <i>Wikimedia Commons</i>", "source": "commons-desc-page"},
            "AttributionRequired": {"value": "true", "source": "commons-desc-page"},
            "UsageTerms": {"value": "Creative Commons Attribution-Share Alike 4.0", "source": "commons-desc-page"},
        }
        info = {
            "size": 123456,
            "width": 1920,
            "height": 1080,
            "duration": 12.5,
            "url": f"{base}.webm",
            "descriptionurl": f"https://commons.wikimedia.org/wiki/File:Walking_person_{i}.webm",
            "mime": "video/webm",
            "extmetadata": ext,
        }
        return {"pageid": 5000 + i, "ns": 6, "title": f"File:{name}", "imageinfo": [info],
                "videoinfo": [{"derivatives": derivatives}]}  # fmt: skip

    def commons_public_domain(self, i: int, size: int) -> dict:
        """A fresh public-domain upload: no transcodes yet (only the original listed, plus an HLS
        playlist and an MJPEG preview), no `Artist`, no `LicenseUrl`, an original of `size` bytes."""
        page = self.commons_page(i)
        info = page["imageinfo"][0]
        info["size"] = size
        info["extmetadata"] = {
            "ObjectName": {"value": f"Walking person {i}", "source": "mediawiki-metadata"},
            "LicenseShortName": {"value": "Public domain", "source": "commons-desc-page"},
            "UsageTerms": {"value": "Public domain", "source": "commons-desc-page"},
            "AttributionRequired": {"value": "false", "source": "commons-desc-page"},
        }
        base = info["url"]
        page["videoinfo"] = [{"derivatives": [
            {"src": base, "type": 'video/webm; codecs="vp9"', "width": 1920, "height": 1080},
            {"src": f"{base}/x.m3u8", "type": "application/vnd.apple.mpegurl", "transcodekey": "m3u8",
             "width": 854, "height": 480},
            {"src": f"{base}/x.144p.mjpeg.mov", "type": "video/quicktime", "transcodekey": "144p.mjpeg.mov",
             "width": 256, "height": 144},
        ]}]  # fmt: skip
        return page


def _handler(fake: FakeProviders) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def send(self, status: int, body: bytes, kind: str = "application/json", headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, data: object, status: int = 200, headers: dict | None = None) -> None:
            self.send(status, json.dumps(data).encode(), headers=headers)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fake.log.append((parts.path, params, dict(self.headers)))
            try:
                if self.headers.get("User-Agent", "").startswith("python-httpx/"):
                    # The Pexels front end since late 2024: default library agents are refused.
                    return self.send_json({"error": "Forbidden"}, 403)
                if parts.path.endswith("/videos/search"):
                    route = "search"
                elif parts.path == "/w/api.php":
                    route = "api"
                else:
                    route = parts.path.rsplit("/", 1)[-1].split("-")[0]
                kind = route if route in ("search", "api") else "file"
                with fake._count_lock:
                    fake.busy[kind] += 1
                    fake.most[kind] = max(fake.most[kind], fake.busy[kind])
                try:
                    time.sleep(fake.delay.get(kind, 0.0))
                    self.answer(route, parts.path, params)
                finally:
                    with fake._count_lock:
                        fake.busy[kind] -= 1
            except (BrokenPipeError, ConnectionResetError):
                pass

        def answer(self, route: str, path: str, params: dict[str, str]) -> None:
            if fake.faults[route] and self.fault(fake.faults[route].pop(0)):
                return
            if route == "search":
                return self.pexels_search(path, params)
            if route == "api":
                return self.commons_api(params)
            return self.file(path)

        def fault(self, action: object) -> bool:
            """Serve a scripted fault; False lets the normal answer through (None: at once)."""
            if action is None:
                return False
            if action == "slow":
                fake.release.wait(3)
                return False
            if action == "trickle":  # a byte every TRICKLE_S: no read ever times out; ends at teardown
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.end_headers()
                for byte in fake.mp4[:3000]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    if fake.release.wait(TRICKLE_S):
                        break
                self.close_connection = True
                return True
            if action == "loop":  # a redirect to itself
                self.send_response(302)
                self.send_header("Location", self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True
            if action == "bad-gzip":
                self.send(200, b"this is not gzip" * 64, "video/mp4", {"Content-Encoding": "gzip"})
                return True
            if action in ("maxlag", "maxlag-float"):
                lag = 7 if action == "maxlag" else 0.71
                error = {"code": "maxlag", "info": f"Waiting for db1234: {lag} seconds lagged.", "lag": lag,
                         "type": "db", "host": "db1234"}  # fmt: skip
                headers = {"Retry-After": 5, "X-Database-Lag": 7} if action == "maxlag" else {}
                self.send_json({"error": error, "servedby": "mw1234"}, headers=headers)
                return True
            if action == "html-429":  # Wikimedia's front end: an HTML page, and when to come back
                self.send(429, HTML_429, "text/html; charset=utf-8", {"Retry-After": 2})
                return True
            if isinstance(action, tuple):  # (status, headers)
                self.send_json({"status": action[0]}, action[0], headers=action[1])
                return True
            self.send_json({"status": action, "error": "scripted"}, int(action))  # no rate headers
            return True

        def pexels_search(self, path: str, params: dict[str, str]) -> None:
            if self.headers.get("Authorization") != KEY:
                return self.send_json({"status": 401, "code": "Unauthorized"}, 401)
            assert set(params) <= SEARCH_KEYS, params
            query, per_page, page = params["query"], int(params.get("per_page", 15)), int(params.get("page", 1))
            per_page = min(per_page, fake.max_per_page or per_page)
            videos = fake.pexels.get(query, [])
            total = max(len(videos), fake.claimed.get(query, 0))
            start = (page - 1) * per_page
            prefix = path.removesuffix("/videos/search")

            def link(n: int) -> str:  # noqa: E306 - the real API's page links end in "search/"
                return (
                    f"{fake.url}{prefix}/videos/search/?{urlencode({'page': n, 'per_page': per_page, 'query': query})}"
                )

            data = {
                "page": page,
                "per_page": per_page,
                "total_results": total,
                "url": f"https://www.pexels.com/search/videos/{query}/",
                "videos": videos[start : start + per_page],
            }
            if start + per_page < total:
                data["next_page"] = link(page + 1)
            if page > 1:
                data["prev_page"] = link(page - 1)
            fake.remaining = max(0, fake.remaining - 1)
            limits = {"X-Ratelimit-Limit": fake.limit, "X-Ratelimit-Remaining": fake.remaining,
                      "X-Ratelimit-Reset": int(fake.reset)}  # fmt: skip
            self.send_json(data, headers=limits)

        def commons_api(self, params: dict[str, str]) -> None:
            for k, v in COMMONS_PARAMS.items():
                assert params.get(k) == v, (k, params)
            assert params["gsrsearch"].startswith("filetype:video "), params
            pages = fake.commons.get(params["gsrsearch"].removeprefix("filetype:video "), [])
            offset = int(params.get("gsroffset", 0))
            batch = [dict(p, index=offset + n + 1) for n, p in enumerate(pages[offset : offset + 50])]
            batch.sort(key=lambda p: p["pageid"], reverse=True)  # formatversion=2 pages come unordered
            data: dict = {"batchcomplete": True}
            if fake.split_props and batch:
                half = len(batch) // 2
                if "iicontinue" not in params:
                    # Cut short: every page's videoinfo (that prop is done), half the pages' imageinfo.
                    batch = [{k: v for k, v in p.items() if n < half or k != "imageinfo"}
                             for n, p in enumerate(batch)]  # fmt: skip
                    held = {"gsroffset": offset} if offset else {}
                    following = {"iicontinue": f"{batch[half]['title'][5:]}|20240101000000", **held}
                    data = {"continue": {**following, "continue": "gsroffset||videoinfo"}}
                else:  # the rest: imageinfo for the other half, and no videoinfo at all
                    batch = [{k: v for k, v in p.items() if k != "videoinfo" and (n >= half or k != "imageinfo")}
                             for n, p in enumerate(batch)]  # fmt: skip
            if batch:
                data["query"] = {"pages": batch}
            if "batchcomplete" in data and offset + 50 < len(pages):
                data["continue"] = {"gsroffset": offset + 50, "continue": "gsroffset||"}
            self.send_json(data)

        def file(self, path: str) -> None:
            name = path.rsplit("/", 1)[-1]
            body = fake.webm if "/commons-" in path else fake.mp4
            kind = "video/webm" if "/commons-" in path else "video/mp4"
            if name.startswith("truncated"):
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if name.startswith("cut"):  # an upload cut short: complete as HTTP goes, not a readable MP4
                return self.send(200, body[: len(body) // 3], kind)
            if name.startswith("unsized"):  # no Content-Length: the cap must hold while streaming
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            if name.startswith("errorpage"):
                return self.send(200, b"<!DOCTYPE html><html><body>Service unavailable</body></html>", "text/html")
            if name.startswith("disguised"):
                return self.send(200, b"  <html><body>Please log in</body></html>", "video/mp4")
            if name.startswith("missing"):
                return self.send(404, b"not found", "text/plain")
            self.send(200, body, kind)

    return Handler


# -- fixtures (imported by the test modules that use the server) -----------------------------------


@pytest.fixture(scope="module")
def clip_bytes(sports2d) -> tuple[bytes, bytes]:
    data = sports2d.read_bytes()
    return transcode(data, "mp4", "libx264", max_frames=8, width=160), transcode(
        data, "webm", "libvpx-vp9", max_frames=8, width=160
    )


@pytest.fixture
def fake(clip_bytes, monkeypatch, tmp_path):
    server = FakeProviders(*clip_bytes)
    server.add_pexels("people walking", 170)
    server.add_commons("people walking", 120)
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("PEXELS_API_KEY", KEY)
    monkeypatch.setenv("PEXELS_API_URL", server.url)
    monkeypatch.setenv("COMMONS_API_URL", server.url)
    monkeypatch.setenv("STREAMPOSE_CONTACT", "tester@example.org")
    monkeypatch.setenv("STREAMPOSE_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("STREAMPOSE_SEARCH_INTERVAL", "0")  # tests that check the spacing set their own
    pexels.QUOTA.clear()  # the quota and the page cache are per process; each test starts afresh
    PAGES.clear()
    yield server
    server.close()
    PAGES.clear()


class Recorder:
    """An injected sleep: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def waits() -> Recorder:
    return Recorder()


@pytest.fixture
def http(waits):
    client = Http(sleep=waits, timeout=2.0, connect_timeout=2.0, retries=3)
    yield client
    client.close()


def no_key(*texts: object) -> None:
    for text in texts:
        assert KEY not in str(text), "the API key leaked"
