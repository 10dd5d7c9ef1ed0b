"""Dialogue sources: ESConv (download or local copy, JSON list or the Hub's split layout), FailedESConv,
and any ESConv-style JSON/JSONL corpus. Every loader returns the same typed records."""

from __future__ import annotations

from dataclasses import dataclass, field

from ipm_prefdial.errors import InputError


class SourceError(InputError):
    """Bad source input. The message names the file, the dialogue and the field."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:25]
        more = len(self.problems) - len(shown)
        text = "\n".join(f"  - {p}" for p in shown) if len(shown) > 1 else shown[0]
        if len(shown) > 1:
            text = f"{len(self.problems)} problems in the source:\n{text}"
        if more > 0:
            text += f"\n  ... and {more} more"
        super().__init__(text)


@dataclass(frozen=True)
class Utterance:
    text: str
    # None: the seeker. A supporter turn: its label as the source's taxonomy names it, or "" for a turn whose label is
    # empty where the taxonomy says an empty label is not a turn to mine (ExTES's greetings): kept in the history
    # of later turns, never a sample of its own.
    strategy: str | None
    # Replies the source itself marks as worse than this supporter turn (ESC-Pro's non-preferred replies), each as
    # (text, strategy): `--stage import` makes pairs of them.
    negatives: tuple[tuple[str, str], ...] = ()

    @property
    def supporter(self) -> bool:
        return self.strategy is not None


@dataclass(frozen=True)
class Dialogue:
    dialog_id: int  # index in the source's original order
    utterances: tuple[Utterance, ...]
    emotion_type: str | None = None
    problem_type: str | None = None


@dataclass
class LoadedSource:
    """Dialogues in original order, plus what the manifest records about where they came from."""

    dialogues: list[Dialogue]
    info: dict
    # Split membership carried by the source itself (the Hub's train/valid/test files), as dialog ids.
    given_split: dict[str, list[int]] | None = None
    skipped: list[dict] = field(default_factory=list)  # dialogues dropped with --on-invalid skip
    # What the reader met and handled, by kind (empty labels skipped, same-speaker runs, ...): the manifest records it.
    counts: dict[str, int] = field(default_factory=dict)


from ipm_prefdial.sources.load import load_source  # noqa: E402

__all__ = ["Dialogue", "LoadedSource", "SourceError", "Utterance", "load_source"]
