from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipm_prefdial.build import build
from ipm_prefdial.config import BuildConfig

SHARED = Path(os.environ.get("IPM_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
ESCONV_DIR = SHARED / "data" / "esconv"
ESCONV_JSON = ESCONV_DIR / "ESConv.reconstructed.json"
HUB_DIR = ESCONV_DIR / "hf_thu-coai_esconv"


def plain(text: str) -> str:
    """CLI output as one line of words: rich's error boxes and line wrapping removed."""
    return " ".join(text.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


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


# Small answer bounds keep the sample build of the tests to a few minutes on two cores; the Hub's split, whose first
# train and validation dialogues have 23 supporter turns (the paper's: 45), halves it again.
PAIR_BUILD_ARGS = ["--source", "esconv", "--source-path", str(ESCONV_JSON), "--split", "hf", "--stage", "all",
                   "--limit", "1",
                   "--sp-max-tokens", "8", "--rg-max-tokens", "40", "--vm-max-tokens", "48",
                   "--judge-max-tokens", "200"]


@pytest.fixture(scope="session")
def pairs_build(tmp_path_factory) -> dict:
    """`ipm build --source esconv --limit 1 --stage all` on the embedded engine with the real SmolLM2 model,
    made once per session (read-only for tests): {"out", "cache", "output"}."""
    from typer.testing import CliRunner

    from ipm_prefdial.cli import app

    root = tmp_path_factory.mktemp("pairs")
    out, cache = root / "ipm_prefdial", root / "cache"
    result = CliRunner().invoke(app, ["build", *PAIR_BUILD_ARGS, "--out", str(out), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    return {"out": out, "cache": cache, "output": result.output}


@pytest.fixture(scope="session")
def fake_llm(tmp_path_factory):
    """The deterministic OpenAI-compatible test server (tests/fake_llm.py) in a thread: {"url", "log", "server"}."""
    from fake_llm import FakeLLM

    log = tmp_path_factory.mktemp("fake-llm") / "answered.jsonl"
    server = FakeLLM(log).start()
    yield {"url": server.url, "log": log, "server": server}
    server.stop()


def fake_build_args(url: str, *extra: str) -> list[str]:
    """`ipm build --stage all` of the first 2 dialogues per split, policy and judge on the fake server."""
    return ["build", "--source", "esconv", "--source-path", str(ESCONV_JSON), "--stage", "all", "--limit", "2",
            "--engine", "openai", "--base-url", url, *extra]


@pytest.fixture(scope="session")
def fake_pairs_build(fake_llm, tmp_path_factory) -> dict:
    """A whole `--stage all` build on the fake server, made once per session (read-only): {"out", "cache",
    "output"}. Seconds, not minutes: for the tests of pipeline logic and of pair validation."""
    from typer.testing import CliRunner

    from ipm_prefdial.cli import app

    root = tmp_path_factory.mktemp("fake-pairs")
    out, cache = root / "ipm_prefdial", root / "cache"
    result = CliRunner().invoke(app, [*fake_build_args(fake_llm["url"]), "--out", str(out), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    return {"out": out, "cache": cache, "output": result.output}


@pytest.fixture(scope="session")
def synthetic_build(fake_llm, tmp_path_factory) -> dict:
    """A whole `--stage all` build of the synthetic corpus (tests/synthetic.py, no ESConv text) on the fake server,
    made once per session (read-only): {"out", "corpus", "root"}. For the viewer and its browser tests."""
    from synthetic import build_args, write_corpus
    from typer.testing import CliRunner

    from ipm_prefdial.cli import app

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
