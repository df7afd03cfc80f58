"""Column descriptions (JSON sidecars) of the group tables.

``group_cmb_sidecar`` describes ``group_cmb.tsv`` (its lobe columns depend on the data);
the other tables have fixed columns, described by the dictionaries below.
"""

from __future__ import annotations

from ..algorithms import stats


def _describe(description, units=None, levels=None):
    entry = {"Description": description}
    if units:
        entry["Units"] = units
    if levels:
        entry["Levels"] = levels
    return entry


def group_cmb_sidecar(columns):
    """Column descriptions of ``group_cmb.tsv``."""
    base = {
        "participant_id": _describe("Participant label (sub-<label>)."),
        "session_id": _describe("Session label (ses-<label>); n/a without sessions."),
        "acquisition": _describe("acq entity of the SWI input; n/a when absent."),
        "run": _describe("run entity of the SWI input; n/a when absent."),
        "count_source": _describe(
            "Where the counts come from.",
            levels={"rater": "a rater's review (_desc-reviewed_cmb.tsv, the rater's "
                             "rows with status cmb)",
                    "automatic": "the automatic detection (_desc-cmb_cmb.tsv)"}),
        "rater": _describe("Rater whose review is counted: the rater column of the "
                           "reviewed table (the one chosen with --rater; else the only "
                           "one, or the first by name), or the 'Rater' of the sidecar of "
                           "a table without that column; n/a when not given or not "
                           "reviewed."),
        "n_cmb": _describe("Number of cerebral microbleeds.", "count"),
        "n_lobar": _describe("Microbleeds in lobar locations (MARS: cortex and "
                             "juxtacortical white matter of the lobes, insula).", "count"),
        "n_deep": _describe("Microbleeds in deep locations (MARS: basal ganglia, "
                            "thalamus, capsules, corpus callosum, deep and periventricular "
                            "white matter).", "count"),
        "n_infratentorial": _describe("Microbleeds in the brainstem or cerebellum (MARS).",
                                      "count"),
        "n_not_assigned": _describe("Microbleeds without a MARS category (outside the "
                                    "atlas or not covered).", "count"),
        "total_volume_mm3": _describe("Sum of the microbleeds' volumes (volume_mm3 of the "
                                      "counted table); n/a when the table has no volume.",
                                      "mm^3"),
        "n_review_pending": _describe("Candidates still marked 'review' (not counted): "
                                      "the rater's undecided and unsure ones, or the "
                                      "detector's 'review' ones when counted "
                                      "automatically; n/a without a candidates table.",
                                      "count"),
        "detector": _describe("Detector named in _desc-summary_cmb.json."),
        "registration_ok": _describe("registration_ok of _desc-summary_cmb.json; n/a "
                                     "without a summary."),
        "n_registration_warnings": _describe("Number of registration warnings.", "count"),
        "registration_warnings": _describe("Registration warnings, separated by '; '."),
        "regions_not_covered": _describe("Atlas regions outside the field of view, "
                                         "separated by '; '."),
        "brain_coverage_fraction": _describe(
            "Fraction of the template brain volume inside the field of view "
            "(brain_coverage_fraction of _desc-summary_cmb.json); n/a for outputs of a "
            "cmbprep that did not record it (analysed as fully covered). Below 1 the "
            "count models use the offset log(brain_coverage_fraction).", "ratio"),
        "fov_complete": _describe("true when every region is inside the field of view."),
        "qc_pass": _describe("true when registration is ok without warnings and the "
                             "field of view is complete; n/a without a summary. Units "
                             "with registration_ok false are left out of prevalence and "
                             "models unless --keep-failed-qc."),
        "cmb_table": _describe("The table that was counted, relative to the output "
                               "folder."),
    }
    for column in columns:
        if column.startswith("n_lobe_"):
            base[column] = _describe(f"Microbleeds in the {column[7:]} lobe (lobe column "
                                     "of the counted table).", "count")
    return base


