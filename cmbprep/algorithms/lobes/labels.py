"""Run-time use of the region atlas: loading it, region look-ups at voxels and points,
labels in subject space and the share of each region inside the field of view."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ..arrays import block_factors, block_reduce, upsample_nearest, voxel_sizes
from ..registration import (
    TEMPLATE_CITATION,
    TEMPLATE_DESCRIPTION,
    TEMPLATE_NAME,
    apply_transform,
    coarse_affine,
    resample_labels_to_subject,
)
from .regions import ATLAS_DIR, ATLAS_FILE, LUT_FILE, atlas_provenance


def atlas_available(atlas_dir: str | Path = ATLAS_DIR) -> bool:
    """True when the built atlas files exist."""
    atlas_dir = Path(atlas_dir)
    return (atlas_dir / ATLAS_FILE).exists() and (atlas_dir / LUT_FILE).exists()


def load_atlas(atlas_dir: str | Path = ATLAS_DIR, *, build_if_missing: bool = True):
    """Load the template-space atlas image and its lookup table.

    If the files are missing and ``build_if_missing``, they are built (offline, from
    the installed ``deepmriprep`` package and the shipped template transform; about
    20 s).

    Returns
    -------
    labels : nibabel.Nifti1Image
    lut : pandas.DataFrame
    """
    atlas_dir = Path(atlas_dir)
    if not atlas_available(atlas_dir):
        if not build_if_missing:
            raise FileNotFoundError(
                f"{atlas_dir / ATLAS_FILE} not found: run `python -m cmbprep.algorithms.lobes`"
            )
        import sys

        from .build import build_atlas

        build_atlas(atlas_dir, progress=lambda line: print(f"cmbprep atlas: {line}",
                                                           file=sys.stderr, flush=True))
    labels = nib.load(atlas_dir / ATLAS_FILE)
    lut = pd.read_csv(atlas_dir / LUT_FILE, sep="\t", keep_default_na=False)
    return labels, lut


def regions_at_voxels(labels: np.ndarray, ijk: np.ndarray, lut: pd.DataFrame) -> pd.DataFrame:
    """Region name, lobe, hemisphere and MARS category at voxel indices.

    Parameters
    ----------
    labels : ndarray (X, Y, Z) of int
    ijk : ndarray (N, 3) of int
        Voxel indices (rounded); out-of-grid indices give ``n/a``.
    lut : pandas.DataFrame
        The atlas lookup table (:func:`~cmbprep.algorithms.lobes.lookup_table`).

    Returns
    -------
    pandas.DataFrame
        Columns ``label region lobe hemisphere mars_category`` (``n/a`` for label 0).
    """
    ijk = np.atleast_2d(np.rint(np.asarray(ijk, float))).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.asarray(labels.shape)[:3]), axis=1)
    values = np.zeros(len(ijk), dtype=int)
    if inside.any():
        values[inside] = np.asarray(labels)[tuple(ijk[inside].T)]
    table = lut.set_index("index")
    rows = []
    for v in values:
        if v in table.index:
            r = table.loc[v]
            rows.append((v, r["name"], r["lobe"], r["hemisphere"], r["mars_category"]))
        else:
            rows.append((v, "n/a", "n/a", "n/a", "n/a"))
    return pd.DataFrame(rows, columns=["label", "region", "lobe", "hemisphere", "mars_category"])


def regions_at_points(points_mm, labels_img: nib.Nifti1Image, lut: pd.DataFrame) -> pd.DataFrame:
    """:func:`regions_at_voxels` for mm points (e.g. template ``mni_x..z``)."""
    pts = np.atleast_2d(np.asarray(points_mm, float))
    ijk = nib.affines.apply_affine(np.linalg.inv(labels_img.affine), pts)
    return regions_at_voxels(np.asarray(labels_img.dataobj), ijk, lut)


def region_coverage(
    labels: np.ndarray, inside_fov: np.ndarray, lut: pd.DataFrame, *, min_fraction: float = 0.5
) -> tuple[dict, list]:
    """Fraction of each region's template volume inside the subject field of view.

    Parameters
    ----------
    labels : ndarray of int
        Atlas labels in template space.
    inside_fov : ndarray of bool
        Template voxels that map inside the subject image grid.
    lut : pandas.DataFrame
    min_fraction : float
        Regions with a smaller covered fraction are reported as not covered.

    Returns
    -------
    coverage : dict
        ``"<name>_<hemisphere>" -> fraction`` (0-1, 3 decimals).
    not_covered : list of str
        ``"<name>_<hemisphere>"`` of regions below ``min_fraction``.
    """
    labels = np.asarray(labels)
    inside_fov = np.asarray(inside_fov, bool)
    total = np.bincount(labels.ravel(), minlength=256)
    covered = np.bincount(labels[inside_fov].ravel(), minlength=256)
    coverage, not_covered = {}, []
    for _, r in lut.iterrows():
        n = total[int(r["index"])]
        frac = float(covered[int(r["index"])] / n) if n else 0.0
        key = f"{r['name']}_{r['hemisphere']}"
        coverage[key] = round(frac, 3)
        if frac < min_fraction:
            not_covered.append(key)
    return coverage, not_covered


@lru_cache(maxsize=2)
def template_region_volumes(atlas_dir: str | Path = ATLAS_DIR) -> dict:
    """Template volume of every atlas region (mm^3), keyed ``"<name>_<hemisphere>"`` as
    :func:`region_coverage` keys its fractions."""
    atlas, lut = load_atlas(atlas_dir, build_if_missing=False)
    counts = np.bincount(np.asarray(atlas.dataobj).astype(int).ravel(), minlength=256)
    voxel_mm3 = float(np.prod(voxel_sizes(atlas.affine)))
    return {f"{r['name']}_{r['hemisphere']}": float(counts[int(r["index"])] * voxel_mm3)
            for _, r in lut.iterrows()}


def brain_coverage_fraction(coverage: dict, region_volumes: dict) -> float | None:
    """Fraction of the template brain volume inside the field of view.

    Parameters
    ----------
    coverage : dict
        ``"<name>_<hemisphere>" -> fraction`` covered (:func:`region_coverage`).
    region_volumes : dict
        Template volume of the same regions (:func:`template_region_volumes`).

    Returns
    -------
    float or None
        The region fractions weighted by region volume (3 decimals); ``None`` without
        any region of known volume.
    """
    pairs = [(coverage[key], volume) for key, volume in region_volumes.items()
             if key in coverage and volume > 0]
    total = sum(volume for _, volume in pairs)
    if not total:
        return None
    return round(sum(f * volume for f, volume in pairs) / total, 3)


def label_subject(
    brain_mask: nib.Nifti1Image,
    atlas: nib.Nifti1Image,
    lut: pd.DataFrame,
    template_to_subject_xfm,
    subject_to_template_xfm,
    *,
    min_coverage: float = 0.5,
    work_mm: float = 1.0,
    coverage_mm: float = 2.0,
) -> tuple[nib.Nifti1Image, dict, list]:
    """Atlas labels in subject space, restricted to (and filling) the brain mask.

    Parameters
    ----------
    brain_mask : nibabel.Nifti1Image
        Subject brain mask; defines the output grid.
    atlas : nibabel.Nifti1Image
        Template-space labels (:func:`load_atlas`).
    lut : pandas.DataFrame
    template_to_subject_xfm, subject_to_template_xfm : path-like
        Composite transforms from the template registration.
    min_coverage : float
        See :func:`region_coverage`.
    work_mm : float
        Labels are warped (nearest neighbour) onto a grid of blocks of subject voxels
        of about this size and copied to every voxel of the block.
    coverage_mm : float
        The field-of-view coverage is computed on the atlas grid decimated to about
        this voxel size.

    Returns
    -------
    dseg : nibabel.Nifti1Image (uint8)
        Every brain-mask voxel carries a region label (voxels where the warped atlas
        has no label take the nearest label); 0 outside the brain mask.
    coverage : dict
        Fraction of each region's template volume inside the subject field of view.
    not_covered : list of str
    """
    mask = np.asarray(brain_mask.dataobj) > 0
    # Labels are warped once onto a ~1 mm grid (the atlas resolution) made of blocks of
    # subject voxels, gaps inside the (block-wise) mask are filled there with the
    # nearest label, and every subject voxel then takes its block's label.
    step = block_factors(voxel_sizes(brain_mask.affine), work_mm, rounding="round")
    affine_c = coarse_affine(brain_mask.affine, step)
    mask_c = block_reduce(mask, step, func="max")
    labels_c = _labels_on_grid(atlas, mask_c, affine_c, template_to_subject_xfm)
    labels = upsample_nearest(labels_c, step, mask.shape[:3])
    labels[~mask] = 0
    dseg = nib.Nifti1Image(labels, brain_mask.affine)
    dseg.set_data_dtype(np.uint8)
    inside_fov, atlas_c = _field_of_view(atlas, mask_c.shape, affine_c, subject_to_template_xfm,
                                         coverage_mm)  # fmt: skip
    coverage, not_covered = region_coverage(atlas_c, inside_fov, lut, min_fraction=min_coverage)
    return dseg, coverage, not_covered


def _labels_on_grid(atlas, mask: np.ndarray, affine, template_to_subject_xfm) -> np.ndarray:
    """Atlas labels warped (nearest neighbour) onto the grid of ``mask``; 0 outside the
    mask, and mask voxels without a label take the nearest label (uint8)."""
    ref = nib.Nifti1Image(np.zeros(mask.shape, np.float32), affine)
    warped = resample_labels_to_subject(atlas, ref, template_to_subject_xfm)
    labels = np.asarray(warped.dataobj).astype(np.uint8)
    labels[~mask] = 0
    missing = mask & (labels == 0)
    if missing.any() and (labels > 0).any():
        # every label lies inside the mask: the bounding box of the mask is enough
        nz = np.argwhere(mask)
        box = tuple(slice(a, b + 1) for a, b in zip(nz.min(0), nz.max(0)))
        sub = labels[box]
        _, idx = ndimage.distance_transform_edt(
            sub == 0, sampling=voxel_sizes(affine), return_indices=True
        )
        miss = missing[box]
        sub[miss] = sub[tuple(idx)][miss]
    return labels


def _field_of_view(atlas, grid_shape, grid_affine, subject_to_template_xfm, coverage_mm):
    """Template voxels inside the subject field of view, on the atlas grid decimated to
    about ``coverage_mm``: a ones image on the (block) subject grid warped back there.

    Returns the boolean field of view and the decimated atlas labels.
    """
    atlas_data = np.asarray(atlas.dataobj)
    a_step = block_factors(voxel_sizes(atlas.affine), coverage_mm, rounding="round")
    atlas_c = atlas_data[:: a_step[0], :: a_step[1], :: a_step[2]]
    a_affine = np.asarray(atlas.affine, float) @ np.diag(list(a_step) + [1]).astype(float)
    ones = nib.Nifti1Image(np.ones(grid_shape, np.float32), grid_affine)
    fov = apply_transform(
        ones,
        nib.Nifti1Image(np.zeros(atlas_c.shape, np.float32), a_affine),
        subject_to_template_xfm,
        interpolation="nearestNeighbor",
    )
    return np.asarray(fov.dataobj) > 0.5, atlas_c


def anatomy_metadata(registration_qc, brain_info, coverage, not_covered, min_coverage,
                     region_volumes=None):
    """The ``anat_meta`` dict of the anatomical stage (summary JSON, sidecars, report).

    Parameters
    ----------
    registration_qc : dict
        QC of the template registration (``registration_ok``, ``registration_warnings``
        and metrics).
    brain_info : dict
        What :func:`cmbprep.algorithms.brain.extract_brain` reports.
    coverage : dict
        Fraction of each region's template volume inside the field of view.
    not_covered : list of str
        Regions with a fraction below ``min_coverage``.
    min_coverage : float
    region_volumes : dict, optional
        Template volume of each region (default :func:`template_region_volumes` of the
        installed atlas), to weight the regions' fractions into
        ``brain_coverage_fraction``.

    Returns
    -------
    dict
        Template and atlas provenance, registration QC, the warnings (registration's and
        one for regions outside the field of view), brain-mask and coverage details
        (``region_coverage``, ``regions_not_covered`` and ``brain_coverage_fraction``).
    """
    if region_volumes is None:
        region_volumes = template_region_volumes()
    qc = dict(registration_qc)
    warnings_list = list(qc.get("registration_warnings", []))
    if not_covered:
        warnings_list.append(
            f"{len(not_covered)} regions are not covered by the field of view "
            f"(< {100 * min_coverage:.0f}% of their template volume)"
        )
    return {
        "template": TEMPLATE_NAME,
        "template_description": TEMPLATE_DESCRIPTION,
        "template_citation": TEMPLATE_CITATION,
        "atlas": atlas_provenance(),
        "registration": {k: v for k, v in qc.items()
                         if k not in ("registration_ok", "registration_warnings")},
        "registration_ok": bool(qc.get("registration_ok", False)),
        "registration_warnings": warnings_list,
        "brain_mask": brain_info,
        "region_coverage": coverage,
        "regions_not_covered": not_covered,
        "brain_coverage_fraction": brain_coverage_fraction(coverage, region_volumes),
        "min_coverage": min_coverage,
        "transform_format": "ITK/ANTs composite transform (HDF5), as written by "
        "antsRegistration --write-composite-transform",
    }
