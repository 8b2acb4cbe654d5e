"""Ring buffer: no torn or duplicated samples under concurrency, counters, waits and failures."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streampose.errors import ProducerError
from streampose.poses.skeletons import get_skeleton
from streampose.stream.buffer import BufferClosedError, RingBuffer
from streampose.stream.crops import Sample

J = get_skeleton("comotion27").num_joints
S = 8
PER_PRODUCER = 1_000_000  # ids are producer * PER_PRODUCER + k: below 2**24, so exact in float32


def _pattern(sample_id: int) -> np.ndarray:
    """An image that differs at every pixel between ids, so a torn copy cannot pass as whole."""
    flat = (np.arange(S * S * 3, dtype=np.int64) * 31 + sample_id * 7 + sample_id // 251) % 256
    return flat.astype(np.uint8).reshape(S, S, 3)


def _sample(sample_id: int, source: str = "src") -> Sample:
    return Sample(
        image=_pattern(sample_id),
        joints3d=np.full((J, 3), sample_id, np.float32),
        joints2d=np.full((J, 2), sample_id, np.float32),
        visibility=np.full(J, sample_id, np.float32),
        source=source,
        frame=sample_id,
        track_id=sample_id,
    )


def _ids(batch: dict[str, np.ndarray]) -> list[int]:
    return [int(v) for v in batch["joints3d"][:, 0, 0]]


def _check_whole(batch: dict[str, np.ndarray]) -> list[int]:
    """Every drawn sample's image and labels come from one and the same put."""
    ids = _ids(batch)
    for i, sid in enumerate(ids):
        assert (batch["joints3d"][i] == sid).all()
        assert (batch["joints2d"][i] == sid).all()
        assert (batch["visibility"][i] == sid).all()
        assert np.array_equal(batch["image"][i], _pattern(sid))
    return ids


def _buffer(capacity: int, **kwargs) -> RingBuffer:
    return RingBuffer(J, S, budget_bytes=capacity * RingBuffer.sample_nbytes(J, S), **kwargs)


