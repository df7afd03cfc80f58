"""Repeated-measures, rate and sparse-data count models against R (stored numbers).

``tests/data/r_reference/repeated_reference.R`` made the reference numbers with
geepack, MASS and brglm2 (R is not needed to run these tests).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import patsy
import pytest

from cmbprep.algorithms import stats
from cmbprep.algorithms.stats import sparse
from .test_stats import _r_name

REF = Path(__file__).parent / "data" / "r_reference"
REFERENCE = pd.read_csv(REF / "repeated_reference.csv")


def _factors(data):
    for column, levels in (("sex", ["F", "M"]), ("group", ["control", "itp"])):
        if column in data:
            data[column] = pd.Categorical(data[column], categories=levels)
    return data


@pytest.fixture(scope="module")
def repeated():
    data = _factors(pd.read_csv(REF / "repeated_input.csv"))
    data["log_coverage"] = np.log(data["coverage"])
    return data


@pytest.fixture(scope="module")
def rate():
    data = _factors(pd.read_csv(REF / "rate_input.csv"))
    data["log_interval_years"] = np.log(data["interval_years"])
    return data


@pytest.fixture(scope="module")
def separation():
    return _factors(pd.read_csv(REF / "separation_input.csv"))


def _reference(case, method, formula=None):
    rows = REFERENCE[(REFERENCE["case"] == case) & (REFERENCE["method"] == method)]
    if formula is not None:
        rows = rows[rows["formula"] == formula]
    return rows.set_index("term")


def _by_r_name(terms):
    return terms.assign(term=terms["term"].map(_r_name)).set_index("term")


@pytest.mark.parametrize("case, offset", [("gee", None), ("gee_offset", "log_coverage")])
def test_gee_agrees_with_geepack(repeated, case, offset):
    """geeglm(corstr = "exchangeable"): coefficients and robust SEs to 1e-6, the
    working correlation to 1e-8."""
    ref = _reference(case, "gee")
    fit = stats.fit_gee_poisson(repeated, "n_cmb ~ age + sex + group + years",
                                "participant_id", offset=offset)
    assert fit.fitted and fit.converged, fit.message
    terms = _by_r_name(fit.terms).loc[ref.index]
    np.testing.assert_allclose(terms["coef"], ref["coef"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(terms["se"], ref["se"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(terms["p_value"], ref["p_value"], rtol=0, atol=1e-6)
    assert fit.correlation == pytest.approx(ref["extra"].iloc[0], abs=1e-8)
    assert fit.n_used == ref["n_used"].iloc[0] and fit.n_clusters == 30
    assert (terms["ci_method"] == "wald").all()


def test_gee_offset_changes_the_estimates(repeated):
    plain = stats.fit_gee_poisson(repeated, "n_cmb ~ years", "participant_id")
    offset = stats.fit_gee_poisson(repeated, "n_cmb ~ years", "participant_id",
                                   offset="log_coverage")
    assert not np.allclose(plain.terms["coef"], offset.terms["coef"])
    zeros = repeated.assign(n_cmb=0)
    assert "zero" in stats.fit_gee_poisson(zeros, "n_cmb ~ years",
                                           "participant_id").message


@pytest.mark.parametrize("family", ["poisson", "negative_binomial"])
def test_rate_model_with_offset_agrees_with_r(rate, family):
    """glm(n_new ~ ... + offset(log(interval_years))) and glm.nb: coefficients 1e-6,
    SEs 1e-4, as for the cross-sectional models."""
    ref = _reference("rate", family)
    fit = stats.fit_count_model(rate, "n_new ~ age + sex + group", family=family,
                                offset="log_interval_years")
    assert fit.fitted and fit.converged, fit.message
    terms = _by_r_name(fit.terms).loc[ref.index]
    np.testing.assert_allclose(terms["coef"], ref["coef"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(terms["se"], ref["se"], rtol=0, atol=1e-4)
    assert fit.deviance == pytest.approx(ref["deviance"].iloc[0], abs=1e-5)
    if family == "poisson":
        assert fit.dispersion == pytest.approx(ref["extra"].iloc[0], abs=1e-8)
    else:
        assert 1.0 / fit.alpha == pytest.approx(ref["extra"].iloc[0], rel=1e-5)


def test_rate_offset_rows_with_missing_interval_are_dropped(rate):
    data = rate.copy()
    data.loc[:4, "log_interval_years"] = np.nan
    fit = stats.fit_count_model(data, "n_new ~ age", offset="log_interval_years")
    assert fit.n_used == len(data) - 5 and fit.n_dropped == 5
    assert fit.row_index == list(data.index[5:])


@pytest.mark.parametrize("method, atol", [("profile_uniroot", 1e-6), ("profile", 1e-3)])
def test_profile_interval_agrees_with_r(rate, method, atol):
    """Exact bounds to 1e-6 against R's uniroot on glm refits; to 1e-3 against
    confint() (MASS), which interpolates a spline through profile points."""
    ref = _reference("rate", method)
    y, x = patsy.dmatrices("n_new ~ age + sex + group", rate, return_type="dataframe")
    fit = stats.fit_count_model(rate, "n_new ~ age + sex + group",
                                offset="log_interval_years")
    for column, name in enumerate(x.columns):
        lower, upper = sparse.profile_likelihood_interval(
            y.to_numpy().ravel(), x.to_numpy(), column, fit.terms["coef"].iloc[column],
            fit.terms["se"].iloc[column], offset=rate["log_interval_years"].to_numpy())
        row = ref.loc[_r_name(name)]
        assert lower == pytest.approx(row["ci_lower"], abs=atol), name
        assert upper == pytest.approx(row["ci_upper"], abs=atol), name
        assert lower < row["coef"] < upper


def test_firth_agrees_with_brglm2_with_offset(rate):
    ref = _reference("rate", "firth")
    y, x = patsy.dmatrices("n_new ~ age + sex", rate, return_type="dataframe")
    fit = sparse.firth_poisson(y.to_numpy().ravel(), x.to_numpy(),
                               offset=rate["log_interval_years"].to_numpy())
    assert fit.converged
    names = [_r_name(n) for n in x.columns]
    np.testing.assert_allclose(fit.coef, ref.loc[names, "coef"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(fit.se, ref.loc[names, "se"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("formula", ["n_cmb ~ group + age", "n_cmb ~ group + dose"])
def test_separated_group_gets_firth_and_profile_intervals(separation, formula):
    """No control has a microbleed: the ML group effect is infinite. Reported: the
    bias-reduced estimate (brglm2 AS_mean) with its interval (1e-6), and the profile
    interval, infinite on one side (R: NA), finite bounds to 1e-6."""
    fit = stats.fit_count_model(separation, formula)
    assert fit.fitted and "separation" in fit.message
    terms = _by_r_name(fit.terms)
    firth, profile = (_reference("separation", m, formula) for m in ("firth", "profile"))
    assert list(terms.index[~terms["estimable"].astype(bool)]) == ["(Intercept)",
                                                                   "groupitp"]
    assert list(terms["ci_method"]) == ["firth", "firth", "wald"]
    np.testing.assert_allclose(np.log(terms.loc[firth.index, "irr_firth"]),
                               firth["coef"], rtol=0, atol=1e-6)
    for bound in ("ci_lower", "ci_upper"):
        np.testing.assert_allclose(np.log(terms.loc[firth.index, f"irr_firth_{bound}"]),
                                   firth[bound], rtol=0, atol=1e-6)
        with np.errstate(divide="ignore"):  # IRR bound 0: coefficient -inf
            ours = np.log(terms.loc[profile.index, f"irr_profile_{bound}"].astype(float))
        expected = profile[bound].fillna(-np.inf if bound == "ci_lower" else np.inf)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    group = terms.loc["groupitp"]
    assert group["irr"] == group["irr_firth"] and math.isfinite(group["irr_ci_upper"])
    assert group["p_value"] == pytest.approx(firth.loc["groupitp", "p_value"], abs=1e-6)
    covariate = terms.iloc[2]
    assert covariate["irr"] == pytest.approx(math.exp(covariate["coef"]))


def test_separation_found_for_a_numeric_covariate():
    """All microbleeds at the highest dose: the dose effect has no finite estimate,
    though dose is not a 0/1 column."""
    data = pd.DataFrame({"y": [0, 0, 0, 0, 0, 2, 3, 1],
                         "dose": [1.0, 2.0, 2.5, 3.0, 3.5, 5.0, 5.0, 5.0]})
    flagged = sparse.separated_directions(data["y"], np.c_[np.ones(8), data["dose"]])
    assert flagged.tolist() == [True, True]
    fit = stats.fit_count_model(data, "y ~ dose")
    assert not fit.terms["estimable"].any()
    assert (fit.terms["ci_method"] == "firth").all()
    assert math.isinf(fit.terms["irr_profile_ci_upper"].iloc[1])
    assert fit.terms["irr_profile_ci_lower"].iloc[1] > 1
    ordinary = data.assign(y=[0, 1, 0, 2, 0, 2, 3, 1])
    assert not sparse.separated_directions(
        ordinary["y"], np.c_[np.ones(8), ordinary["dose"]]).any()
    assert (stats.fit_count_model(ordinary, "y ~ dose").terms["ci_method"] == "wald").all()
