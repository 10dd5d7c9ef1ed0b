"""How sure the metrics are: 95% intervals from a seeded bootstrap over dialogues, and paired comparisons.

The turns of one dialogue are not independent (one supporter, one seeker, one topic), so the unit of resampling is
the dialogue: a resample draws as many dialogues as the file holds, with replacement, and every metric is
recomputed on the turns of the drawn dialogues (a dialogue drawn twice counts twice). The interval is the 2.5th and
97.5th percentile of the resampled values (numpy's linear interpolation between order statistics): the percentile
bootstrap. Resamples where a metric is undefined (a per-strategy F1 of a strategy absent from the resample) are
left out of its interval.

Every metric is a function of sums over dialogues (``DialogueSums``): the strategy metrics of the confusion counts,
the averaged reply metrics of per-reply sums, the judge scores of per-dimension sums and counts (corpus
Distinct-k gets no interval: see ``NO_INTERVAL``). A resample is a vector of weights (how often each dialogue was
drawn), so a thousand resamples cost a thousand sums, not a thousand rescorings.

A paired comparison (``compare``) draws the same dialogues for both systems, over the turns both hold, and reports
for each metric the difference A - B on those turns, its interval, and a two-sided p: twice the smaller share of
resampled differences at or below 0 and at or above 0, each counted with the observed sample added
(``(k + 1) / (n + 1)``, so it is never 0), at most 1. Identical systems give a difference of 0 and p 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ipm_prefdial.evaluation.reference import AVERAGED, from_turns, reference_turns
from ipm_prefdial.evaluation.strategy import MODES, from_counts, strategy_counts
from ipm_prefdial.taxonomy import Taxonomy

RESAMPLES = 1000
SEED = 0
PERCENTILES = (2.5, 97.5)
COUNTS = frozenset({"turns", "evaluated", "dropped"})  # sizes, not measurements: no interval
# Corpus Distinct-k has no interval either: a dialogue drawn twice repeats all its k-grams, which no corpus does, so
# its resampled values sit below the observed one (36.5 observed, [24.1, 28.4] resampled on DecoupledESC's Qwen
# outputs). The per-reply Distinct-k (dist-k) has one.
NO_INTERVAL = COUNTS | {"corpus-dist-1", "corpus-dist-2", "corpus-dist-3"}
GROUPS = (("strategy", "lenient"), ("strategy", "strict"), ("reference",), ("judge",))
Path = tuple[str, ...]


def dialogues_of(rows: Sequence[dict]) -> list[str]:
    """The dialogues of ``rows``, in the order of their first turn."""
    return list(dict.fromkeys(str(r["dialog_id"]) for r in rows))


class DialogueSums:
    """One system's turns grouped by dialogue: the metrics (``evaluate``'s groups) of any weighting of its
    dialogues. ``judge``: per turn, {dimension: score or None}, in the order of ``rows``; ``replies``: the rows'
    ``reference_turns`` where the caller has them already."""

    def __init__(self, rows: Sequence[dict], taxonomy: Taxonomy, dialogues: Sequence[str],
                 judge: Sequence[dict] | None = None, replies: Sequence[dict] | None = None):
        self.labels = taxonomy.names
        self.dialogues = list(dialogues)
        index = {d: k for k, d in enumerate(self.dialogues)}
        groups: list[list[int]] = [[] for _ in self.dialogues]
        for n, r in enumerate(rows):
            groups[index[str(r["dialog_id"])]].append(n)
        self.turns = np.array([len(g) for g in groups], dtype=float)
        self.strategy = {}
        for mode in MODES:
            counts, dropped = zip(*(strategy_counts([rows[n]["strategy"] for n in g],
                                                    [rows[n]["predicted_strategy"] for n in g], mode, taxonomy)
                                    for g in groups), strict=True)
            self.strategy[mode] = (np.array(counts, dtype=np.int64), np.array(dropped, dtype=np.int64))
        per_turn = list(replies) if replies is not None else \
            reference_turns([r["predicted_response"] for r in rows], [r["response"] for r in rows])
        keys = (*AVERAGED, "length")
        self.reference_keys = keys
        self.reference = np.array([[sum(per_turn[n]["values"][k] for n in g) for k in keys] for g in groups])
        self.judge = None
        if judge is not None:
            dims = list(dict.fromkeys(d for turn in judge for d in turn))
            self.judge = {d: (np.array([sum(judge[n][d] or 0 for n in g) for g in groups], dtype=float),
                              np.array([sum(judge[n][d] is not None for n in g) for g in groups], dtype=float))
                          for d in dims}
        # the point estimates on these turns: the reference metrics from the turns themselves, so they equal
        # `evaluate`'s to the last digit
        self._reference_point = from_turns(per_turn)

    def metrics(self, weights: np.ndarray | None = None) -> dict:
        """The metrics of the dialogues weighted by ``weights`` (how often each was drawn; None: each once)."""
        point = weights is None
        w = np.ones(len(self.dialogues), dtype=np.int64) if point else np.asarray(weights)
        turns = float(w @ self.turns)
        out: dict = {"strategy": {}}
        for mode, (counts, dropped) in self.strategy.items():
            total = np.tensordot(w, counts, axes=1)
            out["strategy"][mode] = from_counts(total.tolist(), int(w @ dropped), turns, self.labels)
        if point:
            out["reference"] = dict(self._reference_point)
        else:
            sums = w @ self.reference
            ref = {k: 100 * sums[i] / turns for i, k in enumerate(self.reference_keys) if k != "length"}
            ref["length"] = sums[self.reference_keys.index("length")] / turns
            out["reference"] = ref
        if self.judge is not None:
            out["judge"] = {}
            for d, (sums, counts) in self.judge.items():
                n = float(w @ counts)
                out["judge"][d] = float(w @ sums) / n if n else None
        return out


def draws(dialogues: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``resamples`` x ``dialogues`` weights: how often each dialogue is drawn in each resample (numpy's PCG64
    generator seeded with ``seed``: the same draws for the same arguments)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, dialogues, size=(resamples, dialogues))
    return np.stack([np.bincount(row, minlength=dialogues) for row in picks]) if resamples else \
        np.zeros((0, dialogues), dtype=np.int64)


def leaves(metrics: dict, prefix: Path = ()) -> Iterator[tuple[Path, float | None]]:
    """The measurements of a metrics object by path (counts and corpus Distinct left out)."""
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from leaves(value, (*prefix, key))
        elif key not in NO_INTERVAL and (value is None or isinstance(value, (int, float))) and \
                not isinstance(value, bool):
            yield (*prefix, key), value


def percentile_interval(values: Sequence[float | None]) -> list[float] | None:
    """The 2.5th and 97.5th percentile of the defined values (None when none is)."""
    defined = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if defined.size == 0:
        return None
    lo, hi = np.percentile(defined, PERCENTILES)
    return [float(lo), float(hi)]


def paired_p(differences: Sequence[float | None]) -> float | None:
    """Two-sided p of a paired bootstrap: 2 x min((#d <= 0) + 1, (#d >= 0) + 1) / (n + 1), at most 1."""
    defined = np.array([d for d in differences if d is not None and np.isfinite(d)], dtype=float)
    if defined.size == 0:
        return None
    smaller = min(int((defined <= 0).sum()), int((defined >= 0).sum()))
    return float(min(1.0, 2 * (smaller + 1) / (defined.size + 1)))


def _resampled(sums: DialogueSums, weights: np.ndarray) -> dict[Path, list[float | None]]:
    values: dict[Path, list[float | None]] = {}
    for w in weights:
        for path, value in leaves(sums.metrics(w)):
            values.setdefault(path, []).append(value)
    return values


def intervals(sums: DialogueSums, weights: np.ndarray) -> dict[Path, list[float] | None]:
    """Each measurement's percentile interval over the resamples ``weights`` (rows of ``draws``)."""
    return {path: percentile_interval(v) for path, v in _resampled(sums, weights).items()}


def paired(a: DialogueSums, b: DialogueSums, weights: np.ndarray) -> dict[Path, dict]:
    """Each measurement's difference A - B (on the turns the two hold; the same dialogues, in the same order),
    with its interval and p over the resamples ``weights``."""
    if a.dialogues != b.dialogues:
        raise ValueError("a paired comparison needs the same dialogues in the same order")
    point_a, point_b = dict(leaves(a.metrics())), dict(leaves(b.metrics()))
    res_a, res_b = _resampled(a, weights), _resampled(b, weights)
    out = {}
    for path, va in point_a.items():
        vb = point_b.get(path)
        diffs = [x - y if x is not None and y is not None else None
                 for x, y in zip(res_a.get(path, []), res_b.get(path, []), strict=True)]
        out[path] = {"diff": va - vb if va is not None and vb is not None else None,
                     "ci95": percentile_interval(diffs), "p": paired_p(diffs)}
    return out


def nest(by_path: dict[Path, object], group: Path) -> dict:
    """The entries of one group (``GROUPS``) as a mapping mirroring the metrics (``preference`` a sub-mapping)."""
    out: dict = {}
    for path, value in by_path.items():
        if path[: len(group)] != group:
            continue
        node = out
        for key in path[len(group):-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out
