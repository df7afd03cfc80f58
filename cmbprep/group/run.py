"""The group level's entry point, :func:`run_group`: read, analyse, write.

Reads the participant outputs (:mod:`.units`) and the covariates (:mod:`.covariates`),
chooses the analysed units (:mod:`.selection`), writes ``group_cmb.tsv``, the prevalence
(:mod:`.analysis`) and regression tables (:mod:`.models`), the longitudinal tables when
participants have several sessions (:mod:`.repeated`), with the sidecars of
:mod:`.sidecars`, ``group_cmb_provenance.json`` and the report
(:mod:`cmbprep.reports.group`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import DataError, InputMissingError
from ..utils.derivatives import check_unit_manifest
from ..utils.io import STATE_FOLDER, group_lock, write_text_atomic
from ..utils.tables import write_tsv
from . import sidecars
from .analysis import rater_agreement, run_prevalence
from .covariates import join_covariates, parse_prevalence_by, read_covariates
from .models import COVARIATE_SELECTIONS, SIGNIFICANCE, run_regressions
from .repeated import run_longitudinal_models
from .selection import (add_coverage_offset, exclude_failed_registration, list_some,
                        note_automatic_counts, note_mixed_sources, restrict_to_reviewed,
                        unit_labels)
from .units import (LOBES, MARS_CATEGORIES, find_participant_units, normalise_label,
                    review_decisions, summarise_unit)

LOGGER = logging.getLogger("cmbprep.group")


class _Notes(list):
    """Warnings of the run: logged, and kept for the provenance file and the report."""

    def warn(self, message):
        LOGGER.warning(message)
        self.append(message)


def run_group(output_dir, bids_dir, *, covariates_file=None, group_column="group",
              prevalence_by=(), model=None, participant_labels=None, rater=None,
              covariate_selection="prespecified", keep_failed_qc=False,
              reviewed_only=False):
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
        Multivariate Poisson model formula (patsy), right-hand side or full; also the
        covariates of the longitudinal models.
    participant_labels : sequence of str, optional
        Restrict to these participants (with or without ``sub-``).
    rater : str, optional
        Count this rater's reviews (``--rater``); units this rater has not reviewed are
        counted from the automatic detection. Default: a unit's only rater, or the first
        by name when several reviewed it.
    covariate_selection : {"prespecified", "univariate-p"}
        Without ``model``: the multivariate model is age + sex + ``group_column`` (those
        present; ``prespecified``), or the covariates with P < 0.05 in a univariate
        model plus age and sex (``univariate-p``, the ITP study's selection).
    keep_failed_qc : bool
        Analyse the units whose registration failed QC (left out by default).
    reviewed_only : bool
        Analyse only the units counted from a rater's review.

    Returns
    -------
    dict
        Paths written: ``group_cmb``, ``prevalence``, ``prevalence_tests``,
        ``regression``, ``regression_models``, ``rater_agreement`` (when two raters
        reviewed a unit), ``longitudinal_models`` and ``longitudinal`` (when a
        participant has two or more sessions) (TSVs; sidecars beside them),
        ``provenance`` (JSON) and ``report`` (HTML), plus ``skipped`` (list of messages).

    Raises
    ------
    DataError
        Bad covariates (unreadable, non-numeric value in a numeric column, unknown
        column in ``--prevalence-by``/``--group-column``/``--model``) or an unreadable
        participant table (exit 65).
    InputMissingError
        No participant CMB table at all under ``output_dir`` (exit 66).
    BusyError
        Another group run is writing the group files of ``output_dir`` (exit 75; the
        lock of :func:`cmbprep.utils.io.group_lock`, held for the whole run).
    """
    output_dir, bids_dir = Path(output_dir), Path(bids_dir)
    if not output_dir.is_dir():
        raise InputMissingError(f"{output_dir}: no participant outputs (run the "
                                "participant level first)")
    if covariate_selection not in COVARIATE_SELECTIONS:
        raise DataError(f"--covariate-selection {covariate_selection!r}: choose one of "
                        f"{', '.join(COVARIATE_SELECTIONS)}")
    options = {"covariate_selection": covariate_selection,
               "keep_failed_qc": bool(keep_failed_qc), "reviewed_only": bool(reviewed_only)}
    with group_lock(output_dir):
        return _run_group(output_dir, bids_dir, covariates_file=covariates_file,
                          group_column=group_column, prevalence_by=prevalence_by,
                          model=model, participant_labels=participant_labels,
                          rater=rater, options=options)


