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


def f1_scores(gold: Sequence[str], predicted: Sequence[str | None],
              labels: Sequence[str] | None = None) -> dict[str, float | None]:
    """Per-strategy F1 (0..1) over ``labels`` (ESConv's names by default); None for a strategy absent from both
    gold and predictions. A prediction of None (strict mode, no "Others" label) credits no strategy."""
    out: dict[str, float | None] = {}
    for s in labels if labels is not None else esconv().names:
        tp = sum(g == s and p == s for g, p in zip(gold, predicted, strict=True))
        n_pred = sum(p == s for p in predicted)
        n_gold = sum(g == s for g in gold)
        if n_pred == 0 and n_gold == 0:
            out[s] = None
        else:
            out[s] = 2 * tp / (n_pred + n_gold)
    return out


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


def strategy_metrics(gold: Sequence[str], predicted: Sequence[str | None], mode: str,
                     taxonomy: Taxonomy | None = None) -> dict:
    """All strategy metrics of one mode over the labels of ``taxonomy`` (ESConv's by default). ``gold`` are labels
    of the taxonomy (any spelling it accepts; anything else is a ValueError); ``predicted`` raw labels (or None)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    taxonomy = taxonomy or esconv()
    labels = taxonomy.names
    fallback = taxonomy.canonical(OTHERS)
    pairs: list[tuple[str, str | None]] = []
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
        pairs.append((g, p))
    golds, preds = [g for g, _ in pairs], [p for _, p in pairs]
    per = f1_scores(golds, preds, labels)
    present = [v for v in per.values() if v is not None]
    support = {s: golds.count(s) for s in labels}
    weighted = sum((per[s] or 0.0) * support[s] for s in labels) / len(golds) if golds else 0.0
    p = preference(win_matrix(golds, preds, labels))
    return {
        "Q": 100 * sum(present) / len(present) if present else 0.0,
        "weighted_f1": 100 * weighted,
        "accuracy": 100 * sum(g == q for g, q in pairs) / len(pairs) if pairs else 0.0,
        "per_strategy_f1": {s: (100 * v if v is not None else None) for s, v in per.items()},
        "preference": dict(zip(labels, p, strict=True)),
        "B": bias(p),
        "turns": len(gold),
        "evaluated": len(pairs),
        "dropped": dropped,
        "dropped_ratio": dropped / len(gold) if gold else 0.0,
    }
