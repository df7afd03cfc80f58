"""Group statistics against R (stored reference numbers) and their edge cases."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmbprep.algorithms import stats

REF = Path(__file__).parent / "data" / "r_reference"


def _r_name(term):
    """statsmodels/patsy term name -> R coefficient name."""
    if term == "Intercept":
        return "(Intercept)"

    def level(match):
        value = match.group(1)
        return value.upper() if value in ("True", "False") else value

    return re.sub(r"\[T\.(.*)\]$", level, term)


@pytest.fixture(scope="module")
def reference_data():
    data = pd.read_csv(REF / "poisson_input.csv")
    data["sex"] = pd.Categorical(data["sex"], categories=["F", "M"])
    data["group"] = pd.Categorical(data["group"], categories=["control", "itp"])
    return data


REFERENCE = pd.read_csv(REF / "poisson_reference.csv")
CASES = list(REFERENCE.groupby(["formula", "family"], sort=False).groups)


@pytest.mark.parametrize("formula,family", CASES)
def test_count_models_agree_with_r(reference_data, formula, family):
    """glm(family = poisson) to 1e-6 (coef) and 1e-4 (SE); MASS::glm.nb likewise."""
    ref = REFERENCE[(REFERENCE["formula"] == formula) & (REFERENCE["family"] == family)]
    fit = stats.fit_count_model(reference_data, formula, family=family)
    assert fit.fitted, fit.message
    assert fit.converged
    terms = fit.terms.assign(term=fit.terms["term"].map(_r_name)).set_index("term")
    assert sorted(terms.index) == sorted(ref["term"])
    terms = terms.loc[ref["term"]]
    np.testing.assert_allclose(terms["coef"], ref["coef"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(terms["se"], ref["se"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(terms["p_value"], ref["p_value"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(terms["irr"], np.exp(ref["coef"]), rtol=1e-6)
    assert fit.n_used == ref["n_used"].iloc[0]
    assert fit.n_dropped == len(reference_data) - ref["n_used"].iloc[0]
    assert fit.deviance == pytest.approx(ref["deviance"].iloc[0], abs=1e-5)
    assert fit.aic == pytest.approx(ref["aic"].iloc[0], abs=1e-5)
    if family == "poisson":
        assert fit.dispersion == pytest.approx(ref["dispersion"].iloc[0], abs=1e-8)
    else:
        assert 1.0 / fit.alpha == pytest.approx(ref["theta"].iloc[0], rel=1e-5)


PREV = pd.read_csv(REF / "prevalence_reference.csv")


def test_clopper_pearson_agrees_with_binom_test():
    rows = PREV[PREV["what"] == "binom"]
    assert len(rows) == 6
    for _, row in rows.iterrows():
        low, high = stats.clopper_pearson_interval(row["n_with"], row["n_total"])
        assert low == pytest.approx(row["ci_lower"], abs=1e-10)
        assert high == pytest.approx(row["ci_upper"], abs=1e-10)


def test_trend_and_group_tests_agree_with_r():
    x, n = [0, 2, 4, 15], [4, 9, 11, 25]  # the ITP study's platelet-nadir bins
    ref = PREV.set_index("what")
    trend = stats.cochran_armitage_trend_test(x, n)
    assert trend.statistic ** 2 == pytest.approx(ref.loc["prop.trend.test", "statistic"],
                                                 rel=1e-10)
    assert trend.p_value == pytest.approx(ref.loc["prop.trend.test", "p_value"], rel=1e-8)
    assert trend.statistic > 0  # prevalence rises over the bins
    scored = stats.cochran_armitage_trend_test(x, n, scores=[2.5, 7.5, 12.5, 30])
    assert scored.statistic ** 2 == pytest.approx(
        ref.loc["prop.trend.test.scores", "statistic"], rel=1e-10)
    fisher = stats.compare_prevalence([21, 0], [49, 18])  # 43% of patients, 0 controls
    assert fisher.test == "fisher_exact"
    assert fisher.p_value == pytest.approx(ref.loc["fisher.test", "p_value"], rel=1e-8)
    chi2 = stats.compare_prevalence(x, n)
    assert chi2.statistic == pytest.approx(ref.loc["chisq.test", "statistic"], rel=1e-10)
    assert chi2.p_value == pytest.approx(ref.loc["chisq.test", "p_value"], rel=1e-8)
    assert chi2.df == 3


def test_trend_test_degenerate_inputs():
    assert math.isnan(stats.cochran_armitage_trend_test([0, 0], [5, 5]).p_value)
    assert "two" in stats.cochran_armitage_trend_test([1, 0], [5, 0]).message
    reversed_trend = stats.cochran_armitage_trend_test([15, 4, 2, 0], [25, 11, 9, 4])
    assert reversed_trend.statistic < 0


def test_clopper_pearson_edges():
    assert all(math.isnan(v) for v in stats.clopper_pearson_interval(0, 0))
    low, high = stats.clopper_pearson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10))
    low, high = stats.clopper_pearson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 10))
    with pytest.raises(ValueError):
        stats.clopper_pearson_interval(3, 2)


def test_bin_by_edges_lower_edges_and_open_top():
    cat = stats.bin_by_edges([0, 4.99, 5, 14.9, 15, 300, -1, np.nan], [0, 5, 10, 15])
    assert list(cat.categories) == ["[0, 5)", "[5, 10)", "[10, 15)", "[15, inf)"]
    labels = list(cat.astype(object))
    assert labels[:6] == ["[0, 5)", "[0, 5)", "[5, 10)", "[10, 15)", "[15, inf)",
                          "[15, inf)"]
    assert pd.isna(labels[6]) and pd.isna(labels[7])
    with pytest.raises(ValueError):
        stats.bin_by_edges([1], [5, 5])


def test_prevalence_by_level_keeps_empty_bins():
    has = np.array([True, False, True, False, False])
    table = stats.prevalence_by_level(has, stats.bin_by_edges([1, 6, 16, 3, np.nan],
                                                              [0, 5, 10, 15]))
    assert list(table["n_participants"]) == [2, 1, 0, 1]
    assert list(table["n_with"]) == [1, 0, 0, 1]
    assert np.isnan(table.loc[2, "prevalence"])
    overall = stats.prevalence_by_level(has)
    assert overall.loc[0, "level"] == "all" and overall.loc[0, "prevalence"] == 0.4
    by_group = stats.prevalence_by_level(has, ["b", "a", "a", None, "b"])
    assert list(by_group["level"]) == ["a", "b"]
    assert list(by_group["n_participants"]) == [2, 2]
    assert list(by_group["n_with"]) == [1, 1]


def test_natural_sort_key_numbers_first_then_text():
    values = ["a", "10", "inf", "2", "B", "1e3", "nan", "-inf", "-1.5"]
    assert sorted(values, key=stats.natural_sort_key) == [
        "-1.5", "2", "10", "1e3", "-inf", "B", "a", "inf", "nan"]
    table = stats.prevalence_by_level([True, False, True], [10.0, 2.0, 10.0])
    assert list(table["level"]) == ["2.0", "10.0"]


def test_prevalence_test_results():
    assert isinstance(stats.compare_prevalence([1, 2], [5, 5]), stats.PrevalenceTest)
    assert stats.compare_prevalence([1, 2, 3], [5, 5, 5]).test == "chi2_independence"
    assert stats.cochran_armitage_trend_test([1, 2], [5, 5]).test == "cochran_armitage"


def test_overdispersion_detected_only_when_present():
    """The Cameron-Trivedi test keeps its level on Poisson data and finds NB2 data."""
    rng = np.random.default_rng(3)
    false_alarms, detections = 0, 0
    n_sim = 30
    for _ in range(n_sim):
        x = rng.normal(size=300)
        mu = np.exp(0.5 + 0.3 * x)
        fit = stats.fit_count_model(pd.DataFrame({"y": rng.poisson(mu), "x": x}), "y ~ x")
        assert 0.7 < fit.dispersion < 1.3
        false_alarms += fit.dispersion_test_p_value < 0.05
        # NB2 counts with alpha = 1: variance mu + mu^2
        nb = pd.DataFrame({"y": rng.poisson(mu * rng.gamma(1.0, 1.0, x.size)), "x": x})
        fit = stats.fit_count_model(nb, "y ~ x")
        detections += fit.overdispersed and fit.dispersion_test_p_value < 0.05
    assert false_alarms <= 5  # nominal 5%: 1.5 expected of 30
    assert detections == n_sim
    nb_fit = stats.fit_count_model(nb, "y ~ x", family="negative_binomial")
    assert 0.6 < nb_fit.alpha < 1.6
    slope = nb_fit.terms.set_index("term").loc["x"]
    assert slope["irr_ci_lower"] < math.exp(0.3) < slope["irr_ci_upper"]


def test_unfittable_models_give_messages_not_errors():
    zeros = pd.DataFrame({"y": [0, 0, 0, 0], "x": [1.0, 2.0, 3.0, 4.0]})
    fit = stats.fit_count_model(zeros, "y ~ x")
    assert not fit.fitted and "zero" in fit.message and fit.terms.empty
    one = pd.DataFrame({"y": [3], "x": [1.0]})
    fit = stats.fit_count_model(one, "y ~ x")
    assert not fit.fitted and "parameter" in fit.message
    constant = pd.DataFrame({"y": [1, 2, 0, 4], "x": [1.0, 1.0, 1.0, 1.0]})
    fit = stats.fit_count_model(constant, "y ~ x")
    assert not fit.fitted and "singular" in fit.message
    missing = pd.DataFrame({"y": [1, 2, 0, 4], "x": [np.nan] * 4})
    fit = stats.fit_count_model(missing, "y ~ x")
    assert not fit.fitted and fit.n_dropped == 4
    with pytest.raises(ValueError, match="nope"):
        stats.fit_count_model(constant, "y ~ nope")


def test_separation_is_flagged():
    data = pd.DataFrame({"y": [0, 0, 0, 0, 1, 3, 0, 2],
                         "group": pd.Categorical(["c"] * 4 + ["p"] * 4,
                                                 categories=["c", "p"])})
    fit = stats.fit_count_model(data, "y ~ group")
    assert fit.fitted
    assert not fit.terms.set_index("term").loc["group[T.p]", "estimable"]
    assert "separation" in fit.message


def test_select_multivariate_covariates():
    rng = np.random.default_rng(1)
    n = 300
    data = pd.DataFrame({"age": rng.normal(50, 10, n), "noise": rng.normal(size=n),
                         "dose": rng.normal(size=n),
                         "sex": pd.Categorical(rng.choice(["F", "M"], n))})
    data["y"] = rng.poisson(np.exp(0.2 + 0.6 * data["dose"]))
    fits = {c: stats.fit_count_model(data, f"y ~ {c}") for c in ("age", "noise", "dose",
                                                                 "sex")}
    chosen = stats.select_multivariate_covariates(fits)
    assert chosen[:2] == ["age", "sex"] and "dose" in chosen
    assert stats.formula_term("platelet nadir") == 'Q("platelet nadir")'
    assert stats.formula_term("sex", categorical=True) == "C(sex)"
