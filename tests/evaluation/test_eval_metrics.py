"""Strategy and reference metrics against values computed by hand (or by nltk directly) in the test."""

from __future__ import annotations

import json
import math

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from ipm_prefdial.errors import InputError
from ipm_prefdial.evaluation.evaluate import PredictionsError, evaluate, flatten, read_predictions
from ipm_prefdial.evaluation.reference import distinct, reference_metrics, rouge_l, tokenize, unigram_f1
from ipm_prefdial.evaluation.strategy import bias, preference, strategy_metrics, win_matrix
from ipm_prefdial.strategies import STRATEGIES

Q, OTH = "Question", "Others"  # indices 0 and 7
I_Q, I_OTH = STRATEGIES.index(Q), STRATEGIES.index(OTH)


def approx(x, rel=1e-9):
    return pytest.approx(x, rel=rel, abs=1e-12)


# -- preference p and bias B ------------------------------------------------------------------------------
def test_all_correct_means_no_preference():
    gold = list(STRATEGIES) * 3
    m = strategy_metrics(gold, gold, "lenient")
    assert all(v == 1.0 for v in m["preference"].values()) and m["B"] == 0.0
    assert m["Q"] == 100.0 and m["weighted_f1"] == 100.0 and m["dropped_ratio"] == 0.0


def test_asymmetric_case_by_hand():
    # Question predicted twice where Others was gold, Others once where Question was gold.
    # Round 1 (in place): p_Q = (2*1/2) / (1/2) = 2; the 6 others have no counts: unchanged;
    # p_O = (1*2/3) / (2/3) = 1. This is already the fixed point p_Q / p_O = 2 (2 wins, 1 loss), and every
    # uninvolved strategy stays at the level of p_O. Rescaled to sum 8: p_Q = 16/9, the 7 others 8/9.
    gold = [OTH, OTH, Q]
    predicted = [Q, Q, OTH]
    w = win_matrix(gold, predicted)
    assert w[I_Q][I_OTH] == 2 and w[I_OTH][I_Q] == 1
    p = preference(w)
    assert p[I_Q] == approx(16 / 9) and all(p[k] == approx(8 / 9) for k in range(8) if k != I_Q)
    assert bias(p) == approx(math.sqrt(7) / 9)  # mean 1; deviations 7/9 once, -1/9 seven times
    # The direction matters, and so does the in-place order. Transposed, round 1: p_Q = (1*1/2) / (2/2) = 1/2,
    # then p_O = (2*(1/2)/(3/2)) / (1/(3/2)) = 1: the uninvolved six stay at the winner's level this time.
    # Rescaled (sum 7.5): p_Q = 8/15, the 7 others 16/15; B = sqrt(((7/15)^2 + 7 (1/15)^2) / 8) = sqrt(7)/15.
    p_t = preference([list(col) for col in zip(*w, strict=True)])
    assert p_t[I_Q] == approx(8 / 15) and all(p_t[k] == approx(16 / 15) for k in range(8) if k != I_Q)
    assert bias(p_t) == approx(math.sqrt(7) / 15)
    m = strategy_metrics(gold, predicted, "lenient")
    assert m["preference"][Q] == approx(16 / 9) and m["B"] == approx(math.sqrt(7) / 9)


def test_a_strategy_that_never_loses():
    # Question predicted once where Others was gold; Question never lost, so its update has denominator 0 and
    # p_Q stays 1 (Kang's code divides by zero here). p_O = 0 / (1/2) = 0 and is left out of the geometric
    # mean. Rescaled: seven strategies at 8/7, Others at 0; B = sqrt(((1/7)^2 * 7 + 1) / 8) = 1/sqrt(7).
    p = preference(win_matrix([OTH], [Q]))
    assert p[I_OTH] == 0.0 and all(p[k] == approx(8 / 7) for k in range(8) if k != I_OTH)
    assert bias(p) == approx(1 / math.sqrt(7))
    assert all(math.isfinite(x) for x in p)


