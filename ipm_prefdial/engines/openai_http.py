"""``openai``: any OpenAI-compatible chat endpoint (vllm serve, llama.cpp, OpenAI, Azure OpenAI, a gateway), over
aiohttp.

Bounded concurrency that adapts to rate limits (``pacing``: halved on 429, grown back slowly, held while the
server's ``x-ratelimit-remaining-*`` says it has no room), per-request timeout, retries with jittered exponential
backoff that honour ``retry-after-ms`` and ``retry-after`` (429s do not use up the attempts), structured output
through the server's own mechanism where it has one. What real APIs ask of a client:

- OpenAI: the key as ``Authorization: Bearer``; models that refuse ``max_tokens`` get ``max_completion_tokens``
  (switched once, on the API's own "unsupported parameter" answer); JSON schemas sent as strict ones are strict
  (every object closed, every property required).
- Azure OpenAI: the key in an ``api-key`` header (``AZURE_OPENAI_API_KEY``, else ``OPENAI_API_KEY``), an
  ``api-version`` query parameter on every request (``--api-version`` or in the URL), deployment URLs
  (``https://R.openai.azure.com/openai/deployments/NAME``, whose deployment is the model) and the v1 URLs.
- Gateways: extra headers (``--header KEY=VALUE``), sent with every request and never written anywhere.

A dead endpoint is given up fast: ``start`` asks ``GET /models`` first (refused, TLS and 401/403 stop the run in
seconds, before anything is sent or recorded); a 401, 403 or 404 answer to a request stops it at any time; an
endpoint that refuses the first requests it is sent (400) stops it; and ``Breaker`` stops it when no request has
succeeded for ``give_up_after`` seconds. Secrets (the key, header values) are sent and never recorded: they are
masked in every message we keep.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlencode

import aiohttp

from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.breaker import EXIT_REFUSED, Breaker, EngineStop
from ipm_prefdial.engines.checks import check_output
from ipm_prefdial.engines.pacing import Pacer, retry_after
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, Choice, JsonSchema, estimate_tokens, failure
from ipm_prefdial.engines.streaming import stream_grouped
from ipm_prefdial.engines.urls import azure_deployment, env_proxy, is_azure, public_url, split_endpoint

# How a Choice is enforced: llama.cpp takes a GBNF grammar, or, where it was built with llguidance (the embedded
# xllamacpp server is), a Lark grammar, which is several times faster on a 49k-token vocabulary; vLLM takes its
# structured_outputs.choice; an API that only knows json_schema gets a one-field object; "none" relies on the
# prompt and parses the text.
# llguidance's JSON options: one line, the usual separators, no free whitespace.
LLGUIDANCE_JSON = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
STRUCTURED_MODES = ("auto", "llguidance", "grammar", "vllm", "json_schema", "none")
AZURE_API_VERSION = "2024-10-21"  # a GA version of Azure OpenAI's data-plane API, for deployment URLs without one
GIVE_UP_AFTER = 120.0  # seconds without an answer, while requests keep failing, before a run stops (exit 75)
PREFLIGHT_TIMEOUT = 10.0  # seconds for GET /models to connect and answer
RATE_LIMITED_ATTEMPTS = 4  # a request's attempts, 429s included, are at most this many times max_attempts
RESEEDS = 2  # an answer that does not parse (a verdict, a label) is asked again with a new seed this many times
REFUSALS = 3  # dialogues refused (HTTP 400) before any answer: the endpoint refuses what we send, stop
# a refusal about the request's content, not about what the client sends (Azure's content filter, OpenAI's prompt
# policy): recorded as that request's client_error, never a reason to stop
CONTENT_REFUSALS = ("content_filter", "content management policy", "invalid_prompt", "content_policy")


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 concurrency: int = 8, timeout: float = 120.0, max_attempts: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, structured: str = "auto", context_tokens: int | None = None,
                 headers: dict[str, str] | None = None, api_version: str | None = None,
                 give_up_after: float | None = GIVE_UP_AFTER, reseeds: int = RESEEDS, rpm: float | None = None,
                 tpm: float | None = None):
        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured must be one of {STRUCTURED_MODES}")
        self.base_url, self.query = split_endpoint(base_url)
        self.azure = is_azure(self.base_url)
        if api_version:
            self.query["api-version"] = api_version
        elif self.azure and azure_deployment(self.base_url) and "api-version" not in self.query:
            self.query["api-version"] = AZURE_API_VERSION  # deployment URLs answer 404 without one
        self.model = model or (azure_deployment(self.base_url) or "" if self.azure else "")
        if api_key is None:
            api_key = (os.environ.get("AZURE_OPENAI_API_KEY") if self.azure else None) or os.environ.get(
                "OPENAI_API_KEY")
        self._api_key = api_key
        self._headers = dict(headers or {})
        # what is masked in every message we keep: the key, header values and their last word (the token after
        # "Bearer"), and query values other than api-version (a gateway may take its key there)
        values = [api_key, *self._headers.values(), *(v.split()[-1] for v in self._headers.values() if v.split()),
                  *(v for k, v in self.query.items() if k != "api-version")]
        self._secrets = sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.reseeds = reseeds
        self.rpm, self.tpm = rpm, tpm  # the user's own caps (requests, tokens a minute); None: none
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.structured = structured
        self.context_tokens = context_tokens
        self.token_param = "max_tokens"  # "max_completion_tokens" once the API says it refuses max_tokens
        self.json_padded = False  # a vLLM server seen padding JSON (warned once)
        self.breaker = Breaker(self.endpoint, give_up_after)
        self._answered = 0  # HTTP answers other than transient failures: the endpoint takes what we send
        self._refused: set = set()  # dialogues whose requests were refused (400) before the first such answer
        self._client: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint as messages and the manifest name it (no secret in it)."""
        return public_url(self._url(""))

    def _url(self, path: str) -> str:
        return self.base_url + path + (f"?{urlencode(self.query)}" if self.query else "")

    # -- lifecycle -----------------------------------------------------------------------------------
    async def _start(self) -> None:
        if self._client is not None:
            return
        headers = {"Content-Type": "application/json"}
        key_header = "api-key" if self.azure else "Authorization"
        if self._api_key and key_header.lower() not in {name.lower() for name in self._headers}:
            headers[key_header] = self._api_key if self.azure else f"Bearer {self._api_key}"
        headers.update(self._headers)  # the user's headers win (a gateway's own Authorization, say)
        # aiohttp rather than httpx: httpx's connection pool costs about 1 ms of CPU a request (it scans every
        # connection for each one), which made the client, not the server, the limit of a fast build
        # the proxy of the environment (HTTPS_PROXY, NO_PROXY, ...) is looked up once: aiohttp's trust_env looks it
        # (and ~/.netrc) up again for every request, in threads, about 0.4 ms of CPU a request
        self._proxy = env_proxy(self.base_url)
        self._pacer = Pacer(self.concurrency or 1, self.rpm, self.tpm)  # made here, in the event loop it serves
        self._client = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout), proxy=self._proxy,
            connector=aiohttp.TCPConnector(limit=max(1, self.concurrency or 1)))
        try:
            await self._preflight()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _preflight(self) -> None:
        """``GET /models`` before the first request: an endpoint that cannot be reached, fails TLS or refuses the key
        stops the run here, with the server's words, before anything is sent or recorded. It also names the model
        (when none was given) and the server kind (for structured output). A server without ``/models`` (an Azure
        deployment URL, some gateways) is asked nothing more here."""
        owned_by, status, text = "", 0, ""
        try:
            async with self._client.get(self._url("/models"), timeout=aiohttp.ClientTimeout(
                    total=min(self.timeout, 30.0), sock_connect=PREFLIGHT_TIMEOUT)) as response:
                status, raw = response.status, await response.read()
            text = raw.decode("utf-8", errors="replace")
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise EngineStop(self.endpoint, "TLS failed", self._clip(_describe(exc), 300)) from None
        except (aiohttp.ClientConnectionError, OSError) as exc:  # refused, unknown host, reset
            raise EngineStop(self.endpoint, "unreachable", self._clip(_describe(exc), 300) + "; nothing was sent"
                             ) from None
        except aiohttp.ClientError as exc:  # a proxy that refuses (407), redirects without end, a broken body
            raise EngineStop(self.endpoint, "GET /models failed", self._clip(_describe(exc), 300) + "; nothing was "
                                                                                                     "sent") from None
        except asyncio.TimeoutError:
            raise EngineStop(self.endpoint, "unreachable", f"GET /models: no answer within {PREFLIGHT_TIMEOUT:g} s; "
                                                           "nothing was sent") from None
        if status in (401, 403):
            raise self._refusal(status, text, "GET /models")
        if status == 200:
            try:
                data = json.loads(text).get("data") or []
                if data:
                    self.model = self.model or data[0].get("id", "")
                    owned_by = str(data[0].get("owned_by", "")).lower()
            except (ValueError, AttributeError, TypeError):
                pass
        if not self.model:
            raise EngineStop(self.endpoint, "no model", f"no --model given and GET /models (HTTP {status}) did not "
                                                        "name one", EXIT_REFUSED)
        if self.structured == "auto":
            self.structured = "grammar" if "llama" in owned_by else "vllm" if "vllm" in owned_by else "json_schema"

    def _refusal(self, status: int, text: str, what: str) -> EngineStop:
        hint = {401: "check the API key (OPENAI_API_KEY, AZURE_OPENAI_API_KEY or a --header)",
                403: "the key is not allowed to use this endpoint or model",
                404: f"no model {self.model!r} (or no such path) at this endpoint: check --model and --base-url"}
        return EngineStop(self.endpoint, f"HTTP {status}", f"{what}: {self._clip(_words(text), 300)}; "
                                                            f"{hint.get(status, 'check the options')}", EXIT_REFUSED)

    def describe(self) -> dict:
        extra = {"token_param": self.token_param} if self.token_param != "max_tokens" else {}
        return {**super().describe(), "base_url": self.endpoint, "structured": self.structured, **extra,
                **({"headers": sorted(self._headers)} if self._headers else {}),
                **({"json_padded": True} if self.json_padded else {})}

    # -- requests ------------------------------------------------------------------------------------
    def body(self, request: ChatRequest, reseed: int = 0) -> dict:
        """The JSON body of one request (no secret in it); ``reseed`` k > 0: its k-th new seed."""
        s = request.sampling
        body: dict = {"model": self.model, "messages": request.message_dicts(), "temperature": s.temperature,
                      "top_p": s.top_p, self.token_param: s.max_tokens, "seed": reseeded(request.seed(self.identity),
                                                                                          reseed)}
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
            # our own embedded server: llguidance enforces string bounds exactly, so the soft bound is applied and
            # JSON whitespace is fixed, so a small model cannot pad the document with newlines
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
        """One request with retries. A final failure is a result with ``error_kind``; ``EngineStop`` is raised when
        the endpoint is gone (``Breaker``) or refuses what we send (401, 403, 404; the first requests refused)."""
        if self._client is None:
            await self.start()
        self.breaker.begin()
        try:
            result = await self._complete(request)
            k = 0
            while result.error_kind == "invalid_output" and k < self.reseeds:  # a sample that did not parse
                k += 1
                again = await self._complete(request, k)
                again.attempts += result.attempts  # what the request took in all, tokens included (all paid)
                again.prompt_tokens += result.prompt_tokens
                again.cached_tokens += result.cached_tokens
                again.completion_tokens += result.completion_tokens
                again.extra = {**again.extra, "reseeded": k, "seed": reseeded(request.seed(self.identity), k)}
                result = again
            return result
        finally:
            self.breaker.end()

    async def _complete(self, request: ChatRequest, reseed: int = 0) -> ChatResult:
        url = self._url("/chat/completions")  # sent as given: the runner fitted it to the context budget
        kind, message = "connection", "not sent"
        attempt = limited = 0  # limited: 429s, which do not use up max_attempts (up to RATE_LIMITED_ATTEMPTS)
        while self._may_try(attempt, limited):
            attempt += 1
            token_param = self.token_param  # what this attempt sends (another request may switch it meanwhile)
            payload = json.dumps(self.body(request, reseed), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            sent = await self._pacer.acquire(estimate_tokens(request.messages) + request.sampling.max_tokens
                                             if self.tpm else 0)
            started = time.perf_counter()
            wait: float | None = None
            try:
                try:
                    async with self._client.post(url, data=payload) as reply:
                        response = Response(reply.status, await reply.read(), reply.headers)
                finally:
                    await self._pacer.release()
            except asyncio.TimeoutError:
                kind, message = "timeout", f"no answer within {self.timeout:g} s"
            except (aiohttp.ClientError, OSError) as exc:  # refused, reset, dropped mid-answer
                kind, message = "connection", self._clip(_describe(exc), 300)
            else:
                latency = time.perf_counter() - started
                status = response.status_code
                if status == 429:
                    kind, message = "rate_limited", "HTTP 429"
                    wait = retry_after(response.headers)
                    self._pacer.limited(sent, response.headers)
                    limited += 1
                elif status >= 500:
                    kind, message = "server_error", f"HTTP {status}: {self._clip(response.text, 200)}"
                    wait = retry_after(response.headers)
                elif status in (401, 403, 404):  # wrong key, model or path: every other request would fail alike
                    raise self._refusal(status, response.text, "POST /chat/completions")
                elif status >= 400:
                    if token_param == "max_tokens" and _refuses_max_tokens(response.text):
                        self.token_param = "max_completion_tokens"  # newer OpenAI models: the same bound, renamed
                        attempt -= 1
                        continue
                    return self._refused_request(request, status, response.text, attempt, latency)
                else:
                    self._pacer.answered(response.headers)
                    parsed = self._parse(request, response, latency)
                    if parsed is not None:
                        parsed.attempts = attempt
                        self._answered += 1
                        self.breaker.ok()
                        return parsed
                    kind = "malformed_response"
                    message = f"unreadable response body: {self._clip(response.text, 120)!r}"
            self.breaker.failed(kind, message)  # raises EngineStop when the endpoint has been failing too long
            if self._may_try(attempt, limited):
                tries = attempt - limited if kind != "rate_limited" else limited
                delay = wait if wait is not None else self.backoff_s * 2 ** (tries - 1) * random.uniform(0.5, 1.5)
                await self._back_off(min(delay, self.max_backoff_s))
        return self._scrub(failure(kind, f"{message} (after {attempt} attempts)", attempts=attempt))

    def _may_try(self, attempt: int, limited: int) -> bool:
        """Another attempt after ``attempt`` of them, ``limited`` of which were answered 429."""
        return attempt - limited < self.max_attempts and attempt < self.max_attempts * RATE_LIMITED_ATTEMPTS

    async def _back_off(self, delay: float) -> None:
        """Wait ``delay`` seconds (a retry-after is honoured in full), waking when the engine would be given up, so
        a dead endpoint is stopped on time however long the backoff."""
        until = time.monotonic() + delay
        while (left := until - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self.breaker.remaining() + 0.01))
            self.breaker.check()

    def _refused_request(self, request: ChatRequest, status: int, text: str, attempt: int,
                         latency: float) -> ChatResult:
        """A 4xx answer: a property of this request (recorded, not retried), unless the endpoint has refused the
        requests of ``REFUSALS`` dialogues and answered none: then it refuses what we send (a parameter, the schema),
        and the run stops. A content filter's refusal is about the request's text and never counts (ESConv talks of
        self-harm; Azure's filter answers 400 for such turns), nor do the refusals of one dialogue count twice."""
        too_long = "exceed_context_size" in text or "context length" in text or "context_length" in text
        if not too_long and self._answered == 0 and not any(word in text for word in CONTENT_REFUSALS):
            self._refused.add(request.group if request.group is not None else request.messages)
            if len(self._refused) >= REFUSALS:
                raise EngineStop(self.endpoint, f"HTTP {status}", f"the first requests of {REFUSALS} dialogues were "
                                 f"refused: {self._clip(_words(text), 300)}", EXIT_REFUSED)
        else:
            self._answered += 1
        self.breaker.ok()  # the server is there and answering
        return self._scrub(failure("context" if too_long else "client_error",
                                   f"HTTP {status}: {self._clip(text, 300)}", attempts=attempt, latency_s=latency))

    def _parse(self, request: ChatRequest, response: Response, latency: float) -> ChatResult | None:
        """The result in a 200 response, or None when the body is not a chat completion."""
        try:
            data = response.json()
        except ValueError:
            return None
        result = completion_result(request, data, self.structured, latency)
        if (result is not None and isinstance(request.output, JsonSchema) and self.structured == "vllm"
                and result.text and "\n" in result.text):
            self._padded_json()
        return result

    def _padded_json(self) -> None:
        if not self.json_padded:
            self.json_padded = True
            warnings.warn(f"{self.endpoint}: the vLLM server pads JSON answers with whitespace, which costs tokens "
                          "and can cut verdicts at max_tokens; start it with --structured-outputs-config "
                          "'{\"disable_any_whitespace\": true}'", stacklevel=2)

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _clip(self, text: str, limit: int) -> str:
        """At most ``limit`` characters of a server's text, secrets masked first (so no cut can expose a part)."""
        return self._mask(text)[:limit]

    def _scrub(self, result: ChatResult) -> ChatResult:
        if result.error:
            result.error = self._mask(result.error)
        return result