PREVALENCE_SIDECAR = {
    "outcome": _describe("What is counted as present.", levels={
        "any_cmb": "at least one microbleed", "lobar_cmb": "at least one lobar microbleed",
        "deep_cmb": "at least one deep microbleed",
        "infratentorial_cmb": "at least one infratentorial microbleed"}),
    "grouping": _describe("Covariate that splits the participants ('all' for every "
                          "analysed participant)."),
    "level": _describe("Group level, or bin [lower, upper) of a binned covariate."),
    "n_participants": _describe("Participants in the level.", "count"),
    "n_with": _describe("Participants with the outcome.", "count"),
    "prevalence": _describe("n_with / n_participants.", "ratio"),
    "ci_lower": _describe("Lower bound of the exact (Clopper-Pearson) 95% confidence "
                          "interval.", "ratio"),
    "ci_upper": _describe("Upper bound of the exact (Clopper-Pearson) 95% confidence "
                          "interval.", "ratio"),
    "n_not_binned": _describe("Participants left out of this grouping (missing value, "
                              "or below the first bin edge).", "count"),
}

PREVALENCE_TESTS_SIDECAR = {
    "outcome": PREVALENCE_SIDECAR["outcome"],
    "grouping": PREVALENCE_SIDECAR["grouping"],
    "test": _describe("Test used.", levels={
        "fisher_exact": "Fisher's exact test, two-sided (two groups); statistic is the "
                        "sample odds ratio",
        "chi2_independence": "Pearson chi-squared test of independence (more than two "
                             "groups); statistic is chi-squared",
        "cochran_armitage": "Cochran-Armitage test for trend over ordered bins (scores "
                            "1..k, as R's prop.trend.test); statistic is the signed z "
                            "(positive: prevalence rises with the covariate)"}),
    "statistic": _describe("Test statistic (see test)."),
    "df": _describe("Degrees of freedom of the chi-squared reference distribution."),
    "p_value": _describe("Two-sided P value."),
    "n_participants": _describe("Participants in the test.", "count"),
    "message": _describe("Why no test could be done; n/a otherwise."),
}

MODELS_SIDECAR = {
    "model_id": _describe("Identifier linking to group_regression.tsv."),
    "analysis": _describe("Model type.", levels={
        "univariate": "one covariate",
        "multivariate": "several covariates: --model; else the pre-specified age + sex "
                        "+ group column; with --covariate-selection univariate-p the "
                        "covariates with P < 0.05 in a univariate model plus age and "
                        "sex"}),
    "family": _describe("Count distribution (log link).", levels={
        "poisson": "Poisson GLM (IRLS), as R's glm(family = poisson)",
        "negative_binomial": "NB2, alpha by maximum likelihood, coefficients as R's "
                             "MASS::glm.nb; fitted when the Poisson model is overdispersed"}),
    "covariate": _describe("Covariate(s) of the model."),
    "formula": _describe("patsy formula of the model."),
    "offset": _describe("Column whose values enter the linear predictor with "
                        "coefficient 1 (log exposure): log_brain_coverage = "
                        "log(brain_coverage_fraction) when a unit's field of view misses "
                        "part of the brain; n/a without offset."),
    "fitted": _describe("false when no model could be fitted (see message)."),
    "message": _describe("Why the model was not fitted, or warnings (separation, "
                         "non-convergence, covariates left out)."),
    "n_used": _describe("Participants used (complete data).", "count"),
    "n_dropped": _describe("Participants dropped for missing values.", "count"),
    "n_rater": _describe("Rows used whose counts come from a rater's review "
                         "(count_source rater).", "count"),
    "n_automatic": _describe("Rows used whose counts come from the automatic detection "
                             "(count_source automatic).", "count"),
    "n_params": _describe("Number of coefficients (with intercept).", "count"),
    "df_resid": _describe("Residual degrees of freedom."),
    "deviance": _describe("Residual deviance."),
    "pearson_chi2": _describe("Pearson chi-squared statistic (Poisson)."),
    "dispersion": _describe("pearson_chi2 / df_resid (about 1 without overdispersion)."),
    "dispersion_test_statistic": _describe("t statistic of the Cameron-Trivedi "
                                           "overdispersion test."),
    "dispersion_test_p_value": _describe("One-sided P value of the Cameron-Trivedi test."),
    "overdispersed": _describe(f"true when dispersion > {stats.OVERDISPERSION_RATIO} or "
                               f"the test has P < {stats.OVERDISPERSION_ALPHA}; a "
                               "negative-binomial fit is then reported too."),
    "alpha": _describe("Negative-binomial dispersion alpha (variance mu + alpha mu^2; "
                       "1/theta of R)."),
    "aic": _describe("Akaike information criterion (counts alpha for NB)."),
    "log_likelihood": _describe("Log-likelihood."),
    "converged": _describe("Whether the optimiser converged."),
}

