"""SWI sub-workflow: from the user's magnitude/phase (or scanner SWI) to the image that
microbleed detection runs on, its sliding-slab minimum-intensity projection, the
bias-corrected magnitude, the filtered phase and a head mask (all on the input grid)."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.swi import ComputeSWI, MinIP


def init_swi_wf(*, input_kind, echo_times, field_strength, phase_units, handedness,
                swi_power, highpass_mm, minip_slab_mm, omp_nthreads, name="swi_wf"):
    """Build the SWI workflow.

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
        Threads for FFTs and ANTs.
    name : str, optional

    Inputs
    ------
    magnitude : list of paths, one per echo
    phase : list of paths, one per echo, or empty list

    Outputs
    -------
    swi, minip, magnitude, filtered_phase ("n/a" without phase), head_mask, swi_meta
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["magnitude", "phase"]),
                        name="inputnode")
    inputnode.inputs.phase = []
    outputnode = pe.Node(niu.IdentityInterface(
        fields=["swi", "minip", "magnitude", "filtered_phase", "head_mask", "swi_meta"]),
        name="outputnode")

    compute = pe.Node(ComputeSWI(
        input_kind=input_kind,
        echo_times=[float(t) for t in echo_times] if echo_times else None,
        phase_units=phase_units, handedness=handedness, swi_power=int(swi_power),
        highpass_mm=float(highpass_mm), omp_nthreads=int(omp_nthreads)),
        name="compute_swi", n_procs=int(omp_nthreads), mem_gb=3.0)
    minip = pe.Node(MinIP(slab_mm=float(minip_slab_mm)), name="minip")
    add_meta = pe.Node(niu.Function(function=_add_field_strength,
                                    input_names=["meta", "field_strength"],
                                    output_names=["meta"]), name="add_meta")
    add_meta.inputs.field_strength = field_strength

    workflow.connect([
        (inputnode, compute, [("magnitude", "magnitude"), ("phase", "phase")]),
        (compute, minip, [("swi", "in_file"), ("swi_meta", "in_meta")]),
        (minip, add_meta, [("out_meta", "meta")]),
        (compute, outputnode, [("swi", "swi"), ("magnitude", "magnitude"),
                               ("filtered_phase", "filtered_phase"),
                               ("head_mask", "head_mask")]),
        (minip, outputnode, [("out_file", "minip")]),
        (add_meta, outputnode, [("meta", "swi_meta")]),
    ])
    return workflow


def _add_field_strength(meta, field_strength):
    meta = dict(meta)
    meta["MagneticFieldStrength"] = (float(field_strength) if field_strength is not None
                                     else "n/a")
    return meta
