"""From a detector's result to what the pipeline writes: candidates located in the atlas
and the template, the accepted-microbleed table and label image, the metadata, and the
TSV/JSON files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..arrays import voxel_sizes
from .regions import assign_regions, template_coordinates
from ...utils.tables import write_tsv
from .tables import cmb_label_image, cmb_table, column_descriptions

__all__ = ["DetectionOutputs", "detection_outputs", "write_detection_tables"]


@dataclass
class DetectionOutputs:
    """Tables, label image and metadata of one detection.

    Attributes
    ----------
    candidates : pandas.DataFrame
        Every candidate with its region columns (and ``mni_*`` with a transform).
    cmb : pandas.DataFrame
        Accepted microbleeds (:func:`.tables.cmb_table`, ``candidate_id`` included).
    labels : ndarray of int16 (int32 beyond 32766 microbleeds)
        Microbleed label image (``cmb_id``).
    meta : dict
        Detector parameters, the recorded ``seed`` and ``code_id``, how template
        coordinates were obtained, and the counts ``n_candidates n_cmb n_review``.
    """

    candidates: pd.DataFrame
    cmb: pd.DataFrame
    labels: np.ndarray
    meta: dict


def detection_outputs(result, affine, *, dseg=None, dseg_table=None,
                      template_to_swi_xfm=None, n_threads=1, seed=0, code_id=""):
    """Locate the candidates of a :class:`.result.DetectionResult` and tabulate them.

    Parameters
    ----------
    result : DetectionResult
    affine : (4, 4) array_like
        Affine of the SWI grid.
    dseg : ndarray of int or None, optional
        Atlas labels on the SWI grid (with ``dseg_table``).
    dseg_table : pandas.DataFrame or None, optional
        Atlas lookup (see :func:`.regions.assign_regions`).
    template_to_swi_xfm : str or None, optional
        ANTs transform giving ``mni_x mni_y mni_z`` (``n/a`` without).
    n_threads : int, optional
        ITK threads for the point mapping.
    seed : int, optional
        Random seed, recorded in the metadata.
    code_id : str, optional
        Detector code id (:func:`.parameters.detector_code_id`), recorded.

    Returns
    -------
    DetectionOutputs
    """
    candidates = assign_regions(result.candidates, dseg, dseg_table, voxel_sizes(affine))
    meta = {**result.parameters, "seed": int(seed), "code_id": code_id,
            "template_coordinates": "n/a"}
    template_points = None
    if template_to_swi_xfm is not None and len(candidates):
        template_points = template_coordinates(candidates[["x", "y", "z"]].to_numpy(float),
                                               template_to_swi_xfm, n_threads=n_threads)
        meta["template_coordinates"] = "points_to_template(template_to_swi_xfm)"
        for axis, col in enumerate(("mni_x", "mni_y", "mni_z")):
            candidates[col] = template_points[:, axis]
    cmb = cmb_table(candidates, template_points)
    labels = cmb_label_image(result.labels, cmb)
    meta["n_candidates"] = len(candidates)
    meta["n_cmb"] = len(cmb)
    meta["n_review"] = int((candidates["status"] == "review").sum()) if len(candidates) else 0
    return DetectionOutputs(candidates, cmb, labels, meta)


def write_detection_tables(outputs, out_dir):
    """Write ``candidates.tsv``/``.json`` and ``cmb.tsv``/``.json`` into ``out_dir``.

    Returns
    -------
    dict
        ``candidates_tsv candidates_sidecar cmb_tsv cmb_sidecar`` paths.
    """
    out_dir = Path(out_dir)
    written = {}
    for name, table in (("candidates", outputs.candidates),
                        ("cmb", outputs.cmb.drop(columns="candidate_id"))):
        tsv, sidecar = write_tsv(table, out_dir / f"{name}.tsv",
                                 column_descriptions(list(table.columns)),
                                 float_format="%.6g")
        written[f"{name}_tsv"], written[f"{name}_sidecar"] = tsv, sidecar
    return written
