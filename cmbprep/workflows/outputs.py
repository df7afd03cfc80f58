"""Writing one participant unit's derivatives (graph assembly only).

The sinks write into the unit's staging folder; ``ds_commit`` moves the whole set into
the output dataset with its manifest (``docs/outputs.rst``, "Participant units").
"""

from __future__ import annotations

from functools import partial

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.bids import CommitUnit, DerivativesDataSink, PrepareStaging
from ..interfaces.reports import DetectionMosaic, SummarizeCMBs
from ..utils.derivatives import staging_dir, unit_prefix

#: Fields of the outputs workflow's inputnode (the union of the sub-workflow outputs).
OUTPUT_FIELDS = [
    "swi", "minip", "filtered_phase", "swi_meta",
    "brain_mask", "dseg", "dseg_tsv", "atlas_name", "template", "template_to_swi_xfm",
    "swi_to_template_xfm", "anat_meta",
    "candidates_tsv", "cmb_tsv", "cmb_dseg", "cmb_mask", "detection_meta",
    "candidates_sidecar", "cmb_sidecar",
]


def init_outputs_wf(*, output_dir: str, entities: dict, sources: list[str],
                    unit_info: dict, has_phase: bool, name: str = "outputs_wf"):
    """Write the derivatives, the summary and the figure of one participant unit.

    Parameters
    ----------
    output_dir : str
        Root of the derivatives dataset.
    entities : dict
        ``subject`` and, when present, ``session``, ``acquisition``, ``run``.
    sources : list of str
        BIDS URIs of the raw inputs (``bids:raw:...``), written as ``Sources``.
    unit_info : dict
        Input kind, echo times, field strength (for the summary).
    has_phase : bool
        Whether a filtered phase image exists to be written.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=OUTPUT_FIELDS), name="inputnode")
    sink = partial(_sink, entities=entities, sources=sources)
    _connect_swi(workflow, inputnode, sink, has_phase)
    _connect_anatomy(workflow, inputnode, sink)
    _connect_detections(workflow, inputnode, sink)
    _connect_summary(workflow, inputnode, sink, unit_info)
    _connect_commit(workflow, output_dir, entities)
    return workflow


def _sink(node_name, *, entities, sources, **kwargs):
    """A :class:`DerivativesDataSink` node (its ``base_directory``, the unit's staging
    folder, is connected by :func:`_connect_commit`)."""
    return pe.Node(DerivativesDataSink(entities=entities, source_files=sources, **kwargs),
                   name=node_name, run_without_submitting=True)


def _connect_commit(workflow, output_dir, entities):
    """Every sink writes into the unit's emptied staging folder; ``ds_commit`` moves the
    files into the output dataset as one set once all sinks are done, manifest last
    (:func:`cmbprep.utils.derivatives.commit_unit`). The run fills the commit node's
    ``settings`` and ``input_warnings``."""
    entities = {k: v for k, v in entities.items() if v is not None}
    staging = pe.Node(PrepareStaging(staging_dir=str(staging_dir(output_dir, entities))),
                      name="ds_staging", run_without_submitting=True)
    sinks = [workflow.get_node(name) for name in sorted(workflow.list_node_names())]
    sinks = [node for node in sinks if isinstance(node.interface, DerivativesDataSink)]
    collect = pe.Node(niu.Merge(len(sinks)), name="ds_written", run_without_submitting=True)
    commit = pe.Node(CommitUnit(output_dir=str(output_dir), entities=entities,
                                unit_name=unit_prefix(entities)),
                     name="ds_commit", run_without_submitting=True)
    for index, node in enumerate(sinks, start=1):
        workflow.connect([(staging, node, [("staging_dir", "base_directory")]),
                          (node, collect, [("out_file", f"in{index}")])])
    workflow.connect([(staging, commit, [("staging_dir", "staging_dir")]),
                      (collect, commit, [("out", "written")])])


def _connect_swi(workflow, inputnode, sink, has_phase):
    """The SWI, its minimum-intensity projection and the filtered phase."""
    ds_swi = sink("ds_swi", desc="preproc", suffix="swi")
    ds_minip = sink("ds_minip", desc="minip", suffix="swi")
    workflow.connect([
        (inputnode, ds_swi, [("swi", "in_file"), ("swi_meta", "meta_dict")]),
        (inputnode, ds_minip, [("minip", "in_file"), ("swi_meta", "meta_dict")]),
    ])
    if has_phase:
        ds_phase = sink("ds_phase", part="phase", desc="filtered", suffix="swi")
        workflow.connect([(inputnode, ds_phase, [("filtered_phase", "in_file"),
                                                 ("swi_meta", "meta_dict")])])


def _connect_anatomy(workflow, inputnode, sink):
    """Brain mask, region labels with their lookup table, and the template transforms."""
    ds_mask = sink("ds_brain_mask", desc="brain", suffix="mask",
                   meta_dict={"Type": "Brain"})
    ds_dseg = sink("ds_dseg", suffix="dseg")
    ds_dseg_tsv = sink("ds_dseg_tsv", suffix="dseg", write_sidecar=False)
    ds_fwd = sink("ds_template_to_swi", to="swi", mode="image", suffix="xfm")
    ds_inv = sink("ds_swi_to_template", from_="swi", mode="image", suffix="xfm")
    workflow.connect([
        (inputnode, ds_mask, [("brain_mask", "in_file")]),
        (inputnode, ds_dseg, [("dseg", "in_file"), ("atlas_name", "atlas"),
                              ("anat_meta", "meta_dict")]),
        (inputnode, ds_dseg_tsv, [("dseg_tsv", "in_file"), ("atlas_name", "atlas")]),
        (inputnode, ds_fwd, [("template_to_swi_xfm", "in_file"), ("template", "from_")]),
        (inputnode, ds_inv, [("swi_to_template_xfm", "in_file"), ("template", "to")]),
    ])


def _connect_detections(workflow, inputnode, sink):
    """Candidate and microbleed tables, the microbleed label image and mask."""
    ds_candidates = sink("ds_candidates", desc="candidates", suffix="cmb")
    ds_cmb = sink("ds_cmb", desc="cmb", suffix="cmb")
    ds_cmb_dseg = sink("ds_cmb_dseg", desc="cmb", suffix="dseg")
    ds_cmb_mask = sink("ds_cmb_mask", label="CMB", suffix="mask")
    workflow.connect([
        (inputnode, ds_candidates, [("candidates_tsv", "in_file"),
                                    ("candidates_sidecar", "sidecar"),
                                    ("detection_meta", "meta_dict")]),
        (inputnode, ds_cmb, [("cmb_tsv", "in_file"), ("cmb_sidecar", "sidecar"),
                             ("detection_meta", "meta_dict")]),
        (inputnode, ds_cmb_dseg, [("cmb_dseg", "in_file"), ("detection_meta", "meta_dict")]),
        (inputnode, ds_cmb_mask, [("cmb_mask", "in_file"), ("detection_meta", "meta_dict")]),
    ])


def _connect_summary(workflow, inputnode, sink, unit_info):
    """The ``_desc-summary_cmb.json`` and the detection mosaic figure."""
    summarize = pe.Node(SummarizeCMBs(unit=unit_info), name="summarize")
    ds_summary = sink("ds_summary", desc="summary", suffix="cmb")
    mosaic = pe.Node(DetectionMosaic(), name="mosaic")
    ds_mosaic = sink("ds_mosaic", desc="detections", suffix="mosaic", datatype="figures",
                     write_sidecar=False)
    workflow.connect([
        (inputnode, summarize, [("cmb_tsv", "cmb_tsv"), ("candidates_tsv", "candidates_tsv"),
                                ("swi", "swi"),
                                ("swi_meta", "swi_meta"), ("anat_meta", "anat_meta"),
                                ("detection_meta", "detection_meta")]),
        (summarize, ds_summary, [("out_file", "in_file")]),
        (inputnode, mosaic, [("minip", "minip"), ("cmb_tsv", "cmb_tsv"),
                             ("candidates_tsv", "candidates_tsv")]),
        (mosaic, ds_mosaic, [("out_file", "in_file")]),
    ])
