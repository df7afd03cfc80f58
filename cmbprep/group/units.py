"""Participant output units as rows of ``group_cmb.tsv``.

A unit is one ``sub/ses/acq/run`` prefix of the participant outputs
(``docs/architecture.rst``, "Participant outputs"), found and read by
:mod:`cmbprep.utils.units`; :func:`summarise_unit` turns it into one row of
``group_cmb.tsv``, counting a rater's review when there is one (see
:mod:`cmbprep.group`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..errors import DataError
from ..reports.participant import MARS_CATEGORIES
from ..utils.units import (counted_cmbs, find_participant_units, normalise_label,
                           review_decisions)

__all__ = ["LOBES", "counted_cmbs", "find_participant_units", "normalise_label",
           "review_decisions", "summarise_unit"]

LOBES = ("frontal", "parietal", "temporal", "occipital", "insula", "cingulate")


def _lobe_column(value):
    value = re.sub(r"[^a-z0-9]+", "_", str(value).strip().lower()).strip("_")
    if value in ("nan", "none", "n_a"):  # a missing value written as text
        return None
    for lobe in LOBES:
        if lobe in value:
            return f"n_lobe_{lobe}"
    return f"n_lobe_{value}" if value else None


def _region_counts(cmbs):
    """``n_<MARS category>``, ``n_not_assigned`` and ``n_lobe_<lobe>`` of the rows."""
    row = {}
    mars = [(r.get("mars_category") or "").lower() for r in cmbs]
    for category in MARS_CATEGORIES:
        row[f"n_{category}"] = mars.count(category)
    row["n_not_assigned"] = sum(m not in MARS_CATEGORIES for m in mars)
    for lobe in LOBES:
        row[f"n_lobe_{lobe}"] = 0
    for r in cmbs:
        column = _lobe_column(r["lobe"]) if r.get("lobe") else None
        if column:
            row[column] = row.get(column, 0) + 1
    return row


def _total_volume(counted):
    cmbs = counted["cmbs"]
    if "volume_mm3" not in counted["columns"]:
        return 0.0 if len(cmbs) == 0 else math.nan
    try:
        return float(sum(float(r["volume_mm3"]) for r in cmbs))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{counted['path']}: column 'volume_mm3' has a missing or "
                        "non-numeric value") from exc


def _qc_columns(unit):
    """Detector and QC flags from the unit's ``_desc-summary_cmb.json`` (n/a without)."""
    summary = {}
    if "summary" in unit:
        try:
            summary = json.loads(Path(unit["summary"]).read_text())
        except ValueError as exc:
            raise DataError(f"{unit['summary']}: not valid JSON ({exc})") from exc
    reg_warnings = list(summary.get("registration_warnings") or [])
    not_covered = list(summary.get("regions_not_covered") or [])
    reg_ok = summary.get("registration_ok")
    row = {
        "detector": summary.get("detector"),
        "registration_ok": None if reg_ok is None else bool(reg_ok),
        "n_registration_warnings": len(reg_warnings) if summary else None,
        "registration_warnings": "; ".join(map(str, reg_warnings)) or None,
        "regions_not_covered": "; ".join(map(str, not_covered)) or None,
        "brain_coverage_fraction": summary.get("brain_coverage_fraction"),
        "fov_complete": (not not_covered) if summary else None,
    }
    row["qc_pass"] = (None if not summary else
                      bool(row["registration_ok"] is not False and not reg_warnings
                           and not not_covered))
    return row


def summarise_unit(unit, output_dir, rater=None):
    """One ``group_cmb.tsv`` row for a participant unit, or ``None`` without a table.

    ``rater`` (``--rater``): count that rater's review, and the automatic detection
    where that rater has not reviewed the unit.
    """
    entities = unit["entities"]
    row = {"participant_id": f"sub-{entities['sub']}",
           "session_id": f"ses-{entities['ses']}" if "ses" in entities else None,
           "acquisition": entities.get("acq"),
           "run": entities.get("run")}
    counted = counted_cmbs(unit, rater)
    if counted is None:
        return None
    row.update({"count_source": counted["source"], "rater": counted["rater"],
                "n_cmb": len(counted["cmbs"])})
    row.update(_region_counts(counted["cmbs"]))
    row["total_volume_mm3"] = _total_volume(counted)
    row["n_review_pending"] = counted["pending"]
    row.update(_qc_columns(unit))
    row["cmb_table"] = Path(counted["path"]).relative_to(output_dir).as_posix()
    return row
