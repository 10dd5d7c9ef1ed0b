"""A long build says early how long it will take: after its first 16 answers (engine start-up not counted) it
prints the requests left and an estimate for the whole build."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from helpers import fake_build_args
from ipm_prefdial.testing.fake_llm import FakeLLM


def test_the_first_answers_give_an_estimate_of_the_whole_build(tmp_path):
    from ipm_prefdial.cli import app

    server = FakeLLM(latency=0.01).start()
    try:
        result = CliRunner().invoke(app, [*fake_build_args(server.url), "--concurrency", "4",
                                          "--out", str(tmp_path / "ds"), "--cache-dir", str(tmp_path / "cache")])
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "requests left" in line]
    assert len(lines) == 1, result.output
    # 86 turns x SP, RG, VM = 258 requests, 249 distinct (9 repeat another request of the batch): 16 answered,
    # 233 left in the batch, and up to 172 judge requests (one per RG and VM answer) after it
    match = re.search(r"after 16 answers: 405 requests left \(233 policy, up to 172 judge\), about (\d+) s more at "
                      r"([\d.]+) requests/s", " ".join(lines[0].split()))
    assert match, lines[0]
    assert float(match.group(2)) > 0 and int(match.group(1)) >= 1


def test_a_cached_build_prints_no_estimate(fake_pairs_build, fake_llm, tmp_path):
    from ipm_prefdial.cli import app

    result = CliRunner().invoke(app, [*fake_build_args(fake_llm["url"]), "--out", str(tmp_path / "ds"),
                                      "--cache-dir", str(fake_pairs_build["cache"])])
    assert result.exit_code == 0, result.output
    assert "requests left" not in result.output
