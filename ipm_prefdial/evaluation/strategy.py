"""Strategy metrics (Kang et al. 2024, METHOD.md section 4): proficiency Q (macro-F1), weighted F1, per-strategy
F1, the Bradley-Terry preference p of each strategy and the preference bias B, over the labels of a taxonomy
(``ipm_prefdial.taxonomy``: ESConv's eight by default, a build's own, such as ExTES's sixteen, when given).

Gold and predicted labels are matched to the taxonomy's names case-insensitively and through its spelling variants
(``Taxonomy.canonical``). Predictions that match none are handled in two modes: ``lenient`` drops those turns, as
the DecoupledESC code does (the dropped ratio is reported); ``strict`` maps them to the taxonomy's "Others" label,
as Kang et al.'s code does. A taxonomy without an "Others" label (ESC-Pro's) keeps those turns in strict mode as
wrong answers that credit no strategy: they lower the accuracy and the recall of their gold strategy, and add no
count to the preference matrix W (they show no preference for any strategy).

Macro-F1 averages over the strategies that occur in the gold labels or the predictions (scikit-learn's
convention); on the ESConv test split every strategy occurs, so that is all 8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ipm_prefdial.errors import InputError
from ipm_prefdial.taxonomy import Taxonomy, builtin

MODES = ("lenient", "strict")
BT_ITERATIONS = 20
OTHERS = "Others"  # what strict mode maps an unmatched prediction to (through the taxonomy's spellings)


def esconv() -> Taxonomy:
    """The default taxonomy of every function here: ESConv's eight strategies."""
    return builtin("esconv")


def match(label: str | None, taxonomy: Taxonomy | None = None) -> str | None:
    """The taxonomy's name of a label (ESConv's by default), matched case-insensitively and through the
    taxonomy's spelling variants (Kang et al.'s "Reflection of Feelings", FailedESConv's "Questions", ...), or
    None."""
    return (taxonomy or esconv()).canonical(label) if isinstance(label, str) else None


def win_matrix(gold: Sequence[str], predicted: Sequence[str | None],
               labels: Sequence[str] | None = None) -> list[list[int]]:
    """W[i][j]: turns where strategy i was predicted and j is gold (indices in the order of ``labels``, ESConv's
    names by default). A prediction of None is no game."""
    labels = tuple(labels) if labels is not None else esconv().names
    index = {s: k for k, s in enumerate(labels)}
    w = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted, strict=True):
        if p is not None:
            w[index[p]][index[g]] += 1
    return w


def preference(w: Sequence[Sequence[int]], iterations: int = BT_ITERATIONS) -> list[float]:
    """Bradley-Terry strengths by Kang et al.'s update rule (METHOD.md section 4), rescaled to sum to n (the number
    of strategies: 8 for ESConv, 16 for ExTES).

    Degenerate cases, where Kang's code divides by zero: an update whose denominator is 0 (strategy i never
    lost: it was never the gold strategy of a mispredicted turn) leaves p_i unchanged; with no off-diagonal
    count at all every p_i is 1 (B = 0). A p_i that reaches 0 is left out of the geometric mean, and a pair of
    two strategies at 0 is skipped in the sums (Kang's code would divide 0 by 0)."""
    n = len(w)
    if not any(w[i][j] for i in range(n) for j in range(n) if i != j):
        return [1.0] * n
    p = [1.0] * n
    for _ in range(iterations):
        for i in range(n):
            # pairs with no games are skipped (their term is 0), and so are pairs of two strategies whose
            # strength has fallen to 0 (0/0: the pair says nothing about their relative strength)
            num = sum(w[i][j] * p[j] / (p[i] + p[j]) for j in range(n) if j != i and w[i][j] and p[i] + p[j] > 0)
            den = sum(w[j][i] / (p[i] + p[j]) for j in range(n) if j != i and w[j][i] and p[i] + p[j] > 0)
            if den > 0:
                p[i] = num / den
        positive = [x for x in p if x > 0]
        if positive:
            geo = math.exp(sum(math.log(x) for x in positive) / len(positive))
            p = [x / geo for x in p]
    total = sum(p)
    return [n * x / total for x in p] if total > 0 else [1.0] * n


