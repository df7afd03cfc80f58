"""Cerebral microbleed detectors and their output tables.

Two detectors are available by name (:data:`DETECTORS`):

``"bian2013"`` (:mod:`.bian2013`)
    The semi-automated reference method used by the ITP study (Bian et al. 2013,
    NeuroImage: Clinical 2:282; Morrison et al. 2018, NeuroImage: Clinical 20:498):
    2D fast radial symmetry transform on the minimum-intensity projection, 3D region
    growing, geometric rules. Its candidates are meant for a rater.
``"cmbprep"`` (default, :mod:`.cmbprep_detector`)
    3D multi-scale Laplacian-of-Gaussian candidates on the SWI, half-depth segmentation
    of each candidate, shape/contrast/context/phase features and a learned score (boosted
    trees on the features; a model file may stack them with a small network on each
    candidate's patches).

Both return a :class:`DetectionResult` holding the candidate table (one row per
candidate, features, ``score`` and ``status`` in ``cmb``/``review``/``rejected``) and a
label image of the candidates. See ``docs/detection.rst``.

Modules: :mod:`.parameters` (names, versions, default parameters, code id),
:mod:`.result` (shared input checks and result type), :mod:`.frst`,
:mod:`.candidates` (seeds), :mod:`.segmentation`, :mod:`.features`, :mod:`.phase`,
:mod:`.analysis` (the default detector's per-seed analysis),
:mod:`.classifier` (tree-ensemble evaluation), :mod:`.patches` (each candidate's
neighbourhood on a lattice in mm), :mod:`.network` (the patch network, in numpy),
:mod:`.scoring` (scores, thresholds,
status), :mod:`.regions` (atlas regions, template coordinates), :mod:`.tables`
(CMB table, label image, sidecars, writers), :mod:`.outputs` (a result to the pipeline's
files).
"""

from __future__ import annotations

from .analysis import analyse_candidates
from .bian2013 import detect_bian2013
from .cmbprep_detector import CandidateContext, detect_cmbprep, find_candidates, merge_and_score
from .outputs import DetectionOutputs, detection_outputs, write_detection_tables
from .parameters import (
    BIAN2013_PARAMETERS,
    CMBPREP_PARAMETERS,
    DETECTOR_VERSION,
    DETECTORS,
    PHASE_SIGN_OF_HANDEDNESS,
    detector_code_id,
)
from .regions import assign_regions, template_coordinates
from .result import DetectionResult
from .scoring import assign_status, score_candidates
from .tables import (
    CMB_COLUMNS,
    cmb_label_image,
    cmb_table,
    column_descriptions,
)
from .zones import phase_artefact_zones, zone_detection_image

__all__ = [
    "BIAN2013_PARAMETERS",
    "CMBPREP_PARAMETERS",
    "CMB_COLUMNS",
    "CandidateContext",
    "DETECTORS",
    "DETECTOR_VERSION",
    "DetectionOutputs",
    "DetectionResult",
    "PHASE_SIGN_OF_HANDEDNESS",
    "analyse_candidates",
    "assign_regions",
    "assign_status",
    "cmb_label_image",
    "cmb_table",
    "column_descriptions",
    "detect_bian2013",
    "detect_cmbprep",
    "detect_microbleeds",
    "detection_outputs",
    "detector_code_id",
    "find_candidates",
    "merge_and_score",
    "phase_artefact_zones",
    "score_candidates",
    "template_coordinates",
    "write_detection_tables",
    "zone_detection_image",
]


def detect_microbleeds(detector, swi, brain_mask, affine, *, minip=None, filtered_phase=None,
                       magnitude=None, parameters=None):
    """Run a detector by name (see :data:`DETECTORS`) in this process.

    ``minip`` is needed by ``bian2013``, ``filtered_phase`` and ``magnitude`` (the
    bias-corrected magnitude, for the phase-mask artefact zones and ``magnitude_contrast``)
    are used by ``cmbprep``.
    """
    if detector == "cmbprep":
        return detect_cmbprep(swi, brain_mask, affine, filtered_phase=filtered_phase,
                              magnitude=magnitude, parameters=parameters)
    if detector == "bian2013":
        if minip is None:
            raise ValueError("the bian2013 detector needs the minimum-intensity projection")
        return detect_bian2013(swi, minip, brain_mask, affine, parameters=parameters)
    raise ValueError(f"unknown detector {detector!r}; choose one of {DETECTORS}")