def test_one_strategy_beats_three_that_never_win():
    # Information predicted for 4 turns whose gold was Question (2), Restatement (1), Affirmation (1): it never
    # loses (p stays 1); the three losers never win (p = 0 in round 1, and 0/0 pairs among them are skipped).
    # The four uninvolved strategies stay at 1. Rescaled (sum 5): five strategies at 8/5, three at 0.
    gold = ["Question", "Question", "Restatement or Paraphrasing", "Affirmation and Reassurance"]
    m = strategy_metrics(gold, ["Information"] * 4, "lenient")
    losers = {"Question", "Restatement or Paraphrasing", "Affirmation and Reassurance"}
    assert all(m["preference"][s] == (0.0 if s in losers else approx(8 / 5)) for s in STRATEGIES)
    assert m["B"] == approx(math.sqrt((5 * (3 / 5) ** 2 + 3 * 1) / 8))  # deviations 3/5 (x5) and -1 (x3)


def test_no_off_diagonal_counts_and_empty_input_are_finite():
    assert preference([[0] * 8 for _ in range(8)]) == [1.0] * 8
    m = strategy_metrics([Q], [None], "lenient")  # everything dropped
    assert m["evaluated"] == 0 and m["dropped_ratio"] == 1.0 and m["B"] == 0.0 and m["Q"] == 0.0
    assert all(math.isfinite(v) for v in flatten(m).values() if isinstance(v, float))


# -- F1 and the two modes ------------------------------------------------------------------------------------
def test_macro_versus_weighted_f1():
    # F1(Question) = 2*2/(2+3) = 0.8; F1(Others) = 2*1/(2+1) = 2/3
    m = strategy_metrics([Q, Q, Q, OTH], [Q, Q, OTH, OTH], "lenient")
    assert m["per_strategy_f1"][Q] == approx(80.0) and m["per_strategy_f1"][OTH] == approx(200 / 3)
    assert m["Q"] == approx((80.0 + 200 / 3) / 2)  # macro over the strategies that occur
    assert m["weighted_f1"] == approx((80.0 * 3 + 200 / 3 * 1) / 4)  # weighted by gold support
    assert m["per_strategy_f1"]["Information"] is None


def test_lenient_drops_and_strict_maps_to_others():
    gold, predicted = [Q, OTH, Q], ["question", "Comfort them", None]  # names match case-insensitively
    lenient = strategy_metrics(gold, predicted, "lenient")
    assert lenient["evaluated"] == 1 and lenient["dropped"] == 2 and lenient["dropped_ratio"] == approx(2 / 3)
    assert lenient["Q"] == 100.0
    strict = strategy_metrics(gold, predicted, "strict")  # -> [Question, Others, Others]
    assert strict["evaluated"] == 3 and strict["dropped_ratio"] == 0.0
    assert strict["per_strategy_f1"][Q] == approx(200 / 3) and strict["per_strategy_f1"][OTH] == approx(200 / 3)
    assert strict["Q"] == approx(200 / 3)
    assert strategy_metrics([Q], ["Reflection of Feelings"], "lenient")["evaluated"] == 1  # Kang's spelling


# -- reference metrics ------------------------------------------------------------------------------------------
def test_tokenizer_is_offline_treebank_lowercase():
    assert tokenize("I'm fine, Thanks.") == ["i", "'m", "fine", ",", "thanks", "."]


def test_tokenizer_splits_sentences_first_like_word_tokenize():
    """A sentence-final period inside a reply is its own token, as nltk.word_tokenize makes it (sentences first,
    then Treebank words); the Treebank tokenizer alone leaves "understand." whole."""
    assert tokenize("I understand. You are sad.") == ["i", "understand", ".", "you", "are", "sad", "."]
    assert tokenize("Really? Tell me more! I'm here.") == ["really", "?", "tell", "me", "more", "!", "i", "'m",
                                                            "here", "."]
    assert tokenize("") == [] and tokenize(None) == []


