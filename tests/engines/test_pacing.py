"""Rate limits met without a storm of 429s (engines/pacing.py), alone and in the openai engine."""

from __future__ import annotations

import asyncio

import pytest

from ipm_prefdial.engines.breaker import EngineStop
from ipm_prefdial.engines.openai_http import OpenAIEngine
from ipm_prefdial.engines.pacing import Cap, Pacer, duration, exhausted_for, retry_after
from ipm_prefdial.engines.requests import ChatRequest, Sampling
from ipm_prefdial.testing.fake_llm import FakeLLM


def test_reset_durations_and_retry_waits_are_read_as_openai_writes_them():
    assert [duration(t) for t in ("20ms", "1s", "1.5s", "6m0s", "1m1.25s", "2h0m0s", "0.5", "soon", "", None)] == [
        0.02, 1.0, 1.5, 360.0, 61.25, 7200.0, 0.5, None, None, None]
    assert retry_after({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after({}) is None


def test_a_spent_token_count_holds_until_its_reset_and_a_request_count_is_left_to_the_copy_of_the_bucket():
    assert exhausted_for({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1.5s"}) == 1.5
    assert exhausted_for({"x-ratelimit-remaining-tokens": "12", "x-ratelimit-reset-tokens": "1.5s"}) == 0.0
    assert exhausted_for({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}) == 60.0
    assert exhausted_for({"x-ratelimit-remaining-requests": "0", "x-ratelimit-limit-requests": "600",
                          "x-ratelimit-reset-requests": "1s"}) == 0.0
    assert exhausted_for({}) == 0.0


def test_a_429_halves_the_limit_once_per_round_and_answers_grow_it_back():
    async def go():
        pacer = Pacer(32)
        first = await pacer.acquire()
        second = await pacer.acquire()
        await pacer.release()
        await pacer.release()
        pacer.limited(first, {})
        pacer.limited(second, {})  # the same burst: sent before the cut
        assert (pacer.limit, pacer.cuts) == (16.0, 1)
        pacer.answered({})
        assert pacer.limit == 16.0625
        third = await pacer.acquire()
        await pacer.release()
        pacer.limited(third, {})  # sent after the cut: a new round
        assert pacer.limit == pytest.approx(8.03125) and pacer.cuts == 2
        for _ in range(4):
            pacer.limited(third, {})
        assert pacer.cuts == 2

    asyncio.run(go())


def test_the_copy_of_the_server_bucket_makes_an_attempt_wait_for_room():
    async def go():
        pacer = Pacer(8)
        pacer.answered({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "2"})
        now = pacer.room_at
        assert (pacer.rate, pacer.room) == (10.0, 2.0)
        assert [pacer._take(now), pacer._take(now)] == [0.0, 0.0]
        assert pacer._take(now) == pytest.approx(0.1)  # no room: one request's share of a second at 10 a second
        assert pacer._take(now + 0.1) == 0.0

    asyncio.run(go())


async def burst(url: str, n: int, **options) -> list:
    """``n`` one-message requests at once through an engine of 16 in flight (``options``: its other settings)."""
    engine = OpenAIEngine(url, concurrency=16, give_up_after=30, **options)
    await engine.start()
    try:
        requests = [ChatRequest.chat([{"role": "user", "content": f"m{i}"}], sampling=Sampling(max_tokens=64),
                                     group=f"d{i}") for i in range(n)]
        return await asyncio.gather(*(engine.complete(r) for r in requests))
    finally:
        await engine.close()


def test_an_engine_at_16_in_flight_meets_a_limit_of_1200_a_minute_with_few_429s():
    """40 requests that 16 at once would send in a burst: the test server lets 20 in at once, then 20 a second."""
    server = FakeLLM(rpm=1200, latency=0.05)
    with server as url:
        results = asyncio.run(burst(url, 40))
    assert all(r.ok for r in results)
    assert server.answered == 40
    # without the pacing, about 190 (a 429 is retried at once, 16 in flight); a loaded machine spreads the first burst
    assert server.rate_limited <= 4, f"{server.rate_limited} requests were answered 429"


def test_the_users_caps_are_buckets_of_one_second():
    cap = Cap(10.0)  # 600 a minute: 10 at once, then 10 a second
    now = cap.at
    for _ in range(10):
        assert cap.wait(now, 1) == 0.0
        cap.take(1)
    assert cap.wait(now, 1) == pytest.approx(0.1)
    assert cap.wait(now + 0.25, 1) == 0.0 and cap.room == pytest.approx(2.5)
    tokens = Cap(100.0)  # 6,000 tokens a minute
    tokens.take(100)
    assert tokens.wait(tokens.at, 250) == pytest.approx(1.0)  # bigger than the bucket: goes when it is full


def test_a_client_cap_keeps_even_the_first_burst_under_the_servers_limit():
    """20 requests, 16 in flight, against a server allowing 600 a minute (10 at once): a client cap of 480 a minute
    sends 8 at once, then 8 a second, and no request is answered 429."""
    server = FakeLLM(rpm=600)
    with server as url:
        results = asyncio.run(burst(url, 20, rpm=480))
    assert all(r.ok for r in results) and server.answered == 20
    assert server.rate_limited == 0
    first = server.arrivals[0]  # the first chat request
    assert sum(t - first < 0.9 for t in server.arrivals) <= 8 + 8  # the burst, then 8 a second at most


def test_a_server_with_no_room_for_hours_is_given_up_not_waited_for():
    """0.01 requests a minute: the copy of the bucket would hold the next attempt for 6,000 s; it goes out instead,
    is answered 429, and the engine gives up after --give-up-after as for any endpoint that stopped answering."""
    async def go(url: str):
        engine = OpenAIEngine(url, concurrency=4, give_up_after=1, max_backoff_s=0.2)
        await engine.start()
        try:
            requests = [ChatRequest.chat([{"role": "user", "content": f"m{i}"}], sampling=Sampling(max_tokens=64),
                                         group=f"d{i}") for i in range(6)]
            await asyncio.wait_for(asyncio.gather(*(engine.complete(r) for r in requests)), 30)
        finally:
            await engine.close()

    server = FakeLLM(rpm=0.01)
    with server as url, pytest.raises(EngineStop, match="rate_limited: HTTP 429"):
        asyncio.run(go(url))
    assert server.answered == 1 and server.rate_limited >= 1
