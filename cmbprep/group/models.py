"""Count-model tables: univariate and multivariate Poisson models of the microbleed
counts, numbered and laid out as rows of ``group_regression_models.tsv`` and
``group_regression.tsv`` (and, with the extra columns of repeated measures, of
``group_longitudinal_models.tsv`` and ``group_longitudinal.tsv``).

The multivariate model is pre-specified by default (``--model``, else age, sex and the
group column); ``--covariate-selection univariate-p`` reproduces the ITP study's
"significant in univariate models, then multivariate" selection.
"""

from __future__ import annotations

import pandas as pd

from ..algorithms import stats
from ..config import COVARIATE_SELECTIONS
from ..errors import DataError

MODEL_OUTCOME = "n_cmb"
#: P value below which a univariate covariate enters the multivariate model under
#: ``--covariate-selection univariate-p`` (and gets a figure in the report).
SIGNIFICANCE = 0.05
MAX_CATEGORICAL_LEVELS = 12
#: Covariates of the pre-specified model (matched case-insensitively), with the group
#: column.
PRESPECIFIED = ("age", "sex")
#: Columns of ``group_regression.tsv`` and ``group_longitudinal.tsv``.
TERM_COLUMNS = ["model_id", "analysis", "family", "formula", "term", "irr",
                "irr_ci_lower", "irr_ci_upper", "ci_method", "p_value", "coef", "se", "z",
                "estimable", "irr_firth", "irr_firth_ci_lower", "irr_firth_ci_upper",
                "irr_profile_ci_lower", "irr_profile_ci_upper"]
#: Count sources of ``group_cmb.tsv`` (``count_source``) counted in every model row.
COUNT_SOURCES = ("rater", "automatic")


def _model_rows(model_id, analysis, covariate, fit, sources=None):
    """(summary row, term rows) of one fit; ``sources`` is the ``count_source`` of each
    row of the data the fit used (``None``: not known)."""
    summary = {
        "model_id": model_id, "analysis": analysis, "family": fit.family,
        "covariate": covariate, "formula": fit.formula, "offset": fit.offset,
        "fitted": fit.fitted, "message": fit.message or None, "n_used": fit.n_used,
        "n_dropped": fit.n_dropped,
        **{f"n_{source}": (None if sources is None else int((sources == source).sum()))
           for source in COUNT_SOURCES},
        "n_params": fit.n_params, "df_resid": fit.df_resid, "deviance": fit.deviance,
        "pearson_chi2": fit.pearson_chi2, "dispersion": fit.dispersion,
        "dispersion_test_statistic": fit.dispersion_test_statistic,
        "dispersion_test_p_value": fit.dispersion_test_p_value,
        "overdispersed": fit.overdispersed if fit.family == "poisson" and fit.fitted
        else None,
        "alpha": fit.alpha, "aic": fit.aic, "log_likelihood": fit.log_likelihood,
        "converged": fit.converged if fit.fitted else None,
        "n_participants": getattr(fit, "n_clusters", None),
        "working_correlation": getattr(fit, "working_correlation", None),
        "correlation": getattr(fit, "correlation", None),
    }
    terms = fit.terms.copy()
    terms.insert(0, "model_id", model_id)
    terms.insert(1, "analysis", analysis)
    terms.insert(2, "family", fit.family)
    terms.insert(3, "formula", fit.formula)
    return summary, terms


#: Columns of ``group_longitudinal_models.tsv``.
LONGITUDINAL_MODEL_COLUMNS = list(_model_rows("", "", None,
                                              stats.CountModelFit("", "poisson"))[0])
#: Columns of ``group_regression_models.tsv`` (no repeated measures).
MODEL_COLUMNS = LONGITUDINAL_MODEL_COLUMNS[:-3]