def bias(p: Sequence[float]) -> float:
    """Population standard deviation of the strengths (numpy's ``std``)."""
    mean = sum(p) / len(p)
    return math.sqrt(sum((x - mean) ** 2 for x in p) / len(p))


def strategy_counts(gold: Sequence[str], predicted: Sequence[str | None], mode: str,
                    taxonomy: Taxonomy | None = None) -> tuple[list[list[int]], int]:
    """The confusion counts of one mode and the turns it dropped: ``C[i][j]`` = turns predicted label i (index
    ``len(labels)``: a prediction that credits no strategy) whose gold label is j, over the taxonomy's labels.
    Every strategy metric is a function of these counts (``from_counts``), so the bootstrap adds up dialogues'
    counts instead of rescoring turns."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    taxonomy = taxonomy or esconv()
    labels = taxonomy.names
    index = {s: k for k, s in enumerate(labels)}
    fallback = taxonomy.canonical(OTHERS)
    counts = [[0] * len(labels) for _ in range(len(labels) + 1)]
    dropped = 0
    for k, (raw_gold, raw) in enumerate(zip(gold, predicted, strict=True)):
        g = match(raw_gold, taxonomy)
        if g is None:
            raise InputError(f"gold label {k} {raw_gold!r} is not one of the {len(labels)} strategies of the "
                             f"{taxonomy.name} taxonomy ({', '.join(labels)})")
        p = match(raw, taxonomy)
        if p is None:
            if mode == "lenient":
                dropped += 1
                continue
            p = fallback  # None without an "Others" label: a wrong answer that credits no strategy
        counts[len(labels) if p is None else index[p]][index[g]] += 1
    return counts, dropped


def from_counts(counts: Sequence[Sequence[float]], dropped: float, turns: float, labels: Sequence[str]) -> dict:
    """All strategy metrics of one mode from its confusion counts (``strategy_counts``; with the bootstrap's
    weights the counts are weighted sums of dialogues' counts)."""
    k = len(labels)
    evaluated = sum(sum(row) for row in counts)
    per: dict[str, float | None] = {}
    support: dict[str, float] = {}
    for i, s in enumerate(labels):
        n_pred = sum(counts[i])
        n_gold = sum(row[i] for row in counts)
        support[s] = n_gold
        per[s] = None if n_pred == 0 and n_gold == 0 else 2 * counts[i][i] / (n_pred + n_gold)
    present = [v for v in per.values() if v is not None]
    correct = sum(counts[i][i] for i in range(k))
    weighted = sum((per[s] or 0.0) * support[s] for s in labels) / evaluated if evaluated else 0.0
    p = preference([[counts[i][j] for j in range(k)] for i in range(k)])
    return {
        "Q": 100 * sum(present) / len(present) if present else 0.0,
        "weighted_f1": 100 * weighted,
        "accuracy": 100 * correct / evaluated if evaluated else 0.0,
        "per_strategy_f1": {s: (100 * v if v is not None else None) for s, v in per.items()},
        "preference": dict(zip(labels, p, strict=True)),
        "B": bias(p),
        "turns": turns,
        "evaluated": evaluated,
        "dropped": dropped,
        "dropped_ratio": dropped / turns if turns else 0.0,
    }


def strategy_metrics(gold: Sequence[str], predicted: Sequence[str | None], mode: str,
                     taxonomy: Taxonomy | None = None) -> dict:
    """All strategy metrics of one mode over the labels of ``taxonomy`` (ESConv's by default). ``gold`` are labels
    of the taxonomy (any spelling it accepts; anything else is a ValueError); ``predicted`` raw labels (or None)."""
    taxonomy = taxonomy or esconv()
    counts, dropped = strategy_counts(gold, predicted, mode, taxonomy)
    return from_counts(counts, dropped, len(gold), taxonomy.names)
