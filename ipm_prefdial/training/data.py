"""What ``ipm train`` reads: the SFT and pair configs of a build (through ``load_dataset``), capped by a seeded
sample, pairs selected by the judge, and prompts shortened from the left so the current turn survives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ipm_prefdial.errors import InputError
from ipm_prefdial.history import drop_oldest
from ipm_prefdial.taxonomy import Taxonomy, TaxonomyError

SFT_CONFIG = {"sp": "strategy_sft", "rg": "response_sft", "vm": "joint_sft"}
PAIR_CONFIG = {"sp": "strategy_pairs", "rg": "response_pairs", "vm": "joint_pairs"}


class TrainDataError(InputError):
    pass


def check_configs(data: str | Path, configs: list[str]) -> None:
    """Fail before any training when the build lacks a config the run needs."""
    root = Path(data)
    if not (root / "README.md").is_file():
        raise TrainDataError(f"{root}: not a build directory (no README.md); run `make build` or `ipm build`")
    missing = [c for c in configs if not (root / "data" / c).is_dir()]
    if missing:
        hint = "ipm build --stage all" if any(c.endswith("_pairs") for c in missing) else "ipm build --stage sft"
        raise TrainDataError(f"{root}: the build has no {', '.join(missing)} config; `ipm train` needs "
                             f"{'it' if len(missing) == 1 else 'them'} ({hint})")


def build_taxonomy(data: str | Path) -> Taxonomy:
    """The strategy taxonomy of the build (its manifest's ``taxonomy``; ESConv's for builds from before taxonomies):
    the labels the SP is constrained to and the test turns are scored with. A damaged record fails before any
    training, naming the manifest and the field."""
    from ipm_prefdial.evaluation.infer import InferError
    from ipm_prefdial.evaluation.infer import build_taxonomy as read_taxonomy

    try:
        return read_taxonomy(data)
    except (InferError, TaxonomyError) as exc:
        raise TrainDataError(str(exc)) from None


def load_split(data: str | Path, config: str, split: str) -> list[dict]:
    """Rows of one config and split of a build, via ``datasets.load_dataset`` (a clear message if missing)."""
    from datasets import load_dataset

    root = Path(data)
    check_configs(root, [config])
    try:
        return list(load_dataset(str(root), config, split=split))
    except ValueError as exc:  # unknown split
        raise TrainDataError(f"{root}: {config} has no {split} split ({exc})") from None


@dataclass
class PairSelection:
    rows: list[dict]
    source: str  # "retained" or "all"
    note: str


def select_pairs(task: str, rows: list[dict], mode: str, min_retained: int) -> PairSelection:
    """DPO pairs of one task: the judge-retained ones (``mode`` retained), falling back to all when fewer than
    ``min_retained`` were retained. SP pairs have no judge and are always all used."""
    if task == "sp" or mode == "all":
        why = "strategy pairs are not judged" if task == "sp" else "--pairs all"
        return PairSelection(rows, "all", f"{len(rows)} pairs ({why})")
    judged = [r for r in rows if r.get("judge") is not None]
    retained = [r for r in judged if r["judge"]["retained"]]
    if len(retained) >= min_retained:
        return PairSelection(retained, "retained", f"{len(retained)} of {len(rows)} pairs retained by the judge")
    return PairSelection(rows, "all", f"only {len(retained)} of {len(rows)} pairs retained by the judge (minimum "
                                      f"{min_retained}; {len(rows) - len(judged)} not judged): using all pairs")


def fit_prompt(prompt: list[dict], answer_tokens: int, max_length: int, count) -> list[dict]:
    """The prompt with its oldest history removed until prompt + answer fit ``max_length`` tokens.

    ``count(messages)`` gives the token length of a prompt. The rule is ``history.drop_oldest``: chat prompts
    lose exchanges from the front (the system prompt and the last user message always stay); a single-user-message
    prompt (SP: the dialogue as lines) loses its oldest lines instead. What cannot be shortened further is
    returned as short as it gets."""
    budget = max_length - answer_tokens
    return drop_oldest([dict(m) for m in prompt], lambda m: count(m) <= budget)[0]
