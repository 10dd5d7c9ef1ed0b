"""`ipm agreement`: the judge's labels vs people's and another judge's. A tiny synthetic build (parquet written
directly, made-up texts) and hand-worked figures: every expected number below is worked out in a comment, never
by calling the code under test."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from helpers import plain
from helpers.agreement import EES, LE, TR, line, write_lines
from ipm_prefdial.agreement.figures import ONE_LABEL, UNRELIABLE, cohen_kappa, wilson_interval
from ipm_prefdial.cli import app
from ipm_prefdial.release.features import data_file

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, ["agreement", *map(str, args)])
    assert "Traceback" not in result.output
    return result


def figures(tmp_path, build, *inputs) -> dict:
    out = tmp_path / "agreement.json"
    result = run(*inputs, "--build", build, "--json", out)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def comparison(data: dict, first: str, second: str) -> dict:
    (found,) = [c for c in data["comparisons"] if c["raters"] == [first, second]]
    return found


def test_cohen_kappa_of_ten_replies_by_hand():
    # first: None x5, LE x2, EES x2, TR x1; second: None x5, LE x3, EES x1, TR x1; 7 of 10 agree.
    first = ["None", LE, "None", TR, "None", "None", EES, LE, "None", EES]
    second = ["None", LE, "None", LE, "None", TR, "None", LE, "None", EES]
    # p_o = 7/10; p_e = (5*5 + 2*3 + 2*1 + 1*1) / 100 = 34/100; kappa = (0.70 - 0.34) / 0.66 = 6/11
    k = cohen_kappa(zip(first, second, strict=True))
    assert k["n"] == 10
    assert k["agreement"] == pytest.approx(0.7)
    assert k["expected"] == pytest.approx(0.34)
    assert k["kappa"] == pytest.approx(6 / 11)
    # perfect agreement over two labels: p_o = 1, p_e = (2*2 + 2*2) / 16 = 0.5, kappa = 1
    assert cohen_kappa([("a", "a"), ("b", "b"), ("a", "a"), ("b", "b")])["kappa"] == pytest.approx(1.0)
    # opposite on two labels, each used half the time: p_o = 0, p_e = 0.5, kappa = -1
    assert cohen_kappa([("a", "b"), ("b", "a")])["kappa"] == pytest.approx(-1.0)


def test_kappa_is_null_when_undefined_or_empty():
    one = cohen_kappa([("None", "None")] * 4)  # p_e = 16/16 = 1: no room for agreement beyond chance
    assert one["kappa"] is None and one["note"] == ONE_LABEL == "undefined: one label only"
    assert one["agreement"] == 1.0
    empty = cohen_kappa([])
    assert empty["kappa"] is None and empty["n"] == 0 and empty["agreement"] is None


def test_wilson_interval_by_hand():
    # 7 of 10: p = 0.7, z^2/n = 0.384146, centre = (0.7 + 0.192073) / 1.384146 = 0.644491,
    # half = z * sqrt(0.021 + 0.0096037) / 1.384146 = 0.247715 -> [0.396776, 0.892206]
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.396778, abs=1e-5) and high == pytest.approx(0.892209, abs=1e-5)
    # 0 of 5: centre = half = (z^2/10) / (1 + z^2/5) = 0.384146 / 1.768292 = 0.217241 -> [0, 0.434482]
    low, high = wilson_interval(0, 5)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.434482, abs=1e-5)
    assert wilson_interval(0, 0) is None


def test_judge_vs_annotator_figures(tmp_path, build, annotations):
    data = figures(tmp_path, build, *annotations)
    alice = comparison(data, "judge", "alice")
    # Items: 10 replies of the five judged pairs (13-1-s0, 13-3-s0 have no verdict). Judge: None 5, LE 2, EES 2,
    # TR 1; alice: None 5, LE 3, EES 1, TR 1; 7 agree -> p_o 0.7, p_e 0.34, kappa_4 = 0.36 / 0.66 = 6/11.
    assert alice["pairs"] == 5
    assert alice["kappa_4"]["n"] == 10
    assert alice["kappa_4"]["agreement"] == pytest.approx(0.7)
    assert alice["kappa_4"]["kappa"] == pytest.approx(6 / 11)
    # error vs not: judge 5 errors (4 rejected + 11-3-s0 chosen), alice 5 (every rejected); 8 of 10 agree
    # (11-1-s0 rejected and 11-3-s0 chosen differ) -> p_o 0.8, p_e (25 + 25) / 100 = 0.5, kappa = 0.3/0.5 = 0.6
    assert alice["kappa_error"]["agreement"] == pytest.approx(0.8)
    assert alice["kappa_error"]["kappa"] == pytest.approx(0.6)
    # retained per pair: judge T, T, F, F, T; alice T x5 -> p_o 3/5, p_e (3*5 + 2*0) / 25 = 0.6, kappa 0
    assert alice["kappa_retained"]["n"] == 5
    assert alice["kappa_retained"]["agreement"] == pytest.approx(0.6)
    assert alice["kappa_retained"]["kappa"] == pytest.approx(0.0)
    # rows judge, columns alice, order None, LE, EES, TR
    assert alice["confusion"]["labels"] == ["None", LE, EES, TR]
    assert alice["confusion"]["matrix"] == [[4, 0, 0, 1], [0, 2, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0]]
    assert alice["disagreements"] == ["response_pairs/10-3-s0", "response_pairs/11-1-s0", "response_pairs/11-3-s0"]
    # judge comparisons come first, then the people among themselves
    assert [c["raters"] for c in data["comparisons"]] == [["judge", "alice"], ["judge", "bob"], ["alice", "bob"]]


def test_latest_time_wins_and_is_counted(tmp_path, build, annotations):
    data = figures(tmp_path, build, *annotations)
    assert data["replaced"] == {"alice": 2}
    assert any("alice: 2 earlier labelling" in n for n in data["notes"])
    # the kept line of 10-1-s0 says (None, LE), as the judge: not a disagreement; the replaced ones said
    # (None, TR) and (TR, None)
    assert "response_pairs/10-1-s0" not in comparison(data, "judge", "alice")["disagreements"]
    assert data["raters"]["alice"]["pairs"] == 7
    assert data["raters"]["alice"]["replies"] == 14
    # alice's preferences: the kept 10-1-s0 line says chosen (the replaced ones said rejected)
    assert data["preference"]["annotators"]["alice"]["chosen"] == 4


def test_pairs_without_a_verdict_are_left_out_for_the_judge_only(tmp_path, build, annotations):
    data = figures(tmp_path, build, *annotations)
    assert data["judge_missing"] == {"pairs": 2, "statuses": {"failed:timeout": 1, "skipped": 1}}
    bob = comparison(data, "judge", "bob")
    assert bob["pairs"] == 2 and bob["kappa_4"]["n"] == 4  # 13-1-s0 has no verdict
    people = comparison(data, "alice", "bob")
    assert people["pairs"] == 3 and people["kappa_4"]["n"] == 6  # 13-1-s0 counts among the annotators
    # alice and bob agree on all six replies: None 3 and LE 3 each, p_e = (9 + 9) / 36 = 0.5, kappa 1; on the
    # pairs both say retained every time: one label only, so kappa_retained is undefined
    assert people["kappa_4"]["kappa"] == pytest.approx(1.0)
    assert people["kappa_retained"]["kappa"] is None
    assert people["kappa_retained"]["note"] == ONE_LABEL
    # the judge's counts cover the annotated pairs that have a verdict: the five judged ones
    assert data["raters"]["judge"]["pairs"] == 5
    assert data["raters"]["judge"]["labels"] == {"None": 5, LE: 2, EES: 2, TR: 1}


def test_under_50_pairs_warns(tmp_path, build, annotations):
    data = figures(tmp_path, build, *annotations)
    assert comparison(data, "judge", "alice")["warning"] == UNRELIABLE == "fewer than 50 pairs: kappa is unreliable"
    assert data["warnings"] == ["judge vs alice: 5 pairs, fewer than 50 pairs: kappa is unreliable",
                                "judge vs bob: 2 pairs, fewer than 50 pairs: kappa is unreliable"]
    result = run(*annotations, "--build", build)
    assert "fewer than 50 pairs: kappa is unreliable" in plain(result.output)


def test_preference_for_gold(tmp_path, build, annotations):
    data = figures(tmp_path, build, *annotations)
    alice = data["preference"]["annotators"]["alice"]
    # alice: chosen 4 (10-1, 10-3, 11-1, 13-1), rejected 1 (11-3), tie 1 (12-1), none for 13-3.
    # share = 4 / 5 = 0.8 (the tie is left out); Wilson: z^2/n = 0.768292, centre = (0.8 + 0.384146) / 1.768292
    # = 0.669655, half = z * sqrt(0.032 + 0.0384146) / 1.768292 = 0.294119 -> [0.375535, 0.963774]
    assert (alice["chosen"], alice["rejected"], alice["tie"]) == (4, 1, 1)
    assert alice["share"] == pytest.approx(0.8)
    assert alice["wilson_95"] == pytest.approx([0.375535, 0.963776], abs=1e-5)
    # pooled: alice 4/1/1 + bob 1/2/0 = 5 chosen, 3 rejected, 1 tie; share 5/8
    pooled = data["preference"]["pooled"]
    assert (pooled["chosen"], pooled["rejected"], pooled["tie"]) == (5, 3, 1)
    assert pooled["share"] == pytest.approx(0.625)
    assert "ties are left out" in data["preference"]["note"]


def test_no_decided_preference_gives_null_share(tmp_path, build):
    only_ties = write_lines(tmp_path / "ties.jsonl", [line("10-1-s0", "None", LE, "tie")])
    data = figures(tmp_path, build, only_ties)
    alice = data["preference"]["annotators"]["alice"]
    assert alice["tie"] == 1 and alice["share"] is None and alice["wilson_95"] is None


def test_reference_file_is_a_rater(tmp_path, build, annotations, reference):
    data = figures(tmp_path, build, *annotations, "--reference", reference)
    assert data["raters"]["gpt4o"]["kind"] == "reference"
    gpt = comparison(data, "judge", "gpt4o")
    # five replies, all agreeing: judge and gpt4o both None 3, LE 2 -> p_e = (9 + 4) / 25 = 0.52, kappa 1.
    # Only 10-1-s0 and 11-1-s0 have both replies (11-3-s0 counts per reply only): retained T, F for both.
    assert gpt["kappa_4"]["n"] == 5 and gpt["kappa_4"]["kappa"] == pytest.approx(1.0)
    assert gpt["kappa_retained"]["n"] == 2 and gpt["kappa_retained"]["kappa"] == pytest.approx(1.0)
    assert gpt["disagreements"] == []
    assert gpt["warning"] is None  # the warning is about people
    assert ["alice", "gpt4o"] in [c["raters"] for c in data["comparisons"]]
    # a reference alone is enough to run
    assert figures(tmp_path, build, "--reference", reference)["comparisons"][0]["raters"] == ["judge", "gpt4o"]


def test_json_and_markdown_files(tmp_path, build, annotations):
    out, md = tmp_path / "a.json", tmp_path / "a.md"
    result = run(*annotations, "--build", build, "--json", out, "--markdown", md)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.endswith("}\n")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert {"kappa_4", "kappa_error", "kappa_retained", "confusion", "disagreements", "pairs"} <= set(
        data["comparisons"][0])
    assert {"raters", "comparisons", "preference", "warnings", "judge_missing", "replaced"} <= set(data)
    table = md.read_text()
    # judge vs alice: 5 pairs, 10 replies, kappa_4 6/11, p_o 0.7, kappa_error 0.6, p_o 0.8, 5 whole pairs,
    # kappa_retained 0, p_o 0.6, 3 disagreeing pairs
    assert "| judge | alice | 5 | 10 | 0.545 | 0.700 | 0.600 | 0.800 | 5 | 0.000 | 0.600 | 3 |" in table
    assert ("| alice | bob | 3 | 6 | 1.000 | 1.000 | 1.000 | 1.000 | 3 | undefined: one label only | 1.000 | 0 |"
            in table)
    assert "| alice | 4 | 1 | 1 | 0.800 | 0.376 to 0.964 |" in table
    # deterministic: a second run writes the same bytes
    again = tmp_path / "b.json"
    assert run(*annotations, "--build", build, "--json", again, "--markdown", tmp_path / "b.md").exit_code == 0
    assert again.read_text() == text and (tmp_path / "b.md").read_text() == table


BAD_LINES = [
    ('{"id": "10-1-s0", "config": ', "not valid JSON"),
    ('{"id": "10-1-s0", "config": "response_pairs", "labels": {"chosen": "None", "rejected": "None"}}',
     "missing field annotator"),
    (line("10-1-s0", "None", "Rude"), "field labels.rejected: unknown label 'Rude'"),
    (line("10-1-s0", "None", LE, "maybe"), "field preference: unknown preference 'maybe'"),
    (line("99-1-s0", "None", LE), "field id: '99-1-s0' is not a pair of response_pairs"),
    (line("10-1-s0", "None", LE, config="strategy_pairs"), "field config: unknown config 'strategy_pairs'"),
    (line("10-1-s0", "None", LE, time="yesterday"), "field time: 'yesterday'"),
    (line("10-1-s0", "None", LE, annotator="judge"), "field annotator: 'judge'"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_LINES)
def test_bad_annotation_line_names_file_line_and_field(tmp_path, build, bad, message):
    path = write_lines(tmp_path / "bad.jsonl", [line("10-3-s0", "None", LE), bad])
    result = run(path, "--build", build)
    assert result.exit_code == 1, result.output
    text = plain(result.output)
    assert f"{path}:2" in text and message in text, text


def test_bad_reference_line(tmp_path, build):
    path = write_lines(tmp_path / "ref.jsonl", [json.dumps({"id": "10-1-s0", "config": "response_pairs",
                                                            "error": "None"})])
    result = run("--build", build, "--reference", path)
    assert result.exit_code == 1
    assert f"{path}:1: missing field reply" in plain(result.output)
    path = write_lines(tmp_path / "ref2.jsonl", [json.dumps({"id": "10-1-s0", "config": "response_pairs",
                                                             "reply": "chosen", "error": "Meh"})])
    result = run("--build", build, "--reference", path)
    assert result.exit_code == 1
    assert f"{path}:1: field error: unknown label 'Meh'" in plain(result.output)


def test_missing_build_and_missing_inputs(tmp_path, build, annotations):
    result = run(*annotations, "--build", tmp_path / "nowhere")
    assert result.exit_code == 1 and f"{tmp_path / 'nowhere'}: no such build directory" in plain(result.output)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(*annotations, "--build", empty)
    assert result.exit_code == 1 and f"{empty}: no judged pair data" in plain(result.output)
    broken = tmp_path / "broken"
    (broken / data_file("response_pairs", "train")).parent.mkdir(parents=True)
    (broken / data_file("response_pairs", "train")).write_bytes(b"not parquet")
    result = run(*annotations, "--build", broken)
    assert result.exit_code == 1
    assert f"{broken / data_file('response_pairs', 'train')}: cannot read the parquet file" in plain(result.output)
    result = run(tmp_path / "absent.jsonl", "--build", build)
    assert result.exit_code == 1 and f"{tmp_path / 'absent.jsonl'}: cannot read" in plain(result.output)
    result = run("--build", build)
    assert result.exit_code == 2 and "nothing to compare the judge with" in plain(result.output)


def test_an_annotation_of_other_replies_is_refused(tmp_path, build):
    # every pair of the fixture has the same replies; their digest, worked out once by hand with hashlib:
    # sha256("That sounds hard. What happened next?\0Just try harder.")[:16]
    right, wrong = "a185ad592b30d7d2", "0123456789abcdef"
    ok = json.loads(line("10-3-s0", "None", LE))
    stale = json.loads(line("10-1-s0", "None", LE))
    ok["pair_sha256"], stale["pair_sha256"] = right, wrong
    path = write_lines(tmp_path / "a.jsonl", [json.dumps(ok)])
    assert run(path, "--build", build).exit_code == 0
    path = write_lines(tmp_path / "b.jsonl", [json.dumps(ok), json.dumps(stale)])
    result = run(path, "--build", build)
    assert result.exit_code == 1
    assert (f"{path}:2: field pair_sha256: the replies annotated are not those of response_pairs/10-1-s0 in this "
            "build") in plain(result.output)
