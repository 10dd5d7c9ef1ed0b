"""Optional LLM-judge scores of predicted replies: Fluency, Professionalism, Empathy, Helpfulness, 0-5 each.

One request per reply and dimension (temperature 0), constrained to the six digits where the engine can; the
gold reply is shown as a reference. An answer that is not a bare number 0-5 is counted as unparsed, never
guessed. Requests go through the engine layer's cache.
"""

from __future__ import annotations

from collections.abc import Sequence

from ipm_prefdial.engines import EngineSpec, make_engine
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.requests import ChatRequest, Choice, Sampling
from ipm_prefdial.engines.runner import Stats, run_coroutine, run_requests
from ipm_prefdial.errors import InputError
from ipm_prefdial.prompts import Prompts

DIMENSIONS = {
    "fluency": ("Fluency", "the reply reads naturally, is grammatical and easy to follow."),
    "professionalism": ("Professionalism", "the reply shows the skill of a trained supporter: appropriate, "
                                           "respectful, and free of harmful or careless advice."),
    "empathy": ("Empathy", "the reply understands and acknowledges what the seeker feels."),
    "helpfulness": ("Helpfulness", "the reply helps the seeker feel better or move towards dealing with the "
                                   "problem."),
}
SCORES = tuple(str(k) for k in range(6))


def judge_requests(predictions: Sequence[dict], prompts: Prompts, max_tokens: int = 4) -> list[ChatRequest]:
    requests = []
    for p in predictions:
        if not p.get("context"):
            raise InputError(f"prediction {p.get('id')!r}: the judge needs the dialogue in a 'context' field "
                             f"(ipm infer writes it)")
        for key, (name, definition) in DIMENSIONS.items():
            messages = [{"role": "system", "content": prompts.eval_judge_system(name, definition)},
                        {"role": "user", "content": prompts.eval_judge_user(p["context"], p["response"],
                                                                            p.get("predicted_response") or "")}]
            requests.append(ChatRequest.chat(messages, sampling=Sampling(0.0, 1.0, max_tokens), output=Choice(SCORES),
                                             group=f"{key}:{p['dialog_id']}"))
    return requests


def judge_scores(predictions: Sequence[dict], spec: EngineSpec, *, cache_dir: str | None = None,
                 progress=None) -> dict:
    """Mean score per dimension over the parsed answers, the unparsed counts, the judge, its accounting, and each
    reply's scores (``per_turn``: {dimension: score or None}, in the order of ``predictions``)."""
    return run_coroutine(_judge(predictions, spec, cache_dir, progress))


async def _judge(predictions: Sequence[dict], spec: EngineSpec, cache_dir: str | None, progress) -> dict:
    from ipm_prefdial.paths import cache_root

    requests = judge_requests(predictions, Prompts())
    engine = make_engine(spec)
    cache = RequestCache.in_dir(cache_root(cache_dir))
    stats = Stats()
    try:
        results = await run_requests(engine, requests, cache=cache, progress=progress, description="judging replies",
                                     stats=stats)
    finally:
        await engine.close()
        cache.close()
    keys = list(DIMENSIONS)
    per_turn = [{key: int(r.parsed) if r.ok and r.parsed in SCORES else None
                 for key, r in zip(keys, results[n * len(keys) : (n + 1) * len(keys)], strict=True)}
                for n in range(len(predictions))]
    out: dict = {}
    unparsed: dict[str, int] = {}
    for key in keys:
        scores = [turn[key] for turn in per_turn if turn[key] is not None]
        unparsed[key] = len(predictions) - len(scores)
        out[key] = sum(scores) / len(scores) if scores else None
    return {"scores": out, "unparsed": unparsed, "judge": f"{engine.name}:{engine.display_name}",
            "accounting": stats.as_dict(), "per_turn": per_turn}
