"""Benchmark: `ipm build --source extes` of an ExTES-sized corpus against the suite's deterministic test server
(``ipm_prefdial.testing.fake_llm``, its own process, no latency), so what is measured is the project's work, not a
model's.

The corpus is synthetic, in ExTES's layout (a JSON list of ``{"scene", "description", "content": [{"User": text} |
{"AI Strategy": label, "AI": reply}]}``): 11,183 dialogues with about 98k labelled supporter turns (~8.8 a dialogue),
an empty "AI Strategy" on the greeting and closing of most dialogues, some same-speaker runs, a few items holding
both "User" and "AI", a few "AI" values that are objects, labels drawn from ExTES's 16 with case and spacing variants;
every text is invented (templates x random words, seeker ~20-40 words, supporter ~20-35). It is written once per
(seed, size) under the temp dir and reused.

(dry)   `ipm build --stage all --dry-run`: requests per task and the time it took.
(local) the full `--stage all` build, local executor; then `ipm validate` of it.
(ray)   the same build with `--executor ray --workers 4` (a local Ray, each worker given the cluster's CPUs shared
        out, as bench_scale.py runs it).
Each build gets a fresh cache and out dir: requests (policy + judge), wall time, requests/s, the driver's CPU per
request and peak RSS, and (Ray) the peak RSS of all our processes together (the test server not counted).
Goals: <= 1 ms driver CPU per request, <= 2 GB peak.
(profile, only when asked) a cProfile of the local driver on a smaller build (--dialogues, default 500 then).

    python benchmarks/bench_extes.py [--dialogues N] [--only dry|local|ray|profile] [--seed S] [--workers W]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_scale import DRIVER, Sampler, Server, area

from ipm_prefdial.taxonomy import builtin

EXTES_DIALOGUES = 11_183
GOAL_CPU_MS = 1.0
GOAL_PEAK_MB = 2048

# ---------------------------------------------------------------------------------------------- the corpus

SCENES = ("Work-related Stress and Burnout", "Breakups or Divorce", "Academic Stress", "Dealing with the Loss of a Pet",
          "Conflicts with Friends", "Financial Worries", "Loneliness after Moving", "Health Anxiety",
          "Family Disagreements", "Job Loss", "Caring for a Sick Parent", "Social Anxiety", "Grief and Bereavement",
          "Sleep Problems", "Parenting Stress", "Body Image Concerns", "Exam Failure", "Workplace Bullying")
PEOPLE = ("boss", "partner", "sister", "brother", "mother", "father", "flatmate", "best friend", "teacher",
          "manager", "colleague", "neighbour", "son", "daughter", "coach", "landlord", "doctor", "cousin")
THINGS = ("job", "exams", "rent", "health", "relationship", "weekend plans", "savings", "thesis", "sleep",
          "new team", "old friends", "family dinners", "future", "divorce", "dog", "car loan", "shifts", "garden")
FEELINGS = ("anxious", "tired", "lonely", "angry", "ashamed", "lost", "overwhelmed", "hopeless", "restless", "numb",
            "guilty", "confused", "frustrated", "scared", "drained", "jealous", "hurt", "stuck")
ADVERBS = ("really", "so", "quite", "terribly", "a bit", "constantly", "strangely", "deeply", "mostly", "always")
TIMES = ("Last week", "Yesterday", "This morning", "Two days ago", "On Sunday", "Every evening", "Lately",
         "Since the spring", "At the party", "Over the holidays", "After the meeting", "Last night")
DEEDS = ("shouted at me", "ignored my messages", "cancelled our plans", "criticised my work", "forgot my birthday",
         "moved out", "asked for money again", "told everyone my secret", "gave my project to someone else",
         "said I was lazy", "stopped calling", "laughed at my idea")
REACTIONS = ("could not stop crying", "felt like a failure", "just froze", "lay awake until three",
             "pretended everything was fine", "snapped at everyone", "skipped dinner", "stayed in bed all day",
             "wanted to disappear", "kept checking my phone")
ACTIONS = ("take a short walk", "write down what is worrying you", "talk to someone you trust", "plan one small step",
           "set aside quiet time", "try a breathing exercise", "make a list of what you can control",
           "ask for a short break", "keep a sleep routine", "call a helpline", "join a local group",
           "speak to your manager", "look at the budget together", "book an appointment")

SEEKER = (
    "I feel {adv} {feel} about my {thing} and I do not know what to do",
    "{time} my {person} {deed} and I {reaction}",
    "I keep thinking about my {thing} when I should be sleeping",
    "it is hard to stay calm when my {person} {deed}",
    "honestly I have felt {feel} for weeks and my {thing} is not helping",
    "I tried to talk to my {person} about my {thing} but it went badly",
    "everyone says it will pass but I still feel {feel}",
    "{time} I {reaction} because of my {thing}",
    "maybe I am overreacting but my {person} {deed}",
    "I do not want to burden my {person} with how {feel} I am",
)
SUPPORTER = (
    "it sounds like your {thing} has left you feeling {feel}",
    "that must have been {adv} painful when your {person} {deed}",
    "many people feel {feel} in a situation like yours",
    "would it help to {action} this week",
    "you have already shown a lot of strength by talking about your {thing}",
    "could you tell me more about what happened with your {person}",
    "one option might be to {action}, or to {action2}",
    "it is understandable to feel {feel} after everything with your {thing}",
    "things can get easier, especially if you {action}",
    "let us think together about how you could {action}",
    "I wonder if your {person} sees the situation differently",
    "looking after yourself matters, so try to {action}",
)


def _fill(template: str, rng: random.Random) -> str:
    return template.format(adv=rng.choice(ADVERBS), feel=rng.choice(FEELINGS), thing=rng.choice(THINGS),
                           time=rng.choice(TIMES), person=rng.choice(PEOPLE), deed=rng.choice(DEEDS),
                           reaction=rng.choice(REACTIONS), action=rng.choice(ACTIONS), action2=rng.choice(ACTIONS))


def _text(rng: random.Random, templates: tuple[str, ...], low: int, high: int) -> str:
    """Sentences from the templates until the text has a drawn number of words in [low, high] (cut there)."""
    target = rng.randint(low, high)
    words: list[str] = []
    while len(words) < target:
        sentence = _fill(rng.choice(templates), rng)
        words += (sentence[0].upper() + sentence[1:] + rng.choice((".", ".", ".", "?", "!"))).split()
    text = " ".join(words[:target])
    return text if text[-1] in ".?!" else text + "."


def _label(rng: random.Random, names: tuple[str, ...]) -> str:
    """A label as a file spells it: mostly as the taxonomy names it, some in other case or spacing."""
    name = rng.choice(names)
    r = rng.random()
    if r < 0.06:
        return name.lower()
    if r < 0.08:
        return name.upper()
    if r < 0.10:
        return name.replace(" ", "  ")
    if r < 0.11:
        return f" {name} "
    return name


def _supporter(rng: random.Random, label: str) -> dict:
    """A supporter item; about 1 in 150 has its reply as an object (its label inside it, now and then)."""
    text = _text(rng, SUPPORTER, 20, 35)
    if rng.random() < 1 / 150:
        inner = rng.choice(("Response", "AI"))
        if rng.random() < 0.3:
            return {"AI": {inner: text, "AI Strategy": label}}
        return {"AI Strategy": label, "AI": {inner: text}}
    return {"AI Strategy": label, "AI": text}


def make_dialogue(rng: random.Random, names: tuple[str, ...]) -> dict:
    scene = rng.choice(SCENES)
    content: list[dict] = []
    labelled = rng.randint(5, 12) + (rng.random() < 0.2)  # ~8.8 a dialogue, with the runs
    greeting = rng.random()
    if greeting < 0.9:  # as ExTES: the seeker opens, the greeting has an empty strategy
        content.append({"User": _text(rng, SEEKER, 20, 40)})
        content.append({"AI Strategy": "", "AI": "Hello, I am here to listen. " + _text(rng, SUPPORTER, 10, 20)})
    elif greeting < 0.95:
        content.append({"User": _text(rng, SEEKER, 20, 40)})
        content.append(_supporter(rng, "Others"))
        labelled -= 1
    for k in range(labelled):
        if not content and rng.random() < 0.5:  # one item holding both User and AI
            item = _supporter(rng, _label(rng, names))
            content.append({"User": _text(rng, SEEKER, 20, 40), **item})
            continue
        content.append({"User": _text(rng, SEEKER, 20, 40)})
        if rng.random() < 0.04:  # a seeker run
            content.append({"User": _text(rng, SEEKER, 20, 40)})
        content.append(_supporter(rng, _label(rng, names)))
        if k < labelled - 1 and rng.random() < 0.02:  # a supporter run
            content.append(_supporter(rng, _label(rng, names)))
    if rng.random() < 0.85:  # the closing, empty strategy
        content.append({"User": "Thank you, " + _text(rng, SEEKER, 10, 20)})
        content.append({"AI Strategy": "", "AI": "You are welcome. Take care of yourself and reach out any time."})
    return {"scene": scene, "description": _text(rng, SEEKER, 15, 30), "content": content}


def corpus(dialogues: int, seed: int) -> tuple[Path, dict]:
    """ExTES.json of ``dialogues`` dialogues from ``seed``, written once under the temp dir; (path, its stats)."""
    folder = Path(tempfile.gettempdir()) / "ipm-bench-extes" / f"seed{seed}-n{dialogues}"
    path, stats_path = folder / "ExTES.json", folder / "stats.json"
    if path.is_file() and stats_path.is_file():
        return path, json.loads(stats_path.read_text())
    started = time.perf_counter()
    rng = random.Random(seed)
    names = builtin("extes").names
    records = [make_dialogue(rng, names) for _ in range(dialogues)]
    stats = {"dialogues": len(records), "utterances": 0, "labelled": 0, "empty": 0, "ai_objects": 0,
             "seeker_words": 0, "seeker": 0, "supporter_words": 0, "supporter": 0}
    for record in records:
        for item in record["content"]:
            stats["utterances"] += ("User" in item) + ("AI" in item)
            if "User" in item:
                stats["seeker"] += 1
                stats["seeker_words"] += len(item["User"].split())
            if "AI" in item:
                reply, label = item["AI"], item.get("AI Strategy")
                if isinstance(reply, dict):
                    stats["ai_objects"] += 1
                    label = label if "AI Strategy" in item else reply.get("AI Strategy")
                    reply = reply.get("Response") or reply.get("AI")
                stats["supporter"] += 1
                stats["supporter_words"] += len(reply.split())
                stats["labelled" if label and label.strip() else "empty"] += 1
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    stats_path.write_text(json.dumps(stats))
    print(f"corpus written in {time.perf_counter() - started:.1f} s: {path}")
    return path, stats


# ---------------------------------------------------------------------------------------------- the builds


def build_args(path: Path, url: str, work: Path, tokenizer: str, *extra: str) -> list[str]:
    return ["build", "--source", "extes", "--source-path", str(path), "--stage", "all", "--engine", "openai",
            "--base-url", url, "--trim-tokenizer", tokenizer, "--out", str(work / "ds"),
            "--cache-dir", str(work / "cache"), *extra]


def env_for(work: Path, **more: str) -> dict:
    return {**os.environ, "COLUMNS": "160", "IPM_CACHE_DIR": str(work / "c"), **more}


def dry(path: Path, tokenizer: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-extes-") as tmp:
        work = Path(tmp)
        server = Server(work / "answered.jsonl", 0.0)
        try:
            args = build_args(path, server.url, work, tokenizer, "--dry-run")
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "ipm_prefdial.cli", *args], capture_output=True, text=True,
                                  env=env_for(work))
            wall = time.perf_counter() - started
        finally:
            server.stop()
    if done.returncode:
        sys.exit(f"ipm {' '.join(args)} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    print(f"(dry) ipm {' '.join(args)}")
    print("  " + done.stdout.strip().replace("\n", "\n  "))
    print(f"  dry run: {wall:.1f} s")


def full(path: Path, tokenizer: str, name: str, extra: list[str], validate: bool = False,
         profile: Path | None = None) -> dict:
    """One full build in a fresh work dir (its driver under DRIVER, sampled); ``validate``: then `ipm validate`."""
    with tempfile.TemporaryDirectory(prefix="bench-extes-") as tmp:
        work = Path(tmp)
        server = Server(work / "answered.jsonl", 0.0)
        rusage = work / "driver.json"
        args = build_args(path, server.url, work, tokenizer, *extra)
        env = env_for(work, IPM_BENCH_RUSAGE=str(rusage), **({"IPM_BENCH_PROFILE": str(profile)} if profile else {}))
        print(f"({name}) ipm {' '.join(args)}", flush=True)
        try:
            started = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            sampler = Sampler(proc.pid)
            sampler.start()
            stdout, stderr = proc.communicate()
            wall = time.perf_counter() - started
            sampler.done.set()
            sampler.join()
        finally:
            server.stop()
        if proc.returncode:
            sys.exit(f"the build failed (exit {proc.returncode}):\n{stdout[-3000:]}{stderr[-3000:]}")
        manifest = json.loads((work / "ds" / "manifest.json").read_text())
        driver = json.loads(rusage.read_text())
        others = sampler.by_role()
        # a Ray build's driver is `ipm build`'s watched child: its CPU and memory, plus the small parent's CPU
        child_cpu, child_peak = others.pop("driver", 0.0), sampler.peak.get("driver", 0) / 2**20
        r = {"wall_s": wall, "manifest": manifest, "stdout": stdout, "stderr": stderr,
             "driver_cpu_s": driver["cpu_s"] + child_cpu, "driver_peak_mb": max(driver["maxrss_kb"] / 1024, child_peak),
             "others": others, "peak_total_mb": sampler.peak_total / 2**20}
        report(name, r)
        if validate:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "ipm_prefdial.cli", "validate", str(work / "ds")],
                                  capture_output=True, text=True, env=env_for(work))
            seconds = time.perf_counter() - started
            verdict = "passes" if done.returncode == 0 else f"FAILS (exit {done.returncode})"
            print(f"  ipm validate {work / 'ds'}: {verdict} in {seconds:.1f} s")
            text = (done.stdout + done.stderr).strip()
            if done.returncode or "note:" in text:
                print("    " + text[-4000:].replace("\n", "\n    "))
        return r


def report(name: str, r: dict) -> None:
    m = r["manifest"]
    mining, judge = m.get("mining") or {}, m.get("judge") or {}
    policy = {t: info["accounting"] for t, info in mining.items()}
    judged = {c: info["accounting"] for c, info in judge.items()}
    requests = sum(a["requests"] for a in (*policy.values(), *judged.values()))
    sent = sum(a["sent"] for a in (*policy.values(), *judged.values()))
    wall, cpu = r["wall_s"], r["driver_cpu_s"]
    ms = 1000 * cpu / sent if sent else float("nan")
    print(f"  requests: {requests:,} ({sent:,} sent): policy "
          + ", ".join(f"{t.upper()} {a['requests']:,}" for t, a in policy.items())
          + f" = {sum(a['requests'] for a in policy.values()):,}; judge "
          + ", ".join(f"{c} {a['requests']:,}" for c, a in judged.items())
          + f" = {sum(a['requests'] for a in judged.values()):,}")
    print(f"  wall {wall:.1f} s, {sent / wall:.0f} requests/s end to end")
    print(f"  driver: {cpu:.1f} CPU-s = {ms:.2f} ms/request (goal <= {GOAL_CPU_MS:g}: "
          f"{'met' if ms <= GOAL_CPU_MS else 'MISSED'}), peak RSS {r['driver_peak_mb']:.0f} MB (goal <= "
          f"{GOAL_PEAK_MB}: {'met' if r['driver_peak_mb'] <= GOAL_PEAK_MB else 'MISSED'})")
    if r["others"]:
        others = ", ".join(f"{k} {v:.1f} CPU-s ({1000 * v / sent:.2f} ms/request)"
                           for k, v in sorted(r["others"].items()))
        print(f"  others: {others}")
    print(f"  peak RSS of all of ours together {r['peak_total_mb']:.0f} MB (goal <= {GOAL_PEAK_MB}: "
          f"{'met' if r['peak_total_mb'] <= GOAL_PEAK_MB else 'MISSED'})")
    split = m.get("split") or {}
    counts = (m.get("source") or {}).get("counts") or m.get("source_counts")
    print(f"  split {split.get('method')}: {split.get('dialogues')}; skipped invalid: "
          f"{len(split.get('skipped_invalid') or [])}" + (f"; source counts {counts}" if counts else ""))
    for t, info in mining.items():
        lost = {k: v for k, v in info["outcomes"].items() if k.startswith("failed:")}
        print(f"  {t.upper()}: pairs {info['pairs']}, outcomes {info['outcomes']}" + (f" LOST {lost}" if lost else ""))
    for c, info in judge.items():
        print(f"  judge {c}: {info['retained']:,} of {info['judged']:,} retained, {info['judge_failures']} judge "
              "failures")
    if not m.get("complete", True):
        print(f"  INCOMPLETE: {m.get('incomplete')}")
    noise = [line for line in r["stderr"].splitlines() if "warn" in line.lower() or "error" in line.lower()]
    if noise:
        print("  stderr warnings/errors:\n    " + "\n    ".join(noise[:20]))


def part_profile(path: Path, tokenizer: str, concurrency: int) -> None:
    import pstats

    prof = path.parent / "driver.prof"  # kept for a closer look: python -m pstats PATH
    r = full(path, tokenizer, "profile", ["--concurrency", str(concurrency)], profile=prof)
    stats = pstats.Stats(str(prof))
    sent = sum(info["accounting"]["sent"] for part in ("mining", "judge")
               for info in (r["manifest"].get(part) or {}).values())
    areas: dict[str, float] = {}
    for (filename, _, function), (_, _, own, _, _) in stats.stats.items():
        areas[area(filename, function)] = areas.get(area(filename, function), 0.0) + own
    total = sum(areas.values())
    print(f"driver profile (local executor: {sent:,} requests sent; CPU time, inflated by cProfile's own overhead): "
          f"{total:.1f} s in all, {1000 * total / sent:.2f} ms per request sent")
    for name, own in sorted(areas.items(), key=lambda kv: -kv[1])[:14]:
        print(f"  {name:<44}{own:>7.2f} s {100 * own / total:>5.1f}%")
    print("top functions by own time:")
    stats.sort_stats("tottime").print_stats(20)
    print("top functions by cumulative time:")
    stats.sort_stats("cumulative").print_stats(30)
    print(f"the profile: {prof}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=None,
                        help=f"dialogues in the corpus (default {EXTES_DIALOGUES:,}; 500 with --only profile)")
    parser.add_argument("--only", choices=("dry", "local", "ray", "profile"),
                        help="one part (default: dry, local with validate, ray)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus (default 0)")
    parser.add_argument("--workers", type=int, default=4, help="Ray workers (default 4)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="requests in flight in all (default 64; Ray: shared out among the workers)")
    parser.add_argument("--trim-tokenizer", default="none",
                        help="the builds' --trim-tokenizer (default none, as bench_scale.py; bundled: the default)")
    a = parser.parse_args()
    dialogues = a.dialogues or (500 if a.only == "profile" else EXTES_DIALOGUES)
    path, s = corpus(dialogues, a.seed)
    print(f"corpus {path} ({path.stat().st_size / 2**20:.0f} MB): {s['dialogues']:,} dialogues, "
          f"{s['utterances']:,} utterances, {s['supporter']:,} supporter turns ({s['labelled']:,} labelled = "
          f"{s['labelled'] / s['dialogues']:.2f} a dialogue, {s['empty']:,} with an empty label, "
          f"{s['ai_objects']} AI objects); words: seeker {s['seeker_words'] / s['seeker']:.1f}, supporter "
          f"{s['supporter_words'] / s['supporter']:.1f} on average", flush=True)
    parts = [a.only] if a.only else ["dry", "local", "ray"]
    per_worker = max(1, a.concurrency // a.workers)
    for part in parts:
        if part == "dry":
            dry(path, a.trim_tokenizer)
        elif part == "local":
            full(path, a.trim_tokenizer, "local", ["--concurrency", str(a.concurrency)], validate=True)
        elif part == "ray":
            full(path, a.trim_tokenizer, f"ray, {a.workers} workers x {per_worker}",
                 ["--executor", "ray", "--workers", str(a.workers), "--concurrency", str(per_worker)])
        else:
            part_profile(path, a.trim_tokenizer, a.concurrency)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