def _run_group(output_dir, bids_dir, *, covariates_file, group_column, prevalence_by,
               model, participant_labels, rater, options):
    """:func:`run_group` once its lock is held (``options``: the analysis choices)."""
    from ..reports.group import write_group_report

    notes = _Notes()
    rows, skipped = _summarise_units(output_dir, participant_labels, notes, rater=rater)
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
        raise InputMissingError(f"{output_dir}: no participant CMB tables found (none "
                                "complete; run the participant level first)")

    # Everything is computed and checked (options, columns, model) before any file is
    # written; then the files are written as one set, the provenance file last.
    group_cmb = _order_group_cmb(group_cmb)
    analysed, failed = exclude_failed_registration(group_cmb, options["keep_failed_qc"],
                                                   notes)
    analysed = restrict_to_reviewed(analysed, options["reviewed_only"], notes)
    note_automatic_counts(analysed["count_source"], notes)
    data = _analysis_data(analysed, covariates, kinds, cov_path, notes)
    group = _check_columns(data, group_column, bins, cov_path, notes)
    prevalence, tests = run_prevalence(data, group, bins)
    data, offset = add_coverage_offset(data, notes)
    note_mixed_sources(data["count_source"], "the cross-sectional models", notes)
    models, terms, univariate = run_regressions(
        data, list(covariates.columns) if covariates is not None else [], kinds,
        model=model, selection=options["covariate_selection"], group_column=group,
        offset=offset)
    longitudinal = run_longitudinal_models(
        {"output_dir": output_dir, "bids_dir": bids_dir, "cov_path": cov_path,
         "model": model, "group_column": group, "failed_sessions": set(zip(
             failed["participant_id"], failed.get("session_id", failed["participant_id"]))),
         **options}, analysed, covariates, kinds, notes)
    agreement = _rater_agreement(output_dir, participant_labels, rater, notes)
    provenance = _provenance(
        cov_path if covariates is not None else None, kinds, group, bins, model,
        participant_labels, n_rows=len(group_cmb), n_analysed=len(data), skipped=skipped,
        notes=notes)
    provenance.update(rater=rater, **options, coverage_offset=offset is not None,
                      excluded_failed_qc=unit_labels(failed),
                      longitudinal=longitudinal is not None)

    staging = output_dir / STATE_FOLDER / "staging" / "group"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    written = {}
    written["group_cmb"], _ = write_tsv(group_cmb, staging / "group_cmb.tsv",
                                        sidecars.group_cmb_sidecar(group_cmb.columns))
    written.update(_write_prevalence_tables(staging, prevalence, tests))
    written.update(_write_regression_tables(staging, models, terms))
    if longitudinal is not None:
        written.update(_write_longitudinal_tables(staging, *longitudinal))
    if agreement is not None:
        written["rater_agreement"], _ = write_tsv(
            agreement, staging / "group_rater_agreement.tsv", sidecars.AGREEMENT_SIDECAR)
    written["report"] = write_group_report(
        staging / "group_cmb.html", group_cmb=group_cmb, data=data,
        prevalence=prevalence, tests=tests, models=models, terms=terms,
        univariate=univariate, kinds=kinds, provenance=provenance,
        significance=SIGNIFICANCE, agreement=agreement, longitudinal=longitudinal)
    written = {key: output_dir / Path(path).name for key, path in written.items()}
    written["provenance"] = _commit_group_files(staging, output_dir, provenance)
    written["skipped"] = skipped
    return written


def _commit_group_files(staging, output_dir, provenance):
    """Move the staged group files into ``output_dir``; the provenance file, listing
    them with their checksums, is removed first and written last."""
    target = output_dir / "group_cmb_provenance.json"
    target.unlink(missing_ok=True)
    files = {}
    for path in sorted(staging.iterdir()):
        files[path.name] = _sha256(path)
        os.replace(path, output_dir / path.name)
    shutil.rmtree(staging, ignore_errors=True)
    for folder in (staging.parent, staging.parent.parent):
        with contextlib.suppress(OSError):
            folder.rmdir()
    return write_text_atomic(target, json.dumps({**provenance, "files": files}, indent=2,
                                                default=str) + "\n")


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


