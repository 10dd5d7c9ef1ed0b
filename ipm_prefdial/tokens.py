"""Token counts of a build's prompts: `--trim-tokens N` (every prompt shortened from its oldest history until
prompt + answer fit N tokens) and the prompt-length percentiles every card shows.

Tokens are counted with a real tokenizer and its chat template (``--trim-tokenizer``; default: the bundled
SmolLM2-135M-Instruct's, read from its GGUF offline and kept in the cache directory after the first time). The
answer a prompt must leave room for is the longer of the gold answer and the task's ``--*-max-tokens`` (plus the
two tokens that end a turn), so one shortened prompt serves the SFT row, the mining request and the pair, whose
chosen side is gold and whose rejected side is at most ``max_tokens`` long.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipm_prefdial.errors import InputError
from ipm_prefdial.history import drop_oldest

BUNDLED = "bundled"
END_OF_TURN = 2  # <|im_end|> and the newline after it, in ChatML; a fair allowance for other templates
TRL_MAX_LENGTH = 1024  # TRL's default max_length, which cuts sequences from the end
SAMPLE_ROWS = 2000  # rows per config measured when the build is not trimmed (all of them when it is)
PERCENTILES = (50, 90, 95, 99)


class TokenizerError(InputError):
    pass


_LOADED: dict[str, tuple[Any, str]] = {}  # the bundled tokenizer, once per process


def load_tokenizer(name: str = BUNDLED, cache_dir: Path | None = None) -> tuple[Any, str]:
    """(tokenizer, recorded name): ``bundled``, a local directory or GGUF file, or a Hub id. The recorded name is
    a file or folder name with a short digest, or the Hub id: never a path."""
    if name == BUNDLED and name in _LOADED:
        return _LOADED[name]
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise TokenizerError("counting tokens needs transformers: pip install 'ipm_prefdial[train]'") from None
    from ipm_prefdial.engines.identity import model_identity

    if name == BUNDLED:
        from ipm_prefdial.engines.local import bundled_gguf
        from ipm_prefdial.paths import default_cache_dir

        gguf = bundled_gguf()
        _, recorded = model_identity(str(gguf))
        saved = (cache_dir or default_cache_dir()) / "tokenizers" / recorded.replace("/", "_")
        if (saved / "tokenizer_config.json").is_file():
            tok = AutoTokenizer.from_pretrained(str(saved))
        else:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)  # a few seconds, once
            tmp = saved.with_name(f"{saved.name}.{os.getpid()}.tmp")
            tok.save_pretrained(str(tmp))
            if saved.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.replace(saved)
        _LOADED[name] = tok, recorded
        return _LOADED[name]
    path = Path(name).expanduser()
    try:
        if path.is_file():  # a GGUF file
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        else:
            tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else name)
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"--trim-tokenizer {path.name if path.exists() else name}: cannot load a tokenizer "
                             f"({exc})") from None
    if getattr(tok, "chat_template", None) is None:
        raise TokenizerError(f"--trim-tokenizer {path.name if path.exists() else name}: the tokenizer has no chat "
                             "template, so prompts cannot be counted as a model would see them")
    return tok, model_identity(str(path) if path.exists() else name)[1]


@dataclass
class TokenCounter:
    tokenizer: Any
    name: str

    def prompt(self, messages: Sequence[dict]) -> int:
        """Tokens of a chat prompt as the model reads it (template and generation prompt included)."""
        return len(self.tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=True,
                                                      return_dict=False))

    def prompts(self, prompts: Sequence[Sequence[dict]]) -> list[int]:
        """Many prompts at once: rendered by the template, then tokenized in one batch."""
        if not prompts:
            return []
        texts = [self.tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def text(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class Trimmer:
    """``--trim-tokens``: shortens the prompts of a build, the same way wherever a turn's prompt is made."""

    counter: TokenCounter
    tokens: int
    max_tokens: dict[str, int]  # task -> the bound of a mined answer
    shortened: dict[str, int] = field(default_factory=dict)  # task -> prompts shortened
    over: dict[str, int] = field(default_factory=dict)  # task -> prompts over the bound even when shortest
    _done: dict[tuple[str, str], list[dict]] = field(default_factory=dict)

    def reserve(self, task: str, answer: str) -> int:
        return max(self.counter.text(answer), self.max_tokens[task]) + END_OF_TURN

    def apply(self, task: str, turn_id: str, messages: list[dict], answer: str) -> list[dict]:
        """The prompt of one task for one turn (gold ``answer``), shortened to fit; computed once per turn."""
        key = (task, turn_id)
        if key not in self._done:
            budget = self.tokens - self.reserve(task, answer)
            trimmed, dropped = drop_oldest(messages, lambda m: self.counter.prompt(m) <= budget)
            if dropped:
                self.shortened[task] = self.shortened.get(task, 0) + 1
            if self.counter.prompt(trimmed) > budget:
                self.over[task] = self.over.get(task, 0) + 1
            self._done[key] = trimmed
        return self._done[key]


def sample_rows(rows: int, sample: int | None = SAMPLE_ROWS, seed: int = 0) -> set[int] | None:
    """The row numbers whose prompts a card measures: a seeded sample of ``sample`` of ``rows``; None: all."""
    if sample is None or rows <= sample:
        return None
    return set(random.Random(seed).sample(range(rows), sample))


def length_stats(counter: TokenCounter, picked: Sequence[Sequence[dict]], *, rows: int) -> dict:
    """Percentiles of prompt length in tokens of the ``picked`` prompts (all ``rows`` of them, or the sample
    ``sample_rows`` chose, in row order), and how many are over TRL's default max_length (counted on the sample and
    scaled to all rows when sampled)."""
    lengths = sorted(counter.prompts(picked))
    if not lengths:
        return {"rows": 0, "of": rows}

    def pct(q: int) -> int:  # nearest rank
        return lengths[min(len(lengths) - 1, max(0, -(-q * len(lengths) // 100) - 1))]

    over = sum(n > TRL_MAX_LENGTH for n in lengths)
    return {"rows": len(lengths), "of": rows, **{f"p{q}": pct(q) for q in PERCENTILES}, "max": lengths[-1],
            f"over_{TRL_MAX_LENGTH}": over, f"over_{TRL_MAX_LENGTH}_share": round(over / len(lengths), 4)}


class LengthSample:
    """Prompt lengths in tokens per SFT config (pair prompts are the same prompts), for the card: all rows of a
    trimmed build, a seeded sample of ``SAMPLE_ROWS`` otherwise (chosen by row number, so only the sampled prompts
    are kept while the rows stream to their files)."""

    def __init__(self, counter: TokenCounter, configs: Sequence[str], rows: int, exact: bool):
        self.counter = counter
        self.configs = tuple(configs)
        self.rows = rows
        self.picked = sample_rows(rows, None if exact else SAMPLE_ROWS)
        self.seen: dict[str, int] = {c: 0 for c in self.configs}
        self.kept: dict[str, list] = {c: [] for c in self.configs}

    def add(self, config: str, prompt: list[dict]) -> None:
        index = self.seen[config]
        self.seen[config] += 1
        if self.picked is None or index in self.picked:
            self.kept[config].append(prompt)

    def stats(self) -> dict:
        out: dict = {"tokenizer": self.counter.name}
        for config in self.configs:
            assert self.seen[config] == self.rows, (config, self.seen[config], self.rows)
            out[config] = length_stats(self.counter, self.kept[config], rows=self.rows)
        return out
