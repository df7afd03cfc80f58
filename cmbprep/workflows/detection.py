"""Microbleed detection sub-workflow (graph assembly only)."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..algorithms.detection import DETECTORS, PHASE_SIGN_OF_HANDEDNESS, detector_code_id
from ..interfaces.detection import (
    AnalyseCandidates,
    DetectMicrobleeds,
    FindCandidates,
    ScoreCandidates,
)

INPUT_FIELDS = ["swi", "minip", "filtered_phase", "swi_handedness", "magnitude",
                "brain_mask", "dseg", "dseg_tsv", "template_to_swi_xfm"]
OUTPUT_FIELDS = ["candidates_tsv", "cmb_tsv", "cmb_dseg", "cmb_mask", "detection_meta",
                 "candidates_sidecar", "cmb_sidecar"]



def init_detection_wf(*, detector, seed, omp_nthreads, model=None, handedness="auto",
                      name="detection_wf"):
    """Detect cerebral microbleeds on the SWI.

    ``bian2013`` runs as one node (``detect``). The default ``cmbprep`` detector runs as
    ``find_candidates`` -> ``analyse_candidates`` (a MapNode over ``omp_nthreads``
    interleaved chunks of the candidates, each chunk its own process under MultiProc)
    -> ``detect`` (merge, score, tables); the result equals a single-process run.

    Parameters
    ----------
    detector : {"cmbprep", "bian2013"}
        Detector name (see :mod:`cmbprep.algorithms.detection`).
    seed : int
        Random seed (recorded in ``detection_meta``; both detectors are deterministic).
    omp_nthreads : int
        Chunks of the candidate analysis, and threads of the ``detect`` node (ANTs
        point mapping to the template).
    model : path, optional
        Classifier JSON of the ``cmbprep`` detector (default: the packaged model); its
        SHA-256 prefix is part of every detection node's ``code_id``.
    handedness : {"auto", "left", "right"}, optional
        The phase convention when the user fixed it: the ``cmbprep`` detector then takes
        its phase sign from it instead of calibrating it on the image's veins.
    name : str, optional

    Inputs
    ------
    swi, minip, filtered_phase (path or ``"n/a"``), swi_handedness (the SWI chain's
    detected ``"left"``/``"right"`` or ``"n/a"``: the ``cmbprep`` detector's cross-check
    of its own phase-sign calibration), magnitude (the SWI chain's bias-corrected
    magnitude or ``"n/a"``: the ``cmbprep`` detector looks at it inside phase-mask
    artefact zones), brain_mask, dseg, dseg_tsv, template_to_swi_xfm

    Outputs
    -------
    candidates_tsv, cmb_tsv, cmb_dseg, cmb_mask, detection_meta (dict), plus
    candidates_sidecar and cmb_sidecar (JSON column descriptions).
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {DETECTORS}")
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=INPUT_FIELDS), name="inputnode")
    inputnode.inputs.filtered_phase = "n/a"
    inputnode.inputs.swi_handedness = "n/a"
    inputnode.inputs.magnitude = "n/a"
    outputnode = pe.Node(niu.IdentityInterface(fields=OUTPUT_FIELDS), name="outputnode")
    code_id = detector_code_id(detector, model)
    if detector == "bian2013":
        detect = pe.Node(
            DetectMicrobleeds(detector=detector, seed=int(seed),
                              num_threads=int(omp_nthreads), code_id=code_id),
            name="detect", n_procs=int(omp_nthreads),
        )
        workflow.connect([
            (inputnode, detect, [(f, f) for f in INPUT_FIELDS
                                 if f not in ("swi_handedness", "magnitude")]),
            (detect, outputnode, [(f, f) for f in OUTPUT_FIELDS]),
        ])
        return workflow

    n_chunks = max(1, int(omp_nthreads))
    find = pe.Node(FindCandidates(code_id=code_id), name="find_candidates")
    parameters = {}
    if model:
        parameters["model"] = str(model)
    if handedness in PHASE_SIGN_OF_HANDEDNESS:
        parameters["phase_sign"] = PHASE_SIGN_OF_HANDEDNESS[handedness]
    if parameters:
        find.inputs.parameters = parameters
    analyse = pe.MapNode(AnalyseCandidates(n_chunks=n_chunks, code_id=code_id),
                         iterfield=["chunk"], name="analyse_candidates")
    analyse.inputs.chunk = list(range(n_chunks))
    detect = pe.Node(
        ScoreCandidates(seed=int(seed), num_threads=int(omp_nthreads), code_id=code_id),
        name="detect", n_procs=int(omp_nthreads),
    )
    workflow.connect([
        (inputnode, find, [("swi", "swi"), ("filtered_phase", "filtered_phase"),
                           ("swi_handedness", "swi_handedness"),
                           ("magnitude", "magnitude"), ("brain_mask", "brain_mask")]),
        (find, analyse, [("context", "context")]),
        (find, detect, [("context", "context")]),
        (analyse, detect, [("analysed", "analysed")]),
        (inputnode, detect, [("swi", "swi"), ("dseg", "dseg"), ("dseg_tsv", "dseg_tsv"),
                             ("template_to_swi_xfm", "template_to_swi_xfm"),
                             ("magnitude", "magnitude"), ("brain_mask", "brain_mask")]),
        (detect, outputnode, [(f, f) for f in OUTPUT_FIELDS]),
    ])
    return workflow