TERMS_SIDECAR = {
    "model_id": MODELS_SIDECAR["model_id"],
    "analysis": MODELS_SIDECAR["analysis"],
    "family": MODELS_SIDECAR["family"],
    "formula": MODELS_SIDECAR["formula"],
    "term": _describe("Model term (patsy name; 'x[T.level]' is level vs the reference "
                      "level)."),
    "irr": _describe("Reported incidence-rate ratio: multiplicative change of the "
                     "expected count per unit of the covariate (or vs the reference "
                     "level); exp(coef) when ci_method is wald, the Firth estimate "
                     "irr_firth when it is firth.", "ratio"),
    "irr_ci_lower": _describe("Lower bound of the reported 95% confidence interval of "
                              "irr (see ci_method).", "ratio"),
    "irr_ci_upper": _describe("Upper bound of the reported 95% confidence interval of "
                              "irr (see ci_method).", "ratio"),
    "ci_method": _describe("Where irr, its interval and p_value come from.", levels={
        "wald": "the maximum-likelihood estimate exp(coef) and its Wald interval "
                "(robust SEs for the GEE)",
        "firth": "the coefficient is not estimable (separation): the bias-reduced "
                 "(Firth, Jeffreys-prior penalised) estimate, its Wald interval and P "
                 "value, as R's brglm2 (type AS_mean)"}),
    "p_value": _describe("Two-sided Wald P value (of the method in ci_method)."),
    "coef": _describe("Maximum-likelihood coefficient (log incidence-rate ratio)."),
    "se": _describe("Standard error of coef."),
    "z": _describe("coef / se."),
    "estimable": _describe("false under quasi-complete separation (no microbleed on "
                           "one side of the covariate, found by linear programming): "
                           "the maximum-likelihood estimate is unbounded and "
                           "meaningless."),
    "irr_firth": _describe("Bias-reduced (Firth) incidence-rate ratio, finite under "
                           "separation; n/a unless a term of the model is not "
                           "estimable.", "ratio"),
    "irr_firth_ci_lower": _describe("Lower bound of the Wald 95% interval of irr_firth.",
                                    "ratio"),
    "irr_firth_ci_upper": _describe("Upper bound of the Wald 95% interval of irr_firth.",
                                    "ratio"),
    "irr_profile_ci_lower": _describe("Lower bound of the profile-likelihood 95% "
                                      "interval of the maximum-likelihood IRR (0 when "
                                      "the likelihood never drops enough on that side); "
                                      "n/a unless a term of the model is not "
                                      "estimable.", "ratio"),
    "irr_profile_ci_upper": _describe("Upper bound of the profile-likelihood 95% "
                                      "interval (inf when unbounded).", "ratio"),
}

