"""The top-level graphs: the run (:func:`init_cmbprep_wf`) and one participant unit
(:func:`init_single_subject_wf`)."""

from __future__ import annotations

import re
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.conform import ConformInputs
from ..utils.derivatives import bids_uri
from .anatomical import init_anat_wf
from .detection import init_detection_wf
from .outputs import init_outputs_wf
from .swi import init_confirm_handedness_node, init_swi_wf


def _node_name(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]", "_", text)


def init_cmbprep_wf(settings, units):
    """The whole participant-level graph: one sub-workflow per participant unit.

    Parameters
    ----------
    settings : cmbprep.config.Settings
    units : list of cmbprep.utils.bids.SWIInput
    """
    workflow = pe.Workflow(name=f"cmbprep_{settings.version.replace('.', '_')}_wf")
    workflow.base_dir = str(settings.work_dir)
    for unit in units:
        workflow.add_nodes([init_single_subject_wf(unit, settings)])
    return workflow


def init_single_subject_wf(unit, settings, name: str | None = None):
    """Process one participant unit (participant, session, acquisition, run).

    Graph: conform inputs -> SWI preparation (phase processing, bias correction,
    minimum-intensity projection) -> anatomy (brain extraction, template registration,
    atlas labels) -> the phase convention confirmed inside the brain (the SWI made again
    if it changes) -> microbleed detection -> derivatives and report figures.
    """
    name = name or f"single_subject_{_node_name(unit.name[len('sub-'):])}_wf"
    workflow = pe.Workflow(name=name)
    omp = settings.resolved_omp_nthreads()

    inputnode = pe.Node(niu.IdentityInterface(fields=["magnitude", "phase"]),
                        name="inputnode")
    inputnode.inputs.magnitude = list(unit.magnitude)
    inputnode.inputs.phase = list(unit.phase)
    conform = pe.Node(ConformInputs(), name="conform")

    swi_wf = init_swi_wf(
        input_kind=unit.kind, echo_times=unit.echo_times,
        field_strength=unit.field_strength, phase_units=unit.phase_units,
        handedness=settings.handedness, swi_power=settings.swi_power,
        highpass_mm=settings.highpass_mm, minip_slab_mm=settings.minip_slab_mm,
        megre_echoes=settings.megre_echoes, omp_nthreads=omp)
    # the phase convention checked again inside the brain mask (SWI chain, step 5)
    confirm = init_confirm_handedness_node(
        handedness=settings.handedness, swi_power=settings.swi_power,
        highpass_mm=settings.highpass_mm, minip_slab_mm=settings.minip_slab_mm,
        omp_nthreads=omp)
    anat_wf = init_anat_wf(
        has_t1w=unit.t1w is not None, omp_nthreads=omp, seed=settings.random_seed,
        registration_resolution_mm=settings.registration_resolution_mm)
    anat_wf.get_node("inputnode").inputs.t1w = str(Path(unit.t1w)) if unit.t1w else "n/a"
    detection_wf = init_detection_wf(detector=settings.detector, seed=settings.random_seed,
                                     omp_nthreads=omp, model=settings.detector_model,
                                     handedness=settings.handedness)

    sources = [bids_uri(p, settings.bids_dir) for p in
               list(unit.magnitude) + list(unit.phase)]
    unit_info = {"subject": unit.subject, "entities": dict(unit.entities),
                 "kind": unit.kind, "sources": sources, "echo_times": unit.echo_times,
                 "field_strength": unit.field_strength}
    outputs_wf = init_outputs_wf(
        output_dir=str(settings.output_dir),
        entities={"subject": unit.subject, **unit.entities},
        sources=sources, unit_info=unit_info, has_phase=bool(unit.phase))

    workflow.connect([
        (inputnode, conform, [("magnitude", "magnitude"), ("phase", "phase")]),
        (conform, swi_wf, [("magnitude", "inputnode.magnitude"),
                           ("phase", "inputnode.phase")]),
        (swi_wf, anat_wf, [("outputnode.magnitude", "inputnode.magnitude"),
                           ("outputnode.head_mask", "inputnode.head_mask")]),
        (swi_wf, confirm, [("outputnode.swi", "swi"), ("outputnode.minip", "minip"),
                           ("outputnode.magnitude", "magnitude"),
                           ("outputnode.filtered_phase", "filtered_phase"),
                           ("outputnode.handedness", "handedness"),
                           ("outputnode.swi_meta", "swi_meta")]),
        (anat_wf, confirm, [("outputnode.brain_mask", "brain_mask")]),
        (confirm, detection_wf, [("swi", "inputnode.swi"), ("minip", "inputnode.minip"),
                                 ("handedness", "inputnode.swi_handedness")]),
        (swi_wf, detection_wf, [("outputnode.filtered_phase", "inputnode.filtered_phase"),
                                ("outputnode.magnitude", "inputnode.magnitude")]),
        (anat_wf, detection_wf, [
            ("outputnode.brain_mask", "inputnode.brain_mask"),
            ("outputnode.dseg", "inputnode.dseg"),
            ("outputnode.dseg_tsv", "inputnode.dseg_tsv"),
            ("outputnode.template_to_swi_xfm", "inputnode.template_to_swi_xfm")]),
        (confirm, outputs_wf, [("swi", "inputnode.swi"), ("minip", "inputnode.minip"),
                               ("swi_meta", "inputnode.swi_meta")]),
        (swi_wf, outputs_wf, [("outputnode.filtered_phase", "inputnode.filtered_phase")]),
        (anat_wf, outputs_wf, [
            ("outputnode.brain_mask", "inputnode.brain_mask"),
            ("outputnode.dseg", "inputnode.dseg"),
            ("outputnode.dseg_tsv", "inputnode.dseg_tsv"),
            ("outputnode.atlas_name", "inputnode.atlas_name"),
            ("outputnode.template", "inputnode.template"),
            ("outputnode.template_to_swi_xfm", "inputnode.template_to_swi_xfm"),
            ("outputnode.swi_to_template_xfm", "inputnode.swi_to_template_xfm"),
            ("outputnode.anat_meta", "inputnode.anat_meta")]),
        (detection_wf, outputs_wf, [
            ("outputnode.candidates_tsv", "inputnode.candidates_tsv"),
            ("outputnode.cmb_tsv", "inputnode.cmb_tsv"),
            ("outputnode.cmb_dseg", "inputnode.cmb_dseg"),
            ("outputnode.cmb_mask", "inputnode.cmb_mask"),
            ("outputnode.detection_meta", "inputnode.detection_meta"),
            ("outputnode.candidates_sidecar", "inputnode.candidates_sidecar"),
            ("outputnode.cmb_sidecar", "inputnode.cmb_sidecar")]),
    ])
    return workflow
