"""A deterministic OpenAI-compatible chat server for the test suite and the benchmarks: no model, no GPU.

Every answer is a pure function of the request (messages, seed, max_tokens, output constraint), so two runs
of the same build give the same answers, and the pipeline (scheduling, cache, resume, executors, thousands of
requests) can be tested at speed. What it answers:

- ``response_format`` with a JSON schema: a document valid for that schema (enums picked by a hash, strings
  short sentences); the judge's verdict and the one-field choice object of the ``json_schema`` mode; cut at
  ``max_tokens`` (four characters a token) with ``finish_reason: length``;
- a system prompt that asks for ``[strategy] reply``: a tag (usually one of the strategies it lists) and a reply;
- anything else: one to three canned sentences, cut at ``max_tokens`` words (``finish_reason: length``).

Every answered request is appended to ``log`` (one JSON line: the sha256 of the request body, its user text's
first 60 characters and the time) before the response is written, so a test can tell which requests the server
answered, even after the client was killed. ``latency`` delays each answer; ``fail_percent`` makes a fixed share of
the requests (chosen by content) fail with HTTP 500 on every attempt, until it is set back to 0.

``rpm`` limits the requests a minute as OpenAI's API does (a token bucket holding one second of requests, refilled
continuously): every answer carries ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` and
``x-ratelimit-reset-requests`` (``"1s"``, ``"250ms"``: the time until the bucket is full again), and a request that
finds the bucket empty is answered 429 (``rate_limit_exceeded``) with ``retry-after-ms`` and ``retry-after`` (the
time until the next request would be let in). ``rate_limited`` counts those answers, ``arrivals`` the times of all
chat requests.

The batch API (``/v1/files``, ``/v1/batches`` and Azure's forms) is ``fake_batches.Batches`` (``batches``): its lines
are answered as chat requests are, and logged alike.

Run in a thread (``FakeLLM``) or as a process: ``python -m ipm_prefdial.testing.fake_llm --log FILE [--latency S]
[--rpm N] [--port P]`` prints ``http://127.0.0.1:PORT/v1``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ipm_prefdial.testing.fake_batches import Batches

MODEL_ID = "fake-llm"
STRATEGIES = ("Question", "Restatement or Paraphrasing", "Reflection of feelings", "Self-disclosure",
              "Affirmation and Reassurance", "Providing Suggestions", "Information", "Others")
SENTENCES = ("That sounds really hard.", "I can hear how much this weighs on you.", "What happened next?",
             "Have you talked to anyone about it?", "It makes sense that you feel this way.",
             "I went through something similar once.", "You have handled a lot already.",
             "Maybe a short walk could help you clear your head.", "Many people find a routine helpful.",
             "Thank you for telling me.")


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).digest()


def _pick(options, digest: bytes, k: int):
    return options[digest[k % len(digest)] % len(options)]


def _from_schema(schema: dict, digest: bytes, depth: int = 0):
    if "enum" in schema:
        return _pick(schema["enum"], digest, depth)
    kind = schema.get("type")
    if kind == "object":
        return {name: _from_schema(sub, digest, depth + i + 1)
                for i, (name, sub) in enumerate(sorted(schema.get("properties", {}).items()))}
    if kind == "integer":
        return digest[depth % len(digest)] % 6
    return _pick(SENTENCES, digest, depth)


def answer(body: dict) -> tuple[str, str, int, int]:
    """(text, finish_reason, prompt_tokens, completion_tokens) of one chat request."""
    messages = body.get("messages") or []
    digest = _digest(messages, body.get("seed"), body.get("temperature"))
    prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 4 * len(messages)
    limit = int(body.get("max_tokens") or 64)
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        text = json.dumps(_from_schema(fmt["json_schema"]["schema"], digest))
        tokens = max(1, len(text) // 4)  # about four characters a token
        if tokens > limit:
            return text[: 4 * limit], "length", prompt_tokens, limit
        return text, "stop", prompt_tokens, tokens
    system = next((str(m.get("content", "")) for m in messages if m.get("role") == "system"), "")
    words = " ".join(_pick(SENTENCES, digest, k) for k in range(1 + digest[0] % 3)).split()
    if "square brackets" in system:  # the joint model's format: a tag, then the reply
        # one of the strategies the system prompt lists ("- Name: definition" lines; ESConv's list is STRATEGIES)
        listed = tuple(line[2:].split(":")[0] for line in system.split("\n") if line.startswith("- ") and ":" in line)
        tag = "Made-up" if digest[1] % 10 == 0 else _pick(listed or STRATEGIES, digest, 2)
        words = [f"[{tag}]", *words]
    finish = "stop"
    if len(words) > limit:
        words, finish = words[:limit], "length"
    return " ".join(words), finish, prompt_tokens, len(words)


class FakeLLM:
    """The server on 127.0.0.1 in a background thread: ``with FakeLLM(log) as url: ...``."""

    def __init__(self, log: str | Path | None = None, latency: float = 0.0, keep_bodies: bool = False,
                 fail_percent: float = 0.0, port: int = 0, rpm: float = 0.0):
        self.log_path = Path(log) if log else None
        self.latency = latency
        self.bucket = Bucket(rpm) if rpm else None
        self.rate_limited = 0
        self.arrivals: list[float] = []  # time.monotonic() of every chat request, answered or not
        # this share of the requests (chosen by their content, so the same ones every time) gets HTTP 500 on every
        # attempt until ``fail_percent`` is set to 0 (a server that is broken for some requests, then healed)
        self.fail_percent = fail_percent
        self.refused = 0
        self.answered = 0
        self.prompt_tokens = self.completion_tokens = 0  # the usage of every answer, as the server counts it
        self.bodies: list[dict] | None = [] if keep_bodies else None  # every answered request, parsed
        self.batches = Batches(self.answer_line)
        self._lock = threading.Lock()
        self._log = open(self.log_path, "a", encoding="utf-8") if self.log_path else None  # noqa: SIM115
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30
            # headers and body go out in two writes on a keep-alive socket: without TCP_NODELAY the body waits for
            # the client's delayed ACK (~40 ms), a latency of the test server that would pose as the client's
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _reply(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _batches(self, method: str, raw: bytes = b"") -> None:
                with fake._lock:
                    status, payload = fake.batches.route(method, self.path, self.headers, raw)
                if isinstance(payload, bytes):
                    self.send_response(status)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                else:
                    self._reply(status, payload)

            def do_GET(self):
                if fake.batches.handles(self.path):
                    self._batches("GET")
                elif self.path.rstrip("/") == "/v1/models":
                    self._reply(200, {"object": "list", "data": [{"id": MODEL_ID, "owned_by": "ipm-test"}]})
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if fake.batches.handles(self.path):
                    self._batches("POST", raw)
                    return
                if not self.path.split("?")[0].endswith("/chat/completions"):
                    self._reply(404, {"error": "not found"})
                    return
                body = json.loads(raw)
                let_in, headers = True, {}
                with fake._lock:
                    fake.arrivals.append(time.monotonic())
                    if fake.bucket:
                        let_in, headers = fake.bucket.take(time.monotonic())
                        fake.rate_limited += not let_in
                if not let_in:
                    self._reply(429, {"error": {"message": f"Rate limit reached for requests per min (RPM): Limit "
                                                           f"{fake.bucket.rpm:g}. Please try again later.",
                                                "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
                                headers)
                    return
                if fake.latency:
                    time.sleep(fake.latency)
                if fake.fails(body):
                    with fake._lock:
                        fake.refused += 1
                    self._reply(500, {"error": {"message": "scripted failure for this request"}})
                    return
                text, finish, prompt_tokens, completion_tokens = answer(body)
                fake.record(raw, body, prompt_tokens, completion_tokens)
                try:
                    self._reply(200, {
                        "id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model", MODEL_ID),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": finish}],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                  "total_tokens": prompt_tokens + completion_tokens},
                    }, headers)
                except OSError:  # the client went away (killed): the answer was made all the same
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a killed client: nothing to report
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer_line(self, body: dict) -> tuple[int, dict]:
        """A batch line's answer: what ``POST /chat/completions`` would answer (called under ``_lock``)."""
        if self.fails(body):
            self.refused += 1
            return 500, {"error": {"message": "scripted failure for this request"}}
        text, finish, prompt_tokens, completion_tokens = answer(body)
        self._record(json.dumps(body).encode(), body, prompt_tokens, completion_tokens)
        return 200, {"id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model", MODEL_ID),
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": finish}],
                     "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                               "total_tokens": prompt_tokens + completion_tokens}}

    def fails(self, body: dict) -> bool:
        if not self.fail_percent:
            return False
        digest = _digest(body.get("messages"), body.get("seed"))
        return int.from_bytes(digest[:4], "big") % 10_000 < self.fail_percent * 100

    def record(self, raw: bytes, body: dict, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        with self._lock:
            self._record(raw, body, prompt_tokens, completion_tokens)

    def _record(self, raw: bytes, body: dict, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Count and log one answered request (the caller holds ``_lock``)."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        users = [str(m.get("content", "")) for m in body.get("messages") or [] if m.get("role") == "user"]
        line = json.dumps({"sha256": hashlib.sha256(raw).hexdigest(), "user": (users[-1] if users else "")[-60:],
                           "t": time.time()})
        self.answered += 1
        if self.bodies is not None:
            self.bodies.append(body)
        if self._log:
            self._log.write(line + "\n")
            self._log.flush()

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._log:
            self._log.close()

    def __enter__(self) -> str:
        self.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Bucket:
    """Requests a minute as a token bucket: ``rpm / 60`` tokens (at least one) when full, refilled at ``rpm / 60`` a
    second; each request takes one. Not thread-safe (the server takes it under its lock)."""

    def __init__(self, rpm: float, now: float | None = None):
        self.rpm = rpm
        self.rate = rpm / 60.0
        self.size = max(1.0, self.rate)
        self.tokens = self.size
        self.at = time.monotonic() if now is None else now

    def take(self, now: float) -> tuple[bool, dict[str, str]]:
        """(let in, the x-ratelimit headers of the answer and, when refused, its retry-after headers)."""
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
        self.at = now
        let_in = self.tokens >= 1.0
        if let_in:
            self.tokens -= 1.0
        headers = {"x-ratelimit-limit-requests": f"{self.rpm:g}",
                   "x-ratelimit-remaining-requests": str(int(self.tokens)),
                   "x-ratelimit-reset-requests": reset_text((self.size - self.tokens) / self.rate)}
        if not let_in:
            wait = (1.0 - self.tokens) / self.rate
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        return let_in, headers


def reset_text(seconds: float) -> str:
    """A duration as OpenAI writes ``x-ratelimit-reset-*``: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"


def read_log(path: str | Path) -> list[dict]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if p.is_file() else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="append one JSON line per answered request")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fail-percent", type=float, default=0.0, help="this share of requests gets HTTP 500")
    parser.add_argument("--rpm", type=float, default=0.0, help="requests a minute let in (0: no limit); more: 429")
    parser.add_argument("--port", type=int, default=0, help="the port (default: any free one)")
    args = parser.parse_args(argv)
    server = FakeLLM(args.log, args.latency, fail_percent=args.fail_percent, port=args.port, rpm=args.rpm).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
