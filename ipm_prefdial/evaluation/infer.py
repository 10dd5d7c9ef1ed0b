"""``ipm infer``: run a system over the test turns of a build, with gold history, and write predictions JSONL.

Systems (METHOD.md section 4): ``decoupled`` (SP predicts a strategy, RG writes the reply under it), ``joint``
(VM writes ``[strategy] reply``, parsed), ``rg-gold`` (RG under the gold strategy: the upper reference).
Decoding is greedy (temperature 0). Requests go through the engine layer and its cache, so a rerun is free.

The SP's answer is constrained to the labels of the build's taxonomy (its manifest's ``taxonomy``; ESConv's eight
for builds from before taxonomies), and every prediction records that taxonomy in its ``taxonomy`` field (the
name of a built-in one, else the whole taxonomy as the manifest holds it), so ``ipm eval`` scores it with the same
labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from ipm_prefdial.config import TOKENS, EngineOptions, ExecutorOptions
from ipm_prefdial.convert import parse_tagged
from ipm_prefdial.engines import ENGINES, EngineSpec, make_engine
from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.requests import ChatRequest, Choice, Sampling
from ipm_prefdial.engines.runner import Stats, run_coroutine, run_requests
from ipm_prefdial.errors import ConfigError, InputError
from ipm_prefdial.mining.policy import trim_to_sentence
from ipm_prefdial.options import check_options, option
from ipm_prefdial.paths import cache_root
from ipm_prefdial.prompts import Prompts, RgInstruction
from ipm_prefdial.taxonomy import BUILTIN, Taxonomy, builtin, from_manifest

SYSTEMS = ("decoupled", "joint", "rg-gold")
TASKS_OF = {"decoupled": ("sp", "rg"), "joint": ("vm",), "rg-gold": ("rg",)}
CONFIG_OF = {"sp": "strategy_sft", "rg": "response_sft", "vm": "joint_sft"}
PREDICTION_FIELDS = ("id", "dialog_id", "turn_index", "strategy", "predicted_strategy", "response",
                     "predicted_response")


class InferError(InputError):
    pass


DATA, RUN = "Data and output", "Models"


@dataclass
class InferConfig(EngineOptions, ExecutorOptions):
    """Every option of ``ipm infer``; the engine and executor options are ``ipm build``'s."""

    data: str = option("ipm_prefdial", "Build directory (its test split is used).", group=DATA)
    system: str = option("decoupled", """decoupled (SP then RG) | joint (VM) | rg-gold (RG with the gold
        strategy).""", group=DATA, choices=SYSTEMS, required=True)
    out: str = option("predictions.jsonl", "Predictions JSONL to write.", group=DATA, required=True)
    limit: int | None = option(None, "The first N test turns (default: all; 1,792 with the paper's split).",
                               group=DATA, range=(1, None))
    cache_dir: str | None = option(None, "Request cache directory (default: IPM_CACHE_DIR or the user cache).",
                                   group=DATA)
    no_cache: bool = option(False, "Neither read nor write the request cache.", group=DATA)
    run: str | None = option(None, "An `ipm train` run: models at RUN/<sp|rg|vm>/<stage>.", group=RUN)
    stage: str = option("dpo", "Which models of --run: sft | dpo.", group=RUN, choices=("sft", "dpo"))
    engine: str | None = option(None, """local (default) | openai | vllm | transformers (default with --run or
        --sp-model etc.).""", group=RUN, choices=ENGINES)
    sp_max_tokens: int = option(32, "Answer bound of SP requests.", group=RUN, range=TOKENS)
    rg_max_tokens: int = option(160, "Answer bound of RG requests.", group=RUN, range=TOKENS)
    vm_max_tokens: int = option(192, "Answer bound of VM requests.", group=RUN, range=TOKENS)


def load_test_rows(data: str | Path, config: str, limit: int | None = None) -> list[dict]:
    """Rows of the test split of ``config`` in a build directory, in file order."""
    path = Path(data) / "data" / config / "test-00000-of-00001.parquet"
    if not path.is_file():
        raise InferError(f"{path}: missing; `ipm infer --data` needs a build with the {config} config "
                         f"(ipm build --stage sft)")
    rows = pq.read_table(path).to_pylist()
    return rows[:limit] if limit else rows


def build_rg_rule(data: str | Path) -> RgInstruction:
    """How the build's RG prompts end, as its manifest records it (the bundled templates for older builds)."""
    manifest_path = Path(data) / "manifest.json"
    if manifest_path.is_file():
        text = json.loads(manifest_path.read_text(encoding="utf-8")).get("rg_instruction")
        if text:
            return RgInstruction(text)
    return Prompts().rg_rule


