"""Money: prices per million tokens (cached input, the batch discount), the YAML ``prices:`` section, and
``--max-spend``, which stops a build within the cap by the server's own count of tokens (exit 3, one line) and lets
a rerun with a higher cap complete it, sending nothing twice."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from helpers import fake_build_args, parquet, plain
from ipm_prefdial.cli import app
from ipm_prefdial.config import BuildConfig
from ipm_prefdial.engines.spend import Prices
from ipm_prefdial.errors import ConfigError
from ipm_prefdial.testing.fake_llm import FakeLLM, read_log

runner = CliRunner()
ABSURD = ("--price-input", "1000", "--price-output", "1000")  # a tenth of a cent a token


def test_prices_count_cached_tokens_and_the_batch_discount():
    price = Prices(input=2.5, output=10.0, cached_input=1.25)
    assert price.cost(1000, 400, 200) == pytest.approx(0.004)  # (600 * 2.5 + 400 * 1.25 + 200 * 10) / 1e6
    assert price.cost(1000, 400, 200, batch=True) == pytest.approx(0.002)
    assert Prices(input=2.5, output=10.0).cost(1000, 400, 200) == pytest.approx(0.0045)  # cached at the input price


def test_yaml_prices_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("prices:\n  input: 2.5\n  output: 10\n  judge: {input: 0.15, output: 0.6}\nmax_spend: 40\n")
    cfg = BuildConfig.load(path)
    assert (cfg.price_input, cfg.price_output, cfg.judge_price_input, cfg.judge_price_output) == (2.5, 10, 0.15, 0.6)
    assert cfg.prices("judge") == Prices(0.15, 0.6, None, 0.5)
    path.write_text("prices:\n  inputs: 2.5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: prices: unknown key 'inputs'; known: input, cached_input"):
        BuildConfig.load(path)


def test_max_spend_stops_within_the_cap_and_a_higher_cap_completes(fake_pairs_build, tmp_path):
    log = tmp_path / "answered.jsonl"
    server = FakeLLM(log).start()
    try:
        args = [*fake_build_args(server.url, *ABSURD), "--out", str(tmp_path / "out"), "--cache-dir",
                str(tmp_path / "cache")]
        first = runner.invoke(app, [*args, "--max-spend", "25"])
        assert first.exit_code == 3, first.output
        line = plain(first.output).split("incomplete: ")[-1]
        assert line.startswith("spend cap reached: --max-spend 25 USD; this build's answers cost ")
        spent = (server.prompt_tokens + server.completion_tokens) * 1000 / 1e6  # by the server's own count
        assert 0 < spent <= 25 and 0 < server.answered < 420
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert manifest["complete"] is False and manifest["spend"]["cap_reached"] is True
        assert manifest["spend"]["usd"] == pytest.approx(spent)
        second = runner.invoke(app, [*args, "--max-spend", "100000"])
        assert second.exit_code == 0, second.output
    finally:
        server.stop()
    assert parquet(tmp_path / "out") == parquet(fake_pairs_build["out"])
    sent = [entry["sha256"] for entry in read_log(log)]
    assert len(sent) == 420 and len(set(sent)) == 420  # nothing sent twice
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    total = (server.prompt_tokens + server.completion_tokens) * 1000 / 1e6
    assert manifest["spend"]["usd"] == pytest.approx(total) and manifest["spend"]["max_spend"] == 100000


def test_a_cap_without_prices_is_refused(tmp_path):
    result = runner.invoke(app, [*fake_build_args("http://127.0.0.1:9/v1", "--max-spend", "5"),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "--max-spend needs prices: --price-input and --price-output" in plain(result.output)


def test_the_dry_run_says_the_dollars_online_and_as_batches(tmp_path):
    result = runner.invoke(app, [*fake_build_args("http://127.0.0.1:9/v1", "--model", "fake-llm", "--dry-run",
                                                  *ABSURD), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    text = plain(result.output)
    assert "total 430 0 421 469,407 86,912" in text  # prompt tokens (estimate) and completion tokens (at most)
    # (469,407 + 86,912) tokens at 1,000 USD a million; half as batches
    assert "US dollars to send it, at most: 556.32 online, 278.16 as batches" in text


def test_max_spend_in_batch_mode_submits_only_what_the_cap_holds(fake_pairs_build, tmp_path):
    server = FakeLLM().start()
    try:
        args = [*fake_build_args(server.url, *ABSURD, "--batch", "--judge-batch", "--batch-poll", "0.01"),
                "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
        first = runner.invoke(app, [*args, "--max-spend", "25"])
        assert first.exit_code == 3, first.output
        assert "spend cap reached: --max-spend 25 USD" in plain(first.output)
        [batch] = server.batches.batches.values()  # the lines whose worst case fitted, in one batch
        assert 0 < batch["request_counts"]["total"] < 249
        spent = (server.prompt_tokens + server.completion_tokens) * 1000 / 1e6 / 2  # at the batch discount
        assert 0 < spent <= 25
        second = runner.invoke(app, [*args, "--max-spend", "100000"])
        assert second.exit_code == 0, second.output
    finally:
        server.stop()
    assert parquet(tmp_path / "out") == parquet(fake_pairs_build["out"])
    assert sum(server.batches.submitted.values()) == 420 and max(server.batches.submitted.values()) == 1
