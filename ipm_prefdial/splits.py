"""Split dialogues by dialogue (never by turn): the DecoupledESC paper's split, the Hub's, or a seeded one."""

from __future__ import annotations

import json
import random
from functools import cache
from importlib.resources import files

from ipm_prefdial.sources import Dialogue, LoadedSource, SourceError
from ipm_prefdial.sources.load import HUB_TEST, HUB_VALID, hub_permutation

SPLIT_METHODS = ("decoupledesc", "hf", "random")
SPLITS = ("train", "validation", "test")
ESCONV_SIZE = 1300



@cache
def split_indices() -> dict[str, list[int]]:
    """The paper's index lists into ESConv's original order (package data; see the ``_note`` entry of
    resources/split_indices.json)."""
    data = json.loads(files("ipm_prefdial.resources").joinpath("split_indices.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}

def split_ids(method: str, source: LoadedSource, *, seed: int = 0,
              fractions: tuple[float, float] = (0.1, 0.1)) -> dict[str, list[int]]:
    """dialog ids per split, each list in the split's own order (the order ``--limit`` takes from)."""
    ids = [d.dialog_id for d in source.dialogues]
    if method == "decoupledesc":
        lists = split_indices()
        _need_esconv(ids, source, method)
        return {"train": lists["decoupledesc_train_inferred"], "validation": lists["decoupledesc_val"],
                "test": lists["decoupledesc_test"]}
    if method == "hf":
        if source.given_split is not None:
            return source.given_split
        _need_esconv(ids, source, method)
        order = hub_permutation(ESCONV_SIZE)
        result = {"validation": order[:HUB_VALID], "test": order[HUB_VALID:HUB_VALID + HUB_TEST],
                  "train": order[HUB_VALID + HUB_TEST:]}
        lists = split_indices()
        if (result["train"], result["validation"], result["test"]) != (
                lists["hf_train"], lists["hf_valid"], lists["hf_test"]):
            raise RuntimeError("the reproduced Hub split differs from the shipped index lists "
                               "(has Python's random.shuffle changed?)")
        return {s: result[s] for s in SPLITS}
    if method == "random":
        order = sorted(ids)
        random.Random(seed).shuffle(order)
        n_val, n_test = (round(len(order) * f) for f in fractions)
        return {"train": order[n_val + n_test:], "validation": order[:n_val], "test": order[n_val:n_val + n_test]}
    raise SourceError(f"unknown split {method!r}; choose one of {', '.join(SPLIT_METHODS)}")


def _need_esconv(ids: list[int], source: LoadedSource, method: str) -> None:
    skipped = {s["dialog_id"] for s in source.skipped}
    if max(ids, default=-1) >= ESCONV_SIZE or len(ids) + len(skipped) != ESCONV_SIZE:
        raise SourceError(
            f"--split {method} is defined on ESConv's 1300 dialogues, but the source has {len(ids)}; "
            "use --split random for other corpora"
        )


def assign(source: LoadedSource, ids: dict[str, list[int]], limit: int | None = None) -> dict[str, list[Dialogue]]:
    """Dialogues per split, in split order, the first ``limit`` of each; dialogues skipped as invalid are absent."""
    by_id = {d.dialog_id: d for d in source.dialogues}
    seen: dict[int, str] = {}
    result: dict[str, list[Dialogue]] = {}
    for split in SPLITS:
        for did in ids[split]:
            if did in seen:
                raise SourceError(f"dialogue {did} is in both {seen[did]} and {split}")
            seen[did] = split
        chosen = [by_id[did] for did in ids[split] if did in by_id]
        result[split] = chosen[:limit] if limit is not None else chosen
    return result