def build_taxonomy(data: str | Path) -> Taxonomy:
    """The taxonomy of a build, as its manifest records it (ESConv's for older builds and without a manifest)."""
    manifest_path = Path(data) / "manifest.json"
    if not manifest_path.is_file():
        return builtin("esconv")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InferError(f"{manifest_path}: cannot read it ({exc})") from None
    if not isinstance(manifest, dict):
        raise InferError(f"{manifest_path}: expected a JSON object")
    return from_manifest(manifest, str(manifest_path))


def taxonomy_record(taxonomy: Taxonomy) -> str | dict:
    """What a prediction's ``taxonomy`` field holds: the name of a built-in taxonomy used as shipped, else the whole
    taxonomy (``Taxonomy.as_dict``), so a predictions file can be scored without the build."""
    if taxonomy.name in BUILTIN and builtin(taxonomy.name).as_dict() == taxonomy.as_dict():
        return taxonomy.name
    return taxonomy.as_dict()


def sp_requests(rows: list[dict], taxonomy: Taxonomy, max_tokens: int) -> list[ChatRequest]:
    """The SP requests of the test turns: greedy, the answer constrained to one of the taxonomy's labels."""
    choice = Choice(taxonomy.names)
    return [ChatRequest.chat(r["prompt"], sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=max_tokens),
                             output=choice, group=f"sp:{r['dialog_id']}") for r in rows]


def with_strategy(prompt: list[dict], gold: str, strategy: str | None, rule: RgInstruction, where: str) -> list[dict]:
    """An RG prompt whose instruction names ``strategy`` instead of the gold one (none: no instruction)."""
    last = prompt[-1]["content"]
    instruction = rule.suffix(gold)
    if not last.endswith(instruction):
        raise InferError(f"{where}: the RG prompt does not end with the instruction for {gold!r}; was the build "
                         f"made with other prompts?")
    head = last[: len(last) - len(instruction)]
    content = head + rule.suffix(strategy) if strategy else head
    return [*prompt[:-1], {"role": "user", "content": content}]


def model_for(cfg: InferConfig, task: str) -> tuple[str, str | None]:
    """(engine, model) of one task: --<task>-model, the run's checkpoint, or --model."""
    specific = getattr(cfg, f"{task}_model")
    if specific:
        return cfg.engine or "transformers", specific
    if cfg.run:
        path = Path(cfg.run) / task / cfg.stage
        if not path.exists():
            raise InferError(f"{path}: no {cfg.stage} model for {task.upper()} in run {cfg.run}")
        return cfg.engine or "transformers", str(path)
    return cfg.engine or "local", cfg.model


def check_infer(cfg: InferConfig) -> None:
    """Every option of ``ipm infer`` before anything runs: one line naming the option (``ConfigError``)."""
    check_options(cfg)
    data = Path(cfg.data)
    if not (data / "manifest.json").is_file():
        raise ConfigError(f"--data {data}: not a build directory (no manifest.json); make one with ipm build")
    out = Path(cfg.out)
    if out.is_dir():
        raise ConfigError(f"--out {out}: a directory; give the predictions file to write")
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigError(f"--out {out}: {out.parent} is a file, not a directory")
    if cfg.run and not Path(cfg.run).is_dir():
        raise ConfigError(f"--run {cfg.run}: no such run directory (ipm train --out)")
    if (cfg.engine or "local") == "openai" and not cfg.base_url:
        raise ConfigError("--engine openai needs --base-url")


def infer(cfg: InferConfig, progress=None) -> dict:
    """Run the system; write the predictions JSONL; return a summary (rows, accounting per task)."""
    if cfg.system not in SYSTEMS:
        raise InferError(f"--system {cfg.system!r}: choose one of {', '.join(SYSTEMS)}")
    if cfg.executor not in ("local", "ray"):
        raise InferError(f"--executor {cfg.executor!r}: choose local or ray")
    return run_coroutine(_infer(cfg, progress))


