"""The group report ``group_cmb.html``: tables and inline SVG figures, opens offline.

Figures are drawn with matplotlib's Agg/SVG backends and embedded in the page (no
external files, no network). SVG output is made deterministic (fixed hash salt, no
date), so the same inputs give the same HTML.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from ..algorithms import stats
from ..utils.io import write_text_atomic

_COLORS = {"any_cmb": "#4c72b0", "lobar_cmb": "#dd8452"}


def _svg(fig):
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return text[text.index("<svg"):]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "cmbprep-group"
    plt.rcParams["svg.fonttype"] = "none"
    return plt


def figure_region_distribution(group_cmb):
    """Bar charts of the microbleeds by MARS category and by lobe (all participants)."""
    plt = _pyplot()
    mars = ["n_lobar", "n_deep", "n_infratentorial", "n_not_assigned"]
    lobes = [c for c in group_cmb.columns if c.startswith("n_lobe_")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    totals = [int(group_cmb[c].sum()) for c in mars]
    axes[0].bar([c[2:].replace("_", " ") for c in mars], totals, color="#4c72b0")
    axes[0].set_title("By MARS category")
    axes[0].set_ylabel("microbleeds (all participants)")
    totals = [int(group_cmb[c].sum()) for c in lobes]
    axes[1].bar([c[7:].replace("_", " ") for c in lobes], totals, color="#dd8452")
    axes[1].set_title("Lobar microbleeds by lobe")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return _svg(fig)


def figure_prevalence(prevalence, grouping):
    """Prevalence (any and lobar CMB) per level of a grouping, with exact 95% CIs."""
    plt = _pyplot()
    part = prevalence[prevalence["grouping"] == grouping]
    outcomes = [o for o in ("any_cmb", "lobar_cmb") if o in set(part["outcome"])]
    levels = list(dict.fromkeys(part["level"]))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(levels) + 2), 3.2))
    width = 0.8 / max(len(outcomes), 1)
    x = np.arange(len(levels))
    for k, outcome in enumerate(outcomes):
        rows = part[part["outcome"] == outcome].set_index("level").loc[levels]
        prev = rows["prevalence"].to_numpy(dtype=float)
        low = prev - rows["ci_lower"].to_numpy(dtype=float)
        high = rows["ci_upper"].to_numpy(dtype=float) - prev
        with warnings.catch_warnings():  # matplotlib's yerr check with one bar (numpy 2)
            warnings.simplefilter("ignore", DeprecationWarning)
            ax.bar(x + (k - (len(outcomes) - 1) / 2) * width, np.nan_to_num(prev), width,
                   yerr=np.nan_to_num(np.vstack([low, high])), capsize=3,
                   color=_COLORS[outcome], label=outcome.replace("_", " "))
        for xi, (n_with, n_all) in zip(x, rows[["n_with", "n_participants"]].to_numpy()):
            ax.text(xi + (k - (len(outcomes) - 1) / 2) * width, 1.04,
                    f"{int(n_with)}/{int(n_all)}", ha="center", fontsize=7)
    ax.set_xticks(x, levels)
    ax.set_ylim(0, 1.12)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("prevalence (95% CI)")
    ax.set_xlabel("" if grouping == "all" else grouping)
    ax.set_title("all participants" if grouping == "all" else f"by {grouping}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2,
              frameon=False)
    fig.tight_layout()
    return _svg(fig)


def figure_count_vs_covariate(data, covariate, kind, fit=None, outcome="n_cmb"):
    """CMB count against one covariate; the univariate Poisson fit drawn over it.

    Numeric covariates: scatter (counts jittered by a fixed-seed +-0.15) and the fitted
    mean exp(b0 + b1 x). Categorical: counts per level with the level means.
    """
    plt = _pyplot()
    frame = data[[outcome, covariate]].dropna()
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    y = frame[outcome].to_numpy(dtype=float)
    jitter = rng.uniform(-0.15, 0.15, y.size)
    if kind == "numeric":
        x = frame[covariate].to_numpy(dtype=float)
        ax.scatter(x, y + jitter, s=12, alpha=0.6, color="#4c72b0")
        if fit is not None and fit.fitted and len(fit.terms) == 2:
            b0, b1 = fit.terms["coef"].to_numpy(dtype=float)
            grid = np.linspace(np.min(x), np.max(x), 100)
            ax.plot(grid, np.exp(b0 + b1 * grid), color="#c44e52",
                    label=f"Poisson fit, IRR {math.exp(b1):.3g}/unit")
            ax.legend(fontsize=8)
    else:
        levels = list(frame[covariate].cat.categories) if hasattr(
            frame[covariate], "cat") else sorted(frame[covariate].unique())
        levels = [lvl for lvl in levels if (frame[covariate] == lvl).any()]
        for i, level in enumerate(levels):
            member = (frame[covariate] == level).to_numpy()
            ax.scatter(np.full(member.sum(), i) + jitter[member], y[member], s=12,
                       alpha=0.6, color="#4c72b0")
            ax.plot([i - 0.3, i + 0.3], [y[member].mean()] * 2, color="#c44e52")
        ax.set_xticks(range(len(levels)), [str(lvl) for lvl in levels])
    p_text = ""
    if fit is not None and fit.fitted:
        p_min = fit.terms.loc[fit.terms["term"] != "Intercept", "p_value"].min()
        p_text = f" (P = {p_min:.2g})"
    ax.set_title(f"{covariate}{p_text}", fontsize=10)
    ax.set_xlabel(covariate)
    ax.set_ylabel("number of CMBs")
    fig.tight_layout()
    return _svg(fig)


def _html_table(frame, max_rows=None):
    shown = (frame if max_rows is None else frame.head(max_rows)).copy()
    for column in shown.columns:  # None in object columns escapes na_rep
        if shown[column].dtype == object:
            shown[column] = shown[column].map(
                lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v))
                else v)

    def fmt(value):
        return f"{value:.4g}"

    text = shown.to_html(index=False, na_rep="n/a", float_format=fmt, classes="data",
                         border=0, escape=True)
    if max_rows is not None and len(frame) > max_rows:
        text += f"<p class='small'>First {max_rows} of {len(frame)} rows; see the TSV.</p>"
    return text


def write_group_report(path, *, group_cmb, data, prevalence, tests, models, terms,
                       univariate, kinds, provenance, significance, agreement=None,
                       longitudinal=None):
    """Render ``group_cmb.html`` (atomically) and return its path.

    Parameters
    ----------
    path : path-like
        Output HTML (at the output root, beside the ``sub-<label>.html`` reports it
        links to).
    group_cmb, data, prevalence, tests, models, terms : pandas.DataFrame
        The group tables (``data``: one row per participant with covariates).
    univariate : dict of str to CountModelFit
        Univariate Poisson fits; covariates with P < ``significance`` get a figure.
    kinds : dict
        ``{covariate: "numeric" | "categorical"}``.
    provenance : dict
        Settings, notes and skipped participants, shown in the report.
    significance : float
        P value below which a covariate counts as significant (0.05 for cmbprep).
    agreement : pandas.DataFrame, optional
        ``group_rater_agreement.tsv`` (when two raters reviewed a unit).
    longitudinal : (pandas.DataFrame, pandas.DataFrame), optional
        ``group_longitudinal_models.tsv`` and ``group_longitudinal.tsv`` (when a
        participant has two or more sessions).
    """
    import jinja2

    path = Path(path)
    groupings = [g for g in dict.fromkeys(prevalence["grouping"]) if g != "all"]
    figures = {
        "regions": figure_region_distribution(group_cmb),
        "prevalence": [figure_prevalence(prevalence, g) for g in ["all", *groupings]],
        "covariates": [figure_count_vs_covariate(data, c, kinds.get(c, "numeric"),
                                                 univariate[c])
                       for c in stats.select_multivariate_covariates(
                           univariate, alpha=significance, forced=())],
    }
    tables = {
        "group_cmb": _html_table(group_cmb, max_rows=500),
        "prevalence": _html_table(prevalence),
        "prevalence_tests": _html_table(tests),
        "models": _html_table(models),
        "terms": _html_table(terms),
        "agreement": _html_table(agreement) if agreement is not None else None,
        "longitudinal": ([_html_table(frame) for frame in longitudinal]
                         if longitudinal is not None else None),
    }
    participants = []
    for pid in dict.fromkeys(group_cmb["participant_id"]):
        href = f"{pid}.html"
        participants.append({"label": pid, "href": href,
                             "exists": (path.parent / href).exists()})
    n_total = int(group_cmb["n_cmb"].sum())
    counts_summary = (
        f"{n_total} microbleed(s) in {len(group_cmb)} row(s); "
        f"{int((group_cmb['n_cmb'] > 0).sum())} with at least one; "
        f"{int((group_cmb['count_source'] == 'rater').sum())} counted from a rater's "
        "review, the others from the automatic detection.")
    if provenance.get("rater"):
        counts_summary += f" Reviews counted: those of {provenance['rater']} (--rater)."
    template_text = resources.files("cmbprep.reports").joinpath(
        "templates/group.html").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.from_string(template_text).render(
        provenance=provenance, figures=figures, tables=tables, participants=participants,
        counts_summary=counts_summary, significance=significance,
        overdispersion_ratio=stats.OVERDISPERSION_RATIO,
        overdispersion_alpha=stats.OVERDISPERSION_ALPHA)
    return write_text_atomic(path, page)
