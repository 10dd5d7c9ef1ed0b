"""Stage ``all`` of a build: run the policy over every supporter turn of the mined splits, build the pairs,
and put the response-level pairs in front of the judge. Engines are made here and injected into the runner;
``mining`` and ``judging`` stay pure."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ipm_prefdial.config import BuildConfig
from ipm_prefdial.convert import Turn, sp_history_text, turns
from ipm_prefdial.engines import Engine, RequestCache, Sampling, Stats, make_engine, run_coroutine, run_requests
from ipm_prefdial.engines.base import EngineStop, estimate_tokens
from ipm_prefdial.engines.runner import plan_requests, transient_left
from ipm_prefdial.judging import ERROR_TYPES, JUDGED_CONFIGS, judge_request, judge_status, verdict
from ipm_prefdial.mining import MINED_SPLITS, PAIR_CONFIG, TASKS, PolicySampling, make_pair, policy_requests
from ipm_prefdial.progress import progress_bar
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.release.features import RETAINED_OF, is_retained
from ipm_prefdial.sources import Dialogue
from ipm_prefdial.sources.download import default_cache_dir
from ipm_prefdial.tokens import Trimmer

JUDGE_PART = 8192  # judge requests made and run at a time


@dataclass
class MiningOutput:
    rows: dict[str, dict[str, list[dict]]]
    mining: dict  # manifest section: per task accounting and outcomes
    judge: dict | None  # manifest section, None with --no-judge
    models: dict
    sampling: dict
    by_strategy: dict = field(default_factory=dict)
    judge_status: dict = field(default_factory=dict)  # config -> judge_status -> rows
    transient: dict = field(default_factory=dict)  # failure kind -> requests left failed by retries that ran out


@dataclass
class Estimate:
    """Says once, after a build's first answers, how many requests are left and how long they will take at the
    rate measured so far (a bare ``ipm build`` on a laptop mines for more than a day: the user should know)."""

    console: Console
    judge_max: int  # judge requests still to come: at most one per RG and VM answer
    said: bool = False

    def hook(self, later: int):
        """The ``on_first`` callback of a batch; ``later`` counts the policy requests of the batches after it."""
        if self.said:
            return None

        def report(answered: int, seconds: float, left: int) -> None:
            self.said = True
            rate = answered / max(seconds, 1e-6)
            total = left + later + self.judge_max
            self.console.print(f"after {answered} answers: {total:,} requests left ({left + later:,} policy, up to "
                               f"{self.judge_max:,} judge), about {duration(total / rate)} more at {rate:.2f} "
                               "requests/s", highlight=False, soft_wrap=True)
        return report


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


def policy_sampling(cfg: BuildConfig) -> PolicySampling:
    return PolicySampling(cfg.samples, cfg.temperature, cfg.top_p,
                          (("sp", cfg.sp_max_tokens), ("rg", cfg.rg_max_tokens), ("vm", cfg.vm_max_tokens)))


def engine_specs(cfg: BuildConfig) -> dict[str, tuple[str, str | None, str | None]]:
    """(engine, model, base_url) of each task's policy and of the judge."""
    specs = {task: (cfg.engine, getattr(cfg, f"{task}_model") or cfg.model, cfg.base_url) for task in TASKS}
    if not cfg.no_judge:
        specs["judge"] = (cfg.judge_engine or cfg.engine, cfg.judge_model or cfg.model,
                          cfg.judge_base_url or cfg.base_url)
    return specs


def role_headers(cfg: BuildConfig, specs: dict) -> dict[str, dict[str, str]]:
    """The extra HTTP headers of each role's endpoint (the judge's own, or the policy's on the same endpoint)."""
    return {role: cfg.judge_request_headers() if role == "judge" else dict(cfg.headers) for role in specs}


def mined_turns(per_split: dict[str, list[Dialogue]]) -> dict[str, list[Turn]]:
    return {split: [t for d in per_split[split] for t in turns(d)] for split in MINED_SPLITS}