class ModelTables:
    """The model and term rows, numbered ``<prefix>001``, ``<prefix>002``... in the
    order added.

    Parameters
    ----------
    data : pandas.DataFrame
        The rows the models are fitted to; its ``count_source`` column (when present)
        gives the count sources of the rows each model used.
    columns : list of str
        Columns of the model table.
    prefix : str
        Prefix of the model identifiers (``m`` cross-sectional, ``l`` longitudinal).
    """

    def __init__(self, data, columns=MODEL_COLUMNS, prefix="m"):
        self.data, self.columns, self.prefix = data, columns, prefix
        self.summaries, self.term_tables = [], []

    def _next_id(self):
        return f"{self.prefix}{len(self.summaries) + 1:03d}"

    def _append(self, analysis, covariate, fit, data):
        sources = (data.loc[fit.row_index, "count_source"]
                   if "count_source" in data and fit.row_index else None)
        summary, terms = _model_rows(self._next_id(), analysis, covariate, fit, sources)
        self.summaries.append(summary)
        self.term_tables.append(terms)

    def add(self, analysis, covariate, fit, data=None):
        """Add a fit, and beside an overdispersed Poisson fit its negative-binomial fit
        (``data``: the rows it was fitted to, default those of the tables)."""
        data = self.data if data is None else data
        self._append(analysis, covariate, fit, data)
        if fit.overdispersed:
            nb = stats.fit_count_model(data, fit.formula, family="negative_binomial",
                                       offset=fit.offset)
            self._append(analysis, covariate, nb, data)

    def skip(self, analysis, covariate, formula, message, family="poisson"):
        """Add a row for a model that was not fitted (``message`` says why)."""
        fit = stats.CountModelFit(formula=formula, family=family, message=message)
        summary, _ = _model_rows(self._next_id(), analysis, covariate, fit)
        self.summaries.append(summary)
        self.term_tables.append(pd.DataFrame())

    def frames(self):
        """(model table, term table)."""
        models = pd.DataFrame(self.summaries, columns=self.columns)
        non_empty = [t for t in self.term_tables if len(t)]
        terms = (pd.concat(non_empty, ignore_index=True)[TERM_COLUMNS] if non_empty
                 else pd.DataFrame(columns=TERM_COLUMNS))
        return models, terms


def _not_modelled_reason(values, kind):
    """Why a covariate gets no univariate model (``None`` when it gets one)."""
    if values.nunique() < 2:
        return "skipped: fewer than two distinct values"
    if kind == "categorical" and (values.nunique() > MAX_CATEGORICAL_LEVELS
                                  or values.nunique() == len(values)):
        return (f"skipped: categorical with {values.nunique()} levels "
                f"(more than {MAX_CATEGORICAL_LEVELS} or one per participant)")
    return None


def _univariate_models(tables, data, covariates, kinds, outcome, offset):
    univariate = {}
    for column in covariates:
        formula = f"{outcome} ~ {stats.formula_term(column)}"
        reason = _not_modelled_reason(data[column].dropna(), kinds.get(column))
        if reason:
            tables.skip("univariate", column, formula, reason)
            continue
        fit = stats.fit_count_model(data, formula, offset=offset)
        univariate[column] = fit
        tables.add("univariate", column, fit)
    return univariate


def prespecified_covariates(covariates, group_column=None):
    """The covariates of the pre-specified model: age and sex (matched
    case-insensitively) and the group column, those that exist, in that order."""
    lower = {name.lower(): name for name in covariates}
    chosen = [lower[name] for name in PRESPECIFIED if name in lower]
    if group_column in covariates and group_column not in chosen:
        chosen.append(group_column)
    return chosen


def model_formula(data, outcome, covariates, extra_terms=()):
    """``outcome ~ covariates + extra_terms`` without the covariates that are constant
    in the rows with complete data; returns ``(formula, covariates left out)``."""
    complete = data.dropna(subset=[outcome, *covariates])
    kept = [c for c in covariates if complete[c].nunique() > 1]
    terms = [stats.formula_term(c) for c in kept] + list(extra_terms)
    dropped = [c for c in covariates if c not in kept]
    return f"{outcome} ~ " + (" + ".join(terms) if terms else "1"), dropped


