"""Tiny synthetic corpora in the layouts of ExTES, MESC and ESC-Pro, for tests/sources/test_layouts.py and
tests/test_corpora_build.py. Every text here is invented for the tests; none comes from the real corpora. Each
``*_records()`` returns a fresh copy that a test may break before writing it. ``invoke`` runs `ipm` on them."""

from __future__ import annotations

import copy
import csv
import json
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from helpers import plain
from ipm_prefdial.cli import app

# ExTES: dialogue 0 opens and closes with greetings labelled "" (kept as history), has a seeker run (content[2-3]),
# a supporter run (content[4-5]), a label spelled as a taxonomy variant and an "AI" object holding "Response";
# dialogue 1 opens with one item holding both "User" and "AI", whose "AI" is an object holding "AI".
_EXTES = [
    {"scene": "Work-related Stress and Burnout",
     "description": "My team lead keeps handing me extra work right before the weekend.",
     "content": [
         {"User": "Hello, is anyone around to talk?"},
         {"AI Strategy": "", "AI": "Hi there, I am here. What is on your mind?"},
         {"User": "My team lead  keeps adding tasks\non Friday evenings."},
         {"User": "I have not had a free weekend in a month."},
         {"AI Strategy": "Reflective Statements", "AI": "So the extra work keeps landing right before your time off."},
         {"AI Strategy": "avoid judgment and criticism", "AI": {"Response": "It is fair to feel worn down by that."}},
         {"User": "Thanks, that helps."},
         {"AI Strategy": "", "AI": "Take care!"},
     ]},
    {"scene": "Dealing with the Loss of a Pet",
     "description": "My cat died last weekend and the flat feels empty.",
     "content": [
         {"User": "My old cat died on Sunday.", "AI Strategy": "Empathetic Statements",
          "AI": {"AI": "I am so sorry about your cat."}},
         {"User": "The flat is so quiet now."},
         {"AI Strategy": "Offer Hope", "AI": "The quiet will feel less heavy with time."},
     ]},
]

# MESC: each JSON turn is its utterance followed by an invented "video description"; MESC.csv holds the clean
# utterances of dialogues A, C and D (and a decoy shaped like C), not of B. The CSV's utterance of A's turn 3 has no
# trailing comma, the JSON's has one (as in the real data).
_A = ("Academic Stress", [
    ("user", None, "I failed the driving test again. The speaker seems to be tired and looks down at the table."),
    ("user", None, "Third time this year. The speaker appears to be upset and rubs her eyes."),
    ("sys", "Open question", "What went wrong this time? The speaker seems to be in a state of calm attention."),
    ("user", None, "I panicked at the roundabout, The emotion state of the speaker is hard to tell from the clip."),
    ("sys", "approval", "You kept going back, that takes grit. The speaker is smiling gently."),
])
_B = ("Family Conflict", [
    ("user", None, "My sister stopped calling me. The speaker seems to be sad and quiet."),
    ("sys", "Restatement", "She has gone quiet on you. The speaker appears to be thoughtful."),
])
_C = ("Job Stress", [
    ("user", None, "Work is fine, I guess. The speaker seems to be unsure of herself."),
    ("sys", "Structuring the Therapy", "Let us start with how your week went. The speaker is calm."),
])
_D = ("Anxiety", [
    ("user", None, "I could not sleep before the interview. The speaker seems to be nervous."),
    ("sys", "Others", "Mm. The speaker is nodding slowly."),
])
MESC_SPLIT_FILES = {"train": [_A, _B], "val": [_C], "test": [_D]}
_CSV_DIALOGUES = [
    [("Client", "I failed the driving test again."), ("Client", "Third time this year."),
     ("Therapist", "What went wrong this time?"), ("Client", "I panicked at the roundabout"),
     ("Therapist", "You kept going back, that takes grit.")],
    [("Client", "Work is great, honestly."), ("Therapist", "Let us talk about your garden.")],  # decoy shaped like C
    [("Client", "Work is fine, I guess."), ("Therapist", "Let us start with how your week went.")],
    [("Client", "I could not sleep before the interview."), ("Therapist", "Mm.")],
]
MESC_CSV_HEADER = ["Utterance", "Speaker", "Emotion", "Strategy", "Dialogue_ID", "Utterance_ID", "Season", "Episode",
                   "StartTime", "EndTime"]

