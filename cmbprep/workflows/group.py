"""Group level: tables, prevalence, count models and a report from participant outputs.

``cmbprep bids_dir output_dir group`` calls :func:`run_group`. It reads only the
participant outputs (``docs/architecture.rst``, "Participant outputs") and a covariates
table (``participants.tsv`` of the input dataset or ``--covariates FILE``) and never
reruns anything. Statistics are the pure functions of :mod:`cmbprep.algorithms.stats`;
the HTML report is built by :mod:`cmbprep.reports.group`.

Rater review
------------
A rater records a review by copying a unit's ``<prefix>_desc-candidates_cmb.tsv`` to
``<prefix>_desc-reviewed_cmb.tsv`` (same folder) and setting the ``status`` of every row
to ``cmb`` (accept) or ``rejected``. When that file exists its ``cmb`` rows are counted
(``count_source = rater``); rows still marked ``review`` are not counted and are
reported in ``n_review_pending``. The rater's name may be given as ``"Rater"`` in the
file's JSON sidecar. Otherwise the accepted table ``_desc-cmb_cmb.tsv`` is counted
(``count_source = automatic``). Pipeline outputs are never edited, so rerunning the
participant level does not overwrite a review.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..algorithms import stats
from ..errors import DataError, InputMissingError
from ..utils.io import write_text_atomic

LOGGER = logging.getLogger("cmbprep.group")

MARS_CATEGORIES = ("lobar", "deep", "infratentorial")
LOBES = ("frontal", "parietal", "temporal", "occipital", "insula", "cingulate")
#: Prevalence outcomes: name -> count column (a participant "has" it when count > 0).
PREVALENCE_OUTCOMES = {"any_cmb": "n_cmb", "lobar_cmb": "n_lobar", "deep_cmb": "n_deep",
                       "infratentorial_cmb": "n_infratentorial"}
MODEL_OUTCOME = "n_cmb"
SIGNIFICANCE = 0.05
MAX_CATEGORICAL_LEVELS = 12
ENTITY_RE = re.compile(r"(sub|ses|acq|run)-([a-zA-Z0-9]+)")
NA = "n/a"


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def _tsv_text(frame):
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if values.dtype == bool:
            out[column] = values.map({True: "true", False: "false"})
        elif values.dtype == object:
            out[column] = values.map(
                lambda v: NA if v is None or (isinstance(v, float) and math.isnan(v))
                else ("true" if v is True else "false" if v is False else v))
    return out.to_csv(sep="\t", index=False, na_rep=NA, float_format="%.10g",
                      lineterminator="\n")


def write_table(frame, path, sidecar):
    """Write a TSV (``n/a`` for missing) and its JSON sidecar, both atomically."""
    missing = [c for c in frame.columns if c not in sidecar]
    if missing:  # every column must be described
        raise RuntimeError(f"sidecar of {Path(path).name} lacks {missing}")
    write_text_atomic(path, _tsv_text(frame))
    json_path = Path(path).with_suffix(".json")
    described = {c: sidecar[c] for c in frame.columns}
    write_text_atomic(json_path, json.dumps(described, indent=2) + "\n")
    return Path(path), json_path


def _read_tsv(path):
    return pd.read_csv(path, sep="\t", na_values=[NA, ""], keep_default_na=False,
                       dtype=str)


# --------------------------------------------------------------------------------------
# Participant outputs
# --------------------------------------------------------------------------------------
def _normalise_label(label):
    label = str(label).strip()
    return label[4:] if label.startswith("sub-") else label


def find_participant_units(output_dir, participant_labels=None):
    """Find participant output units (one per ``sub/ses/acq/run`` prefix).

    Returns
    -------
    (dict, list of str)
        ``{prefix: {"entities": {...}, "cmb": path, "candidates": path, "reviewed":
        path, "summary": path}}`` and the labels of participant folders without any
        CMB output.
    """
    output_dir = Path(output_dir)
    wanted = ({_normalise_label(x) for x in participant_labels}
              if participant_labels else None)
    suffixes = {"_desc-cmb_cmb.tsv": "cmb", "_desc-candidates_cmb.tsv": "candidates",
                "_desc-reviewed_cmb.tsv": "reviewed", "_desc-summary_cmb.json": "summary"}
    units = {}
    empty = []
    for sub_dir in sorted(output_dir.glob("sub-*")):
        if not sub_dir.is_dir():
            continue
        label = sub_dir.name[4:]
        if wanted is not None and label not in wanted:
            continue
        found = False
        for anat in sorted([sub_dir / "anat", *sub_dir.glob("ses-*/anat")]):
            if not anat.is_dir():
                continue
            for path in sorted(anat.iterdir()):
                for suffix, kind in suffixes.items():
                    if path.name.endswith(suffix) and path.name.startswith(f"sub-{label}"):
                        prefix = path.name[: -len(suffix)]
                        unit = units.setdefault(prefix, {"entities": dict(
                            ENTITY_RE.findall(prefix)), "folder": anat})
                        unit[kind] = path
                        found = True
        if not found:
            empty.append(label)
    return units, empty


def _lobe_column(value):
    value = re.sub(r"[^a-z0-9]+", "_", str(value).strip().lower()).strip("_")
    for lobe in LOBES:
        if lobe in value:
            return f"n_lobe_{lobe}"
    return f"n_lobe_{value}" if value else None


class _Rows(list):
    """Rows of a small TSV as dicts (missing cells as ``None``); ``columns`` the header."""

    columns: list


def _read_rows(path):
    """Read a small BIDS TSV quickly (``n/a`` and empty cells become ``None``)."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = [h.strip() for h in next(reader, [])]
            rows = _Rows()
            for number, cells in enumerate(reader, start=2):
                if not cells or all(not c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise DataError(f"{path}: line {number} has {len(cells)} cells, the "
                                    f"header has {len(header)}")
                rows.append({h: (None if c.strip() in ("", NA) else c.strip())
                             for h, c in zip(header, cells)})
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the table ({exc})") from exc
    rows.columns = header
    return rows


def summarise_unit(unit, output_dir):
    """One ``group_cmb.tsv`` row for a participant unit, or ``None`` without a table."""
    entities = unit["entities"]
    row = {"participant_id": f"sub-{entities['sub']}",
           "session_id": f"ses-{entities['ses']}" if "ses" in entities else None,
           "acquisition": entities.get("acq"),
           "run": entities.get("run")}
    rater = None
    if "reviewed" in unit:
        table = _read_rows(unit["reviewed"])
        if "status" not in table.columns:
            raise DataError(f"{unit['reviewed']}: no 'status' column (the rater must set "
                            "status to 'cmb' or 'rejected' for every candidate)")
        status = [(r["status"] or "review").lower() for r in table]
        unknown = sorted(set(status) - {"cmb", "rejected", "review"})
        if unknown:
            raise DataError(f"{unit['reviewed']}: status must be cmb, rejected or review, "
                            f"found {unknown}")
        cmbs = [r for r, s in zip(table, status) if s == "cmb"]
        columns = table.columns
        pending = status.count("review")
        source, counted = "rater", unit["reviewed"]
        sidecar = Path(unit["reviewed"]).with_suffix(".json")
        if sidecar.exists():
            try:
                rater = json.loads(sidecar.read_text()).get("Rater")
            except (ValueError, AttributeError):
                rater = None
    elif "cmb" in unit:
        cmbs = _read_rows(unit["cmb"])
        columns = cmbs.columns
        source, counted = "automatic", unit["cmb"]
        pending = None
        if "candidates" in unit:
            candidates = _read_rows(unit["candidates"])
            if "status" in candidates.columns:
                pending = sum((r["status"] or "").lower() == "review" for r in candidates)
    else:
        return None
    row.update({"count_source": source, "rater": rater, "n_cmb": len(cmbs)})
    mars = [(r.get("mars_category") or "").lower() for r in cmbs]
    for category in MARS_CATEGORIES:
        row[f"n_{category}"] = mars.count(category)
    row["n_not_assigned"] = sum(m not in MARS_CATEGORIES for m in mars)
    for lobe in LOBES:
        row[f"n_lobe_{lobe}"] = 0
    for r in cmbs:
        column = _lobe_column(r["lobe"]) if r.get("lobe") else None
        if column:
            row[column] = row.get(column, 0) + 1
    if "volume_mm3" in columns:
        try:
            row["total_volume_mm3"] = float(sum(float(r["volume_mm3"]) for r in cmbs))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{counted}: column 'volume_mm3' has a missing or non-numeric "
                            "value") from exc
    else:
        row["total_volume_mm3"] = 0.0 if len(cmbs) == 0 else math.nan
    row["n_review_pending"] = pending
    summary = {}
    if "summary" in unit:
        try:
            summary = json.loads(Path(unit["summary"]).read_text())
        except ValueError as exc:
            raise DataError(f"{unit['summary']}: not valid JSON ({exc})") from exc
    reg_warnings = list(summary.get("registration_warnings") or [])
    not_covered = list(summary.get("regions_not_covered") or [])
    reg_ok = summary.get("registration_ok")
    row.update({
        "detector": summary.get("detector"),
        "registration_ok": None if reg_ok is None else bool(reg_ok),
        "n_registration_warnings": len(reg_warnings) if summary else None,
        "registration_warnings": "; ".join(map(str, reg_warnings)) or None,
        "regions_not_covered": "; ".join(map(str, not_covered)) or None,
        "fov_complete": (not not_covered) if summary else None,
    })
    row["qc_pass"] = (None if not summary else
                      bool(row["registration_ok"] is not False and not reg_warnings
                           and not not_covered))
    row["cmb_table"] = Path(counted).relative_to(output_dir).as_posix()
    return row


