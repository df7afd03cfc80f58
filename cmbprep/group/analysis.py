"""Group analyses on one row per participant: prevalence tables, and the agreement of
raters.

Builds the rows of ``group_prevalence.tsv`` and ``group_prevalence_tests.tsv`` from the
statistics of :mod:`cmbprep.algorithms.stats`, and ``group_rater_agreement.tsv`` (Cohen's
kappa on candidates, ICC on counts) from the reviewed tables. The count models are in
:mod:`.models`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..algorithms import stats

#: Prevalence outcomes: name -> count column (a participant "has" it when count > 0).
PREVALENCE_OUTCOMES = {"any_cmb": "n_cmb", "lobar_cmb": "n_lobar", "deep_cmb": "n_deep",
                       "infratentorial_cmb": "n_infratentorial"}
TEST_COLUMNS = ["outcome", "grouping", "test", "statistic", "df", "p_value",
                "n_participants", "message"]


# --------------------------------------------------------------------------------------
# Prevalence
# --------------------------------------------------------------------------------------
def _groupings(data, group_column, bins):
    """``[(name, levels, test), ...]``: test is None, ``"compare"`` or ``"trend"``."""
    groupings = [("all", None, None)]
    if group_column:
        groupings.append((group_column, data[group_column], "compare"))
    for column, edges in bins:
        if edges is None:
            groupings.append((column, data[column], "compare"))
        else:
            groupings.append((column, stats.bin_by_edges(data[column].astype(float),
                                                         edges), "trend"))
    return groupings


def _test_row(outcome, name, test, table):
    if test == "trend":
        result = stats.cochran_armitage_trend_test(table["n_with"],
                                                   table["n_participants"])
    else:
        result = stats.compare_prevalence(table["n_with"], table["n_participants"])
    return {"outcome": outcome, "grouping": name, "test": result.test,
            "statistic": result.statistic, "df": result.df, "p_value": result.p_value,
            "n_participants": int(table["n_participants"].sum()),
            "message": result.message or None}


def run_prevalence(data, group_column, bins):
    """Prevalence tables and tests.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per participant with the count columns and covariates.
    group_column : str or None
        Categorical column for per-group prevalence (Fisher/chi2 comparison).
    bins : list of (str, list of float or None)
        Columns to bin by lower edges (Cochran-Armitage trend test), or to split by
        level when the edges are ``None``.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        The prevalence table and the table of tests.
    """
    rows, tests = [], []
    groupings = _groupings(data, group_column, bins)
    for outcome, count_column in PREVALENCE_OUTCOMES.items():
        has = data[count_column].to_numpy() > 0
        for name, levels, test in groupings:
            table = stats.prevalence_by_level(has, levels)
            table.insert(0, "outcome", outcome)
            table.insert(1, "grouping", name)
            if test == "trend":
                n_missing = int(pd.isna(np.asarray(levels.astype(object))).sum())
                table["n_not_binned"] = n_missing
            else:
                table["n_not_binned"] = (int(pd.isna(levels).sum())
                                         if levels is not None else 0)
            rows.append(table)
            if test is not None:
                tests.append(_test_row(outcome, name, test, table))
    prevalence = pd.concat(rows, ignore_index=True)
    return prevalence, pd.DataFrame(tests, columns=TEST_COLUMNS)


# --------------------------------------------------------------------------------------
# Rater agreement
# --------------------------------------------------------------------------------------
#: Columns of ``group_rater_agreement.tsv``.
AGREEMENT_COLUMNS = ["rater_1", "rater_2", "n_units", "n_candidates", "percent_agreement",
                     "kappa", "kappa_ci_lower", "kappa_ci_upper", "n_units_complete",
                     "mean_count_1", "mean_count_2", "icc", "icc_ci_lower", "icc_ci_upper",
                     "message"]


def cohen_kappa(labels_1, labels_2):
    """Cohen's kappa of two raters' labels of the same items, with a 95% CI.

    Returns ``(kappa, ci_lower, ci_upper, observed_agreement)``; the interval is
    kappa +- 1.96 sqrt(po (1 - po) / (n (1 - pe)^2)) (Cohen 1960), clipped to [-1, 1].
    Kappa is ``nan`` without items or when chance agreement is 1 (one label only).
    """
    a, b = np.asarray(labels_1, dtype=object), np.asarray(labels_2, dtype=object)
    n = len(a)
    if n == 0 or len(b) != n:
        return math.nan, math.nan, math.nan, math.nan
    categories = sorted(set(a) | set(b), key=str)
    po = float(np.mean(a == b))
    pe = float(sum(np.mean(a == c) * np.mean(b == c) for c in categories))
    if pe >= 1.0:
        return math.nan, math.nan, math.nan, po
    kappa = (po - pe) / (1.0 - pe)
    se = math.sqrt(po * (1.0 - po) / (n * (1.0 - pe) ** 2))
    return kappa, max(-1.0, kappa - 1.96 * se), min(1.0, kappa + 1.96 * se), po


def icc_absolute_agreement(ratings, alpha=0.05):
    """ICC(A,1) of McGraw and Wong (1996) (Shrout and Fleiss's ICC(2,1)): two-way random
    effects, absolute agreement, single rater, with its (1 - alpha) confidence interval.

    Parameters
    ----------
    ratings : array (n targets, k raters)

    Returns
    -------
    (icc, ci_lower, ci_upper); ``nan`` with fewer than two targets or no variance.
    """
    from scipy import stats as sp_stats

    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        return math.nan, math.nan, math.nan
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    if not denominator > 0:
        return math.nan, math.nan, math.nan
    icc = (msr - mse) / denominator
    if mse <= 0 or icc >= 1:
        return icc, math.nan, math.nan
    a = k * icc / (n * (1 - icc))
    b = 1 + k * icc * (n - 1) / (n * (1 - icc))
    v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1)
                                   + (b * mse) ** 2 / ((n - 1) * (k - 1)))
    f_lower = sp_stats.f.ppf(1 - alpha / 2, n - 1, v)
    f_upper = sp_stats.f.ppf(1 - alpha / 2, v, n - 1)
    lower = n * (msr - f_lower * mse) / (f_lower * (k * msc + (k * n - k - n) * mse)
                                          + n * msr)
    upper = n * (f_upper * msr - mse) / (k * msc + (k * n - k - n) * mse
                                          + n * f_upper * msr)
    return icc, lower, upper


def rater_agreement(reviews):
    """Agreement of every pair of raters who reviewed the same units.

    Parameters
    ----------
    reviews : dict
        ``{unit: {rater: {candidate_id: decision}}}`` (decision ``yes``, ``no``,
        ``unsure`` or ``None`` while undecided), as
        :func:`cmbprep.group.units.review_decisions` reads it.

    Returns
    -------
    pandas.DataFrame
        One row per pair (:data:`AGREEMENT_COLUMNS`): Cohen's kappa on the decisions
        (yes / no / unsure) of the candidates both decided, pooled over the units both
        reviewed; the ICC(A,1) of the numbers of ``yes`` per unit over the units both
        finished (no undecided candidate).
    """
    raters = sorted({r for unit in reviews.values() for r in unit}, key=str)
    rows = []
    for i, first in enumerate(raters):
        for second in raters[i + 1:]:
            units = [u for u in sorted(reviews) if first in reviews[u]
                     and second in reviews[u]]
            if not units:
                continue
            labels_1, labels_2, counts, messages = [], [], [], []
            for unit in units:
                one, two = reviews[unit][first], reviews[unit][second]
                for candidate in sorted(set(one) & set(two)):
                    if one[candidate] and two[candidate]:
                        labels_1.append(one[candidate])
                        labels_2.append(two[candidate])
                if all(one.values()) and all(two.values()):
                    counts.append((sum(d == "yes" for d in one.values()),
                                   sum(d == "yes" for d in two.values())))
            kappa, k_low, k_high, observed = cohen_kappa(labels_1, labels_2)
            if not labels_1:
                messages.append("no candidate decided by both")
            elif math.isnan(kappa):
                messages.append("kappa undefined: every decision the same")
            icc, i_low, i_high = icc_absolute_agreement(counts)
            if len(counts) < 2:
                messages.append("ICC needs two or more units finished by both")
            elif math.isnan(icc):
                messages.append("ICC undefined: no variance in the counts")
            rows.append({
                "rater_1": first, "rater_2": second, "n_units": len(units),
                "n_candidates": len(labels_1),
                "percent_agreement": 100 * observed if labels_1 else math.nan,
                "kappa": kappa, "kappa_ci_lower": k_low, "kappa_ci_upper": k_high,
                "n_units_complete": len(counts),
                "mean_count_1": float(np.mean([c[0] for c in counts])) if counts
                else math.nan,
                "mean_count_2": float(np.mean([c[1] for c in counts])) if counts
                else math.nan,
                "icc": icc, "icc_ci_lower": i_low, "icc_ci_upper": i_high,
                "message": "; ".join(messages) or None})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
