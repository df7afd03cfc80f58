"""SWI sub-workflow: from the user's magnitude/phase (or scanner SWI) to the image that
microbleed detection runs on, its sliding-slab minimum-intensity projection, the
bias-corrected magnitude, the filtered phase and a head mask (all on the input grid);
and the node that confirms the phase convention once the brain mask exists."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..algorithms.swi import source_fingerprint
from ..interfaces.swi import (
    ComputeSWI,
    ConfirmHandedness,
    FilterPhase,
    MinIP,
    N4BiasField,
    PrepareMagnitude,
)


def init_swi_wf(*, input_kind, echo_times, field_strength, phase_units, handedness,
                swi_power, highpass_mm, minip_slab_mm, omp_nthreads,
                megre_echoes="longest", name="swi_wf"):
    """Build the SWI workflow.

    Graph: ``prepare_magnitude`` (input checks, combined magnitude, head mask) ->
    ``n4_bias_field`` and ``filter_phase`` (in parallel) -> ``compute_swi`` -> ``minip``.
    Without phase ``filter_phase`` passes ``"n/a"`` on.

    Parameters
    ----------
    input_kind : {"gre", "megre", "swi", "magnitude"}
        Single-echo magnitude+phase, multi-echo magnitude (optional phase), scanner SWI,
        or magnitude only.
    echo_times : list of float or None
        Echo times in seconds (None when unknown; required for multi-echo phase).
    field_strength : float or None
        Tesla; recorded in ``swi_meta`` (the processing does not depend on it).
    phase_units : {"rad", "arbitrary"} or None
        Sidecar ``Units`` of the phase; None infers the scaling from the values.
    handedness : {"auto", "right", "left"}
        Phase sign convention (see :mod:`cmbprep.algorithms.swi`).
    swi_power : int
        Exponent of the negative phase mask.
    highpass_mm : float
        Gaussian FWHM in mm of the homodyne high-pass filter.
    minip_slab_mm : float
        Slab thickness in mm of the minimum-intensity projection.
    omp_nthreads : int
        Threads for FFTs (``filter_phase``) and ANTs (``n4_bias_field``).
    megre_echoes : {"longest", "fit"}, optional
        Multi-echo GRE with phase: the longest echo alone, or the RSS magnitude and the
        frequency fit over all echoes (:data:`cmbprep.algorithms.swi.MEGRE_ECHOES`).
    name : str, optional

    Inputs
    ------
    magnitude : list of paths, one per echo
    phase : list of paths, one per echo, or empty list

    Outputs
    -------
    swi, minip, magnitude, filtered_phase ("n/a" without phase), handedness (the phase
    convention used: detected or fixed, ``"n/a"`` without phase), head_mask, swi_meta
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["magnitude", "phase"]),
                        name="inputnode")
    inputnode.inputs.phase = []
    outputnode = pe.Node(niu.IdentityInterface(
        fields=["swi", "minip", "magnitude", "filtered_phase", "handedness", "head_mask",
                "swi_meta"]),
        name="outputnode")
    prepare, n4, phase, compute = _chain_nodes(
        input_kind=input_kind, echo_times=echo_times, phase_units=phase_units,
        handedness=handedness, swi_power=swi_power, highpass_mm=highpass_mm,
        megre_echoes=megre_echoes, omp_nthreads=int(omp_nthreads))
    minip = pe.Node(MinIP(slab_mm=float(minip_slab_mm)), name="minip")
    add_meta = pe.Node(niu.Function(function=_add_field_strength,
                                    input_names=["meta", "field_strength"],
                                    output_names=["meta"]), name="add_meta")
    add_meta.inputs.field_strength = field_strength

    workflow.connect([
        (inputnode, prepare, [("magnitude", "magnitude"), ("phase", "phase")]),
        (prepare, n4, [("magnitude", "in_file"), ("head_mask", "head_mask"),
                       ("reference", "reference")]),
        (inputnode, phase, [("magnitude", "magnitude"), ("phase", "phase")]),
        (prepare, phase, [("magnitude", "combined_magnitude"), ("head_mask", "head_mask"),
                          ("swi_meta", "in_meta")]),
        (prepare, compute, [("magnitude", "magnitude"), ("warnings", "warnings"),
                            ("sources", "sources"), ("reference", "reference")]),
        (phase, compute, [("filtered_phase", "filtered_phase"),
                          ("handedness", "handedness"), ("out_meta", "in_meta")]),
        (n4, compute, [("bias_field", "bias_field"), ("bias_meta", "bias_meta")]),
        (compute, minip, [("swi", "in_file"), ("swi_meta", "in_meta")]),
        (minip, add_meta, [("out_meta", "meta")]),
        (compute, outputnode, [("swi", "swi"), ("magnitude", "magnitude")]),
        (phase, outputnode, [("filtered_phase", "filtered_phase"),
                             ("handedness", "handedness")]),
        (prepare, outputnode, [("head_mask", "head_mask")]),
        (minip, outputnode, [("out_file", "minip")]),
        (add_meta, outputnode, [("meta", "swi_meta")]),
    ])
    return workflow


def init_confirm_handedness_node(*, handedness, swi_power, highpass_mm, minip_slab_mm,
                                 omp_nthreads=1, name="confirm_handedness"):
    """Step 5 of the SWI chain, for after brain extraction: the phase convention decided
    again inside the brain mask, and the SWI and minIP made again where it changes
    (:class:`~cmbprep.interfaces.swi.ConfirmHandedness`).

    Inputs: swi, minip, magnitude, filtered_phase, handedness, swi_meta (the SWI
    workflow's outputs) and brain_mask. Outputs: swi, minip, handedness, swi_meta.
    """
    return pe.Node(ConfirmHandedness(requested=handedness, swi_power=int(swi_power),
                                     highpass_mm=float(highpass_mm),
                                     slab_mm=float(minip_slab_mm),
                                     omp_nthreads=int(omp_nthreads),
                                     code_id=f"swi sha256:{source_fingerprint()}"),
                   name=name, mem_gb=1.0)


def _chain_nodes(*, input_kind, echo_times, phase_units, handedness, swi_power,
                 highpass_mm, megre_echoes, omp_nthreads):
    """The nodes of the SWI chain: prepare_magnitude, n4_bias_field, filter_phase,
    compute_swi."""
    inputs = {"input_kind": input_kind,
              "echo_times": [float(t) for t in echo_times] if echo_times else None,
              "phase_units": phase_units, "megre_echoes": megre_echoes,
              "code_id": f"swi sha256:{source_fingerprint()}"}
    # N4 (ITK threads) and the phase processing (FFT workers; mostly single-threaded
    # numpy) run side by side: each claims half of the omp_nthreads cores
    branch_procs = max(1, omp_nthreads // 2)
    prepare = pe.Node(PrepareMagnitude(**inputs), name="prepare_magnitude", mem_gb=1.5)
    n4 = pe.Node(N4BiasField(omp_nthreads=omp_nthreads), name="n4_bias_field",
                 n_procs=branch_procs, mem_gb=1.0)
    phase = pe.Node(FilterPhase(handedness=handedness, highpass_mm=float(highpass_mm),
                                omp_nthreads=omp_nthreads, **inputs),
                    name="filter_phase", n_procs=branch_procs, mem_gb=3.0)
    compute = pe.Node(ComputeSWI(swi_power=int(swi_power)), name="compute_swi",
                      mem_gb=1.0)
    return prepare, n4, phase, compute


def _add_field_strength(meta, field_strength):
    meta = dict(meta)
    meta["MagneticFieldStrength"] = (float(field_strength) if field_strength is not None
                                     else "n/a")
    return meta