def test_distinct_by_hand():
    tokens = "i am ok i am".split()
    assert distinct(tokens, 1) == 3 / 5  # i, am, ok
    assert distinct(tokens, 2) == 3 / 4  # (i am) twice
    assert distinct(tokens, 3) == 1.0
    assert distinct([], 2) == 0.0


def test_rouge_l_beta_and_f1_by_hand():
    hyp, ref = "the cat sat".split(), "the cat sat on the mat".split()
    # LCS 3: P = 1, R = 1/2; F = (1 + 1.2^2) P R / (R + 1.2^2 P)
    assert rouge_l(hyp, ref) == approx(2.44 * 0.5 / (0.5 + 1.44))
    assert rouge_l(ref, hyp) == approx(2.44 * 0.5 / (1 + 1.44 * 0.5))  # not symmetric: beta weighs recall
    assert unigram_f1(hyp, ref) == approx(2 / 3)  # overlap 3: P = 1, R = 1/2
    assert rouge_l([], ref) == 0.0 and unigram_f1(hyp, []) == 0.0


def test_reference_metrics_against_nltk_and_by_hand():
    preds = ["the cat sat on the mat", "a dog barked loudly at the cat", ""]
    refs = ["the cat is on the mat", "the dog barked at a cat", "hello there"]
    got = reference_metrics(preds, refs)
    smooth = SmoothingFunction().method3
    for k in (1, 2, 3, 4):
        expected = sum(sentence_bleu([r.split()], p.split(), weights=(1 / k,) * k, smoothing_function=smooth)
                       if p else 0.0 for p, r in zip(preds, refs, strict=True)) / 3
        assert got[f"bleu-{k}"] == approx(100 * expected)
    assert got["dist-1"] == approx(100 * (5 / 6 + 7 / 7 + 0) / 3)  # "the" twice in the first
    assert got["corpus-dist-1"] == approx(100 * 10 / 13)  # the cat sat on mat a dog barked loudly at
    assert got["length"] == approx(13 / 3)
    # first pair: LCS "the cat on the mat" = 5 of 6 and 6 -> P = R = 5/6
    second = rouge_l(preds[1].split(), refs[1].split())
    assert got["rouge-l"] == approx(100 * (5 / 6 + second + 0) / 3)


# -- reading predictions ------------------------------------------------------------------------------------------
def line(**kw):
    row = {"id": "1-1", "dialog_id": 1, "turn_index": 1, "strategy": Q, "predicted_strategy": Q,
           "response": "How are you?", "predicted_response": "How do you feel?"}
    row.update(kw)
    return json.dumps(row)


def test_predictions_file_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(line() + "\n" + line(id="1-2", strategy="Hugging") + "\n")
    with pytest.raises(PredictionsError, match=r"p.jsonl:2 \(id '1-2'\): field strategy 'Hugging'"):
        read_predictions(path)
    path.write_text(line() + "\n{broken\n")
    with pytest.raises(PredictionsError, match=r"p.jsonl:2: not valid JSON"):
        read_predictions(path)
    bad = json.loads(line())
    del bad["predicted_response"]
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(PredictionsError, match="missing field.*predicted_response"):
        read_predictions(path)
    path.write_text(line() + "\n" + line() + "\n")
    with pytest.raises(PredictionsError, match="repeats line 1"):
        read_predictions(path)


def test_evaluate_has_the_documented_keys(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join([line(), line(id="1-3", strategy=OTH, predicted_strategy="nonsense",
                                            predicted_response=None)]) + "\n")
    flat = flatten(evaluate(read_predictions(path)))
    for mode in ("lenient", "strict"):
        for key in ("Q", "weighted_f1", "B", "dropped_ratio"):
            assert math.isfinite(flat[f"strategy.{mode}.{key}"])
        assert all(f"strategy.{mode}.preference.{s}" in flat for s in STRATEGIES)
    for key in ("bleu-1", "bleu-2", "bleu-3", "bleu-4", "dist-1", "dist-2", "dist-3", "rouge-l", "f1", "length"):
        assert math.isfinite(flat[f"reference.{key}"])
    assert flat["strategy.lenient.dropped_ratio"] == 0.5


