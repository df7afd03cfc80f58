"""The default (``cmbprep``) microbleed detector, in named stages.

1. :func:`find_candidates`: relative intensity, multi-scale Laplacian-of-Gaussian blob
   peaks and dark intensity minima as seeds, distance to the brain edge and the phase
   handedness, all cropped to the brain (a :class:`CandidateContext`);
2. :func:`.analysis.analyse_candidates`: half-depth segmentation and
   shape/contrast/context/phase features of each seed, every seed on its own (so any
   subsets can run in parallel);
3. :func:`merge_and_score`: candidates deduplicated in seed order, scored (packaged
   classifier, with its patch network when it has one, or rules) and given a status.

:func:`detect_cmbprep` runs the three in one process. See ``docs/detection.rst``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ..arrays import block_factors, block_reduce, bounding_box, sigma_voxels, slice_axis
from .analysis import analyse_candidates
from .candidates import (
    local_maxima,
    multiscale_dark_blobness,
    relative_intensity,
)
from .classifier import NETWORK_COLUMN
from .network import candidate_network_probability
from .parameters import CMBPREP_PARAMETERS, DETECTOR_VERSION
from .phase import paramagnetic_phase_sign, vessel_like_mask
from .result import (
    DetectionResult,
    candidate_frame,
    check_inputs,
    jsonable,
    voxel_size_tuple,
)
from .scoring import assign_status, candidate_scores, score_thresholds, scoring_network
from .zones import phase_artefact_zones, zone_detection_image

__all__ = ["CandidateContext", "detect_cmbprep", "find_candidates", "merge_and_score",
           "merge_candidates"]


@dataclass
class CandidateContext:
    """What the analysis of every seed needs, cropped to the brain's bounding box.

    Attributes
    ----------
    parameters : dict
        Every parameter of the detector (defaults and overrides).
    affine : (4, 4) ndarray
        Voxel-to-scanner-RAS affine of the SWI.
    shape : tuple of int
        Shape of the SWI.
    box : tuple of slice
        Where the cropped arrays sit in the SWI grid.
    voxel_size : tuple of float
    slice_axis : int
    relative : ndarray of float32
        Relative intensity (cropped).
    phase : ndarray of float32 or None
        Filtered phase (cropped); None without phase or when its handedness could not
        be determined.
    phase_info : dict
        ``phase_used`` and, with phase, ``phase_sign`` and its calibration correlation.
    peaks : (N, 3) ndarray of int
        Seeds (cropped voxel indices) in analysis order: blob peaks by decreasing
        blobness, then intensity minima.
    n_blob_peaks : int
        How many of ``peaks`` are blob peaks.
    peak_blobness, peak_sigma : (N,) ndarray of float32
        Blobness and best scale (mm) at each seed.
    edge_distance : ndarray of float64
        Distance (mm) to the brain edge on blocks of ``edge_factors`` voxels.
    edge_factors : tuple of int
    phase_zone : ndarray of bool or None
        Phase-mask artefact zones (cropped, :func:`.zones.phase_artefact_zones`); None
        when no magnitude was given. ``relative`` is then that of the magnitude inside
        them (:func:`.zones.zone_detection_image`).
    phase_zone_cm3 : float or None
        Their volume (cm^3); None without magnitude.
    magnitude_relative : ndarray of float32 or None
        Relative intensity of the magnitude (cropped, smoothed over
        ``magnitude_smoothing_mm``) for ``magnitude_contrast``; None without magnitude.
    """

    parameters: dict
    affine: np.ndarray
    shape: tuple
    box: tuple
    voxel_size: tuple
    slice_axis: int
    relative: np.ndarray
    phase: np.ndarray | None
    phase_info: dict
    peaks: np.ndarray
    n_blob_peaks: int
    peak_blobness: np.ndarray
    peak_sigma: np.ndarray
    edge_distance: np.ndarray
    edge_factors: tuple
    phase_zone: np.ndarray | None = None
    phase_zone_cm3: float | None = None
    magnitude_relative: np.ndarray | None = None


def seed_peaks(rel, blobness, brain, voxel_size, p):
    """Blob peaks by decreasing blobness, then dark intensity minima not near one.

    Returns
    -------
    peaks : (N, 3) ndarray of int
    n_blob_peaks : int
    """
    peaks = local_maxima(blobness, brain & (rel <= p["max_peak_intensity"]), voxel_size,
                         min_separation_mm=p["min_separation_mm"],
                         threshold=p["blobness_threshold"])
    peaks = peaks[: int(p["max_candidates"])]
    n_blob_peaks = len(peaks)
    if p["minimum_seed_intensity"] is not None:
        # intensity minima as extra seeds: a small lesion beside a larger dark structure
        # is not a maximum of the multi-scale blobness (the larger response wins)
        minima = local_maxima(-rel, brain & (rel <= p["minimum_seed_intensity"]),
                              voxel_size, min_separation_mm=p["min_separation_mm"],
                              threshold=-np.inf)
        if len(minima) and len(peaks):
            vs = np.asarray(voxel_size, dtype=float)
            dist, _ = cKDTree(peaks * vs).query(minima * vs)
            minima = minima[dist > p["min_separation_mm"]]
        peaks = np.concatenate([peaks.reshape(-1, 3), minima.reshape(-1, 3)])
    return peaks, n_blob_peaks


def brain_edge_distance(brain, voxel_size):
    """Distance (mm) to the brain edge on blocks of about 1 mm (a block is brain if all
    of its voxels are).

    Returns
    -------
    factors : tuple of int
        Block size in voxels.
    distance : ndarray of float64
        On the block grid.
    """
    factors = block_factors(voxel_size, 1.0, rounding="round")
    small_brain = block_reduce(brain, factors, "all", edges="constant")
    distance = ndi.distance_transform_edt(
        small_brain, sampling=[v * f for v, f in zip(voxel_size, factors)])
    return factors, distance


def calibrate_phase(filtered_phase, shape, box, rel, brain, voxel_size, affine, p):
    """Cropped filtered phase and its handedness (``parameters["phase_sign"]`` or, with
    ``"auto"``, the sign calibrated on the image's vessel-like dark structures).

    Two independent estimates of the handedness exist: this calibration (correlation of
    the phase with the dipole field of the vessel-like dark structures) and the SWI
    chain's pole-minus-equator rule (:func:`cmbprep.algorithms.swi.handedness.
    detect_handedness`), passed as ``parameters["phase_sign_reference"]``. Each is wrong
    on a few percent of simulated scans, rarely on the same scan, and a wrong sign turns
    every microbleed diamagnetic (rejected) and every calcification paramagnetic
    (accepted). So when both are known and disagree the phase is not used: the scan is
    scored like scanner SWI (the ``no_phase`` classifier) and ``phase_sign_conflict``
    is reported. When the calibration finds no vessel-like structure to work on (sign
    0) the SWI chain's convention is used alone: the SWI itself was made with it.

    Returns
    -------
    phase : ndarray of float32 or None
        None without phase, when the sign is undetermined (0, and no reference) or in
        conflict.
    info : dict
        ``phase_used`` (and with phase ``phase_sign``, ``phase_sign_source``
        (``parameter``, ``calibration`` or ``swi_chain``),
        ``phase_sign_calibration_correlation``, ``phase_sign_reference`` and
        ``phase_sign_conflict``).
    """
    if filtered_phase is None:
        return None, {"phase_used": False}
    phase = np.asarray(filtered_phase)
    if phase.shape != shape:
        raise ValueError(f"filtered phase shape {phase.shape} differs from SWI shape {shape}")
    phase_c = np.asarray(phase[box], dtype=np.float32)
    reference = p.get("phase_sign_reference")
    reference = int(reference) if reference in (1, -1, "1", "-1", "+1") else None
    conflict = False
    if p["phase_sign"] in (1, -1, "1", "-1", "+1"):
        sign, corr, source = int(p["phase_sign"]), float("nan"), "parameter"
    else:
        veins = vessel_like_mask(brain & (rel < p["vessel_intensity"]), voxel_size,
                                 min_elongation=p["vessel_min_elongation"])
        sign, corr = paramagnetic_phase_sign(phase_c, veins, brain, affine)
        source = "calibration"
        conflict = sign != 0 and reference is not None and sign != reference
        if sign == 0 and reference is not None:
            sign, source = reference, "swi_chain"
    used = sign != 0 and not conflict
    info = {"phase_used": used, "phase_sign": sign, "phase_sign_source": source,
            "phase_sign_calibration_correlation": corr,
            "phase_sign_reference": "n/a" if reference is None else reference,
            "phase_sign_conflict": conflict}
    return (phase_c if used else None), info


def magnitude_relative_intensity(magnitude, brain, voxel_size, p):
    """Relative intensity of the magnitude (local background as for the SWI), smoothed
    with a Gaussian of ``p["magnitude_smoothing_mm"]`` (mm) so that one noisy voxel does
    not make a candidate dark."""
    rel = relative_intensity(magnitude, brain, background_mm=p["background_sigma_mm"],
                             voxel_size=voxel_size)
    return ndi.gaussian_filter(
        rel, sigma_voxels(p["magnitude_smoothing_mm"], voxel_size)).astype(np.float32)


def find_candidates(swi, brain_mask, affine, *, filtered_phase=None, magnitude=None,
                    parameters=None):
    """First stage: seeds and everything their analysis needs.

    Parameters are those of :func:`detect_cmbprep`. With ``magnitude``, the seeds and the
    features come from the magnitude inside the phase-mask artefact zones and from the
    SWI elsewhere; the phase-sign calibration always uses the SWI.

    Returns
    -------
    CandidateContext
    """
    p = dict(CMBPREP_PARAMETERS)
    p.update(parameters or {})
    swi, brain, affine = check_inputs(swi, brain_mask, affine)
    voxel_size = voxel_size_tuple(affine)
    margin = [int(np.ceil(4.0 / v)) for v in voxel_size]
    box = bounding_box(brain, margin_vox=margin)
    brain_c = brain[box]
    swi_c = np.asarray(swi[box], dtype=np.float32)
    rel = rel_swi = relative_intensity(swi_c, brain_c, background_mm=p["background_sigma_mm"],
                                       voxel_size=voxel_size)
    zone_c, zone_cm3, mag_rel = None, None, None
    if magnitude is not None:
        magnitude = np.asarray(magnitude)
        if magnitude.shape != swi.shape:
            raise ValueError(f"magnitude shape {magnitude.shape} differs from SWI shape "
                             f"{swi.shape}")
        mag_c = np.asarray(magnitude[box], dtype=np.float32)
        zone_c = phase_artefact_zones(swi_c, mag_c, brain_c, voxel_size,
                                      sigma_mm=p["phase_zone_sigma_mm"],
                                      level=p["phase_zone_level"],
                                      min_cm3=p["phase_zone_min_cm3"])
        zone_cm3 = float(zone_c.sum()) * float(np.prod(voxel_size)) / 1000.0
        mag_rel = magnitude_relative_intensity(mag_c, brain_c, voxel_size, p)
        if zone_c.any():
            image = zone_detection_image(swi_c, mag_c, zone_c, voxel_size,
                                         edge_mm=p["phase_zone_edge_mm"])
            rel = relative_intensity(image, brain_c, background_mm=p["background_sigma_mm"],
                                     voxel_size=voxel_size)
    blobness, best_sigma = multiscale_dark_blobness(rel, voxel_size, p["sigmas_mm"])
    peaks, n_blob_peaks = seed_peaks(rel, blobness, brain_c, voxel_size, p)
    edge_factors, edge_distance = brain_edge_distance(brain_c, voxel_size)
    # the calibration's vessel-like structures are the SWI's (the phase made them dark)
    phase_c, phase_info = calibrate_phase(filtered_phase, swi.shape, box, rel_swi, brain_c,
                                          voxel_size, affine, p)
    at_peaks = tuple(peaks.T)
    return CandidateContext(
        parameters=p, affine=affine, shape=swi.shape, box=box, voxel_size=voxel_size,
        slice_axis=slice_axis(affine), relative=rel, phase=phase_c,
        phase_info=phase_info, peaks=peaks, n_blob_peaks=n_blob_peaks,
        peak_blobness=blobness[at_peaks], peak_sigma=best_sigma[at_peaks],
        edge_distance=edge_distance, edge_factors=edge_factors,
        phase_zone=zone_c, phase_zone_cm3=zone_cm3, magnitude_relative=mag_rel,
    )


def merge_candidates(context, analysed):
    """Candidate rows and cropped label image from the analysed seeds.

    In seed order (blob strength), a seed inside an earlier candidate and within that
    candidate's radius is the same blob and is skipped (unless that candidate's region
    leaves its patch: it may hide a lesion). Later candidates keep only voxels no
    earlier candidate has.

    Returns
    -------
    rows : list of dict
        ``candidate_id`` (from 1) and the analysis row.
    labels : ndarray of int32
        Cropped label image.
    seeds : dict
        ``candidate_id`` -> index of its seed in ``analysed``.
    """
    missing = sorted(set(range(len(context.peaks))) - set(analysed))
    if missing:
        raise ValueError(f"{len(missing)} seeds were not analysed (first: {missing[0]})")
    p = context.parameters
    vs = np.asarray(context.voxel_size, dtype=float)
    labels_c = np.zeros(context.relative.shape, dtype=np.int32)
    rows, seeds = [], {}
    owners = {}  # candidate_id -> (peak, radius_mm, region leaves its patch)
    for n_peak in range(len(context.peaks)):
        result = analysed[n_peak]
        if result is None:
            continue
        peak = tuple(int(v) for v in context.peaks[n_peak])
        owner = int(labels_c[peak])
        if owner:
            owner_peak, owner_radius, owner_open = owners[owner]
            if not owner_open and np.linalg.norm((np.subtract(peak, owner_peak)) * vs) <= max(
                    owner_radius, p["min_separation_mm"]):
                continue  # the same blob (a region leaving its patch may hide a lesion)
        rbox = tuple(slice(lo, hi) for lo, hi in result.bounds)
        cid = len(rows) + 1
        free = result.region() & (labels_c[rbox] == 0)
        labels_c[rbox][free] = cid
        owners[cid] = (peak, result.radius_est, result.touches)
        seeds[cid] = n_peak
        rows.append({"candidate_id": cid, **result.row})
    return rows, labels_c, seeds


def _paint_accepted(labels_c, table, analysed, seeds):
    """Give every accepted candidate its whole region in the label image.

    :func:`merge_candidates` gives overlapping voxels to the earlier candidate; a lesion
    inside an earlier candidate's region (a vessel's region that leaves its patch) can
    then own no voxel at all, and its microbleed would be missing from the CMB mask.
    Accepted candidates are painted over, lowest score first, so the most likely
    microbleed keeps a contested voxel.
    """
    accepted = table[table["status"] == "cmb"].sort_values("score", kind="stable")
    for cid in accepted["candidate_id"].astype(int):
        result = analysed[seeds[cid]]
        rbox = tuple(slice(lo, hi) for lo, hi in result.bounds)
        labels_c[rbox][result.region()] = cid


def merge_and_score(context, analysed, images=None):
    """Third stage: merged candidates with score, status and reason, label image and the
    parameters used (scorer and thresholds included).

    Parameters
    ----------
    context : CandidateContext
        From :func:`find_candidates`.
    analysed : dict
        From :func:`.analysis.analyse_candidates` (every seed).
    images : tuple, optional
        ``(swi, magnitude, brain_mask)`` as given to :func:`find_candidates`
        (``magnitude`` may be None): needed when the classifier has a patch network
        (:func:`.classifier.uses_network`), which looks at each candidate's patches.

    Returns
    -------
    DetectionResult
    """
    rows, labels_c, seeds = merge_candidates(context, analysed)
    p = context.parameters
    use_phase = context.phase is not None
    table = candidate_frame(rows, context.affine)
    zone = context.phase_zone
    network = scoring_network(p)
    if network is not None:
        if images is None:
            raise ValueError("the classifier's patch network needs the SWI, magnitude and "
                             "brain mask (images)")
        swi, magnitude, brain_mask = images
        table[NETWORK_COLUMN] = candidate_network_probability(
            table, swi, magnitude, brain_mask, context.affine, network)
    if len(table):
        in_zone = None
        if zone is not None:
            in_zone = centres_in_zone(table, zone, context.box)
            table["phase_artefact_zone"] = in_zone
        score, reason, scoring, accept, review = candidate_scores(
            table, p, use_phase=use_phase, no_phase=in_zone)
        assign_status(table, score, reason, accept, review, p["max_accept_diameter_mm"])
        _paint_accepted(labels_c, table, analysed, seeds)
    else:
        scoring = score_thresholds(p, use_phase=use_phase)
    labels = np.zeros(context.shape, dtype=np.int32)
    labels[context.box] = labels_c
    params = {"detector": "cmbprep", "version": DETECTOR_VERSION["cmbprep"],
              "slice_axis": context.slice_axis, **jsonable(p),
              **jsonable(context.phase_info), **jsonable(scoring),
              "warnings": phase_warnings(context.phase_info)}
    if zone is not None:
        params["phase_artefact_zone_cm3"] = round(float(context.phase_zone_cm3), 3)
    return DetectionResult(table, labels, params)


def centres_in_zone(table, zone, box):
    """Whether each candidate's rounded centroid (``i j k``, SWI grid) lies in ``zone``
    (cropped to ``box``)."""
    start = np.array([b.start for b in box])
    ijk = table[["i", "j", "k"]].to_numpy(int) - start
    ijk = np.clip(ijk, 0, np.array(zone.shape) - 1)
    return zone[tuple(ijk.T)].astype(bool)


def phase_warnings(phase_info):
    """One-line warnings about the phase the detector was given but did not use."""
    if phase_info.get("phase_sign_conflict"):
        ref = {1: "left", -1: "right"}.get(phase_info.get("phase_sign_reference"), "n/a")
        own = {1: "left", -1: "right"}.get(phase_info.get("phase_sign"), "n/a")
        return [f"phase not used for detection: the SWI chain found the {ref}-handed "
                f"phase convention, the detector's vein calibration the {own}-handed one "
                "(correlation "
                f"{phase_info.get('phase_sign_calibration_correlation', float('nan')):.2f}); "
                "candidates were scored as for scanner SWI. Give --phase-handedness if "
                "the convention is known."]
    if "phase_sign" in phase_info and phase_info.get("phase_sign") == 0:
        return ["phase not used for detection: its sign convention could not be "
                "calibrated on this image's veins; candidates were scored as for scanner "
                "SWI. Give --phase-handedness if the convention is known."]
    return []


def detect_cmbprep(swi, brain_mask, affine, *, filtered_phase=None, magnitude=None,
                   parameters=None):
    """Default detector: 3D multi-scale blobs, segmentation, features, score.

    Runs :func:`find_candidates`, :func:`.analysis.analyse_candidates` and
    :func:`merge_and_score` in this process (the pipeline runs them as separate
    Nipype nodes, the analysis split over processes; the result is the same).

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
    magnitude : (X, Y, Z) ndarray or None, optional
        The bias-corrected magnitude the SWI was made from. Inside phase-mask artefact
        zones (:func:`.zones.phase_artefact_zones`: where the phase mask darkens a large
        region, typically at the skull base) the detector then looks at the magnitude
        instead of the SWI and scores the candidates centred there without their phase
        (the classifier's ``no_phase`` part); the table gets ``phase_artefact_zone`` and
        the parameters ``phase_artefact_zone_cm3``. None: the SWI everywhere.
    parameters : dict, optional
        Overrides of :data:`.parameters.CMBPREP_PARAMETERS`.

    Returns
    -------
    DetectionResult
    """
    context = find_candidates(swi, brain_mask, affine, filtered_phase=filtered_phase,
                              magnitude=magnitude, parameters=parameters)
    return merge_and_score(context, analyse_candidates(context),
                           images=(swi, magnitude, brain_mask))
