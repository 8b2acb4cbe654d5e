"""The providers' real shapes and rules against the fake server: Pexels' monthly quota and hourly
429s, odd file listings, the run's page cache and its split across ranks; Commons' continuation,
missing transcodes, etiquette (contact, two download slots per machine, maxlag, Retry-After),
attribution kept in provenance; Pexels' terms at the point of choice; the end-to-end label run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from fake_providers import KEY, MONTH_LIMIT, no_key
from streampose.cli import build_parser, main
from streampose.errors import SourceError
from streampose.sources import SourceFilters, VideoRef, fetch, refs
from streampose.sources.commons import CommonsSearch
from streampose.sources.http import Http
from streampose.sources.pages import PAGES, TTL_S
from streampose.sources.pexels import TERM, require_pexels_permission
from streampose.sources.provenance import ProvenanceLog
from streampose.sources.slots import FileSlots
from test_layout import import_graph

pytest_plugins = ["fake_providers"]  # the server and its fixtures

SRC = Path(__file__).resolve().parents[1] / "src"


def search_pages(fake) -> list[int]:
    return [int(p["page"]) for _, p, _ in fake.requests("/videos/search")]


# -- the provider protocol -------------------------------------------------------------------------


def test_core_never_imports_a_provider():
    graph = import_graph()
    core = [
        m for m in graph if m.startswith("streampose.sources.") and m.rsplit(".", 1)[1] not in ("pexels", "commons")
    ]
    providers = {"streampose.sources.pexels", "streampose.sources.commons"}
    assert "streampose.sources.fetch" in core and "streampose.sources.refs" in core
    assert {m: graph[m] & providers for m in core if graph[m] & providers} == {}


# -- Pexels: quota and odd shapes ------------------------------------------------------------------


def test_pexels_monthly_quota_warns_when_low_and_stops_when_spent(fake, http, waits):
    fake.remaining = 900  # under 5 % of the month's 20,000 after this request
    with pytest.warns(UserWarning, match=f"monthly quota is running low: 899 of {MONTH_LIMIT} requests left"):
        next(refs(["pexels:people walking"], http=http))
    PAGES.clear()
    fake.remaining = 1  # this answer says 0 left; the rollover is 20 days away
    stream = refs(["pexels:people walking"], http=http)
    for _ in range(80):
        next(stream)
    with pytest.raises(
        SourceError, match=rf"monthly quota of {MONTH_LIMIT} requests is used up; it renews on .* in 20\.0 days"
    ):
        next(stream)
    assert search_pages(fake) == [1, 1]  # page 2 was never asked for, and nothing waited for weeks
    assert waits.waits == []


def test_pexels_hourly_429_backs_off_to_an_hour_then_goes_on(fake, http, waits):
    fake.faults["search"] = [429] * 14  # no rate headers on any of them: the hourly limit
    got = list(refs(["pexels:people walking"], http=http, max_videos=3))
    assert len(got) == 3
    assert len(waits.waits) == 14 and max(waits.waits) <= 3600
    assert all(0.9 * 2**n <= w <= 2**n for n, w in enumerate(waits.waits[:12]))  # 1 s doubling
    assert all(3240 <= w <= 3600 for w in waits.waits[12:])  # capped at the hour
    assert sum(waits.waits) > 3600  # a full hour passes before it would give up


def test_pexels_backoff_cap_from_the_environment(fake, http, waits, monkeypatch):
    monkeypatch.setenv("STREAMPOSE_RATE_BACKOFF_CAP", "0.5")
    fake.faults["search"] = [429] * 3
    assert len(list(refs(["pexels:people walking"], http=http, max_videos=1))) == 1
    assert len(waits.waits) == 3 and max(waits.waits) <= 0.5


def test_pexels_null_quality_hls_and_float_fps(fake, http):
    fake.pexels["portrait"] = [fake.pexels_odd_video(1)]
    ref = next(refs(["pexels:portrait"], http=http))
    assert ref.url.endswith("pexels-1-1080.mp4")  # `quality: null` is a real MP4; the playlist is skipped
    assert ref.meta["fps"] == 29.97 and ref.meta["rendition"] == "mp4 1080x1920"
    PAGES.clear()
    small = next(refs(["pexels:portrait"], http=http, filters=SourceFilters(target_height=300)))
    assert small.url.endswith("pexels-1-360.mp4") and small.meta["fps"] is None
    assert "playlist.m3u8" not in {r[0] for r in fake.log}


def test_pexels_empty_page_deep_into_the_results_ends_the_search(fake, http):
    fake.add_pexels("deep", 100, first_id=1)
    fake.claimed["deep"] = 8000  # total_results and next_page promise more than the API serves
    got = list(refs(["pexels:deep"], http=http))
    assert len(got) == 100 and search_pages(fake) == [1, 2, 3]  # page 3 is empty: the end


def test_pexels_same_id_on_two_pages_is_used_once(fake, http):
    fake.add_pexels("drift", 85, first_id=1)
    fake.pexels["drift"][82] = fake.pexels_video(4)  # results shifted while paging: id 4 again on page 2
    got = [r.id for r in refs(["pexels:drift"], http=http)]
    assert len(got) == len(set(got)) == 84 and got.count("pexels:4") == 1


# -- the run's page cache and its split across ranks ------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StopAfter:
    """A sleep that advances the clock and ends the test's endless loop after `n` waits."""

    def __init__(self, clock: Clock, n: int) -> None:
        self.clock, self.n, self.waits = clock, n, []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds
        if len(self.waits) >= self.n:
            raise KeyboardInterrupt