async def _infer(cfg: InferConfig, progress) -> dict:
    rule = build_rg_rule(cfg.data)
    taxonomy = build_taxonomy(cfg.data)
    tasks = TASKS_OF[cfg.system]
    rows = {task: load_test_rows(cfg.data, CONFIG_OF[task], cfg.limit) for task in tasks}
    ids = [r["id"] for r in rows[tasks[0]]]
    for task in tasks[1:]:
        if [r["id"] for r in rows[task]] != ids:
            raise InferError(f"{cfg.data}: the test turns of {CONFIG_OF[task]} and {CONFIG_OF[tasks[0]]} differ")
    engines: dict[EngineSpec, Engine] = {}
    cache = None if cfg.no_cache else RequestCache.in_dir(cache_root(cfg.cache_dir))
    accounting: dict[str, dict] = {}
    models: dict[str, str] = {}
    roles: dict[EngineSpec, list[str]] = {}  # which tasks each engine answered

    async def run(task: str, requests: list[ChatRequest]):
        spec = cfg.engine_spec(*model_for(cfg, task))
        if spec not in engines:
            if cfg.executor == "ray":
                from ipm_prefdial.executors.ray_executor import ray_engine

                engines[spec] = ray_engine(spec, cfg)
            else:
                engines[spec] = make_engine(spec)
        engine = engines[spec]
        stats = Stats()
        results = await run_requests(engine, requests, cache=cache, progress=progress,
                                     description=f"{cfg.system} {task.upper()}", stats=stats)
        models[task] = f"{engine.name}:{engine.display_name}"  # known once the run asked an endpoint its model
        accounting[task] = stats.as_dict()
        roles.setdefault(spec, []).append(task)
        return results

    def greedy(max_tokens: int) -> Sampling:
        return Sampling(temperature=0.0, top_p=1.0, max_tokens=max_tokens)

    predictions = []
    try:
        if cfg.system == "joint":
            base = rows["vm"]
            requests = [ChatRequest.chat(r["prompt"], sampling=greedy(cfg.vm_max_tokens), group=f"vm:{r['dialog_id']}")
                        for r in base]
            results = await run("vm", requests)
            for r, res in zip(base, results, strict=True):
                text, error = _reply(res)
                label, reply = parse_tagged(text)
                predictions.append(_prediction(r, label, reply, res, error,
                                               parse_tagged(r["completion"][0]["content"])[1]))
        else:
            base = rows["rg"]
            if cfg.system == "decoupled":
                sp_results = await run("sp", sp_requests(rows["sp"], taxonomy, cfg.sp_max_tokens))
                chosen = [taxonomy.canonical(str(res.parsed), variants=False) if res.ok else None
                          for res in sp_results]
                raw = [str(res.parsed) if res.ok else None for res in sp_results]
            else:
                chosen = [r["strategy"] for r in base]
                raw = list(chosen)
            rg_requests = [ChatRequest.chat(with_strategy(r["prompt"], r["strategy"], s, rule, f"response_sft "
                                                          f"test id {r['id']}"),
                                            sampling=greedy(cfg.rg_max_tokens), group=f"rg:{r['dialog_id']}")
                           for r, s in zip(base, chosen, strict=True)]
            results = await run("rg", rg_requests)
            for r, label, res in zip(base, raw, results, strict=True):
                text, error = _reply(res)
                predictions.append(_prediction(r, label, text, res, error, r["completion"][0]["content"]))
    finally:
        for engine in engines.values():
            await engine.close()
        if cache is not None:
            cache.close()
    # Ray workers: answers and rate of each, per pool of workers (the tasks of one model share one pool)
    ray = [{"tasks": roles[spec], "per_worker": [w.as_dict() for w in engine.stats]}
           for spec, engine in engines.items() if getattr(engine, "stats", None) and spec in roles]
    sp_rows = rows.get("sp") or load_test_rows(cfg.data, CONFIG_OF["sp"], cfg.limit)  # the dialogue as text lines
    context = {r["id"]: r["prompt"][1]["content"] for r in sp_rows}
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    record = taxonomy_record(taxonomy)
    with tmp.open("w", encoding="utf-8") as f:
        for p in predictions:
            p.update(system=cfg.system, models=models, context=context.get(p["id"]), taxonomy=record)
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    tmp.replace(out)
    failed = sum(p["error"] is not None for p in predictions)
    trimmed = sum(p["cut_at_max_tokens"] and p["error"] is None for p in predictions)
    return {"rows": len(predictions), "failed": failed, "trimmed": trimmed, "accounting": accounting,
            "models": models, "out": str(out), "ray": ray, "taxonomy": taxonomy.name}


def _reply(result) -> tuple[str, str | None]:
    """(reply, error). A reply cut at max_tokens is trimmed back to its last complete sentence, as mining does,
    so no runaway text is scored; one with no complete sentence is no reply, with the error noted."""
    if result.ok:
        return (result.text or "").strip(), None
    if result.error_kind == "truncated":
        kept = trim_to_sentence(result.text or "")
        if kept:
            return kept, None
        return "", f"truncated: no complete sentence before max_tokens ({result.error})"
    return "", f"{result.error_kind}: {result.error}"


def _prediction(row: dict, label: str | None, reply: str, result, error: str | None, gold_reply: str) -> dict:
    return {
        "id": row["id"], "dialog_id": row["dialog_id"], "turn_index": row["turn_index"],
        "strategy": row["strategy"], "predicted_strategy": label, "response": gold_reply,
        "predicted_response": reply, "error": error, "cut_at_max_tokens": result.error_kind == "truncated",
    }
