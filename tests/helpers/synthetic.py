"""A small synthetic corpus in ESConv's layout, written by the tests (no ESConv text): for the viewer's tests, its
browser tests and the README's screenshot. Two utterances carry markup that must be shown as text."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ipm_prefdial.strategies import STRATEGIES

SUPPORTER_FIRST = (1, 5, 9)  # dialogues that open with the supporter
TWO_IN_A_ROW = (2, 6, 10)  # dialogues with two supporter turns in a row
SCRIPT_REPLY = "I hear you. </script><script>window.__pwned = 1</script> Tell me more?"
IMG_SEEKER = "My boss wrote <img src=x onerror=\"window.__pwned = 2\"> in the team chat & laughed."

_PROBLEMS = [
    ("job crisis", "anxiety", ["My manager moved my deadline up again and I cannot keep up.",
                               "I keep thinking I will be let go before the end of the year.",
                               "I stay late every night and still feel behind."]),
    ("breakup with partner", "sadness", ["We split up last month and the flat feels empty.",
                                         "I keep checking my phone in case there is a message.",
                                         "Friends say it gets easier but it has not yet."]),
    ("academic pressure", "fear", ["My exams start in two weeks and I have not revised enough.",
                                   "My parents expect top marks and I do not think I can do it.",
                                   "I freeze every time I open the textbook."]),
    ("ongoing depression", "depression", ["Most mornings I do not want to get out of bed.",
                                          "Nothing I used to enjoy feels worth the effort now.",
                                          "I have not told anyone how bad it has been."]),
    ("problems with friends", "anger", ["My closest friend shared something I told her in confidence.",
                                        "Now half the group is acting strange around me.",
                                        "I do not know if I should confront her or let it go."]),
]
_SUPPORT = {
    "Question": ["What happened after that?", "How long have you been feeling this way?",
                 "Who do you usually talk to when things get hard?"],
    "Restatement or Paraphrasing": ["So the pressure keeps growing and you feel stuck in the middle of it.",
                                    "It sounds like you are carrying this mostly on your own."],
    "Reflection of feelings": ["That sounds exhausting and lonely.", "I can hear how hurt you are by this."],
    "Self-disclosure": ["I went through something like that a few years ago and it was hard for me too."],
    "Affirmation and Reassurance": ["You are doing far better than you think, and reaching out took courage.",
                                    "It makes sense that you feel this way, anyone would."],
    "Providing Suggestions": ["Maybe you could write down the three tasks that matter most tomorrow.",
                              "Could you plan one small thing for yourself this weekend?"],
    "Information": ["Many people find that short breaks every hour make long days easier to bear."],
    "Others": ["Thank you for sharing this with me.", "Take care, and talk soon."],
}


def corpus(dialogues: int = 16, seed: int = 7) -> list[dict]:
    """``dialogues`` ESConv-style dialogues; every strategy occurs; dialogue 0 holds the two markup strings,
    dialogues 1, 5, 9 open with the supporter, dialogues 2, 6, 10 have two supporter turns in a row."""
    rng = random.Random(seed)
    out = []
    for d in range(dialogues):
        problem, emotion, lines = _PROBLEMS[d % len(_PROBLEMS)]
        dialog = [{"speaker": "seeker", "annotation": {}, "content": "Hi, can I talk to someone?"},
                  {"speaker": "supporter", "annotation": {"strategy": "Others"},
                   "content": "Hello, of course. I am here."}]
        for turn in range(3 + d % 3):
            seeker = lines[turn % len(lines)]
            if d == 0 and turn == 1:
                seeker = IMG_SEEKER
            dialog.append({"speaker": "seeker", "annotation": {}, "content": seeker})
            strategy = STRATEGIES[(d + turn * 3) % len(STRATEGIES)]
            reply = rng.choice(_SUPPORT[strategy])
            if d == 0 and turn == 2:
                strategy, reply = "Question", SCRIPT_REPLY
            dialog.append({"speaker": "supporter", "annotation": {"strategy": strategy}, "content": reply})
        if d in SUPPORTER_FIRST:
            dialog = dialog[1:]
        if d in TWO_IN_A_ROW:
            dialog.insert(4, {"speaker": "supporter", "annotation": {"strategy": "Information"},
                              "content": "Talking it through often makes the next step clearer."})
        dialog.append({"speaker": "seeker", "annotation": {}, "content": "Thanks, that helps a little."})
        out.append({"experience_type": "Current Experience", "emotion_type": emotion, "problem_type": problem,
                    "situation": lines[0], "dialog": dialog})
    return out


def write_corpus(path: Path, dialogues: int = 16) -> Path:
    path.write_text(json.dumps(corpus(dialogues), indent=1), encoding="utf-8")
    return path


def build_args(corpus_path: Path, url: str, out: Path, cache: Path) -> list[str]:
    """`ipm build --stage all` of the whole synthetic corpus, policy and judge on the fake server."""
    return ["build", "--source", "esconv", "--source-path", str(corpus_path), "--split", "random", "--stage", "all",
            "--engine", "openai", "--base-url", url, "--out", str(out), "--cache-dir", str(cache)]
