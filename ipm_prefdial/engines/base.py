"""The engine interface: a batch of chat requests in, one result per request out, whoever answers.

Requests are engine-independent values; their key (what the cache is addressed by) and their seed are
derived from the model id, the messages, the sampling, the output constraint and the sample index.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import jsonschema

from ipm_prefdial.history import drop_oldest


@dataclass(frozen=True)
class Choice:
    """The answer must be exactly one of ``labels``."""

    labels: tuple[str, ...]

    def spec(self) -> dict:
        return {"type": "choice", "labels": list(self.labels)}

    def json_schema(self) -> dict:
        return {"type": "string", "enum": list(self.labels)}


@dataclass(frozen=True)
class JsonSchema:
    """The answer must be a JSON document valid against ``schema``.

    ``string_chars`` is a soft bound on every string in the answer: never sent as ``maxLength`` to a server (some
    ignore it, then the answer fails the check; strict APIs may refuse it), stated in the prompt and applied by
    the caller, and enforced while decoding only by an engine known to do it exactly (the embedded llama.cpp's
    llguidance grammar), where it stops a small model's rambling before ``max_tokens`` cuts the JSON."""

    schema_json: str  # canonical JSON text of the schema (keeps the dataclass hashable)
    name: str = "answer"
    string_chars: int | None = None

    @classmethod
    def of(cls, schema: dict, name: str = "answer", string_chars: int | None = None) -> JsonSchema:
        return cls(json.dumps(schema, sort_keys=True, separators=(",", ":")), name, string_chars)

    @property
    def schema(self) -> dict:
        return json.loads(self.schema_json)

    def bounded_schema(self) -> dict:
        """The schema with ``maxLength`` on every string property, for an engine that enforces it exactly."""
        def bound(node):
            if isinstance(node, dict):
                node = {k: bound(v) for k, v in node.items()}
                if node.get("type") == "string" and self.string_chars:
                    node.setdefault("maxLength", self.string_chars)
                return node
            return [bound(v) for v in node] if isinstance(node, list) else node
        return bound(self.schema)

    def spec(self) -> dict:
        spec = {"type": "json_schema", "name": self.name, "schema": self.schema}
        if self.string_chars:
            spec["string_chars"] = self.string_chars
        return spec


Output = Choice | JsonSchema | None


@functools.lru_cache(maxsize=1 << 17)
def message_dict(role: str, content: str) -> dict[str, str]:
    """``{"role": role, "content": content}``, one shared object per distinct message. A dialogue's rows repeat
    its history (turn k's prompt holds every earlier message), so without sharing a full build keeps O(turns^2)
    copies of these dicts: several hundred MB. Shared, so never mutated: build a new dict to change one."""
    return {"role": role, "content": content}


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 128  # always bounded: an unbounded request can run until the context is full


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    sampling: Sampling = Sampling()
    output: Output = None
    sample: int = 0  # k-th sample of the same prompt (--samples K)
    group: str | None = None  # requests of one group go to one worker, in order (one dialogue -> one slot)

    @classmethod
    def chat(cls, messages: Sequence[dict[str, str]], **kwargs: Any) -> ChatRequest:
        return cls(tuple((m["role"], m["content"]) for m in messages), **kwargs)

    def message_dicts(self) -> list[dict[str, str]]:
        return [message_dict(role, content) for role, content in self.messages]

    def key(self, model: str) -> str:
        """Content address: what is asked, of which model; not who answers it, not the group. Remembered per
        model on the request (a request is keyed, seeded and described several times on its way)."""
        memo = self.__dict__.setdefault("_keys", {})
        known = memo.get(model)
        if known is None:
            known = memo[model] = self._key(model)
        return known

    def _key(self, model: str) -> str:
        payload = {
            "model": model,
            "messages": self.messages,
            "sampling": asdict(self.sampling),
            "output": self.output.spec() if self.output else None,
            "sample": self.sample,
        }
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def seed(self, model: str) -> int:
        """A per-request seed derived from the key: reproducible, different for every sample index."""
        return int(self.key(model)[:8], 16) & 0x7FFFFFFF


