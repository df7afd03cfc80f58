"""Anatomical sub-workflow: brain mask, template registration and region labels in SWI
space (see ``docs/anatomy.rst``)."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.anatomical import AnatomicalLabels, RegisterTemplate

#: Fields of the workflow's ``outputnode``.
OUTPUT_FIELDS = [
    "brain_mask",
    "dseg",
    "dseg_tsv",
    "atlas_name",
    "template",
    "template_to_swi_xfm",
    "swi_to_template_xfm",
    "anat_meta",
]


def init_anat_wf(*, has_t1w, omp_nthreads, seed, registration_resolution_mm, name="anat_wf"):
    """Build the anatomical workflow.

    Parameters
    ----------
    has_t1w : bool
        A T1w image is given on ``inputnode.t1w``: it is rigidly aligned to the SWI
        magnitude and used for the template registration (better contrast match).
    omp_nthreads : int
        ITK/ANTs threads for resampling and labelling; registration itself always runs
        on one thread (for reproducibility).
    seed : int
        ANTs random seed (same inputs + seed -> same transforms and labels).
    registration_resolution_mm : float
        Isotropic working resolution of the registration, mm (2 mm recommended).
    name : str, optional

    Inputs
    ------
    magnitude : bias-corrected magnitude in SWI space
    head_mask : head mask on the same grid
    t1w : T1w path, or ``"n/a"``

    Outputs
    -------
    brain_mask, dseg, dseg_tsv, atlas_name, template, template_to_swi_xfm,
    swi_to_template_xfm, anat_meta
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["magnitude", "head_mask", "t1w"]), name="inputnode"
    )
    inputnode.inputs.t1w = "n/a"
    outputnode = pe.Node(niu.IdentityInterface(fields=OUTPUT_FIELDS), name="outputnode")
    # ANTs' Mattes mutual information samples differently with more than one thread:
    # results then differ from run to run (up to 0.3 mm). Registration therefore always
    # runs on one ITK thread, so that the same inputs and seed give the same outputs;
    # participants still run in parallel (--nprocs).
    register = pe.Node(
        RegisterTemplate(
            resolution_mm=float(registration_resolution_mm),
            seed=int(seed),
            n_threads=1,
        ),
        name="register_template",
        n_procs=1,
    )
    labels = pe.Node(
        AnatomicalLabels(n_threads=int(omp_nthreads)),
        name="anatomical_labels",
        n_procs=int(omp_nthreads),
    )
    connections = [
        (inputnode, register, [("magnitude", "magnitude"), ("head_mask", "head_mask")]),
        (inputnode, labels, [("magnitude", "magnitude"), ("head_mask", "head_mask")]),
        (register, labels, [
            ("template_to_swi_xfm", "template_to_swi_xfm"),
            ("swi_to_template_xfm", "swi_to_template_xfm"),
            ("registration_qc", "registration_qc"),
        ]),
        (register, outputnode, [
            ("template_to_swi_xfm", "template_to_swi_xfm"),
            ("swi_to_template_xfm", "swi_to_template_xfm"),
        ]),
        (labels, outputnode, [
            ("brain_mask", "brain_mask"),
            ("dseg", "dseg"),
            ("dseg_tsv", "dseg_tsv"),
            ("atlas_name", "atlas_name"),
            ("template", "template"),
            ("anat_meta", "anat_meta"),
        ]),
    ]  # fmt: skip
    if has_t1w:
        connections.append((inputnode, register, [("t1w", "t1w")]))
    workflow.connect(connections)
    return workflow
