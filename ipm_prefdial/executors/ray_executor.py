"""``--executor ray``: the requests of a build answered by engines in Ray actors, on one machine or a cluster.

``RayEngine`` is an ``Engine`` like any other, so the driver's run is the local one: it alone reads and writes
the request cache, hands the workers only what is not answered yet, commits every answer as it comes back, and
writes the same rows, accounting and parquet bytes. Behind it:

- N workers, each a Ray actor owning one engine for its whole life (an embedded llama.cpp with as many threads as
  the worker's CPUs, vLLM on its GPUs, or a client of an endpoint), placed as one placement group so a build that
  cannot be placed fails at once with the reason.
- Ray Core actors rather than Ray Data's ``map_batches``: a dialogue's requests must go to one engine in turn
  order (its prefix cache), answers must stream back one by one (committed as they arrive, not per batch), and a
  dead worker must cost only its requests in flight. An async actor method that is a streaming generator gives
  all three: the driver hands a whole dialogue to a free slot of a worker (longest dialogues first, as slots free
  up), the worker yields each answer as it is made, and when the worker dies Ray restarts it and the driver sends
  the dialogue's unanswered requests again.
- Workers report their engine's identity (the model's content hash) when they start: the driver may not see the
  model files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ipm_prefdial.engines import EngineSpec
from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.breaker import EngineStop
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, fit_context
from ipm_prefdial.engines.streaming import dialogue_groups, hand_over, handed_out
from ipm_prefdial.errors import InputError


class ExecutorSettings(Protocol):
    """Where the workers run: ``config.ExecutorOptions`` (``ipm build``'s and ``ipm infer``'s)."""

    workers: int
    worker_cpus: float | None
    worker_gpus: float
    ray_address: str | None

WORKER_DEATHS = 3  # deaths of a worker in a row, with no answer in between, before the cluster is given up
PLACEMENT_TIMEOUT_S = 60.0


def join_timeout() -> float:
    """Seconds to wait for the nodes of an existing cluster to join (IPM_RAY_JOIN_TIMEOUT, default 600)."""
    return float(os.environ.get("IPM_RAY_JOIN_TIMEOUT", "600"))


class RayExecutorError(InputError):
    pass


@dataclass
class RayOptions:
    workers: int = 2
    worker_cpus: float | None = None  # default: the cluster's CPUs shared out, at most 1 per worker
    worker_gpus: float = 0.0
    address: str | None = None  # default: RAY_ADDRESS, else a local Ray on this machine
    give_up_after: float | None = 120.0  # a worker that cannot be brought back within this long ends the run


def ray_engine(spec: EngineSpec, executor: ExecutorSettings) -> RayEngine:
    """The pool of workers for one engine spec (``concurrency`` per worker), with the executor options of ``ipm
    build`` or ``ipm infer``; a worker that cannot be brought back within the spec's ``give_up_after`` ends the
    run."""
    return RayEngine(spec, RayOptions(executor.workers, executor.worker_cpus, executor.worker_gpus,
                                      executor.ray_address, spec.give_up_after))


def ray_module():
    try:
        import ray
    except ImportError:
        raise RayExecutorError("--executor ray needs Ray: pip install 'ipm_prefdial[ray]'") from None
    return ray


def connect(options: RayOptions) -> dict[str, float]:
    """Join the cluster (or start a local one) and return its resources."""
    ray = ray_module()
    if not ray.is_initialized():
        address = options.address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray.cluster_resources()


def worker_cpus(options: RayOptions, resources: dict[str, float]) -> float:
    if options.worker_cpus is not None:
        return options.worker_cpus
    return round(min(1.0, resources.get("CPU", 1.0) / max(1, options.workers)), 3)


class EngineWorker:
    """The actor: one engine for its whole life, answering whole dialogues as streams of results."""

    def __init__(self, spec: EngineSpec):
        from ipm_prefdial.engines import make_engine

        self.engine = make_engine(spec)

    async def info(self) -> dict:
        """What the driver needs to plan: the model's identity (by content), its name, the context budget."""
        if not self.engine.model:  # an endpoint names its model only when asked
            await self.engine.start()
        identity = self.engine.identify()
        return {"identity": identity, "display": self.engine.display_name, "model": self.engine.model,
                "context_tokens": self.engine.context_tokens, "concurrency": self.engine.concurrency,
                "describe": self.engine.describe(), "pid": os.getpid()}

    async def run(self, requests: list[ChatRequest]):
        """Answer one dialogue's requests in order, yielding (index, result) as each is made."""
        await self.engine.start()
        async for j, result in self.engine.stream(requests):
            yield j, result

    def ping(self) -> int:
        """Answers at once (no model is loaded): the driver's check that a restarted worker is back."""
        return os.getpid()

    async def close(self) -> None:
        await self.engine.close()


