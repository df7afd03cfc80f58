"""Nipype interfaces of the SWI chain (thin wrappers of the steps in
:mod:`cmbprep.algorithms.swi.chain` and of :func:`cmbprep.algorithms.mip.sliding_minip`).

One interface per step, so Nipype caches each and runs N4 and the phase processing in
parallel: :class:`PrepareMagnitude` -> (:class:`N4BiasField` || :class:`FilterPhase`)
-> :class:`ComputeSWI` -> :class:`MinIP`. Images passed between the steps are float32
(uint8 for the head mask) NIfTI files without scaling, so every array arrives exactly as
it left; all are written on the grid and header of the first magnitude echo
(``reference``) in the node's working directory.
"""

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
    isdefined,
    traits,
)

from ..config import MEGRE_ECHOES
from .itk_process import run_with_itk_threads

LOGGER = logging.getLogger("nipype.interface")

_WITH_PHASE = ("gre", "megre")


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


def _load(path, dtype=np.float32):
    """The array saved by :func:`_save_like`, exactly, in C order (as it was in
    memory: numpy reductions may round differently on another layout)."""
    return np.ascontiguousarray(np.asarray(nib.load(path).dataobj, dtype=dtype))


def _used_phase(inputs):
    """The phase files the input kind uses (none for ``swi`` and ``magnitude``)."""
    if inputs.input_kind not in _WITH_PHASE or not inputs.phase:
        return []
    return list(inputs.phase)


class _SWIInputsSpec(BaseInterfaceInputSpec):
    magnitude = InputMultiObject(File(exists=True), mandatory=True,
                                 desc="magnitude NIfTI, one per echo (or one 4D file)")
    phase = InputMultiObject(File(exists=True), value=[], usedefault=True,
                             desc="phase NIfTI, one per echo (or one 4D file); may be empty")
    input_kind = traits.Enum("gre", "megre", "swi", "magnitude", mandatory=True)
    echo_times = traits.Either(None, traits.List(traits.Float()), usedefault=True,
                               desc="echo times in seconds, or None when unknown")
    phase_units = traits.Either(None, traits.Enum("rad", "arbitrary"), usedefault=True,
                                desc="sidecar Units of the phase (None: from the values)")
    megre_echoes = traits.Enum(*MEGRE_ECHOES, usedefault=True,
                               desc="multi-echo GRE with phase: the longest echo alone or "
                                    "the frequency fit over all echoes")
    code_id = traits.Str("", usedefault=True,
                         desc="identifies the SWI chain's code (a change makes Nipype re-run "
                              "the node in an existing work directory)")


class _PrepareMagnitudeOutputSpec(TraitedSpec):
    magnitude = File(exists=True, desc="combined magnitude (not bias-corrected)")
    head_mask = File(exists=True, desc="head mask (uint8)")
    swi_meta = traits.Dict(desc="input, magnitude and head-mask parameters")
    warnings = traits.List(traits.Str(), desc="documented fallbacks taken")
    sources = traits.List(traits.Str(), desc="the input files used")
    reference = File(exists=True, desc="first magnitude echo: grid and header of the "
                                       "outputs of every step")


