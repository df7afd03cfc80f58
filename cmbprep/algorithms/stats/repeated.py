"""Counts measured repeatedly on the same participants: a Poisson GEE.

Microbleed counts of the sessions of one participant are correlated. A generalised
estimating equation (Liang and Zeger 1986) with a Poisson mean model (log link) and an
exchangeable working correlation gives population-averaged incidence-rate ratios with
robust (sandwich) standard errors, which stay valid when the working correlation is
wrong. The estimates agree with R's ``geepack::geeglm(family = poisson, corstr =
"exchangeable")`` (``tests/data/r_reference/repeated_reference.R``). Pure functions on
:mod:`pandas` data, no file access.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .regression import CountModelFit, design_matrices, wald_terms

__all__ = ["GEEFit", "fit_gee_poisson"]


@dataclass
class GEEFit(CountModelFit):
    """A Poisson GEE fit (``family = "poisson_gee"``): the fields of
    :class:`CountModelFit` (terms with robust SEs; no deviance or dispersion test),
    plus the number of clusters (participants), the working correlation structure and
    its estimated within-participant correlation. ``dispersion`` is Pearson chi2 /
    (n - p), as for the GLMs."""

    n_clusters: int = 0
    working_correlation: str = "exchangeable"
    correlation: float = math.nan


def fit_gee_poisson(data, formula, groups, offset=None, confidence=0.95, tol=1e-10,
                    maxiter=200):
    """Poisson GEE with exchangeable working correlation and robust standard errors.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per participant and session, ordered by participant then time.
        Categorical covariates as :class:`pandas.Categorical` (first category is the
        reference).
    formula : str
        patsy formula such as ``"n_cmb ~ age + sex + years"``.
    groups : str
        Column naming the cluster (participant) of each row.
    offset : str, optional
        Column holding the log exposure of each row (e.g. log of the brain fraction
        covered); rows where it is missing are dropped.
    confidence : float
        Level of the Wald intervals (robust SEs).
    tol, maxiter : float, int
        Convergence settings (statsmodels ``GEE.fit`` ``ctol`` and ``maxiter``).

    Returns
    -------
    GEEFit
        ``fitted = False`` with a ``message`` when the data cannot be fitted (no complete
        row, all-zero counts, a singular design, fewer rows than coefficients, or a
        numerical failure); formula errors raise :class:`ValueError`.
    """
    import statsmodels.api as sm

    result = GEEFit(formula=formula, family="poisson_gee", offset=offset)
    complete = data if offset is None else data[np.isfinite(data[offset].astype(float))]
    outcome, design = design_matrices(formula, complete)
    used = complete.loc[outcome.index]
    endog = outcome.to_numpy(dtype=float).ravel()
    exog = design.to_numpy(dtype=float)
    result.row_index = list(used.index)
    result.n_used, result.n_dropped = len(used), len(data) - len(used)
    result.n_params = exog.shape[1]
    result.n_clusters = int(used[groups].nunique())
    result.message = _gee_unfittable_reason(endog, exog)
    if result.message:
        return result
    log_exposure = None if offset is None else used[offset].to_numpy(dtype=float)
    cluster = np.unique(used[groups].astype(str).to_numpy(), return_inverse=True)[1]
    model = sm.GEE(endog, exog, groups=cluster, family=sm.families.Poisson(),
                   cov_struct=sm.cov_struct.Exchangeable(), offset=log_exposure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # ddof_scale=0: the moment estimator of the correlation of geepack
            fit = model.fit(maxiter=maxiter, ctol=tol, ddof_scale=0)
        except Exception as exc:  # numerical failure
            result.message = f"fit failed: {str(exc).splitlines()[0]}"
            return result
    params = np.asarray(fit.params, dtype=float)
    if not np.all(np.isfinite(params)):
        result.message = "fit failed: non-finite estimates"
        return result
    result.terms = wald_terms(list(design.columns), params, np.asarray(fit.bse, float),
                              confidence)
    result.fitted = True
    result.converged = bool(fit.converged) if hasattr(fit, "converged") else True
    result.correlation = float(model.cov_struct.dep_params)
    result.df_resid = float(len(endog) - exog.shape[1])
    result.pearson_chi2 = float(np.sum((endog - fit.fittedvalues) ** 2
                                       / fit.fittedvalues))
    result.dispersion = result.pearson_chi2 / result.df_resid
    if not result.converged:
        result.message = "the fit did not converge"
    return result


def _gee_unfittable_reason(endog, exog):
    """Why no GEE can be fitted to these data (``""`` when one can)."""
    if endog.size == 0:
        return "no row has values for every variable of the model"
    if endog.sum() == 0:
        return "all CMB counts are zero: no model fitted"
    if endog.size <= exog.shape[1]:
        return (f"{endog.size} row(s) with complete data for {exog.shape[1]} "
                "parameter(s): no model fitted")
    if np.linalg.matrix_rank(exog) < exog.shape[1]:
        return ("the design matrix is singular (a covariate is constant or collinear in "
                "the rows used): no model fitted")
    return ""
