"""The group level's entry point, :func:`run_group`: read, analyse, write.

Reads the participant outputs (:mod:`.units`) and the covariates (:mod:`.covariates`),
writes ``group_cmb.tsv``, the prevalence and regression tables (:mod:`.analysis`, with
the sidecars of :mod:`.sidecars`), ``group_cmb_provenance.json`` and the report
(:mod:`cmbprep.reports.group`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import DataError, InputMissingError
from ..utils.io import write_text_atomic
from ..utils.tables import write_tsv
from . import sidecars
from .analysis import SIGNIFICANCE, run_prevalence, run_regressions
from .covariates import parse_prevalence_by, read_covariates
from .units import (LOBES, MARS_CATEGORIES, find_participant_units, normalise_label,
                    summarise_unit)

LOGGER = logging.getLogger("cmbprep.group")


class _Notes(list):
    """Warnings of the run: logged, and kept for the provenance file and the report."""

    def warn(self, message):
        LOGGER.warning(message)
        self.append(message)


def run_group(output_dir, bids_dir, *, covariates_file=None, group_column="group",
              prevalence_by=(), model=None, participant_labels=None):
    """Run the group level from the participant outputs.

    Parameters
    ----------
    output_dir : path-like
        The cmbprep output folder holding the participant outputs; tables and the report
        are written there.
    bids_dir : path-like
        The input BIDS dataset (only its ``participants.tsv``/``.json`` is read).
    covariates_file : path-like, optional
        Covariates table instead of ``participants.tsv`` (TSV, or CSV by extension).
    group_column : str
        Categorical covariate telling groups apart (e.g. patients vs controls).
    prevalence_by : sequence of str
        ``"column:edges"`` (e.g. ``"platelet_nadir:0,5,10,15"``: bins [0, 5), [5, 10),
        [10, 15), [15, inf) with a trend test) or ``"column"`` (by level).
    model : str, optional
        Multivariate Poisson model formula (patsy), right-hand side or full.
    participant_labels : sequence of str, optional
        Restrict to these participants (with or without ``sub-``).

    Returns
    -------
    dict
        Paths written: ``group_cmb``, ``prevalence``, ``prevalence_tests``,
        ``regression``, ``regression_models`` (TSVs; sidecars beside them),
        ``provenance`` (JSON) and ``report`` (HTML), plus ``skipped`` (list of messages).

    Raises
    ------
    DataError
        Bad covariates (unreadable, non-numeric value in a numeric column, unknown
        column in ``--prevalence-by``/``--group-column``/``--model``) or an unreadable
        participant table (exit 65).
    InputMissingError
        No participant CMB table at all under ``output_dir`` (exit 66).
    """
    from ..reports.group import write_group_report

    output_dir, bids_dir = Path(output_dir), Path(bids_dir)
    notes = _Notes()
    rows, skipped = _summarise_units(output_dir, participant_labels)
    group_cmb = pd.DataFrame(rows)
    bins = [parse_prevalence_by(spec) for spec in prevalence_by]
    cov_path = Path(covariates_file) if covariates_file else bids_dir / "participants.tsv"
    covariates, kinds = _load_covariates(cov_path, covariates_file, bins,
                                         participant_labels, notes)
    if covariates is not None:
        skipped += _listed_without_outputs(covariates, group_cmb, skipped, cov_path)
    for message in skipped:
        notes.warn(f"skipped {message}")
    if not rows:
        raise InputMissingError(f"{output_dir}: no participant CMB tables found "
                                "(run the participant level first)")

    group_cmb = _order_group_cmb(group_cmb)
    written = {}
    written["group_cmb"], _ = write_tsv(group_cmb, output_dir / "group_cmb.tsv",
                                        sidecars.group_cmb_sidecar(group_cmb.columns))
    data = _analysis_data(group_cmb, covariates, kinds, cov_path, notes)
    group = _check_columns(data, group_column, bins, cov_path, notes)
    prevalence, tests = run_prevalence(data, group, bins)
    written.update(_write_prevalence_tables(output_dir, prevalence, tests))
    models, terms, univariate = run_regressions(
        data, list(covariates.columns) if covariates is not None else [], kinds,
        model=model)
    written.update(_write_regression_tables(output_dir, models, terms))

    provenance = _provenance(
        cov_path if covariates is not None else None, kinds, group, bins, model,
        participant_labels, n_rows=len(group_cmb), n_analysed=len(data), skipped=skipped,
        notes=notes)
    written["provenance"] = write_text_atomic(
        output_dir / "group_cmb_provenance.json",
        json.dumps(provenance, indent=2, default=str) + "\n")
    written["report"] = write_group_report(
        output_dir / "group_cmb.html", group_cmb=group_cmb, data=data,
        prevalence=prevalence, tests=tests, models=models, terms=terms,
        univariate=univariate, kinds=kinds, provenance=provenance,
        significance=SIGNIFICANCE)
    written["skipped"] = skipped
    return written


def _provenance(cov_path, kinds, group, bins, model, participant_labels, *, n_rows,
                n_analysed, skipped, notes):
    """Content of ``group_cmb_provenance.json`` (``cov_path`` None without covariates)."""
    return {
        "cmbprep_version": __version__,
        "covariates_file": str(cov_path) if cov_path is not None else None,
        "covariates_sha256": _sha256(cov_path) if cov_path is not None else None,
        "covariate_types": kinds,
        "group_column": group,
        "prevalence_by": [{"column": c, "lower_edges": e} for c, e in bins],
        "model": model,
        "participant_labels": list(participant_labels) if participant_labels else None,
        "n_rows": int(n_rows),
        "n_participants_analysed": int(n_analysed),
        "skipped": skipped,
        "notes": list(notes),
        "software": _software_versions(),
    }


def _summarise_units(output_dir, participant_labels):
    """The ``group_cmb.tsv`` rows, and messages for the units without a CMB table."""
    units, empty = find_participant_units(output_dir, participant_labels)
    rows, skipped = [], []
    for label in empty:
        skipped.append(f"sub-{label}: no CMB table in {output_dir / f'sub-{label}'}")
    for prefix, unit in sorted(units.items()):
        row = summarise_unit(unit, output_dir)
        if row is None:
            skipped.append(f"{prefix}: no CMB table (_desc-cmb_cmb.tsv) in {unit['folder']}")
            continue
        rows.append(row)
    return rows, skipped


def _load_covariates(cov_path, covariates_file, bins, participant_labels, notes):
    """The covariates (or ``None`` without a table) and their kinds."""
    if covariates_file and not cov_path.exists():
        raise DataError(f"{cov_path}: covariates file not found")
    if not cov_path.exists():
        notes.warn(f"{cov_path}: no covariates table; only counts and overall prevalence")
        return None, {}
    covariates, kinds = read_covariates(
        cov_path, numeric_columns=[c for c, e in bins if e is not None])
    if participant_labels:
        wanted = {"sub-" + normalise_label(x) for x in participant_labels}
        covariates = covariates[covariates.index.isin(wanted)]
    return covariates, kinds


def _listed_without_outputs(covariates, group_cmb, skipped, cov_path):
    """Messages for participants of the covariates table without participant outputs."""
    have = set(group_cmb["participant_id"]) if len(group_cmb) else set()
    return [f"{pid}: listed in {cov_path.name} but has no participant outputs"
            for pid in covariates.index
            if pid not in have and not any(s.startswith(f"{pid}:") or
                                           s.startswith(f"{pid}_") for s in skipped)]


def _order_group_cmb(group_cmb):
    """Columns in the documented order, rows sorted by participant/session/acq/run."""
    entity_cols = [c for c in ("session_id", "acquisition", "run")
                   if group_cmb[c].notna().any()]
    lobe_cols = [f"n_lobe_{x}" for x in LOBES] + sorted(
        c for c in group_cmb.columns if c.startswith("n_lobe_")
        and c[7:] not in LOBES)
    for column in lobe_cols:
        group_cmb[column] = group_cmb[column].fillna(0).astype(int)
    order = (["participant_id", *entity_cols, "count_source", "rater", "n_cmb",
              *[f"n_{c}" for c in MARS_CATEGORIES], "n_not_assigned", *lobe_cols,
              "total_volume_mm3", "n_review_pending", "detector", "registration_ok",
              "n_registration_warnings", "registration_warnings", "regions_not_covered",
              "fov_complete", "qc_pass", "cmb_table"])
    return group_cmb[order].sort_values(
        ["participant_id", *entity_cols], kind="stable").reset_index(drop=True)


def _analysis_data(group_cmb, covariates, kinds, cov_path, notes):
    """One row per participant (first session/run): counts joined with covariates."""
    analysis = group_cmb.drop_duplicates("participant_id", keep="first")
    if len(analysis) < len(group_cmb):
        notes.warn(f"{len(group_cmb) - len(analysis)} extra session/run row(s): prevalence "
                   "and models use each participant's first session/run (sorted labels)")
    count_cols = ["n_cmb", *[f"n_{c}" for c in MARS_CATEGORIES]]
    data = analysis[["participant_id", *count_cols]].set_index("participant_id")
    if covariates is None:
        return data.reset_index()
    clash = [c for c in covariates.columns if c in data.columns]
    if clash:
        raise DataError(f"{cov_path}: column(s) {clash} clash with group output "
                        "columns; rename them")
    not_listed = sorted(set(data.index) - set(covariates.index))
    if not_listed:
        notes.warn(f"{len(not_listed)} participant(s) not in {cov_path.name} (covariates "
                   f"n/a): {', '.join(not_listed[:10])}"
                   f"{' ...' if len(not_listed) > 10 else ''}")
    data = data.join(covariates, how="left").reset_index()
    for column in covariates.columns:  # joined categoricals keep their level order
        if kinds[column] == "categorical":
            data[column] = pd.Categorical(data[column],
                                          categories=covariates[column].cat.categories)
    return data


def _check_columns(data, group_column, bins, cov_path, notes):
    """The group column to use (``None`` when absent); options naming no column fail."""
    group = group_column if group_column in data.columns else None
    if group_column and group is None:
        message = (f"{cov_path}: no column '{group_column}' (--group-column)")
        if group_column != "group":
            raise DataError(message)
        notes.warn(message + "; no per-group prevalence")
    for column, _edges in bins:
        if column not in data.columns:
            raise DataError(f"{cov_path}: no column '{column}' (--prevalence-by)")
    return group


def _write_prevalence_tables(output_dir, prevalence, tests):
    written = {}
    written["prevalence"], _ = write_tsv(prevalence, output_dir / "group_prevalence.tsv",
                                         sidecars.PREVALENCE_SIDECAR)
    written["prevalence_tests"], _ = write_tsv(
        tests, output_dir / "group_prevalence_tests.tsv", sidecars.PREVALENCE_TESTS_SIDECAR)
    return written


def _write_regression_tables(output_dir, models, terms):
    written = {}
    written["regression_models"], _ = write_tsv(
        models, output_dir / "group_regression_models.tsv", sidecars.MODELS_SIDECAR)
    written["regression"], _ = write_tsv(terms, output_dir / "group_regression.tsv",
                                         sidecars.TERMS_SIDECAR)
    return written


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _software_versions():
    import patsy
    import scipy
    import statsmodels

    return {"numpy": np.__version__, "pandas": pd.__version__, "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__, "patsy": patsy.__version__}
