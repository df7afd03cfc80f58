"""Count regression of microbleed counts: Poisson and negative-binomial models.

Univariate then multivariate Poisson regression of CMB counts reported as incidence-rate
ratios (IRR), as in the ITP study (Blood 2020;136:2875), with an overdispersion check and
a negative-binomial fit beside the Poisson one when the counts are overdispersed. Pure
functions on :mod:`pandas`/:mod:`numpy` data, no file access and no Nipype.

Models are fitted with the :mod:`statsmodels` formula API; formulas use the patsy
language (``y ~ age + C(sex) + I(smog >= 2)``). Poisson fits are iteratively reweighted
least squares with a tight tolerance so that the estimates agree with R's
``glm(family = poisson)`` to better than 1e-6 (see ``tests/data/r_reference``).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as _sps

from .sparse import firth_poisson, profile_likelihood_interval, separated_directions

__all__ = [
    "TERM_FIT_COLUMNS",
    "CountModelFit",
    "count_overdispersion_test",
    "design_matrices",
    "fit_count_model",
    "formula_term",
    "select_multivariate_covariates",
    "wald_terms",
]

#: Poisson fits whose Pearson chi2/df exceeds this, or whose dispersion test has
#: P < ``OVERDISPERSION_ALPHA``, are called overdispersed (and get a negative-binomial fit).
OVERDISPERSION_RATIO = 1.5
OVERDISPERSION_ALPHA = 0.05
#: A coefficient whose standard error exceeds this (on the log scale) is not estimable
#: (quasi-complete separation: a level without any microbleed).
MAX_ESTIMABLE_SE = 100.0
#: Negative-binomial alpha below this is on the boundary (the fit equals Poisson).
MIN_ALPHA = 1e-6


#: Columns of :attr:`CountModelFit.terms`.
TERM_FIT_COLUMNS = ["term", "coef", "se", "z", "p_value", "irr", "irr_ci_lower",
                    "irr_ci_upper", "ci_method", "estimable", "irr_firth",
                    "irr_firth_ci_lower", "irr_firth_ci_upper", "irr_profile_ci_lower",
                    "irr_profile_ci_upper"]


@dataclass
class CountModelFit:
    """A fitted (or not fittable) count regression.

    ``terms`` has one row per model coefficient (:data:`TERM_FIT_COLUMNS`): ``coef``,
    ``se`` and ``z`` are the maximum-likelihood estimate (log incidence-rate ratio) and
    its Wald statistics; ``irr``, ``irr_ci_lower``, ``irr_ci_upper`` and ``p_value`` are
    the reported estimate, interval and P value, from the method named in ``ci_method``:
    ``wald`` (``irr = exp(coef)``, the Wald interval) or, for a coefficient that is not
    estimable (separation), ``firth`` (the bias-reduced estimate and its Wald interval).
    When a model has a separated coefficient, every term also gets the Firth estimate
    and interval (``irr_firth*``) and the profile-likelihood interval of the
    maximum-likelihood fit (``irr_profile_ci_*``). When ``fitted`` is False ``message``
    says why and ``terms`` is empty. ``offset`` names the data column holding the log
    exposure (``None`` without), ``row_index`` the index labels of the rows used.
    """

    formula: str
    family: str
    fitted: bool = False
    message: str = ""
    terms: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=TERM_FIT_COLUMNS))
    offset: str | None = None
    row_index: list = field(default_factory=list)
    n_used: int = 0
    n_dropped: int = 0
    n_params: int = 0
    df_resid: float = math.nan
    deviance: float = math.nan
    pearson_chi2: float = math.nan
    dispersion: float = math.nan
    dispersion_test_statistic: float = math.nan
    dispersion_test_p_value: float = math.nan
    alpha: float = math.nan
    aic: float = math.nan
    log_likelihood: float = math.nan
    converged: bool = False

    @property
    def overdispersed(self):
        """True when a Poisson fit shows overdispersion (see module constants)."""
        if not self.fitted or self.family != "poisson":
            return False
        return bool(self.dispersion > OVERDISPERSION_RATIO
                    or self.dispersion_test_p_value < OVERDISPERSION_ALPHA)


def formula_term(name, categorical=False):
    """The patsy term for a data column: quoted with ``Q()`` unless a plain identifier.

    Categorical columns should be stored as :class:`pandas.Categorical` (the first
    category is the reference level); ``categorical=True`` wraps the term in ``C()``.
    """
    term = name if name.isidentifier() and name not in {"C", "I", "Q"} else f'Q("{name}")'
    return f"C({term})" if categorical else term


@contextlib.contextmanager
def _patsy_engine():
    """Use patsy as the statsmodels formula engine (statsmodels may pick formulaic)."""
    try:
        from statsmodels.formula import options
    except ImportError:  # statsmodels < 0.15 only knows patsy
        yield
        return
    previous = options.formula_engine
    options.formula_engine = "patsy"
    try:
        yield
    finally:
        options.formula_engine = previous


def _formula_env():
    import patsy

    return patsy.EvalEnvironment([{"np": np}])


def fit_count_model(data, formula, family="poisson", confidence=0.95, tol=1e-12,
                    maxiter=200, offset=None):
    """Fit a Poisson or negative-binomial regression of a count with a formula.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per participant. Categorical covariates should be
        :class:`pandas.Categorical` (the first category is the reference level).
    formula : str
        patsy formula, e.g. ``"n_cmb ~ age + sex + platelet_nadir"``; ``np`` is
        available (``np.log(age)``). Rows with a missing value in any variable of the
        formula are dropped (reported as ``n_dropped``).
    family : {"poisson", "negative_binomial"}
        ``"poisson"``: GLM with log link by IRLS (R's ``glm(family = poisson)``), with
        Pearson chi2/df and the Cameron-Trivedi overdispersion test.
        ``"negative_binomial"``: NB2 by maximum likelihood (``alpha = 1/theta`` of R's
        ``MASS::glm.nb``).
    confidence : float
        Level of the Wald confidence intervals of the IRRs.
    tol, maxiter : float, int
        Convergence settings of the optimiser.
    offset : str, optional
        Column of ``data`` holding the log exposure of each row (coefficient fixed at
        1), e.g. ``log(brain fraction covered)`` or ``log(interval in years)``; rows
        where it is missing are dropped.

    Returns
    -------
    CountModelFit
        Never raises for data that cannot be fitted (all-zero counts, fewer
        observations than parameters, a singular design, non-convergence): the result
        then has ``fitted=False`` and a ``message``. Formula errors (unknown column,
        syntax) raise :class:`ValueError`.
    """
    result = CountModelFit(formula=formula, family=family, offset=offset)
    n_rows = len(data)
    if offset is not None:
        data = data[np.isfinite(data[offset].astype(float))]
    model, used = _formula_model(data, formula, family, offset)
    if model is None:
        result.n_dropped = n_rows
        result.message = "no participant has values for every variable of the model"
        return result
    endog = np.asarray(model.endog, dtype=float)
    exog = np.asarray(model.exog, dtype=float)
    data = data.loc[used]
    log_exposure = None if offset is None else data[offset].to_numpy(dtype=float)
    result.row_index = list(used)
    result.n_used = int(endog.size)
    result.n_dropped = int(n_rows - endog.size)
    result.n_params = int(exog.shape[1])
    result.message = _unfittable_reason(endog, exog, formula)
    if result.message:
        return result

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if family == "poisson":
                fit = model.fit(tol=tol, maxiter=maxiter)
                converged, alpha = bool(fit.converged), None
            else:
                fit, converged, alpha = _fit_negative_binomial(model, formula, data, tol,
                                                               maxiter, offset)
        except Exception as exc:  # numerical failure (e.g. NB with alpha -> 0)
            result.message = f"fit failed: {str(exc).splitlines()[0]}"
            return result
    if family == "negative_binomial" and fit is None:
        result.message = "fit failed: the negative-binomial likelihood did not converge"
        return result

    names = list(model.exog_names)[: exog.shape[1]]
    params = np.asarray(fit.params, dtype=float)[: len(names)]
    bse = np.asarray(fit.bse, dtype=float)[: len(names)]
    if not np.all(np.isfinite(params)):
        result.message = "fit failed: non-finite estimates"
        return result
    terms = _terms_table(names, params, bse, exog, endog, confidence)
    sparse_note = ""
    if family == "poisson" and not terms["estimable"].all():
        sparse_note = _add_sparse_data_intervals(terms, endog, exog, log_exposure,
                                                 float(fit.deviance), confidence)
    _fill_fit(result, fit, terms, converged, alpha, endog)
    result.message = "; ".join(x for x in (result.message, sparse_note) if x)
    return result


def design_matrices(formula, data):
    """Outcome and design matrix of a patsy ``formula`` on the complete rows of ``data``.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        Indexed by the rows used (those without a missing value in the formula's
        variables).

    Raises
    ------
    ValueError
        Formula errors (unknown names, syntax).
    """
    import patsy

    with _patsy_engine(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return patsy.dmatrices(formula, data, NA_action="drop",
                                   eval_env=_formula_env(), return_type="dataframe")
        except Exception as exc:  # patsy errors: unknown names, syntax
            raise ValueError(f"cannot build the model {formula!r}: "
                             f"{str(exc).splitlines()[0]}") from exc


def _formula_model(data, formula, family, offset=None):
    """The statsmodels model of ``formula`` on ``data`` and the index of the rows it
    uses; ``(None, [])`` without a complete row.

    Raises :class:`ValueError` for formula errors (unknown names, syntax) and an unknown
    ``family``.
    """
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    if family not in ("poisson", "negative_binomial"):
        raise ValueError(f"unknown family {family!r}")
    outcome, _ = design_matrices(formula, data)
    if outcome.shape[0] == 0:
        return None, []
    used = list(outcome.index)
    data = data.loc[used]
    kwargs = {} if offset is None else {"offset": data[offset].to_numpy(dtype=float)}
    with _patsy_engine(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family == "poisson":
            return smf.glm(formula, data, family=sm.families.Poisson(),
                           eval_env=_formula_env(), **kwargs), used
        return smf.negativebinomial(formula, data, loglike_method="nb2",
                                    eval_env=_formula_env(), **kwargs), used


def _unfittable_reason(endog, exog, formula):
    """Why no model can be fitted to these data (``""`` when one can).

    Raises :class:`ValueError` when the outcome is not a count.
    """
    if endog.size == 0:
        return "no participant has values for every variable of the model"
    if np.any(endog < 0) or np.any(endog != np.round(endog)):
        raise ValueError(f"the outcome of {formula!r} is not a count")
    if endog.sum() == 0:
        return "all CMB counts are zero: no model fitted"
    if endog.size <= exog.shape[1]:
        return (f"{endog.size} participant(s) with complete data for "
                f"{exog.shape[1]} parameter(s): no model fitted")
    if np.linalg.matrix_rank(exog) < exog.shape[1]:
        return ("the design matrix is singular (a covariate is constant or "
                "collinear in the participants used): no model fitted")
    return ""


def wald_terms(names, params, bse, confidence=0.95):
    """One row per coefficient (:data:`TERM_FIT_COLUMNS`): Wald z, P and the IRR with
    its Wald interval (``ci_method = wald``); ``estimable`` False when the SE exceeds
    :data:`MAX_ESTIMABLE_SE`; the Firth and profile columns missing."""
    params = np.asarray(params, dtype=float)
    bse = np.asarray(bse, dtype=float)
    zcrit = _sps.norm.ppf(0.5 + confidence / 2.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        zval = params / bse
        terms = pd.DataFrame({
            "term": list(names), "coef": params, "se": bse, "z": zval,
            "p_value": 2.0 * _sps.norm.sf(np.abs(zval)), "irr": np.exp(params),
            "irr_ci_lower": np.exp(params - zcrit * bse),
            "irr_ci_upper": np.exp(params + zcrit * bse), "ci_method": "wald",
            "estimable": np.isfinite(bse) & (bse < MAX_ESTIMABLE_SE)})
    for column in TERM_FIT_COLUMNS[10:]:
        terms[column] = math.nan
    return terms[TERM_FIT_COLUMNS]


def _terms_table(names, params, bse, exog, endog, confidence):
    """:func:`wald_terms`, with the coefficients that separation makes infinite (found
    by :func:`.sparse.separated_directions`) flagged not estimable."""
    terms = wald_terms(names, params, bse, confidence)
    terms.loc[separated_directions(endog, exog), "estimable"] = False
    return terms


def _profile_intervals(terms, endog, exog, log_exposure, deviance, confidence):
    """Profile-likelihood intervals of every term, in place (``nan`` where the search
    fails numerically)."""
    for column in range(exog.shape[1]):
        try:
            lower, upper = profile_likelihood_interval(
                endog, exog, column, terms["coef"].iloc[column], terms["se"].iloc[column],
                offset=log_exposure, confidence=confidence, deviance=deviance)
        except (ValueError, np.linalg.LinAlgError):
            lower, upper = math.nan, math.nan
        with np.errstate(over="ignore"):
            terms.loc[column, ["irr_profile_ci_lower", "irr_profile_ci_upper"]] = (
                np.exp(lower), np.exp(upper))


def _add_sparse_data_intervals(terms, endog, exog, log_exposure, deviance, confidence):
    """Firth estimates and intervals and profile-likelihood intervals of every term
    (in place); non-estimable terms then report the Firth estimate (``ci_method``).

    Returns a note (``""`` when the Firth fit converged)."""
    _profile_intervals(terms, endog, exog, log_exposure, deviance, confidence)
    try:
        firth = firth_poisson(endog, exog, offset=log_exposure)
    except np.linalg.LinAlgError:
        firth = None
    if firth is None or not firth.converged:
        return "the Firth (bias-reduced) fit did not converge: Wald numbers reported"
    zcrit = _sps.norm.ppf(0.5 + confidence / 2.0)
    with np.errstate(over="ignore"):
        terms["irr_firth"] = np.exp(firth.coef)
        terms["irr_firth_ci_lower"] = np.exp(firth.coef - zcrit * firth.se)
        terms["irr_firth_ci_upper"] = np.exp(firth.coef + zcrit * firth.se)
    separated = ~terms["estimable"].to_numpy(dtype=bool)
    z_firth = firth.coef / firth.se
    terms.loc[separated, "irr"] = terms.loc[separated, "irr_firth"]
    terms.loc[separated, "irr_ci_lower"] = terms.loc[separated, "irr_firth_ci_lower"]
    terms.loc[separated, "irr_ci_upper"] = terms.loc[separated, "irr_firth_ci_upper"]
    terms.loc[separated, "p_value"] = 2.0 * _sps.norm.sf(np.abs(z_firth[separated]))
    terms.loc[separated, "ci_method"] = "firth"
    return ""


def _fill_fit(result, fit, terms, converged, alpha, endog):
    """Copy a successful fit's terms, likelihood and dispersion into ``result``."""
    family = result.family
    result.terms = terms
    result.fitted = True
    result.converged = converged
    result.log_likelihood = float(fit.llf)
    # AIC counts every estimated parameter (for NB also alpha), as R's AIC() does.
    result.aic = float(-2.0 * fit.llf + 2.0 * (len(terms) + (family != "poisson")))
    notes = []
    if not converged:
        notes.append("the fit did not converge")
    if not terms["estimable"].all():
        bad = ", ".join(terms.loc[~terms["estimable"], "term"])
        notes.append(f"not estimable (quasi-complete separation: no CMB on one side "
                     f"of the covariate): {bad}; ci_method says which estimate is "
                     "reported")
    if family == "poisson":
        mu = np.asarray(fit.fittedvalues, dtype=float)
        result.df_resid = float(fit.df_resid)
        result.deviance = float(fit.deviance)
        result.pearson_chi2 = float(fit.pearson_chi2)
        result.dispersion = (result.pearson_chi2 / result.df_resid
                             if result.df_resid > 0 else math.nan)
        stat, p_disp = count_overdispersion_test(endog, mu)
        result.dispersion_test_statistic, result.dispersion_test_p_value = stat, p_disp
    else:
        result.alpha = alpha
        if alpha <= MIN_ALPHA:
            notes.append("alpha is 0 (boundary): no extra-Poisson variation after "
                         "adjustment; the negative-binomial fit equals the Poisson fit")
        result.df_resid = float(fit.df_resid)
        result.deviance = float(fit.deviance)
    result.message = "; ".join(notes)


def _fit_negative_binomial(model, formula, data, tol, maxiter, offset=None):
    """NB2 fit as R's ``MASS::glm.nb``: ML for alpha, then a GLM with alpha fixed.

    The maximum-likelihood ``alpha`` comes from :class:`statsmodels` ``NegativeBinomial``
    (started from the Poisson estimates; Newton, falling back to BFGS). Coefficients and
    standard errors are then those of the GLM with that ``alpha`` fixed, which is what
    ``summary(glm.nb(...))`` reports (the SEs do not include the uncertainty of alpha).
    Returns ``(glm_results or None, converged, alpha)``.
    """
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    endog = np.asarray(model.endog, dtype=float)
    exog = np.asarray(model.exog, dtype=float)
    log_exposure = getattr(model, "offset", None)
    pois = sm.GLM(endog, exog, family=sm.families.Poisson(),
                  offset=log_exposure).fit(tol=tol, maxiter=maxiter)
    mu = np.asarray(pois.fittedvalues)
    alpha0 = max(float(np.sum(((endog - mu) ** 2 - endog) / mu ** 2) / endog.size), 0.05)
    start = np.append(np.asarray(pois.params), alpha0)
    nb_fit = None
    for method in ("newton", "bfgs", "lbfgs", "nm"):
        try:
            candidate = model.fit(start_params=start, method=method,
                                  maxiter=maxiter if method != "nm" else 50 * maxiter,
                                  disp=0)
        except Exception:  # noqa: BLE001 - try the next optimiser
            continue
        params = np.asarray(candidate.params, dtype=float)
        if (np.all(np.isfinite(params)) and np.isfinite(candidate.llf)
                and candidate.mle_retvals.get("converged", False)):
            nb_fit = candidate
            break
    if nb_fit is None:
        return None, False, math.nan
    alpha = float(np.asarray(nb_fit.params)[-1])
    # alpha on the boundary: no extra-Poisson variation, the NB fit is the Poisson fit
    alpha = max(alpha, MIN_ALPHA)
    with _patsy_engine():
        glm = smf.glm(formula, data, family=sm.families.NegativeBinomial(alpha=alpha),
                      eval_env=_formula_env(),
                      **({} if offset is None
                         else {"offset": data[offset].to_numpy(dtype=float)}))
    fit = glm.fit(tol=tol, maxiter=maxiter)
    return fit, bool(fit.converged), alpha


def count_overdispersion_test(counts, fitted_means):
    """Cameron-Trivedi regression test of Poisson overdispersion (NB2 alternative).

    Regresses ``((y - mu)^2 - y) / mu`` on ``mu`` without intercept by ordinary least
    squares (statsmodels); under equidispersion the slope is 0.

    Parameters
    ----------
    counts, fitted_means : array_like
        Observed counts ``y`` and fitted Poisson means ``mu``.

    Returns
    -------
    (float, float)
        The t statistic of the slope and its one-sided P value (overdispersion).
    """
    import statsmodels.api as sm

    y = np.asarray(counts, dtype=float)
    mu = np.asarray(fitted_means, dtype=float)
    if y.size < 3 or np.any(mu <= 0):
        return (math.nan, math.nan)
    aux = ((y - mu) ** 2 - y) / mu
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ols = sm.OLS(aux, mu[:, None]).fit()
    t_stat = float(np.asarray(ols.tvalues)[0])
    if not np.isfinite(t_stat):
        return (math.nan, math.nan)
    return (t_stat, float(_sps.t.sf(t_stat, ols.df_resid)))


def select_multivariate_covariates(univariate, alpha=0.05, forced=("age", "sex")):
    """Covariates for the multivariate model, as the ITP study chose them.

    Parameters
    ----------
    univariate : dict of str to CountModelFit
        Univariate Poisson fit of each covariate (keyed by column name).
    alpha : float
        A covariate enters when any of its terms has ``P < alpha`` and is estimable.
    forced : sequence of str
        Covariates always included when present in ``univariate`` (matched
        case-insensitively), by default age and sex.

    Returns
    -------
    list of str
        Column names, forced covariates first, then in the order of ``univariate``.
    """
    chosen = []
    lower = {name.lower(): name for name in univariate}
    for name in forced:
        if name.lower() in lower:
            chosen.append(lower[name.lower()])
    for name, fit in univariate.items():
        if name in chosen or not fit.fitted:
            continue
        terms = fit.terms[fit.terms["term"] != "Intercept"]
        if ((terms["p_value"] < alpha) & terms["estimable"]).any():
            chosen.append(name)
    return chosen