# Failure kinds. Transient ones are retried by the engine and, when still failing, retried on a rerun;
# the others are properties of the answer and are replayed from the cache unless --retry-failed.
TRANSIENT = frozenset({"timeout", "rate_limited", "server_error", "connection", "malformed_response"})
FAILURE_KINDS = TRANSIENT | frozenset({"truncated", "invalid_output", "empty", "client_error", "context"})


EXIT_GONE = 75  # EX_TEMPFAIL: an engine or cluster is gone; what was answered is kept and a rerun resumes
EXIT_REFUSED = 1  # the endpoint refuses what we send (key, model, a parameter): fix the options


class EngineStop(RuntimeError):
    """A run cannot go on with this engine: nothing more is sent, every answer already committed stays in the
    cache, and the message is one line naming the endpoint, the kind of failure and the server's words.

    ``exit_code`` is ``EXIT_GONE`` (75: the endpoint or cluster went away; run the same command again to resume) or
    ``EXIT_REFUSED`` (1: it answers, but refuses our requests; rerunning the same command would not help)."""

    def __init__(self, endpoint: str, kind: str, detail: str, exit_code: int = EXIT_GONE):
        super().__init__(endpoint, kind, detail, exit_code)
        self.endpoint, self.kind, self.detail, self.exit_code = endpoint, kind, detail, exit_code

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.kind}: {self.detail}"


class Breaker:
    """Gives up on an engine that has stopped answering: when no request has succeeded for ``after`` seconds while
    requests keep failing with transient kinds, ``check`` raises ``EngineStop``. A dead server would otherwise be
    retried for every request of a build, one recorded failure every few seconds, for hours.

    The clock runs only while requests are in flight (``begin``/``end`` around each): it starts at the first request
    (a model's load time does not count), restarts at every answer, and does not count the time the engine sat idle
    (an engine that waits for hours while another host's engine works starts afresh)."""

    def __init__(self, endpoint: str, after: float | None):
        self.endpoint, self.after = endpoint, after
        self.last_ok: float | None = None
        self.failing = 0  # transient failures since the last answer
        self.kind, self.error = "", ""
        self.in_flight = 0
        self.idle_since: float | None = None

    def begin(self) -> None:
        """A request starts."""
        now = time.monotonic()
        if self.in_flight == 0:
            if self.last_ok is None:
                self.last_ok = now
            elif self.idle_since is not None:
                self.last_ok += now - self.idle_since  # idle time is not time without an answer
        self.in_flight += 1

    def end(self) -> None:
        """A request ends (answered, failed or given up)."""
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle_since = time.monotonic()

    def ok(self) -> None:
        self.last_ok, self.failing = time.monotonic(), 0

    def failed(self, kind: str, error: str) -> None:
        """A transient failure of one attempt; raises when the engine has been failing for too long."""
        if self.last_ok is None:  # a failure outside begin/end (a caller of its own) starts the clock too
            self.last_ok = time.monotonic()
        self.failing += 1
        self.kind, self.error = kind, error
        self.check()

    def remaining(self) -> float:
        """Seconds until a failing engine is given up (inf without a limit): how long a backoff may sleep."""
        if not self.after or self.last_ok is None:
            return float("inf")
        return max(0.0, self.after - (time.monotonic() - self.last_ok))

    def check(self) -> None:
        if self.failing and self.remaining() <= 0:
            raise EngineStop(self.endpoint, f"no answer for {self.after:g} s",
                             f"the last of {self.failing} failed attempts: {self.kind}: {self.error}")


@dataclass
class ChatResult:
    text: str | None = None
    parsed: Any = None  # the label (Choice) or the JSON object (JsonSchema); the text otherwise
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    attempts: int = 1
    from_cache: bool = False
    truncated_messages: int = 0  # history messages dropped to fit the context budget
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    def to_json(self) -> str:
        data = {name: getattr(self, name) for name in _STORED_FIELDS}  # JSON values already: no deep copy
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ChatResult:
        return cls(**json.loads(text), from_cache=True)


_STORED_FIELDS = tuple(f.name for f in fields(ChatResult) if f.name not in ("from_cache", "attempts"))


def failure(kind: str, message: str, **kwargs: Any) -> ChatResult:
    assert kind in FAILURE_KINDS, kind
    return ChatResult(error=message[:500], error_kind=kind, **kwargs)


