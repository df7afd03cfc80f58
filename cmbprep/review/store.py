"""The rater's review on disk: the candidate queue and ``<prefix>_desc-reviewed_cmb.tsv``.

One reviewed table per participant unit, beside the unit's candidate table, with one row
per rater and candidate of that rater's queue (long format, so two raters share the
file and the group level finds it where it always has):

``candidate_id``
    The candidate (``candidate_id`` of ``_desc-candidates_cmb.tsv``).
``rater``
    Who decided.
``decision``
    ``yes`` (a microbleed), ``no`` or ``unsure``; ``n/a`` while not decided.
``decided_at``
    When (UTC, ISO 8601); ``n/a`` while not decided.
``status``
    What the group level counts: ``cmb`` (decision yes), ``rejected`` (no) or
    ``review`` (unsure or not decided yet: not counted, reported as pending).
``auto_status``
    The detector's status of the candidate (``cmb``, ``review`` or ``rejected``).

followed by the candidate's position, size, score and region columns. Every decision
rewrites the table at once (a temporary file in the same folder, then a rename) under a
lock on the folder, so a second rater's server, a crash or a closed browser never loses
or mixes a decision. A reviewed table without a ``rater`` column (the hand-edited table
of earlier versions) is read as one rater's: the sidecar's ``"Rater"`` (or ``unknown``),
decisions from ``status``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import __version__
from ..errors import DataError, InputMissingError, OutputError
from ..utils.io import write_json_atomic, write_text_atomic
from ..utils.tables import NA, tsv_text

#: decision -> the status the group level counts.
DECISION_STATUS = {"yes": "cmb", "no": "rejected", "unsure": "review"}
#: Candidate columns copied into the reviewed table (those the candidate table has).
CANDIDATE_COLUMNS = ("score", "x", "y", "z", "i", "j", "k", "volume_mm3", "diameter_mm",
                     "region", "lobe", "hemisphere", "mars_category", "mni_x", "mni_y",
                     "mni_z")
REVIEW_COLUMNS = ("candidate_id", "rater", "decision", "decided_at", "status",
                  "auto_status")
RATER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
COLUMN_DESCRIPTIONS = {
    "candidate_id": {"Description": "Candidate (candidate_id of _desc-candidates_cmb.tsv)"},
    "rater": {"Description": "Rater who decided"},
    "decision": {"Description": "The rater's decision; n/a while not decided", "Levels": {
        "yes": "a microbleed", "no": "not a microbleed", "unsure": "cannot tell"}},
    "decided_at": {"Description": "Time of the decision (UTC, ISO 8601); n/a while not "
                                  "decided"},
    "status": {"Description": "What the group level counts", "Levels": {
        "cmb": "decision yes (counted)", "rejected": "decision no",
        "review": "unsure or not decided yet (not counted; reported as pending)"}},
    "auto_status": {"Description": "The detector's status of the candidate", "Levels": {
        "cmb": "accepted", "review": "left for review", "rejected": "rejected"}},
}


def check_rater(name: str) -> str:
    """A valid rater name (letters, digits, ``.``, ``_``, ``-``; at most 40), or UsageError."""
    from ..errors import UsageError

    name = str(name).strip()
    if not RATER_RE.match(name):
        raise UsageError(f"rater name {name!r}: use 1-40 letters, digits, '.', '_' or '-' "
                         "(starting with a letter or digit)")
    return name


def now_iso() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Unit:
    """One participant unit with a candidate table."""

    prefix: str
    root: Path
    folder: Path
    candidates_tsv: Path
    candidates: pd.DataFrame = field(repr=False)

    @property
    def reviewed_tsv(self) -> Path:
        return self.folder / f"{self.prefix}_desc-reviewed_cmb.tsv"


def find_units(output_dir, participant_label, session=None) -> list[Unit]:
    """The participant's units (``_desc-candidates_cmb.tsv`` files), sorted by prefix.

    Raises
    ------
    InputMissingError
        No participant folder, or no candidate table in it (exit 66).
    DataError
        A candidate table without ``candidate_id``, ``x``, ``y``, ``z`` or ``status``.
    """
    output_dir = Path(output_dir)
    label = str(participant_label)
    label = label[4:] if label.startswith("sub-") else label
    sub_dir = output_dir / f"sub-{label}"
    if not sub_dir.is_dir():
        raise InputMissingError(f"{sub_dir}: no such participant folder (run the "
                                "participant level first)")
    pattern = "anat/*_desc-candidates_cmb.tsv"
    if session:
        session = session[4:] if str(session).startswith("ses-") else session
        paths = sorted((sub_dir / f"ses-{session}").glob(pattern))
    else:
        paths = sorted([*sub_dir.glob(pattern), *sub_dir.glob(f"ses-*/{pattern}")])
    if not paths:
        where = sub_dir / f"ses-{session}" if session else sub_dir
        raise InputMissingError(f"{where}: no candidate table (*_desc-candidates_cmb.tsv)")
    units = []
    for path in paths:
        try:
            table = pd.read_csv(path, sep="\t", na_values=[NA, ""], keep_default_na=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the table ({exc})") from exc
        missing = [c for c in ("candidate_id", "x", "y", "z", "status")
                   if c not in table.columns]
        if missing:
            raise DataError(f"{path}: no column(s) {missing}")
        table["candidate_id"] = table["candidate_id"].astype(int)
        units.append(Unit(prefix=path.name[: -len("_desc-candidates_cmb.tsv")],
                          root=output_dir, folder=path.parent, candidates_tsv=path, candidates=table))
    return units


def check_writable(units) -> None:
    """Fail with :class:`OutputError` (exit 73) naming the first unit folder in which a
    file cannot be created (read-only file system, permissions)."""
    for unit in units:
        try:
            fd, tmp = tempfile.mkstemp(dir=unit.folder, prefix=".cmbprep-review-check.",
                                       suffix=".tmp")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise OutputError(f"{unit.folder}: cannot write the review there "
                              f"({exc.strerror or exc}); the derivatives folder must be "
                              "writable to record decisions") from exc


def build_queue(units, min_score=None) -> list[dict]:
    """The candidates to show, in order.

    Per unit: the accepted (``cmb``) and ``review`` candidates by decreasing score, then,
    with ``min_score``, the rejected ones scoring at least ``min_score`` by decreasing
    score. Each item: ``item`` (position), ``unit`` (index into ``units``), ``prefix``,
    ``candidate_id``, ``auto_status`` and the candidate columns present (missing values
    as ``None``).
    """
    queue = []
    for index, unit in enumerate(units):
        table = unit.candidates
        status = table["status"].fillna("").str.lower()
        score = table["score"] if "score" in table else pd.Series(0.0, index=table.index)
        order = table.assign(_score=score.fillna(-1.0)).sort_values(
            ["_score", "candidate_id"], ascending=[False, True], kind="stable")
        first = order[status.loc[order.index].isin(["cmb", "review"])]
        parts = [first]
        if min_score is not None:
            rest = order[(status.loc[order.index] == "rejected") &
                         (order["_score"] >= float(min_score))]
            parts.append(rest)
        for _, row in pd.concat(parts).iterrows():
            item = {"item": len(queue), "unit": index, "prefix": unit.prefix,
                    "candidate_id": int(row["candidate_id"]),
                    "auto_status": str(row["status"]).lower()}
            for column in CANDIDATE_COLUMNS:
                if column in table.columns:
                    value = row[column]
                    item[column] = None if pd.isna(value) else (
                        value.item() if hasattr(value, "item") else value)
            queue.append(item)
    return queue


@contextmanager
def folder_lock(folder):
    """An exclusive ``flock`` on the folder itself (no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _legacy_rater(path):
    sidecar = Path(path).with_suffix(".json")
    try:
        rater = json.loads(sidecar.read_text()).get("Rater")
    except (OSError, ValueError, AttributeError):
        rater = None
    return str(rater) if rater else "unknown"


def read_reviewed(path) -> pd.DataFrame:
    """The reviewed table in the long format (an empty one when the file is missing);
    a table without ``rater`` (hand-edited, earlier versions) is converted."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(REVIEW_COLUMNS))
    try:
        table = pd.read_csv(path, sep="\t", na_values=[NA, ""], keep_default_na=False,
                            dtype={"rater": str, "decision": str, "decided_at": str,
                                   "status": str, "auto_status": str})
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the table ({exc})") from exc
    if "candidate_id" not in table or "status" not in table:
        raise DataError(f"{path}: no 'candidate_id' or 'status' column")
    if "rater" not in table:
        table = table.copy()
        table["auto_status"] = None
        table["rater"] = _legacy_rater(path)
        status = table["status"].fillna("review").str.lower()
        table["decision"] = status.map({"cmb": "yes", "rejected": "no"})
        table["decided_at"] = None
    table["candidate_id"] = table["candidate_id"].astype(int)
    return table


def _review_sidecar(unit, table):
    raters = sorted(set(table["rater"].dropna()))
    sidecar = {
        **{c: COLUMN_DESCRIPTIONS[c] for c in REVIEW_COLUMNS},
        "Description": "A rater's review of the detector's candidates (cmbprep-review): "
                       "one row per rater and candidate shown to that rater.",
        "Sources": [f"bids::{unit.candidates_tsv.relative_to(unit.root).as_posix()}"],
        "Raters": raters,
        "GeneratedBy": [{"Name": "cmbprep-review", "Version": __version__}],
    }
    if len(raters) == 1:
        sidecar["Rater"] = raters[0]
    return sidecar


def _with_queue_rows(table, unit, rater, items):
    """``table`` plus an undecided row for every item of ``rater``'s queue it lacks."""
    have = set(table.loc[table["rater"] == rater, "candidate_id"].astype(int))
    new = []
    candidates = unit.candidates.set_index("candidate_id")
    for item in items:
        if item["candidate_id"] in have:
            continue
        row = {"candidate_id": item["candidate_id"], "rater": rater, "decision": None,
               "decided_at": None, "status": "review", "auto_status": item["auto_status"]}
        for column in CANDIDATE_COLUMNS:
            if column in candidates.columns:
                row[column] = candidates.at[item["candidate_id"], column]
        new.append(row)
    if not new:
        return table
    frame = pd.DataFrame(new)
    if not len(table):
        return frame
    return pd.concat([table, frame], ignore_index=True)


def _ordered(table, unit):
    columns = list(REVIEW_COLUMNS) + [c for c in CANDIDATE_COLUMNS if c in table.columns]
    columns += [c for c in table.columns if c not in columns]
    table = table[columns].sort_values(["rater", "candidate_id"], kind="stable")
    return table.reset_index(drop=True)


def _describe_extra(sidecar, table, unit):
    """Descriptions of the candidate columns, from the candidate table's sidecar."""
    try:
        source = json.loads(unit.candidates_tsv.with_suffix(".json").read_text())
    except (OSError, ValueError):
        source = {}
    for column in table.columns:
        if column not in sidecar:
            entry = source.get(column)
            sidecar[column] = entry if isinstance(entry, dict) else {
                "Description": f"{column} of the candidate (_desc-candidates_cmb.tsv)"}
    return sidecar


def record_decision(unit, rater, items, candidate_id, decision) -> dict:
    """Record ``rater``'s ``decision`` on a candidate of ``unit`` and rewrite the table.

    ``items`` are the unit's items of the rater's queue (each gets a row, undecided until
    decided). ``decision`` ``None`` clears a decision. Returns the row written (as a
    dict). Reads, changes and writes the table under :func:`folder_lock`.
    """
    rater = check_rater(rater)
    if decision is not None and decision not in DECISION_STATUS:
        raise ValueError(f"decision must be one of {sorted(DECISION_STATUS)}")
    with folder_lock(unit.folder):
        table = _with_queue_rows(read_reviewed(unit.reviewed_tsv), unit, rater, items)
        hit = (table["rater"] == rater) & (table["candidate_id"] == int(candidate_id))
        if not hit.any():
            raise KeyError(f"candidate {candidate_id} is not in {rater}'s queue")
        table = table.astype({"decision": object, "decided_at": object, "status": object})
        table.loc[hit, "decision"] = decision
        table.loc[hit, "decided_at"] = now_iso() if decision is not None else None
        table.loc[hit, "status"] = DECISION_STATUS.get(decision, "review")
        table = _ordered(table, unit)
        write_text_atomic(unit.reviewed_tsv, tsv_text(table))
        sidecar = _describe_extra(_review_sidecar(unit, table), table, unit)
        write_json_atomic(unit.reviewed_tsv.with_suffix(".json"), sidecar)
        row = table[(table["rater"] == rater) &
                    (table["candidate_id"] == int(candidate_id))].iloc[0]
    saved = {k: (None if pd.isna(v) else str(v)) for k, v in row.items()
             if k in REVIEW_COLUMNS}
    saved["candidate_id"] = int(row["candidate_id"])
    return saved


def rater_decisions(unit, rater) -> dict:
    """``{candidate_id: (decision, decided_at)}`` of ``rater`` in the unit's table."""
    table = read_reviewed(unit.reviewed_tsv)
    mine = table[table["rater"] == rater]
    return {int(r.candidate_id): (None if pd.isna(r.decision) else r.decision,
                                  None if pd.isna(r.decided_at) else r.decided_at)
            for r in mine.itertuples()}


def raters(units) -> list[str]:
    """Raters found in the units' reviewed tables."""
    names = set()
    for unit in units:
        names |= set(read_reviewed(unit.reviewed_tsv)["rater"].dropna())
    return sorted(names)