def make_engines(cfg: BuildConfig) -> tuple[dict[tuple, Engine], dict[str, Engine]]:
    """The engines of a build, one per distinct (engine, model, endpoint, headers), and which role uses which. vLLM
    models that are adapters of one base share one vLLM instance."""
    specs = engine_specs(cfg)
    headers = role_headers(cfg, specs)
    instances: dict[tuple, Engine] = {}
    engines: dict[str, Engine] = {}
    if cfg.executor == "ray":
        from ipm_prefdial.executors.ray_executor import ray_engine

        for role, (name, model, base_url) in specs.items():
            key = (name, model, base_url, tuple(sorted(headers[role].items())))
            if key not in instances:
                instances[key] = ray_engine(cfg, name, model, base_url, context_tokens=cfg.context_tokens,
                                            options=cfg.vllm if name == "vllm" else None, headers=headers[role])
            engines[role] = instances[key]
        return instances, engines
    vllm_roles = {role: model for role, (name, model, _) in specs.items() if name == "vllm"}
    if vllm_roles:
        from ipm_prefdial.engines.vllm_engine import VLLMEngine

        grouped = VLLMEngine.group(vllm_roles, concurrency=cfg.concurrency, cache_dir=cfg.cache_dir,
                                   **({"max_model_len": cfg.context_tokens} if cfg.context_tokens else {}),
                                   **cfg.vllm)
        for role, engine in grouped.items():
            instances.setdefault(("vllm", engine.model, engine.lora), engine)
            engines[role] = engine
    for role, (name, model, base_url) in specs.items():
        if name == "vllm":
            continue
        key = (name, model, base_url, tuple(sorted(headers[role].items())))
        if key not in instances:
            instances[key] = make_engine(name, model=model, base_url=base_url, concurrency=cfg.concurrency,
                                         context_tokens=cfg.context_tokens, headers=headers[role],
                                         give_up_after=cfg.give_up_after, retries=cfg.retries)
        engines[role] = instances[key]
    return instances, engines


def preflight(cfg: BuildConfig) -> None:
    """Ask every HTTP endpoint of a build ``GET /models`` before any other work (reading the source, loading a
    tokenizer): an endpoint that is unreachable, fails TLS or refuses the key stops the build in seconds
    (``EngineStop``). Ray workers ask their own (the endpoint may be reachable from the cluster only)."""
    if cfg.executor != "local" or cfg.dry_run:
        return
    specs = engine_specs(cfg)
    headers = role_headers(cfg, specs)
    seen = set()
    for role, (name, model, base_url) in specs.items():
        key = (base_url, model, tuple(sorted(headers[role].items())))
        if name != "openai" or key in seen:
            continue
        seen.add(key)
        engine = make_engine(name, model=model, base_url=base_url, headers=headers[role])

        async def ask(engine: Engine = engine) -> None:
            try:
                await engine.start()
            finally:
                await engine.close()

        run_coroutine(ask())


def _host_groups(instances, engines: dict[str, Engine]) -> list[list[tuple[Engine, list[str]]]]:
    """The policy engines with their tasks, grouped by host, in order of first use."""
    groups: dict[int, list[tuple[Engine, list[str]]]] = {}
    for engine in instances:
        tasks = [task for task in TASKS if engines.get(task) is engine]
        if tasks:
            groups.setdefault(id(engine.host()), []).append((engine, tasks))
    return list(groups.values())


def open_cache(cfg: BuildConfig) -> RequestCache | None:
    return None if cfg.no_cache else RequestCache.in_dir(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir())


def dry_run_estimate(per_split: dict[str, list[Dialogue]], prompts: Prompts, cfg: BuildConfig,
                     trim: Trimmer | None = None) -> dict:
    return run_coroutine(_dry_run(per_split, prompts, cfg, trim))


async def _dry_run(per_split: dict[str, list[Dialogue]], prompts: Prompts, cfg: BuildConfig,
                   trim: Trimmer | None) -> dict:
    """Per task: requests, how many the cache answers, how many would be sent, and token estimates of those,
    without loading a model or sending a request (an endpoint with no --model is asked its model id). Judge
    requests are known for the pairs whose policy answers are cached; the rest is bounded by one per answer."""
    instances, engines = make_engines(dataclasses.replace(cfg, executor="local"))  # plans need no workers
    cache = open_cache(cfg)
    policy = policy_sampling(cfg)
    all_turns = mined_turns(per_split)
    jobs = {task: [(t, r) for split in MINED_SPLITS for t in all_turns[split]
                   for r in policy_requests(task, t, prompts, policy, trim)] for task in TASKS}
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
            plan = plan_requests(engine, [r for _, r in jobs[task]], cache, cfg.retry_failed)
            table[task] = _plan_row(plan, jobs[task])
            miner = {"engine": engine.name, "model": engine.display_name}
            unanswered[task] = [jobs[task][i][0] for i in (*plan.pending, *plan.merged)]
            for (turn, request), result, (sent, _) in zip(jobs[task], plan.results, plan.fitted, strict=True):
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
                plan = plan_requests(engines["judge"], requests, cache, cfg.retry_failed)
                entry = _plan_row(plan, [(None, r) for r in requests])
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
    return table