class PrepareMagnitude(SimpleInterface):
    """Check the inputs, combine the magnitude echoes and compute the head mask
    (:func:`cmbprep.algorithms.swi.check_swi_inputs`,
    :func:`cmbprep.algorithms.swi.prepare_magnitude`)."""

    input_spec = _SWIInputsSpec
    output_spec = _PrepareMagnitudeOutputSpec

    def _run_interface(self, runtime):
        from ..algorithms.swi import check_swi_inputs, load_echoes, prepare_magnitude

        inputs = self.inputs
        phase_files = _used_phase(inputs)
        warnings = check_swi_inputs(
            list(inputs.magnitude), phase_files, input_kind=inputs.input_kind,
            echo_times=inputs.echo_times, phase_units=inputs.phase_units)
        for msg in warnings:
            LOGGER.warning(msg)
        magnitude, affine, _ = load_echoes(inputs.magnitude)
        _, combined, mask, meta = prepare_magnitude(
            magnitude, affine, input_kind=inputs.input_kind,
            echo_times=inputs.echo_times, has_phase=bool(phase_files),
            megre_echoes=inputs.megre_echoes)
        reference = inputs.magnitude[0]
        self._results["magnitude"] = _save_like(
            combined, reference, os.path.join(runtime.cwd, "combined_magnitude.nii.gz"))
        self._results["head_mask"] = _save_like(
            mask, reference, os.path.join(runtime.cwd, "head_mask.nii.gz"), dtype=np.uint8)
        self._results["swi_meta"] = meta
        self._results["warnings"] = warnings
        self._results["sources"] = [str(p) for p in list(inputs.magnitude) + phase_files]
        self._results["reference"] = reference
        return runtime


class _N4BiasFieldInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="combined magnitude")
    head_mask = File(exists=True, mandatory=True, desc="voxels the field is fitted on")
    reference = File(exists=True, mandatory=True,
                     desc="first magnitude echo: grid and header of the output")
    iterations = traits.List(traits.Int(), desc="N4 iterations per fitting level "
                             "(default: cmbprep.algorithms.swi.N4_DEFAULTS)")
    omp_nthreads = traits.Int(1, usedefault=True, desc="ITK threads")


class _N4BiasFieldOutputSpec(TraitedSpec):
    bias_field = File(exists=True, desc="N4 bias field (the corrected image is in / field)")
    bias_meta = traits.Dict(desc="N4 settings")


class N4BiasField(SimpleInterface):
    """N4 bias field of the combined magnitude in the head mask
    (:func:`cmbprep.algorithms.swi.fit_bias_field`)."""

    input_spec = _N4BiasFieldInputSpec
    output_spec = _N4BiasFieldOutputSpec

    def _run_interface(self, runtime):
        from ..algorithms.arrays import voxel_sizes
        from ..algorithms.swi import fit_bias_field

        affine = np.asarray(nib.load(self.inputs.reference).affine, dtype=float)
        # a new process: ITK's thread count is fixed at its first use in a process
        field, meta = run_with_itk_threads(
            fit_bias_field, self.inputs.omp_nthreads,
            _load(self.inputs.in_file), _load(self.inputs.head_mask, bool),
            voxel_sizes(affine),
            n4_options=({"iterations": list(self.inputs.iterations)}
                        if isdefined(self.inputs.iterations) else None),
            n_threads=self.inputs.omp_nthreads)
        self._results["bias_field"] = _save_like(
            field, self.inputs.reference, os.path.join(runtime.cwd, "bias_field.nii.gz"))
        self._results["bias_meta"] = meta
        return runtime


class _FilterPhaseInputSpec(_SWIInputsSpec):
    combined_magnitude = File(exists=True, mandatory=True, desc="combined magnitude")
    head_mask = File(exists=True, mandatory=True, desc="head mask")
    handedness = traits.Enum("auto", "right", "left", usedefault=True)
    highpass_mm = traits.Float(12.0, usedefault=True,
                               desc="homodyne filter Gaussian FWHM (mm)")
    in_meta = traits.Dict(desc="metadata to extend with the phase parameters")
    omp_nthreads = traits.Int(1, usedefault=True, desc="FFT workers")


class _FilterPhaseOutputSpec(TraitedSpec):
    filtered_phase = traits.Either(File(exists=True), traits.Str(),
                                   desc='high-pass filtered phase (rad) or "n/a"')
    handedness = traits.Str(desc='phase convention used: "right", "left" or "n/a"')
    out_meta = traits.Dict()


