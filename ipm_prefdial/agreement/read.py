"""Reading what is compared: the build's judge verdicts, people's annotation files and another judge's labels."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ipm_prefdial.errors import InputError
from ipm_prefdial.jsonlines import json_objects
from ipm_prefdial.mining.judge import ERROR_TYPES, JUDGED, JUDGED_CONFIGS, NO_ERROR
from ipm_prefdial.release.features import RETAINED_OF, data_file

LABELS = (NO_ERROR, *ERROR_TYPES)  # the order of the confusion matrices
REPLIES = ("chosen", "rejected")
PREFERENCES = ("chosen", "rejected", "tie")
SPLITS = ("train", "validation")
JUDGE = "judge"  # the rater name of the build's judge

Item = tuple[str, str, str]  # (config, id, reply): one reply, the unit of the per-reply figures
PairKey = tuple[str, str]  # (config, id)


def pair_digest(chosen: str, rejected: str) -> str:
    """A short digest of a pair's two replies. `ipm view` writes it into each annotation, so labels given to one
    build's replies are never counted against another build whose pair has the same id."""
    return hashlib.sha256(f"{chosen}\0{rejected}".encode()).hexdigest()[:16]


class AgreementError(InputError):
    """Bad input: one line naming the file, the line and the field."""


@dataclass
class Verdicts:
    """What the build says: the ids of each judged pair config and the judge's label of each judged reply."""

    directory: Path
    ids: dict[str, set[str]]  # config -> ids over both splits
    labels: dict[Item, str]  # the judge's labels; only pairs whose judge_status is "judged"
    status: dict[PairKey, str]  # judge_status of every pair
    digests: dict[PairKey, str] = field(default_factory=dict)  # pair_digest of every pair's replies


@dataclass
class Ratings:
    """Labels of raters other than the build's judge, as read from files."""

    labels: dict[str, dict[Item, str]] = field(default_factory=dict)  # rater -> reply -> label
    preferences: dict[str, dict[PairKey, str]] = field(default_factory=dict)  # annotator -> pair -> preference
    replaced: dict[str, int] = field(default_factory=dict)  # rater -> labellings replaced by a later one


# ---------------------------------------------------------------------------------------------------- reading