def _plan_row(plan, jobs: list) -> dict:
    """A dry-run row: what the batch holds, what the cache answers, what would be sent and its tokens."""
    sent = [plan.fitted[i][0] for i in plan.pending]
    return {"requests": len(plan.keys), "cached": plan.cached + len(plan.replayed), "send": len(plan.pending),
            "prompt_tokens": sum(estimate_tokens(r.messages) for r in sent),
            "completion_tokens_max": sum(r.sampling.max_tokens for r in sent)}


def mine(per_split: dict[str, list[Dialogue]], prompts: Prompts, cfg: BuildConfig, console: Console,
         trim: Trimmer | None = None) -> MiningOutput:
    return run_coroutine(_mine(per_split, prompts, cfg, console, trim))


async def _mine(per_split: dict[str, list[Dialogue]], prompts: Prompts, cfg: BuildConfig,
                console: Console, trim: Trimmer | None) -> MiningOutput:
    instances, engines = make_engines(cfg)
    cache = open_cache(cfg)
    policy = policy_sampling(cfg)
    rows: dict[str, dict[str, list[dict]]] = {c: {s: [] for s in MINED_SPLITS} for c in PAIR_CONFIG.values()}
    turn_of: dict[str, Turn] = {}
    mining: dict[str, dict] = {}
    judge_report: dict | None = None
    by_strategy: dict[str, Counter] = defaultdict(Counter)
    try:
        with progress_bar(console) as progress:
            for engine in instances.values():  # the Ray executor shows a line per worker
                getattr(engine, "attach_progress", lambda _: None)(progress)
            all_turns = mined_turns(per_split)
            turn_count = sum(len(v) for v in all_turns.values())
            jobs = {task: [(split, t, r) for split in MINED_SPLITS for t in all_turns[split]
                           for r in policy_requests(task, t, prompts, policy, trim)] for task in TASKS}
            del all_turns
            stats_by: dict[str, Stats] = {}
            results_by: dict[str, list] = {}
            # The tasks that share an engine run as one batch: every slot busy, each dialogue of each task on
            # its own stream in turn order. Engines of one host (LoRA adapters of one vLLM instance) run at the
            # same time; different hosts (e.g. other --sp-model bases) one after the other, each closed (its
            # memory given back) before the next starts, unless the judge still needs it.
            groups = _host_groups(instances.values(), engines)
            estimate = Estimate(console, judge_max=0 if cfg.no_judge else len(jobs["rg"]) + len(jobs["vm"]))
            for k, group in enumerate(groups):
                later = sum(len(jobs[task]) for rest in groups[k + 1:] for _, tasks in rest for task in tasks)

                async def run(engine: Engine, tasks: list[str], first: bool, later: int = later) -> list:
                    batch = [(task, r) for task in tasks for _, _, r in jobs[task]]
                    return await run_requests(engine, [r for _, r in batch], cache=cache,
                                              retry_failed=cfg.retry_failed, progress=progress,
                                              description="mining " + "+".join(t.upper() for t in tasks),
                                              labels=[task for task, _ in batch], stats_by=stats_by,
                                              on_first=estimate.hook(later) if first else None)

                outputs = await asyncio.gather(*(run(engine, tasks, i == 0) for i, (engine, tasks) in
                                                 enumerate(group)))
                for (_, tasks), results in zip(group, outputs, strict=True):
                    offset = 0
                    for task in tasks:
                        results_by[task] = results[offset: offset + len(jobs[task])]
                        offset += len(jobs[task])
                if "judge" not in engines or engines["judge"].host() is not group[0][0].host():
                    for engine, _ in group:
                        await engine.close()
            for task in TASKS:
                engine = engines[task]
                outcomes: Counter = Counter()
                miner = {"engine": engine.name, "model": engine.display_name}
                config = PAIR_CONFIG[task]
                # the task's requests and answers are let go once its pairs are made (the judge asks anew)
                for (split, turn, request), result in zip(jobs.pop(task), results_by.pop(task), strict=True):
                    sent = engine.fit(request)[0]  # what the policy was asked: its seed and sha256 go in the row
                    row, outcome = make_pair(task, turn, request, result, miner, engine.identity, sent,
                                             prompts.taxonomy)
                    outcomes[outcome] += 1
                    if row is not None:
                        rows[config][split].append(row)
                        turn_of[row["id"]] = turn
                        by_strategy[config][turn.strategy] += 1
                mining[task] = {"accounting": stats_by.get(task, Stats()).as_dict(),
                                "turns": turn_count,
                                "samples": policy.samples, "outcomes": dict(sorted(outcomes.items())),
                                "pairs": {s: len(rows[config][s]) for s in MINED_SPLITS}}
                if task == "sp":
                    answered = outcomes["agree"] + outcomes["pair"]
                    mining[task]["agreement"] = {"agree": outcomes["agree"], "answered": answered,
                                                 "rate": round(outcomes["agree"] / answered, 4) if answered else None}
            if "judge" in engines:
                judge_report = await _judge(engines["judge"], rows, turn_of, prompts, cfg, cache, progress,
                                            by_strategy, estimate)
    except EngineStop as stop:
        stop.kept = cache.new_answers if cache is not None else 0  # what the one-line message reports
        raise
    finally:
        for engine in instances.values():
            await engine.close()
        if cache is not None:
            cache.close()
    models = {role: engine.describe() for role, engine in engines.items()}
    sampling = {"policy": {"samples": policy.samples, "temperature": policy.temperature, "top_p": policy.top_p,
                           "max_tokens": dict(policy.max_tokens)}}
    if not cfg.no_judge:
        sampling["judge"] = {"temperature": cfg.judge_temperature, "max_tokens": cfg.judge_max_tokens}
    table = {s: {c: by_strategy[c][s] for c in sorted(by_strategy)} for s in prompts.taxonomy.names}
    status = {config: dict(sorted(Counter(r["judge_status"] for split in MINED_SPLITS
                                          for r in rows[config][split]).items())) for config in rows}
    if judge_report is not None:  # the paper's filtered sets, as configs of their own
        for retained, parent in RETAINED_OF.items():
            rows[retained] = {split: [r for r in rows[parent][split] if is_retained(r)] for split in MINED_SPLITS}
    # transient failures still in this build: a rerun sends those requests again
    left = transient_left(info["accounting"] for section in (mining, judge_report or {}) for info in section.values())
    return MiningOutput(rows, mining, judge_report, models, sampling, table, status, left)


