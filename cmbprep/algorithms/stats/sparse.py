"""Separation and sparse counts in Poisson regression: detection, a bias-reduced
(Firth) estimate and profile-likelihood intervals.

When a covariate separates the counts (for example a level, or one side of a threshold,
without any microbleed) the maximum-likelihood estimate does not exist: the IRLS
iterations drift towards an infinite coefficient whose Wald interval is meaningless.

- :func:`separated_directions` finds such coefficients exactly, by linear programming
  (the recession directions of the Poisson log-likelihood), for any design matrix, not
  only for 0/1 columns.
- :func:`firth_poisson` is the mean-bias-reduced Poisson GLM (Firth 1993): for the
  canonical log link it maximises the likelihood penalised by the Jeffreys prior,
  ``l(b) + 1/2 log det(X' W X)``, and is finite under separation. It equals R's
  ``brglm2::brglmFit(type = "AS_mean")`` (Kosmidis and Firth 2009, 2021).
- :func:`profile_likelihood_interval` inverts the likelihood-ratio test of one
  coefficient, as R's ``confint()`` of a ``glm`` (``MASS:::confint.glm``); under
  separation one of its bounds is infinite.

Pure numpy/scipy functions on arrays (``y`` counts, ``X`` design with its intercept
column, ``offset`` the log exposure), no file access.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize as _opt
from scipy import stats as _sps

__all__ = [
    "FirthFit",
    "firth_poisson",
    "poisson_deviance",
    "poisson_irls",
    "profile_likelihood_interval",
    "separated_directions",
]

#: Coefficients of a recession direction smaller than this are taken as zero.
_DIRECTION_TOL = 1e-7


def _offset(offset, n):
    return np.zeros(n) if offset is None else np.asarray(offset, dtype=float)


def separated_directions(counts, design):
    """Which coefficients are infinite because the covariates separate the counts.

    The Poisson log-likelihood has no maximum when a direction ``d != 0`` exists with
    ``x_i . d = 0`` for every row with a count and ``x_i . d <= 0`` for every row without,
    at least one strictly (Haberman 1974; Santner and Duffy 1986): along ``d`` the
    likelihood keeps rising. The linear program ``min sum(X0 d)`` subject to
    ``X+ d = 0`` and ``-1 <= X0 d <= 0`` finds one when it exists.

    Parameters
    ----------
    counts : array_like (n,)
        Observed counts.
    design : array_like (n, p)
        Design matrix.

    Returns
    -------
    numpy.ndarray of bool (p,)
        True for the coefficients that move along the direction found (all False when
        the maximum-likelihood estimate exists).
    """
    y = np.asarray(counts, dtype=float)
    x = np.asarray(design, dtype=float)
    positive, zero = x[y > 0], x[y == 0]
    none = np.zeros(x.shape[1], dtype=bool)
    if len(zero) == 0:
        return none
    scale = np.maximum(np.abs(x).max(axis=0), 1.0)
    xs_pos, xs_zero = positive / scale, zero / scale
    result = _opt.linprog(
        c=xs_zero.sum(axis=0),
        A_ub=np.vstack([xs_zero, -xs_zero]),
        b_ub=np.concatenate([np.zeros(len(zero)), np.ones(len(zero))]),
        A_eq=xs_pos if len(positive) else None,
        b_eq=np.zeros(len(positive)) if len(positive) else None,
        bounds=[(None, None)] * x.shape[1], method="highs")
    if result.status != 0 or result.fun > -1e-6:
        return none
    direction = result.x / scale
    return np.abs(direction) > _DIRECTION_TOL * np.abs(direction).max()


def poisson_deviance(counts, means):
    """Poisson deviance ``2 sum(y log(y / mu) - (y - mu))`` (0 log 0 = 0)."""
    y = np.asarray(counts, dtype=float)
    mu = np.asarray(means, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(2.0 * np.sum(ratio - (y - mu)))


def poisson_irls(counts, design, offset=None, tol=1e-12, maxiter=200):
    """Maximum-likelihood Poisson GLM (log link) by iteratively reweighted least squares.

    A small solver for the many constrained refits of a profile likelihood (no formula,
    no result object). Starts, as R's ``glm.fit``, from ``mu = y + 0.1`` and stops when
    the relative change of the deviance is below ``tol``.

    Returns
    -------
    (numpy.ndarray, float)
        Coefficients and deviance. A design with no column gives ``([], deviance of the
        offset alone)``.
    """
    y = np.asarray(counts, dtype=float)
    x = np.asarray(design, dtype=float).reshape(len(y), -1)
    off = _offset(offset, len(y))
    if x.shape[1] == 0:
        return np.zeros(0), poisson_deviance(y, np.exp(off))
    eta = np.log(y + 0.1)
    deviance, beta = math.inf, np.zeros(x.shape[1])
    for _ in range(maxiter):
        mu = np.exp(eta)
        z = eta - off + (y - mu) / mu
        sw = np.sqrt(mu)
        beta = np.linalg.lstsq(x * sw[:, None], z * sw, rcond=None)[0]
        eta = np.clip(x @ beta + off, -700, 700)
        new = poisson_deviance(y, np.exp(eta))
        if abs(new - deviance) / (abs(new) + 0.1) < tol:
            return beta, new
        deviance = new
    return beta, deviance


@dataclass
class FirthFit:
    """A bias-reduced Poisson fit: coefficients, their standard errors (inverse
    expected information at the estimate), the penalised log-likelihood and whether
    the iterations converged."""

    coef: np.ndarray
    se: np.ndarray
    penalised_log_likelihood: float
    converged: bool
    iterations: int


def _penalised_loglik(y, x, off, beta):
    """Poisson log-likelihood (without the log y! constant) + 1/2 log det(X' W X)."""
    eta = x @ beta + off
    mu = np.exp(eta)
    sign, logdet = np.linalg.slogdet(x.T @ (x * mu[:, None]))
    return float(np.sum(y * eta - mu) + 0.5 * logdet) if sign > 0 else -math.inf


def firth_poisson(counts, design, offset=None, tol=1e-10, maxiter=500):
    """Mean-bias-reduced Poisson GLM with log link (Firth 1993).

    Solves the adjusted score equations ``X' (y + h/2 - mu) = 0`` (``h`` the leverages
    of the weighted design) by quasi-Fisher scoring with step halving on the
    Jeffreys-penalised log-likelihood; for the canonical link this is the maximum of
    that penalised likelihood, and the estimate stays finite under separation. The
    same estimator as R's ``brglm2::brglmFit(type = "AS_mean")``.

    Parameters
    ----------
    counts : array_like (n,)
    design : array_like (n, p)
        Full-rank design matrix (with its intercept column).
    offset : array_like (n,), optional
        Log exposure (e.g. log of the brain fraction covered, or of the interval).
    tol : float
        Convergence when the largest step of a coefficient is below ``tol``.
    maxiter : int

    Returns
    -------
    FirthFit
    """
    y = np.asarray(counts, dtype=float)
    x = np.asarray(design, dtype=float)
    off = _offset(offset, len(y))
    rate = max(y.sum(), 0.5) / np.exp(off).sum()
    beta = np.linalg.lstsq(x, np.full(len(y), math.log(rate)), rcond=None)[0]
    current = _penalised_loglik(y, x, off, beta)
    converged, iteration = False, 0
    for iteration in range(1, maxiter + 1):
        mu = np.exp(x @ beta + off)
        info = x.T @ (x * mu[:, None])
        info_inv = np.linalg.inv(info)
        leverage = mu * np.einsum("ij,jk,ik->i", x, info_inv, x)
        step = info_inv @ (x.T @ (y + leverage / 2.0 - mu))
        for _ in range(30):  # step halving keeps the penalised likelihood rising
            candidate = _penalised_loglik(y, x, off, beta + step)
            if candidate >= current - 1e-12:
                break
            step = step / 2.0
        beta, current = beta + step, candidate
        if np.max(np.abs(step)) < tol:
            converged = True
            break
    mu = np.exp(x @ beta + off)
    cov = np.linalg.inv(x.T @ (x * mu[:, None]))
    return FirthFit(coef=beta, se=np.sqrt(np.diag(cov)), penalised_log_likelihood=current,
                    converged=converged, iterations=iteration)


def _constrained_deviance(y, x, off, column, value):
    """Deviance of the fit with coefficient ``column`` fixed at ``value``."""
    others = np.delete(x, column, axis=1)
    return poisson_irls(y, others, off + x[:, column] * value)[1]


def _profile_bound(y, x, off, column, estimate, se, rise, side):
    """The value of the coefficient, on one side of ``estimate`` (``side`` +1 or -1),
    where the deviance exceeds its value at ``estimate`` by ``rise``; ``+-inf`` when it
    never does."""
    base = _constrained_deviance(y, x, off, column, estimate)

    def excess(value):
        return _constrained_deviance(y, x, off, column, value) - base - rise

    delta = se if np.isfinite(se) and 0 < se < 10 else 1.0
    inner = estimate
    for _ in range(60):
        outer = estimate + side * delta
        if abs(outer) > 1e3:
            return side * math.inf
        if excess(outer) > 0:
            return float(_opt.brentq(excess, min(inner, outer), max(inner, outer),
                                     xtol=1e-10, rtol=1e-12))
        inner, delta = outer, delta * 2.0
    return side * math.inf


def profile_likelihood_interval(counts, design, column, estimate, se, offset=None,
                                confidence=0.95, deviance=None):
    """Profile-likelihood confidence interval of one coefficient of a Poisson GLM.

    The interval holds the values ``b`` whose likelihood-ratio statistic
    ``D(b) - D_min`` (``D(b)`` the deviance with the coefficient fixed at ``b`` and the
    others refitted) stays below the chi-squared(1) quantile, as R's ``confint()`` of a
    ``glm`` (which interpolates a spline through profile points; this solves for the
    bounds exactly).

    Parameters
    ----------
    counts, design : array_like
        The data of the fitted model (design with its intercept column).
    column : int
        Index of the coefficient.
    estimate, se : float
        Its maximum-likelihood estimate and Wald standard error (starting scale of the
        search; a huge ``se`` under separation is replaced by 1).
    offset : array_like, optional
    confidence : float
    deviance : float, optional
        The minimum deviance; default: the deviance at ``estimate`` (under separation
        the supremum of the likelihood, which the drifting estimate approaches).

    Returns
    -------
    (float, float)
        Lower and upper bound on the coefficient scale; ``-inf``/``inf`` when the
        likelihood never drops enough on that side (separation).
    """
    y = np.asarray(counts, dtype=float)
    x = np.asarray(design, dtype=float)
    off = _offset(offset, len(y))
    rise = float(_sps.chi2.ppf(confidence, 1))
    if deviance is not None:  # measured from the minimum, not from the value at estimate
        rise += float(deviance) - _constrained_deviance(y, x, off, column, estimate)
    return (_profile_bound(y, x, off, column, estimate, se, rise, -1),
            _profile_bound(y, x, off, column, estimate, se, rise, +1))
