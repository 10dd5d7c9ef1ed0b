"""The values every engine takes and gives: chat requests, their sampling and output constraint, results, and the
kinds of failure. The bottom of the engine layer: no engine, no I/O.

Requests are engine-independent values; their key (what the cache is addressed by) and their seed are derived from
the model id, the messages, the sampling, the output constraint and the sample index.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

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
# the others are properties of the answer and are replayed from the cache unless --retry-failed. ``UNSENT`` kinds
# are requests this run did not get an answer to on purpose (the spend cap, a batch still running at the provider):
# never recorded in the cache, sent (or collected) by a rerun.
UNSENT = frozenset({"spend_cap", "batch_pending"})
TRANSIENT = frozenset({"timeout", "rate_limited", "server_error", "connection", "malformed_response"}) | UNSENT
FAILURE_KINDS = TRANSIENT | frozenset({"truncated", "invalid_output", "empty", "client_error", "context"})


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