def test_concurrent_producers_and_consumers_never_see_torn_samples() -> None:
    buf = _buffer(64)
    stop = threading.Event()
    errors: list[BaseException] = []
    put_ids: dict[int, list[int]] = {p: [] for p in range(3)}
    drawn_counts: list[int] = []
    lock = threading.Lock()

    def produce(p: int) -> None:
        try:
            k = 0
            while not stop.is_set():
                sid = p * PER_PRODUCER + k
                assert buf.put(_sample(sid, source=f"producer{p}"))
                put_ids[p].append(sid)
                buf.note_frames(1)
                k += 1
                if k % 50 == 0:
                    time.sleep(0.001)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def consume(seed: int) -> None:
        rng = np.random.default_rng(seed)
        n = 0
        try:
            while not stop.is_set():
                batch = buf.sample(16, rng=rng, timeout=10)
                for sid in _check_whole(batch):
                    assert sid // PER_PRODUCER in put_ids
                n += len(batch["image"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        with lock:
            drawn_counts.append(n)

    threads = [threading.Thread(target=produce, args=(p,)) for p in put_ids]
    threads += [threading.Thread(target=consume, args=(seed,)) for seed in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors

    stats = buf.stats()
    inserted = sum(len(v) for v in put_ids.values())
    assert inserted > buf.capacity  # the buffer wrapped around, so eviction was exercised
    assert stats["inserted"] == inserted
    assert stats["inserted"] - stats["evicted"] == stats["fill"] == buf.capacity
    assert stats["drawn"] == sum(drawn_counts) > 0
    assert stats["frames_per_s"] > 0 and stats["persons_per_s"] > 0

    snap = buf.snapshot()
    live = _check_whole(snap)
    assert len(set(live)) == len(live) == buf.capacity  # no slot holds a duplicate
    for p, ids in put_ids.items():
        mine = [sid for sid in live if sid // PER_PRODUCER == p]
        # What survives of each producer is its newest puts, in order.
        assert mine == ids[len(ids) - len(mine) :]
        assert all(src == f"producer{p}" for src, sid in zip(snap["source"], live, strict=True) if sid in mine)
    np.testing.assert_array_equal(snap["frame"], live)
    np.testing.assert_array_equal(snap["track_id"], live)


def test_memory_is_preallocated_within_budget() -> None:
    per = RingBuffer.sample_nbytes(J, 192)
    budget = 10 * per + per // 2
    buf = RingBuffer(J, 192, budget_bytes=budget)
    assert buf.capacity == 10
    assert buf.nbytes == 10 * per <= budget
    for i in range(25):
        buf.put(_sample_192(i))
    assert buf.nbytes == 10 * per  # nothing grows as data flows


def _sample_192(i: int) -> Sample:
    return Sample(
        image=np.full((192, 192, 3), i, np.uint8),
        joints3d=np.zeros((J, 3), np.float32),
        joints2d=np.zeros((J, 2), np.float32),
        visibility=np.ones(J, np.float32),
        source="s",
        frame=i,
        track_id=0,
    )


def test_budget_too_small_raises() -> None:
    with pytest.raises(ValueError, match="holds no sample"):
        RingBuffer(J, 192, budget_bytes=1000)


def test_put_rejects_wrong_shapes() -> None:
    buf = _buffer(4)
    bad = _sample(1)
    bad.joints3d = np.zeros((J + 1, 3), np.float32)
    with pytest.raises(ValueError, match="joints"):
        buf.put(bad)
    bad = _sample(1)
    bad.image = np.zeros((S + 1, S, 3), np.uint8)
    with pytest.raises(ValueError, match="image"):
        buf.put(bad)


def test_newest_overwrites_oldest() -> None:
    buf = _buffer(3)
    for i in range(5):
        buf.put(_sample(i))
    assert _ids(buf.snapshot()) == [2, 3, 4]
    stats = buf.stats()
    assert (stats["inserted"], stats["evicted"], stats["fill"]) == (5, 2, 3)
    drawn = set(_ids(buf.sample(200, rng=np.random.default_rng(0))))
    assert drawn == {2, 3, 4}  # uniform over live slots only
    assert buf.stats()["drawn"] == 200
    assert buf.stats()["replay_ratio"] == pytest.approx(40.0)


def test_sample_is_reproducible_with_a_seeded_rng() -> None:
    buf = _buffer(10)
    for i in range(10):
        buf.put(_sample(i))
    a = buf.sample(8, rng=np.random.default_rng(5))
    b = buf.sample(8, rng=np.random.default_rng(5))
    for key in ("image", "joints3d", "joints2d", "visibility"):
        np.testing.assert_array_equal(a[key], b[key])
    a["image"][:] = 0  # copies: writing to a batch leaves the buffer alone
    _check_whole(buf.snapshot())


def test_min_fill_waits_and_times_out_with_a_clear_message() -> None:
    buf = _buffer(10, min_fill=3)
    buf.put(_sample(0))
    with pytest.raises(TimeoutError, match="min_fill: 1 of 3"):
        buf.sample(2, timeout=0.05)

    def late_producer() -> None:
        time.sleep(0.1)
        buf.put(_sample(1))
        buf.put(_sample(2))

    t = threading.Thread(target=late_producer)
    t.start()
    batch = buf.sample(4, rng=np.random.default_rng(0), timeout=10)
    t.join()
    assert set(_check_whole(batch)) <= {0, 1, 2}
    assert buf.stats()["inserted"] == 3


def test_max_replay_makes_the_consumer_wait_for_fresh_data() -> None:
    buf = _buffer(16, max_replay=1.0)
    for i in range(4):
        buf.put(_sample(i))
    buf.sample(4)
    buf.sample(4)  # drawn 8 / inserted 4: ratio 2 > 1
    with pytest.raises(TimeoutError, match="replay ratio 2.00"):
        buf.sample(1, timeout=0.05)

    result: list[dict[str, np.ndarray]] = []
    consumer = threading.Thread(target=lambda: result.append(buf.sample(2, timeout=10)))
    consumer.start()
    consumer.join(timeout=0.2)
    assert consumer.is_alive() and not result  # still blocked: no fresh data yet
    for i in range(4, 8):
        buf.put(_sample(i))  # ratio 8 / 8 = 1: allowed again
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert len(result) == 1 and len(_check_whole(result[0])) == 2
    assert buf.stats()["drawn"] == 10


def _blocked_consumer(buf: RingBuffer) -> tuple[threading.Thread, list[BaseException]]:
    """A thread waiting in sample(1); what it raises lands in the returned list."""
    caught: list[BaseException] = []

    def consume() -> None:
        try:
            buf.sample(1, timeout=30)
        except BaseException as exc:
            caught.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    return consumer, caught


def test_fail_wakes_a_blocked_consumer_with_producer_error() -> None:
    buf = _buffer(4)
    consumer, caught = _blocked_consumer(buf)
    consumer.join(timeout=0.1)
    assert consumer.is_alive()
    original = ValueError("decoder died on frame 12")
    buf.fail(original)
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], ProducerError)
    assert "ValueError" in str(caught[0]) and "decoder died on frame 12" in str(caught[0])
    assert caught[0].__cause__ is original

    buf.put(_sample(0))  # even with data, the failure is not forgotten
    with pytest.raises(ProducerError, match="decoder died") as info:
        buf.sample(1)
    assert info.value.__cause__ is original
    buf.fail(RuntimeError("a later consequence"))
    with pytest.raises(ProducerError, match="decoder died"):
        buf.sample(1)


def test_close_on_empty_buffer_wakes_waiters_with_a_clear_error() -> None:
    buf = _buffer(4)
    consumer, caught = _blocked_consumer(buf)
    consumer.join(timeout=0.1)
    buf.close()
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], BufferClosedError)
    assert "no sample will ever arrive" in str(caught[0])
    assert not buf.put(_sample(0))  # dropped after close
    assert buf.stats()["inserted"] == 0


