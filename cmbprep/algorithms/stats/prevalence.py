"""Prevalence of a finding: exact confidence intervals, bins, and tests between levels.

Clopper-Pearson intervals (R's ``binom.test``), half-open bins of a covariate, the
Cochran-Armitage trend test over ordered bins (R's ``prop.trend.test``), and Fisher's
exact or Pearson's chi-squared test between groups. Pure functions, no file access.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _sps

__all__ = [
    "PrevalenceTest",
    "bin_by_edges",
    "clopper_pearson_interval",
    "cochran_armitage_trend_test",
    "compare_prevalence",
    "is_finite_number",
    "natural_sort_key",
    "prevalence_by_level",
]


def is_finite_number(value) -> bool:
    """Whether ``value`` converts to a finite float (``"12.5"`` yes; ``"inf"``, ``"x"`` no)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def natural_sort_key(value):
    """Sort key putting finite numbers first, in numeric order, then text in text order.

    ``"2" < "10" < "1e3" < "-inf" < "B" < "a"``: values such as ``"inf"`` or ``"nan"``
    are sorted as text.
    """
    return (0, float(value), "") if is_finite_number(value) else (1, 0.0, str(value))


def clopper_pearson_interval(n_with, n_total, confidence=0.95):
    """Exact (Clopper-Pearson) confidence interval of a binomial proportion.

    Parameters
    ----------
    n_with : int
        Number of participants with the finding (successes).
    n_total : int
        Number of participants (trials).
    confidence : float, optional
        Two-sided confidence level, default 0.95.

    Returns
    -------
    (float, float)
        Lower and upper bound; ``(nan, nan)`` when ``n_total`` is 0. The bounds are
        0 and 1 exactly when ``n_with`` is 0 or ``n_total``, as in R's ``binom.test``.
    """
    n_with, n_total = int(n_with), int(n_total)
    if n_total <= 0:
        return (math.nan, math.nan)
    if not 0 <= n_with <= n_total:
        raise ValueError(f"need 0 <= n_with <= n_total, got {n_with}/{n_total}")
    tail = (1.0 - confidence) / 2.0
    lower = 0.0 if n_with == 0 else float(_sps.beta.ppf(tail, n_with, n_total - n_with + 1))
    upper = 1.0 if n_with == n_total else float(
        _sps.beta.ppf(1.0 - tail, n_with + 1, n_total - n_with))
    return (lower, upper)


def bin_by_edges(values, edges):
    """Assign numeric values to half-open bins given by their lower edges.

    Parameters
    ----------
    values : array_like of float
        Covariate values (``nan`` for missing).
    edges : sequence of float
        Strictly increasing lower edges ``e0 < e1 < ... < ek``. The bins are
        ``[e0, e1), [e1, e2), ..., [ek, inf)``, so ``0,5,10,15`` gives four bins as the
        ITP study's platelet-nadir bins. Values below ``e0`` or missing get no bin.

    Returns
    -------
    pandas.Categorical
        Ordered categorical with labels such as ``"[0, 5)"`` and ``"[15, inf)"``.
    """
    edges = [float(e) for e in edges]
    if len(edges) < 1 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bin edges must be strictly increasing, got {edges}")
    bounds = edges + [math.inf]
    labels = [f"[{_fmt_edge(a)}, {_fmt_edge(b)})" for a, b in zip(bounds, bounds[1:])]
    values = np.asarray(values, dtype=float)
    return pd.cut(values, bins=bounds, right=False, labels=labels, ordered=True)


def _fmt_edge(value):
    if math.isinf(value):
        return "inf"
    return f"{value:g}"


def _members_by_level(has_finding, levels):
    """``[(level, findings of its members), ...]`` in level order."""
    if levels is None:
        return [("all", has_finding)]
    if isinstance(levels, pd.Categorical) or isinstance(
            getattr(levels, "dtype", None), pd.CategoricalDtype):
        cat = pd.Categorical(levels)
        order = list(cat.categories)
    else:
        cat = pd.Categorical(pd.Series(levels).astype(object).where(
            pd.notna(pd.Series(levels)), None))
        order = sorted(cat.categories, key=natural_sort_key)
    codes = pd.Series(np.asarray(cat.astype(object)))
    return [(lvl, has_finding[(codes == lvl).to_numpy()]) for lvl in order]


