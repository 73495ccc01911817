"""The request accounting's histogram and slow list (pure, no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unionfs.cli.watch_cmd import rates
from unionfs.fuse.metrics import (
    BUCKETS,
    RequestStats,
    SlowestRecent,
    bucket_bounds,
    bucket_of,
    percentile,
)


@given(st.integers(0, 2**44 - 1))
def test_a_duration_falls_in_its_bucket(ns: int) -> None:
    index = bucket_of(ns)
    assert 0 <= index < BUCKETS
    low, high = bucket_bounds(index)
    assert low <= ns < high
    assert high - low <= max(1, low // 4)  # within a quarter of the value


def test_buckets_are_contiguous() -> None:
    for index in range(BUCKETS - 1):
        assert bucket_bounds(index)[1] == bucket_bounds(index + 1)[0]


def test_percentiles_of_a_known_spread() -> None:
    stats = RequestStats()
    for us in range(1, 1001):  # 1 µs .. 1 ms, uniformly
        stats.add(us * 1000, failed=us % 100 == 0)
    out = stats.snapshot()
    assert out["count"] == 1000 and out["errors"] == 10
    for pct, want in ((50, 500), (90, 900), (99, 990)):
        assert abs(out[f"p{pct}_us"] - want) <= want / 8, (pct, out)
    assert out["max_us"] == 1000.0
    assert percentile([0] * BUCKETS, 0, 50) == 0.0


def test_the_slow_list_keeps_the_slowest_of_recent_windows() -> None:
    slow = SlowestRecent(kept=3, window_ns=1000)
    now = slow.window_start
    for ns in (5, 50, 7, 40, 30, 1):
        if slow.wants(ns, now):
            slow.keep("getattr", ns, 0, f"req {ns}")
    assert [i["target"] for i in slow.snapshot()] == ["req 50", "req 40", "req 30"]
    assert not slow.wants(29, now)  # faster than all kept: one comparison, nothing kept
    # Two windows later the old ones are gone; the previous window still counts as recent.
    assert slow.wants(2, now + 1500)
    slow.keep("lookup", 2, 2, "new")
    assert [i["target"] for i in slow.snapshot()] == ["req 50", "req 40", "req 30"]
    assert slow.wants(1, now + 3000)
    assert [i["target"] for i in slow.snapshot()] == ["new"]


def test_rates_between_two_samples() -> None:
    def sample(t: float, lookups: int, read: int) -> dict[str, object]:
        return {"time": t, "requests_since_mount": {"lookup": lookups},
                "bytes": {"read": read, "written": 0}, "copy_ups": {"count": 0}}

    got = rates(sample(10.0, 100, 0), sample(12.0, 300, 4096))
    assert got["requests"] == {"lookup": 100.0}
    assert got["bytes_read"] == 2048.0