def check_output(request: ChatRequest, text: str | None, finish_reason: str | None, **usage: Any) -> ChatResult:
    """Turn a raw answer into a result; malformed, empty or truncated answers become failures, never answers."""
    if finish_reason == "length":
        return failure("truncated", f"stopped at max_tokens={request.sampling.max_tokens}",
                       text=text, finish_reason=finish_reason, **usage)
    if text is None or not text.strip():
        return failure("empty", "empty answer", text=text, finish_reason=finish_reason, **usage)
    out = request.output
    if isinstance(out, Choice):
        label = match_label(text, out.labels)
        if label is None:
            return failure("invalid_output", f"not one of the {len(out.labels)} labels: {text[:80]!r}",
                           text=text, finish_reason=finish_reason, **usage)
        return ChatResult(text=text, parsed=label, finish_reason=finish_reason, **usage)
    if isinstance(out, JsonSchema):
        try:
            obj = json.loads(_strip_fence(text))
            _validator(out.schema_json).validate(obj)
        except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
            message = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
            return failure("invalid_output", f"JSON does not fit the schema: {message}", text=text,
                           finish_reason=finish_reason, **usage)
        return ChatResult(text=text, parsed=obj, finish_reason=finish_reason, **usage)
    return ChatResult(text=text, parsed=text.strip(), finish_reason=finish_reason, **usage)


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str):
    """A checked, compiled validator per schema: ``jsonschema.validate`` checks the schema itself at every call
    (about 4 ms for the judge's), which dominated the CPU time of a judge request."""
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def match_label(text: str, labels: Sequence[str]) -> str | None:
    """The label ``text`` names: exact (case-insensitive, ignoring quotes, brackets and a final period)."""
    cleaned = text.strip().strip("\"'`[]().").strip()
    if cleaned.startswith('"') or cleaned.startswith("{"):
        try:  # a JSON string answer, as a grammar-constrained server returns it
            value = json.loads(text)
            cleaned = value if isinstance(value, str) else cleaned
        except json.JSONDecodeError:
            pass
    lowered = {label.lower(): label for label in labels}
    return lowered.get(cleaned.lower())


def _strip_fence(text: str) -> str:
    match = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    return match.group(1) if match else text


class Engine(ABC):
    """An LLM that answers chat requests. ``model`` is what the engine calls the model (a served id, a path);
    ``identity`` is what cache keys and seeds are derived from (the model's content, see ``engines.identity``);
    ``display_name`` is what rows, cards and manifests show (never a path)."""

    name: str = "engine"
    model: str = ""
    concurrency: int = 1
    context_tokens: int | None = None  # prompt + answer budget; None: no limit known
    _identity: str | None = None
    _display: str | None = None

    def _identify(self, memo: Any) -> tuple[str, str]:
        """(identity, display name); engines with local weights name them by content."""
        if not self.model:
            raise RuntimeError(f"engine {self.name}: the model is not known yet (start the engine first)")
        return f"served:{self.model}", self.model

    def identify(self, memo: Any = None) -> str:
        """The identity, computed once (``memo``, the request cache, remembers file digests between runs)."""
        if self._identity is None:
            self._identity, self._display = self._identify(memo)
        return self._identity

    @property
    def identity(self) -> str:
        return self.identify()

    @property
    def display_name(self) -> str:
        self.identify()
        return self._display or self.model

    async def start(self) -> None:
        """Acquire resources (load a model, start a server, ask an endpoint its model) once, however many callers
        ask at the same time (a Ray worker's slots, the LoRA views of one vLLM instance)."""
        locks = self.__dict__.setdefault("_start_locks", {})
        lock = locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with lock:
            await self._start()

    async def _start(self) -> None:  # noqa: B027 - optional hook
        """The engine's own start; idempotent, and run by ``start`` under its lock."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release them. Safe to call twice."""

    def host(self) -> object:
        """What serves this engine: engines with one host (LoRA adapters of one vLLM instance) run together and
        are started and closed once."""
        return self

    def fit(self, request: ChatRequest) -> tuple[ChatRequest, int]:
        """The request as this engine will be sent it (oldest history dropped to fit the context budget), and how
        many messages (or lines) were dropped. The runner keys, seeds and sends the fitted request."""
        return fit_context(request, self.context_tokens)

    @abstractmethod
    def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        """Yield (index into ``requests``, result) as answers arrive, one per request, in any order."""

    def describe(self) -> dict:
        """What the manifest records about this engine (never a secret, never a local path)."""
        return {"engine": self.name, "model": self.display_name, "identity": self.identity}


