"""The engine's rate limits: requests spread evenly, a token bucket, a shared cool-down."""

from __future__ import annotations

import asyncio
import time

from kit import at_once, before_timer
from liveroom.async_client.limits import CoolDown, Limits, TokenBucket


async def timed(n: int, acquire) -> list[float]:
    """Monotonic times at which each of ``n`` sequential acquires returned."""
    stamps = []
    for _ in range(n):
        await acquire()
        stamps.append(time.monotonic())
    return stamps


async def test_rpm_spaces_sends_evenly():
    limits = Limits(rpm=600)  # one send per 0.1 s
    stamps = await before_timer(2.0, timed(6, lambda: limits.acquire(1)))  # not held back for longer
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert min(gaps) >= 0.09, gaps  # never a burst


async def test_rpm_holds_back_concurrent_workers_too():
    limits = Limits(rpm=1200)  # 0.05 s apart
    stamps: list[float] = []

    async def worker() -> None:
        await limits.acquire(1)
        stamps.append(time.monotonic())

    await asyncio.gather(*(worker() for _ in range(5)))
    stamps.sort()
    assert min(b - a for a, b in zip(stamps, stamps[1:])) >= 0.04


async def test_no_limits_do_not_wait():
    limits = Limits()
    assert all(at_once(limits.acquire(10_000)) for _ in range(1000))


async def test_token_bucket_waits_for_its_refill():
    bucket = TokenBucket(per_minute=600)  # 10 tokens a second, holds 10
    assert bucket.capacity == 10
    t0 = time.monotonic()
    assert at_once(bucket.take(10))  # a full bucket
    await before_timer(2.0, bucket.take(5))   # empty: half a second of refill
    assert 0.45 <= time.monotonic() - t0


async def test_token_bucket_correction_gives_back_an_overcharge():
    bucket = TokenBucket(per_minute=600)
    await bucket.take(10)
    bucket.correct(-8)  # the reply used 8 fewer tokens than estimated
    assert at_once(bucket.take(8))


async def test_limits_settle_charges_what_the_server_counted():
    limits = Limits(tpm=600)
    await limits.acquire(10)
    limits.settle(10, 30)  # used 20 more than estimated: the bucket is in debt
    t0 = time.monotonic()
    await limits.acquire(1)
    assert time.monotonic() - t0 >= 1.5  # 20 tokens of debt + 1 at 10 a second


async def test_a_request_larger_than_the_bucket_waits_for_a_full_one():
    bucket = TokenBucket(per_minute=600)
    await bucket.take(10)
    t0 = time.monotonic()
    await before_timer(3.0, bucket.take(50))  # more than the capacity: waits until the bucket is full, not forever
    assert 0.9 <= time.monotonic() - t0


async def test_cooldown_pauses_every_waiter_until_it_ends():
    cool = CoolDown()
    cool.trip(0.2)
    cool.trip(0.05)  # an earlier end never shortens it
    t0 = time.monotonic()
    await asyncio.gather(cool.wait(), cool.wait())
    assert time.monotonic() - t0 >= 0.19
