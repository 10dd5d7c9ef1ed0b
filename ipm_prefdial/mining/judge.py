"""The judge filter (METHOD.md section 3): response-level pairs are shown to an LLM judge as two neutral replies
in a per-pair deterministic random order; its JSON verdict is mapped back to chosen/rejected.

Retention rule: retained = chosen_error is None and rejected_error is not None.
"""

from __future__ import annotations

import hashlib

from ipm_prefdial.convert import Turn, parse_tagged, sp_history_text
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, JsonSchema, Sampling
from ipm_prefdial.prompts import JUDGE_EXPLANATION_CHARS, Prompts

ERROR_TYPES = ("Lack Empathy", "Early Emotion Shift", "Template Response")
NO_ERROR = "None"
# The explanation limit is stated in the prompt and applied here (``clip``), not sent as ``maxLength``: servers
# that ignore it made good verdicts fail the schema check, and strict APIs may refuse the keyword.
EXPLANATION_CHARS = JUDGE_EXPLANATION_CHARS
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "reply_1_error": {"enum": [NO_ERROR, *ERROR_TYPES]},
        "reply_1_explanation": {"type": "string"},
        "reply_2_error": {"enum": [NO_ERROR, *ERROR_TYPES]},
        "reply_2_explanation": {"type": "string"},
    },
    "required": ["reply_1_error", "reply_1_explanation", "reply_2_error", "reply_2_explanation"],
    "additionalProperties": False,
}
JUDGED_CONFIGS = ("response_pairs", "joint_pairs")
# judge_status of a pair row: whether a verdict exists, and if not, why.
JUDGED, SKIPPED, NOT_APPLICABLE = "judged", "skipped", "not_applicable"
STATUS_PATTERN = r"judged|failed:[a-z_]+|skipped|not_applicable"


def rejected_first(config: str, row_id: str) -> bool:
    """Whether the rejected reply is shown as Reply 1: a coin flip fixed by the pair, never by its role."""
    return hashlib.sha256(f"{config}/{row_id}".encode()).digest()[0] % 2 == 1


def reply_text(config: str, content: str) -> str:
    """What the judge reads: joint outputs lose their [strategy] tag, so only the wording is judged."""
    return parse_tagged(content)[1] if config == "joint_pairs" else content


def judge_request(config: str, row: dict, turn: Turn, prompts: Prompts, sampling: Sampling) -> ChatRequest:
    history = sp_history_text(turn.history[:-1]) or "(the conversation starts here)"
    last_seeker = turn.history[-1].content.replace("\n", " ").strip() or "(no words: the seeker stayed silent)"
    chosen = reply_text(config, row["chosen"][0]["content"])
    rejected = reply_text(config, row["rejected"][0]["content"])
    first, second = (rejected, chosen) if rejected_first(config, row["id"]) else (chosen, rejected)
    messages = [{"role": "system", "content": prompts.judge_system},
                {"role": "user", "content": prompts.judge_user(history, last_seeker, first, second)}]
    output = JsonSchema.of(VERDICT_SCHEMA, "verdict", EXPLANATION_CHARS)
    return ChatRequest.chat(messages, sampling=sampling, output=output,
                            group=f"judge:{config}:{turn.dialog_id}")


def clip(text: str, limit: int = EXPLANATION_CHARS) -> str:
    """An explanation of at most ``limit`` characters: whitespace collapsed, a longer one cut at a word and marked
    with an ellipsis (a verdict is never thrown away for its length)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def judge_status(result: ChatResult) -> str:
    """``judged``, or ``failed:<kind>`` when the answer is no verdict (timeout, cut at max_tokens, bad JSON, ...)."""
    if not result.ok:
        return f"failed:{result.error_kind}"
    return JUDGED if isinstance(result.parsed, dict) else "failed:invalid_output"


def verdict(config: str, row_id: str, result: ChatResult, model: str) -> dict | None:
    """The row's ``judge`` struct from the judge's answer, or None when the judge failed."""
    if judge_status(result) != JUDGED:
        return None
    v = result.parsed
    one = (v["reply_1_error"], clip(v["reply_1_explanation"]))
    two = (v["reply_2_error"], clip(v["reply_2_explanation"]))
    (rej_err, rej_why), (cho_err, cho_why) = (one, two) if rejected_first(config, row_id) else (two, one)
    chosen_error = None if cho_err == NO_ERROR else cho_err
    rejected_error = None if rej_err == NO_ERROR else rej_err
    return {
        "retained": chosen_error is None and rejected_error is not None,
        "chosen_error": chosen_error,
        "rejected_error": rejected_error,
        "chosen_explanation": cho_why,
        "rejected_explanation": rej_why,
        "model": model,
    }