def _rater_agreement(output_dir, participant_labels, rater, notes):
    """Agreement of the raters (``None`` when no unit has two raters); notes on which
    rater is counted."""
    units, _empty = find_participant_units(output_dir, participant_labels)
    reviews = {p: review_decisions(u["reviewed"]) for p, u in sorted(units.items())
               if "reviewed" in u}
    several = {p: sorted(r, key=str) for p, r in reviews.items() if len(r) > 1}
    if rater is None and several:
        notes.warn(f"{len(several)} unit(s) reviewed by several raters; counted the first "
                   "by name (choose with --rater): " + "; ".join(
                       f"{p}: {', '.join(map(str, r))}" for p, r in several.items()))
    if rater is not None:
        missing = sorted(p for p, r in reviews.items() if rater not in r)
        if missing:
            notes.warn(f"{len(missing)} reviewed unit(s) without a review by {rater} "
                       f"(--rater): counted from the automatic detection: "
                       f"{', '.join(missing)}")
    return rater_agreement(reviews) if several else None


def _summarise_units(output_dir, participant_labels, notes, rater=None):
    """The ``group_cmb.tsv`` rows, and messages for the units left out: no CMB table,
    or a manifest saying the unit is incomplete or files that do not match it."""
    units, empty = find_participant_units(output_dir, participant_labels)
    rows, skipped, unverified, settings = [], [], [], {}
    for label in empty:
        skipped.append(f"sub-{label}: no CMB table in {output_dir / f'sub-{label}'}")
    for prefix, unit in sorted(units.items()):
        if "manifest" in unit:
            problem = check_unit_manifest(unit["manifest"], output_dir,
                                          verify=("_cmb.tsv", "_cmb.json"))
            if problem:
                skipped.append(f"{prefix}: {problem}; rerun the participant level for it")
                continue
            recorded = json.loads(Path(unit["manifest"]).read_text()).get("Settings") or {}
            settings[prefix] = recorded
        elif "cmb" in unit:
            unverified.append(prefix)
        row = summarise_unit(unit, output_dir, rater=rater)
        if row is None:
            skipped.append(f"{prefix}: no CMB table (_desc-cmb_cmb.tsv) in {unit['folder']}")
            continue
        rows.append(row)
    if unverified:
        notes.warn(f"{len(unverified)} unit(s) without a manifest (written by hand or by "
                   "an older cmbprep), completeness not checked: "
                   f"{list_some(unverified)}")
    _note_mixed_settings(settings, notes)
    return rows, skipped


def _note_mixed_settings(settings, notes):
    """A note when the counted units were processed with different settings."""
    keys = sorted({key for recorded in settings.values() for key in recorded})
    for key in keys:
        values = {}
        for prefix, recorded in sorted(settings.items()):
            values.setdefault(json.dumps(recorded.get(key)), []).append(prefix)
        if len(values) > 1:
            listed = "; ".join(f"{value}: {list_some(units, most=5)}"
                               for value, units in sorted(values.items()))
            notes.warn(f"participant units were processed with different {key} "
                       f"({listed})")


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
              "brain_coverage_fraction", "fov_complete", "qc_pass", "cmb_table"])
    return group_cmb[order].sort_values(
        ["participant_id", *entity_cols], kind="stable").reset_index(drop=True)


def _analysis_data(analysed, covariates, kinds, cov_path, notes):
    """One row per participant (first session/run of the analysed units): counts, count
    source and brain coverage joined with the covariates."""
    first = analysed.drop_duplicates("participant_id", keep="first")
    if len(first) < len(analysed):
        notes.warn(f"{len(analysed) - len(first)} extra session/run row(s): prevalence "
                   "and the cross-sectional models use each participant's first "
                   "session/run (sorted labels)")
    count_cols = ["n_cmb", *[f"n_{c}" for c in MARS_CATEGORIES]]
    rows = first[["participant_id", *count_cols, "count_source",
                  "brain_coverage_fraction"]].reset_index(drop=True)
    return join_covariates(rows, covariates, kinds, cov_path, notes)


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


def _write_longitudinal_tables(output_dir, models, terms):
    written = {}
    written["longitudinal_models"], _ = write_tsv(
        models, output_dir / "group_longitudinal_models.tsv",
        sidecars.LONGITUDINAL_MODELS_SIDECAR)
    written["longitudinal"], _ = write_tsv(terms, output_dir / "group_longitudinal.tsv",
                                           sidecars.LONGITUDINAL_TERMS_SIDECAR)
    return written


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _software_versions():
    import patsy
    import scipy
    import statsmodels

    return {"numpy": np.__version__, "pandas": pd.__version__, "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__, "patsy": patsy.__version__}
