"""The page of `ipm view` in a real headless Chromium (Debian's chromium, driven by Playwright through
``executable_path``): no request leaves the page, no console error, filters and chart bars show the counts Python
computes from the parquet files, markup in replies stays text, and a scripted blind annotation session exported
through the download button gives `ipm agreement` the kappas worked out by hand below.

`make test-browser` installs Chromium (apt, as root) and Playwright; elsewhere these tests skip with the reason, and
with CI=true a skip is a failure (conftest.py). The screenshots land in ``test-output/`` (or $IPM_TEST_OUTPUT)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.synthetic import IMG_SEEKER, SCRIPT_REPLY
from helpers.view import parquet_rows
from ipm_prefdial.cli import app

pytestmark = pytest.mark.browser

OUTPUT = Path(os.environ.get("IPM_TEST_OUTPUT", Path(__file__).resolve().parents[1] / "test-output"))
PAIRS = ("strategy_pairs", "response_pairs", "joint_pairs")


class Watch:
    """A page with every request outside the file and every console error or page error recorded."""

    def __init__(self, browser, url: str):
        self.context = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: None if r.url.startswith(("file:", "blob:", "data:")) else
                     self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.goto(url)

    def goto(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready=true]", timeout=30_000)

    def count(self) -> int:
        return int(self.page.get_attribute("#count", "data-count"))

    def close(self) -> None:
        assert self.requests == [], self.requests
        assert self.errors == [], self.errors
        self.context.close()


def expected_counts(build: Path) -> dict:
    """What each filter must show, computed here from the parquet files (not from the page)."""
    rows = [dict(r, config=c) for c in PAIRS for r in parquet_rows(build, c)]

    def words(text: str) -> int:
        return len(re.findall(r"\w+", re.sub(r"^\s*\[[^\]]*\]", "", text)))

    def has(row: dict, needle: str) -> bool:
        judge = row["judge"] or {}
        texts = [row["id"], row["chosen"][0]["content"], row["rejected"][0]["content"],
                 judge.get("chosen_explanation") or "", judge.get("rejected_explanation") or ""]
        return any(needle in t.lower() for t in texts)

    return {
        "all": len(rows),
        "config=response_pairs": sum(r["config"] == "response_pairs" for r in rows),
        "config=joint_pairs_retained": len(parquet_rows(build, "joint_pairs_retained")),
        "split=validation": sum(r["split"] == "validation" for r in rows),
        "strategy=Question": sum(r["strategy"] == "Question" for r in rows),
        "pred=Others": sum(r["rejected_strategy"] == "Others" for r in rows),
        "status=judged": sum(r["judge_status"] == "judged" for r in rows),
        "error=rejected:Lack Empathy": sum(bool(r["judge"]) and r["judge"]["rejected_error"] == "Lack Empathy"
                                           for r in rows),
        "flag=gold judged an error": sum(bool(r["judge"]) and r["judge"]["chosen_error"] is not None for r in rows),
        "rlen=rejected:1": sum(r["config"] != "strategy_pairs" and 5 <= words(r["rejected"][0]["content"]) < 10
                               for r in rows),
        "rlen=chosen:0": sum(r["config"] != "strategy_pairs" and words(r["chosen"][0]["content"]) < 5 for r in rows),
        "retained/Question": sum(r["strategy"] == "Question" for r in parquet_rows(build, "joint_pairs_retained")),
        "q=walk": sum(has(r, "walk") for r in rows),
        "bar:response_pairs/Question": sum(r["config"] == "response_pairs" and r["strategy"] == "Question"
                                           for r in rows),
        # the most frequent cell of the SP confusion (gold, predicted) and its count
        "cell": Counter((r["strategy"], r["rejected_strategy"]) for r in rows
                        if r["config"] == "strategy_pairs").most_common(1)[0],
    }


def test_filters_and_chart_bars_show_the_counts_python_computed(browser, pages, synthetic_build):
    expected = expected_counts(synthetic_build["out"])
    assert min(v for k, v in expected.items() if k != "cell") > 0, expected  # every case below selects something
    (gold, predicted), cell_count = expected["cell"]
    watch = Watch(browser, pages["browse"].as_uri())
    page = watch.page
    assert watch.count() == expected["all"]
    for key in ("config=response_pairs", "config=joint_pairs_retained", "split=validation", "strategy=Question",
                "pred=Others", "status=judged", "error=rejected:Lack Empathy", "flag=gold judged an error",
                "rlen=rejected:1", "rlen=chosen:0"):
        name, value = key.split("=", 1)
        page.select_option(f"#f-{name}", value)
        assert watch.count() == expected[key], key
        assert f"{name}=" in page.evaluate("location.hash"), key  # kept in the URL
        page.select_option(f"#f-{name}", "")
        assert watch.count() == expected["all"]
    # a strategy bar under a retained config keeps that config
    page.select_option("#f-config", "joint_pairs_retained")
    page.click('#chart-strategy rect[data-filter=\'{"strategy":"Question","config":"joint_pairs_retained"}\']')
    assert watch.count() == expected["retained/Question"]
    page.click("#clear")
    page.fill("#f-q", "walk")
    assert watch.count() == expected["q=walk"]
    page.click("#clear")
    # a bar of the strategy chart and a cell of the SP confusion filter the table
    bar = page.locator('#chart-strategy rect[data-filter=\'{"strategy":"Question","config":"response_pairs"}\']')
    assert int(bar.get_attribute("data-count")) == expected["bar:response_pairs/Question"]
    bar.click()
    assert watch.count() == expected["bar:response_pairs/Question"]
    page.click("#clear")
    cell = page.locator(f'#chart-confusion rect[data-filter=\'{{"config":"strategy_pairs","strategy":"{gold}",'
                        f'"pred":"{predicted}"}}\']')
    assert int(cell.get_attribute("data-count")) == cell_count
    cell.click()
    assert watch.count() == cell_count
    # the URL opens the same view, and j opens the first pair of it
    url = page.url
    watch.goto(pages["browse"].as_uri() + "#")
    watch.goto(url)
    assert watch.count() == cell_count
    page.keyboard.press("j")
    assert page.get_attribute("#pair", "data-key").startswith("strategy_pairs/")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "view-confusion.png"), full_page=True)
    watch.close()


def test_markup_in_replies_is_shown_as_text(browser, pages, synthetic_build):
    rows = parquet_rows(synthetic_build["out"], "response_pairs")
    pair = next(r for r in rows if r["chosen"][0]["content"] == SCRIPT_REPLY)
    # the pairs of the validation split (a short table: the picture in the README) with this pair open
    watch = Watch(browser, pages["browse"].as_uri() + f"#config=response_pairs&split={pair['split']}"
                  f"&pair=response_pairs/{pair['id']}")
    page = watch.page
    assert page.inner_text("#chosen-text") == SCRIPT_REPLY
    assert IMG_SEEKER in page.inner_text("#pair .chat")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0 and page.locator("script").count() == 2
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "view.png"), full_page=True)
    page.click('#tabs button[data-tab="overview"]')
    assert "IPM-PrefDial" in page.inner_text("#overview") and "fake-llm" in page.inner_text("#overview")
    watch.close()


# Two annotators label the replies of the first 10 pairs of the blind queue (labels of the chosen, rejected reply).
# alice: chosen None x10; rejected Lack Empathy x4, Early Emotion Shift x3, Template Response x3
# bob:   the same, except chosen Lack Empathy on pairs 1 and 2, rejected None on pair 10.
# Per reply (20 items), alice rows x bob columns: None->None 8, None->LE 2, LE->LE 4, EES->EES 3, TR->TR 2, TR->None 1
#   p_o = 17/20 = 0.85; marginals alice None 10, LE 4, EES 3, TR 3; bob None 9, LE 6, EES 3, TR 2
#   p_e = (10*9 + 4*6 + 3*3 + 3*2) / 400 = 129/400 = 0.3225; kappa_4 = 0.5275 / 0.6775 = 211/271 = 0.7785977...
# Error vs none: (no,no) 8, (no,err) 2, (err,err) 9, (err,no) 1: p_o 0.85, p_e (10*9 + 10*11)/400 = 0.5 -> 0.7
# Retained: alice 10 of 10, bob 7 of 10: p_o 0.7, p_e (10*7 + 0*3)/100 = 0.7 -> kappa 0.0
# Preference: alice prefers gold on 7, the other reply on 2, a tie on 1: share 7/9
ALICE = [("None", r) for r in ["Lack Empathy"] * 4 + ["Early Emotion Shift"] * 3 + ["Template Response"] * 3]
BOB = [("Lack Empathy", ALICE[0][1]), ("Lack Empathy", ALICE[1][1]), *ALICE[2:9], ("None", "None")]
ALICE_PREFERENCE = ["chosen"] * 7 + ["rejected"] * 2 + ["tie"]


def annotate(browser, url: str, name: str, labels: list[tuple[str, str]], preferences: list[str],
             gold: dict[str, str], target: Path) -> None:
    watch = Watch(browser, url)
    page = watch.page
    assert page.locator("#pairs").is_hidden() and page.locator('#tabs button[data-tab="pairs"]').is_hidden()
    # no answer before a name: the labels are disabled and the page says why
    assert page.locator('#reply-A input[value="None"]').is_disabled() and page.locator("#name-first").is_visible()
    page.fill("#annotator", name)
    page.press("#annotator", "Tab")
    seen = []
    for i, (chosen_label, rejected_label) in enumerate(labels):
        key = page.get_attribute("#annotate-pair", "data-key")
        seen.append(key)
        letter = "A" if page.inner_text("#reply-A .text") == gold[key] else "B"
        other = "B" if letter == "A" else "A"
        assert page.inner_text(f"#reply-{other} .text") != gold[key]
        # blind: no gold, judge or strategy marks in the pair shown
        assert not re.search(r"gold|judge|retained|chosen", page.inner_text("#annotate-pair"), re.I)
        page.check(f'#reply-{letter} input[value="{chosen_label}"]')
        page.check(f'#reply-{other} input[value="{rejected_label}"]')
        if preferences:
            value = {"chosen": letter, "rejected": other, "tie": "tie"}[preferences[i]]
            page.check(f'#preference input[value="{value}"]')
        page.click("#next-pair")
    assert page.inner_text("#progress-text").startswith(f"{len(labels)} of ")
    # one pair per dialogue (a second pair of a dialogue would show this one's gold), never a strategy pair
    dialogues = [key.split("/")[1].split("-")[0] for key in seen]
    assert len(set(dialogues)) == len(seen) and not any(k.startswith("strategy_pairs/") for k in seen)
    with page.expect_download() as download:
        page.click("#export")
    download.value.save_as(str(target))
    watch.close()


def test_a_blind_annotation_session_gives_the_kappa_worked_out_by_hand(browser, pages, synthetic_build, tmp_path):
    build = synthetic_build["out"]
    gold = {f"{c}/{r['id']}": r["chosen"][0]["content"] for c in PAIRS for r in parquet_rows(build, c)}
    url = pages["annotate"].as_uri()
    annotate(browser, url, "alice", ALICE, ALICE_PREFERENCE, gold, tmp_path / "alice.jsonl")
    annotate(browser, url, "bob", BOB, [], gold, tmp_path / "bob.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "alice.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and {line["annotator"] for line in lines} == {"alice"}
    assert Counter(line["preference"] for line in lines) == {"chosen": 7, "rejected": 2, "tie": 1}
    assert set(lines[0]) == {"id", "config", "labels", "preference", "annotator", "time", "order", "pair_sha256"}
    replies = {f"{c}/{r['id']}": f"{r['chosen'][0]['content']}\0{r['rejected'][0]['content']}"
               for c in PAIRS for r in parquet_rows(build, c)}
    for line in lines:  # the digest of the two replies annotated: sha256 of chosen, NUL, rejected; 16 hex digits
        key = f"{line['config']}/{line['id']}"
        assert line["pair_sha256"] == hashlib.sha256(replies[key].encode()).hexdigest()[:16]
    # another browser goes on from the exported file: alice's ten answers are back under her name
    watch = Watch(browser, url)
    watch.page.set_input_files("#import", str(tmp_path / "alice.jsonl"))
    # (a selector, not wait_for_function: the page's policy forbids the eval that a polled function string needs)
    watch.page.wait_for_selector("#import-note:has-text('imported')")
    assert watch.page.inner_text("#import-note") == "10 answers imported (alice)"
    assert watch.page.input_value("#annotator") == "alice"
    assert watch.page.inner_text("#progress-text").startswith("10 of ")
    watch.close()
    result = CliRunner().invoke(app, ["agreement", str(tmp_path / "alice.jsonl"), str(tmp_path / "bob.jsonl"),
                                      "--build", str(build), "--json", str(tmp_path / "agreement.json")])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "agreement.json").read_text())
    people = next(c for c in figures["comparisons"] if c["raters"] == ["alice", "bob"])
    assert people["kappa_4"]["kappa"] == pytest.approx(211 / 271) and people["kappa_4"]["n"] == 20
    assert people["kappa_error"]["kappa"] == pytest.approx(0.7)
    assert people["kappa_retained"]["kappa"] == pytest.approx(0.0) and people["kappa_retained"]["n"] == 10
    assert figures["preference"]["annotators"]["alice"]["share"] == pytest.approx(7 / 9)
    judge = next(c for c in figures["comparisons"] if c["raters"] == ["judge", "alice"])
    assert judge["kappa_4"]["n"] == 20 and judge["warning"] == "fewer than 50 pairs: kappa is unreliable"


def test_the_overview_of_an_incomplete_build_says_so_first(browser, synthetic_build, tmp_path):
    build = tmp_path / "ipm_prefdial"
    shutil.copytree(synthetic_build["out"], build)
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["complete"] = False
    manifest["incomplete"] = {"requests": 7, "transient_failures": {"server_error": 5, "timeout": 2},
                              "rerun": "ipm build --source-path corpus.json --retries 0"}
    (build / "manifest.json").write_text(json.dumps(manifest))
    assert CliRunner().invoke(app, ["view", str(build), "-o", str(tmp_path / "v.html")]).exit_code == 0
    watch = Watch(browser, (tmp_path / "v.html").as_uri() + "#tab=overview")
    assert watch.page.inner_text("#incomplete") == (
        "Incomplete build. 7 requests failed with transient errors (server_error 5, timeout 2) and have no answer. "
        "Run the same command again to complete it: ipm build --source-path corpus.json --retries 0")
    assert watch.page.locator("#pairs").is_hidden()
    watch.close()


def test_every_chart_bar_shows_the_count_its_click_gives(browser, pages):
    watch = Watch(browser, pages["browse"].as_uri())
    page = watch.page
    bars = page.eval_on_selector_all("#charts rect.bar", "rs => rs.map(r => [r.dataset.filter, r.dataset.count])")
    assert len(bars) > 100
    for filters, count in bars:
        if count == "0":
            continue
        page.click(f"#charts rect.bar[data-filter='{filters}']")
        assert watch.count() == int(count), filters
        page.click("#clear")
    watch.close()