class FilterPhase(SimpleInterface):
    """Phase to radians, multi-echo unwrapping and fit, homodyne high-pass, phase sign
    convention (:func:`cmbprep.algorithms.swi.filter_phase`); ``"n/a"`` without phase."""

    input_spec = _FilterPhaseInputSpec
    output_spec = _FilterPhaseOutputSpec

    def _run_interface(self, runtime):
        from ..algorithms.swi import clean_magnitude, filter_phase, load_echoes

        inputs = self.inputs
        meta = dict(inputs.in_meta) if inputs.in_meta else {}
        phase_files = _used_phase(inputs)
        if not phase_files:
            self._results.update(filtered_phase="n/a", handedness="n/a", out_meta=meta)
            return runtime
        magnitude, affine, _ = load_echoes(inputs.magnitude)
        filtered, used, phase_meta = filter_phase(
            clean_magnitude(magnitude), _load(inputs.combined_magnitude),
            load_echoes(phase_files)[0], _load(inputs.head_mask, bool), affine,
            echo_times=inputs.echo_times, phase_units=inputs.phase_units,
            handedness=inputs.handedness, highpass_mm=inputs.highpass_mm,
            megre_echoes=inputs.megre_echoes, n_threads=inputs.omp_nthreads)
        meta.update(phase_meta)
        self._results["filtered_phase"] = _save_like(
            filtered, inputs.magnitude[0],
            os.path.join(runtime.cwd, "filtered_phase.nii.gz"))
        self._results["handedness"] = used
        self._results["out_meta"] = meta
        return runtime


class _ComputeSWIInputSpec(BaseInterfaceInputSpec):
    magnitude = File(exists=True, mandatory=True, desc="combined magnitude")
    filtered_phase = traits.Either(File(exists=True), traits.Str(), mandatory=True,
                                   desc='high-pass filtered phase (rad) or "n/a"')
    handedness = traits.Str(mandatory=True, desc='"right", "left" or "n/a"')
    bias_field = File(exists=True, mandatory=True, desc="N4 bias field")
    reference = File(exists=True, mandatory=True,
                     desc="first magnitude echo: grid and header of the outputs")
    swi_power = traits.Int(4, usedefault=True, desc="phase-mask exponent")
    in_meta = traits.Dict(desc="metadata of the earlier steps")
    bias_meta = traits.Dict(desc="N4 settings")
    warnings = traits.List(traits.Str(), desc="documented fallbacks taken")
    sources = traits.List(traits.Str(), desc="the input files used")


class _ComputeSWIOutputSpec(TraitedSpec):
    swi = File(exists=True, desc="bias-corrected SWI (or input image) for detection")
    magnitude = File(exists=True, desc="bias-corrected combined magnitude")
    swi_meta = traits.Dict(desc="every parameter used, for sidecars")


class ComputeSWI(SimpleInterface):
    """SWI from magnitude and filtered phase, divided by the bias field
    (:func:`cmbprep.algorithms.swi.apply_swi_contrast`)."""

    input_spec = _ComputeSWIInputSpec
    output_spec = _ComputeSWIOutputSpec

    def _run_interface(self, runtime):
        from ..algorithms.swi import apply_swi_contrast

        inputs = self.inputs
        has_phase = inputs.filtered_phase != "n/a"
        swi, magnitude, contrast_meta = apply_swi_contrast(
            _load(inputs.magnitude),
            _load(inputs.filtered_phase) if has_phase else None,
            _load(inputs.bias_field),
            handedness=inputs.handedness if has_phase else None,
            swi_power=inputs.swi_power)
        for name, data in (("swi", swi), ("magnitude", magnitude)):
            self._results[name] = _save_like(data, inputs.reference,
                                             os.path.join(runtime.cwd, f"{name}.nii.gz"))
        meta = dict(inputs.in_meta) if inputs.in_meta else {}
        meta.update(contrast_meta)
        meta.update(inputs.bias_meta)
        meta["Warnings"] = list(inputs.warnings)
        meta["Sources"] = list(inputs.sources)
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
        from ..algorithms.arrays import voxel_sizes
        from ..algorithms.mip import minip_window, sliding_minip

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


