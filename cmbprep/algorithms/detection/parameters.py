"""Names, versions and default parameters of the microbleed detectors, and the code id
that makes Nipype re-run detection when the detector or its model changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .classifier import DEFAULT_MODEL_PATH

__all__ = ["BIAN2013_PARAMETERS", "CMBPREP_PARAMETERS", "DETECTORS", "DETECTOR_VERSION",
           "detector_code_id"]

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
    "vessel_intensity": 0.5,  # relative intensity below which voxels may be vessel
    "vessel_min_elongation": 5.0,  # dark components this elongated are vessels
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
