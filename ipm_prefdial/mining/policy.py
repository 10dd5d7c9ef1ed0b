"""Inferential Preference Mining (METHOD.md section 3): requests per supporter turn, and pairs from answers.

Pure functions: a Turn and the engine's answer in, a pair row (or the reason there is none) out. Running the
requests is the caller's business (``ipm_prefdial.pipeline``), so mining can run anywhere an engine can.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from ipm_prefdial.convert import Turn, parse_tagged, tagged, task_prompt, turns
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, Choice, Sampling
from ipm_prefdial.mining.judge import NOT_APPLICABLE, SKIPPED
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.taxonomy import Taxonomy, builtin
from ipm_prefdial.tokens import Trimmer

TASKS = ("sp", "rg", "vm")
PAIR_CONFIG = {"sp": "strategy_pairs", "rg": "response_pairs", "vm": "joint_pairs"}
MINED_SPLITS = ("train", "validation")


@dataclass(frozen=True)
class PolicySampling:
    """How the policy is sampled (the paper: temperature 0.7, top_p 0.95, one sample per turn)."""

    samples: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: tuple[tuple[str, int], ...] = (("sp", 32), ("rg", 160), ("vm", 192))

    def sampling(self, task: str) -> Sampling:
        return Sampling(self.temperature, self.top_p, dict(self.max_tokens)[task])


def policy_requests(task: str, turn: Turn, prompts: Prompts, policy: PolicySampling, trim: Trimmer | None = None
                    ) -> list[ChatRequest]:
    """The task's requests for one turn, one per sample, with the turn's SFT prompt (shortened when the build
    trims). A dialogue's requests share a group, so one worker (one engine slot) sends them in turn order over a
    growing, cache-friendly prefix."""
    messages = task_prompt(task, turn, prompts, trim)
    output = Choice(prompts.taxonomy.names) if task == "sp" else None  # the build's labels, constrained
    return [ChatRequest.chat(messages, sampling=policy.sampling(task), output=output, sample=k,
                             group=f"{task}:{turn.dialog_id}") for k in range(policy.samples)]


_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(?=\s|$)")


def trim_to_sentence(text: str) -> str:
    """A reply cut at max_tokens, back to the end of its last complete sentence ("" when it has none)."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].strip() if ends else ""


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def is_copy(strategy: str | None, reply: str, gold_strategy: str, gold_reply: str) -> bool:
    """A joint output that says what the gold answer says: the same canonical strategy and the same reply up to
    case and whitespace (``[Question]Hello there.`` copies ``[Question] Hello there.``)."""
    return strategy == gold_strategy and normalise(reply) == normalise(gold_reply)


