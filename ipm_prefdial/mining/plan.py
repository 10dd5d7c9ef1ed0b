"""The plan of a build's pairs, shared by mining (``mining.run``) and ``--dry-run``: the policy's requests per task
(one per supporter turn of the mined splits and sample, in split and turn order), the engines that answer each role,
and, for the dry run, what the cache answers and what would be sent."""

from __future__ import annotations

import dataclasses

from ipm_prefdial.config import BuildConfig
from ipm_prefdial.convert import Turn, sp_history_text, turns
from ipm_prefdial.engines import make_engine
from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.requests import ChatRequest, Sampling, estimate_tokens
from ipm_prefdial.engines.runner import Plan, plan_requests, run_coroutine
from ipm_prefdial.mining.judge import judge_request
from ipm_prefdial.mining.policy import MINED_SPLITS, PAIR_CONFIG, TASKS, PolicySampling, make_pair, policy_requests
from ipm_prefdial.paths import cache_root
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.sources import Dialogue
from ipm_prefdial.tokens import Trimmer

Job = tuple[str, Turn, ChatRequest]  # (split, turn, the policy's request): one request of a task


def policy_sampling(cfg: BuildConfig) -> PolicySampling:
    return PolicySampling(cfg.samples, cfg.temperature, cfg.top_p,
                          (("sp", cfg.sp_max_tokens), ("rg", cfg.rg_max_tokens), ("vm", cfg.vm_max_tokens)))


def policy_jobs(per_split: dict[str, list[Dialogue]], prompts: Prompts, policy: PolicySampling,
                trim: Trimmer | None) -> dict[str, list[Job]]:
    """Every task's requests: per supporter turn of the mined splits, one per sample."""
    mined = {split: [t for d in per_split[split] for t in turns(d)] for split in MINED_SPLITS}
    return {task: [(split, t, r) for split in MINED_SPLITS for t in mined[split]
                   for r in policy_requests(task, t, prompts, policy, trim)] for task in TASKS}


def make_engines(cfg: BuildConfig) -> tuple[dict[tuple, Engine], dict[str, Engine]]:
    """The engines of a build, one per distinct spec (engine, model, endpoint, headers), and which role uses which.
    vLLM models that are adapters of one base share one vLLM instance."""
    specs = cfg.engine_specs()
    instances: dict[tuple, Engine] = {}
    engines: dict[str, Engine] = {}
    if cfg.executor == "ray":
        from ipm_prefdial.executors.ray_executor import ray_engine

        for role, spec in specs.items():
            if spec.key not in instances:
                instances[spec.key] = ray_engine(spec, cfg)
            engines[role] = instances[spec.key]
        return instances, engines
    vllm_roles = {role: spec.model for role, spec in specs.items() if spec.name == "vllm"}
    if vllm_roles:
        from ipm_prefdial.engines.vllm_engine import VLLMEngine

        grouped = VLLMEngine.group(vllm_roles, concurrency=cfg.concurrency, cache_dir=cfg.cache_dir,
                                   **({"max_model_len": cfg.context_tokens} if cfg.context_tokens else {}),
                                   **cfg.vllm)
        for role, engine in grouped.items():
            instances.setdefault(("vllm", engine.model, engine.lora), engine)
            engines[role] = engine
    for role, spec in specs.items():
        if spec.name == "vllm":
            continue
        if spec.key not in instances:
            instances[spec.key] = make_engine(spec)
        engines[role] = instances[spec.key]
    return instances, engines


def role_of(task: str) -> str:
    return "judge" if task == "judge" else "policy"


def make_budget(cfg: BuildConfig):
    """The build's spend: the cap and each role's prices."""
    from ipm_prefdial.engines.spend import Budget

    return Budget(cfg.max_spend, {role: cfg.prices(role) for role in ("policy", "judge")})


def metered(instances: dict, engines: dict[str, Engine], cfg: BuildConfig, cache: RequestCache | None, budget
            ) -> tuple[dict, dict[str, Engine]]:
    """The build's HTTP engines (engine ``openai``) as each role pays for them: counted in dollars and held to
    the spend cap (``engines.batch.Metered``), through the batch API (``--batch``, ``--judge-batch``) or written
    as batch files (``--batch-export``). Policy tasks that share an engine share its view, so they still run as
    one batch; other engines are left as they are."""
    from ipm_prefdial.engines.batch import BatchEngine
    from ipm_prefdial.engines.metered import Metered

    views: dict[tuple[int, str], Engine] = {}
    wrapped: set[int] = set()
    out = dict(engines)
    for task, engine in engines.items():
        if engine.name != "openai" or cfg.executor != "local":
            continue
        role = role_of(task)
        batch = cfg.judge_batch if role == "judge" else cfg.batch
        export = cfg.batch_export  # every request to an HTTP engine is written out
        if not (batch or export or cfg.priced or cfg.max_spend is not None):
            continue
        view = views.get((id(engine), role))
        if view is None:
            if batch or export:
                view = BatchEngine(engine, role, budget, cache, wait=cfg.batch_wait, poll=cfg.batch_poll,
                                   max_lines=cfg.batch_max_lines, export_dir=export)
            else:
                view = Metered(engine, role, budget)
            views[(id(engine), role)] = view
        wrapped.add(id(engine))
        out[task] = view
    # an engine stays an instance of its own while a role still uses it as it is (the policy online, the judge in
    # batches: both close it, which is safe twice)
    used = {id(engine) for engine in out.values()}
    kept = {key: engine for key, engine in instances.items() if id(engine) not in wrapped or id(engine) in used}
    kept.update({("view", *key): view for key, view in views.items()})
    return kept, out