def dialogue_groups(requests: Sequence[ChatRequest]) -> list[list[int]]:
    """Request indices by group (one dialogue's requests, in order), longest groups first: a long dialogue started
    last would leave the other streams idle at the end."""
    groups: dict[object, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.group if request.group is not None else ("#", i), []).append(i)
    return sorted(groups.values(), key=len, reverse=True)


async def hand_over(done: asyncio.Queue, i: int, result: ChatResult) -> None:
    """A producer's side of ``handed_out``: put the result, then wait until the consumer has dealt with it."""
    taken: asyncio.Future = asyncio.get_running_loop().create_future()
    await done.put((i, result, taken))
    await taken


async def handed_out(done: asyncio.Queue, producers: list[asyncio.Task], n: int
                     ) -> AsyncIterator[tuple[int, ChatResult]]:
    """Yield the ``n`` results the producers hand over. A producer is released when the consumer comes back for the
    next result (the runner commits each result before it does): at most one result per producer is ever answered
    but not committed. A producer that crashes raises here; the producers are cancelled at the end."""
    def crashed(task: asyncio.Task) -> None:  # a crash reaches the consumer through the queue, like a result
        if not task.cancelled() and task.exception() is not None:
            done.put_nowait((None, task.exception(), None))

    for p in producers:
        p.add_done_callback(crashed)
    handed: asyncio.Future | None = None
    try:
        for _ in range(n):
            if handed is not None:
                handed.set_result(None)
                handed = None
            i, result, handed = await done.get()
            if i is None:
                raise result
            yield i, result
    finally:
        for p in producers:
            p.cancel()
        await asyncio.gather(*producers, return_exceptions=True)


def stream_grouped(requests: Sequence[ChatRequest], complete, concurrency: int
                   ) -> AsyncIterator[tuple[int, ChatResult]]:
    """Run ``complete`` (which never raises) over requests with ``concurrency`` workers. A worker takes a whole
    group and sends its requests in order, so one dialogue's growing prompts meet a warm prefix cache.

    Backpressure: a worker sends its next request only once the consumer has taken its previous result and come
    back for another (the runner commits each result before it does), so at any moment at most ``concurrency``
    results are answered but not committed, and a killed run loses at most the requests in flight, however
    fast the server answers and however busy the consumer is."""
    todo = collections.deque(dialogue_groups(requests))
    done: asyncio.Queue = asyncio.Queue()  # one entry per worker at most

    async def worker() -> None:
        while todo:
            for i in todo.popleft():
                await hand_over(done, i, await complete(requests[i]))

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, len(todo))))]
    return handed_out(done, workers, len(requests))


CHARS_PER_TOKEN = 3.5  # a deliberately low estimate for English BPE text: overestimates the token count


def estimate_tokens(messages: Sequence[tuple[str, str]]) -> int:
    return sum(int(len(content) / CHARS_PER_TOKEN) + 6 for _, content in messages)


def fit_context(request: ChatRequest, context_tokens: int | None) -> tuple[ChatRequest, int]:
    """Drop the oldest history so that prompt + answer fit ``context_tokens`` (estimated); returns (request,
    dropped). The rule is ``history.drop_oldest``: the system prompt and the current turn stay; whole exchanges go
    first, and only a current turn too long on its own loses its oldest lines (a hard limit: the engine would
    refuse the request)."""
    if not context_tokens:
        return request, 0
    budget = context_tokens - request.sampling.max_tokens
    messages, dropped = drop_oldest(request.messages, lambda m: estimate_tokens(m) <= budget, split_last=True)
    if not dropped:
        return request, 0
    return ChatRequest(tuple(messages), request.sampling, request.output, request.sample, request.group), dropped