KANG = {"Reflection of feelings": "Reflection of Feelings", "Question": "Questions", "Others": "Other",
        "Restatement or Paraphrasing": "Restatement", "Affirmation and Reassurance": "Approval and Reassurance"}


def test_gold_labels_in_other_spellings_give_the_same_figures(tmp_path):
    """Kang et al. write "Reflection of Feelings"; other corpora use the synonyms of the source loader. Gold and
    predicted labels are both matched case-insensitively and through the synonym table."""
    gold = [Q, Q, OTH, "Reflection of feelings", "Restatement or Paraphrasing", "Affirmation and Reassurance",
            "Reflection of feelings", "Information"]
    pred = [Q, OTH, OTH, "Reflection of feelings", Q, "Affirmation and Reassurance", "Information", "nonsense"]
    ours, theirs = tmp_path / "esconv.jsonl", tmp_path / "kang.jsonl"
    ours.write_text("".join(line(id=f"1-{i}", strategy=g, predicted_strategy=p) + "\n"
                            for i, (g, p) in enumerate(zip(gold, pred, strict=True))))
    theirs.write_text("".join(line(id=f"1-{i}", strategy=KANG.get(g, g), predicted_strategy=KANG.get(p, p)) + "\n"
                              for i, (g, p) in enumerate(zip(gold, pred, strict=True))))
    a, b = evaluate(read_predictions(ours)), evaluate(read_predictions(theirs))
    assert a == b
    assert a["strategy"]["lenient"]["evaluated"] == 7 and a["strategy"]["lenient"]["accuracy"] == approx(400 / 7)
    rows = read_predictions(theirs)
    assert rows[3]["strategy"] == "Reflection of feelings" and rows[0]["strategy"] == Q  # read as ESConv names


# -- other taxonomies: ExTES's sixteen strategies --------------------------------------------------------------------
EXTES_LABELS = ["Reflective Statements", "Clarification", "Emotional Validation", "Empathetic Statements",
                "Affirmation", "Offer Hope", "Avoid Judgment And Criticism", "Suggest Options",
                "Collaborative Planning", "Provide Different Perspectives", "Reframe Negative Thoughts",
                "Share Information", "Normalize Experiences", "Promote Self-Care Practices", "Stress Management",
                "Others"]
CL, EV, ES, AF, SO, SI = ("Clarification", "Emotional Validation", "Empathetic Statements", "Affirmation",
                          "Suggest Options", "Share Information")
# 12 turns over 6 of the 16 labels: four mistakes (EV->CL twice, CL->EV once, SI->SO once), eight right answers
EXTES_GOLD = [EV, EV, CL, SI, CL, CL, EV, ES, ES, AF, SO, SI]
EXTES_PRED = [CL, CL, EV, SO, CL, CL, EV, ES, ES, AF, SO, SI]