def test_closed_buffer_serves_what_it_has_without_waiting() -> None:
    buf = _buffer(8, min_fill=5, max_replay=0.5)
    buf.put(_sample(0))
    buf.put(_sample(1))
    with pytest.raises(TimeoutError):
        buf.sample(1, timeout=0.01)
    buf.close()
    assert buf.closed
    for _ in range(3):  # below min_fill and far above max_replay, but nothing more is coming
        assert set(_check_whole(buf.sample(4, timeout=1))) <= {0, 1}


def test_stats_rates_and_replay_ratio() -> None:
    buf = _buffer(8)
    empty = buf.stats()
    assert empty["replay_ratio"] == 0.0 and empty["frames_per_s"] == 0.0 and empty["persons_per_s"] == 0.0
    buf.note_frames(10)
    for i in range(3):
        buf.put(_sample(i))
    buf.sample(6)
    stats = buf.stats()
    assert stats["replay_ratio"] == pytest.approx(2.0)
    assert stats["frames_per_s"] > 0 and stats["persons_per_s"] > 0
    assert stats["frames_per_s"] / stats["persons_per_s"] == pytest.approx(10 / 3)
    assert stats["capacity"] == 8


def test_draws_balance_persons_across_strata_and_keep_the_share_of_crops_of_nobody() -> None:
    """90 persons of stratum 0, 10 of stratum 1 and 20 crops of nobody (id 0: visibility 0):
    persons are drawn half from each stratum, and crops of nobody keep their uniform share."""
    buf = _buffer(200, stratum=lambda joints3d: int(joints3d[0, 0] > 1000))
    for sid in [*range(1, 91), *range(1001, 1011)]:
        buf.put(_sample(sid))
    for _ in range(20):
        buf.put(_sample(0))
    ids = np.array(_check_whole(buf.sample(20_000, rng=np.random.default_rng(0))))
    nobody, rare = (ids == 0).mean(), (ids > 1000).mean()
    assert abs(nobody - 20 / 120) < 0.02
    assert abs(rare - (1 - nobody) / 2) < 0.02  # 10 persons drawn as often as the other 90
    plain = _buffer(200)
    for sid in [*range(1, 91), *range(1001, 1011)]:
        plain.put(_sample(sid))
    assert (np.array(_ids(plain.sample(20_000, rng=np.random.default_rng(0)))) > 1000).mean() < 0.15
