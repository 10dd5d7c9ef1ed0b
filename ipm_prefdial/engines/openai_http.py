"""``openai``: any OpenAI-compatible chat endpoint (vllm serve, llama.cpp, an API), over aiohttp.

Bounded concurrency, per-request timeout, retries with jittered exponential backoff that honour
``retry-after``, structured output through the server's own mechanism where it has one. The API key is read
from the environment, sent only in the Authorization header and scrubbed from every message we record.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import warnings
from collections.abc import AsyncIterator, Sequence

import aiohttp

from ipm_prefdial.engines.base import (
    ChatRequest,
    ChatResult,
    Choice,
    Engine,
    JsonSchema,
    check_output,
    failure,
    stream_grouped,
)

# How a Choice is enforced: llama.cpp takes a GBNF grammar, or, where it was built with llguidance (the embedded
# xllamacpp server is), a Lark grammar, which is several times faster on a 49k-token vocabulary; vLLM takes its
# structured_outputs.choice; an API that only knows json_schema gets a one-field object; "none" relies on the
# prompt and parses the text.
# llguidance's JSON options: one line, the usual separators, no free whitespace.
LLGUIDANCE_JSON = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
STRUCTURED_MODES = ("auto", "llguidance", "grammar", "vllm", "json_schema", "none")


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 concurrency: int = 8, timeout: float = 120.0, max_attempts: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, structured: str = "auto", context_tokens: int | None = None):
        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured must be one of {STRUCTURED_MODES}")
        self.base_url = base_url.rstrip("/")
        self.model = model or ""
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.structured = structured
        self.context_tokens = context_tokens
        self.json_padded = False  # a vLLM server seen padding JSON (warned once)
        self._client: aiohttp.ClientSession | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    async def _start(self) -> None:
        if self._client is not None:
            return
        headers = {"Content-Type": "application/json",
                   **({"Authorization": f"Bearer {self._api_key}"} if self._api_key else {})}
        # aiohttp rather than httpx: httpx's connection pool costs about 1 ms of CPU a request (it scans every
        # connection for each one), which made the client, not the server, the limit of a fast build
        self._client = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout), trust_env=True,
            connector=aiohttp.TCPConnector(limit=max(1, self.concurrency or 1)))
        if not self.model or self.structured == "auto":
            await self._discover()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _discover(self) -> None:
        """Ask /models for the model id (when none was given) and the server kind (for structured output)."""
        owned_by = ""
        try:
            async with self._client.get(self.base_url + "/models",
                                        timeout=aiohttp.ClientTimeout(total=min(self.timeout, 30.0))) as response:
                data = json.loads(await response.read()).get("data") or []
            if data:
                self.model = self.model or data[0].get("id", "")
                owned_by = str(data[0].get("owned_by", "")).lower()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError, AttributeError):
            pass
        if not self.model:
            raise RuntimeError(f"{self.base_url}: no --model given and /models did not name one")
        if self.structured == "auto":
            self.structured = "grammar" if "llama" in owned_by else "vllm" if "vllm" in owned_by else "json_schema"

    def describe(self) -> dict:
        return {**super().describe(), "base_url": self.base_url, "structured": self.structured,
                **({"json_padded": True} if self.json_padded else {})}

    # -- requests ------------------------------------------------------------------------------------
    def body(self, request: ChatRequest) -> dict:
        """The JSON body of one request (no secret in it)."""
        s = request.sampling
        body: dict = {"model": self.model, "messages": request.message_dicts(), "temperature": s.temperature,
                      "top_p": s.top_p, "max_tokens": s.max_tokens, "seed": request.seed(self.identity)}
        out = request.output
        if isinstance(out, Choice) and self.structured != "none":
            if self.structured == "llguidance":
                body["grammar"] = "%llguidance {}\nstart: " + " | ".join(json.dumps(label) for label in out.labels)
            elif self.structured == "grammar":
                body["grammar"] = "root ::= " + " | ".join(json.dumps(label) for label in out.labels)
            elif self.structured == "vllm":
                body["structured_outputs"] = {"choice": list(out.labels)}
            else:
                schema = {"type": "object", "properties": {"answer": out.json_schema()}, "required": ["answer"],
                          "additionalProperties": False}
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "choice", "schema": schema, "strict": True}}
        elif isinstance(out, JsonSchema) and self.structured == "llguidance":
            # our own embedded server: llguidance enforces string bounds exactly, so the soft bound is applied
            # and JSON whitespace is fixed, so a small model cannot pad the document with newlines
            schema = {**out.bounded_schema(), "x-guidance": LLGUIDANCE_JSON}
            body["grammar"] = "%llguidance {}\nstart: %json " + json.dumps(schema, sort_keys=True)
        elif isinstance(out, JsonSchema) and self.structured == "vllm":
            # vLLM's own field: its grammar backends enforce string bounds exactly, so the soft bound applies; and
            # no free whitespace (a small model pads JSON with newlines). vLLM 0.32 takes the whitespace setting
            # from the server's start (--structured-outputs-config), so padding is detected and warned about.
            body["structured_outputs"] = {"json": out.bounded_schema(), "disable_any_whitespace": True}
        elif isinstance(out, JsonSchema) and self.structured != "none":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": out.name, "schema": out.schema, "strict": True}}
        return body

    def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        return stream_grouped(requests, self.complete, self.concurrency)

    async def complete(self, request: ChatRequest) -> ChatResult:
        """One request with retries. Never raises: a final failure is a result with ``error_kind``."""
        if self._client is None:
            await self.start()
        # sent as given: the runner fitted it to the context budget (``Engine.fit``)
        payload = json.dumps(self.body(request), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        url = self.base_url + "/chat/completions"
        kind, message = "connection", "not sent"
        for attempt in range(1, self.max_attempts + 1):
            started = time.perf_counter()
            wait: float | None = None
            try:
                async with self._client.post(url, data=payload) as reply:
                    response = Response(reply.status, await reply.read(), reply.headers)
            except asyncio.TimeoutError:
                kind, message = "timeout", f"no answer within {self.timeout:g} s"
            except (aiohttp.ClientError, OSError) as exc:  # refused, reset, dropped mid-answer
                kind, message = "connection", f"{type(exc).__name__}: {exc}"
            else:
                latency = time.perf_counter() - started
                status = response.status_code
                if status == 429:
                    kind, message = "rate_limited", "HTTP 429"
                    wait = _retry_after(response)
                elif status >= 500:
                    kind, message = "server_error", f"HTTP {status}: {self._clip(response.text, 200)}"
                    wait = _retry_after(response)
                elif status >= 400:
                    too_long = "exceed_context_size" in response.text or "context length" in response.text
                    return self._scrub(failure("context" if too_long else "client_error",
                                               f"HTTP {status}: {self._clip(response.text, 300)}", attempts=attempt,
                                               latency_s=latency))
                else:
                    parsed = self._parse(request, response, latency)
                    if parsed is not None:
                        parsed.attempts = attempt
                        return parsed
                    kind = "malformed_response"
                    message = f"unreadable response body: {self._clip(response.text, 120)!r}"
            if attempt < self.max_attempts:
                delay = wait if wait is not None else self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                await asyncio.sleep(min(delay, self.max_backoff_s))
        return self._scrub(failure(kind, f"{message} (after {self.max_attempts} attempts)",
                                   attempts=self.max_attempts))

    def _parse(self, request: ChatRequest, response: Response, latency: float) -> ChatResult | None:
        """The result in a 200 response, or None when the body is not a chat completion."""
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content")
            finish = choice.get("finish_reason")
            usage = data.get("usage") or {}
            details = usage.get("prompt_tokens_details") or {}
            cached = details.get("cached_tokens")
            if cached is None:  # llama.cpp reports the reused prefix in its timings
                cached = (data.get("timings") or {}).get("cache_n", 0)
            counts = {"prompt_tokens": int(usage.get("prompt_tokens") or 0), "cached_tokens": int(cached or 0),
                      "completion_tokens": int(usage.get("completion_tokens") or 0), "latency_s": latency}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError):
            return None
        if text is not None and not isinstance(text, str):
            return None
        if isinstance(request.output, Choice) and self.structured == "json_schema" and text and finish != "length":
            try:  # the one-field object this mode asked for
                text = str(json.loads(text)["answer"])
            except (ValueError, KeyError, TypeError):
                return failure("invalid_output", f"expected {{\"answer\": <label>}}, got {text[:80]!r}",
                               text=text, finish_reason=finish, **counts)
        if isinstance(request.output, JsonSchema) and self.structured == "vllm" and text and "\n" in text:
            self._padded_json()
        return check_output(request, text, finish, **counts)

    def _padded_json(self) -> None:
        if not self.json_padded:
            self.json_padded = True
            warnings.warn(f"{self.base_url}: the vLLM server pads JSON answers with whitespace, which costs tokens "
                          "and can cut verdicts at max_tokens; start it with --structured-outputs-config "
                          "'{\"disable_any_whitespace\": true}'", stacklevel=2)

    def _clip(self, text: str, limit: int) -> str:
        """At most ``limit`` characters of a server's text, the key masked first (so no cut can expose a part)."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:limit]

    def _scrub(self, result: ChatResult) -> ChatResult:
        if self._api_key and result.error:
            result.error = result.error.replace(self._api_key, "***")
        return result


class Response:
    """What is kept of an HTTP response once its body is read."""

    __slots__ = ("status_code", "content", "headers")

    def __init__(self, status_code: int, content: bytes, headers):
        self.status_code, self.content, self.headers = status_code, content, headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.content)


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
