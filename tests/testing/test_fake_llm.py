"""The package's test server limits requests a minute as OpenAI's API does, with its headers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from ipm_prefdial.testing.fake_llm import Bucket, FakeLLM, reset_text


def test_a_bucket_of_600_a_minute_lets_ten_in_at_once_then_one_every_tenth_of_a_second():
    bucket = Bucket(600, now=0.0)
    assert [bucket.take(0.0)[0] for _ in range(10)] == [True] * 10
    let_in, headers = bucket.take(0.0)
    assert not let_in
    assert headers == {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
                       "x-ratelimit-reset-requests": "1s", "retry-after-ms": "100", "retry-after": "1"}
    assert bucket.take(0.05) == (False, {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
                                         "x-ratelimit-reset-requests": "950ms", "retry-after-ms": "50",
                                         "retry-after": "1"})
    assert bucket.take(0.1)[0]
    assert bucket.take(1.1) == (True, {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "9",
                                       "x-ratelimit-reset-requests": "100ms"})


def test_reset_times_are_written_as_openai_writes_them():
    assert [reset_text(s) for s in (0.02, 0.5, 1.5, 360, 61.25)] == ["20ms", "500ms", "1.5s", "6m0s", "1m1.25s"]


def post(url: str) -> tuple[int, dict, dict]:
    body = json.dumps({"model": "fake-llm", "messages": [{"role": "user", "content": "hello"}],
                       "max_tokens": 8}).encode()
    request = urllib.request.Request(url + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_the_server_answers_429_with_retry_after_once_a_minute_s_share_is_spent():
    server = FakeLLM(rpm=60).start()  # one request a second, one at a time
    try:
        status, headers, _ = post(server.url)
        assert status == 200
        assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"],
                headers["x-ratelimit-reset-requests"]) == ("60", "0", "1s")
        status, headers, body = post(server.url)
        assert status == 429
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert 800 <= int(headers["retry-after-ms"]) <= 1000 and headers["retry-after"] == "1"
        assert (server.answered, server.rate_limited, len(server.arrivals)) == (1, 1, 2)
    finally:
        server.stop()
