"""The eight ESConv support strategies and the label synonyms other corpora use."""

from __future__ import annotations

# Exact ESConv spelling and order (the order of the upstream strategy.json).
STRATEGIES: tuple[str, ...] = (
    "Question",
    "Restatement or Paraphrasing",
    "Reflection of feelings",
    "Self-disclosure",
    "Affirmation and Reassurance",
    "Providing Suggestions",
    "Information",
    "Others",
)

# Labels seen outside ESConv.json, mapped to the ESConv name. FailedESConv.json uses the first five;
# Kang et al. write "Reflection of Feelings". Matching is case-insensitive and ignores surrounding space.
SYNONYMS: dict[str, str] = {
    "questions": "Question",
    "other": "Others",
    "restatement": "Restatement or Paraphrasing",
    "approval and reassurance": "Affirmation and Reassurance",
    "direct guidance": "Providing Suggestions",
}

_CANONICAL = {name.lower(): name for name in STRATEGIES}


def canonical_strategy(label: str, *, synonyms: bool = True) -> str | None:
    """The ESConv name for ``label`` (case-insensitive), or None when it is not a known strategy."""
    key = " ".join(label.split()).lower()
    if key in _CANONICAL:
        return _CANONICAL[key]
    if synonyms:
        return SYNONYMS.get(key)
    return None
