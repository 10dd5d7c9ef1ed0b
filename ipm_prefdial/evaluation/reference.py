"""Reference metrics of the ESConv tradition (METHOD.md section 4), fully offline.

Tokens: lower-cased word tokens as nltk's ``word_tokenize`` makes them (sentences split first, then Treebank words),
offline: ``word_tokenize`` itself needs the downloaded punkt data, an untrained ``PunktSentenceTokenizer`` with
``NLTKWordTokenizer`` does not. Per reply, then averaged over replies, all x100 except length:
BLEU-k = nltk ``corpus_bleu`` on the single reply, uniform weights 1/k, smoothing method3;
Distinct-k = distinct k-grams / k-grams of the reply (0 when it has none); ROUGE-L = LCS F-measure with
beta 1.2; F1 = unigram overlap F1; length = tokens of the prediction. Corpus-level Distinct-k (distinct k-grams
over all predictions / all k-grams) is reported as ``corpus-dist-k``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import cache

BETA = 1.2


@cache
def _tokenizers():
    from nltk.tokenize import NLTKWordTokenizer, PunktSentenceTokenizer

    # An untrained Punkt model needs no download; it splits at ., ! and ? followed by space (its learned
    # abbreviation list is what the downloaded English model adds).
    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def tokenize(text: str | None) -> list[str]:
    """Lower-cased word tokens as ``nltk.word_tokenize`` makes them: sentences first (on the original casing, which
    Punkt reads), then Treebank words per sentence, so a sentence-final period is a token of its own."""
    sentences, words = _tokenizers()
    return [token.lower() for sentence in sentences.tokenize(text or "") for token in words.tokenize(sentence)]


def ngrams(tokens: Sequence[str], k: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1)]


def distinct(tokens: Sequence[str], k: int) -> float:
    grams = ngrams(tokens, k)
    return len(set(grams)) / len(grams) if grams else 0.0


def lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: Sequence[str], ref: Sequence[str], beta: float = BETA) -> float:
    common = lcs(hyp, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def unigram_f1(hyp: Sequence[str], ref: Sequence[str]) -> float:
    overlap = sum((Counter(hyp) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(hyp), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def bleu(hyp: Sequence[str], ref: Sequence[str], k: int) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    if not hyp or not ref:
        return 0.0
    return corpus_bleu([[list(ref)]], [list(hyp)], weights=(1.0 / k,) * k,
                       smoothing_function=SmoothingFunction().method3)


AVERAGED = ("bleu-1", "bleu-2", "bleu-3", "bleu-4", "dist-1", "dist-2", "dist-3", "rouge-l", "f1")


def reference_turns(predictions: Sequence[str | None], references: Sequence[str]) -> list[dict]:
    """Each reply's own figures (the averaged metrics, 0..1, and ``length``) and its k-grams (``grams``: k -> list,
    for corpus Distinct): what ``reference_metrics`` averages, and what the bootstrap resamples."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    turns = []
    for pred, ref in zip(predictions, references, strict=True):
        hyp, gold = tokenize(pred), tokenize(ref)
        values = {f"bleu-{k}": bleu(hyp, gold, k) for k in (1, 2, 3, 4)}
        values.update({f"dist-{k}": distinct(hyp, k) for k in (1, 2, 3)})
        values.update({"rouge-l": rouge_l(hyp, gold), "f1": unigram_f1(hyp, gold), "length": len(hyp)})
        turns.append({"values": values, "grams": {k: ngrams(hyp, k) for k in (1, 2, 3)}})
    return turns


def from_turns(turns: Sequence[dict]) -> dict[str, float]:
    """The averaged metrics (x100 except ``length``) and corpus Distinct-k of replies' ``reference_turns``."""
    n = len(turns)
    if n == 0:
        raise ValueError("no predictions to evaluate")
    out = {key: 100 * sum(t["values"][key] for t in turns) / n for key in AVERAGED}
    for k in (1, 2, 3):
        grams = [g for t in turns for g in t["grams"][k]]
        out[f"corpus-dist-{k}"] = 100 * len(set(grams)) / len(grams) if grams else 0.0
    out["length"] = sum(t["values"]["length"] for t in turns) / n
    return out


def reference_metrics(predictions: Sequence[str | None], references: Sequence[str]) -> dict[str, float]:
    """The averaged metrics of predicted replies against the gold ones (x100 except ``length``)."""
    return from_turns(reference_turns(predictions, references))