def prevalence_by_level(has_finding, levels=None, confidence=0.95):
    """Prevalence with exact confidence intervals, overall or for each level.

    Parameters
    ----------
    has_finding : array_like of bool
        Whether each participant has the finding (e.g. at least one CMB).
    levels : array_like, optional
        The level (group, bin) of each participant; missing levels are left out. When
        it is a :class:`pandas.Categorical` every category is reported, also empty ones;
        otherwise the levels are sorted by :func:`natural_sort_key`.
        Without levels a single row ``level == "all"`` is returned.
    confidence : float, optional
        Confidence level of the Clopper-Pearson intervals.

    Returns
    -------
    pandas.DataFrame
        Columns ``level, n_participants, n_with, prevalence, ci_lower, ci_upper``.
    """
    has_finding = pd.Series(np.asarray(has_finding, dtype=bool))
    rows = []
    for level, member in _members_by_level(has_finding, levels):
        n_total, n_with = int(member.size), int(member.sum())
        low, high = clopper_pearson_interval(n_with, n_total, confidence)
        rows.append({
            "level": str(level), "n_participants": n_total, "n_with": n_with,
            "prevalence": n_with / n_total if n_total else math.nan,
            "ci_lower": low, "ci_upper": high,
        })
    return pd.DataFrame(rows, columns=["level", "n_participants", "n_with", "prevalence",
                                       "ci_lower", "ci_upper"])


@dataclass
class PrevalenceTest:
    """Result of a test on prevalences: Cochran-Armitage trend, Fisher or chi-squared.

    ``test`` names the test (``cochran_armitage``, ``fisher_exact``,
    ``chi2_independence``); ``statistic`` is the signed z, the odds ratio or the
    chi-squared value; ``message`` says why no test could be done (then the numbers are
    ``nan``).
    """

    test: str
    statistic: float
    p_value: float
    df: float = math.nan
    message: str = ""


def cochran_armitage_trend_test(n_with, n_total, scores=None):
    """Cochran-Armitage chi-squared test for a linear trend in proportions.

    Identical to R's ``prop.trend.test(x, n, score)``: the regression sum of squares of
    the proportions on the scores, weighted by ``n / (p (1 - p))``, chi-squared with 1
    degree of freedom.

    Parameters
    ----------
    n_with, n_total : array_like of int
        Participants with the finding and participants per ordered bin.
    scores : array_like of float, optional
        Score of each bin; default ``1, 2, ..., k``.

    Returns
    -------
    PrevalenceTest
        ``statistic`` is the signed square root of the chi-squared value (a z score,
        positive when the prevalence rises with the score); ``df`` is 1.
    """
    n_with = np.asarray(n_with, dtype=float)
    n_total = np.asarray(n_total, dtype=float)
    scores = (np.arange(1, n_with.size + 1, dtype=float) if scores is None
              else np.asarray(scores, dtype=float))
    keep = n_total > 0
    n_with, n_total, scores = n_with[keep], n_total[keep], scores[keep]
    name = "cochran_armitage"
    if n_with.size < 2:
        return PrevalenceTest(name, math.nan, math.nan, 1.0,
                              "fewer than two non-empty bins")
    big_n = n_total.sum()
    p_all = n_with.sum() / big_n
    if p_all in (0.0, 1.0):
        return PrevalenceTest(name, math.nan, math.nan, 1.0,
                              "no variation: every participant has the same outcome")
    score_mean = (n_total * scores).sum() / big_n
    sxx = (n_total * (scores - score_mean) ** 2).sum()
    if sxx == 0:
        return PrevalenceTest(name, math.nan, math.nan, 1.0,
                              "all bins have the same score")
    sxy = ((n_with - n_total * p_all) * (scores - score_mean)).sum()
    chi2 = sxy ** 2 / (p_all * (1 - p_all) * sxx)
    p_value = float(_sps.chi2.sf(chi2, 1))
    return PrevalenceTest(name, float(math.copysign(math.sqrt(chi2), sxy)), p_value, 1.0)


def compare_prevalence(n_with, n_total):
    """Test whether the prevalence differs between groups.

    Two groups: Fisher's exact test (two-sided, as R's ``fisher.test``). More groups:
    Pearson's chi-squared test of independence (``chisq.test(correct = FALSE)``).

    Parameters
    ----------
    n_with, n_total : array_like of int
        Participants with the finding and participants per group.

    Returns
    -------
    PrevalenceTest
        ``statistic`` is the odds ratio (Fisher) or chi-squared value.
    """
    n_with = np.asarray(n_with, dtype=int)
    n_total = np.asarray(n_total, dtype=int)
    keep = n_total > 0
    table = np.column_stack([n_with[keep], n_total[keep] - n_with[keep]])
    if table.shape[0] < 2:
        return PrevalenceTest("fisher_exact", math.nan, math.nan, math.nan,
                              "fewer than two non-empty groups")
    if table.shape[0] == 2:
        odds, p_value = _sps.fisher_exact(table, alternative="two-sided")
        return PrevalenceTest("fisher_exact", float(odds), float(p_value), math.nan)
    if table[:, 0].sum() == 0 or table[:, 1].sum() == 0:
        return PrevalenceTest("chi2_independence", math.nan, math.nan, math.nan,
                              "no variation: every participant has the same outcome")
    chi2, p_value, dof, _ = _sps.chi2_contingency(table, correction=False)
    return PrevalenceTest("chi2_independence", float(chi2), float(p_value), float(dof))
