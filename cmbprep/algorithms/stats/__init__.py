"""Group-level statistics on microbleed counts: prevalence and count regression.

Pure functions on :mod:`pandas`/:mod:`numpy` data, no file access and no Nipype. They
reproduce the analysis of the ITP study (Blood 2020;136:2875): prevalence of CMBs per
group and by bins of a covariate with exact (Clopper-Pearson) confidence intervals and a
Cochran-Armitage trend test (:mod:`.prevalence`), and univariate then multivariate
Poisson regression of CMB counts reported as incidence-rate ratios, with an
overdispersion check and a negative-binomial fit, with an offset for the exposure
(:mod:`.regression`); for separated covariates a bias-reduced (Firth) estimate and
profile-likelihood intervals (:mod:`.sparse`); and a Poisson GEE for counts repeated over
sessions (:mod:`.repeated`).
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
    TERM_FIT_COLUMNS,
    CountModelFit,
    count_overdispersion_test,
    fit_count_model,
    formula_term,
    select_multivariate_covariates,
    wald_terms,
)
from .repeated import GEEFit, fit_gee_poisson
from .sparse import (
    FirthFit,
    firth_poisson,
    profile_likelihood_interval,
    separated_directions,
)

__all__ = [
    "MAX_ESTIMABLE_SE",
    "MIN_ALPHA",
    "OVERDISPERSION_ALPHA",
    "OVERDISPERSION_RATIO",
    "TERM_FIT_COLUMNS",
    "CountModelFit",
    "FirthFit",
    "GEEFit",
    "PrevalenceTest",
    "bin_by_edges",
    "clopper_pearson_interval",
    "cochran_armitage_trend_test",
    "compare_prevalence",
    "count_overdispersion_test",
    "firth_poisson",
    "fit_count_model",
    "fit_gee_poisson",
    "formula_term",
    "is_finite_number",
    "natural_sort_key",
    "prevalence_by_level",
    "profile_likelihood_interval",
    "select_multivariate_covariates",
    "separated_directions",
    "wald_terms",
]
