"""Video sources against a local server that speaks the Pexels and Commons protocols.

The server is stdlib `ThreadingHTTPServer` on 127.0.0.1: same paths, parameters, headers and
JSON fields as the real APIs (see shared/notes/sources.md), serving real clip bytes for
downloads. The clients run unmodified; only the base URLs point at the server, and sleeping is
injected (`Http(sleep=...)`) so backoffs and rate-limit waits are recorded instead of waited.
"""

from __future__ import annotations

import email.utils
import json
import logging
import subprocess
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from conftest import transcode
from streampose import sources
from streampose.errors import SourceError
from streampose.sources import SourceFilters, VideoRef, fetch, pexels, refs
from streampose.sources.commons import CommonsSearch, choose_rendition, strip_html
from streampose.sources.http import Http, TransientSourceError, retry_after
from streampose.sources.pexels import PexelsSearch, choose_file
from streampose.sources.provenance import ProvenanceLog
from streampose.stream.decode import probe

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


# -- the fake provider server ----------------------------------------------------------------------


class FakeProviders:
    """Pexels API, Commons API and a file host on one port, with scripted faults per route."""

    def __init__(self, mp4: bytes, webm: bytes) -> None:
        self.mp4, self.webm = mp4, webm
        self.log: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.faults: dict[str, list[object]] = defaultdict(list)  # route -> actions, consumed in order
        self.pexels: dict[str, list[dict]] = {}
        self.commons: dict[str, list[dict]] = {}
        self.remaining, self.reset = 199, time.time() + 3600
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

    # -- catalogue -------------------------------------------------------------------------------

    def add_pexels(self, query: str, count: int, first_id: int = 1000) -> None:
        self.pexels.setdefault(query, []).extend(self.pexels_video(first_id + i) for i in range(count))

    def pexels_video(self, vid: int) -> dict:
        link = f"{self.url}/files/pexels-{vid}"
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
                if fake.faults[route] and self.fault(fake.faults[route].pop(0)):
                    return
                if route == "search":
                    return self.pexels_search(parts.path, params)
                if route == "api":
                    return self.commons_api(params)
                return self.file(parts.path)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def fault(self, action: object) -> bool:
            """Serve a scripted fault; False lets the normal answer through (after a delay)."""
            if action == "slow":
                fake.release.wait(3)
                return False
            if action == "maxlag":
                error = {"code": "maxlag", "info": "Waiting for db1234: 7 seconds lagged.", "lag": 7}
                self.send_json({"error": error}, headers={"Retry-After": 5, "X-Database-Lag": 7})
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
            videos = fake.pexels.get(query, [])
            start = (page - 1) * per_page
            prefix = path.removesuffix("/videos/search")

            def link(n: int) -> str:  # noqa: E306 - the real API's page links end in "search/"
                return (
                    f"{fake.url}{prefix}/videos/search/?{urlencode({'page': n, 'per_page': per_page, 'query': query})}"
                )

            data = {
                "page": page,
                "per_page": per_page,
                "total_results": len(videos),
                "url": f"https://www.pexels.com/search/videos/{query}/",
                "videos": videos[start : start + per_page],
            }
            if start + per_page < len(videos):
                data["next_page"] = link(page + 1)
            if page > 1:
                data["prev_page"] = link(page - 1)
            fake.remaining = max(0, fake.remaining - 1)
            limits = {"X-Ratelimit-Limit": 200, "X-Ratelimit-Remaining": fake.remaining,
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
            if batch:
                data["query"] = {"pages": batch}
            if offset + 50 < len(pages):
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


# -- fixtures --------------------------------------------------------------------------------------


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
    pexels.QUOTA.remaining = pexels.QUOTA.reset = None  # the quota is per process; each test starts afresh
    yield server
    server.close()


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


# -- Pexels ----------------------------------------------------------------------------------------


def test_pexels_pages_to_the_last_page(fake, http):
    got = list(refs(["pexels:people walking"], http=http))
    assert len(got) == 170 and len({r.id for r in got}) == 170
    searches = fake.requests("/videos/search")
    assert [p["page"] for _, p, _ in searches] == ["1", "2", "3"]  # stops where next_page is absent
    assert all(p["per_page"] == "80" and p["query"] == "people walking" for _, p, _ in searches)
    headers = searches[0][2]
    assert headers["Authorization"] == KEY and headers["User-Agent"].startswith("stream-pose/")
    ref = got[0]
    assert ref.id == "pexels:1000" and ref.url.endswith("pexels-1000-540.mp4")  # smallest >= 480
    assert ref.meta["author"] == "Jane Filmer" and ref.meta["licence"] == "Pexels License"
    assert ref.meta["page_url"] == "https://www.pexels.com/video/people-walking-in-a-park-1000/"
    assert ref.meta["title"] == "people walking in a park"
    no_key(ref, ref.meta, repr(PexelsSearch("x", http=http)))


def test_pexels_v1_base_url_and_lazy_paging(fake, http, monkeypatch):
    monkeypatch.setenv("PEXELS_API_URL", fake.url + "/v1/")
    got = list(refs(["pexels:people walking"], http=http, max_videos=5))
    assert len(got) == 5
    assert [path for path, _, _ in fake.log] == ["/v1/videos/search"]  # one page is enough for five


def test_pexels_download_is_real_video_without_the_key(fake, http):
    ref = next(refs(["pexels:people walking"], http=http))
    video = fetch(ref, max_bytes=10_000_000, client=http)
    assert video.id == "pexels:1000" and video.meta["bytes"] == len(video.data) == len(fake.mp4)
    assert probe(video.data, video.id).width == 160
    download = fake.requests("/files/")[0]
    assert "Authorization" not in download[2] and download[2]["User-Agent"].startswith("stream-pose/")


def test_pexels_429_without_rate_headers_then_success(fake, http, waits):
    fake.faults["search"] = [429]
    assert len(list(refs(["pexels:people walking"], http=http, max_videos=3))) == 3
    assert len(waits.waits) == 1 and 0 < waits.waits[0] <= 1.0  # no Reset known yet: backoff

    # Once a Reset has been seen, a 429 waits for it.
    fake.reset = time.time() + 40
    stream = refs(["pexels:people walking"], http=http)
    for _ in range(80):
        next(stream)
    fake.faults["search"] = [429]
    with pytest.warns(UserWarning, match="HTTP 429 .* waiting 4"):
        next(stream)  # page 2: 429, then success
    assert 38 <= waits.waits[-1] <= 42


def test_pexels_waits_for_reset_when_quota_is_used_up(fake, http, waits):
    fake.remaining, fake.reset = 1, time.time() + 30  # the first answer says 0 remaining
    with pytest.warns(UserWarning, match="rate limit reached"):
        list(refs(["pexels:people walking"], http=http, max_videos=90))
    assert len(waits.waits) == 1 and 28 <= waits.waits[0] <= 32


def test_pexels_401_stops_with_the_likely_cause(fake, http, monkeypatch):
    monkeypatch.setenv("PEXELS_API_KEY", KEY + "-wrong")
    stream = refs(["pexels:people walking"], http=http)
    with pytest.raises(SourceError, match=r"HTTP 401.*API key.*User-Agent") as err:
        next(stream)
    assert len(fake.log) == 1  # not retried
    assert list(stream) == []  # and the stream is over
    no_key(err.value)


def test_pexels_server_refusing_default_user_agent(fake, waits):
    assert httpx.get(fake.url + "/videos/search?query=x", headers={"Authorization": KEY}).status_code == 403
    plain = Http(user_agent=f"python-httpx/{httpx.__version__}", sleep=waits)
    with plain, pytest.raises(SourceError, match=r"HTTP 403.*User-Agent \('python-httpx/") as err:
        next(refs(["pexels:people walking"], http=plain))
    no_key(err.value)


def test_pexels_5xx_recovers(fake, http, waits):
    fake.faults["search"] = [503, (502, {"Retry-After": "2"})]
    assert len(list(refs(["pexels:people walking"], http=http, max_videos=2))) == 2
    assert len(waits.waits) == 2 and waits.waits[1] == 2.0  # Retry-After honoured


def test_pexels_key_stays_out_of_logs(fake, http, caplog):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at this level
    fake.faults["search"] = [500]
    search = PexelsSearch("people walking", http=http)
    page = search.page(None)
    assert len(page.refs) == 80 and page.next == 2 and page.total == 170
    assert "HTTP Request: GET" in caplog.text  # the loggers did run
    no_key(caplog.text, repr(search), vars(search), page)


def test_pexels_5xx_that_persists_gives_up(fake, http):
    fake.faults["search"] = [500] * 4
    with pytest.raises(TransientSourceError, match=r"Pexels search 'people walking'.*HTTP 500.*4 tries") as err:
        next(refs(["pexels:people walking"], http=http))
    no_key(err.value)


def test_pexels_read_timeout(fake, waits):
    fake.faults["search"] = ["slow", "slow"]
    quick = Http(sleep=waits, timeout=0.3, retries=1)
    with quick, pytest.raises(SourceError, match=r"Pexels search .*timed out.*2 tries") as err:
        next(refs(["pexels:people walking"], http=quick))
    no_key(err.value)


def test_pexels_empty_search_is_a_clear_error(fake, http):
    with pytest.raises(SourceError, match="no videos found for 'nobody here'"):
        next(refs(["pexels:nobody here"], http=http))
    assert len(fake.log) == 1


def test_pexels_missing_key_says_how_to_set_it(fake, http, monkeypatch):
    monkeypatch.delenv("PEXELS_API_KEY")
    with pytest.raises(SourceError, match=r"PEXELS_API_KEY.*\.env"):
        refs(["pexels:people walking"], http=http)  # raised up front, before any request
    assert fake.log == []


def test_pexels_key_from_dotenv(fake, http, monkeypatch, tmp_path):
    monkeypatch.delenv("PEXELS_API_KEY")
    (tmp_path / ".env").write_text(f"# keys\nOTHER=1\nexport PEXELS_API_KEY='{KEY}'\n")
    assert next(refs(["pexels:people walking"], http=http)).id == "pexels:1000"


def test_pexels_orientation_and_duration_filters(fake, http):
    filters = SourceFilters(orientation="landscape", min_duration=10, max_duration=12, target_height=1000)
    got = list(refs(["pexels:people walking"], http=http, filters=filters, max_videos=10))
    assert fake.log[0][1]["orientation"] == "landscape"
    assert got and all(10 <= r.meta["duration"] <= 12 for r in got)
    assert all(r.url.endswith("-2160.mp4") for r in got)  # nothing between 1000 and 2160


def test_pexels_terms_notice_printed_once():
    code = (
        "from streampose.sources.http import Http; from streampose.sources.pexels import PexelsSearch\n"
        "h = Http()\n"
        f"PexelsSearch('a', http=h, api_key={KEY!r}); PexelsSearch('b', http=h, api_key={KEY!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Pexels' terms forbid") == 1 and len(done.stderr.strip().splitlines()) == 1
    no_key(done.stderr, done.stdout)


def test_rendition_choice():
    files = [
        {"quality": "hls", "file_type": "video/mp4", "width": None, "height": None, "link": "hls"},
        {"quality": "sd", "file_type": "video/mp4", "width": 640, "height": 360, "link": "360"},
        {"quality": "hd", "file_type": "video/mp4", "width": 1920, "height": 1080, "link": "1080"},
        {"quality": "hd", "file_type": "video/mp4", "width": 1280, "height": 720, "link": "720"},
        {"quality": "sd", "file_type": "video/webm", "width": 854, "height": 480, "link": "webm"},
    ]
    assert choose_file(files, 480)["link"] == "720"
    assert choose_file(files, 360)["link"] == "360"
    assert choose_file(files, 2000)["link"] == "1080"  # none big enough: the largest
    portrait = [dict(f, width=f["height"], height=f["width"]) for f in files[1:4]]
    assert choose_file(portrait, 480)["link"] == "720"  # the shorter side counts
    assert choose_file(files[:1], 480) is None

    catalogue = FakeProviders.__new__(FakeProviders)
    catalogue.url = "http://files"
    derivatives = catalogue.commons_page(0)["videoinfo"][0]["derivatives"]
    assert choose_rendition(derivatives, 480)["transcodekey"] == "480p.vp9.webm"  # VP9 wins the tie
    assert choose_rendition(derivatives, 300)["transcodekey"] == "240p.vp9.webm"
    assert choose_rendition(derivatives, 2000)["transcodekey"] == "720p.vp9.webm"
    assert choose_rendition(derivatives[:1], 480) is None  # only the original: caller uses it


# -- Commons ---------------------------------------------------------------------------------------


def test_commons_pages_with_continue(fake, http):
    got = list(refs(["commons:people walking"], http=http))
    assert len(got) == 120
    offsets = [p.get("gsroffset") for _, p, _ in fake.requests("/w/api.php")]
    assert offsets == [None, "50", "100"]
    assert got[0].id == "commons:File:Walking person 0.webm"  # search order, not page-id order
    meta = got[0].meta
    assert got[0].url.endswith("Walking person 0.webm.480p.vp9.webm")
    assert meta["licence"] == "CC BY-SA 4.0" and meta["licence_url"].startswith("https://creativecommons.org/")
    assert meta["author"] == "Jo & Ann" and meta["title"] == "Walking person 0" and meta["duration"] == 12.5
    assert meta["page_url"] == "https://commons.wikimedia.org/wiki/File:Walking_person_0.webm"
    agent = fake.log[0][2]["User-Agent"]
    assert "tester@example.org" in agent and agent.startswith("stream-pose/")


def test_commons_download_and_maxlag(fake, http, waits):
    fake.faults["api"] = ["maxlag"]
    ref = next(refs(["commons:people walking"], http=http))
    assert waits.waits == [5.0]  # the advertised Retry-After
    video = fetch(ref, max_bytes=10_000_000, client=http)
    assert probe(video.data, video.id).codec == "vp9"
    assert "tester@example.org" in fake.requests("/files/")[0][2]["User-Agent"]


def test_commons_empty_search_and_retry_after(fake, http, waits):
    fake.faults["api"] = [(503, {"Retry-After": "3"})]
    with pytest.raises(SourceError, match="no videos found for 'nobody here'"):
        next(refs(["commons:nobody here"], http=http))
    assert waits.waits == [3.0]


def test_commons_without_derivatives_uses_original(fake, http):
    for page in fake.commons["people walking"]:
        page["videoinfo"] = [{"derivatives": []}]
    ref = next(refs(["commons:people walking"], http=http))
    assert ref.url.endswith("commons-0.webm") and ref.meta["rendition"] == "original"


def test_strip_html():
    assert strip_html('<div class="x"><a href="/u">A&nbsp;B</a>\n <i>(C)</i></div>') == "A B (C)"
    assert strip_html(None) == ""


# -- fetch failures --------------------------------------------------------------------------------


def url_ref(fake: FakeProviders, name: str) -> VideoRef:
    return sources.local_ref(f"{fake.url}/files/{name}")


@pytest.mark.parametrize(
    ("name", "max_bytes", "message"),
    [
        ("truncated.mp4", 10_000_000, r"truncated\.mp4: body truncated .*4 tries"),
        ("big.mp4", 1000, r"big\.mp4: 0\.\d MB is over the 0\.0 MB limit"),
        ("unsized.mp4", 1000, r"unsized\.mp4: more than the 0\.0 MB limit"),
        ("errorpage.mp4", 10_000_000, r"errorpage\.mp4: the server sent text/html, not a video"),
        ("disguised.mp4", 10_000_000, r"disguised\.mp4: the server sent a text page"),
        ("missing.mp4", 10_000_000, r"missing\.mp4: HTTP 404"),
    ],
)
def test_fetch_failures_name_the_video(fake, http, name, max_bytes, message):
    with pytest.raises(SourceError, match=message):
        fetch(url_ref(fake, name), max_bytes=max_bytes, client=http)


def test_fetch_read_timeout(fake, waits):
    fake.faults["slow.mp4"] = ["slow", "slow"]
    with Http(sleep=waits, timeout=0.3, retries=1) as quick, pytest.raises(SourceError, match=r"slow\.mp4.*timed out"):
        fetch(url_ref(fake, "slow.mp4"), max_bytes=10_000_000, client=quick)


def test_fetch_5xx_then_success(fake, http):
    fake.faults["flaky.mp4"] = [503]
    assert fetch(url_ref(fake, "flaky.mp4"), max_bytes=10_000_000, client=http).data == fake.mp4


def test_fetch_local_file_and_cap(sports2d):
    ref = next(refs([str(sports2d)]))
    assert ref.id == str(sports2d.resolve()) and ref.meta["provider"] == "file"
    assert fetch(ref, max_bytes=100_000_000).data[4:8] == b"ftyp"
    with pytest.raises(SourceError, match="over the 0.0 MB limit"):
        fetch(ref, max_bytes=1000)


# -- specs, scheduling, dedupe, provenance ---------------------------------------------------------


def test_list_file_specs(fake, http, sports2d, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.txt").write_text(f"# nested\n{fake.url}/files/one.mp4\n")
    (tmp_path / "list.txt").write_text(
        f"# my sources\n\n{sports2d}\n  # indented comment\n@sub/more.txt\ncommons:people walking\n"
    )
    got = list(refs(["@list.txt"], http=http, max_videos=4))
    assert [r.id for r in got] == [
        str(sports2d.resolve()),
        "commons:File:Walking person 0.webm",
        f"{fake.url}/files/one.mp4",
        "commons:File:Walking person 1.webm",
    ]  # local files and URLs in order, taking turns with the search
    assert [r.url for r in refs(["@sub/more.txt"], http=http)] == [f"{fake.url}/files/one.mp4"]
    with pytest.raises(SourceError, match="nope.txt: cannot read the list file"):
        refs(["@nope.txt"])
    with pytest.raises(SourceError, match="not a pexels:/commons: search"):
        refs(["youtube:cats"])


def test_skip_ids_and_cross_search_dedupe(fake, http):
    fake.add_pexels("walking", 5, first_id=1167)  # 1167..1169 are also in "people walking"
    skip = {"pexels:1000", "pexels:1001"}
    got = [r.id for r in refs(["pexels:people walking", "pexels:walking"], http=http, skip_ids=skip)]
    assert len(got) == len(set(got)) == 170 - 2 + 2  # 1170 and 1171 are new
    assert not skip & set(got)


def test_everything_used_is_an_error_not_a_hang(fake, http):
    used = {f"pexels:{1000 + i}" for i in range(170)}
    for loop in (False, True):
        with pytest.raises(SourceError, match=r"no videos to use .*170 results, 170 already used"):
            next(refs(["pexels:people walking"], http=http, skip_ids=used, loop=loop))


def test_loop_cycles_files_and_searches_again_for_new_uploads(fake, http, sports2d):
    fake.pexels["few"] = [fake.pexels_video(i) for i in (1, 2, 3)]
    stream = refs([str(sports2d), "pexels:few"], http=http, loop=True, research_interval=0)
    first = [next(stream).id for _ in range(8)]
    assert first.count(str(sports2d.resolve())) >= 4
    assert {i for i in first if i.startswith("pexels:")} == {"pexels:1", "pexels:2", "pexels:3"}
    fake.pexels["few"].append(fake.pexels_video(4))  # a new upload
    later = []
    for _ in range(200):
        later.append(next(stream).id)
        if "pexels:4" in later:
            break
    assert "pexels:4" in later and not {"pexels:1", "pexels:2", "pexels:3"} & set(later)


def test_one_stream_shared_by_threads(fake, http):
    stream = refs(["pexels:people walking"], http=http)
    seen: list[str] = []

    def consume() -> None:
        for ref in stream:
            seen.append(ref.id)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(seen) == len(set(seen)) == 170


def test_provenance_round_trip(fake, http, tmp_path):
    log = ProvenanceLog(tmp_path / "run")
    stream = refs(["pexels:people walking", "commons:people walking"], http=http, max_videos=2)
    used = [fetch(ref, max_bytes=10_000_000, client=http) for ref in stream]
    for video in used:
        log.record(video, frames=42)
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "run" / "provenance.jsonl").read_text().splitlines()]
    assert [e["id"] for e in lines] == ["pexels:1000", "commons:File:Walking person 0.webm"]
    assert lines[1]["licence"] == "CC BY-SA 4.0" and lines[1]["author"] == "Jo & Ann" and lines[1]["frames"] == 42
    assert lines[0]["bytes"] == len(fake.mp4) and lines[0]["page_url"].startswith("https://www.pexels.com/video/")
    no_key(*lines)

    # A crash mid-line: the half line is ignored and the next record starts on a line of its own.
    with (tmp_path / "run" / "provenance.jsonl").open("a") as f:
        f.write('{"id": "pexels:99')
    resumed = ProvenanceLog(tmp_path / "run")
    with pytest.warns(UserWarning, match="1 unreadable"):
        done = resumed.used_ids()
    assert done == {"pexels:1000", "commons:File:Walking person 0.webm"}
    again = next(refs(["pexels:people walking"], http=http, skip_ids=done))
    assert again.id == "pexels:1001"
    resumed.record(again, frames=3)
    resumed.close()
    with pytest.warns(UserWarning):
        assert "pexels:1001" in ProvenanceLog(tmp_path / "run").used_ids()


def test_filters_validate():
    with pytest.raises(SourceError, match="orientation"):
        SourceFilters(orientation="sideways")
    with pytest.raises(SourceError, match="duration"):
        SourceFilters(min_duration=10, max_duration=5)
    assert CommonsSearch("x", http=Http(), base_url="http://h/").base_url == "http://h"


def test_stop_cuts_waits_short_and_close_ends_the_stream(fake, sports2d):
    fake.faults["search"] = [503]
    client = Http(timeout=2.0)  # the real, interruptible sleep
    client.stop()
    with client, pytest.raises(SourceError, match="stopped while waiting"):
        next(refs(["pexels:people walking"], http=client))
    stream = refs([str(sports2d)], loop=True)
    next(stream)
    stream.close()
    assert list(stream) == []


def test_retry_after_forms():
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after(httpx.Response(503, headers={"Retry-After": date}), now=now) == pytest.approx(30, abs=1)
    assert retry_after(httpx.Response(503, headers={"Retry-After": "7"})) == 7.0
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert retry_after(httpx.Response(503)) is None
