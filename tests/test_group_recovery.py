"""Recovery: cohorts drawn from a known Poisson model, analysed by the group level.

The participant output trees are synthesised directly from the model (the imaging
pipeline is not run; see ``tests/test_group_cohort.py``). Over many cohorts the
multivariate model must recover the sign and significance of the true effects, its 95%
confidence intervals must cover the true incidence-rate ratios about 95% of the time,
and the null covariate must be significant only about 5% of the time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmbprep.group import run_group
from .test_group_cohort import TRUE_LOG_IRR, synthesise_cohort

TERMS = {"age": "age_per_year", "sex[T.M]": "sex_M",
         "platelet_nadir": "platelet_nadir_per_unit", "I(smog >= 2)[T.True]": "smog_ge_2",
         "bmi": "bmi_per_unit"}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_group_level_recovers_known_effects(tmp_path):
    n_cohorts = 20
    results = []
    for seed in range(n_cohorts):
        bids_dir, out, _ = synthesise_cohort(tmp_path / f"c{seed}", n_patients=200,
                                             n_controls=0, seed=100 + seed, intercept=0.3)
        written = run_group(
            out, bids_dir, model="age + sex + platelet_nadir + I(smog >= 2) + bmi")
        models = pd.read_csv(written["regression_models"], sep="\t")
        terms = pd.read_csv(written["regression"], sep="\t")
        mid = models[(models["analysis"] == "multivariate")
                     & (models["family"] == "poisson")]["model_id"].iloc[0]
        est = terms[terms["model_id"] == mid].set_index("term")
        for term, key in TERMS.items():
            truth = np.exp(TRUE_LOG_IRR[key])
            row = est.loc[term]
            results.append({"term": term, "true_irr": truth, "irr": row["irr"],
                            "p": row["p_value"],
                            "covered": row["irr_ci_lower"] <= truth <= row["irr_ci_upper"]})
    table = pd.DataFrame(results)
    by_term = table.groupby("term")
    coverage = by_term["covered"].mean()
    assert (coverage >= 0.8).all(), coverage  # nominal 0.95 over 20 cohorts
    assert table["covered"].mean() >= 0.88
    significant = by_term["p"].apply(lambda p: (p < 0.05).mean())
    print(pd.DataFrame({"true_irr": by_term["true_irr"].first(),
                        "median_irr": by_term["irr"].median(), "coverage": coverage,
                        "fraction_p_lt_0.05": significant}).to_string())
    for term in ("age", "platelet_nadir", "I(smog >= 2)[T.True]", "sex[T.M]"):
        signs = np.sign(np.log(table.loc[table["term"] == term, "irr"]))
        assert (signs == np.sign(TRUE_LOG_IRR[TERMS[term]])).mean() >= 0.9, term
    assert significant["platelet_nadir"] == 1.0
    assert significant["age"] >= 0.9
    assert significant["I(smog >= 2)[T.True]"] >= 0.7
    assert significant["bmi"] <= 0.2  # no true effect