def test_extes_metrics_by_hand():
    from ipm_prefdial.taxonomy import builtin

    extes = builtin("extes")
    assert list(extes.names) == EXTES_LABELS
    m = strategy_metrics(EXTES_GOLD, EXTES_PRED, "lenient", extes)
    # 8 of 12 right
    assert m["accuracy"] == approx(100 * 8 / 12) and m["evaluated"] == 12 and m["dropped"] == 0
    # F1 = 2 TP / (predicted + gold):  CL 2*2/(4+3) = 4/7;  EV 2*1/(2+3) = 2/5;  ES 2*2/(2+2) = 1;  AF 2*1/(1+1) = 1;
    #                                 SO 2*1/(2+1) = 2/3;  SI 2*1/(1+2) = 2/3;  the 10 unused labels: None
    f1 = m["per_strategy_f1"]
    assert list(f1) == EXTES_LABELS
    assert f1[CL] == approx(400 / 7) and f1[EV] == approx(40.0) and f1[ES] == 100.0 and f1[AF] == 100.0
    assert f1[SO] == approx(200 / 3) and f1[SI] == approx(200 / 3)
    assert [s for s, v in f1.items() if v is None] == [s for s in EXTES_LABELS if s not in {CL, EV, ES, AF, SO, SI}]
    # macro over the 6 present: (60 + 42 + 105 + 105 + 70 + 70) / 105 / 6 = 452 / 630 = 226 / 315
    assert m["Q"] == approx(100 * 226 / 315)
    # weighted by gold support (CL 3, EV 3, ES 2, AF 1, SO 1, SI 2):
    # (4/7*3 + 2/5*3 + 1*2 + 1*1 + 2/3*1 + 2/3*2) / 12 = (12/7 + 6/5 + 5) / 12 = (277/35) / 12 = 277/420
    assert m["weighted_f1"] == approx(100 * 277 / 420)
    # W[predicted][gold] off the diagonal: W[CL][EV] = 2, W[EV][CL] = 1, W[SO][SI] = 1 (indices 1, 2, 7, 11)
    w = win_matrix(EXTES_GOLD, EXTES_PRED, EXTES_LABELS)
    assert len(w) == 16 and all(len(row) == 16 for row in w)
    assert w[1][2] == 2 and w[2][1] == 1 and w[7][11] == 1
    assert w[1][1] == 2 and w[2][2] == 1 and w[3][3] == 2 and w[4][4] == 1 and w[7][7] == 1 and w[11][11] == 1
    assert sum(map(sum, w)) == 12
    # Round 1 (in place): p_CL = (2 * 1/2) / (1/2) = 2; p_EV = (1 * 2/3) / (2/3) = 1 (fixed point p_CL = 2 p_EV);
    # SO never lost: denominator 0, stays 1; SI never won: p_SI = 0 / (1/2) = 0 and stays 0. Every other label has
    # no games and stays at 1. Rescaled to sum 16: p_CL = 2, p_SI = 0, the 14 others 1.
    p = m["preference"]
    assert list(p) == EXTES_LABELS
    assert p[CL] == approx(2.0) and p[SI] == 0.0 and all(p[s] == approx(1.0) for s in EXTES_LABELS if s not in {CL, SI})
    # B: mean 1, deviations +1 (CL), -1 (SI), 0 (14 times): sqrt(2 / 16) = sqrt(2) / 4
    assert m["B"] == approx(math.sqrt(2) / 4)
    assert strategy_metrics(EXTES_GOLD, EXTES_PRED, "strict", extes) == m  # nothing to map


def test_extes_predictions_outside_the_taxonomy_in_both_modes():
    from ipm_prefdial.taxonomy import builtin

    extes = builtin("extes")
    # "Question" is ESConv's, not ExTES's; None is no answer. Lenient drops both turns.
    gold, predicted = [CL, EV, SI], ["clarification", "Question", None]
    lenient = strategy_metrics(gold, predicted, "lenient", extes)
    assert lenient["evaluated"] == 1 and lenient["dropped"] == 2 and lenient["dropped_ratio"] == approx(2 / 3)
    assert lenient["accuracy"] == 100.0 and lenient["Q"] == 100.0 and lenient["B"] == 0.0
    # Strict maps both to ExTES's "Others": pairs (CL, CL), (EV, Others), (SI, Others); 1 of 3 right.
    strict = strategy_metrics(gold, predicted, "strict", extes)
    assert strict["evaluated"] == 3 and strict["accuracy"] == approx(100 / 3)
    # F1: CL 2/(1+1) = 1; EV 0; SI 0; Others 0/(2+0) = 0 -> Q = (1+0+0+0)/4 = 25; weighted (1*1 + 0 + 0)/3 = 1/3
    assert strict["per_strategy_f1"]["Others"] == 0.0 and strict["Q"] == approx(25.0)
    assert strict["weighted_f1"] == approx(100 / 3)
    # W[Others][EV] = W[Others][SI] = 1: Others never lost (stays 1), EV and SI never won (0). Rescaled to sum 16:
    # 14 labels at 16/14 = 8/7, EV and SI at 0. B: mean 1; deviations 1/7 (x14), -1 (x2):
    # sqrt((14/49 + 2) / 16) = sqrt((16/7) / 16) = 1/sqrt(7)
    p = strict["preference"]
    assert p[EV] == 0.0 and p[SI] == 0.0 and p["Others"] == approx(8 / 7) and p[CL] == approx(8 / 7)
    assert strict["B"] == approx(1 / math.sqrt(7))