class _ConfirmHandednessInputSpec(BaseInterfaceInputSpec):
    swi = File(exists=True, mandatory=True, desc="the SWI made with step 2's convention")
    minip = File(exists=True, mandatory=True, desc="its minimum-intensity projection")
    magnitude = File(exists=True, mandatory=True, desc="bias-corrected magnitude")
    filtered_phase = traits.Either(File(exists=True), traits.Str(), mandatory=True,
                                   desc='filtered phase (rad) or "n/a"')
    handedness = traits.Str(mandatory=True, desc='step 2\'s convention, or "n/a"')
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the SWI grid")
    swi_meta = traits.Dict(mandatory=True, desc="the SWI's metadata")
    requested = traits.Enum("auto", "right", "left", usedefault=True,
                            desc="the convention asked for (only auto is checked)")
    swi_power = traits.Int(4, usedefault=True)
    highpass_mm = traits.Float(12.0, usedefault=True)
    slab_mm = traits.Float(8.0, usedefault=True, desc="minIP slab thickness (mm)")
    omp_nthreads = traits.Int(1, usedefault=True)
    code_id = traits.Str("", usedefault=True,
                         desc="identifies the SWI chain's code (a change makes Nipype re-run "
                              "the node in an existing work directory)")


class _ConfirmHandednessOutputSpec(TraitedSpec):
    swi = File(exists=True)
    minip = File(exists=True)
    handedness = traits.Str()
    swi_meta = traits.Dict()


class ConfirmHandedness(SimpleInterface):
    """Step 5 of the chain, after brain extraction: the phase convention decided again
    inside the brain (:func:`cmbprep.algorithms.swi.confirm_handedness_in_brain`). Where it
    differs from step 2's, the SWI (the bias-corrected magnitude times the phase mask)
    and its minimum-intensity projection are made again with it; otherwise the input
    files are passed on as they are. Without phase, or with a convention asked for, it
    does nothing."""

    input_spec = _ConfirmHandednessInputSpec
    output_spec = _ConfirmHandednessOutputSpec

    def _run_interface(self, runtime):
        from ..algorithms.mip import sliding_minip
        from ..algorithms.swi import compute_swi, confirm_handedness_in_brain

        inputs = self.inputs
        meta = dict(inputs.swi_meta)
        self._results.update(swi=inputs.swi, minip=inputs.minip,
                             handedness=inputs.handedness, swi_meta=meta)
        if inputs.filtered_phase == "n/a" or inputs.requested != "auto":
            return runtime
        affine = nib.load(inputs.magnitude).affine
        magnitude, filtered = _load(inputs.magnitude), _load(inputs.filtered_phase)
        used, check = confirm_handedness_in_brain(
            magnitude, filtered, affine, _load(inputs.brain_mask, bool), inputs.handedness,
            highpass_mm=inputs.highpass_mm, n_threads=inputs.omp_nthreads)
        detection = dict(meta.get("HandednessDetection") or {})
        detection["InBrain"] = check
        meta["HandednessDetection"] = detection
        if check["Changed"]:
            LOGGER.warning("phase convention: %s inside the brain, %s before brain "
                           "extraction; the SWI is made again with %s", used,
                           inputs.handedness, used)
            detection["FirstPass"] = {"Handedness": inputs.handedness,
                                      "Method": detection.get("Method", "n/a")}
            detection["Method"] = "pole-minus-equator inside the brain mask (second pass)"
            meta["Handedness"] = used
            swi = compute_swi(magnitude, filtered, handedness=used, power=inputs.swi_power)
            minip = sliding_minip(swi, affine, inputs.slab_mm)
            for name, data in (("swi", swi), ("minip", minip)):  # never over an input
                self._results[name] = _save_like(
                    data, inputs.swi, os.path.join(runtime.cwd, f"{name}_confirmed.nii.gz"))
            self._results["handedness"] = used
        return runtime
