"""Strategy metrics (Kang et al. 2024, METHOD.md section 4): proficiency Q (macro-F1), weighted F1, per-strategy
F1, the Bradley-Terry preference p of each strategy and the preference bias B.

Gold and predicted labels are matched to the 8 names case-insensitively and through the synonym table of
``ipm_prefdial.strategies``. Predictions that match none are handled in two modes:
``lenient`` drops those turns, as the DecoupledESC code does (the dropped ratio is reported); ``strict`` maps
them to "Others", as Kang et al.'s code does.

Macro-F1 averages over the strategies that occur in the gold labels or the predictions (scikit-learn's
convention); on the ESConv test split every strategy occurs, so that is all 8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ipm_prefdial.strategies import STRATEGIES, canonical_strategy

MODES = ("lenient", "strict")
BT_ITERATIONS = 20


def match(label: str | None) -> str | None:
    """The ESConv name of a label, matched case-insensitively and through the synonym table (Kang et al.'s
    "Reflection of Feelings", FailedESConv's "Questions", ...), or None."""
    return canonical_strategy(label) if isinstance(label, str) else None


def f1_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float | None]:
    """Per-strategy F1 (0..1); None for a strategy absent from both gold and predictions."""
    out: dict[str, float | None] = {}
    for s in STRATEGIES:
        tp = sum(g == s and p == s for g, p in zip(gold, predicted, strict=True))
        n_pred = sum(p == s for p in predicted)
        n_gold = sum(g == s for g in gold)
        if n_pred == 0 and n_gold == 0:
            out[s] = None
        else:
            out[s] = 2 * tp / (n_pred + n_gold)
    return out


def win_matrix(gold: Sequence[str], predicted: Sequence[str]) -> list[list[int]]:
    """W[i][j]: turns where strategy i was predicted and j is gold (indices in STRATEGIES order)."""
    index = {s: k for k, s in enumerate(STRATEGIES)}
    w = [[0] * len(STRATEGIES) for _ in STRATEGIES]
    for g, p in zip(gold, predicted, strict=True):
        w[index[p]][index[g]] += 1
    return w


def preference(w: Sequence[Sequence[int]], iterations: int = BT_ITERATIONS) -> list[float]:
    """Bradley-Terry strengths by Kang et al.'s update rule (METHOD.md section 4), rescaled to sum to n.

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


def strategy_metrics(gold: Sequence[str], predicted: Sequence[str | None], mode: str) -> dict:
    """All strategy metrics of one mode. ``gold`` are ESConv names; ``predicted`` raw labels (or None)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    pairs = []
    dropped = 0
    for g, raw in zip(gold, predicted, strict=True):
        p = match(raw)
        if p is None:
            if mode == "lenient":
                dropped += 1
                continue
            p = "Others"
        pairs.append((g, p))
    golds, preds = [g for g, _ in pairs], [p for _, p in pairs]
    per = f1_scores(golds, preds)
    present = [v for v in per.values() if v is not None]
    support = {s: golds.count(s) for s in STRATEGIES}
    weighted = sum((per[s] or 0.0) * support[s] for s in STRATEGIES) / len(golds) if golds else 0.0
    p = preference(win_matrix(golds, preds))
    return {
        "Q": 100 * sum(present) / len(present) if present else 0.0,
        "weighted_f1": 100 * weighted,
        "accuracy": 100 * sum(g == q for g, q in pairs) / len(pairs) if pairs else 0.0,
        "per_strategy_f1": {s: (100 * v if v is not None else None) for s, v in per.items()},
        "preference": dict(zip(STRATEGIES, p, strict=True)),
        "B": bias(p),
        "turns": len(gold),
        "evaluated": len(pairs),
        "dropped": dropped,
        "dropped_ratio": dropped / len(gold) if gold else 0.0,
    }