def test_strict_without_an_others_label_credits_no_strategy():
    from ipm_prefdial.taxonomy import builtin

    esc_pro = builtin("esc-pro")
    assert esc_pro.canonical("Others") is None
    m = strategy_metrics(["Emotional Validation", "Affirmation"], ["Emotional Validation", "nonsense"], "strict",
                         esc_pro)
    # kept and wrong: accuracy 1/2; F1 EV 2/(1+1) = 1, Affirmation 0/(0+1) = 0 -> Q 50; no game in W: B = 0
    assert m["evaluated"] == 2 and m["accuracy"] == 50.0 and m["Q"] == 50.0 and m["weighted_f1"] == 50.0
    assert "Others" not in m["preference"] and len(m["preference"]) == 8 and m["B"] == 0.0


def test_an_extes_label_is_not_an_esconv_strategy(tmp_path):
    with pytest.raises(InputError, match="'Clarification' is not one of the 8 strategies of the esconv taxonomy"):
        strategy_metrics([CL], [Q], "lenient")  # ESConv by default
    dropped = strategy_metrics([Q], [CL], "lenient")  # as a prediction: outside the taxonomy
    assert dropped["dropped"] == 1 and strategy_metrics([Q], [CL], "strict")["per_strategy_f1"][OTH] == 0.0
    path = tmp_path / "p.jsonl"
    path.write_text(line() + "\n" + line(id="1-2", strategy=CL) + "\n")  # no taxonomy recorded: ESConv's
    with pytest.raises(PredictionsError, match=r"p.jsonl:2 \(id '1-2'\): field strategy 'Clarification' is not one "
                                               r"of the 8 strategies of the esconv taxonomy"):
        read_predictions(path)


def test_predictions_score_with_the_taxonomy_they_record(tmp_path):
    from ipm_prefdial.taxonomy import builtin

    rows = [line(id=f"1-{i}", strategy=g, predicted_strategy=p, taxonomy="extes")
            for i, (g, p) in enumerate(zip(EXTES_GOLD, EXTES_PRED, strict=True))]
    path = tmp_path / "extes.jsonl"
    path.write_text("\n".join(rows) + "\n")
    result = evaluate(read_predictions(path))
    assert result["taxonomy"] == "extes"
    assert result["strategy"]["lenient"]["Q"] == approx(100 * 226 / 315)  # as in test_extes_metrics_by_hand
    assert list(result["strategy"]["lenient"]["preference"]) == EXTES_LABELS
    # the same file without the record, scored with the taxonomy given (ipm eval --taxonomy extes)
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({k: v for k, v in json.loads(r).items() if k != "taxonomy"}) + "\n"
                            for r in rows))
    with pytest.raises(PredictionsError, match="esconv taxonomy"):
        read_predictions(bare)
    assert evaluate(read_predictions(bare, builtin("extes")), builtin("extes")) == result
    # a taxonomy of one's own is recorded whole
    mine = {"name": "mine", "labels": [{"name": "Ask", "definition": "ask."}, {"name": "Tell", "definition": "tell."}]}
    own = tmp_path / "own.jsonl"
    own.write_text(line(strategy="ask", predicted_strategy="Tell", taxonomy=mine) + "\n")
    result = evaluate(read_predictions(own))
    assert result["taxonomy"] == "mine" and result["strategy"]["lenient"]["accuracy"] == 0.0
    assert list(result["strategy"]["strict"]["preference"]) == ["Ask", "Tell"]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(rows[0] + "\n" + line(id="2-1") + "\n")
    with pytest.raises(PredictionsError, match=r"mixed.jsonl:2 \(id '2-1'\): field taxonomy differs from line 1's"):
        read_predictions(mixed)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(line(taxonomy="nope") + "\n")
    with pytest.raises(PredictionsError, match="field taxonomy 'nope' is not a built-in taxonomy.*--taxonomy"):
        read_predictions(unknown)