def read_build(directory: str | Path) -> Verdicts:
    """The judged pair configs of a build (both splits): their ids, and the judge's labels where it gave some."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AgreementError(f"{directory}: no such build directory")
    ids: dict[str, set[str]] = {}
    labels: dict[Item, str] = {}
    status: dict[PairKey, str] = {}
    digests: dict[PairKey, str] = {}
    for config in JUDGED_CONFIGS:
        for split in SPLITS:
            path = directory / data_file(config, split)
            if not path.is_file():
                continue
            for row in _parquet_rows(path):
                ids.setdefault(config, set()).add(row["id"])
                if row.get("chosen") and row.get("rejected"):
                    digests[(config, row["id"])] = pair_digest(row["chosen"][0]["content"],
                                                               row["rejected"][0]["content"])
                state = row["judge_status"]
                status[(config, row["id"])] = state
                if state == JUDGED and row["judge"] is not None:
                    for reply in REPLIES:
                        labels[(config, row["id"], reply)] = row["judge"][f"{reply}_error"] or NO_ERROR
    if not ids:
        wanted = " or ".join(data_file(c, "train") for c in JUDGED_CONFIGS)
        raise AgreementError(f"{directory}: no judged pair data ({wanted}); build it with ipm build --stage all")
    return Verdicts(directory, ids, labels, status, digests)


def _parquet_rows(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
        missing = [c for c in ("id", "judge") if c not in names]
        if missing:
            raise AgreementError(f"{path}: no column {', '.join(missing)} (not a pair config of ipm build)")
        columns = ["id", "judge", *(c for c in ("judge_status", "chosen", "rejected") if c in names)]
        rows = pq.read_table(path, columns=columns).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise AgreementError(f"{path}: cannot read the parquet file ({exc})") from None
    for row in rows:  # a build from before judge_status: a verdict is there or not
        row.setdefault("judge_status", JUDGED if row["judge"] is not None else "missing")
    return rows


def _field(obj: dict, name: str, where: str) -> object:
    if name not in obj:
        raise AgreementError(f"{where}: missing field {name}")
    return obj[name]


def _text(obj: dict, name: str, where: str) -> str:
    value = _field(obj, name, where)
    if not isinstance(value, str) or not value:
        raise AgreementError(f"{where}: field {name} must be a non-empty string, not {value!r}")
    return value


def _label(value: object, name: str, where: str) -> str:
    if value not in LABELS:
        raise AgreementError(f"{where}: field {name}: unknown label {value!r} (expected one of "
                             f"{', '.join(LABELS)})")
    return value  # type: ignore[return-value]


def _pair(obj: dict, verdicts: Verdicts, where: str) -> PairKey:
    """The (config, id) a line names, a *_retained config read as its parent; both must be in the build."""
    config = _text(obj, "config", where)
    parent = RETAINED_OF.get(config, config)
    if parent not in JUDGED_CONFIGS:
        known = ", ".join((*JUDGED_CONFIGS, *RETAINED_OF))
        raise AgreementError(f"{where}: field config: unknown config {config!r} (expected one of {known})")
    if parent not in verdicts.ids:
        raise AgreementError(f"{where}: field config: {config!r} is not in the build {verdicts.directory} (it has "
                             f"{', '.join(sorted(verdicts.ids))})")
    row_id = _text(obj, "id", where)
    if row_id not in verdicts.ids[parent]:
        raise AgreementError(f"{where}: field id: {row_id!r} is not a pair of {parent} in {verdicts.directory}")
    return parent, row_id


def _time(obj: dict, where: str) -> datetime | None:
    value = obj.get("time")
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise AgreementError(f"{where}: field time: {value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def read_annotations(paths: Iterable[str | Path], verdicts: Verdicts) -> Ratings:
    """People's labels and preferences, from annotation files (one line per annotated pair, any annotators).

    When an annotator labelled a pair more than once, the line with the latest ``time`` is kept (among equal or
    missing times, the later line, files in the order given); ``replaced`` counts the others. A reply label that
    is null or absent means the reply was not labelled; a null or absent preference means none was given."""
    records: dict[tuple[str, PairKey], list[tuple[tuple, dict[str, str], str | None]]] = {}
    seq = 0
    for path in map(Path, paths):
        for number, obj in json_objects(path, AgreementError):
            where = f"{path}:{number}"
            pair = _pair(obj, verdicts, where)
            digest = obj.get("pair_sha256")
            if digest is not None and verdicts.digests.get(pair) not in (None, digest):
                raise AgreementError(f"{where}: field pair_sha256: the replies annotated are not those of "
                                     f"{pair[0]}/{pair[1]} in this build (an annotation of another build?)")
            annotator = _text(obj, "annotator", where)
            if annotator == JUDGE:
                raise AgreementError(f"{where}: field annotator: {JUDGE!r} names the build's judge; give the "
                                     "person another name")
            labels = _field(obj, "labels", where)
            if not isinstance(labels, dict):
                raise AgreementError(f"{where}: field labels must be an object with chosen and rejected")
            extra = sorted(set(labels) - set(REPLIES))
            if extra:
                raise AgreementError(f"{where}: field labels: unknown reply {extra[0]!r} (expected chosen, "
                                     "rejected)")
            given = {reply: _label(labels[reply], f"labels.{reply}", where)
                     for reply in REPLIES if labels.get(reply) is not None}
            preference = obj.get("preference")
            if preference is not None and preference not in PREFERENCES:
                raise AgreementError(f"{where}: field preference: unknown preference {preference!r} (expected "
                                     f"{', '.join(PREFERENCES)} or null)")
            moment = _time(obj, where)
            seq += 1
            key = (moment is not None, moment or datetime.min.replace(tzinfo=timezone.utc), seq)
            records.setdefault((annotator, pair), []).append((key, given, preference))
    ratings = Ratings()
    for (annotator, pair), versions in sorted(records.items()):
        _, given, preference = max(versions, key=lambda v: v[0])
        labels_of = ratings.labels.setdefault(annotator, {})
        for reply, label in given.items():
            labels_of[(*pair, reply)] = label
        prefs = ratings.preferences.setdefault(annotator, {})
        if preference is not None:
            prefs[pair] = preference
        ratings.replaced[annotator] = ratings.replaced.get(annotator, 0) + len(versions) - 1
    return ratings


def read_references(paths: Iterable[str | Path], verdicts: Verdicts, annotators: Iterable[str] = ()) -> Ratings:
    """Per-reply labels of other judges. A file is one rater named by its stem (gpt4o.jsonl: gpt4o) unless its
    lines carry a ``rater`` field. A JSON null ``error`` means no error, as in the build. When a reply is
    labelled twice by one rater, the later line is kept and counted in ``replaced``."""
    taken = set(annotators)
    ratings = Ratings()
    for path in map(Path, paths):
        for number, obj in json_objects(path, AgreementError):
            where = f"{path}:{number}"
            pair = _pair(obj, verdicts, where)
            rater = _text(obj, "rater", where) if "rater" in obj else path.stem
            if rater == JUDGE or rater in taken:
                whose = "the build's judge" if rater == JUDGE else "an annotator"
                named = "field rater" if "rater" in obj else "the file's name"
                raise AgreementError(f"{where}: {named}: rater {rater!r} is already {whose}; give the reference "
                                     "lines a \"rater\" field with another name")
            reply = _text(obj, "reply", where)
            if reply not in REPLIES:
                raise AgreementError(f"{where}: field reply: unknown reply {reply!r} (expected chosen, rejected)")
            error = _field(obj, "error", where)
            label = NO_ERROR if error is None else _label(error, "error", where)
            labels_of = ratings.labels.setdefault(rater, {})
            if (*pair, reply) in labels_of:
                ratings.replaced[rater] = ratings.replaced.get(rater, 0) + 1
            labels_of[(*pair, reply)] = label
            ratings.replaced.setdefault(rater, 0)
    return ratings
