"""Group-level statistics on microbleed counts: prevalence and count regression.

Pure functions on :mod:`pandas`/:mod:`numpy` data, no file access and no Nipype. They
reproduce the analysis of the ITP study (Blood 2020;136:2875): prevalence of CMBs per
group and by bins of a covariate with exact (Clopper-Pearson) confidence intervals and a
Cochran-Armitage trend test (:mod:`.prevalence`), and univariate then multivariate
Poisson regression of CMB counts reported as incidence-rate ratios, with an
overdispersion check and a negative-binomial fit (:mod:`.regression`).
"""

from .prevalence import (
    PrevalenceTest,
    bin_by_edges,
    clopper_pearson_interval,
    cochran_armitage_trend_test,
    compare_prevalence,
    is_finite_number,
    natural_sort_key,
    prevalence_by_level,
)
from .regression import (
    MAX_ESTIMABLE_SE,
    MIN_ALPHA,
    OVERDISPERSION_ALPHA,
    OVERDISPERSION_RATIO,
    CountModelFit,
    count_overdispersion_test,
    fit_count_model,
    formula_term,
    select_multivariate_covariates,
)

__all__ = [
    "MAX_ESTIMABLE_SE",
    "MIN_ALPHA",
    "OVERDISPERSION_ALPHA",
    "OVERDISPERSION_RATIO",
    "CountModelFit",
    "PrevalenceTest",
    "bin_by_edges",
    "clopper_pearson_interval",
    "cochran_armitage_trend_test",
    "compare_prevalence",
    "count_overdispersion_test",
    "fit_count_model",
    "formula_term",
    "is_finite_number",
    "natural_sort_key",
    "prevalence_by_level",
    "select_multivariate_covariates",
]
