"""Names, versions and default parameters of the microbleed detectors, and the code id
that makes Nipype re-run detection when the detector or its model changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .classifier import DEFAULT_MODEL_PATH

__all__ = ["BIAN2013_PARAMETERS", "CMBPREP_PARAMETERS", "DETECTORS", "DETECTOR_VERSION",
           "detector_code_id"]

DETECTORS = ("cmbprep", "bian2013")
DETECTOR_VERSION = {"cmbprep": "0.8.2", "bian2013": "0.2.0"}

#: Parameters of the reference method (Bian et al. 2013; CMB_labeler's ``cmb_threshold``
#: file, Morrison et al. 2018). Published values are for images rescaled to 0-255 with
#: 0.5 mm pixels (``reference_pixel_mm``): lengths in px are converted to mm with that
#: pixel size, areas in px^2 with its square; see ``docs/detection.rst``.
BIAN2013_PARAMETERS = {
    "reference_pixel_mm": 0.5,
    "tissue_level": 200.0,  # brain median of the SWI -> 200 (SWI and mIP, one factor)
    "minip_slab_mm": 8.0,  # slab of the input mIP (seed -> darkest voxel of its slab)
    "frst_radii_mm": (1.0, 1.5, 2.0, 3.0),  # published 3 px = 1.5 mm, plus 1-3 mm
    "frst_alpha": 3.0,
    "frst_combine": "max",  # radii combined by the pixel-wise maximum
    "frst_percentile": 90.0,  # FRST map kept above its 90th percentile (brain) ...
    "reference_diameter_mm": 2.0,  # ... and above the response of a 2 mm disc (STRIVE
    "reference_fraction": 1.0,  # minimum) 50 units below tissue (maxIntensity 150)
    "vessel_min_area_mm2": 6.25,  # minVesArea 25 px^2
    "max_seed_intensity": 150.0,  # maxIntensity
    "growing_upper": 170.0,  # upperTH
    "growing_max_difference": 60.0,  # maxIntensityDiff (brighter than the seed)
    "growing_max_distance_mm": 5.0,  # maxDist 5 px = 2.5 mm, see docs (10 mm lesions)
    "max_slice_area_mm2": 78.5,  # a 10 mm disc (maxArea 10 read as mm^2 is 3.6 mm)
    "min_circularity": 0.73,  # minCircularity
    "max_centroid_shift_mm": 0.25,  # maxCentroidShift 0.5 px
    "centroid_shift_pixels": 0.5,  # ... or 0.5 of the scan's own pixel if larger
    "max_travel_radii": 1.0,  # shift beyond the lesion's radius: oblique vessel
    "max_through_plane_ratio": 3.0,  # n_slices rule (SWI stretches lesions along B0)
    "segmentation_patch_mm": 5.0,  # local-threshold segmentation (volume)
    "segmentation_depth_fraction": 0.5,
    "min_contrast_to_noise": 5.0,  # denoising: depth in noise standard deviations
    "min_volume_mm3": 2.1,  # denoising: half a 2 mm sphere (and >= 2 voxels)
}

#: Detector phase sign of a phase convention ("handedness"): "left" means phase =
#: +gamma dB TE (a paramagnetic source has positive phase along B0), "right" the opposite.
#: Used for a convention fixed by the user (``--phase-handedness``) and for the SWI
#: chain's detected one (``phase_sign_reference``).
PHASE_SIGN_OF_HANDEDNESS = {"left": 1, "right": -1}

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
    # microbleeds are at most 10 mm (MARS, STRIVE): a larger region is never accepted
    # automatically, whatever its score; it is left for review
    "max_accept_diameter_mm": 10.0,
    "min_contrast": 0.55,
    "max_elongation_perp_b0": 2.0,  # across B0 (blooming stretches CMBs along B0)
    "max_b0_aspect": 3.0,
    "deeper_fractions": (0.7, 0.85),  # re-segment deeper if the region leaves the patch
    "shallow_fraction": 0.25,  # depth fraction of the vessel-continuity check
    "max_attached_depth_ratio": 0.85,  # attached structure as dark as the lesion: vessel
    "opening_fraction": 0.5,  # opening radius = fraction x estimated lesion radius
    "opening_radius_mm": (0.6, 2.0),  # clip range of the opening radius
    # "tubular" criterion of the rules score and of every candidate's reason (the
    # classifier does not use it)
    "min_hessian_ratio": -1.0,
    "max_surrounding_dark_fraction": 0.12,
    "min_distance_to_edge_mm": 3.0,
    "dipole_shell_mm": 3.0,
    "min_paramagnetic_evidence": 0.05,  # with phase: required dipole evidence
    "scorer": "classifier",  # "classifier" (learned, packaged model) or "rules"
    "model": None,  # path of a classifier JSON; None: the packaged model
    "accept_score": None,  # None: the model's validated threshold (rules: 0.5)
    "review_score": None,  # None: the model's review threshold (rules: 0.2)
    "phase_sign": "auto",  # +1, -1 or "auto" (calibrated on veins)
    # With "auto": the sign implied by the SWI chain's own handedness detection (+1
    # "left", -1 "right"), or None. When both are known and disagree, the phase is not
    # used (the no-phase classifier scores the scan) and the conflict is reported.
    "phase_sign_reference": None,
    "vessel_intensity": 0.5,  # relative intensity below which voxels may be vessel
    "vessel_min_elongation": 5.0,  # dark components this elongated are vessels
    # Phase-mask artefact zones (used only when the bias-corrected magnitude is given;
    # see .zones): smoothing (mm) and level of the SWI/magnitude ratio, smallest zone
    # (cm^3), width of the magnitude/SWI blend at the zone edge (mm)
    "phase_zone_sigma_mm": 3.0,
    "phase_zone_level": 0.5,
    "phase_zone_min_cm3": 1.0,
    "phase_zone_edge_mm": 2.0,
    # magnitude_contrast (with the magnitude): smoothing (mm) of the relative magnitude
    "magnitude_smoothing_mm": 0.5,
}


def detector_code_id(detector, model=None):
    """Detector name, version and (``cmbprep``) SHA-256 prefix of the classifier model
    (``model``: a path; default the packaged model)."""
    code = f"{detector} {DETECTOR_VERSION[detector]}"
    if detector == "cmbprep":
        path = Path(model) if model else DEFAULT_MODEL_PATH
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        code += f" model sha256:{digest}"
    return code