def test_eval_command_takes_a_taxonomy_and_reports_its_labels(tmp_path):
    from typer.testing import CliRunner

    from ipm_prefdial.cli import app

    path = tmp_path / "extes.jsonl"
    path.write_text("".join(line(id=f"1-{i}", strategy=g, predicted_strategy=p) + "\n"
                            for i, (g, p) in enumerate(zip(EXTES_GOLD, EXTES_PRED, strict=True))))
    out, report = tmp_path / "m.json", tmp_path / "report"
    result = CliRunner().invoke(app, ["eval", "--predictions", str(path), "--taxonomy", "extes", "--json", str(out),
                                      "--report", str(report)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["taxonomy"] == "extes" and metrics["strategy"]["lenient"]["B"] == approx(math.sqrt(2) / 4)
    md = (report / "report.md").read_text()
    assert all(f"| {s} |" in md for s in EXTES_LABELS) and "the 16 values sum to 16" in md
    assert "Strategy taxonomy: extes (16 strategies)." in md
    result = CliRunner().invoke(app, ["eval", "--predictions", str(path), "--taxonomy", "nope"])
    assert result.exit_code == 2 and "--taxonomy nope: neither a built-in taxonomy" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["eval", "--predictions", str(path)])  # no record: ESConv's, which refuses it
    assert result.exit_code == 1 and "not one of the 8 strategies of the esconv taxonomy" in result.output


def test_the_sp_choice_lists_the_builds_labels(tmp_path):
    from ipm_prefdial.engines.requests import Choice
    from ipm_prefdial.evaluation.infer import build_taxonomy, sp_requests, taxonomy_record
    from ipm_prefdial.taxonomy import builtin

    (tmp_path / "manifest.json").write_text(json.dumps({"taxonomy": builtin("extes").as_dict()}))
    taxonomy = build_taxonomy(tmp_path)
    prompt = [{"role": "system", "content": "s"}, {"role": "user", "content": "seeker: hi"}]
    (request,) = sp_requests([{"prompt": prompt, "dialog_id": 7}], taxonomy, 32)
    assert request.output == Choice(("Reflective Statements", "Clarification", "Emotional Validation",
                                     "Empathetic Statements", "Affirmation", "Offer Hope",
                                     "Avoid Judgment And Criticism", "Suggest Options", "Collaborative Planning",
                                     "Provide Different Perspectives", "Reframe Negative Thoughts",
                                     "Share Information", "Normalize Experiences", "Promote Self-Care Practices",
                                     "Stress Management", "Others"))
    assert request.sampling.temperature == 0.0 and request.sampling.max_tokens == 32 and request.group == "sp:7"
    assert taxonomy_record(taxonomy) == "extes"
    (tmp_path / "manifest.json").write_text(json.dumps({"version": "1"}))  # a build from before taxonomies
    assert build_taxonomy(tmp_path).names == tuple(STRATEGIES)
