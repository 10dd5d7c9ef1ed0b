"""Fixtures of the tests in tests/agreement/ (test_agreement.py): a tiny synthetic build, annotation files and
another judge's labels."""

from __future__ import annotations

import json

import pytest

from helpers.agreement import EES, JUDGE, LE, TR, line, pair_row, write_config, write_lines


@pytest.fixture
def build(tmp_path):
    out = tmp_path / "build"
    write_config(out, "response_pairs", "train", [pair_row(i, "judged", e) for i, e in JUDGE.items()])
    write_config(out, "response_pairs", "validation", [pair_row("13-1-s0", "failed:timeout", None),
                                                       pair_row("13-3-s0", "skipped", None)])
    write_config(out, "joint_pairs", "train", [pair_row("10-1-s0", "judged", (None, TR))])
    return out


@pytest.fixture
def annotations(tmp_path):
    """alice labels the five judged pairs and the two without a verdict; she labelled 10-1-s0 three times, and
    the line kept is the one with the latest time, neither the first nor the last in the file. bob labels three
    pairs, in a second file."""
    alice = write_lines(tmp_path / "alice.jsonl", [
        line("10-1-s0", "None", TR, "rejected", time="2026-11-28T08:00:00Z"),  # earliest: replaced
        line("10-1-s0", "None", LE, "chosen", time="2026-11-28T12:00:00Z"),  # the latest: kept
        line("10-3-s0", "None", LE, "chosen"),
        line("11-1-s0", "None", TR, "chosen", config="response_pairs_retained"),  # read as response_pairs
        line("11-3-s0", "None", LE, "rejected"),
        line("12-1-s0", "None", EES, "tie"),
        line("13-1-s0", "None", LE, "chosen"),
        line("13-3-s0", "None", LE),  # no preference
        line("10-1-s0", TR, "None", "rejected", time="2026-11-28T09:00:00Z"),  # earlier: replaced
    ])
    bob = write_lines(tmp_path / "bob.jsonl", [
        line("10-1-s0", "None", LE, "rejected", annotator="bob"),
        line("10-3-s0", "None", LE, "rejected", annotator="bob"),
        line("13-1-s0", "None", LE, "chosen", annotator="bob"),
    ])
    return [alice, bob]


@pytest.fixture
def reference(tmp_path):
    """Another judge's per-reply labels: 10-1-s0 and 11-1-s0 whole, 11-3-s0 only its rejected reply."""
    rows = [("10-1-s0", "chosen", "None"), ("10-1-s0", "rejected", LE), ("11-1-s0", "chosen", "None"),
            ("11-1-s0", "rejected", None), ("11-3-s0", "rejected", LE)]
    return write_lines(tmp_path / "gpt4o.jsonl", [json.dumps({"id": i, "config": "response_pairs", "reply": r,
                                                              "error": e}) for i, r, e in rows])