def reseeded(seed: int, k: int) -> int:
    """The k-th new seed of a request whose seed is ``seed`` (k = 0: the seed itself)."""
    return seed if k == 0 else (seed + k * 1_000_003) & 0x7FFFFFFF


def completion_result(request: ChatRequest, data: object, structured: str, latency: float = 0.0) -> ChatResult | None:
    """The result in a chat completion body (an HTTP answer's, or a line of a batch output file), checked against
    the request's output constraint as sent in ``structured`` mode; None when the body is not a chat completion."""
    try:
        choice = data["choices"][0]  # type: ignore[index]
        text = choice["message"].get("content")
        finish = choice.get("finish_reason")
        usage = data.get("usage") or {}  # type: ignore[union-attr]
        details = usage.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens")
        if cached is None:  # llama.cpp reports the reused prefix in its timings
            cached = (data.get("timings") or {}).get("cache_n", 0)  # type: ignore[union-attr]
        counts = {"prompt_tokens": int(usage.get("prompt_tokens") or 0), "cached_tokens": int(cached or 0),
                  "completion_tokens": int(usage.get("completion_tokens") or 0), "latency_s": latency}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError):
        return None
    if text is not None and not isinstance(text, str):
        return None
    if isinstance(request.output, Choice) and structured == "json_schema" and text and finish != "length":
        try:  # the one-field object this mode asked for
            text = str(json.loads(text)["answer"])
        except (ValueError, KeyError, TypeError):
            return failure("invalid_output", f"expected {{\"answer\": <label>}}, got {text[:80]!r}",
                           text=text, finish_reason=finish, **counts)
    return check_output(request, text, finish, **counts)


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


def _refuses_max_tokens(text: str) -> bool:
    """OpenAI's answer to ``max_tokens`` from a model that only takes ``max_completion_tokens``."""
    return "max_tokens" in text and "max_completion_tokens" in text


def _words(text: str) -> str:
    """The server's own words in an error body: ``error.message`` of an OpenAI-style body, else the text."""
    try:
        data = json.loads(text)
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message.strip():
            return " ".join(message.split())
    except ValueError:
        pass
    return " ".join(text.split()) or "(empty body)"


def _describe(exc: BaseException) -> str:
    """An exception as one line: its class and message, with the underlying OS error where aiohttp wraps one."""
    text = " ".join(str(exc).split()) or repr(exc)
    return f"{type(exc).__name__}: {text}"