async def _judge(engine: Engine, rows: dict, turn_of: dict[str, Turn], prompts: Prompts, cfg: BuildConfig,
                 cache: RequestCache | None, progress, by_strategy: dict[str, Counter], estimate: Estimate) -> dict:
    """The judge's verdict on every response-level pair, in parts of ``JUDGE_PART`` requests: a part's requests
    and answers are let go once its rows hold their verdicts, so memory does not grow with the build."""
    sampling = Sampling(cfg.judge_temperature, 1.0, cfg.judge_max_tokens)
    report: dict[str, dict] = {}
    targets = {config: [row for split in MINED_SPLITS for row in rows[config][split]] for config in JUDGED_CONFIGS}
    batch = [(config, row) for config in JUDGED_CONFIGS for row in targets[config]]
    stats_by: dict[str, Stats] = {}
    estimate.judge_max = 0  # the judge's own requests are counted now (the engine starts when one must be sent)
    bar = progress.add_task("judging", total=len(batch)) if progress else None
    for start in range(0, len(batch), JUDGE_PART):
        part = batch[start: start + JUDGE_PART]
        requests = [judge_request(config, row, turn_of[row["id"]], prompts, sampling) for config, row in part]
        results = await run_requests(engine, requests, cache=cache, retry_failed=cfg.retry_failed,
                                     progress=progress, progress_task=bar, labels=[config for config, _ in part],
                                     stats_by=stats_by, on_first=estimate.hook(0))
        for (config, row), result in zip(part, results, strict=True):
            row["judge"] = verdict(config, row["id"], result, engine.display_name)
            row["judge_status"] = judge_status(result)
    for config in JUDGED_CONFIGS:
        stats = stats_by.get(config, Stats())
        chosen_errors: Counter = Counter()
        rejected_errors: Counter = Counter()
        retained = failed = 0
        status: Counter = Counter()
        for row in targets[config]:
            status[row["judge_status"]] += 1
            if row["judge"] is None:
                failed += 1
                continue
            chosen_errors[row["judge"]["chosen_error"] or "None"] += 1
            rejected_errors[row["judge"]["rejected_error"] or "None"] += 1
            if row["judge"]["retained"]:
                retained += 1
                by_strategy[f"{config}:retained"][row["strategy"]] += 1
        judged = len(targets[config]) - failed
        report[config] = {
            "accounting": stats.as_dict(), "pairs": len(targets[config]), "judged": judged, "judge_failures": failed,
            "status": dict(sorted(status.items())),
            "retained": retained, "retained_fraction": round(retained / judged, 4) if judged else None,
            "chosen_error": {k: chosen_errors[k] for k in ("None", *ERROR_TYPES)},
            "rejected_error": {k: rejected_errors[k] for k in ("None", *ERROR_TYPES)},
        }
    return report
