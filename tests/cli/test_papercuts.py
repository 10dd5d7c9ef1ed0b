"""Papercuts of a first session: the dry run reads the cache, the summary accounts for every request, and
`ipm infer` trims a reply cut at max_tokens instead of scoring the runaway text."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from helpers import fake_build_args
from ipm_prefdial.cli import app

runner = CliRunner()


def dry_run_rows(output: str) -> dict[str, list[int]]:
    """task -> the numbers of its row in the dry-run table."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if len(cells) >= 5 and re.fullmatch(r"[a-z:_]+", cells[0]):
            rows[cells[0]] = [int(c.replace(",", "")) for c in cells[1:]]
    return rows


def test_dry_run_reads_the_cache(fake_pairs_build, fake_llm, tmp_path):
    fresh = runner.invoke(app, [*fake_build_args(fake_llm["url"]), "--dry-run", "--out", str(tmp_path / "a"),
                                "--cache-dir", str(tmp_path / "empty")])
    assert fresh.exit_code == 0, fresh.output
    rows = dry_run_rows(fresh.output)
    # columns: requests, cached, to send, prompt tokens (est.), completion tokens (max)
    assert [rows[t][:3] for t in ("sp", "rg", "vm")] == [[86, 0, 83], [86, 0, 83], [86, 0, 83]]
    assert rows["judge:response_pairs"][:3] == [86, 0, 86]  # at most one per RG answer, none known yet
    done = runner.invoke(app, [*fake_build_args(fake_llm["url"]), "--dry-run", "--out", str(tmp_path / "b"),
                               "--cache-dir", str(fake_pairs_build["cache"])])
    assert done.exit_code == 0, done.output
    rows = dry_run_rows(done.output)
    for task in ("sp", "rg", "vm", "judge:response_pairs", "judge:joint_pairs"):
        assert rows[task][1] == rows[task][0] and rows[task][2] == 0, (task, rows[task])  # all cached, 0 to send
    assert rows["total"][2] == 0
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def summary_parts(output: str, task: str) -> dict[str, int]:
    text = " ".join(output.split())
    match = re.search(rf"{task}: (\d+) requests \(([^)]*)\)", text)
    assert match, text
    parts = {"requests": int(match.group(1))}
    for number, what in re.findall(r"(\d+) ([a-z ]+?)(?:,|$)", match.group(2)):
        parts[what.strip()] = int(number)
    return parts


def test_the_summary_accounts_for_every_request(fake_llm, tmp_path):
    args = [*fake_build_args(fake_llm["url"], "--judge-max-tokens", "5"), "--out", str(tmp_path / "ds"),
            "--cache-dir", str(tmp_path / "cache")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    sp = summary_parts(first.output, "SP")
    assert sp == {"requests": 86, "cached": 0, "sent": 83, "repeats of another request": 3}
    judge = summary_parts(first.output, "judge response_pairs")
    assert judge["requests"] == judge["sent"] + judge.get("repeats of another request", 0) > 0
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert summary_parts(again.output, "SP") == {"requests": 86, "cached": 86, "sent": 0}
    judge = summary_parts(again.output, "judge response_pairs")  # every verdict was cut: failures, replayed
    assert judge["failures replayed"] > 0 and judge["sent"] == 0
    assert judge["requests"] == judge["failures replayed"] + judge["cached"] + judge.get(
        "repeats of another request", 0)


def test_infer_trims_a_reply_cut_at_max_tokens(fake_pairs_build, fake_llm, tmp_path):
    out = tmp_path / "p.jsonl"
    result = runner.invoke(app, ["infer", "--data", str(fake_pairs_build["out"]), "--system", "rg-gold",
                                 "--engine", "openai", "--base-url", fake_llm["url"], "--rg-max-tokens", "6",
                                 "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    cut = [r for r in rows if r["cut_at_max_tokens"]]
    assert cut and len(cut) < len(rows)
    for r in cut:  # back to the last complete sentence, or nothing and an error
        assert re.search(r"[.!?]$", r["predicted_response"]) or (r["predicted_response"] == "" and
                                                                   r["error"].startswith("truncated"))
    trimmed = sum(bool(r["predicted_response"]) for r in cut)
    assert trimmed > 0
    text = " ".join(result.output.split())
    assert f"{trimmed} trimmed at max_tokens" in text and "engine error" not in text
    failed = sum(r["error"] is not None for r in rows)
    assert f"{failed} without a reply" in text
