"""Which participant units the prevalence and the models use, and their exposure.

Rows of ``group_cmb.tsv`` whose template registration failed QC
(``registration_ok = false``) are left out unless ``--keep-failed-qc``; with
``--reviewed-only`` only the rows counted from a rater's review are kept; the count
sources of the rows analysed are reported, never pooled silently. A unit whose field of
view misses part of the brain enters the count models with the offset
``log(brain_coverage_fraction)`` (the fraction of the template brain volume inside its
field of view, from the participant summary).
"""

from __future__ import annotations

import numpy as np

#: Column of the log exposure (log of the brain fraction covered) in the analysed data.
COVERAGE_OFFSET = "log_brain_coverage"


def list_some(labels, most=10):
    """``"a, b, c ..."``: the first ``most`` labels, and `` ...`` when there are more."""
    labels = list(labels)
    return ", ".join(labels[:most]) + (" ..." if len(labels) > most else "")


def unit_labels(rows):
    """``sub-01_ses-2_run-1``-style labels of rows of ``group_cmb.tsv``."""
    labels = []
    for row in rows.itertuples():
        parts = [row.participant_id]
        for column, prefix in (("session_id", ""), ("acquisition", "acq-"),
                               ("run", "run-")):
            value = getattr(row, column, None)
            if value is not None and value == value:
                parts.append(f"{prefix}{value}")
        labels.append("_".join(map(str, parts)))
    return labels


def exclude_failed_registration(group_cmb, keep_failed_qc, notes):
    """The rows whose registration passed QC (all rows with ``keep_failed_qc``).

    Returns ``(rows kept, rows left out)``; a note lists the rows that failed.
    """
    failed = group_cmb["registration_ok"].eq(False)
    labels = unit_labels(group_cmb[failed])
    if not labels or keep_failed_qc:
        if labels:
            notes.warn(f"{len(labels)} unit(s) failed registration QC and are analysed "
                       f"(--keep-failed-qc): {list_some(labels)}")
        return group_cmb, group_cmb.iloc[:0]
    notes.warn(f"{len(labels)} unit(s) failed registration QC (registration_ok false) "
               f"and are left out of prevalence and models (--keep-failed-qc keeps "
               f"them): {list_some(labels)}")
    return group_cmb[~failed], group_cmb[failed]


def restrict_to_reviewed(rows, reviewed_only, notes):
    """Only the rows counted from a rater's review when ``reviewed_only``."""
    if not reviewed_only:
        return rows
    kept = rows[rows["count_source"] == "rater"]
    notes.warn(f"--reviewed-only: {len(kept)} of {len(rows)} unit(s) counted from a "
               f"rater's review are analysed; {len(rows) - len(kept)} counted "
               "automatically are left out")
    return kept


def note_automatic_counts(sources, notes):
    """A note when units are counted from the automatic detection: how far to trust it
    (docs/outputs.rst), and what to do about it."""
    automatic = int((sources == "automatic").sum())
    if automatic:
        notes.warn(f"{automatic} of {len(sources)} analysed unit(s) are counted from the "
                   "automatic detection without a rater's review: it misses many "
                   "microbleeds under 3 mm and counts some vein pieces (cmbprep "
                   "documentation, 'How far to trust the counts'); read these counts as a "
                   "lower bound for small microbleeds, or review the units with "
                   "cmbprep-review")


def note_mixed_sources(sources, what, notes):
    """A note when rater and automatic counts are analysed together."""
    counts = sources.value_counts()
    if len(counts) > 1:
        listed = ", ".join(f"{int(n)} {source}" for source, n in sorted(counts.items()))
        notes.warn(f"{what} mix counts from raters' reviews and from the automatic "
                   f"detection ({listed}); the model tables give n_rater and "
                   "n_automatic, --reviewed-only keeps the reviewed counts only")


def add_coverage_offset(data, notes):
    """Add :data:`COVERAGE_OFFSET` to ``data`` when any unit misses part of the brain.

    Parameters
    ----------
    data : pandas.DataFrame
        Analysed rows with ``brain_coverage_fraction`` (missing for units written by a
        cmbprep that did not record it: taken as 1, with a note).

    Returns
    -------
    (pandas.DataFrame, str or None)
        The data with the offset column, and its name (``None``, and the data
        unchanged, when every unit is fully covered).
    """
    fraction = data["brain_coverage_fraction"].astype(float)
    if fraction.isna().any():
        notes.warn(f"{int(fraction.isna().sum())} analysed unit(s) without "
                   "brain_coverage_fraction in their summary (an older cmbprep): taken "
                   "as fully covered")
    fraction = fraction.fillna(1.0)
    if not (fraction < 1).any():
        return data, None
    empty = fraction <= 0
    if empty.any():
        notes.warn(f"{int(empty.sum())} unit(s) with no brain in the field of view are "
                   "left out of the count models")
    with np.errstate(divide="ignore"):
        log_fraction = np.where(empty, np.nan, np.log(fraction.clip(lower=1e-300)))
    notes.warn(f"{int((fraction < 1).sum())} analysed unit(s) cover only part of the "
               "brain: the count models use the offset log(brain_coverage_fraction)")
    return data.assign(**{COVERAGE_OFFSET: log_fraction}), COVERAGE_OFFSET
