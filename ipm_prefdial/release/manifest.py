"""The manifest of a build (``manifest.json``): what was built, from what, how, and what came of it. It is written
last: a build interrupted before then is visibly incomplete to ``ipm validate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ipm_prefdial import __version__
from ipm_prefdial.release.card import render_card
from ipm_prefdial.release.features import SFT_CONFIGS, TASK_OF
from ipm_prefdial.release.files import write_bytes_atomic


def manifest(*, cfg: Any, recorded: dict, rerun: str, source: Any, taxonomy: Any, method: str,
             per_split: dict[str, list], prompts: Any, trim: Any, lengths: dict, mined: Any, imported: dict | None,
             pairs_by_strategy: dict | None, judge_status: dict | None, counts: dict, distribution: dict,
             files: dict) -> dict:
    """The manifest's content, in its order. ``recorded`` is the build's config as it may be published (no path,
    no secret), ``rerun`` the command that completes an incomplete build; ``per_split`` and ``distribution`` (gold
    strategy -> turns) are keyed by split, in split order; ``mined`` the mining output (None without stage all),
    ``imported`` the source's own pairs (None when none were read)."""
    transient = mined.transient if mined else {}
    return {
        "name": "IPM-PrefDial",
        "version": cfg.dataset_version,
        "license": "cc-by-nc-4.0",
        "tool": {"name": "ipm_prefdial", "version": __version__},
        "stage": cfg.stage,
        # false while requests of this build ended in transient failures (retries ran out): the same command
        # sends them again; `ipm validate` and `ipm publish` refuse an incomplete build
        "complete": not transient,
        "incomplete": {"requests": sum(transient.values()), "transient_failures": transient, "rerun": rerun,
                       **({"exported": mined.exported} if mined and mined.exported else {})} if transient else None,
        "source": {**source.info, "counts": source.counts},
        "taxonomy": taxonomy.as_dict(),
        "split": {
            "method": method,
            "seed": cfg.seed if method == "random" else None,
            "limit": cfg.limit,
            "dialogues": {s: len(dialogues) for s, dialogues in per_split.items()},
            "skipped_invalid": source.skipped,
        },
        "executor": {"kind": cfg.executor, "workers": cfg.workers if cfg.executor == "ray" else 1},
        "prompts": prompts.hashes(),
        "rg_instruction": prompts.rg_rule.template,  # how RG prompts end; validate and infer read it from here
        "build_config": recorded,
        "trim": None if trim is None else {
            "tokens": trim.tokens, "tokenizer": trim.counter.name,
            "answer_reserve": "max(gold answer, --<task>-max-tokens) + 2 tokens",
            "max_tokens": trim.max_tokens,
            "shortened": {c: trim.shortened.get(TASK_OF[c], 0) for c in SFT_CONFIGS},
            "over_budget": {c: trim.over.get(TASK_OF[c], 0) for c in SFT_CONFIGS}},
        "prompt_tokens": lengths,
        "models": mined.models if mined else {},
        "sampling": mined.sampling if mined else {},
        "mining": mined.mining if mined else None,
        "judge": mined.judge if mined else None,
        "spend": mined.spend if mined else None,
        "judge_status": judge_status,
        "pairs_by_strategy": pairs_by_strategy,
        "imported": imported,
        "counts": counts,
        "strategy_distribution": {s: {name: counts[name] for name in taxonomy.names}
                                  for s, counts in distribution.items()},
        "files": files,
    }


def write_release(out: Path, manifest: dict) -> None:
    """The card, then the manifest (last: a build stopped before it is visibly incomplete)."""
    write_bytes_atomic(out / "README.md", render_card(manifest, out.resolve().name).encode("utf-8"))
    write_bytes_atomic(out / "manifest.json", (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())


def incomplete_line(m: dict) -> str:
    """Why a build is incomplete and what completes it, in one line."""
    left = dict(m["incomplete"]["transient_failures"])
    written = "the build is written but marked incomplete (manifest.json complete: false)"
    spend, exported = m.get("spend") or {}, m["incomplete"].get("exported")
    if left.pop("spend_cap", 0):
        return (f"spend cap reached: --max-spend {spend['max_spend']:g} USD; this build's answers cost "
                f"{spend['usd']:.4f} USD ({spend['usd_this_run']:.4f} in this run) and {spend['requests_not_sent']:,} "
                f"requests were not sent; {written}. Run the same command with a higher --max-spend to go on.")
    pending = left.pop("batch_pending", 0)
    if exported:
        return (f"{pending:,} requests written as batch files ({', '.join(exported)}); {written}. Run them (vllm "
                "run-batch -i FILE -o OUTPUT --model ..., or a provider's batch API), then ipm batches import OUTPUT "
                "(same --cache-dir) and run the same command again.")
    if pending:
        more = f" ({sum(left.values())} more ended in transient failures)" if left else ""
        return (f"{pending:,} requests are in batches still running at the provider{more}; {written}. Run the same "
                "command again to collect them (ipm batches list shows them).")
    kinds = ", ".join(f"{k} {v}" for k, v in left.items())
    return (f"{sum(left.values())} requests ended in transient failures ({kinds}); {written}. Run the same command "
            "again to send them again and complete it.")
