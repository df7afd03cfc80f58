"""Where candidates lie: atlas region, lobe, hemisphere and MARS category from an atlas
on the SWI grid, and template coordinates through the registration transform."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..arrays import box_around

__all__ = ["assign_regions", "template_coordinates"]

_LOBES = ("frontal", "parietal", "temporal", "occipital", "insula", "cingulate", "limbic")


def _lobe_from_name(name):
    low = str(name).lower()
    for lobe in _LOBES:
        if re.search(lobe, low):
            return "insula" if lobe == "insula" else lobe
    return "n/a"


def assign_regions(table, dseg, dseg_table, voxel_size, *, search_radius_mm=3.0):
    """Add ``region lobe hemisphere mars_category`` from an atlas in SWI space.

    The label at each candidate's voxel is used; when it is 0 (outside the atlas) the
    most frequent non-zero label within ``search_radius_mm`` is used instead.

    Parameters
    ----------
    table : pandas.DataFrame
        With integer ``i j k`` columns.
    dseg : ndarray of int or None
        Atlas labels on the SWI grid.
    dseg_table : pandas.DataFrame or None
        Lookup with columns ``index name`` and optionally ``mars_category hemisphere``
        and ``lobe`` (otherwise the lobe is parsed from ``name``).
    voxel_size : tuple of float
    """
    table = table.copy()
    for col in ("region", "lobe", "hemisphere", "mars_category"):
        table[col] = "n/a"
    if dseg is None or dseg_table is None or len(table) == 0:
        return table
    dseg = np.asarray(dseg)
    lookup = dseg_table.set_index(dseg_table["index"].astype(int))
    half = [int(np.ceil(search_radius_mm / v)) for v in voxel_size]
    for row in table.index:
        ijk = [int(table.at[row, c]) for c in ("i", "j", "k")]
        if any(v < 0 or v >= n for v, n in zip(ijk, dseg.shape)):
            continue
        label = int(dseg[tuple(ijk)])
        if label == 0:
            box = box_around(ijk, half, dseg.shape)
            values = dseg[box][dseg[box] > 0]
            if values.size:
                label = int(np.bincount(values.astype(int)).argmax())
        if label == 0 or label not in lookup.index:
            continue
        entry = lookup.loc[label]
        table.at[row, "region"] = str(entry["name"])
        if "lobe" in lookup.columns:
            # a lookup read from its TSV has NaN where the file says n/a (non-lobar)
            table.at[row, "lobe"] = str(entry["lobe"]) if pd.notna(entry["lobe"]) else "n/a"
        else:
            table.at[row, "lobe"] = _lobe_from_name(entry["name"])
        for col in ("hemisphere", "mars_category"):
            if col in lookup.columns and pd.notna(entry[col]):
                table.at[row, col] = str(entry[col])
    return table


def template_coordinates(points_mm, template_to_swi_xfm, *, n_threads=1):
    """Template (MNI) mm coordinates of scanner points.

    Parameters
    ----------
    points_mm : (N, 3) array_like
        Scanner RAS+ coordinates (e.g. candidate centroids ``x y z``).
    template_to_swi_xfm : str
        ANTs transform resampling template images to SWI space (so it maps SWI points
        to the template).
    n_threads : int, optional
        ITK threads for the mapping.

    Returns
    -------
    (N, 3) ndarray
    """
    from ..registration import points_to_template, set_ants_threads

    set_ants_threads(n_threads)
    return points_to_template(np.asarray(points_mm, dtype=float), template_to_swi_xfm)