def prompt_sha256(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def make_pair(task: str, turn: Turn, request: ChatRequest, result: ChatResult, miner: dict, identity: str,
              sent: ChatRequest | None = None, taxonomy: Taxonomy | None = None) -> tuple[dict | None, str]:
    """(row, outcome). outcome is "pair", or why there is no pair: "failed:<kind>", "agree" (SP predicted
    the gold strategy), "empty", "same_as_gold"; VM rows whose strategy cannot be parsed are pairs with
    outcome "pair_unparsed_strategy". A reply that hit max_tokens is cut back to its last complete sentence
    and kept (outcome "pair_trimmed"); one with no complete sentence is a failure. ``miner`` is the engine and the
    readable model name for the row; ``identity`` the model identity the request's seed was derived from; ``sent``
    the request as sent (fitted to the engine's context budget; default: ``request``), whose seed and sha256 the
    row records, while its ``prompt`` stays the full gold history."""
    taxonomy = taxonomy or builtin("esconv")  # strategy names are read with the build's labels (ESConv's)
    sent = sent or request
    trimmed = False
    if not result.ok:
        if not (result.error_kind == "truncated" and task != "sp" and trim_to_sentence(result.text or "")):
            return None, f"failed:{result.error_kind}"
        trimmed = True
    messages = request.message_dicts()
    text = trim_to_sentence(result.text or "") if trimmed else result.text.strip()
    if task == "sp":
        predicted = taxonomy.canonical(str(result.parsed), variants=False)
        if predicted is None:
            return None, "failed:invalid_output"
        if predicted == turn.strategy:
            return None, "agree"
        chosen, rejected, rejected_strategy = turn.strategy, predicted, predicted
    elif task == "rg":
        if not text:
            return None, "empty"
        if normalise(text) == normalise(turn.utterance):
            return None, "same_as_gold"
        chosen, rejected, rejected_strategy = turn.utterance, text, turn.strategy
    else:
        chosen = tagged(turn.strategy, turn.utterance)
        label, reply = parse_tagged(text)
        if not reply:
            return None, "empty"
        rejected = text
        rejected_strategy = taxonomy.canonical(label, variants=False) if label is not None else None
        if is_copy(rejected_strategy, reply, turn.strategy, turn.utterance):
            return None, "same_as_gold"
    row = {
        "id": f"{turn.id}-s{request.sample}",
        "dialog_id": turn.dialog_id,
        "turn_index": turn.turn_index,
        "strategy": turn.strategy,
        "emotion_type": turn.emotion_type,
        "problem_type": turn.problem_type,
        "prompt": messages,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "rejected_strategy": rejected_strategy,
        "miner": {**miner, "temperature": request.sampling.temperature, "top_p": request.sampling.top_p,
                  "seed": result.extra.get("seed", sent.seed(identity)),  # a new seed when the first did not parse
                  "prompt_sha256": prompt_sha256(sent.message_dicts())},
        "judge": None,
        # strategy pairs are never judged; the others stay "skipped" unless the judge runs (pipeline._judge)
        "judge_status": NOT_APPLICABLE if task == "sp" else SKIPPED,
    }
    outcome = "pair_unparsed_strategy" if task == "vm" and rejected_strategy is None else "pair"
    return row, f"{outcome}_trimmed" if trimmed else outcome


IMPORTED = "import"  # miner.engine of a pair the source itself provides


def imported_pairs(turn: Turn, prompts: Prompts, origin: str, trim: Trimmer | None = None) -> tuple[list[dict], int]:
    """The joint pairs a source gives for ``turn`` (ESC-Pro: its preferred reply against each non-preferred one),
    ``(rows, dropped)``: chosen ``[gold] reply``, rejected ``[strategy] non-preferred reply``, ids ``<turn>-n<k>``
    (k: the reply's place in the source) next to the mined ``-s<k>``, and ``miner`` naming where they come from
    (engine "import", model the source) with no sampling. A non-preferred reply that says what the gold reply says
    is dropped and counted."""
    messages = task_prompt("vm", turn, prompts, trim)
    rows, dropped = [], 0
    for k, (reply, strategy) in enumerate(turn.negatives):
        if is_copy(strategy, reply, turn.strategy, turn.utterance):
            dropped += 1
            continue
        rows.append({
            "id": f"{turn.id}-n{k}", "dialog_id": turn.dialog_id, "turn_index": turn.turn_index,
            "strategy": turn.strategy, "emotion_type": turn.emotion_type, "problem_type": turn.problem_type,
            "prompt": messages,
            "chosen": [{"role": "assistant", "content": tagged(turn.strategy, turn.utterance)}],
            "rejected": [{"role": "assistant", "content": tagged(strategy, reply)}],
            "rejected_strategy": strategy,
            "miner": {"engine": IMPORTED, "model": origin, "temperature": None, "top_p": None, "seed": None,
                      "prompt_sha256": prompt_sha256(messages)},
            "judge": None,
            "judge_status": SKIPPED,
        })
    return rows, dropped


def source_pairs(per_split: dict, prompts: Prompts, origin: str, trim: Trimmer | None = None) -> dict:
    """The pairs the source holds itself (ESC-Pro), per mined split: {"rows": {split: rows}, "dropped": n}."""
    out: dict = {"rows": {}, "dropped": 0}
    for split in MINED_SPLITS:
        out["rows"][split] = []
        for dialogue in per_split[split]:
            for turn in turns(dialogue):
                if turn.negatives:
                    rows, dropped = imported_pairs(turn, prompts, origin, trim)
                    out["rows"][split] += rows
                    out["dropped"] += dropped
    return out
