"""The covariates table (``participants.tsv`` or ``--covariates``) and ``--prevalence-by``.

:func:`read_covariates` reads the table and types each column numeric or categorical
(from its JSON sidecar, else from its values); :func:`parse_prevalence_by` reads the
``column[:edges]`` option.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from ..algorithms.stats import is_finite_number, natural_sort_key
from ..errors import DataError
from ..utils.tables import read_rows
from .selection import list_some
from .units import normalise_label

LOGGER = logging.getLogger("cmbprep.group")


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
    table = _read_participants(path)
    sidecar = _read_sidecar(path.with_suffix(".json"))
    table = table.set_index("participant_id")
    kinds = {}
    for column in table.columns:
        values = table[column].str.strip()
        present = values.dropna()
        meta = sidecar.get(column, {}) if isinstance(sidecar.get(column), dict) else {}
        kind = _column_kind(path, column, present, meta, numeric_columns)
        if kind == "numeric":
            table[column] = values.astype(float)
        else:
            table[column] = _categorical(path, column, values, present, meta)
        kinds[column] = kind
    return table, kinds


def _read_participants(path):
    """The table as text, with checked and normalised ``participant_id`` values.

    Read strictly (:func:`cmbprep.utils.tables.read_rows`, as the participant tables
    are): a row with more or fewer cells than the header is an error naming the line."""
    rows = read_rows(path, delimiter="," if path.suffix.lower() == ".csv" else "\t")
    if len(set(rows.columns)) < len(rows.columns):
        repeated = sorted({c for c in rows.columns if rows.columns.count(c) > 1})
        raise DataError(f"{path}: column(s) {repeated} repeated in the header")
    table = pd.DataFrame(rows, columns=rows.columns, dtype=object)
    table.index = rows.lines
    if "participant_id" not in table:
        raise DataError(f"{path}: no 'participant_id' column")
    ids = table["participant_id"]
    if ids.isna().any():
        raise DataError(f"{path}: empty participant_id on line(s) "
                        f"{[int(i) for i in ids.index[ids.isna()]]}")
    table = table.reset_index(drop=True)
    table["participant_id"] = ["sub-" + normalise_label(x) for x in table["participant_id"]]
    dup = table["participant_id"][table["participant_id"].duplicated()].unique()
    if len(dup):
        raise DataError(f"{path}: participant_id repeated: {', '.join(dup)}")
    return table


def _read_sidecar(json_path):
    if not json_path.exists():
        return {}
    try:
        return json.loads(json_path.read_text())
    except ValueError as exc:
        raise DataError(f"{json_path}: not valid JSON ({exc})") from exc


def _column_kind(path, column, present, meta, numeric_columns):
    """``"numeric"`` or ``"categorical"``; a numeric column must hold only numbers."""
    numeric_ok = present.map(is_finite_number)
    must_be_numeric = (column in numeric_columns
                       or ("Units" in meta and "Levels" not in meta))
    looks_numeric = len(present) > 0 and numeric_ok.mean() >= 0.5
    if "Levels" in meta and column not in numeric_columns:
        return "categorical"
    if must_be_numeric or looks_numeric:
        if not numeric_ok.all():
            bad = present[~numeric_ok]
            raise DataError(
                f"{path}: column '{column}' is numeric but has the non-numeric value "
                f"'{bad.iloc[0]}' (participant {bad.index[0]}); use n/a for missing")
        return "numeric"
    return "categorical"


def _categorical(path, column, values, present, meta):
    """The column as a Categorical: sidecar ``Levels`` first, then other values sorted."""
    levels = [str(x) for x in meta.get("Levels", {})] if "Levels" in meta else []
    seen = sorted(set(present), key=natural_sort_key)
    extra = [x for x in seen if x not in levels]
    if levels and extra:
        LOGGER.warning("%s: column '%s' has values not in its Levels: %s",
                       path, column, extra)
    categories = [x for x in levels if x in set(present)] + extra
    return pd.Categorical(values, categories=categories)


def parse_prevalence_by(spec):
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


def join_covariates(rows, covariates, kinds, cov_path, notes=None):
    """The rows (with a ``participant_id`` column) joined with the covariates.

    Parameters
    ----------
    rows : pandas.DataFrame
        Counts, one row per participant, session or interval.
    covariates : pandas.DataFrame or None
        Indexed by ``participant_id`` (``None``: the rows are returned unchanged).
    kinds : dict
        ``{column: "numeric" | "categorical"}``; categorical columns keep their level
        order (the first level is the reference).
    cov_path : Path
        The covariates file, for messages.
    notes : optional
        When given, ``notes.warn`` says which participants the table does not list.

    Raises
    ------
    DataError
        A covariate column with the name of a column of ``rows``.
    """
    if covariates is None:
        return rows
    clash = [c for c in covariates.columns if c in rows.columns]
    if clash:
        raise DataError(f"{cov_path}: column(s) {clash} clash with group output "
                        "columns; rename them")
    not_listed = sorted(set(rows["participant_id"]) - set(covariates.index))
    if not_listed and notes is not None:
        notes.warn(f"{len(not_listed)} participant(s) not in {cov_path.name} (covariates "
                   f"n/a): {list_some(not_listed)}")
    data = rows.join(covariates, on="participant_id", how="left")
    for column in covariates.columns:  # joined categoricals keep their level order
        if kinds[column] == "categorical":
            data[column] = pd.Categorical(data[column],
                                          categories=covariates[column].cat.categories)
    return data
