"""The adaptive concurrency limit alone (:mod:`liveroom.async_client.concurrency`).

How it grows on clean replies, cuts on a cap signal once per round trip, tells
a steady share of random 429s from a rising one, and lends the slot of a job
waiting for its retry. Its outcomes against real servers under provider limits
are in test_score_provider_limits.py.
"""

from __future__ import annotations

import asyncio

import pytest

from liveroom.async_client.concurrency import ConcurrencyLimit, Slot


def test_clean_replies_raise_the_limit_one_slot_per_round_trip():
    lim = ConcurrencyLimit(64)
    lim.limit = 10.0
    lim.active = 10
    for _ in range(10):  # one round trip's worth of replies
        lim.ok(lim.send())
    assert 10.9 < lim.limit < 11.1
    lim.active = 2  # the limit is not what holds sends back: nothing to learn
    lim.ok(lim.send())
    assert lim.limit < 11.1


def test_a_cap_cuts_once_per_round_trip_and_clamps_to_what_is_out():
    lim = ConcurrencyLimit(64)
    stamps = [lim.send() for _ in range(64)]
    assert lim.throttled(stamps[20], cap=True)
    assert lim.limit == pytest.approx(64 * 0.9) and lim.cuts == 1
    for st in stamps[21:40]:  # the rest of that burst: old news, no more cuts, but never more than is out
        lim.throttled(st, cap=True)
    assert lim.cuts == 1 and lim.limit == lim.sending == 44
    later = lim.send()
    assert lim.throttled(later, cap=True) and lim.cuts == 2  # sent after the cut: a new round trip


def test_random_429s_at_a_steady_share_move_nothing():
    lim = ConcurrencyLimit(64)
    x = 12345
    for _ in range(20_000):  # a 10% share, whatever the load
        x = (x * 1103515245 + 12345) % 2**31
        stamp = lim.send()
        if x % 10 == 0:
            assert not lim.throttled(stamp, cap=False)
        else:
            lim.ok(stamp)
    assert lim.limit == 64 and lim.cuts == 0


def test_a_rising_429_share_is_a_cap_signal_and_fixed_never_moves():
    for adaptive in (True, False):
        lim = ConcurrencyLimit(32, adaptive)
        over = [lim.throttled(lim.send(), cap=False) for _ in range(12)]
        assert over[:9] == [False] * 9 and all(over[9:])
        assert (lim.limit < 32) is adaptive


async def test_a_job_waiting_for_its_retry_lends_its_slot_and_comes_back_first():
    lim = ConcurrencyLimit(1)
    waiting, new = Slot(lim), Slot(lim)
    await waiting.take()
    waiting.park()  # its retry wait: the one slot is free for another job
    await asyncio.wait_for(new.take(), 1)
    back = asyncio.create_task(waiting.resume())
    later = asyncio.create_task(Slot(lim).take())
    await asyncio.sleep(0)
    new.release()
    await asyncio.wait_for(back, 1)  # ahead of the job that asked after it
    assert not later.done() and lim.active == 1
    waiting.release()
    await asyncio.wait_for(later, 1)