LONGITUDINAL_MODELS_SIDECAR = {
    **MODELS_SIDECAR,
    "model_id": _describe("Identifier linking to group_longitudinal.tsv."),
    "analysis": _describe("Model type.", levels={
        "repeated_counts": "microbleed count of every session (n_cmb) of every "
                           "participant, Poisson GEE clustered by participant, with "
                           "the time since the first session (years_since_first, in "
                           "years) when session dates are known",
        "new_lesion_rate": "new microbleeds per interval between consecutive sessions "
                           "(n_new of the participant's _desc-sessions_cmb.tsv), with "
                           "the offset log_interval_years: IRRs are ratios of the rate "
                           "of new microbleeds per year"}),
    "family": _describe("Count distribution (log link).", levels={
        **MODELS_SIDECAR["family"]["Levels"],
        "poisson_gee": "generalised estimating equation, Poisson, exchangeable working "
                       "correlation, robust (sandwich) SEs, as R's geepack::geeglm"}),
    "offset": _describe("Column whose values enter the linear predictor with "
                        "coefficient 1: log_interval_years (rate model), "
                        "log_brain_coverage (GEE, when a session's field of view "
                        "misses part of the brain); n/a without."),
    "n_used": _describe("Rows used: sessions (GEE) or intervals (rate model).", "count"),
    "n_dropped": _describe("Rows dropped for missing values (covariates, or session "
                           "dates for the time variable).", "count"),
    "n_participants": _describe("Participants (clusters) in the GEE.", "count"),
    "working_correlation": _describe("Working correlation structure of the GEE."),
    "correlation": _describe("Estimated correlation of the Pearson residuals of two "
                             "sessions of the same participant (exchangeable)."),
    "dispersion": _describe("pearson_chi2 / df_resid (about 1 without "
                            "overdispersion)."),
}

LONGITUDINAL_TERMS_SIDECAR = {
    **TERMS_SIDECAR,
    "model_id": LONGITUDINAL_MODELS_SIDECAR["model_id"],
    "analysis": LONGITUDINAL_MODELS_SIDECAR["analysis"],
    "family": LONGITUDINAL_MODELS_SIDECAR["family"],
    "se": _describe("Standard error of coef (robust sandwich SE for the GEE)."),
}

AGREEMENT_SIDECAR = {
    "rater_1": _describe("First rater of the pair (by name)."),
    "rater_2": _describe("Second rater of the pair."),
    "n_units": _describe("Participant units (session/acquisition/run) both reviewed.",
                         "count"),
    "n_candidates": _describe("Candidates both decided (yes, no or unsure), pooled over "
                              "the units.", "count"),
    "percent_agreement": _describe("Candidates with the same decision.", "%"),
    "kappa": _describe("Cohen's kappa of the decisions (yes / no / unsure) on those "
                       "candidates; n/a when undefined (one decision only)."),
    "kappa_ci_lower": _describe("Lower bound of the 95% confidence interval of kappa "
                                "(kappa - 1.96 SE, SE = sqrt(po (1 - po) / (n (1 - "
                                "pe)^2)), Cohen 1960)."),
    "kappa_ci_upper": _describe("Upper bound of the 95% confidence interval of kappa."),
    "n_units_complete": _describe("Units both raters finished (no undecided candidate): "
                                  "the targets of the ICC.", "count"),
    "mean_count_1": _describe("Mean number of microbleeds (decision yes) per complete "
                              "unit, rater_1.", "count"),
    "mean_count_2": _describe("Mean number of microbleeds per complete unit, rater_2.",
                              "count"),
    "icc": _describe("Intraclass correlation of the microbleed counts per unit: ICC(A,1) "
                     "of McGraw and Wong 1996 (two-way random effects, absolute "
                     "agreement, single rater; Shrout and Fleiss ICC(2,1)); n/a with "
                     "fewer than two complete units or without variance."),
    "icc_ci_lower": _describe("Lower bound of the 95% confidence interval of the ICC "
                              "(McGraw and Wong 1996, F distribution)."),
    "icc_ci_upper": _describe("Upper bound of the 95% confidence interval of the ICC."),
    "message": _describe("Why kappa or the ICC is n/a; n/a otherwise."),
}
