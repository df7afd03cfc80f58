"""Tab-separated tables as BIDS wants them: ``n/a`` for missing values, ``true``/``false``
for booleans, a JSON sidecar describing every column, each file written atomically."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd

from .io import write_text_atomic

__all__ = ["NA", "read_rows", "read_tsv", "tsv_text", "write_tsv"]

NA = "n/a"


def tsv_text(frame: pd.DataFrame, *, float_format: str = "%.10g") -> str:
    """The TSV text of ``frame``: ``n/a`` for missing, ``true``/``false`` for booleans.

    Parameters
    ----------
    frame : pandas.DataFrame
    float_format : str, optional
        ``printf`` format of floating-point values (default ``"%.10g"``).
    """
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if values.dtype == bool:
            out[column] = values.map({True: "true", False: "false"})
        elif values.dtype == object:
            out[column] = values.map(
                lambda v: NA if v is None or (isinstance(v, float) and math.isnan(v))
                else ("true" if v is True else "false" if v is False else v))
    return out.to_csv(sep="\t", index=False, na_rep=NA, float_format=float_format,
                      lineterminator="\n")


def write_tsv(frame: pd.DataFrame, path, sidecar: dict | None = None, *,
              float_format: str = "%.10g"):
    """Write ``frame`` as TSV and, with ``sidecar``, its JSON column descriptions.

    Parameters
    ----------
    frame : pandas.DataFrame
    path : str or Path
        The ``.tsv`` file; the sidecar goes beside it with the suffix ``.json``.
    sidecar : dict, optional
        Column name -> description (a dict); every column of ``frame`` must have one,
        and only the columns of ``frame`` are written.
    float_format : str, optional

    Returns
    -------
    (Path, Path or None)
        The table and the sidecar written.
    """
    path = Path(path)
    json_path = None
    if sidecar is not None:
        missing = [c for c in frame.columns if c not in sidecar]
        if missing:  # every column must be described
            raise RuntimeError(f"sidecar of {path.name} lacks {missing}")
    write_text_atomic(path, tsv_text(frame, float_format=float_format))
    if sidecar is not None:
        json_path = path.with_suffix(".json")
        described = {c: sidecar[c] for c in frame.columns}
        write_text_atomic(json_path, json.dumps(described, indent=2) + "\n")
    return path, json_path


def read_tsv(path, **kwargs) -> pd.DataFrame:
    """Read a BIDS TSV (``n/a`` and empty cells are missing)."""
    return pd.read_csv(path, sep="\t", na_values=[NA, ""], keep_default_na=False, **kwargs)


class Rows(list):
    """Rows of a table as dicts; ``columns`` is the header, ``lines`` the line number of
    each row in the file."""

    columns: list
    lines: list


def read_rows(path, *, delimiter: str = "\t") -> Rows:
    """Read a small table (BIDS TSV, or ``delimiter=","``) row by row, strictly.

    Cells are stripped; ``n/a`` and empty cells become ``None``; blank lines are
    skipped; a UTF-8 byte-order mark is ignored.

    Raises
    ------
    cmbprep.errors.DataError
        The file cannot be read, or a row has more or fewer cells than the header (the
        one-line message names the file and the line number).
    """
    from ..errors import DataError

    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = [h.strip() for h in next(reader, [])]
            rows = Rows()
            rows.lines = []
            for cells in reader:
                if not cells or all(not c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise DataError(f"{path}: line {reader.line_num} has {len(cells)} "
                                    f"cells, the header has {len(header)}")
                rows.append({h: (None if c.strip() in ("", NA) else c.strip())
                             for h, c in zip(header, cells)})
                rows.lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the table ({exc})") from exc
    rows.columns = header
    return rows