def host_groups(instances, engines: dict[str, Engine]) -> list[list[tuple[Engine, list[str]]]]:
    """The policy engines with their tasks, grouped by host, in order of first use."""
    groups: dict[int, list[tuple[Engine, list[str]]]] = {}
    for engine in instances:
        tasks = [task for task in TASKS if engines.get(task) is engine]
        if tasks:
            groups.setdefault(id(engine.host()), []).append((engine, tasks))
    return list(groups.values())


def open_cache(cfg: BuildConfig) -> RequestCache | None:
    return None if cfg.no_cache else RequestCache.in_dir(cache_root(cfg.cache_dir))


# ---------------------------------------------------------------------------------------------------- dry run


def dry_run_estimate(per_split: dict[str, list[Dialogue]], prompts: Prompts, cfg: BuildConfig,
                     trim: Trimmer | None = None) -> dict:
    """Per task: requests, how many the cache answers, how many would be sent, and token estimates of those,
    without loading a model or sending a request (an endpoint with no --model is asked its model id). Judge
    requests are known for the pairs whose policy answers are cached; the rest is bounded by one per answer."""
    return run_coroutine(_dry_run(per_split, prompts, cfg, trim))


async def _dry_run(per_split: dict[str, list[Dialogue]], prompts: Prompts, cfg: BuildConfig,
                   trim: Trimmer | None) -> dict:
    instances, engines = make_engines(dataclasses.replace(cfg, executor="local"))  # plans need no workers
    cache = open_cache(cfg)
    jobs = policy_jobs(per_split, prompts, policy_sampling(cfg), trim)
    table: dict[str, dict] = {}
    try:
        for engine in instances.values():
            if not engine.model:  # an endpoint without --model: GET /models names it (nothing is loaded)
                await engine.start()
        rows: dict[str, list[dict]] = {PAIR_CONFIG[task]: [] for task in TASKS}
        turn_of: dict[str, Turn] = {}
        unanswered: dict[str, list[Turn]] = {}  # turns whose policy answer is still to come
        for task in TASKS:
            engine = engines[task]
            plan = plan_requests(engine, [r for _, _, r in jobs[task]], cache, cfg.retry_failed)
            table[task] = _plan_row(plan)
            miner = {"engine": engine.name, "model": engine.display_name}
            unanswered[task] = [jobs[task][i][1] for i in (*plan.pending, *plan.merged)]
            for (_, turn, request), result, (sent, _) in zip(jobs[task], plan.results, plan.fitted, strict=True):
                if result is not None:
                    row, _ = make_pair(task, turn, request, result, miner, plan.identity, sent, prompts.taxonomy)
                    if row is not None:
                        rows[PAIR_CONFIG[task]].append(row)
                        turn_of[row["id"]] = turn
        if "judge" in engines:
            sampling = Sampling(cfg.judge_temperature, 1.0, cfg.judge_max_tokens)
            fixed = estimate_tokens((("system", prompts.judge_system),)) + 2 * cfg.rg_max_tokens
            for config, task in (("response_pairs", "rg"), ("joint_pairs", "vm")):
                requests = [judge_request(config, row, turn_of[row["id"]], prompts, sampling) for row in rows[config]]
                entry = _plan_row(plan_requests(engines["judge"], requests, cache, cfg.retry_failed))
                later = unanswered[task]
                entry["requests"] += len(later)  # at most one judge request per policy answer still to come
                entry["send"] += len(later)
                entry["prompt_tokens"] += sum(fixed + estimate_tokens((("user", sp_history_text(t.history)),))
                                              for t in later)
                entry["completion_tokens_max"] += len(later) * cfg.judge_max_tokens
                table[f"judge:{config}"] = entry
    finally:
        for engine in instances.values():
            await engine.close()
        if cache is not None:
            cache.close()
    if cfg.priced:  # what sending it would cost at most, online and as batches
        for task, entry in table.items():
            price = cfg.prices(role_of(task.split(":")[0]))
            usd = price.cost(entry["prompt_tokens"], 0, entry["completion_tokens_max"])
            entry["usd_online"], entry["usd_batch"] = usd, usd * (1 - price.batch_discount)
    return table


def _plan_row(plan: Plan) -> dict:
    """A dry-run row: what the batch holds, what the cache answers, what would be sent and its tokens."""
    sent = [plan.fitted[i][0] for i in plan.pending]
    return {"requests": len(plan.keys), "cached": plan.cached + len(plan.replayed), "send": len(plan.pending),
            "prompt_tokens": sum(estimate_tokens(r.messages) for r in sent),
            "completion_tokens_max": sum(r.sampling.max_tokens for r in sent)}