def test_research_pass_asks_only_for_pages_not_seen(fake, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(PAGES, "_clock", clock)
    sleep = StopAfter(clock, 3)
    with Http(sleep=sleep, retries=0) as http:
        stream = refs(["pexels:people walking"], http=http, loop=True, research_interval=600)
        for n in range(170):
            next(stream)
            if n == 79:
                clock.now += 1000  # pages 2 and 3 are asked for later than page 1
        assert search_pages(fake) == [1, 2, 3]
        clock.now = 1000 + TTL_S - 600 + 1  # after the rest, page 1's day is over, not the others'
        with pytest.raises(KeyboardInterrupt):
            next(stream)  # pass 2 after the rest, then pass 3: nothing new in either
    assert [round(w) for w in sleep.waits] == [600, 600, 600]
    # Pass 2 asked for the one page whose day was over; pass 3, with every page cached, for nothing.
    assert search_pages(fake) == [1, 2, 3, 1]


def test_requests_are_spaced_by_the_providers_interval(fake, monkeypatch):
    monkeypatch.delenv("STREAMPOSE_SEARCH_INTERVAL")
    clock = Clock()
    monkeypatch.setattr(PAGES, "_clock", clock)
    sleep = StopAfter(clock, 99)
    with Http(sleep=sleep, retries=0) as http:
        assert len(list(refs(["pexels:people walking"], http=http))) == 170
    assert sleep.waits == [18.0, 18.0]  # 200 requests an hour, spread evenly
    assert search_pages(fake) == [1, 2, 3]


def test_ranks_split_a_search_by_pages(fake, http):
    def keep_for(rank: int):
        return lambda ref: int(hashlib.sha1(ref.id.encode()).hexdigest(), 16) % 2 == rank

    got, pages = [], []
    for rank in (0, 1):
        PAGES.clear()  # each rank is a process of its own
        fake.log.clear()
        got.append({r.id for r in refs(["pexels:people walking"], http=http, keep=keep_for(rank), shard=(rank, 2))})
        pages.append(search_pages(fake))
    assert pages[0][:2] == [1, 2] and pages[1] == [1, 3]  # page 1 for both; then pages in turn
    assert set(pages[0]) & set(pages[1]) == {1}  # no other page was asked for by both ranks
    assert not got[0] & got[1] and len(got[0] | got[1]) == 170  # every video, each on one rank
    assert min(len(g) for g in got) > 20


def test_ranks_share_a_small_search(fake, http):
    fake.add_pexels("small", 30, first_id=1)
    got = []
    for rank in range(4):
        PAGES.clear()
        keep = lambda ref, r=rank: int(hashlib.sha1(ref.id.encode()).hexdigest(), 16) % 4 == r  # noqa: E731
        got.append({r.id for r in refs(["pexels:small"], http=http, keep=keep, shard=(rank, 4))})
    assert all(got) and sum(map(len, got)) == 30  # one page: every rank gets its share of it


# -- Commons: continuation, missing transcodes, etiquette ----------------------------------------------


def test_commons_prop_continuation_is_merged_per_page(fake, http):
    fake.split_props = True
    got = list(refs(["commons:people walking"], http=http))
    assert len(got) == 120
    assert {r.meta["rendition"] for r in got} == {"480p.vp9.webm"}  # no page fell back to its original
    calls = [p for _, p, _ in fake.requests("/w/api.php")]
    assert len(calls) == 6 and [("iicontinue" in p) for p in calls] == [False, True] * 3
    assert [p.get("gsroffset") for p in calls] == [None, None, "50", "50", "100", "100"]


def test_commons_fresh_upload_without_transcodes(fake, http):
    fake.commons["fresh"] = [fake.commons_public_domain(0, size=2_000_000), fake.commons_public_domain(1, 900_000_000)]
    got = list(refs(["commons:fresh"], http=http, filters=SourceFilters(max_bytes=500_000_000)))
    assert [r.id for r in got] == ["commons:File:Walking person 0.webm"]  # the 900 MB original is never fetched
    meta = got[0].meta
    assert got[0].url.endswith("commons-0.webm") and meta["rendition"] == "original"  # not the m3u8 or .mov
    assert meta["author"] == "unknown (see the file page)" and meta["licence"] == "Public domain"
    assert meta["licence_url"] is None and meta["attribution_required"] is False
    assert meta["usage_terms"] == "Public domain"
    assert meta["attribution"] == "unknown (see the file page), Public domain, via Wikimedia Commons"


def test_commons_maxlag_with_a_float_lag(fake, http, waits):
    fake.faults["api"] = ["maxlag-float"]  # lag 0.71 s, no Retry-After
    assert next(refs(["commons:people walking"], http=http)).id.startswith("commons:")
    assert waits.waits == [1.0]  # at least a second, as the etiquette asks


def test_commons_429_with_retry_after_and_an_html_body(fake, http, waits):
    fake.faults["api"] = ["html-429"]
    ref = next(refs(["commons:people walking"], http=http))
    fake.faults[quote(ref.url.rsplit("/", 1)[-1])] = ["html-429"]  # the file host too
    video = fetch(ref, max_bytes=10_000_000, client=http)
    assert waits.waits == [2.0, 2.0] and video.data == fake.webm


def test_commons_refuses_without_a_contact(fake, http, monkeypatch):
    monkeypatch.delenv("STREAMPOSE_CONTACT")
    with pytest.raises(SourceError, match=r"Commons requires a contact .*STREAMPOSE_CONTACT"):
        refs(["commons:people walking"], http=http)
    ref = VideoRef("commons:File:x.webm", f"{fake.url}/files/commons-0.webm", {"provider": "commons"})
    with pytest.raises(SourceError, match="STREAMPOSE_CONTACT"):
        fetch(ref, max_bytes=10_000_000, client=http)
    assert fake.log == []  # nothing was sent


DOWNLOADER = """
import sys, threading
from streampose.sources import VideoRef, fetch
url = sys.argv[1]
def get(i):
    fetch(VideoRef(f"commons:File:{i}.webm", f"{url}/files/commons-{i}.webm", {"provider": "commons"}),
          max_bytes=10_000_000)
threads = [threading.Thread(target=get, args=(i,)) for i in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
"""


def test_commons_downloads_two_at_a_time_across_processes(fake, tmp_path):
    fake.delay["file"] = 0.4
    env = dict(os.environ, PYTHONPATH=str(SRC))
    procs = [subprocess.Popen([sys.executable, "-c", DOWNLOADER, fake.url], env=env) for _ in range(2)]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert len(fake.requests("/files/")) == 6 and fake.most["file"] == 2
    assert all("tester@example.org" in h["User-Agent"] for _, _, h in fake.requests("/files/"))


HOLDER = """
import sys, time
from pathlib import Path
from streampose.sources.slots import FileSlots
with FileSlots("x", 1, Path(sys.argv[1])).hold():
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_killed_holder_frees_its_slot(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    got = threading.Event()

    def take() -> None:
        with FileSlots("x", 1, tmp_path).hold():
            got.set()

    waiter = threading.Thread(target=take)
    waiter.start()
    assert not got.wait(0.5)  # the slot is taken
    holder.kill()  # kill -9: no cleanup runs in the holder
    holder.wait(10)
    assert got.wait(5)  # the kernel freed the slot with the process
    waiter.join(5)


def test_commons_api_requests_in_series(fake, http):
    fake.delay["api"] = 0.2
    fake.add_commons("dance", 200)
    searches = [CommonsSearch(q, http=http) for q in ("people walking", "dance")]
    threads = [threading.Thread(target=s.page, args=(i,)) for s in searches for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(fake.requests("/w/api.php")) == 4 and fake.most["api"] == 1


def test_provenance_keeps_attribution_terms_and_rendition(fake, http, tmp_path):
    log = ProvenanceLog(tmp_path)
    for ref in refs(["commons:people walking", "pexels:people walking"], http=http, max_videos=2):
        log.record(fetch(ref, max_bytes=10_000_000, client=http), frames=1)
    log.close()
    commons, pexels = [json.loads(line) for line in (tmp_path / "provenance.jsonl").read_text().splitlines()]
    assert commons["attribution"] == "Jo & Ann / Wikimedia Commons" and commons["attribution_required"] is True
    assert commons["usage_terms"] == "Creative Commons Attribution-Share Alike 4.0"
    assert commons["rendition"] == "480p.vp9.webm" and commons["licence"] == "CC BY-SA 4.0"
    assert pexels["rendition"] == "sd 960x540" and pexels["attribution"] == "Video by Jane Filmer on Pexels"
    no_key(commons, pexels)


# -- Pexels' terms at the point of choice --------------------------------------------------------


def test_training_or_evaluating_on_pexels_needs_the_affirmation(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text("commons:dance\npexels:dance\n")
    for specs in (["pexels:dance"], [f"@{tmp_path / 'list.txt'}"]):
        with pytest.raises(SourceError, match=r"Pexels' terms forbid .* --pexels-permission"):
            require_pexels_permission(specs, granted=False)
        require_pexels_permission(specs, granted=True)
    require_pexels_permission(["commons:dance", str(tmp_path)], granted=False)  # nothing from Pexels

    for argv in (
        ["eval", "--checkpoint", str(tmp_path / "none.pt"), "pexels:dance"],
        ["train", "--source", "pexels:dance", "--out", str(tmp_path / "run")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and TERM in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt"]  # refused before writing anything
    parsed = build_parser().parse_args(["eval", "--checkpoint", "c.pt", "pexels:x", "--pexels-permission"])
    assert parsed.pexels_permission
    with pytest.raises(SystemExit):
        build_parser().parse_args(["label", "pexels:x", "--pexels-permission"])  # label trains nothing


# -- the whole road, as a user runs it ---------------------------------------------------------------


@pytest.mark.slow
def test_label_pexels_through_hourly_429_and_bad_uploads(fake, tmp_path):
    """Done-when of issue 19: monthly headers, an hourly 429 after the first page, a cut MP4 and an
    HTML "video" among the results; `label --max-videos 2` labels two videos and exits 0."""
    fake.max_per_page = 3  # pages of three, so the second video comes from page 2
    fake.pexels["dancing"] = [
        fake.pexels_video(9000, stem="cut"),
        fake.pexels_video(9001, stem="errorpage"),
        fake.pexels_video(9002),
        *[fake.pexels_video(9003 + i) for i in range(3)],
    ]
    fake.faults["search"] = [None, 429]  # page 1 answers; page 2 first meets the hourly limit
    env = dict(
        os.environ,
        PYTHONPATH=str(SRC),
        PEXELS_API_KEY=KEY,
        PEXELS_API_URL=fake.url,
        STREAMPOSE_SEARCH_INTERVAL="0",
        STREAMPOSE_RATE_BACKOFF_CAP="0.2",
    )
    cmd = [sys.executable, "-m", "streampose", "label", "pexels:dancing", "--max-videos", "2", "--json"]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    no_key(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["videos"] == 2 and summary["frames"] == 16
    assert search_pages(fake) == [1, 2, 2]  # the 429 was waited out, not the month
    assert time.monotonic() - start < 200
