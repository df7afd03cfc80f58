"""Nipype interfaces of the anatomical sub-workflow (thin wrappers).

:class:`RegisterTemplate` registers the ICBM152 template to the SWI-space magnitude (or
to a T1w first aligned rigidly to it) and writes both composite transforms;
:class:`AnatomicalLabels` makes the brain mask, the region labels (``dseg``) and the
lookup table in SWI space and collects the QC / provenance dict ``anat_meta``.
Outputs are written to the node's working directory; inputs are never modified.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..errors import DataError
from .itk_process import run_with_itk_threads


def _load3d(path):
    import nibabel as nib
    import numpy as np

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types
        raise DataError(f"{path}: unreadable NIfTI image ({exc})") from exc
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D image, got shape {data.shape}")
    if not np.isfinite(data).any() or np.nanmax(np.abs(data)) == 0:
        raise DataError(f"{path}: image is empty (all zero or not finite)")
    return nib.Nifti1Image(np.nan_to_num(data), img.affine)


def _register_template(magnitude_path, head_mask_path, t1w, cwd, *, resolution_mm, seed,
                       n_threads):
    """Register the template to the SWI magnitude (or to a T1w rigidly aligned to it).

    Returns the :class:`~cmbprep.algorithms.registration.RegistrationResult` and the QC
    entries that say which image was registered.
    """
    from ..algorithms import registration as reg

    reg.set_ants_threads(n_threads)
    magnitude = _load3d(magnitude_path)
    head = _load3d(head_mask_path) if head_mask_path is not None else None
    target = magnitude
    qc_extra = {"registration_image": "swi_magnitude"}
    if t1w and t1w != "n/a":
        target = reg.rigid_align_to_reference(
            _load3d(t1w), magnitude, cwd / "t1w_to_swi_", seed=seed)
        qc_extra = {"registration_image": "t1w_rigidly_aligned_to_swi", "t1w": t1w}
        head = None  # the SWI head mask does not describe the T1w extent
    try:
        result = reg.register_template_to_subject(
            target, cwd, head_mask=head, resolution_mm=resolution_mm, seed=seed,
            n_threads=n_threads)
    except ValueError as exc:
        raise DataError(f"{magnitude_path}: {exc}") from exc
    return result, qc_extra


class _RegisterTemplateInputSpec(BaseInterfaceInputSpec):
    magnitude = File(exists=True, mandatory=True, desc="bias-corrected magnitude (SWI space)")
    head_mask = File(exists=True, desc="head mask on the magnitude grid")
    t1w = traits.Str("n/a", usedefault=True, desc="T1w path or 'n/a'")
    resolution_mm = traits.Float(2.0, usedefault=True, desc="registration resolution (mm)")
    seed = traits.Int(0, usedefault=True, desc="ANTs random seed")
    n_threads = traits.Int(1, usedefault=True, desc="ITK threads")


class _RegisterTemplateOutputSpec(TraitedSpec):
    template_to_swi_xfm = File(exists=True, desc="composite transform, template -> SWI")
    swi_to_template_xfm = File(exists=True, desc="composite transform, SWI -> template")
    registration_qc = traits.Dict(desc="registration QC metrics and parameters")


class RegisterTemplate(SimpleInterface):
    """Register the ICBM152 2009a symmetric template to the SWI-space image."""

    input_spec = _RegisterTemplateInputSpec
    output_spec = _RegisterTemplateOutputSpec

    def _run_interface(self, runtime):
        from ..algorithms import registration as reg

        cwd = Path(runtime.cwd)
        head = self.inputs.head_mask if isdefined(self.inputs.head_mask) else None
        # a new process: ITK's thread count is fixed at its first use in a process
        result, qc_extra = run_with_itk_threads(
            _register_template, self.inputs.n_threads, self.inputs.magnitude, head,
            self.inputs.t1w, cwd, resolution_mm=self.inputs.resolution_mm,
            seed=self.inputs.seed, n_threads=self.inputs.n_threads)
        fwd = cwd / f"from-{reg.TEMPLATE_NAME}_to-swi_mode-image_xfm.h5"
        inv = cwd / f"from-swi_to-{reg.TEMPLATE_NAME}_mode-image_xfm.h5"
        shutil.move(result.template_to_subject_xfm, fwd)
        shutil.move(result.subject_to_template_xfm, inv)
        qc = dict(result.qc)
        qc.update(qc_extra)
        qc["n_threads"] = int(self.inputs.n_threads)
        if not qc["registration_ok"]:
            for w in qc["registration_warnings"]:
                warnings.warn(f"{self.inputs.magnitude}: {w}", stacklevel=2)
        self._results["template_to_swi_xfm"] = str(fwd)
        self._results["swi_to_template_xfm"] = str(inv)
        self._results["registration_qc"] = qc
        return runtime


class _AnatomicalLabelsInputSpec(BaseInterfaceInputSpec):
    magnitude = File(exists=True, mandatory=True, desc="bias-corrected magnitude (SWI space)")
    head_mask = File(exists=True, desc="head mask on the magnitude grid")
    template_to_swi_xfm = File(exists=True, mandatory=True)
    swi_to_template_xfm = File(exists=True, mandatory=True)
    registration_qc = traits.Dict(desc="from RegisterTemplate")
    refine_mask = traits.Bool(True, usedefault=True, desc="intensity/morphology refinement")
    min_coverage = traits.Float(
        0.5, usedefault=True, desc="regions with a smaller fraction inside the FOV are "
        "reported as not covered"
    )
    n_threads = traits.Int(1, usedefault=True)


class _AnatomicalLabelsOutputSpec(TraitedSpec):
    brain_mask = File(exists=True)
    dseg = File(exists=True)
    dseg_tsv = File(exists=True)
    atlas_name = traits.Str()
    template = traits.Str()
    anat_meta = traits.Dict()


class AnatomicalLabels(SimpleInterface):
    """Brain mask, region labels and lookup table in SWI space, plus ``anat_meta``."""

    input_spec = _AnatomicalLabelsInputSpec
    output_spec = _AnatomicalLabelsOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..algorithms import lobes
        from ..algorithms import registration as reg
        from ..algorithms.brain import extract_brain
        from ..algorithms.lobes import label_subject

        reg.set_ants_threads(self.inputs.n_threads)
        cwd = Path(runtime.cwd)
        magnitude = _load3d(self.inputs.magnitude)
        head = _load3d(self.inputs.head_mask) if isdefined(self.inputs.head_mask) else None
        mask_img, brain_info = extract_brain(
            magnitude,
            self.inputs.template_to_swi_xfm,
            head_mask=head,
            refine=self.inputs.refine_mask,
        )
        atlas, lut = lobes.load_atlas()
        dseg_img, coverage, not_covered = label_subject(
            mask_img,
            atlas,
            lut,
            self.inputs.template_to_swi_xfm,
            self.inputs.swi_to_template_xfm,
            min_coverage=self.inputs.min_coverage,
        )
        mask_path = cwd / "desc-brain_mask.nii.gz"
        dseg_path = cwd / f"atlas-{lobes.ATLAS_NAME}_dseg.nii.gz"
        tsv_path = cwd / f"atlas-{lobes.ATLAS_NAME}_dseg.tsv"
        nib.save(mask_img, mask_path)
        nib.save(dseg_img, dseg_path)
        lut.to_csv(tsv_path, sep="\t", index=False)

        qc = dict(self.inputs.registration_qc) if isdefined(self.inputs.registration_qc) else {}
        meta = lobes.anatomy_metadata(qc, brain_info, coverage, not_covered,
                                      self.inputs.min_coverage)
        self._results.update(
            brain_mask=str(mask_path),
            dseg=str(dseg_path),
            dseg_tsv=str(tsv_path),
            atlas_name=lobes.ATLAS_NAME,
            template=reg.TEMPLATE_NAME,
            anat_meta=meta,
        )
        return runtime
