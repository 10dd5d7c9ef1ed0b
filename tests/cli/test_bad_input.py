"""Every option and source record is checked before work starts: a bad one is one message naming it, with the exit
code of its class (2 a bad option, 1 bad input), never a traceback, and the output directory is left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import ESCONV_JSON, plain
from ipm_prefdial.cli import app

runner = CliRunner()
SFT = ["build", "--source-path", str(ESCONV_JSON), "--stage", "sft", "--limit", "1", "--trim-tokenizer", "none"]
ALL = ["build", "--source-path", str(ESCONV_JSON), "--stage", "all", "--limit", "1", "--trim-tokenizer", "none",
       "--engine", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def fails(args: list[str], code: int, *words: str, cwd: Path) -> str:
    """Run ``ipm`` with ``args``; it must exit with ``code``, print each of ``words`` and no traceback, and leave
    ``cwd`` (where its output would go) exactly as it was."""
    before = snapshot(cwd)
    result = runner.invoke(app, args)
    text = plain(result.output)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (AssertionError, TypeError,
                                                                                   KeyError, AttributeError))
    for word in words:
        assert word in text, text
    assert snapshot(cwd) == before
    return text


BAD_BUILD_OPTIONS = {
    "temperature above 2": (["--temperature", "7"], "--temperature must be between 0 and 2, not 7.0"),
    "top_p of 0": (["--top-p", "0"], "--top-p must be above 0 and at most 1, not 0.0"),
    "top_p above 1": (["--top-p", "1.5"], "--top-p must be above 0 and at most 1, not 1.5"),
    "concurrency 0": (["--concurrency", "0"], "--concurrency must be between 1 and 4096, not 0"),
    "workers 0": (["--workers", "0"], "--workers must be between 1 and 4096, not 0"),
    "worker cpus 0": (["--worker-cpus", "0"], "--worker-cpus must be above 0, not 0.0"),
    "negative worker gpus": (["--worker-gpus", "-1"], "--worker-gpus must be at least 0, not -1.0"),
    "samples 0": (["--samples", "0"], "--samples must be between 1 and 64, not 0"),
    "limit 0": (["--limit", "0"], "--limit must be at least 1, not 0"),
    "negative seed": (["--seed", "-3"], "--seed must be at least 0, not -3"),
    "answer bound 0": (["--rg-max-tokens", "0"], "--rg-max-tokens must be between 1 and 65536, not 0"),
    "judge bound 0": (["--judge-max-tokens", "0"], "--judge-max-tokens must be between 1 and 65536, not 0"),
    "trim tokens below 64": (["--trim-tokens", "10"], "--trim-tokens must be at least 64, not 10"),
    "context below an answer": (["--context-tokens", "300", "--vm-max-tokens", "400"],
                                "--context-tokens 300 leaves no room for a prompt next to an answer of up to 400"),
    "give-up-after 0": (["--give-up-after", "0"], "--give-up-after must be above 0, not 0.0"),
    "retries 50": (["--retries", "50"], "--retries must be between 0 and 20, not 50"),
    "a word for a number": (["--temperature", "hot"], "Invalid value for '--temperature': Input should be a valid "
                                                      "number"),
    "unknown stage": (["--stage", "most"], "Invalid value for '--stage': Value error, 'most' is not one of 'sft', "
                                           "'import', 'all'"),
    "unknown engine": (["--engine", "gpt"], "'gpt' is not one of 'local', 'openai', 'vllm', 'transformers'"),
    "unknown judge engine": (["--judge-engine", "gpt"], "Invalid value for '--judge-engine'"),
    "unknown source": (["--source", "extesv2"], "'extesv2' is not one of 'esconv', 'failed-esconv', 'json', 'extes', "
                       "'mesc', 'esc-pro'"),
    "unknown split": (["--split", "paper"], "'paper' is not one of 'decoupledesc', 'hf', 'random'"),
    "unknown executor": (["--executor", "slurm"], "'slurm' is not one of 'local', 'ray'"),
    "unknown on-invalid": (["--on-invalid", "ignore"], "'ignore' is not one of 'error', 'skip'"),
    "openai without an endpoint": (["--stage", "all", "--engine", "openai"], "--engine openai needs --base-url"),
    "an endpoint that is not a URL": (["--stage", "all", "--engine", "openai", "--base-url", "localhost:8000"],
                                      "--base-url must be an http:// or https:// URL with a host (and a port from 1 "
                                      "to 65535), not 'localhost:8000'"),
    "a port out of range": (["--stage", "all", "--engine", "openai", "--base-url", "http://me:s3cret@h:99999/v1"],
                            "--base-url must be an http:// or https:// URL with a host (and a port from 1 to 65535), "
                            "not 'h:99999/v1'"),
    "a header without a value": (["--header", "X-Gateway-Key"], "--header X-Gateway-Key=...: expected NAME=VALUE"),
    "a header name with a space": (["--header", "X Key=s3cret"], "--header ...=...: expected NAME=VALUE"),
    "a version with a space": (["--dataset-version", "1.0 beta"], "--dataset-version must look like 1.2.0"),
    "a missing prompts folder": (["--prompts-dir", "nowhere"], "--prompts-dir nowhere: no such directory"),
    "a vllm setting without a value": (["--vllm-arg", "max_num_seqs"], "--vllm-arg 'max_num_seqs': expected "
                                                                       "KEY=VALUE"),
}


@pytest.mark.parametrize("extra,message", BAD_BUILD_OPTIONS.values(), ids=BAD_BUILD_OPTIONS.keys())
def test_a_bad_build_option_is_named_and_nothing_is_touched(tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "README.md").write_text("an earlier build's card")
    text = fails([*SFT, "--out", "ds", *extra], 2, message, cwd=tmp_path)
    assert "s3cret" not in text  # a header's value is never echoed


BAD_CONFIG_FILES = {
    "a word for a number": ("concurrency: many\n", "build.yaml: concurrency: expected a whole number, got 'many'"),
    "a number for a choice": ("stage: 2\n", "build.yaml: stage: expected a string, got 2"),
    "out of range": ("temperature: 9\n", "--temperature must be between 0 and 2, not 9"),
    "not a choice": ("engine: gpt\n", "--engine must be one of local, openai, vllm, transformers, not 'gpt'"),
    "an unknown option": ("temprature: 0.5\n", "build.yaml: unknown option 'temprature'"),
    "headers not a mapping": ("headers: X-Key\n", "build.yaml: headers: expected a mapping, got 'X-Key'"),
    "a flag as a word": ("no_judge: sometimes\n", "build.yaml: no_judge: expected true or false, got 'sometimes'"),
    "not YAML": ("stage: [sft\n", "build.yaml: cannot read the config"),
}


@pytest.mark.parametrize("text,message", BAD_CONFIG_FILES.values(), ids=BAD_CONFIG_FILES.keys())
def test_a_bad_value_in_a_config_file_is_named(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "build.yaml").write_text(text)
    fails([*SFT, "--out", "ds", "--config", "build.yaml"], 2, message, cwd=tmp_path)


def test_an_out_that_is_a_file_or_a_folder_of_other_things_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.md").write_text("mine")
    fails([*SFT, "--out", "notes.md"], 2, "--out notes.md: a file, not a directory", cwd=tmp_path)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "train.py").write_text("print('mine')")
    (tmp_path / "project" / "README.md").write_text("my project")
    fails([*SFT, "--out", "project"], 2, "--out project: holds train.py, so it is not a build directory", cwd=tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text('{"name": "something else"}')
    fails([*SFT, "--out", "other"], 2, "holds manifest.json (not an IPM-PrefDial build's)", cwd=tmp_path)


def dialogue(strategy: str = "Question", text: str = "How are you?") -> dict:
    return {"emotion_type": "anxiety", "problem_type": "job crisis", "dialog": [
        {"speaker": "seeker", "annotation": {}, "content": "I lost my job."},
        {"speaker": "supporter", "annotation": {"strategy": "Question"}, "content": "Oh no. What happened?"},
        {"speaker": "seeker", "annotation": {}, "content": "They closed the office."},
        {"speaker": "supporter", "annotation": {"strategy": strategy}, "content": text}]}


BAD_RECORDS = {
    "a label outside the taxonomy": (
        json.dumps([dialogue(), dialogue("Hugging")]),
        ["corpus.json: dialogue 1: field 'dialog[3].annotation.strategy': unknown strategy 'Hugging'",
         "unknown strategy labels: 'Hugging' (1). Known: Question, Restatement or Paraphrasing"]),
    "an empty utterance": (json.dumps([dialogue(text="  ")]),
                           ["corpus.json: dialogue 0: field 'dialog[3].content': empty utterance"]),
    "malformed JSON": ('[{"dialog": [}]', ["corpus.json: dialogue 0: malformed JSON at line 1"]),
    "an unknown speaker": (json.dumps([{"dialog": [{"speaker": "bot", "content": "hi"}]}]),
                           ["corpus.json: dialogue 0: field 'dialog[0].speaker': unknown speaker 'bot'"]),
}


@pytest.mark.parametrize("text,messages", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_a_bad_source_record_is_named_and_nothing_is_written(tmp_path, monkeypatch, text, messages):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.json").write_text(text)
    fails(["build", "--source", "json", "--source-path", "corpus.json", "--stage", "sft", "--out", "ds",
           "--trim-tokenizer", "none"], 1, *messages, cwd=tmp_path)


def test_a_file_that_is_not_utf8_names_its_dialogue(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = json.dumps([dialogue(), dialogue(text="caf\u00e9")], ensure_ascii=False).encode()
    raw = raw.replace("caf\u00e9".encode(), b"caf\xe9")  # Latin-1 where UTF-8 belongs
    (tmp_path / "corpus.json").write_bytes(raw)
    fails(["build", "--source", "json", "--source-path", "corpus.json", "--stage", "sft", "--out", "ds",
           "--trim-tokenizer", "none"], 1,
          "corpus.json: dialogue 1: field 'dialog[3].content': not valid UTF-8 (byte 0xe9)", cwd=tmp_path)


def test_on_invalid_skip_counts_the_dialogue_with_the_bad_label(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.json").write_text(json.dumps([dialogue(), dialogue("Hugging"), dialogue()]))
    result = runner.invoke(app, ["build", "--source", "json", "--source-path", "corpus.json", "--stage", "sft",
                                 "--out", "ds", "--trim-tokenizer", "none", "--on-invalid", "skip"])
    assert result.exit_code == 0, result.output
    assert "1 invalid dialogues skipped (see manifest.json)" in plain(result.output)
    skipped = json.loads((tmp_path / "ds" / "manifest.json").read_text())["split"]["skipped_invalid"]
    assert skipped == [{"dialog_id": 1, "problems": [
        "corpus.json: dialogue 1: field 'dialog[3].annotation.strategy': unknown strategy 'Hugging'"]}]


def test_the_hub_layout_names_the_strategy_field_it_has(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    turns = [{"text": "I lost my job.", "speaker": "usr"}, {"text": "Oh no.", "speaker": "sys", "strategy": "Hugs"}]
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"dialog": turns}) + "\n")
    fails(["build", "--source", "json", "--source-path", "corpus.jsonl", "--stage", "sft", "--out", "ds",
           "--trim-tokenizer", "none"], 1,
          "corpus.jsonl: dialogue 0: field 'dialog[1].strategy': unknown strategy 'Hugs'", cwd=tmp_path)


# -- the other commands ---------------------------------------------------------------------------------------
def test_bad_infer_options(tmp_path, monkeypatch, sft_build):
    monkeypatch.chdir(tmp_path)
    base = ["infer", "--data", str(sft_build), "--system", "decoupled", "--out", "p.jsonl"]
    fails(["infer", "--data", "nowhere", "--system", "decoupled", "--out", "p.jsonl"], 2,
          "--data nowhere: not a build directory (no manifest.json)", cwd=tmp_path)
    fails([*base[:3], "--system", "both", "--out", "p.jsonl"], 2,
          "'both' is not one of 'decoupled', 'joint', 'rg-gold'", cwd=tmp_path)
    fails([*base, "--limit", "0"], 2, "--limit must be at least 1, not 0", cwd=tmp_path)
    fails([*base, "--concurrency", "0"], 2, "--concurrency must be between 1 and 4096, not 0", cwd=tmp_path)
    fails([*base, "--stage", "rl"], 2, "'rl' is not one of 'sft', 'dpo'", cwd=tmp_path)
    fails([*base, "--run", "runs/none"], 2, "--run runs/none: no such run directory", cwd=tmp_path)
    fails([*base, "--engine", "openai"], 2, "--engine openai needs --base-url", cwd=tmp_path)
    (tmp_path / "preds").mkdir()
    fails([*base[:5], "--out", "preds"], 2, "--out preds: a directory; give the predictions file to write",
          cwd=tmp_path)


def test_bad_eval_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(["eval", "--predictions", "none.jsonl"], 1, "none.jsonl: no such predictions file", cwd=tmp_path)
    (tmp_path / "p.jsonl").write_text('{"id": "1-1"}\n{not json\n')
    fails(["eval", "--predictions", "p.jsonl"], 1, "p.jsonl:1 (id '1-1'): missing field(s)", cwd=tmp_path)
    (tmp_path / "q.jsonl").write_bytes(b'{"id": "caf\xe9"}\n')
    fails(["eval", "--predictions", "q.jsonl"], 1, "q.jsonl:1: not valid UTF-8 (byte 0xe9)", cwd=tmp_path)
    fails(["eval", "--predictions", "p.jsonl", "--judge-engine", "local", "--judge-concurrency", "0"], 2,
          "--judge-concurrency must be between 1 and 4096, not 0", cwd=tmp_path)
    fails(["eval", "--predictions", "p.jsonl", "--judge-engine", "openai"], 2,
          "--judge-engine openai needs --judge-base-url", cwd=tmp_path)


def test_bad_train_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(["train", "--quick", "--pairs", "best"], 2, "'best' is not one of 'retained', 'all'", cwd=tmp_path)
    fails(["train", "--quick", "--arms", "decoupled,vanilla"], 2, "arms ['decoupled', 'vanilla']: choose from "
          "decoupled, joint", cwd=tmp_path)
    (tmp_path / "train.yaml").write_text("lora_r: 0\nsft:\n  epochs: -1\n")
    fails(["train", "--config", "train.yaml"], 2, "train.yaml: lora_r 0: must be above 0", cwd=tmp_path)
    (tmp_path / "train.yaml").write_text("sft: {learning_rate: fast}\n")
    fails(["train", "--config", "train.yaml"], 2, "train.yaml: sft.learning_rate 'fast': expected a number",
          cwd=tmp_path)
    fails(["train", "--quick", "--data", "nowhere"], 1, "nowhere: not a build directory", cwd=tmp_path)


def test_bad_publish_input(tmp_path, monkeypatch, sft_build):
    monkeypatch.chdir(tmp_path)
    fails(["publish", str(sft_build), "--repo-id", "ipm-prefdial"], 1,
          "--repo-id 'ipm-prefdial': expected ORG/NAME", cwd=tmp_path)
    (tmp_path / "empty").mkdir()
    fails(["publish", "empty", "--repo-id", "org/ipm"], 1, "empty: not a valid build, nothing uploaded", cwd=tmp_path)

    class Offline:
        def __init__(self, token=None):
            pass

        def create_repo(self, *args, **kwargs):
            raise OSError("Name or service not known: huggingface.co")

    monkeypatch.setattr("huggingface_hub.HfApi", Offline)
    fails(["publish", str(sft_build), "--repo-id", "org/ipm"], 1,
          "org/ipm: the Hub refused the upload or could not be reached (OSError: Name or service not known",
          cwd=tmp_path)


def test_bad_validate_and_engine_check_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(["validate", "nowhere"], 1, "nowhere: not a directory", cwd=tmp_path)
    fails(["engine-check", "--engine", "gpt"], 2, "'gpt' is not one of 'local', 'openai'", cwd=tmp_path)
    fails(["engine-check", "--concurrency", "0"], 2, "--concurrency must be between 1 and 4096, not 0", cwd=tmp_path)
    fails(["engine-check", "--engine", "openai"], 2, "--engine openai needs --base-url", cwd=tmp_path)
    fails(["engine-check", "--engine", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"], 75,
          "http://127.0.0.1:9/v1: unreachable", cwd=tmp_path)


def test_choices_are_listed_and_completed():
    help_text = plain(runner.invoke(app, ["build", "--help"], env={"COLUMNS": "300"}).output)
    for listed in ("esconv|failed-esconv|json|extes|mesc|esc-pro", "decoupledesc|hf|random", "sft|import|all",
                   "local|openai|vllm|transformers",
                   "local|ray", "error|skip"):
        assert listed in help_text, listed
    completed = runner.invoke(app, [], prog_name="ipm", env={"_IPM_COMPLETE": "complete_bash",
                                                             "COMP_WORDS": "ipm build --engine ", "COMP_CWORD": "3"})
    assert completed.output.split() == ["local", "openai", "vllm", "transformers"]
    completed = runner.invoke(app, [], prog_name="ipm", env={"_IPM_COMPLETE": "complete_bash",
                                                             "COMP_WORDS": "ipm infer --system r", "COMP_CWORD": "3"})
    assert completed.output.split() == ["rg-gold"]


def test_a_prompt_template_that_does_not_render_is_named(tmp_path, monkeypatch):
    from ipm_prefdial.prompts import default_prompts_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts").mkdir()
    for template in default_prompts_dir().glob("*.j2"):
        (tmp_path / "prompts" / template.name).write_text(template.read_text())
    (tmp_path / "prompts" / "sp_system.j2").write_text("Pick one strategy.\n{% if %}\n")
    fails([*SFT, "--out", "ds", "--prompts-dir", "prompts"], 1, "prompts/sp_system.j2: line 2: Expected an "
          "expression", cwd=tmp_path)
    (tmp_path / "prompts" / "sp_system.j2").write_text("Pick one of {{ labels }}.\n")
    fails([*SFT, "--out", "ds", "--prompts-dir", "prompts"], 1, "prompts/sp_system.j2: 'labels' is undefined (the "
          "variables it may use: example_reply, example_strategy, strategies)", cwd=tmp_path)