async def _awaited(ref):
    return await ref


@dataclass
class WorkerStats:
    pid: int = 0
    answered: int = 0
    seconds: float = 0.0  # time between its first and last answer
    first: float | None = None
    deaths: int = 0

    def as_dict(self) -> dict:
        rate = self.answered / self.seconds if self.seconds > 0 else None
        return {"pid": self.pid, "answered": self.answered, "deaths": self.deaths,
                "requests_per_s": round(rate, 2) if rate else None}


class RayEngine(Engine):
    """An engine spec answered by ``options.workers`` Ray actors (started on first use)."""

    def __init__(self, spec: EngineSpec, options: RayOptions):
        self.spec = spec
        self.options = options
        self.name = spec.name
        self.model = ""
        self.concurrency = 1
        self.context_tokens = None
        self.stats: list[WorkerStats] = []
        self._workers: list[Any] = []
        self._group: Any = None
        self._info: dict = {}
        self._cpus = options.worker_cpus
        self._progress: Any = None
        self._bars: list[Any] = []

    # -- the pool --------------------------------------------------------------------------------------------
    def _ensure_workers(self) -> None:
        if self._workers:
            return
        ray = ray_module()
        resources = connect(self.options)
        cpus, gpus, n = worker_cpus(self.options, resources), self.options.worker_gpus, self.options.workers
        need = {"CPU": cpus * n, "GPU": gpus * n}

        def shortfall(have: dict) -> list[str]:
            return [f"{k}: {v:g} needed, {have.get(k, 0):g} in the cluster" for k, v in need.items()
                    if v > have.get(k, 0) + 1e-9]

        short = shortfall(resources)
        if short and (self.options.address or os.environ.get("RAY_ADDRESS")):
            # a cluster being started (Slurm, KubeRay) may still be adding nodes: wait for them, then give up
            deadline = time.monotonic() + join_timeout()
            while short and time.monotonic() < deadline:
                time.sleep(2.0)
                short = shortfall(ray.cluster_resources())
        if short:
            raise RayExecutorError(f"{n} workers x ({cpus:g} CPU, {gpus:g} GPU) cannot be placed: "
                                   f"{'; '.join(short)}. Lower --workers, --worker-cpus or --worker-gpus, or add "
                                   "nodes")
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundles = [{"CPU": cpus, **({"GPU": gpus} if gpus else {})} for _ in range(n)]
        self._group = placement_group(bundles, strategy="SPREAD")
        ready, _ = ray.wait([self._group.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            ray.util.remove_placement_group(self._group)
            raise RayExecutorError(f"{n} workers x ({cpus:g} CPU, {gpus:g} GPU) were not placed within "
                                   f"{PLACEMENT_TIMEOUT_S:.0f} s (resources held by other jobs?)")
        spec = self.spec
        if spec.name == "local":  # two llama.cpp engines that both use every core thrash: share them out
            spec = dataclasses.replace(spec, options=(*spec.options, ("threads", max(1, int(cpus)))))
        concurrency = int(spec.concurrency or 4)
        actor = ray.remote(EngineWorker)
        self._workers = [actor.options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=0, max_concurrency=concurrency + 2,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=self._group,
                                                                 placement_group_bundle_index=k),
        ).remote(spec) for k in range(n)]
        infos = ray.get([w.info.remote() for w in self._workers])
        identities = {i["identity"] for i in infos}
        if len(identities) != 1:
            raise RayExecutorError(f"the workers see different models: {sorted(identities)} (the same path holds "
                                   "other files on other nodes?)")
        self._info = infos[0]
        self.model = infos[0]["model"]
        self._identity, self._display = infos[0]["identity"], infos[0]["display"]
        self.context_tokens = infos[0]["context_tokens"]
        self.concurrency = concurrency  # streams per worker
        self._cpus = cpus
        self.stats = [WorkerStats(pid=i["pid"]) for i in infos]

    def _identify(self, memo) -> tuple[str, str]:
        if not self._info:  # what the workers reported stays known after they are closed
            self._ensure_workers()
        return self._identity, self._display  # type: ignore[return-value]

    def fit(self, request: ChatRequest) -> tuple[ChatRequest, int]:
        if not self._info:
            self._ensure_workers()
        return fit_context(request, self.context_tokens)

    async def _start(self) -> None:
        if not self._workers:
            await asyncio.to_thread(self._ensure_workers)

    async def close(self) -> None:
        """Close the workers' engines and give their resources back (before another pool starts)."""
        if not self._workers:
            return
        ray = ray_module()
        try:
            await asyncio.wait_for(asyncio.gather(*(w.close.remote() for w in self._workers),
                                                  return_exceptions=True), timeout=60)
        except asyncio.TimeoutError:
            pass
        for w in self._workers:
            ray.kill(w)
        ray.util.remove_placement_group(self._group)
        self._workers = []
        self._bars = []

    def describe(self) -> dict:
        return {**(self._info.get("describe") or {"engine": self.name}), "executor": "ray",
                "workers": self.options.workers, "worker_cpus": self._cpus, "worker_gpus": self.options.worker_gpus,
                "per_worker": [s.as_dict() for s in self.stats]}

    def _lost(self, k: int, deaths: int, why: str) -> EngineStop:
        """A worker that died ``deaths`` times in a row (or was not brought back): the cluster cannot keep it."""
        from ipm_prefdial.engines.urls import public_url

        base_url = self.spec.base_url
        target = public_url(base_url) if base_url else self.spec.model or "its default model"
        return EngineStop(f"Ray workers ({self.spec.name} engine, {target})", "worker lost",
                          f"worker {k} died {deaths} times in a row while answering ({why})")

    def attach_progress(self, progress) -> None:
        """Show one line per worker (answers and their rate) under the run's own bar."""
        self._progress = progress

    # -- requests ----------------------------------------------------------------------------------------------
    def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        """Whole dialogues to free worker slots, longest first; answers back one by one, each handed to the
        consumer before the slot takes the next (``handed_out``: at most one answered but uncommitted result per
        slot). A dialogue whose worker dies goes on with its unanswered requests once Ray has restarted it."""
        self._ensure_workers()
        todo = deque(dialogue_groups(requests))
        done: asyncio.Queue = asyncio.Queue()
        if self._progress is not None and not self._bars:
            self._bars = [self._progress.add_task(f"  worker {k} (pid {s.pid})", total=None)
                          for k, s in enumerate(self.stats)]

        async def deliver(i: int, result: ChatResult, k: int) -> None:
            stats = self.stats[k]
            now = time.perf_counter()
            stats.first = stats.first or now
            stats.answered += 1
            stats.seconds = now - stats.first
            if self._bars:
                self._progress.advance(self._bars[k])
            await hand_over(done, i, result)

        async def slot(k: int) -> None:
            worker = self._workers[k]
            while todo:
                remaining, deaths = todo.popleft(), 0
                while remaining:
                    answered: set[int] = set()
                    try:
                        if deaths:
                            # a restarted worker must be back (placed, its actor made) within give_up_after: a
                            # cluster that cannot place it any more would leave this slot waiting for ever. Loading
                            # its model afterwards is not counted: that may take minutes.
                            bound = self.options.give_up_after
                            try:
                                await asyncio.wait_for(_awaited(worker.ping.remote()), bound)
                            except asyncio.TimeoutError:
                                raise self._lost(k, deaths, f"it was not back within {bound:g} s of its last "
                                                            "death") from None
                        stream = worker.run.options(num_returns="streaming", _generator_backpressure_num_objects=1
                                                    ).remote([requests[i] for i in remaining])
                        async for ref in stream:
                            j, result = await ref
                            answered.add(remaining[j])
                            deaths = 0  # it answers: alive again
                            await deliver(remaining[j], result, k)
                        remaining = []
                    except Exception as exc:
                        stop = _engine_stop(exc)
                        if stop is not None:  # the worker's own engine gave up (its endpoint is gone)
                            raise stop from None
                        if not _actor_died(exc):
                            raise
                        # the actor died (process killed, node lost): Ray restarts it; what it answered is kept
                        deaths += 1
                        self.stats[k].deaths += 1
                        remaining = [i for i in remaining if i not in answered]
                        if deaths >= WORKER_DEATHS:  # it cannot be kept alive: stop, nothing recorded as failed
                            raise self._lost(k, deaths, _first_line(exc)) from None
                        await asyncio.sleep(min(0.5 * 2.0**deaths, 10.0))  # Ray is restarting it meanwhile

        # worker 0's first slot, worker 1's first slot, ...: the first dialogues spread over the workers
        slots = [asyncio.create_task(slot(k)) for _ in range(self.concurrency) for k in range(len(self._workers))]
        return handed_out(done, slots, len(requests))


def _engine_stop(exc: BaseException) -> EngineStop | None:
    """The ``EngineStop`` a worker raised, out of Ray's wrapping (a ``RayTaskError`` that is also an ``EngineStop``
    but prints the worker's traceback): a plain one, which prints one line."""
    stop = getattr(exc, "cause", None)
    if not isinstance(stop, EngineStop):
        stop = exc if isinstance(exc, EngineStop) else None
    return None if stop is None else EngineStop(stop.endpoint, stop.kind, stop.detail, stop.exit_code)


def _first_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {text}"[:300]


def _actor_died(exc: BaseException) -> bool:
    from ray import exceptions

    return isinstance(exc, (exceptions.RayActorError, exceptions.ActorDiedError, exceptions.ActorUnavailableError,
                            exceptions.ObjectLostError))
