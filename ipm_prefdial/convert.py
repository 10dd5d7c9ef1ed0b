"""Dialogue -> chat turns -> SFT samples (METHOD.md section 2). Pure functions, no I/O.

A dialogue is walked once into an alternating user/assistant message list:
- a seeker utterance is appended to the previous user message (joined by a newline) or opens a new one;
- a supporter utterance first gets a user message "Hi" when nothing precedes it, or a filler user
  message " " when an assistant message precedes it, and is then its own assistant message.
Every supporter utterance is one sample whose history is the messages before it; trailing seeker
messages produce no sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ipm_prefdial.engines.requests import message_dict
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.sources import Dialogue
from ipm_prefdial.tokens import Trimmer

OPENING = "Hi"
FILLER = " "


@dataclass(frozen=True)
class Message:
    role: str  # "user" (seeker side) or "assistant" (supporter)
    content: str
    strategy: str | None = None  # assistant messages only


@dataclass(frozen=True)
class Turn:
    """One supporter utterance with the gold history that precedes it."""

    dialog_id: int
    turn_index: int  # index of the supporter utterance in the source dialogue
    strategy: str
    utterance: str
    history: tuple[Message, ...]  # alternating, starts and ends with a user message
    emotion_type: str | None
    problem_type: str | None
    negatives: tuple[tuple[str, str], ...] = ()  # (reply, strategy) the source marks as worse (ESC-Pro)

    @property
    def id(self) -> str:
        return f"{self.dialog_id}-{self.turn_index}"


def turns(dialogue: Dialogue) -> Iterator[Turn]:
    """Yield one Turn per supporter utterance of ``dialogue``, in order."""
    messages: list[Message] = []
    for index, utt in enumerate(dialogue.utterances):
        if utt.strategy is None:  # seeker
            if messages and messages[-1].role == "user":
                messages[-1] = Message("user", messages[-1].content + "\n" + utt.text)
            else:
                messages.append(Message("user", utt.text))
            continue
        if not messages:
            messages.append(Message("user", OPENING))
        elif messages[-1].role == "assistant":
            messages.append(Message("user", FILLER))
        if utt.strategy:  # "": a turn the taxonomy says not to mine (ExTES's greetings), history only
            yield Turn(
                dialog_id=dialogue.dialog_id,
                turn_index=index,
                strategy=utt.strategy,
                utterance=utt.text,
                history=tuple(messages),
                emotion_type=dialogue.emotion_type,
                problem_type=dialogue.problem_type,
                negatives=utt.negatives,
            )
        messages.append(Message("assistant", utt.text, utt.strategy or None))


def turn_count(dialogue: Dialogue) -> int:
    """How many turns ``turns`` yields for ``dialogue`` (its supporter utterances with a label), without making them."""
    return sum(1 for utt in dialogue.utterances if utt.strategy)


def tagged(strategy: str, text: str) -> str:
    """The joint model's target form: ``[<strategy>] <utterance>``."""
    return f"[{strategy}] {text}"


def parse_tagged(text: str) -> tuple[str | None, str]:
    """Split a joint output into (strategy, reply); (None, whole text) when it does not start with ``[...]``.
    An empty tag (``[]x``) names no strategy: (None, "x")."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        end = stripped.find("]")
        if end > 0:
            return stripped[1:end].strip() or None, stripped[end + 1 :].strip()
    return None, text.strip()


def sp_history_text(history: tuple[Message, ...]) -> str:
    """The SP user message: one ``seeker:``/``supporter:`` line per message, inner newlines as spaces."""
    lines = []
    for msg in history:
        speaker = "seeker" if msg.role == "user" else "supporter"
        text = msg.content.replace("\n", " ").strip()
        lines.append(f"{speaker}: {text}" if text else f"{speaker}:")
    return "\n".join(lines)


def _chat(history: tuple[Message, ...], *, tag: bool) -> list[dict[str, str]]:
    # shared message dicts (``message_dict``): the rows of a dialogue repeat its history
    return [message_dict(m.role, tagged(m.strategy, m.content) if tag and m.strategy else m.content) for m in history]


def sp_prompt(turn: Turn, prompts: Prompts) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": prompts.sp_system},
        {"role": "user", "content": sp_history_text(turn.history)},
    ]


def rg_prompt(turn: Turn, prompts: Prompts, strategy: str | None = None) -> list[dict[str, str]]:
    """RG input: history without tags; the last user message unchanged, a blank line, the strategy instruction."""
    chat = [{"role": "system", "content": prompts.rg_system}, *_chat(turn.history, tag=False)]
    chat[-1] = {"role": "user", "content": chat[-1]["content"] + prompts.rg_suffix(strategy or turn.strategy)}
    return chat


def vm_prompt(turn: Turn, prompts: Prompts) -> list[dict[str, str]]:
    return [{"role": "system", "content": prompts.vm_system}, *_chat(turn.history, tag=True)]


def gold_answer(task: str, turn: Turn) -> str:
    """The target of a task for a turn: the strategy name (SP), the utterance (RG), ``[strategy] utterance`` (VM)."""
    return {"sp": turn.strategy, "rg": turn.utterance, "vm": tagged(turn.strategy, turn.utterance)}[task]


def task_prompt(task: str, turn: Turn, prompts: Prompts, trim: Trimmer | None = None) -> list[dict[str, str]]:
    """The prompt of a task for a turn, as every part of a build uses it (SFT row, mining request, pair):
    shortened to ``--trim-tokens`` when the build trims."""
    messages = {"sp": sp_prompt, "rg": rg_prompt, "vm": vm_prompt}[task](turn, prompts)
    return trim.apply(task, turn.id, messages, gold_answer(task, turn)) if trim is not None else messages


def sft_rows(turn: Turn, prompts: Prompts, trim: Trimmer | None = None) -> dict[str, dict]:
    """The three SFT rows (strategy, response, joint) of one supporter turn."""
    common = {
        "id": turn.id,
        "dialog_id": turn.dialog_id,
        "turn_index": turn.turn_index,
        "strategy": turn.strategy,
        "emotion_type": turn.emotion_type,
        "problem_type": turn.problem_type,
    }

    def row(prompt: list[dict[str, str]], target: str) -> dict:
        return {**common, "prompt": prompt, "completion": [{"role": "assistant", "content": target}]}

    return {config: row(task_prompt(task, turn, prompts, trim), gold_answer(task, turn))
            for config, task in (("strategy_sft", "sp"), ("response_sft", "rg"), ("joint_sft", "vm"))}
