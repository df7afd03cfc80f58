"""Participant output units on disk: find them, and read the microbleeds counted for
each (a rater's review when there is one, else the automatic detection).

Used by the group level (:mod:`cmbprep.group.units`) and by the participant level's
longitudinal step (:func:`cmbprep.utils.derivatives.collect_session_series`); reads
only the files ``docs/architecture.rst`` lists under "Participant outputs".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import DataError
from .tables import read_rows as _read_rows

ENTITY_RE = re.compile(r"(sub|ses|acq|run)-([a-zA-Z0-9]+)")
#: File name endings of a unit's outputs -> their key in a unit.
UNIT_FILES = {"_desc-cmb_cmb.tsv": "cmb", "_desc-candidates_cmb.tsv": "candidates",
              "_desc-reviewed_cmb.tsv": "reviewed", "_desc-summary_cmb.json": "summary",
              "_manifest.json": "manifest"}


def normalise_label(label):
    """A participant label without its ``sub-`` prefix (``"sub-01"`` -> ``"01"``)."""
    label = str(label).strip()
    return label[4:] if label.startswith("sub-") else label


def find_participant_units(output_dir, participant_labels=None):
    """Find participant output units (one per ``sub/ses/acq/run`` prefix).

    Returns
    -------
    (dict, list of str)
        ``{prefix: {"entities": {...}, "cmb": path, "candidates": path, "reviewed":
        path, "summary": path}}`` and the labels of participant folders without any
        CMB output.
    """
    output_dir = Path(output_dir)
    wanted = ({normalise_label(x) for x in participant_labels}
              if participant_labels else None)
    units = {}
    empty = []
    for sub_dir in sorted(output_dir.glob("sub-*")):
        if not sub_dir.is_dir():
            continue
        label = sub_dir.name[4:]
        if wanted is not None and label not in wanted:
            continue
        found = False
        for anat in sorted([sub_dir / "anat", *sub_dir.glob("ses-*/anat")]):
            if not anat.is_dir():
                continue
            for path in sorted(anat.iterdir()):
                for suffix, kind in UNIT_FILES.items():
                    if path.name.endswith(suffix) and path.name.startswith(f"sub-{label}"):
                        prefix = path.name[: -len(suffix)]
                        unit = units.setdefault(prefix, {"entities": dict(
                            ENTITY_RE.findall(prefix)), "folder": anat})
                        unit[kind] = path
                        found = True
        if not found:
            empty.append(label)
    return units, empty


def _review_rows(path):
    """The rows of ``_desc-reviewed_cmb.tsv`` by rater, each row's status checked.

    The table of ``cmbprep-review`` has a ``rater`` column (one row per rater and
    candidate); a table without it (a rater's hand-edited copy of the candidate table)
    is one rater's, named by its sidecar's ``"Rater"`` (``None`` when not given).
    """
    table = _read_rows(path)
    if "status" not in table.columns:
        raise DataError(f"{path}: no 'status' column (the rater must set "
                        "status to 'cmb' or 'rejected' for every candidate)")
    for row in table:
        row["status"] = (row["status"] or "review").lower()
    unknown = sorted({r["status"] for r in table} - {"cmb", "rejected", "review"})
    if unknown:
        raise DataError(f"{path}: status must be cmb, rejected or review, "
                        f"found {unknown}")
    if "rater" in table.columns:
        by_rater = {}
        for row in table:
            by_rater.setdefault(row["rater"] or "unknown", []).append(row)
        return dict(sorted(by_rater.items())), table.columns
    rater = None
    sidecar = Path(path).with_suffix(".json")
    if sidecar.exists():
        try:
            rater = json.loads(sidecar.read_text()).get("Rater")
        except (ValueError, AttributeError):
            rater = None
    return {rater: list(table)}, table.columns


def review_decisions(path):
    """``{rater: {candidate_id: decision}}`` of a reviewed table (decision ``yes``,
    ``no``, ``unsure`` or ``None`` while undecided; from ``status`` without a
    ``decision`` column)."""
    by_rater, columns = _review_rows(path)
    from_status = {"cmb": "yes", "rejected": "no", "review": None}
    decisions = {}
    for rater, rows in by_rater.items():
        mine = decisions.setdefault(rater or "unknown", {})
        for row in rows:
            if row.get("candidate_id") is None:
                raise DataError(f"{path}: a row without candidate_id")
            decision = (row.get("decision") or "").lower() if "decision" in columns \
                else from_status[row["status"]]
            mine[str(row["candidate_id"])] = decision or None
    return decisions


def _reviewed_counts(path, rater=None):
    """The microbleeds the chosen rater accepted in ``_desc-reviewed_cmb.tsv``.

    ``rater`` chooses among several raters (default: the first by name); ``None`` is
    returned when the table has no rows of the chosen rater.
    """
    by_rater, columns = _review_rows(path)
    if rater is None:
        chosen = next(iter(by_rater), None)
    else:
        chosen = rater
    if chosen not in by_rater:
        return None
    rows = by_rater[chosen]
    return {"cmbs": [r for r in rows if r["status"] == "cmb"],
            "columns": columns, "source": "rater", "path": path,
            "pending": sum(r["status"] == "review" for r in rows), "rater": chosen,
            "n_raters": len(by_rater)}


def _automatic_counts(unit):
    """The automatic detection's accepted microbleeds and the candidates left to review."""
    cmbs = _read_rows(unit["cmb"])
    pending = None
    if "candidates" in unit:
        candidates = _read_rows(unit["candidates"])
        if "status" in candidates.columns:
            pending = sum((r["status"] or "").lower() == "review" for r in candidates)
    return {"cmbs": cmbs, "columns": cmbs.columns, "source": "automatic",
            "path": unit["cmb"], "pending": pending, "rater": None}


def counted_cmbs(unit, rater=None):
    """The microbleeds counted for a unit: the chosen rater's review when there is one,
    else the automatic detection; ``None`` without either table.

    Returns
    -------
    dict or None
        ``cmbs`` (rows), ``columns``, ``source`` (``rater``/``automatic``), ``path``,
        ``pending`` (candidates left to review) and ``rater``.
    """
    counted = _reviewed_counts(unit["reviewed"], rater) if "reviewed" in unit else None
    if counted is None and "cmb" in unit:
        counted = _automatic_counts(unit)
    return counted
