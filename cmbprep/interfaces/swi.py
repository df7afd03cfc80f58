"""Nipype interfaces for SWI processing (thin wrappers of :mod:`cmbprep.algorithms.swi`
and :mod:`cmbprep.algorithms.mip`). Outputs are written to the node's working directory
and keep the input grid (affine, shape)."""

from __future__ import annotations

import logging
import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

LOGGER = logging.getLogger("nipype.interface")


def _save_like(data, reference, path, dtype=np.float32):
    """Save ``data`` on the grid of the NIfTI ``reference`` (affine and codes)."""
    ref = nib.load(reference)
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), ref.affine)
    qform, qcode = ref.get_qform(coded=True)
    sform, scode = ref.get_sform(coded=True)
    img.set_qform(qform if qform is not None else ref.affine, int(qcode) or 1)
    img.set_sform(sform if sform is not None else ref.affine, int(scode) or 1)
    img.header.set_xyzt_units(*ref.header.get_xyzt_units())
    img.header.set_data_dtype(dtype)
    img.to_filename(path)
    return str(path)


class _ComputeSWIInputSpec(BaseInterfaceInputSpec):
    magnitude = InputMultiObject(File(exists=True), mandatory=True,
                                 desc="magnitude NIfTI, one per echo (or one 4D file)")
    phase = InputMultiObject(File(exists=True), value=[], usedefault=True,
                             desc="phase NIfTI, one per echo (or one 4D file); may be empty")
    input_kind = traits.Enum("gre", "megre", "swi", "magnitude", mandatory=True)
    echo_times = traits.Either(None, traits.List(traits.Float()), usedefault=True,
                               desc="echo times in seconds, or None when unknown")
    phase_units = traits.Either(None, traits.Enum("rad", "arbitrary"), usedefault=True,
                                desc="sidecar Units of the phase (None: from the values)")
    handedness = traits.Enum("auto", "right", "left", usedefault=True)
    swi_power = traits.Int(4, usedefault=True, desc="phase-mask exponent")
    highpass_mm = traits.Float(12.0, usedefault=True,
                               desc="homodyne filter Gaussian FWHM (mm)")
    bias_correct = traits.Bool(True, usedefault=True, desc="run N4")
    n4_iterations = traits.List(traits.Int(), value=[50, 50, 30], usedefault=True)
    omp_nthreads = traits.Int(1, usedefault=True)


class _ComputeSWIOutputSpec(TraitedSpec):
    swi = File(exists=True, desc="bias-corrected SWI (or input image) for detection")
    magnitude = File(exists=True, desc="bias-corrected combined magnitude")
    filtered_phase = traits.Either(File(exists=True), traits.Str(),
                                   desc='high-pass filtered phase (rad) or "n/a"')
    head_mask = File(exists=True, desc="head mask (uint8)")
    bias_field = File(exists=True, desc="N4 bias field (1 when not corrected)")
    swi_meta = traits.Dict(desc="every parameter used, for sidecars")


class ComputeSWI(SimpleInterface):
    """Validate inputs and compute SWI, combined magnitude, filtered phase and head mask
    (see :func:`cmbprep.algorithms.swi.process_swi`)."""

    input_spec = _ComputeSWIInputSpec
    output_spec = _ComputeSWIOutputSpec

    def _run_interface(self, runtime):
        from ..algorithms.swi import check_swi_inputs, load_echoes, process_swi

        inputs = self.inputs
        phase_files = list(inputs.phase) if inputs.phase else []
        if inputs.input_kind in ("swi", "magnitude"):
            phase_files = []
        warnings = check_swi_inputs(
            list(inputs.magnitude), phase_files, input_kind=inputs.input_kind,
            echo_times=inputs.echo_times, phase_units=inputs.phase_units)
        for msg in warnings:
            LOGGER.warning(msg)
        magnitude, affine, _ = load_echoes(inputs.magnitude)
        phase = load_echoes(phase_files)[0] if phase_files else None
        result = process_swi(
            magnitude, phase, affine, input_kind=inputs.input_kind,
            echo_times=inputs.echo_times, phase_units=inputs.phase_units,
            handedness=inputs.handedness, swi_power=inputs.swi_power,
            highpass_mm=inputs.highpass_mm, bias_correct=inputs.bias_correct,
            n4_options={"iterations": list(inputs.n4_iterations)},
            n_threads=inputs.omp_nthreads)
        reference = inputs.magnitude[0]
        out = {}
        for name in ("swi", "magnitude", "bias_field"):
            out[name] = _save_like(result[name], reference,
                                   os.path.join(runtime.cwd, f"{name}.nii.gz"))
        out["head_mask"] = _save_like(result["head_mask"], reference,
                                      os.path.join(runtime.cwd, "head_mask.nii.gz"),
                                      dtype=np.uint8)
        if result["filtered_phase"] is not None:
            out["filtered_phase"] = _save_like(
                result["filtered_phase"], reference,
                os.path.join(runtime.cwd, "filtered_phase.nii.gz"))
        else:
            out["filtered_phase"] = "n/a"
        meta = dict(result["meta"])
        meta["Warnings"] = warnings
        meta["Sources"] = [str(p) for p in list(inputs.magnitude) + phase_files]
        self._results.update(out)
        self._results["swi_meta"] = meta
        return runtime


class _MinIPInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3D image to project (the SWI)")
    slab_mm = traits.Float(8.0, usedefault=True, desc="slab thickness (mm)")
    in_meta = traits.Dict(desc="metadata to extend with the projection parameters")


class _MinIPOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="sliding-slab minimum-intensity projection")
    out_meta = traits.Dict()


class MinIP(SimpleInterface):
    """Sliding-slab minimum-intensity projection on the input grid
    (see :func:`cmbprep.algorithms.mip.sliding_minip`)."""

    input_spec = _MinIPInputSpec
    output_spec = _MinIPOutputSpec

    def _run_interface(self, runtime):
        from ..algorithms.mip import minip_window, sliding_minip, voxel_sizes

        img = nib.load(self.inputs.in_file)
        data = np.asarray(img.dataobj, dtype=np.float32)
        axis, n_slices = minip_window(img.affine, self.inputs.slab_mm)
        minip = sliding_minip(data, img.affine, self.inputs.slab_mm)
        self._results["out_file"] = _save_like(
            minip, self.inputs.in_file, os.path.join(runtime.cwd, "minip.nii.gz"))
        meta = dict(self.inputs.in_meta) if self.inputs.in_meta else {}
        meta["MinIP"] = {"SlabThicknessmm": float(self.inputs.slab_mm),
                         "SliceAxis": int(axis), "SlicesPerSlab": int(n_slices),
                         "SliceThicknessmm": float(voxel_sizes(img.affine)[axis])}
        self._results["out_meta"] = meta
        return runtime