def note_left_out(fit, dropped):
    """Say in the fit's message which covariates were left out for being constant."""
    if dropped:
        note = (f"left out (constant in the participants with complete data): "
                f"{', '.join(dropped)}")
        fit.message = "; ".join(x for x in (fit.message, note) if x)
    return fit


def _multivariate_model(tables, data, chosen, outcome, offset, why_none):
    """Fit ``outcome ~ chosen`` (constant covariates left out, said in the message)."""
    if not chosen:
        tables.skip("multivariate", None, "", why_none)
        return
    formula, dropped = model_formula(data, outcome, chosen)
    kept = [c for c in chosen if c not in dropped]
    fit = note_left_out(stats.fit_count_model(data, formula, offset=offset), dropped)
    tables.add("multivariate", ", ".join(kept), fit)


def _selected_by_univariate_p(univariate):
    """Covariates with P < SIGNIFICANCE plus age and sex, as the ITP study chose them
    (empty when none is significant)."""
    chosen = stats.select_multivariate_covariates(univariate, alpha=SIGNIFICANCE)
    forced = [c for c in chosen if c.lower() in PRESPECIFIED]
    return chosen if len(chosen) > len(forced) else []


def model_from_option(model, outcome=MODEL_OUTCOME):
    """The full formula of ``--model`` (right-hand side or full formula)."""
    return model if "~" in model else f"{outcome} ~ {model}"


def run_regressions(data, covariates, kinds, model=None, outcome=MODEL_OUTCOME, *,
                    selection="prespecified", group_column=None, offset=None):
    """Univariate Poisson models per covariate, then the multivariate model.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per participant: the outcome count, the covariates and, when known,
        ``count_source`` (reported per model as ``n_rater``/``n_automatic``).
    covariates : list of str
        Covariate columns to model univariately.
    kinds : dict
        ``{column: "numeric" | "categorical"}``.
    model : str, optional
        Multivariate formula (``"age + sex"`` or ``"n_cmb ~ age + sex"``).
    selection : {"prespecified", "univariate-p"}
        Without ``model``: ``prespecified`` fits age + sex + ``group_column`` (those
        present); ``univariate-p`` the covariates with P < 0.05 in a univariate
        Poisson model plus age and sex (the ITP study's selection).
    group_column : str, optional
        The group column (enters the pre-specified model).
    offset : str, optional
        Column of ``data`` with the log exposure (log of the brain fraction covered).

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame, dict)
        Model table, term table, and the univariate Poisson fits by covariate. A
        negative-binomial fit is added beside every overdispersed Poisson fit.
    """
    if selection not in COVARIATE_SELECTIONS:
        raise DataError(f"--covariate-selection {selection!r}: choose one of "
                        f"{', '.join(COVARIATE_SELECTIONS)}")
    tables = ModelTables(data)
    univariate = _univariate_models(tables, data, covariates, kinds, outcome, offset)
    if model:
        try:
            fit = stats.fit_count_model(data, model_from_option(model, outcome),
                                        offset=offset)
        except ValueError as exc:
            raise DataError(f"--model {model!r}: {exc}") from exc
        tables.add("multivariate", None, fit)
    elif selection == "univariate-p":
        _multivariate_model(tables, data, _selected_by_univariate_p(univariate), outcome,
                            offset, f"no multivariate model: no covariate had P < "
                            f"{SIGNIFICANCE} in a univariate Poisson model")
    else:
        _multivariate_model(tables, data, prespecified_covariates(covariates, group_column),
                            outcome, offset, "no multivariate model: none of the "
                            "pre-specified covariates (age, sex, group column) exists")
    models, terms = tables.frames()
    return models, terms, univariate
