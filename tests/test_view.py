"""`ipm view`: the page's bytes, its data against the build's parquet files, sampling and flags (no browser here;
tests/test_view_browser.py drives the page in Chromium)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import plain
from helpers.synthetic import IMG_SEEKER, SCRIPT_REPLY, SUPPORTER_FIRST, TWO_IN_A_ROW
from helpers.view import page_data, parquet_rows
from ipm_prefdial.cli import app
from ipm_prefdial.view import reply_flags, stratified_sample

PAIRS = ("strategy_pairs", "response_pairs", "joint_pairs")


def test_the_page_is_one_offline_file_with_every_string_escaped(page):
    html = page["html"]
    # exactly two script elements close: the data block and the page's own script
    assert html.count("</script>") == 2
    assert "<img" not in html and "onerror=\"window" not in html
    assert "\\u003c/script\\u003e\\u003cscript\\u003ewindow.__pwned = 1\\u003c/script\\u003e" in html
    assert "\\u003cimg src=x onerror=\\\"window.__pwned = 2\\\"\\u003e in the team chat \\u0026 laughed" in html
    # nothing is fetched: no external script, style, image or font, and the page's policy forbids requests
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html)
    assert "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html and "connect-src 'none'" in html
    # the strings come back exactly from the data
    assert SCRIPT_REPLY in page["data"]["strings"] and IMG_SEEKER in page["data"]["strings"]


def test_same_build_gives_the_same_bytes_and_no_machine_path(synthetic_build, page, tmp_path):
    copy = tmp_path / "elsewhere" / "ipm_prefdial"
    shutil.copytree(synthetic_build["out"], copy)
    again = tmp_path / "again.html"
    assert CliRunner().invoke(app, ["view", str(copy), "-o", str(again)]).exit_code == 0
    assert again.read_bytes() == page["path"].read_bytes()
    html = page["html"]
    for path in (synthetic_build["root"], page["path"].parent, Path.home(), Path.cwd()):
        assert str(path) not in html
    assert "/tmp/" not in html and "cache" not in json.dumps(page["data"]["overview"].get("models"))
    assert page["data"]["overview"]["directory"] == "ipm_prefdial"


def test_counts_per_filter_equal_the_parquet_files(synthetic_build, page):
    data, build = page["data"], synthetic_build["out"]
    pairs = data["pairs"]
    for config in PAIRS:
        rows = parquet_rows(build, config)
        mine = [p for p in pairs if data["configs"][p["k"]] == config]
        assert len(mine) == len(rows) > 0
        assert {p["id"] for p in mine} == {r["id"] for r in rows}
        for split in ("train", "validation"):
            assert sum(data["splits"][p["sp"]] == split for p in mine) == sum(r["split"] == split for r in rows)
        assert Counter(data["strategies"][p["s"]] for p in mine) == Counter(r["strategy"] for r in rows)
        assert Counter(data["statuses"][p["js"]] for p in mine) == Counter(r["judge_status"] for r in rows)
        if config != "strategy_pairs":
            assert Counter(data["labels"][p["ce"]] for p in mine if "ce" in p) == \
                Counter(r["judge"]["chosen_error"] or "None" for r in rows if r["judge"])
            assert Counter(data["labels"][p["re"]] for p in mine if "re" in p) == \
                Counter(r["judge"]["rejected_error"] or "None" for r in rows if r["judge"])
    for retained, parent in (("response_pairs_retained", "response_pairs"), ("joint_pairs_retained", "joint_pairs")):
        rows = parquet_rows(build, retained)
        assert sum(1 for p in pairs if data["configs"][p["k"]] == parent and p.get("jr") == 1) == len(rows) > 0
        assert data["files"][retained] == {s: sum(r["split"] == s for r in rows) for s in ("train", "validation")}
    gold_errors = sum(1 for c in ("response_pairs", "joint_pairs") for r in parquet_rows(build, c)
                      if r["judge"] and r["judge"]["chosen_error"])
    assert {f["name"]: f["count"] for f in data["flags"]}["gold judged an error"] == gold_errors > 0


def test_the_pairs_and_dialogues_hold_the_builds_text(page):
    data = page["data"]
    strings = data["strings"]
    # dialogue 0 of the corpus: the seeker's markup and the supporter's </script> reply, in order, with strategies
    dialogue = data["dialogues"]["0"]
    texts = [strings[m[1]] for m in dialogue]
    assert texts[:2] == ["Hi, can I talk to someone?", "Hello, of course. I am here."]
    assert IMG_SEEKER in texts and SCRIPT_REPLY in texts
    assert texts.index(IMG_SEEKER) < texts.index(SCRIPT_REPLY)
    assert [data["strategies"][m[2]] for m in dialogue if m[0] == 1][0] == "Others"
    # the response pair of that turn: gold is the </script> reply, shown after the history up to the turn
    pair = next(p for p in data["pairs"]
                if data["configs"][p["k"]] == "response_pairs" and strings[p["c"]] == SCRIPT_REPLY)
    assert pair["d"] == 0 and strings[dialogue[pair["at"]][1]] == SCRIPT_REPLY
    assert data["strategies"][pair["s"]] == "Question"
    assert data["tokens"]["unit"] == "tokens"


def test_prompt_lengths_are_within_a_few_tokens_of_the_tokenizer(synthetic_build, page):
    from ipm_prefdial.tokens import TokenCounter, load_tokenizer

    counter = TokenCounter(*load_tokenizer())
    data = page["data"]
    prompts = {(c, r["id"]): r["prompt"] for c in PAIRS for r in parquet_rows(synthetic_build["out"], c)}
    diffs = [p["pt"] - counter.prompt(prompts[(data["configs"][p["k"]], p["id"])]) for p in data["pairs"]]
    assert max(abs(d) for d in diffs) <= 8, Counter(diffs)


def test_flags_of_reply_pairs():
    assert reply_flags("response_pairs", "How are you today?", "how are you, today") == {"identical"}
    assert reply_flags("response_pairs", "I am so sorry you went through that.",
                       "I am so sorry you went through this.") == {"near-identical"}
    assert reply_flags("response_pairs", "That sounds hard.", "[Question] Why?") == {"leftover tag"}
    assert reply_flags("response_pairs", "That sounds hard.", "  ") == {"empty reply"}
    assert reply_flags("joint_pairs", "[Question] Why?", "Maybe rest.") == {"untagged reply"}
    assert reply_flags("joint_pairs", "[Question] Why?", "[Others] Hi [Question] ok?") == {"leftover tag"}
    assert reply_flags("joint_pairs", "[Question] Why now?", "[Others] Thanks for telling me.") == set()
    assert reply_flags("strategy_pairs", "Question", "Question") == set()


def test_stratified_sample_gives_each_stratum_its_share():
    rows = ([{"_config": "response_pairs", "strategy": "Question", "judge": {"retained": True},
              "judge_status": "judged", "i": i} for i in range(60)]
            + [{"_config": "response_pairs", "strategy": "Others", "judge": None, "judge_status": "failed:timeout",
                "i": 60 + i} for i in range(30)]
            + [{"_config": "joint_pairs", "strategy": "Question", "judge": {"retained": False},
                "judge_status": "judged", "i": 90 + i} for i in range(10)])
    picked = stratified_sample(rows, 10, seed=3)
    # shares of 10: 60% -> 6, 30% -> 3, 10% -> 1
    assert Counter((r["_config"], r["strategy"]) for r in picked) == {("response_pairs", "Question"): 6,
                                                                      ("response_pairs", "Others"): 3,
                                                                      ("joint_pairs", "Question"): 1}
    assert [r["i"] for r in picked] == sorted(r["i"] for r in picked)
    assert stratified_sample(rows, 10, seed=3) == picked
    assert stratified_sample(rows, 10, seed=4) != picked
    # 7 of 100: quotas 4.2, 2.1, 0.7 -> 4, 2, 0 and the one left goes to the largest remainder (0.7)
    assert Counter(r["_config"] for r in stratified_sample(rows, 7)) == {"response_pairs": 6, "joint_pairs": 1}


def test_sample_and_annotate_pages(synthetic_build, tmp_path):
    build = synthetic_build["out"]
    total = sum(len(parquet_rows(build, c)) for c in PAIRS)
    result = CliRunner().invoke(app, ["view", str(build), "-o", str(tmp_path / "sample.html"), "--sample", "20"])
    assert result.exit_code == 0, result.output
    assert f"20 of the build's {total} pairs" in plain(result.output)
    html = (tmp_path / "sample.html").read_text(encoding="utf-8")
    data = page_data(html)
    assert len(data["pairs"]) == 20
    assert data["sample"] == {"n": 20, "of": total, "seed": 0, "annotate": False}
    assert '<body data-mode="browse">' in html
    # the blind order is fixed per pair by a hash of its config and id: about half shown rejected-first
    assert 4 <= sum(p["ab"] for p in data["pairs"]) <= 16

    # an annotation page: response and joint pairs only, one per dialogue (else a pair's gold shows elsewhere)
    result = CliRunner().invoke(app, ["view", str(build), "-o", str(tmp_path / "blind.html"), "--annotate"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "blind.html").read_text(encoding="utf-8")
    data = page_data(html)
    dialogues = {r["dialog_id"] for r in parquet_rows(build, "response_pairs")}
    assert sorted(p["d"] for p in data["pairs"]) == sorted(dialogues)
    assert {data["configs"][p["k"]] for p in data["pairs"]} == {"response_pairs", "joint_pairs"}
    assert '<body data-mode="annotate">' in html and data["sample"]["annotate"] is True
    result = CliRunner().invoke(app, ["view", str(build), "-o", str(tmp_path / "five.html"), "--annotate",
                                      "--sample", "5"])
    data = page_data((tmp_path / "five.html").read_text(encoding="utf-8"))
    assert len(data["pairs"]) == 5 and len({p["d"] for p in data["pairs"]}) == 5


def test_dialogues_are_rebuilt_whole_from_trimmed_prompts(synthetic_build, trimmed):
    data, strings = trimmed["data"], trimmed["data"]["strings"]
    # the untrimmed build's joint prompts are the truth: the history before each turn, tagged
    truth = {(r["dialog_id"], r["turn_index"]): [m["content"] for m in r["prompt"][1:]]
             for r in parquet_rows(synthetic_build["out"], "joint_pairs")}

    def tagged(message: list) -> str:
        speaker, text, strategy = message
        return f"[{data['strategies'][strategy]}] {strings[text]}" if speaker == 1 else strings[text]

    checked = 0
    for p in data["pairs"]:
        history = [tagged(m) for m in data["dialogues"][str(p["d"])][:p["at"]]]
        assert history == truth[(p["d"], p["t"])], p["id"]
        checked += 1
    assert checked == sum(len(parquet_rows(trimmed["out"], c)) for c in PAIRS)
    # dialogues that open with the supporter (the conversion's "Hi" first), and with two supporter turns in a row
    first = [d for d in SUPPORTER_FIRST if str(d) in data["dialogues"]]
    assert first
    for d in first:
        assert [tagged(m) for m in data["dialogues"][str(d)][:2]] == ["Hi", "[Others] Hello, of course. I am here."]
    twice = [d for d in TWO_IN_A_ROW if str(d) in data["dialogues"]]
    assert twice
    for d in twice:
        two = [tagged(m) for m in data["dialogues"][str(d)]]
        at = two.index("[Information] Talking it through often makes the next step clearer.")
        assert two[at - 1] == " " and two[at - 2].startswith("[")


def test_the_trimmed_flag_marks_exactly_the_shortened_prompts(synthetic_build, trimmed):
    data = trimmed["data"]
    bit = 1 << [f["name"] for f in data["flags"]].index("prompt trimmed")
    sizes = {}
    for config in PAIRS:
        sft = config.replace("_pairs", "_sft")  # the untrimmed build's prompt of every turn
        full = {(r["dialog_id"], r["turn_index"]): r["prompt"] for r in parquet_rows(synthetic_build["out"], sft)}
        short = {r["id"]: r["prompt"] for r in parquet_rows(trimmed["out"], config)}
        mine = [p for p in data["pairs"] if data["configs"][p["k"]] == config]
        shortened = {p["id"] for p in mine if short[p["id"]] != full[(p["d"], p["t"])]}
        flagged = {p["id"] for p in mine if p["f"] & bit}
        assert flagged == shortened, config
        sizes[config] = (len(shortened), len(mine))
    assert sum(n for n, _ in sizes.values()) > 0 and any(n < of for n, of in sizes.values()), sizes
    counts = {f["name"]: f["count"] for f in data["flags"]}
    assert counts["prompt trimmed"] == sum(1 for p in data["pairs"] if p["f"] & bit)


@pytest.mark.parametrize(("args", "code", "words"), [
    (["-o", "{build}/view.html"], 2, "-o view.html: inside the build directory ipm_prefdial/"),
    (["-o", "{tmp}"], 2, "a directory; name the HTML file to write"),
    (["-o", "{tmp}/no/such/view.html", ], 2, "no/such/view.html: its folder does not exist"),
    (["--sample", "0", "-o", "{tmp}/v.html"], 2, "--sample must be at least 1, not 0"),
    (["--tokenizer", "{tmp}/no-tokenizer", "-o", "{tmp}/v.html"], 2, "no-tokenizer: cannot count tokens with it"),
])
def test_bad_options_are_named(synthetic_build, tmp_path, args, code, words):
    args = [a.format(build=synthetic_build["out"], tmp=tmp_path) for a in args]
    result = CliRunner().invoke(app, ["view", str(synthetic_build["out"]), *args])
    assert result.exit_code == code and words in plain(result.output) and "Traceback" not in result.output
    assert sorted(p.name for p in synthetic_build["out"].iterdir()) == ["README.md", "data", "manifest.json"]


def test_a_directory_that_is_not_a_build(tmp_path):
    (tmp_path / "notes").mkdir()
    result = CliRunner().invoke(app, ["view", str(tmp_path / "notes"), "-o", str(tmp_path / "v.html")])
    assert result.exit_code == 1 and "manifest.json: not found in notes/" in plain(result.output)
    assert not (tmp_path / "v.html").exists()


def test_prompt_lengths_without_a_tokenizer_are_characters_over_four(synthetic_build, tmp_path):
    out = tmp_path / "v.html"
    result = CliRunner().invoke(app, ["view", str(synthetic_build["out"]), "-o", str(out), "--tokenizer", "none"])
    assert result.exit_code == 0, result.output
    data = page_data(out.read_text(encoding="utf-8"))
    assert data["tokens"]["unit"] == "characters / 4" and data["tokens"]["tokenizer"] is None
    prompts = {(c, r["id"]): r["prompt"] for c in PAIRS for r in parquet_rows(synthetic_build["out"], c)}
    for p in data["pairs"][:20]:
        chars = sum(len(m["content"]) for m in prompts[(data["configs"][p["k"]], p["id"])])
        assert p["pt"] == round(chars / 4)
