"""The pipeline stages that are not about one source or one model: decoding ahead (`prefetch`)."""

from __future__ import annotations

import threading
import time

import pytest

from streampose.errors import DecodeError
from streampose.sources import Video
from streampose.stream import stages


def test_prefetch_keeps_order_and_runs_ahead_in_another_thread():
    made_in: list[str] = []

    def source():
        for i in range(20):
            made_in.append(threading.current_thread().name)
            yield i

    it = stages.prefetch(source(), depth=3)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(made_in) < 4 and time.monotonic() < deadline:  # 1 taken + 3 queued
        time.sleep(0.01)
    assert len(made_in) == 4, "decodes `depth` items ahead of the consumer, and no further"
    assert list(it) == list(range(1, 20))
    assert set(made_in) == {"prefetch"}


def test_prefetch_raises_the_sources_error_in_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise DecodeError("clip.mp4: broken")

    got = []
    with pytest.raises(DecodeError, match="broken"):
        for x in stages.prefetch(source(), depth=2):
            got.append(x)
    assert got == [1, 2]


def test_closing_prefetch_stops_its_thread_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    before = threading.active_count()
    it = stages.prefetch(endless(), depth=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert closed.wait(5)
    assert threading.active_count() == before


def test_prefetched_frames_are_the_decoded_frames(sports2d):
    video = Video("clip", sports2d.read_bytes())
    plain = [f for _, f in stages.frames([video], max_frames=10)]
    ahead = [f for _, f in stages.prefetch(stages.frames([video], max_frames=10))]
    assert [f.index for f in ahead] == [f.index for f in plain]
    assert all((a.image == b.image).all() for a, b in zip(ahead, plain, strict=True))
