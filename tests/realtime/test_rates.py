"""The arithmetic of the minimum data rates (aioserve/rates.py), on a fake clock."""

from __future__ import annotations

from aioserve.rates import INF, MinRate


def test_nothing_is_missed_during_the_grace_period():
    rate = MinRate(100.0, grace=5.0)
    rate.start(1000.0)
    assert not rate.missed(1004.9, 0)
    assert rate.missed(1005.0, 0)
    assert rate.due(1000.0, 0) == 1005.0


def test_the_rate_is_averaged_over_the_counted_time():
    rate = MinRate(100.0, grace=5.0)
    rate.start(0.0)
    assert not rate.missed(10.0, 1000)  # exactly 100 B/s
    assert rate.missed(10.0, 999)
    assert rate.due(10.0, 1500) == 15.0  # 1500 bytes last until 15 s of counted time


def test_stopped_time_does_not_count():
    """The server is not waiting on the client (the app is not reading): the clock stops."""
    rate = MinRate(100.0, grace=5.0)
    rate.start(0.0)
    rate.stop(2.0)
    assert rate.due(100.0, 0) == INF
    assert not rate.missed(100.0, 0)
    rate.resume(100.0)
    assert rate.elapsed(101.0) == 3.0
    assert rate.due(101.0, 0) == 103.0  # 2 s + 1 s counted, 2 s of grace left
    assert rate.missed(103.0, 0)


def test_a_measure_can_start_stopped_and_counts_from_its_base():
    rate = MinRate(10.0, grace=1.0)
    rate.start(0.0, moved=500, running=False)  # e.g. a body behind 100 Continue
    assert not rate.missed(50.0, 500)
    rate.resume(50.0)
    assert rate.missed(52.0, 519)
    assert not rate.missed(52.0, 520)
