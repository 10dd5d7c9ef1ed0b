"""Intervals and paired comparisons (ipm_prefdial/evaluation/bootstrap.py) on examples worked by hand: a few
dialogues whose resamples are all enumerated, and comparisons whose answer is known."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ipm_prefdial.cli import app
from ipm_prefdial.evaluation.bootstrap import DialogueSums, draws, intervals, paired, paired_p
from ipm_prefdial.taxonomy import builtin

Q, INFO = "Question", "Information"


def turn(dialog: str, n: int, gold: str, predicted: str | None, reply: str = "fine", answer: str = "fine") -> dict:
    return {"id": f"{dialog}-{n}", "dialog_id": dialog, "turn_index": n, "strategy": gold,
            "predicted_strategy": predicted, "response": answer, "predicted_response": reply}


def every_resample(dialogues: int) -> np.ndarray:
    """All dialogues**dialogues ordered draws, as weights (how often each dialogue is drawn)."""
    return np.array([np.bincount(draw, minlength=dialogues)
                     for draw in itertools.product(range(dialogues), repeat=dialogues)])


def test_accuracy_interval_over_all_27_resamples_of_three_dialogues():
    # d1: one turn, right; d2: one turn, wrong; d3: two turns, wrong. A resample drawing d1, d2, d3 a, b, c times has
    # accuracy a / (a + b + 2c). Over the 27 ordered draws: 0 (8 draws), 1/5 (3), 1/4 (6), 1/3 (3), 1/2 (3), 2/3 (3),
    # 1 (1). The 2.5th percentile sits at position 0.65 of 26 (between two zeros): 0; the 97.5th at 25.35, between
    # 2/3 (the 26th value) and 1 (the 27th): 2/3 + 0.35 x 1/3 = 2.35 / 3.
    rows = [turn("d1", 1, Q, Q), turn("d2", 1, Q, INFO), turn("d3", 1, INFO, Q), turn("d3", 2, Q, INFO)]
    sums = DialogueSums(rows, builtin("esconv"), ["d1", "d2", "d3"])
    ci = intervals(sums, every_resample(3))
    assert ci[("strategy", "lenient", "accuracy")] == pytest.approx([0.0, 100 * 2.35 / 3])
    assert sums.metrics()["strategy"]["lenient"]["accuracy"] == pytest.approx(25.0)  # 1 of 4 turns


def test_reply_length_interval_over_all_4_resamples_of_two_dialogues():
    # replies of 2 and 4 tokens: the resamples' mean lengths are 2, 3, 3, 4; percentiles at positions 0.075 and 2.925
    rows = [turn("a", 1, Q, Q, reply="so sad"), turn("b", 1, Q, Q, reply="that is so sad")]
    ci = intervals(DialogueSums(rows, builtin("esconv"), ["a", "b"]), every_resample(2))
    assert ci[("reference", "length")] == pytest.approx([2.075, 3.925])
    # corpus Distinct is not resampled (a dialogue drawn twice repeats its k-grams); the per-reply one is
    assert ("reference", "corpus-dist-2") not in ci and ("reference", "dist-2") in ci
    assert ("strategy", "lenient", "turns") not in ci  # a count, not a measurement


def test_turns_of_one_dialogue_move_together():
    # two dialogues of 3 turns each, all right in one and all wrong in the other: every resample's accuracy is 0, 50
    # or 100 (never 33.3 or 66.7, which resampling turns would give)
    rows = [turn("r", n, Q, Q) for n in range(3)] + [turn("w", n, Q, INFO) for n in range(3)]
    sums = DialogueSums(rows, builtin("esconv"), ["r", "w"])
    values = {sums.metrics(w)["strategy"]["lenient"]["accuracy"] for w in draws(2, 200, seed=1)}
    assert values == {0.0, 50.0, 100.0}


def test_paired_p_by_hand():
    assert paired_p([0.0, 0.0, 0.0]) == 1.0  # no difference at all
    assert paired_p([1.0] * 999) == pytest.approx(2 / 1000)  # every resample favours A: (0 + 1) / (999 + 1), twice
    assert paired_p([-1.0, 1.0, 2.0, 3.0]) == pytest.approx(0.8)  # 2 x (1 + 1) / (4 + 1)
    assert paired_p([None, None]) is None


def test_identical_systems_differ_by_0_with_p_1():
    rows = [turn(d, n, Q, Q if n else INFO, reply=f"reply {d} {n}") for d in "abcd" for n in range(2)]
    a = DialogueSums(rows, builtin("esconv"), list("abcd"))
    b = DialogueSums([dict(r) for r in rows], builtin("esconv"), list("abcd"))
    compared = paired(a, b, draws(4, 300, seed=0))
    # F1 of a strategy neither predicted nor gold is undefined: so is its difference
    assert compared[("strategy", "lenient", "per_strategy_f1", "Others")] == {"diff": None, "ci95": None, "p": None}
    for path, entry in compared.items():
        if path[-2:] != ("per_strategy_f1", path[-1]) or path[-1] in (Q, INFO):
            assert entry["diff"] == 0.0, path
            assert entry["p"] == 1.0, path
            assert entry["ci95"] == [0.0, 0.0], path


def test_a_system_right_on_every_dialogue_against_one_always_wrong():
    good = [turn(d, n, Q, Q) for d in "abcdef" for n in range(2)]
    bad = [turn(d, n, Q, INFO) for d in "abcdef" for n in range(2)]
    compared = paired(DialogueSums(good, builtin("esconv"), list("abcdef")),
                      DialogueSums(bad, builtin("esconv"), list("abcdef")), draws(6, 1000, seed=0))
    accuracy = compared[("strategy", "lenient", "accuracy")]
    assert accuracy["diff"] == 100.0 and accuracy["ci95"] == [100.0, 100.0]
    assert accuracy["p"] == pytest.approx(2 / 1001)


def test_draws_are_seeded_resamples_of_the_dialogues():
    first, again, other = draws(5, 50, seed=7), draws(5, 50, seed=7), draws(5, 50, seed=8)
    assert first.shape == (50, 5) and (first.sum(axis=1) == 5).all()
    assert (first == again).all() and not (first == other).all()


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_with_a_baseline_writes_intervals_and_the_comparison(tmp_path):
    # A is right on the 12 dialogues a-l, B on none; each file has one turn the other lacks
    a = write(tmp_path / "a.jsonl", [turn(d, n, Q, Q) for d in "abcdefghijkl" for n in range(2)] + [turn("x", 0, Q, Q)])
    b = write(tmp_path / "b.jsonl", [turn(d, n, Q, INFO) for d in "abcdefghijkl" for n in range(2)]
              + [turn("y", 0, Q, Q)])
    args = ["eval", "--predictions", str(a), "--baseline", str(b), "--bootstrap", "200", "--seed", "3"]
    first = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "one.json"), "--report", str(tmp_path / "r")])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "two.json")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    result = json.loads((tmp_path / "one.json").read_text())
    assert result["bootstrap"] == {"resamples": 200, "unit": "dialogue", "seed": 3, "dialogues": 13}
    assert result["strategy"]["lenient"]["ci95"]["accuracy"] == [100.0, 100.0]
    assert set(result["strategy"]["lenient"]["ci95"]["preference"]) == set(builtin("esconv").names)
    compare = result["compare"]
    assert (compare["matched"], compare["unmatched"], compare["dialogues"]) == \
        (24, {"predictions": 1, "baseline": 1}, 12)
    assert compare["strategy"]["lenient"]["accuracy"] == {"diff": 100.0, "ci95": [100.0, 100.0],
                                                          "p": pytest.approx(2 / 201)}
    assert compare["reference"]["f1"] == {"diff": 0.0, "ci95": [0.0, 0.0], "p": 1.0}
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| 100.00 [100.00, 100.00] |" in report
    assert "| accuracy |" not in report  # the report's rows are ESC papers' metrics
    assert "| Q (macro-F1, lenient) | +100.00 [100.00, 100.00] | 0.010 | higher | A better |" in report
    assert "| B (bias, lenient) |" in report and "| F1 | +0.00 [0.00, 0.00] | 1.000 | higher | not distinguishable" \
        in report
    assert "paired over 24 turns" in " ".join(first.output.split())
    # on 4 dialogues the same difference is given, but not called distinguishable
    few = [tmp_path / "few-a.jsonl", tmp_path / "few-b.jsonl"]
    write(few[0], [turn(d, 0, Q, Q) for d in "abcd"])
    write(few[1], [turn(d, 0, Q, INFO) for d in "abcd"])
    result = CliRunner().invoke(app, ["eval", "--predictions", str(few[0]), "--baseline", str(few[1]), "--report",
                                      str(tmp_path / "few")])
    assert result.exit_code == 0, result.output
    assert "| Q (macro-F1, lenient) | +100.00 [100.00, 100.00] | 0.002 | higher | too few dialogues (4) to tell |" \
        in (tmp_path / "few" / "report.md").read_text()


def test_eval_options_of_the_bootstrap_are_checked(tmp_path):
    a = write(tmp_path / "a.jsonl", [turn("a", 0, Q, Q)])
    result = CliRunner().invoke(app, ["eval", "--predictions", str(a), "--baseline", str(a), "--bootstrap", "0"])
    assert result.exit_code == 2 and "--baseline needs resamples" in result.output
    result = CliRunner().invoke(app, ["eval", "--predictions", str(a), "--bootstrap", "-1"])
    assert result.exit_code == 2 and "--bootstrap" in result.output
    b = write(tmp_path / "b.jsonl", [turn("z", 0, Q, Q)])
    result = CliRunner().invoke(app, ["eval", "--predictions", str(a), "--baseline", str(b)])
    assert result.exit_code == 1 and "no turn id in common" in result.output