# --------------------------------------------------------------------------------------
# Covariates
# --------------------------------------------------------------------------------------
def _is_number(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def read_covariates(path, numeric_columns=()):
    """Read a covariates table and type its columns.

    Parameters
    ----------
    path : path-like
        TSV (or ``.csv``) with a ``participant_id`` column; ``n/a`` or empty cells are
        missing. A JSON sidecar next to it (``participants.json``) may give ``Levels``
        (makes a column categorical, in that level order; the first level is the
        reference) or ``Units`` (makes it numeric).
    numeric_columns : sequence of str
        Columns that must be numeric (e.g. those binned for prevalence).

    Returns
    -------
    (pandas.DataFrame, dict)
        The table indexed by ``participant_id`` (numeric columns as float, the others as
        :class:`pandas.Categorical`), and ``{column: "numeric" | "categorical"}``.

    Raises
    ------
    DataError
        Unreadable file, no ``participant_id`` column, duplicated participants, or a
        non-numeric value in a numeric column (the message names file and column).
    """
    path = Path(path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, na_values=[NA, ""],
                            keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the covariates table "
                        f"({str(exc).splitlines()[0]})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    if "participant_id" not in table:
        raise DataError(f"{path}: no 'participant_id' column")
    ids = table["participant_id"].str.strip()
    if ids.isna().any():
        raise DataError(f"{path}: empty participant_id in row(s) "
                        f"{[int(i) + 2 for i in np.flatnonzero(ids.isna())]}")
    table["participant_id"] = ["sub-" + _normalise_label(x) for x in ids]
    dup = table["participant_id"][table["participant_id"].duplicated()].unique()
    if len(dup):
        raise DataError(f"{path}: participant_id repeated: {', '.join(dup)}")
    sidecar = {}
    json_path = path.with_suffix(".json")
    if json_path.exists():
        try:
            sidecar = json.loads(json_path.read_text())
        except ValueError as exc:
            raise DataError(f"{json_path}: not valid JSON ({exc})") from exc
    table = table.set_index("participant_id")
    kinds = {}
    for column in table.columns:
        values = table[column].str.strip()
        present = values.dropna()
        meta = sidecar.get(column, {}) if isinstance(sidecar.get(column), dict) else {}
        numeric_ok = present.map(_is_number)
        must_be_numeric = (column in numeric_columns
                           or ("Units" in meta and "Levels" not in meta))
        looks_numeric = len(present) > 0 and numeric_ok.mean() >= 0.5
        if "Levels" in meta and column not in numeric_columns:
            kind = "categorical"
        elif must_be_numeric or looks_numeric:
            kind = "numeric"
            if not numeric_ok.all():
                bad = present[~numeric_ok]
                raise DataError(
                    f"{path}: column '{column}' is numeric but has the non-numeric value "
                    f"'{bad.iloc[0]}' (participant {bad.index[0]}); use n/a for missing")
        else:
            kind = "categorical"
        if kind == "numeric":
            table[column] = values.astype(float)
        else:
            levels = [str(x) for x in meta.get("Levels", {})] if "Levels" in meta else []
            seen = sorted(set(present), key=_natural_key)
            extra = [x for x in seen if x not in levels]
            if levels and extra:
                LOGGER.warning("%s: column '%s' has values not in its Levels: %s",
                               path, column, extra)
            categories = [x for x in levels if x in set(present)] + extra
            table[column] = pd.Categorical(values, categories=categories)
        kinds[column] = kind
    return table, kinds


def _natural_key(value):
    return (0, float(value), "") if _is_number(value) else (1, 0.0, str(value))


def _parse_prevalence_by(spec):
    """``"col:0,5,10"`` -> ``("col", [0, 5, 10])``; ``"col"`` -> ``("col", None)``."""
    if isinstance(spec, (tuple, list)):
        column, edges = spec
        return str(column), (None if edges is None else [float(e) for e in edges])
    column, _, edges_text = str(spec).rpartition(":") if ":" in str(spec) else (
        str(spec), "", "")
    if not column:
        column, edges_text = edges_text, ""
    if not edges_text:
        return column.strip(), None
    try:
        edges = [float(x) for x in edges_text.split(",") if x.strip()]
    except ValueError as exc:
        raise DataError(f"--prevalence-by {spec}: bin edges must be numbers "
                        "separated by commas") from exc
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
        raise DataError(f"--prevalence-by {spec}: bin edges must be strictly increasing")
    return column.strip(), edges


# --------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------
def _model_rows(model_id, analysis, covariate, fit):
    summary = {
        "model_id": model_id, "analysis": analysis, "family": fit.family,
        "covariate": covariate, "formula": fit.formula, "fitted": fit.fitted,
        "message": fit.message or None, "n_used": fit.n_used, "n_dropped": fit.n_dropped,
        "n_params": fit.n_params, "df_resid": fit.df_resid, "deviance": fit.deviance,
        "pearson_chi2": fit.pearson_chi2, "dispersion": fit.dispersion,
        "dispersion_test_statistic": fit.dispersion_test_statistic,
        "dispersion_test_p_value": fit.dispersion_test_p_value,
        "overdispersed": fit.overdispersed if fit.family == "poisson" and fit.fitted
        else None,
        "alpha": fit.alpha, "aic": fit.aic, "log_likelihood": fit.log_likelihood,
        "converged": fit.converged if fit.fitted else None,
    }
    terms = fit.terms.copy()
    terms.insert(0, "model_id", model_id)
    terms.insert(1, "analysis", analysis)
    terms.insert(2, "family", fit.family)
    terms.insert(3, "formula", fit.formula)
    return summary, terms


def _skipped_model(model_id, analysis, covariate, formula, message):
    fit = stats.CountModelFit(formula=formula, family="poisson", message=message)
    return _model_rows(model_id, analysis, covariate, fit)


def run_regressions(data, covariates, kinds, model=None, outcome=MODEL_OUTCOME):
    """Univariate Poisson models per covariate, then the multivariate model.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per participant: the outcome count and the covariates.
    covariates : list of str
        Covariate columns to model univariately.
    kinds : dict
        ``{column: "numeric" | "categorical"}``.
    model : str, optional
        Multivariate formula (``"age + sex"`` or ``"n_cmb ~ age + sex"``). Default:
        covariates with P < 0.05 in a univariate Poisson model, plus age and sex.
        A negative-binomial fit is added beside every overdispersed Poisson fit.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame, dict)
        Model table, term table, and the univariate Poisson fits by covariate.
    """
    summaries, term_tables, univariate = [], [], {}
    index = 0

    def add(analysis, covariate, fit):
        nonlocal index
        index += 1
        summary, terms = _model_rows(f"m{index:03d}", analysis, covariate, fit)
        summaries.append(summary)
        term_tables.append(terms)
        if fit.overdispersed:
            index += 1
            nb = stats.fit_count_model(data, fit.formula, family="negative_binomial")
            summary, terms = _model_rows(f"m{index:03d}", analysis, covariate, nb)
            summaries.append(summary)
            term_tables.append(terms)

    for column in covariates:
        formula = f"{outcome} ~ {stats.formula_term(column)}"
        values = data[column].dropna()
        reason = None
        if values.nunique() < 2:
            reason = "skipped: fewer than two distinct values"
        elif kinds.get(column) == "categorical" and (
                values.nunique() > MAX_CATEGORICAL_LEVELS
                or values.nunique() == len(values)):
            reason = (f"skipped: categorical with {values.nunique()} levels "
                      f"(more than {MAX_CATEGORICAL_LEVELS} or one per participant)")
        if reason:
            index += 1
            summary, terms = _skipped_model(f"m{index:03d}", "univariate", column,
                                            formula, reason)
            summaries.append(summary)
            continue
        fit = stats.fit_count_model(data, formula)
        univariate[column] = fit
        add("univariate", column, fit)

    if model:
        formula = model if "~" in model else f"{outcome} ~ {model}"
        try:
            fit = stats.fit_count_model(data, formula)
        except ValueError as exc:
            raise DataError(f"--model {model!r}: {exc}") from exc
        add("multivariate", None, fit)
    else:
        chosen = stats.select_multivariate_covariates(univariate, alpha=SIGNIFICANCE)
        forced = [c for c in chosen if c.lower() in ("age", "sex")]
        significant = [c for c in chosen if c not in forced]
        if not significant:
            index += 1
            summary, _ = _skipped_model(
                f"m{index:03d}", "multivariate", None, "",
                f"no multivariate model: no covariate had P < {SIGNIFICANCE} in a "
                "univariate Poisson model")
            summaries.append(summary)
        else:
            complete = data.dropna(subset=[outcome, *chosen])
            kept = [c for c in chosen if complete[c].nunique() > 1]
            dropped = [c for c in chosen if c not in kept]
            formula = f"{outcome} ~ " + " + ".join(stats.formula_term(c) for c in kept)
            fit = stats.fit_count_model(data, formula)
            if dropped:
                note = (f"left out (constant in the participants with complete data): "
                        f"{', '.join(dropped)}")
                fit.message = "; ".join(x for x in (fit.message, note) if x)
            add("multivariate", ", ".join(kept), fit)

    model_columns = list(_model_rows("", "", None, stats.CountModelFit("", "poisson"))[0])
    models = pd.DataFrame(summaries, columns=model_columns)
    term_columns = ["model_id", "analysis", "family", "formula", "term", "irr",
                    "irr_ci_lower", "irr_ci_upper", "p_value", "coef", "se", "z",
                    "estimable"]
    non_empty = [t for t in term_tables if len(t)]
    terms = (pd.concat(non_empty, ignore_index=True)[term_columns] if non_empty
             else pd.DataFrame(columns=term_columns))
    return models, terms, univariate


def run_prevalence(data, group_column, bins):
    """Prevalence tables and tests.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per participant with the count columns and covariates.
    group_column : str or None
        Categorical column for per-group prevalence (Fisher/chi2 comparison).
    bins : list of (str, list of float or None)
        Columns to bin by lower edges (Cochran-Armitage trend test), or to split by
        level when the edges are ``None``.
    """
    rows, tests = [], []
    groupings = [("all", None, None)]
    if group_column:
        groupings.append((group_column, data[group_column], "compare"))
    for column, edges in bins:
        if edges is None:
            groupings.append((column, data[column], "compare"))
        else:
            groupings.append((column, stats.bin_by_edges(data[column].astype(float),
                                                         edges), "trend"))
    for outcome, count_column in PREVALENCE_OUTCOMES.items():
        has = data[count_column].to_numpy() > 0
        for name, levels, test in groupings:
            table = stats.prevalence_by_level(has, levels)
            table.insert(0, "outcome", outcome)
            table.insert(1, "grouping", name)
            if test == "trend":
                n_missing = int(pd.isna(np.asarray(levels.astype(object))).sum())
                table["n_not_binned"] = n_missing
            else:
                table["n_not_binned"] = (int(pd.isna(levels).sum())
                                         if levels is not None else 0)
            rows.append(table)
            if test is None:
                continue
            if test == "trend":
                result = stats.cochran_armitage_trend_test(table["n_with"],
                                                           table["n_participants"])
            else:
                result = stats.compare_prevalence(table["n_with"], table["n_participants"])
            tests.append({"outcome": outcome, "grouping": name, "test": result.test,
                          "statistic": result.statistic, "df": result.df,
                          "p_value": result.p_value,
                          "n_participants": int(table["n_participants"].sum()),
                          "message": result.message or None})
    prevalence = pd.concat(rows, ignore_index=True)
    test_columns = ["outcome", "grouping", "test", "statistic", "df", "p_value",
                    "n_participants", "message"]
    return prevalence, pd.DataFrame(tests, columns=test_columns)


# --------------------------------------------------------------------------------------
# Sidecars
# --------------------------------------------------------------------------------------
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
            levels={"rater": "a rater's review (_desc-reviewed_cmb.tsv, rows with "
                             "status cmb)",
                    "automatic": "the automatic detection (_desc-cmb_cmb.tsv)"}),
        "rater": _describe("Rater named in the review's JSON sidecar ('Rater'); n/a "
                           "when not given or not reviewed."),
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
        "n_review_pending": _describe("Candidates still marked 'review' (not counted); "
                                      "n/a without a candidates table.", "count"),
        "detector": _describe("Detector named in _desc-summary_cmb.json."),
        "registration_ok": _describe("registration_ok of _desc-summary_cmb.json; n/a "
                                     "without a summary."),
        "n_registration_warnings": _describe("Number of registration warnings.", "count"),
        "registration_warnings": _describe("Registration warnings, separated by '; '."),
        "regions_not_covered": _describe("Atlas regions outside the field of view, "
                                         "separated by '; '."),
        "fov_complete": _describe("true when every region is inside the field of view."),
        "qc_pass": _describe("true when registration is ok without warnings and the "
                             "field of view is complete; n/a without a summary."),
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
        "univariate": "one covariate", "multivariate": "several covariates (--model, or "
                                                       "significant univariate covariates "
                                                       "plus age and sex)"}),
    "family": _describe("Count distribution (log link).", levels={
        "poisson": "Poisson GLM (IRLS), as R's glm(family = poisson)",
        "negative_binomial": "NB2, alpha by maximum likelihood, coefficients as R's "
                             "MASS::glm.nb; fitted when the Poisson model is overdispersed"}),
    "covariate": _describe("Covariate(s) of the model."),
    "formula": _describe("patsy formula of the model."),
    "fitted": _describe("false when no model could be fitted (see message)."),
    "message": _describe("Why the model was not fitted, or warnings (separation, "
                         "non-convergence, covariates left out)."),
    "n_used": _describe("Participants used (complete data).", "count"),
    "n_dropped": _describe("Participants dropped for missing values.", "count"),
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
    "irr": _describe("Incidence-rate ratio exp(coef): multiplicative change of the "
                     "expected count per unit of the covariate (or vs the reference "
                     "level).", "ratio"),
    "irr_ci_lower": _describe("Lower bound of the Wald 95% confidence interval of irr.",
                              "ratio"),
    "irr_ci_upper": _describe("Upper bound of the Wald 95% confidence interval of irr.",
                              "ratio"),
    "p_value": _describe("Wald P value (two-sided)."),
    "coef": _describe("Coefficient (log incidence-rate ratio)."),
    "se": _describe("Standard error of coef."),
    "z": _describe("coef / se."),
    "estimable": _describe("false under quasi-complete separation (a level without any "
                           "microbleed): the estimate is unbounded and meaningless."),
}


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------
def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_group(output_dir, bids_dir, *, covariates_file=None, group_column="group",
              prevalence_by=(), model=None, participant_labels=None):
    """Run the group level from the participant outputs.

    Parameters
    ----------
    output_dir : path-like
        The cmbprep output folder holding the participant outputs; tables and the report
        are written there.
    bids_dir : path-like
        The input BIDS dataset (only its ``participants.tsv``/``.json`` is read).
    covariates_file : path-like, optional
        Covariates table instead of ``participants.tsv`` (TSV, or CSV by extension).
    group_column : str
        Categorical covariate telling groups apart (e.g. patients vs controls).
    prevalence_by : sequence of str
        ``"column:edges"`` (e.g. ``"platelet_nadir:0,5,10,15"``: bins [0, 5), [5, 10),
        [10, 15), [15, inf) with a trend test) or ``"column"`` (by level).
    model : str, optional
        Multivariate Poisson model formula (patsy), right-hand side or full.
    participant_labels : sequence of str, optional
        Restrict to these participants (with or without ``sub-``).

    Returns
    -------
    dict
        Paths written: ``group_cmb``, ``prevalence``, ``prevalence_tests``,
        ``regression``, ``regression_models`` (TSVs; sidecars beside them),
        ``provenance`` (JSON) and ``report`` (HTML), plus ``skipped`` (list of messages).

    Raises
    ------
    DataError
        Bad covariates (unreadable, non-numeric value in a numeric column, unknown
        column in ``--prevalence-by``/``--group-column``/``--model``) or an unreadable
        participant table (exit 65).
    InputMissingError
        No participant CMB table at all under ``output_dir`` (exit 66).
    """
    from ..reports.group import write_group_report

    output_dir, bids_dir = Path(output_dir), Path(bids_dir)
    notes = []

    def note(message):
        LOGGER.warning(message)
        notes.append(message)

    units, empty = find_participant_units(output_dir, participant_labels)
    rows, skipped = [], []
    for label in empty:
        skipped.append(f"sub-{label}: no CMB table in {output_dir / f'sub-{label}'}")
    for prefix, unit in sorted(units.items()):
        row = summarise_unit(unit, output_dir)
        if row is None:
            skipped.append(f"{prefix}: no CMB table (_desc-cmb_cmb.tsv) in {unit['folder']}")
            continue
        rows.append(row)
    group_cmb = pd.DataFrame(rows)

    # Covariates
    bins = [_parse_prevalence_by(spec) for spec in prevalence_by]
    cov_path = Path(covariates_file) if covariates_file else bids_dir / "participants.tsv"
    covariates, kinds = None, {}
    if covariates_file and not cov_path.exists():
        raise DataError(f"{cov_path}: covariates file not found")
    if cov_path.exists():
        covariates, kinds = read_covariates(
            cov_path, numeric_columns=[c for c, e in bins if e is not None])
        if participant_labels:
            wanted = {"sub-" + _normalise_label(x) for x in participant_labels}
            covariates = covariates[covariates.index.isin(wanted)]
    else:
        note(f"{cov_path}: no covariates table; only counts and overall prevalence")

    have = set(group_cmb["participant_id"]) if len(group_cmb) else set()
    if covariates is not None:
        for pid in covariates.index:
            if pid not in have and not any(s.startswith(f"{pid}:") or
                                           s.startswith(f"{pid}_") for s in skipped):
                skipped.append(f"{pid}: listed in {cov_path.name} but has no participant "
                               "outputs")
    for message in skipped:
        note(f"skipped {message}")
    if not rows:
        raise InputMissingError(f"{output_dir}: no participant CMB tables found "
                                "(run the participant level first)")

    # Column order of group_cmb.tsv
    entity_cols = [c for c in ("session_id", "acquisition", "run")
                   if group_cmb[c].notna().any()]
    lobe_cols = [f"n_lobe_{x}" for x in LOBES] + sorted(
        c for c in group_cmb.columns if c.startswith("n_lobe_")
        and c[7:] not in LOBES)
    for column in lobe_cols:
        group_cmb[column] = group_cmb[column].fillna(0).astype(int)
    order = (["participant_id", *entity_cols, "count_source", "rater", "n_cmb",
              *[f"n_{c}" for c in MARS_CATEGORIES], "n_not_assigned", *lobe_cols,
              "total_volume_mm3", "n_review_pending", "detector", "registration_ok",
              "n_registration_warnings", "registration_warnings", "regions_not_covered",
              "fov_complete", "qc_pass", "cmb_table"])
    group_cmb = group_cmb[order].sort_values(
        ["participant_id", *entity_cols], kind="stable").reset_index(drop=True)
    written = {}
    written["group_cmb"], _ = write_table(group_cmb, output_dir / "group_cmb.tsv",
                                          group_cmb_sidecar(group_cmb.columns))

    # One row per participant for prevalence and models
    analysis = group_cmb.drop_duplicates("participant_id", keep="first")
    if len(analysis) < len(group_cmb):
        note(f"{len(group_cmb) - len(analysis)} extra session/run row(s): prevalence and "
             "models use each participant's first session/run (sorted labels)")
    count_cols = ["n_cmb", *[f"n_{c}" for c in MARS_CATEGORIES]]
    data = analysis[["participant_id", *count_cols]].set_index("participant_id")
    model_covariates = []
    if covariates is not None:
        clash = [c for c in covariates.columns if c in data.columns]
        if clash:
            raise DataError(f"{cov_path}: column(s) {clash} clash with group output "
                            "columns; rename them")
        not_listed = sorted(set(data.index) - set(covariates.index))
        if not_listed:
            note(f"{len(not_listed)} participant(s) not in {cov_path.name} (covariates "
                 f"n/a): {', '.join(not_listed[:10])}{' ...' if len(not_listed) > 10 else ''}")
        data = data.join(covariates, how="left")
        model_covariates = list(covariates.columns)
    data = data.reset_index()
    for column in model_covariates:  # joined categoricals keep their level order
        if kinds[column] == "categorical":
            data[column] = pd.Categorical(data[column],
                                          categories=covariates[column].cat.categories)

    group = group_column if group_column in data.columns else None
    if group_column and group is None:
        message = (f"{cov_path}: no column '{group_column}' (--group-column)")
        if group_column != "group":
            raise DataError(message)
        note(message + "; no per-group prevalence")
    for column, _edges in bins:
        if column not in data.columns:
            raise DataError(f"{cov_path}: no column '{column}' (--prevalence-by)")

    prevalence, tests = run_prevalence(data, group, bins)
    written["prevalence"], _ = write_table(prevalence, output_dir / "group_prevalence.tsv",
                                           PREVALENCE_SIDECAR)
    written["prevalence_tests"], _ = write_table(
        tests, output_dir / "group_prevalence_tests.tsv", PREVALENCE_TESTS_SIDECAR)

    models, terms, univariate = run_regressions(data, model_covariates, kinds, model=model)
    written["regression_models"], _ = write_table(
        models, output_dir / "group_regression_models.tsv", MODELS_SIDECAR)
    written["regression"], _ = write_table(terms, output_dir / "group_regression.tsv",
                                           TERMS_SIDECAR)

    provenance = {
        "cmbprep_version": __version__,
        "covariates_file": str(cov_path) if covariates is not None else None,
        "covariates_sha256": _sha256(cov_path) if covariates is not None else None,
        "covariate_types": kinds,
        "group_column": group,
        "prevalence_by": [{"column": c, "lower_edges": e} for c, e in bins],
        "model": model,
        "participant_labels": list(participant_labels) if participant_labels else None,
        "n_rows": int(len(group_cmb)),
        "n_participants_analysed": int(len(data)),
        "skipped": skipped,
        "notes": notes,
        "software": _software_versions(),
    }
    written["provenance"] = write_text_atomic(
        output_dir / "group_cmb_provenance.json",
        json.dumps(provenance, indent=2, default=str) + "\n")
    written["report"] = write_group_report(
        output_dir / "group_cmb.html", group_cmb=group_cmb, data=data,
        prevalence=prevalence, tests=tests, models=models, terms=terms,
        univariate=univariate, kinds=kinds, provenance=provenance)
    written["skipped"] = skipped
    return written


def _software_versions():
    import patsy
    import scipy
    import statsmodels

    return {"numpy": np.__version__, "pandas": pd.__version__, "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__, "patsy": patsy.__version__}