# ESC-Pro: assistant messages carry the preferred reply, its strategy and the non-preferred replies ("negative").
_ESC_PRO = [
    {"description": "We broke up after six years together and I keep replaying it.",
     "scene": "Breakups or Divorce", "iter": 120,
     "messages": [
         {"role": "user", "content": "We broke up after six years and I keep replaying it."},
         {"role": "assistant", "content": "Six years is a long time; of course it keeps coming back.",
          "strategy": "Emotional Validation",
          "negative": [{"content": "Have you tried dating apps?", "strategy": "Share Information"},
                       {"content": "You will be fine,  cheer up.", "strategy": "Affirmation"}]},
         {"role": "user", "content": "I just want to stop thinking about it."},
         {"role": "assistant", "content": "Could we pick one evening routine to try this week?",
          "strategy": "Collaborative Planning", "negative": []},
     ]},
    {"description": "My supervisor tore my thesis draft apart.",
     "scene": "Academic Stress", "iter": 101,
     "messages": [
         {"role": "user", "content": "My thesis draft got torn apart by my supervisor."},
         {"role": "assistant", "content": "That feedback must have stung after all your work.",
          "strategy": "Empathetic Statements",
          "negative": [{"content": "Supervisors are often harsh.", "strategy": "provide different perspectives"}]},
     ]},
]


def extes_records() -> list[dict]:
    return copy.deepcopy(_EXTES)


def esc_pro_records() -> list[dict]:
    return copy.deepcopy(_ESC_PRO)


def mesc_records(split: str) -> list[dict]:
    """The records of one MESC split file (train, val, test)."""
    return [{"problem_type": problem, "situation": f"An invented situation about {problem.lower()}.",
             "dialog": [{"text": text, "speaker": speaker, "emotion": "neutral", **({"strategy": st} if st else {})}
                        for speaker, st, text in turns]}
            for problem, turns in MESC_SPLIT_FILES[split]]


def write_json(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path


def write_extes(directory: Path, records: list | None = None) -> Path:
    return write_json(directory / "ExTES.json", extes_records() if records is None else records)


def write_extes_zip(directory: Path, member: str = "ExTES/ExTES.json", records: list | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ExTES.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ExTES/README.txt", "not the data")
        archive.writestr(member, json.dumps(extes_records() if records is None else records))
    return path


def write_mesc(directory: Path, *, ext: str = "json", with_csv: bool = True) -> Path:
    """MESC's split files (``json``: JSON lists, ``txt``: JSON lines) and, with ``with_csv``, MESC.csv."""
    directory.mkdir(parents=True, exist_ok=True)
    for split in MESC_SPLIT_FILES:
        records = mesc_records(split)
        text = json.dumps(records, indent=4) if ext == "json" else "".join(json.dumps(r) + "\n" for r in records)
        (directory / f"{split}.{ext}").write_text(text, encoding="utf-8")
    if with_csv:
        with open(directory / "MESC.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(MESC_CSV_HEADER)
            for dialogue_id, rows in enumerate(_CSV_DIALOGUES):
                for k, (speaker, text) in enumerate(rows):
                    strategy = "undefined" if speaker == "Client" else "Others"
                    writer.writerow([text, speaker, "neutral", strategy, dialogue_id, k, 1, 1,
                                     f"00:00:{k:02d},000", f"00:00:{k + 1:02d},000"])
    return directory


def write_esc_pro(path: Path, records: list | None = None) -> Path:
    return write_json(path, esc_pro_records() if records is None else records)


def invoke(*args):
    """`ipm *args` (each argument as a string): the result and its output as one line (``plain``)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, plain(result.output)
