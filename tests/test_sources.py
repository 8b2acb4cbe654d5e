"""Video sources against a local server that speaks the Pexels and Commons protocols.

The server (fake_providers.py) is stdlib `ThreadingHTTPServer` on 127.0.0.1: same paths,
parameters, headers and JSON fields as the real APIs (see shared/notes/sources.md), serving real
clip bytes for downloads. The clients run unmodified; only the base URLs point at the server, and
sleeping is injected (`Http(sleep=...)`) so backoffs and rate-limit waits are recorded instead of
waited. The providers' odd shapes and etiquette are tested in test_sources_protocol.py.
"""

from __future__ import annotations

import email.utils
import json
import logging
import subprocess
import sys
import threading
import time

import httpx
import pytest

from fake_providers import KEY, FakeProviders, no_key
from streampose import sources
from streampose.errors import SourceError
from streampose.sources import SourceFilters, VideoRef, fetch, refs
from streampose.sources.commons import CommonsSearch, choose_rendition, strip_html
from streampose.sources.http import Http, TransientSourceError, retry_after
from streampose.sources.pages import PAGES
from streampose.sources.pexels import PexelsSearch, choose_file
from streampose.sources.provenance import ProvenanceLog
from streampose.stream.decode import probe

pytest_plugins = ["fake_providers"]  # the server and its fixtures

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

    # A Reset seen on a 200 is the month's rollover, weeks away: a 429 is the hourly limit, backed off
    # from a second and doubling (capped at an hour), never "waiting 28800 min" for the Reset.
    stream = refs(["pexels:people walking"], http=http)
    for _ in range(80):
        next(stream)
    fake.faults["search"] = [429, 429, 429]
    next(stream)  # page 2: three 429s, then success
    assert [round(w) for w in waits.waits[-3:]] == [1, 2, 4]


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
    page = search.page(0)
    assert len(page.refs) == 80 and page.more and page.total == 170
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


def test_loop_cycles_files_and_searches_again_for_new_uploads(fake, http, sports2d, monkeypatch):
    monkeypatch.setattr(PAGES, "ttl", 0.0)  # cached pages are reused for a day; here the day is over at once
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


def test_filters_validate(monkeypatch):
    monkeypatch.setenv("STREAMPOSE_CONTACT", "tester@example.org")
    with pytest.raises(SourceError, match="orientation"):
        SourceFilters(orientation="sideways")
    with pytest.raises(SourceError, match="duration"):
        SourceFilters(min_duration=10, max_duration=5)
    assert CommonsSearch("x", http=Http(), base_url="http://h/").base_url == "http://h"


def test_stop_cuts_waits_short_and_close_ends_the_stream(fake, sports2d):
    fake.faults["search"] = [503]
    client = Http(timeout=2.0)  # the real, interruptible sleep
    client.stop()
    with client, pytest.raises(SourceError, match=": stopped"):
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
