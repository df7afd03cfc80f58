"""Cerebral microbleed detectors and their output tables.

Two detectors are available by name (:data:`DETECTORS`):

``"bian2013"``
    The semi-automated reference method used by the ITP study (Bian et al. 2013,
    NeuroImage: Clinical 2:282; Morrison et al. 2018, NeuroImage: Clinical 20:498):
    2D fast radial symmetry transform on the minimum-intensity projection, 3D region
    growing, geometric rules. Its candidates are meant for a rater.
``"cmbprep"`` (default)
    3D multi-scale Laplacian-of-Gaussian candidates on the SWI, half-depth segmentation
    of each candidate, shape/contrast/context/phase features and a rule-based score.

Both return a :class:`DetectionResult` holding the candidate table (one row per
candidate, features, ``score`` and ``status`` in ``cmb``/``review``/``rejected``) and a
label image of the candidates. See ``docs/detection.rst``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ..utils.fork import run_in_fork
from .candidates import (
    brain_bounding_box,
    grow_region,
    local_maxima,
    multiscale_dark_blobness,
    relative_intensity,
    segment_dark_lesion,
    slice_axis_from_affine,
    voxel_size_from_affine,
)
from .classifier import DEFAULT_MODEL_PATH, load_model, model_frame, predict_proba
from .features import (
    b0_direction_from_affine,
    dipole_correlation,
    hessian_blob_ratio,
    paramagnetic_phase_sign,
    shape_features,
    slice_features,
    surrounding_dark_fraction,
    vessel_like_mask,
)
from .frst import fast_radial_symmetry_slices

__all__ = [
    "BIAN2013_PARAMETERS",
    "CMBPREP_PARAMETERS",
    "CMB_COLUMNS",
    "DETECTORS",
    "DETECTOR_VERSION",
    "DetectionResult",
    "assign_regions",
    "assign_status",
    "cmb_label_image",
    "cmb_table",
    "column_descriptions",
    "detect_bian2013",
    "detect_cmbprep",
    "detect_microbleeds",
    "detector_code_id",
    "score_candidates",
    "write_sidecar",
    "write_table",
]

DETECTORS = ("cmbprep", "bian2013")
DETECTOR_VERSION = {"cmbprep": "0.2.0", "bian2013": "0.1.0"}

#: Parameters of the reference method. The published values are for images rescaled to
#: 0-255 with about 0.5 mm pixels; lengths are converted to mm with that pixel size.
BIAN2013_PARAMETERS = {
    "reference_pixel_mm": 0.5,
    "intensity_percentile": 99.9,  # 0 -> 0 and this brain percentile -> 255
    "frst_radius_mm": 1.5,  # 3 px
    "frst_alpha": 3.0,
    "frst_percentile": 90.0,  # FRST map kept above its 90th percentile (brain)
    "growing_lower": 10.0,  # lower threshold of the 3D region growing (0-255)
    "growing_lower_alternative": 65.0,  # second published lower threshold, unused
    "growing_upper": 170.0,
    "growing_max_difference": 60.0,
    "growing_max_distance_mm": 2.5,  # 5 px
    "max_slice_area_mm2": 10.0,  # "max area 10", read as mm^2 (40 px at 0.5 mm)
    "min_circularity": 0.73,
    "max_centroid_shift_mm": 0.25,  # 0.5 px
    "max_seed_intensity": 150.0,
}

#: Parameters of the default detector (lengths in mm).
CMBPREP_PARAMETERS = {
    "background_sigma_mm": 10.0,  # local tissue intensity for the relative image
    "sigmas_mm": (0.6, 0.9, 1.35, 2.0, 3.0),  # LoG scales; apparent radius ~ sqrt(3) sigma
    "blobness_threshold": 0.06,  # scale-normalised LoG (relative-intensity units)
    "min_separation_mm": 1.5,
    "max_peak_intensity": 0.85,  # relative intensity at the candidate (15 % darker)
    "max_candidates": 3000,
    "minimum_seed_intensity": 0.5,  # local intensity minima this dark are seeds too
    "minimum_seed_sigma_mm": 0.9,  # largest scale assumed for an intensity-minimum seed
    "depth_fraction": 0.5,  # segmentation at half depth
    "patch_margin_mm": 3.0,
    "min_diameter_mm": 1.5,
    "min_voxels_for_shape": 3,  # smaller regions are not screened on their shape
    "max_diameter_mm": 12.0,
    "min_contrast": 0.55,
    "max_elongation_perp_b0": 2.0,  # across B0 (blooming stretches CMBs along B0)
    "max_b0_aspect": 3.0,
    "deeper_fractions": (0.7, 0.85),  # re-segment deeper if the region leaves the patch
    "shallow_fraction": 0.25,  # depth fraction of the vessel-continuity check
    "max_attached_depth_ratio": 0.85,  # attached structure as dark as the lesion: vessel
    "opening_fraction": 0.5,  # opening radius = fraction x estimated lesion radius
    "opening_radius_mm": (0.6, 2.0),  # clip range of the opening radius
    "min_hessian_ratio": -1.0,  # recorded, not used for the score
    "max_surrounding_dark_fraction": 0.12,
    "min_distance_to_edge_mm": 3.0,
    "dipole_shell_mm": 3.0,
    "min_paramagnetic_evidence": 0.05,  # with phase: required dipole evidence
    "scorer": "classifier",  # "classifier" (learned, packaged model) or "rules"
    "model": None,  # path of a classifier JSON; None: the packaged model
    "accept_score": None,  # None: the model's validated threshold (rules: 0.5)
    "review_score": None,  # None: the model's review threshold (rules: 0.2)
    "phase_sign": "auto",  # +1, -1 or "auto" (calibrated on veins)
    "vessel_intensity": 0.5,  # relative intensity below which voxels may be vessel
    "vessel_min_elongation": 5.0,  # dark components this elongated are vessels
}


@dataclass
class DetectionResult:
    """Output of a detector.

    Attributes
    ----------
    candidates : pandas.DataFrame
        One row per candidate (``candidate_id`` from 1), voxel/scanner coordinates,
        features, ``score`` and ``status``.
    labels : ndarray of int32
        Candidate segmentation labelled with ``candidate_id`` (0 elsewhere).
    parameters : dict
        Detector name, version and every parameter used.
    """

    candidates: pd.DataFrame
    labels: np.ndarray
    parameters: dict = field(default_factory=dict)


def _check_inputs(swi, brain_mask, affine):
    swi = np.asarray(swi)
    if swi.ndim != 3:
        raise ValueError(f"SWI must be 3D, got shape {swi.shape}")
    brain = np.asarray(brain_mask, dtype=bool)
    if brain.shape != swi.shape:
        raise ValueError(f"brain mask shape {brain.shape} differs from SWI shape {swi.shape}")
    if not brain.any():
        raise ValueError("brain mask is empty")
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise ValueError("affine must be 4x4")
    return swi, brain, affine


def _world(affine, ijk):
    ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
    return ijk @ affine[:3, :3].T + affine[:3, 3]


# ---------------------------------------------------------------------------------------
# bian2013
# ---------------------------------------------------------------------------------------
def _rescale_255(image, brain, percentile):
    """Map 0 to 0 and the given brain percentile to 255 (as an 8-bit display would)."""
    high = float(np.percentile(image[brain], percentile))
    if high <= 0:
        high = float(image[brain].max()) or 1.0
    return np.clip(image / high * 255.0, 0, 255).astype(np.float32)


def detect_bian2013(swi, minip, brain_mask, affine, *, parameters=None):
    """Reference detector of Bian et al. (2013), parameters expressed in mm.

    Parameters
    ----------
    swi, minip : (X, Y, Z) ndarray
        SWI and its sliding-slab minimum-intensity projection (same grid).
    brain_mask : (X, Y, Z) ndarray of bool
    affine : (4, 4) array_like
        Voxel-to-scanner-RAS affine (voxel sizes and slice axis come from it).
    parameters : dict, optional
        Overrides of :data:`BIAN2013_PARAMETERS`.

    Returns
    -------
    DetectionResult
        Status ``cmb`` for candidates passing every rule, ``review`` for candidates
        failing only the centroid-shift rule ("travelling" candidates of Morrison et
        al. 2018, shown to the rater), ``rejected`` otherwise.
    """
    p = dict(BIAN2013_PARAMETERS)
    p.update(parameters or {})
    swi, brain, affine = _check_inputs(swi, brain_mask, affine)
    minip = np.asarray(minip)
    if minip.shape != swi.shape:
        raise ValueError(f"minIP shape {minip.shape} differs from SWI shape {swi.shape}")
    voxel_size = voxel_size_from_affine(affine)
    slice_axis = slice_axis_from_affine(affine)
    in_plane = float(np.mean(np.delete(voxel_size, slice_axis)))

    box = brain_bounding_box(brain, margin_vox=(2, 2, 2))
    brain_c = brain[box]
    swi_c = _rescale_255(np.asarray(swi[box], dtype=np.float32), brain_c, p["intensity_percentile"])
    minip_c = _rescale_255(
        np.asarray(minip[box], dtype=np.float32), brain_c, p["intensity_percentile"]
    )
    radius_px = p["frst_radius_mm"] / in_plane
    frst = fast_radial_symmetry_slices(minip_c, radius_px, slice_axis=slice_axis,
                                       alpha=p["frst_alpha"])
    frst = np.where(brain_c, frst, 0.0)
    cut = float(np.percentile(frst[brain_c], p["frst_percentile"]))
    top = float(np.percentile(frst[brain_c], 99.9)) or 1.0
    separation = [max(1, int(round(radius_px)))] * 3
    separation[slice_axis] = 1
    size = [2 * s + 1 for s in separation]
    peaks = (frst == ndi.maximum_filter(frst, size=size)) & (frst > cut) & brain_c
    peaks &= minip_c <= p["max_seed_intensity"]
    seeds = np.argwhere(peaks)
    seeds = seeds[np.argsort(-frst[tuple(seeds.T)], kind="stable")]

    labels_c = np.zeros(brain_c.shape, dtype=np.int32)
    rows = []
    for seed in seeds:
        # the minIP pixel stands for the darkest voxel of its slab: look one slice
        # either side (and one pixel in-plane) for the darkest SWI voxel
        near = tuple(slice(max(s - 1, 0), min(s + 2, n)) for s, n in zip(seed, swi_c.shape))
        sub = np.unravel_index(np.argmin(swi_c[near]), swi_c[near].shape)
        start = tuple(int(n.start + s) for n, s in zip(near, sub))
        if labels_c[start] or swi_c[start] > p["max_seed_intensity"]:
            continue
        region, rbox = grow_region(
            swi_c, start, voxel_size,
            lower=p["growing_lower"], upper=p["growing_upper"],
            max_difference=p["growing_max_difference"],
            max_distance_mm=p["growing_max_distance_mm"], mask=brain_c,
        )
        region &= labels_c[rbox] == 0
        if not region.any():
            continue
        cid = len(rows) + 1
        labels_c[rbox][region] = cid
        geom = slice_features(region, rbox, voxel_size, slice_axis)
        shape = shape_features(region, rbox, voxel_size)
        fails = []
        if geom["max_slice_area_mm2"] > p["max_slice_area_mm2"]:
            fails.append("area")
        if geom["circularity"] < p["min_circularity"]:
            fails.append("circularity")
        if geom["centroid_shift_mm"] > p["max_centroid_shift_mm"]:
            fails.append("centroid_shift")
        if not fails:
            status = "cmb"
        elif fails == ["centroid_shift"]:
            status = "review"
        else:
            status = "rejected"
        centroid = shape["centroid_vox"] + np.array([b.start for b in box])
        rows.append({
            "candidate_id": cid,
            "centroid": centroid,
            "frst": float(frst[tuple(seed)]),
            "seed_intensity": float(swi_c[start]),
            "volume_mm3": shape["volume_mm3"],
            "diameter_mm": shape["diameter_mm"],
            "max_slice_area_mm2": geom["max_slice_area_mm2"],
            "circularity": geom["circularity"],
            "centroid_shift_mm": geom["centroid_shift_mm"],
            "n_slices": geom["n_slices"],
            "score": float(min(frst[tuple(seed)] / top, 1.0)),
            "status": status,
            "reason": "+".join(fails) if fails else "n/a",
        })
    labels = np.zeros(swi.shape, dtype=np.int32)
    labels[box] = labels_c
    table = _finish_table(rows, affine)
    params = {"detector": "bian2013", "version": DETECTOR_VERSION["bian2013"],
              "slice_axis": slice_axis, **_jsonable(p)}
    return DetectionResult(table, labels, params)


# ---------------------------------------------------------------------------------------
# cmbprep
# ---------------------------------------------------------------------------------------
def _block_all(mask, factors):
    mask = np.asarray(mask, dtype=bool)
    pad = [(0, (-n) % f) for n, f in zip(mask.shape, factors)]
    mask = np.pad(mask, pad, mode="constant")
    shape = []
    for n, f in zip(mask.shape, factors):
        shape += [n // f, f]
    return mask.reshape(shape).all(axis=(1, 3, 5))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def score_candidates(features, parameters=None):
    """Score candidates from their features (pure function, vectorised).

    Each criterion is a logistic membership centred on its threshold in
    :data:`CMBPREP_PARAMETERS`; the score is their product, so one clearly failed
    criterion rejects a candidate and several marginal ones send it to review.

    Parameters
    ----------
    features : pandas.DataFrame
        Columns ``contrast diameter_mm elongation_perp_b0 b0_aspect hessian_ratio
        surrounding_dark_fraction touches_patch_border attached_depth_ratio
        distance_to_edge_mm
        paramagnetic_evidence``.
    parameters : dict, optional

    Returns
    -------
    score : ndarray of float in [0, 1]
    reason : list of str
        The criteria with membership below 0.5 (``"n/a"`` when none).
    """
    p = dict(CMBPREP_PARAMETERS)
    p.update(parameters or {})
    f = features
    hess = f["hessian_ratio"].fillna(-1.0).to_numpy(float)
    members = {
        "contrast": _sigmoid((f["contrast"].to_numpy(float) - p["min_contrast"]) / 0.05),
        "small": _sigmoid((f["diameter_mm"].to_numpy(float) - p["min_diameter_mm"]) / 0.2),
        "large": _sigmoid((p["max_diameter_mm"] - f["diameter_mm"].to_numpy(float)) / 0.5),
        "elongated": _sigmoid(
            (p["max_elongation_perp_b0"] - f["elongation_perp_b0"].to_numpy(float)) / 0.15
        ),
        "long_along_b0": _sigmoid((p["max_b0_aspect"] - f["b0_aspect"].to_numpy(float)) / 0.2),
        "tubular": _sigmoid((hess - p["min_hessian_ratio"]) / 0.05),
        "vessel_nearby": _sigmoid(
            (p["max_surrounding_dark_fraction"]
             - f["surrounding_dark_fraction"].fillna(1.0).to_numpy(float)) / 0.03
        ),
        "extends_beyond_patch": np.where(f["touches_patch_border"].to_numpy(bool), 0.1, 1.0),
        "bead_on_vessel": _sigmoid(
            (p["max_attached_depth_ratio"] - f["attached_depth_ratio"].to_numpy(float)) / 0.03
        ),
        "brain_edge": _sigmoid(
            (f["distance_to_edge_mm"].to_numpy(float) - p["min_distance_to_edge_mm"]) / 0.3
        ),
        # without phase the evidence is n/a and the criterion is neutral
        "not_paramagnetic": np.where(
            f["paramagnetic_evidence"].isna().to_numpy(), 1.0,
            _sigmoid((f["paramagnetic_evidence"].fillna(0.0).to_numpy(float)
                      - p["min_paramagnetic_evidence"]) / 0.04),
        ),
    }
    score = np.ones(len(f))
    for value in members.values():
        score = score * value
    reason = []
    for row in range(len(f)):
        failed = [name for name, value in members.items() if value[row] < 0.5]
        reason.append("+".join(failed) if failed else "n/a")
    return score, reason


def detect_cmbprep(swi, brain_mask, affine, *, filtered_phase=None, parameters=None,
                   n_jobs=1):
    """Default detector: 3D multi-scale blobs, segmentation, features, score.

    Parameters
    ----------
    swi : (X, Y, Z) ndarray
        Bias-corrected SWI (microbleeds and veins dark).
    brain_mask : (X, Y, Z) ndarray of bool
    affine : (4, 4) array_like
        Voxel-to-scanner-RAS affine.
    filtered_phase : (X, Y, Z) ndarray or None, optional
        High-pass filtered phase (rad). Enables the paramagnetic/diamagnetic test
        that rejects calcifications. Its handedness is calibrated on the image's own
        veins unless ``parameters["phase_sign"]`` is +1 or -1 (the sign of the phase
        produced by a positive susceptibility source along B0).
    parameters : dict, optional
        Overrides of :data:`CMBPREP_PARAMETERS`.
    n_jobs : int, optional
        With 2 or more, half of the candidates are analysed in a forked child process
        (same result as with 1).

    Returns
    -------
    DetectionResult
    """
    p = dict(CMBPREP_PARAMETERS)
    p.update(parameters or {})
    swi, brain, affine = _check_inputs(swi, brain_mask, affine)
    voxel_size = voxel_size_from_affine(affine)
    vs = np.asarray(voxel_size, dtype=float)
    slice_axis = slice_axis_from_affine(affine)
    margin = [int(np.ceil(4.0 / v)) for v in voxel_size]
    box = brain_bounding_box(brain, margin_vox=margin)
    brain_c = brain[box]
    rel = relative_intensity(np.asarray(swi[box], dtype=np.float32), brain_c,
                             background_mm=p["background_sigma_mm"], voxel_size=voxel_size)
    blobness, best_sigma = multiscale_dark_blobness(rel, voxel_size, p["sigmas_mm"])
    peaks = local_maxima(blobness, brain_c & (rel <= p["max_peak_intensity"]), voxel_size,
                         min_separation_mm=p["min_separation_mm"],
                         threshold=p["blobness_threshold"])
    peaks = peaks[: int(p["max_candidates"])]
    n_blob_peaks = len(peaks)
    if p["minimum_seed_intensity"] is not None:
        # intensity minima as extra seeds: a small lesion beside a larger dark structure
        # is not a maximum of the multi-scale blobness (the larger response wins)
        minima = local_maxima(-rel, brain_c & (rel <= p["minimum_seed_intensity"]),
                              voxel_size, min_separation_mm=p["min_separation_mm"],
                              threshold=-np.inf)
        if len(minima) and len(peaks):
            dist, _ = cKDTree(peaks * vs).query(minima * vs)
            minima = minima[dist > p["min_separation_mm"]]
        peaks = np.concatenate([peaks.reshape(-1, 3), minima.reshape(-1, 3)])
    # distance to the brain edge on blocks of about 1 mm (a block is brain if all of
    # its voxels are)
    edge_factors = [max(1, int(round(1.0 / v))) for v in voxel_size]
    small_brain = _block_all(brain_c, edge_factors)
    edge_small = ndi.distance_transform_edt(
        small_brain, sampling=[v * f for v, f in zip(voxel_size, edge_factors)])

    phase_c = None
    phase_info = {"phase_used": False}
    if filtered_phase is not None:
        phase = np.asarray(filtered_phase)
        if phase.shape != swi.shape:
            raise ValueError(
                f"filtered phase shape {phase.shape} differs from SWI shape {swi.shape}"
            )
        phase_c = np.asarray(phase[box], dtype=np.float32)
        if p["phase_sign"] in (1, -1, "1", "-1", "+1"):
            sign, corr = int(p["phase_sign"]), float("nan")
        else:
            veins = vessel_like_mask(brain_c & (rel < p["vessel_intensity"]), voxel_size,
                                     min_elongation=p["vessel_min_elongation"])
            sign, corr = paramagnetic_phase_sign(phase_c, veins, brain_c, affine)
        phase_info = {"phase_used": sign != 0, "phase_sign": sign,
                      "phase_sign_calibration_correlation": corr}
        if sign == 0:
            phase_c = None

    offset = np.array([b.start for b in box])
    b0 = b0_direction_from_affine(affine)
    weight = np.clip(rel, 0, 1.5)  # phase reliability ~ relative magnitude

    def analyse(n_peak):
        """Segmentation and features of one peak (independent of the other peaks)."""
        peak = tuple(int(v) for v in peaks[n_peak])
        sigma = float(best_sigma[peak])
        if n_peak >= n_blob_peaks:  # intensity minimum: small lesion, small patch
            sigma = min(sigma, float(p["minimum_seed_sigma_mm"]))
        radius_est = np.sqrt(3.0) * sigma
        region, rbox, background, darkest, touches, attached_ratio = segment_dark_lesion(
            rel, peak, voxel_size, patch_radius_mm=2 * radius_est + p["patch_margin_mm"],
            depth_fraction=p["depth_fraction"],
            opening_radius_mm=float(np.clip(p["opening_fraction"] * radius_est,
                                            *p["opening_radius_mm"])),
            deeper_fractions=p["deeper_fractions"],
            shallow_fraction=p["shallow_fraction"],
        )
        if not region.any():
            return None
        contrast = float(1.0 - darkest / background) if background > 0 else np.nan
        shape = shape_features(region, rbox, voxel_size, b0, surface=False)
        geom = slice_features(region, rbox, voxel_size, slice_axis)
        centre = shape["centroid_vox"]
        radius = shape["diameter_mm"] / 2
        ic = tuple(int(v) for v in np.clip(np.rint(centre), 0, np.array(rel.shape) - 1))
        # cheap screening: clear vessels, faint or huge blobs skip the costly features
        # (shape is not judged on regions of a few voxels: two voxels side by side are
        # "elongated" whatever the lesion looks like)
        shape_known = int(region.sum()) > p["min_voxels_for_shape"]
        screened_out = bool(
            touches
            or not contrast >= p["min_contrast"] - 0.15
            or shape["diameter_mm"] > p["max_diameter_mm"] + 2.0
            or (shape_known and shape["elongation_perp_b0"] > p["max_elongation_perp_b0"] + 0.6)
            or (shape_known and shape["b0_aspect"] > p["max_b0_aspect"] + 1.0)
        )
        dark_fraction = hess = corr = evidence = sphericity = np.nan
        if not screened_out:
            sphericity = shape_features(region, rbox, voxel_size)["sphericity"]
            level = background - p["depth_fraction"] * (background - darkest)
            dark_fraction = surrounding_dark_fraction(rel, centre, radius, voxel_size, level)
            hess = hessian_blob_ratio(rel, centre, voxel_size, max(sigma, 0.5))
            if phase_c is not None:
                corr = dipole_correlation(
                    phase_c, weight, centre, affine, radius + 0.5,
                    radius + 0.5 + p["dipole_shell_mm"] + radius,
                )
                evidence = phase_info["phase_sign"] * corr
        row = {
            "centroid": centre + offset,
            "blobness": float(blobness[peak]),
            "scale_mm": sigma,
            "contrast": contrast,
            "volume_mm3": shape["volume_mm3"],
            "diameter_mm": shape["diameter_mm"],
            "elongation": shape["elongation"],
            "elongation_perp_b0": shape["elongation_perp_b0"],
            "b0_aspect": shape["b0_aspect"],
            "sphericity": sphericity,
            "circularity": geom["circularity"],
            "n_slices": geom["n_slices"],
            "centroid_shift_mm": geom["centroid_shift_mm"],
            "hessian_ratio": hess,
            "surrounding_dark_fraction": dark_fraction,
            "touches_patch_border": touches,
            "attached_depth_ratio": attached_ratio,
            "distance_to_edge_mm": float(edge_small[tuple(
                min(c // f, n - 1) for c, f, n in zip(ic, edge_factors, edge_small.shape))]),
            "dipole_correlation": corr,
            "paramagnetic_evidence": evidence,
            "n_voxels": int(region.sum()),
            "screened_out": screened_out,
        }
        bounds = tuple((sl.start, sl.stop) for sl in rbox)
        return row, np.packbits(region), region.shape, bounds, radius_est, bool(touches)

    def analyse_many(indices):
        return {int(i): analyse(int(i)) for i in indices}

    # every peak is analysed on its own (half of them in a forked child when n_jobs > 1;
    # the parent does them itself if the child fails, so the result never depends on it)
    everything = np.arange(len(peaks))
    child = run_in_fork(analyse_many, (everything[1::2],)) \
        if int(n_jobs) > 1 and len(peaks) > 1 else None
    analysed = analyse_many(everything[0::2] if child is not None else everything)
    if child is not None:
        theirs = child()
        analysed.update(theirs if theirs is not None else analyse_many(everything[1::2]))

    # then, in order of blob strength, a peak inside an earlier candidate (within that
    # candidate's radius) is the same blob and is skipped
    labels_c = np.zeros(brain_c.shape, dtype=np.int32)
    rows = []
    owners = {}  # candidate_id -> (peak, radius_mm, region leaves its patch)
    for n_peak in range(len(peaks)):
        result = analysed[n_peak]
        if result is None:
            continue
        row, packed, rshape, bounds, radius_est, touches = result
        peak = tuple(int(v) for v in peaks[n_peak])
        owner = int(labels_c[peak])
        if owner:
            owner_peak, owner_radius, owner_open = owners[owner]
            if not owner_open and np.linalg.norm((np.subtract(peak, owner_peak)) * vs) <= max(
                    owner_radius, p["min_separation_mm"]):
                continue  # the same blob (a region leaving its patch may hide a lesion)
        region = np.unpackbits(packed, count=int(np.prod(rshape))).astype(bool).reshape(rshape)
        rbox = tuple(slice(lo, hi) for lo, hi in bounds)
        cid = len(rows) + 1
        free = region & (labels_c[rbox] == 0)
        labels_c[rbox][free] = cid
        owners[cid] = (peak, radius_est, touches)
        rows.append({"candidate_id": cid, **row})
    table = _finish_table(rows, affine)
    if len(table):
        score, reason, scoring = _score(table, p, use_phase=phase_c is not None)
        assign_status(table, score, reason, scoring["accept_score"], scoring["review_score"])
    else:
        scoring = _thresholds(p, use_phase=phase_c is not None)
    labels = np.zeros(swi.shape, dtype=np.int32)
    labels[box] = labels_c
    params = {"detector": "cmbprep", "version": DETECTOR_VERSION["cmbprep"],
              "slice_axis": slice_axis, **_jsonable(p), **_jsonable(phase_info),
              **_jsonable(scoring)}
    return DetectionResult(table, labels, params)


def _thresholds(p, use_phase):
    """Scorer description and the accept/review thresholds in use."""
    if p["scorer"] == "rules":
        return {"scorer": "rules",
                "accept_score": 0.5 if p["accept_score"] is None else float(p["accept_score"]),
                "review_score": 0.2 if p["review_score"] is None else float(p["review_score"])}
    if p["scorer"] != "classifier":
        raise ValueError(f"unknown scorer {p['scorer']!r}; use 'classifier' or 'rules'")
    model = load_model(p["model"])
    part = model["phase" if use_phase else "no_phase"]
    return {
        "scorer": "classifier",
        "model": str(p["model"] or DEFAULT_MODEL_PATH.name),
        "model_version": model["version"],
        "model_part": "phase" if use_phase else "no_phase",
        "accept_score": float(part["accept_score"] if p["accept_score"] is None
                              else p["accept_score"]),
        "review_score": float(part["review_score"] if p["review_score"] is None
                              else p["review_score"]),
    }


def _score(table, p, use_phase):
    """Score of every candidate; screened-out candidates score 0."""
    scoring = _thresholds(p, use_phase)
    rule_score, reason = score_candidates(table, p)
    screened = table["screened_out"].to_numpy(bool)
    if scoring["scorer"] == "rules":
        score = rule_score
    else:
        score = np.zeros(len(table))
        keep = ~screened
        if keep.any():
            score[keep] = predict_proba(model_frame(table.loc[keep]), load_model(p["model"]),
                                        use_phase=use_phase)
    score = np.where(screened, 0.0, score)
    reason = [("screened:" + r) if s else r for r, s in zip(reason, screened)]
    return score, reason, scoring


def assign_status(table, score, reason, accept_score, review_score):
    """Set ``score``, ``status`` and ``reason`` in place, then reject duplicates.

    ``cmb`` when ``score >= accept_score``, ``review`` when ``score >= review_score``,
    ``rejected`` otherwise; a non-rejected candidate whose centroid lies inside a
    better-scored one is rejected as ``duplicate``.
    """
    score = np.asarray(score, dtype=float)
    table["score"] = score
    table["status"] = np.where(score >= accept_score, "cmb",
                               np.where(score >= review_score, "review", "rejected"))
    table["reason"] = list(reason)
    _remove_duplicates(table)
    return table


def _remove_duplicates(table):
    """Reject non-rejected candidates whose centroid lies inside a better-scored one."""
    keep = table.index[table["status"] != "rejected"]
    order = table.loc[keep].sort_values("score", ascending=False, kind="stable").index
    kept = []
    xyz = table[["x", "y", "z"]].to_numpy(float)
    pos = {idx: n for n, idx in enumerate(table.index)}
    for idx in order:
        here = xyz[pos[idx]]
        duplicate = any(
            np.linalg.norm(here - xyz[pos[other]])
            <= max(table.at[idx, "diameter_mm"], table.at[other, "diameter_mm"]) / 2
            for other in kept
        )
        if duplicate:
            table.at[idx, "status"] = "rejected"
            table.at[idx, "reason"] = "duplicate"
        else:
            kept.append(idx)


def detector_code_id(detector):
    """Detector name, version and (``cmbprep``) SHA-256 prefix of the packaged model."""
    code = f"{detector} {DETECTOR_VERSION[detector]}"
    if detector == "cmbprep":
        import hashlib

        digest = hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest()[:16]
        code += f" model sha256:{digest}"
    return code


def detect_microbleeds(detector, swi, brain_mask, affine, *, minip=None, filtered_phase=None,
                       parameters=None, n_jobs=1):
    """Run a detector by name (see :data:`DETECTORS`); ``n_jobs`` is used by ``cmbprep``."""
    if detector == "cmbprep":
        return detect_cmbprep(swi, brain_mask, affine, filtered_phase=filtered_phase,
                              parameters=parameters, n_jobs=n_jobs)
    if detector == "bian2013":
        if minip is None:
            raise ValueError("the bian2013 detector needs the minimum-intensity projection")
        return detect_bian2013(swi, minip, brain_mask, affine, parameters=parameters)
    raise ValueError(f"unknown detector {detector!r}; choose one of {DETECTORS}")


def _finish_table(rows, affine):
    base = ["candidate_id", "x", "y", "z", "i", "j", "k"]
    if not rows:
        return pd.DataFrame(columns=base + ["score", "status", "reason"])
    centroids = np.array([r.pop("centroid") for r in rows])
    table = pd.DataFrame(rows)
    xyz = _world(affine, centroids)
    ijk = np.rint(centroids).astype(int)
    coords = pd.DataFrame({
        "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
        "i": ijk[:, 0], "j": ijk[:, 1], "k": ijk[:, 2],
    })
    table = pd.concat([table[["candidate_id"]], coords, table.drop(columns="candidate_id")],
                      axis=1)
    return table


def _jsonable(d):
    out = {}
    for key, value in d.items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------
# anatomy and output tables
# ---------------------------------------------------------------------------------------
CMB_COLUMNS = ["cmb_id", "x", "y", "z", "i", "j", "k", "mni_x", "mni_y", "mni_z",
               "volume_mm3", "diameter_mm", "score", "region", "lobe", "hemisphere",
               "mars_category"]

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
            box = tuple(slice(max(v - h, 0), min(v + h + 1, n))
                        for v, h, n in zip(ijk, half, dseg.shape))
            values = dseg[box][dseg[box] > 0]
            if values.size:
                label = int(np.bincount(values.astype(int)).argmax())
        if label == 0 or label not in lookup.index:
            continue
        entry = lookup.loc[label]
        table.at[row, "region"] = str(entry["name"])
        if "lobe" in lookup.columns:
            table.at[row, "lobe"] = str(entry["lobe"])
        else:
            table.at[row, "lobe"] = _lobe_from_name(entry["name"])
        for col in ("hemisphere", "mars_category"):
            if col in lookup.columns and pd.notna(entry[col]):
                table.at[row, col] = str(entry[col])
    return table


def cmb_table(candidates, template_points=None):
    """Accepted microbleeds (``status == "cmb"``) with the :data:`CMB_COLUMNS` columns.

    Parameters
    ----------
    candidates : pandas.DataFrame
        Candidate table (after :func:`assign_regions`).
    template_points : (N, 3) ndarray or None
        Template (MNI) mm coordinates of *all* candidates, row-aligned with
        ``candidates``; ``None`` gives ``n/a``.
    """
    cand = candidates.copy()
    if template_points is not None:
        pts = np.asarray(template_points, dtype=float).reshape(-1, 3)
        cand["mni_x"], cand["mni_y"], cand["mni_z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    for col in ("mni_x", "mni_y", "mni_z", "region", "lobe", "hemisphere", "mars_category"):
        if col not in cand.columns:
            cand[col] = "n/a"
    accepted = cand[cand["status"] == "cmb"].copy() if len(cand) else cand.iloc[0:0].copy()
    accepted["cmb_id"] = np.arange(1, len(accepted) + 1)
    accepted["candidate_id"] = accepted.get("candidate_id")
    return accepted.reindex(columns=CMB_COLUMNS + ["candidate_id"]).reset_index(drop=True)


def cmb_label_image(labels, cmb):
    """Relabel a candidate label image so each accepted CMB carries its ``cmb_id``.

    Parameters
    ----------
    labels : ndarray of int
        Candidate labels (``candidate_id``).
    cmb : pandas.DataFrame
        Output of :func:`cmb_table` (``cmb_id`` and ``candidate_id`` columns).

    Returns
    -------
    ndarray of int16 (int32 when more than 32767 CMBs)
    """
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    for cmb_id, cand_id in zip(cmb["cmb_id"], cmb["candidate_id"]):
        lut[int(cand_id)] = int(cmb_id)
    out = lut[labels]
    return out.astype(np.int16) if out.max() < 32767 else out


_DESCRIPTIONS = {
    "candidate_id": ("Candidate index (matches the candidate label image)", None),
    "cmb_id": ("Microbleed index (matches the label in the CMB dseg image)", None),
    "x": ("Scanner RAS+ x of the lesion centroid", "mm"),
    "y": ("Scanner RAS+ y of the lesion centroid", "mm"),
    "z": ("Scanner RAS+ z of the lesion centroid", "mm"),
    "i": ("Voxel index along the first array axis (rounded centroid)", None),
    "j": ("Voxel index along the second array axis (rounded centroid)", None),
    "k": ("Voxel index along the third array axis (rounded centroid)", None),
    "mni_x": ("Template x of the centroid (n/a without a transform)", "mm"),
    "mni_y": ("Template y of the centroid (n/a without a transform)", "mm"),
    "mni_z": ("Template z of the centroid (n/a without a transform)", "mm"),
    "volume_mm3": ("Volume of the segmented hypointensity (blooming included)", "mm^3"),
    "diameter_mm": ("Diameter of the sphere with the segmented volume", "mm"),
    "score": ("Detector score in [0, 1]; higher is more microbleed-like", None),
    "status": ("Decision", None),
    "reason": ("Criteria that failed ('+'-separated), n/a if none", None),
    "region": ("Atlas region at the centroid", None),
    "lobe": ("Lobe of the atlas region (n/a for non-lobar regions)", None),
    "hemisphere": ("Hemisphere of the atlas region", None),
    "mars_category": ("Microbleed Anatomical Rating Scale category", None),
    "frst": ("Fast radial symmetry response at the seed (0-255 image units)", None),
    "seed_intensity": ("SWI intensity at the seed after rescaling to 0-255", None),
    "max_slice_area_mm2": ("Largest in-plane area of the lesion over slices", "mm^2"),
    "circularity": ("4 pi area / perimeter^2 on the slice of largest area", None),
    "centroid_shift_mm": ("Largest in-plane centroid displacement between consecutive slices",
                          "mm"),
    "n_slices": ("Number of slices the lesion appears on", None),
    "blobness": ("Scale-normalised Laplacian-of-Gaussian response (relative intensity)", None),
    "scale_mm": ("Gaussian scale of the strongest blob response", "mm"),
    "contrast": ("1 - darkest relative intensity / local background", None),
    "elongation": ("Square root of largest/smallest second-moment eigenvalue (1 = sphere)",
                   None),
    "elongation_perp_b0": ("Elongation in the plane perpendicular to B0 (1 = round)", None),
    "b0_aspect": ("Standard deviation along B0 / mean standard deviation across B0", None),
    "sphericity": ("pi^(1/3) (6V)^(2/3) / surface area (1 = sphere)", None),
    "hessian_ratio": ("Smallest/largest Hessian eigenvalue at the centre (1 blob, 0 tube)",
                      None),
    "surrounding_dark_fraction": ("Fraction of a 2 mm shell around the lesion that is as "
                                  "dark as the lesion (vessels continue through it)", None),
    "touches_patch_border": ("Whether the segmentation reaches the border of its analysis "
                             "patch (typical of vessels)", None),
    "attached_depth_ratio": ("Depth of the darkest voxel of a structure attached to the "
                             "lesion at a quarter of its depth and leaving the patch, "
                             "relative to the lesion depth (0: none attached; about 1: a "
                             "bead on a vessel)", None),
    "distance_to_edge_mm": ("Distance from the centroid to the brain-mask edge", "mm"),
    "n_voxels": ("Number of voxels of the segmented region", None),
    "screened_out": ("Whether cheap criteria (region leaves its patch, faint, huge, clearly "
                     "elongated) rejected the candidate before the costly features", None),
    "dipole_correlation": ("Correlation of the filtered phase with a z-oriented point-dipole "
                           "pattern around the lesion (n/a without phase)", None),
    "paramagnetic_evidence": ("dipole_correlation times the phase handedness: > 0 "
                              "paramagnetic (microbleed), < 0 diamagnetic (calcification)",
                              None),
}

_LEVELS = {
    "status": {"cmb": "accepted as a cerebral microbleed",
               "review": "borderline: a rater should check it",
               "rejected": "rejected (see reason)"},
    "mars_category": {"lobar": "lobar (cortex and juxtacortical white matter)",
                      "deep": "deep (basal ganglia, thalamus, capsules, corpus callosum, "
                              "deep and periventricular white matter)",
                      "infratentorial": "infratentorial (brainstem, cerebellum)"},
    "hemisphere": {"left": "left", "right": "right", "midline": "midline or bilateral"},
    "touches_patch_border": {"True": "reaches the patch border", "False": "does not"},
}


def column_descriptions(columns):
    """BIDS sidecar content (Description, Units, Levels) for the given table columns.

    Parameters
    ----------
    columns : iterable of str

    Returns
    -------
    dict
        One entry per column.
    """
    out = {}
    for col in columns:
        desc, units = _DESCRIPTIONS.get(col, (col.replace("_", " "), None))
        entry = {"Description": desc}
        if units:
            entry["Units"] = units
        if col in _LEVELS:
            entry["Levels"] = _LEVELS[col]
        out[col] = entry
    return out


def write_table(table, path):
    """Write a tab-separated table with ``n/a`` for missing values."""
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    return path


def write_sidecar(columns, path, extra=None):
    """Write the JSON sidecar describing ``columns`` (plus optional ``extra`` keys)."""
    content = column_descriptions(columns)
    if extra:
        content.update(extra)
    with open(path, "w") as fobj:
        json.dump(content, fobj, indent=2, sort_keys=False)
    return path
