"""Output checks: a raw answer becomes a result, or a failure of its kind (truncated, empty, not one of the labels,
JSON that does not fit the schema); never a malformed answer passed on as an answer."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import Any

import jsonschema

from ipm_prefdial.engines.requests import ChatRequest, ChatResult, Choice, JsonSchema, failure


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

