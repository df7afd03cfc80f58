"""Quality control of a template-to-subject registration: normalised mutual information,
warped brain inside the head, brain-volume scale, and the pass/fail verdict."""

from __future__ import annotations

import numpy as np

from ..arrays import voxel_sizes

#: Default QC thresholds (see :func:`registration_quality`).
QC_THRESHOLDS = {
    "min_nmi": 1.04,
    "min_mask_in_head": 0.90,
    "min_scale": 0.70,
    "max_scale": 1.40,
}


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return -np.sum(p * np.log(p))


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Studholme's NMI ``(H(a) + H(b)) / H(a, b)`` (1 = independent, 2 = identical)."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.size < 10:
        return float("nan")
    hist, _, _ = np.histogram2d(a, b, bins=bins)
    p = hist / hist.sum()
    pa, pb = p.sum(1), p.sum(0)
    hab = _entropy(p.ravel())
    return float((_entropy(pa) + _entropy(pb)) / hab) if hab > 0 else float("nan")


def volume_scale(warped_mask: np.ndarray, warped_voxel_mm3: float, template_mask) -> float:
    """Linear scale template -> subject from brain volumes: ``(V_warped / V_tpl)^(1/3)``.

    (Reading the composite HDF5 transform back with ANTsPy is avoided: it can hang.)

    Parameters
    ----------
    warped_mask : ndarray of bool
        Template brain mask warped onto the subject grid.
    warped_voxel_mm3 : float
        Voxel volume of that grid (mm^3).
    template_mask : nibabel.Nifti1Image
        The template brain mask.
    """
    tpl = np.asarray(template_mask.dataobj) > 0
    tpl_ml = tpl.sum() * float(np.prod(voxel_sizes(template_mask.affine)))
    sub_ml = np.asarray(warped_mask, bool).sum() * warped_voxel_mm3
    return float((sub_ml / tpl_ml) ** (1.0 / 3.0)) if tpl_ml > 0 else float("nan")


def _warnings(nmi: float, in_head: float, affine_scale: float, th: dict) -> list[str]:
    warnings = []
    if not np.isfinite(nmi) or nmi < th["min_nmi"]:
        warnings.append(
            f"low normalised mutual information between subject and warped template "
            f"({nmi:.3f} < {th['min_nmi']}): registration probably failed"
        )
    if np.isfinite(in_head) and in_head < th["min_mask_in_head"]:
        warnings.append(
            f"only {100 * in_head:.0f}% of the warped template brain lies inside the head "
            f"mask (< {100 * th['min_mask_in_head']:.0f}%)"
        )
    if np.isfinite(affine_scale) and not (th["min_scale"] <= affine_scale <= th["max_scale"]):
        warnings.append(
            f"implausible template scale {affine_scale:.2f} (expected "
            f"{th['min_scale']}-{th['max_scale']})"
        )
    return warnings


def registration_quality(
    subject: np.ndarray,
    warped_template: np.ndarray,
    warped_mask: np.ndarray,
    head_mask: np.ndarray | None,
    *,
    affine_scale: float = float("nan"),
    thresholds: dict | None = None,
) -> dict:
    """QC metrics of a template-to-subject registration and a pass/fail verdict.

    Metrics
    -------
    ``nmi``
        Normalised mutual information (32 bins) between subject and warped template
        inside the warped template brain mask. Identical images give 2, independent
        images 1. A correctly registered brain of any contrast gives clearly > 1;
        garbage or mis-registered images give close to 1.
    ``mask_in_head``
        Fraction of the warped template brain mask that lies inside the subject's head
        mask (should be ~1).
    ``affine_scale``
        Linear scale of the template brain in the subject, from the brain volumes
        ``(V_warped / V_template)^(1/3)`` (plausible adult heads: 0.7-1.4).

    Returns
    -------
    dict
        Metrics, the thresholds used, ``registration_ok`` (bool) and
        ``registration_warnings`` (list of str).
    """
    th = dict(QC_THRESHOLDS)
    th.update(thresholds or {})
    subject = np.asarray(subject, float)
    warped_mask = np.asarray(warped_mask, bool)
    nmi = normalized_mutual_information(
        subject[warped_mask], np.asarray(warped_template)[warped_mask]
    )
    in_head = (
        float((warped_mask & head_mask).sum() / max(warped_mask.sum(), 1))
        if head_mask is not None
        else float("nan")
    )
    warnings = _warnings(nmi, in_head, affine_scale, th)
    return {
        "nmi": round(float(nmi), 4),
        "mask_in_head": round(in_head, 4),
        "affine_scale": round(float(affine_scale), 4),
        "thresholds": th,
        "registration_ok": not warnings,
        "registration_warnings": warnings,
    }
