"""Repeated sessions: counts over time (Poisson GEE) and the rate of new microbleeds.

Beside the cross-sectional tables (one row per participant), when at least one
participant has two or more sessions:

- **Counts over sessions**: every session row of ``group_cmb.tsv`` (the first
  acquisition/run of each session), a Poisson GEE with exchangeable working correlation
  clustered by participant (:func:`cmbprep.algorithms.stats.fit_gee_poisson`), with the
  covariates of the pre-specified model (or ``--model``) and the time since the
  participant's first session in years when the session dates are known.
- **New microbleeds per year**: from the per-participant session tables of the
  participant level (``sub-<label>/anat/<prefix>_desc-sessions_cmb.tsv``, one row per
  session with ``n_new`` and ``interval_days``), a Poisson GLM of ``n_new`` per interval
  with the offset ``log(interval in years)`` (a negative-binomial fit beside it when
  overdispersed). Intervals of unknown length are left out, with a note.

Session dates: ``days_since_reference`` of the session table, else ``acq_time`` of the
input dataset's ``sub-<label>/sub-<label>_sessions.tsv``; without either the sessions
are ordered by label and the time is left out of the GEE (said in a note).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..algorithms import stats
from ..algorithms.longitudinal import parse_acq_times
from ..errors import DataError
from ..utils.bids import read_acq_times
from ..utils.tables import read_tsv
from .covariates import join_covariates
from .models import (LONGITUDINAL_MODEL_COLUMNS, ModelTables, model_formula,
                     note_left_out, prespecified_covariates)
from .selection import COVERAGE_OFFSET, add_coverage_offset, note_mixed_sources

SESSIONS_SUFFIX = "_desc-sessions_cmb.tsv"
SESSION_COLUMNS = ("session_id", "interval_days", "count_source", "n_cmb", "n_new",
                   "registration_ok")
DAYS_PER_YEAR = 365.25
#: Time variable of the GEE and offset column of the rate model.
TIME_COLUMN = "years_since_first"
INTERVAL_OFFSET = "log_interval_years"
PARTICIPANT = "participant_id"


def find_session_tables(output_dir, participant_ids):
    """``{participant_id: path}`` of the session tables of the participant level (the
    first by name when a participant has several, one per acquisition/run)."""
    tables = {}
    for pid in participant_ids:
        found = sorted((output_dir / pid / "anat").glob(f"{pid}*{SESSIONS_SUFFIX}"))
        if found:
            tables[pid] = found[0]
    return tables


def read_session_table(path):
    """A ``_desc-sessions_cmb.tsv`` table, its required columns checked."""
    try:
        table = read_tsv(path, dtype={"session_id": str, "count_source": str})
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable session table ({exc})") from exc
    missing = [c for c in SESSION_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}")
    return table


def _bids_session_days(bids_dir, pid):
    """``{session_id: days since the earliest acq_time}`` from the input dataset's
    ``<pid>_sessions.tsv`` (empty without that file or without any date)."""
    acq_times = read_acq_times(bids_dir, pid)
    times = parse_acq_times(list(acq_times.values()))
    if times.isna().all():
        return {}
    days = (times - times.min()).dt.total_seconds() / 86400.0
    return {str(s): float(d) for s, d in zip(acq_times, days) if pd.notna(d)}


def known_session_days(pid, session_table, bids_dir):
    """Days of each session since the participant's first, and where they come from.

    Returns ``({session_id: days}, "session table" | "sessions.tsv" | None)``.
    """
    if session_table is not None and "days_since_reference" in session_table:
        known = session_table.dropna(subset=["days_since_reference"])
        if len(known):
            return (dict(zip(known["session_id"], known["days_since_reference"]
                             .astype(float))), "session table")
    days = _bids_session_days(bids_dir, pid)
    return days, ("sessions.tsv" if days else None)


def _time_since_first(rows, tables, bids_dir, notes):
    """:data:`TIME_COLUMN` for the session rows (``None`` column when no participant
    with several sessions has dates), and a note on the time used."""
    counts = rows[PARTICIPANT].value_counts()
    repeated = sorted(counts.index[counts > 1])
    days, undated = {}, []
    for pid in sorted(set(rows[PARTICIPANT])):
        known, _source = known_session_days(pid, tables.get(pid), bids_dir)
        days.update({(pid, s): d for s, d in known.items()})
        if pid in repeated and not known:
            undated.append(pid)
    if len(undated) == len(repeated):
        notes.warn("no session dates (days_since_reference of the session tables or "
                   "acq_time of sub-<label>_sessions.tsv): sessions are ordered by "
                   "label and the time since the first session is left out of the GEE")
        return rows.assign(**{TIME_COLUMN: np.nan}), False
    if undated:
        notes.warn(f"{len(undated)} participant(s) with several sessions but no session "
                   f"dates are left out of the GEE: {', '.join(undated)}")
    years = [0.0 if pid not in repeated and (pid, s) not in days
             else days.get((pid, s), np.nan) / DAYS_PER_YEAR
             for pid, s in zip(rows[PARTICIPANT], rows["session_id"])]
    return rows.assign(**{TIME_COLUMN: years}), True


def _interval_rows(tables, failed_sessions, keep_failed_qc, reviewed_only, notes):
    """One row per interval between consecutive sessions (from the session tables,
    ``{participant_id: table}``): ``n_new``, ``count_source`` and the offset
    ``log(interval in years)``."""
    frames = []
    for pid, table in sorted(tables.items()):
        frames.append(table[table["n_new"].notna()].assign(**{PARTICIPANT: pid}))
    if not frames:
        return pd.DataFrame(columns=[PARTICIPANT, "session_id", "n_new", "count_source",
                                     INTERVAL_OFFSET])
    rows = pd.concat(frames, ignore_index=True)
    failed = (rows["registration_ok"].astype(str).str.lower() == "false") | np.array(
        [(p, s) in failed_sessions for p, s in zip(rows[PARTICIPANT], rows["session_id"])],
        dtype=bool)
    if failed.any() and not keep_failed_qc:
        notes.warn(f"{int(failed.sum())} interval(s) whose session failed registration QC "
                   "are left out of the rate of new microbleeds (--keep-failed-qc keeps "
                   "them)")
        rows = rows[~failed]
    if reviewed_only:
        rows = rows[rows["count_source"] == "rater"]
    interval = rows["interval_days"].astype(float)
    unknown = ~(interval > 0)
    if unknown.any():
        notes.warn(f"{int(unknown.sum())} interval(s) of unknown length (interval_days "
                   "n/a) are left out of the rate of new microbleeds: "
                   + ", ".join(f"{p} {s}" for p, s in zip(rows.loc[unknown, PARTICIPANT],
                                                        rows.loc[unknown, "session_id"])))
    rows = rows.assign(**{INTERVAL_OFFSET: np.log(interval.where(~unknown)
                                                  / DAYS_PER_YEAR)})
    return rows.loc[~unknown, [PARTICIPANT, "session_id", "n_new", "count_source",
                               INTERVAL_OFFSET]].reset_index(drop=True)


def _right_hand_side(model, covariates, group_column):
    """Covariates of ``--model`` (its right-hand side as one term) or of the
    pre-specified model."""
    if model:
        return None, [model.split("~", 1)[1].strip() if "~" in model else model]
    return prespecified_covariates(covariates, group_column), []


def _add_models(tables, data, outcome, covariates, extra, analysis, fitter):
    """Fit ``outcome ~ covariates + extra`` with ``fitter(formula)`` and add it."""
    formula, dropped = model_formula(data, outcome, covariates or [], extra)
    try:
        fit = fitter(formula)
    except ValueError as exc:
        raise DataError(f"{analysis} model {formula!r}: {exc}") from exc
    tables.add(analysis, ", ".join(c for c in covariates or [] if c not in dropped)
               or None, note_left_out(fit, dropped), data=data)


def run_longitudinal_models(context, session_rows, covariates, kinds, notes):
    """The GEE of counts over sessions and the rate model of new microbleeds.

    Parameters
    ----------
    context : dict
        ``output_dir``, ``bids_dir``, ``cov_path``, ``model`` (``--model`` or None),
        ``group_column``, ``keep_failed_qc``, ``reviewed_only`` and
        ``failed_sessions`` (set of ``(participant_id, session_id)`` of the units left
        out for registration QC).
    session_rows : pandas.DataFrame
        The analysed rows of ``group_cmb.tsv`` (QC and ``--reviewed-only`` applied).
    covariates : pandas.DataFrame or None
        Indexed by ``participant_id``; ``kinds`` their types.
    notes
        Collects warnings (``notes.warn``).

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame) or None
        Model and term tables (:data:`~.models.LONGITUDINAL_MODEL_COLUMNS`), or
        ``None`` when no participant has two or more sessions.
    """
    if "session_id" not in session_rows:
        return None
    rows = session_rows[session_rows["session_id"].notna()]
    rows = rows.drop_duplicates([PARTICIPANT, "session_id"], keep="first")[
        [PARTICIPANT, "session_id", "n_cmb", "count_source", "brain_coverage_fraction"]]
    if not (rows[PARTICIPANT].value_counts() > 1).any():
        return None
    tables = {pid: read_session_table(path) for pid, path in find_session_tables(
        context["output_dir"], sorted(set(rows[PARTICIPANT]))).items()}
    rows, timed = _time_since_first(rows, tables, context["bids_dir"], notes)
    data = join_covariates(rows.reset_index(drop=True), covariates, kinds,
                           context["cov_path"])
    data, offset = add_coverage_offset(data, notes)
    names = list(covariates.columns) if covariates is not None else []
    chosen, extra = _right_hand_side(context["model"], names, context["group_column"])
    model_tables = ModelTables(data, LONGITUDINAL_MODEL_COLUMNS, prefix="l")
    note_mixed_sources(data["count_source"], "the counts over sessions (GEE)", notes)
    _add_models(model_tables, data, "n_cmb", chosen, extra + [TIME_COLUMN] * timed,
                "repeated_counts", lambda formula: stats.fit_gee_poisson(
                    data, formula, PARTICIPANT, offset=offset))
    _rate_models(model_tables, context, tables, covariates, kinds, chosen, extra, notes)
    return model_tables.frames()


def _rate_models(model_tables, context, tables, covariates, kinds, chosen, extra, notes):
    """Add the Poisson (and negative-binomial) rate model of new microbleeds."""
    if not tables:
        model_tables.skip("new_lesion_rate", None, "n_new ~ ...",
                          "no per-participant session table (_desc-sessions_cmb.tsv "
                          "of the participant level's longitudinal step)")
        return
    intervals = _interval_rows(tables, context["failed_sessions"],
                               context["keep_failed_qc"], context["reviewed_only"], notes)
    intervals = join_covariates(intervals, covariates, kinds, context["cov_path"])
    note_mixed_sources(intervals["count_source"], "the new microbleeds per interval",
                       notes)
    _add_models(model_tables, intervals, "n_new", chosen, extra, "new_lesion_rate",
                lambda formula: stats.fit_count_model(intervals, formula,
                                                      offset=INTERVAL_OFFSET))


__all__ = ["COVERAGE_OFFSET", "find_session_tables", "read_session_table",
           "known_session_days", "run_longitudinal_models"]
