"""Nipype interface around :mod:`cmbprep.algorithms.detection`."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..algorithms.candidates import voxel_size_from_affine
from ..algorithms.detection import (
    DETECTORS,
    assign_regions,
    cmb_label_image,
    cmb_table,
    detect_microbleeds,
    write_sidecar,
    write_table,
)
from ..errors import DataError


def _given(value):
    return value not in (None, "", "n/a") and value is not traits.Undefined


def _load(path, what, reference=None):
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types
        raise DataError(f"{path}: cannot read the {what} image ({exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: the {what} image must be 3D, got shape {data.shape}")
    if reference is not None:
        if data.shape != reference.shape[:3] or not np.allclose(
            img.affine, reference.affine, atol=1e-3
        ):
            raise DataError(f"{path}: the {what} image is not on the SWI grid")
    return img, data


def read_dseg_table(path):
    """Read an atlas lookup table (``index name ...``), raising DataError if malformed."""
    try:
        table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read the atlas lookup table ({exc})") from exc
    for column in ("index", "name"):
        if column not in table.columns:
            raise DataError(f"{path}: atlas lookup table lacks the '{column}' column")
    return table


class _DetectInputSpec(BaseInterfaceInputSpec):
    swi = File(exists=True, mandatory=True, desc="bias-corrected SWI")
    minip = File(exists=True, desc="minimum-intensity projection (bian2013)")
    filtered_phase = traits.Str("n/a", usedefault=True, desc="filtered phase path or n/a")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the SWI grid")
    dseg = traits.Str("n/a", usedefault=True, desc="atlas labels on the SWI grid or n/a")
    dseg_tsv = traits.Str("n/a", usedefault=True, desc="atlas lookup table or n/a")
    template_to_swi_xfm = traits.Str(
        "n/a", usedefault=True,
        desc="ANTs transform resampling template images to SWI space (maps SWI points "
             "to the template), or n/a")
    swi_to_template_xfm = traits.Str("n/a", usedefault=True, desc="unused; recorded")
    detector = traits.Enum(*DETECTORS, usedefault=True, desc="detector name")
    parameters = traits.Dict(desc="overrides of the detector parameters")
    num_threads = traits.Int(1, usedefault=True, desc="processes for the cmbprep detector "
                                                      "and threads for ANTs point mapping")
    seed = traits.Int(0, usedefault=True, desc="random seed (recorded; detectors are "
                                               "deterministic)")
    code_id = traits.Str(
        "", usedefault=True,
        desc="identifies the detector code and model (a change makes Nipype re-run the "
             "node in an existing work directory); recorded")


class _DetectOutputSpec(TraitedSpec):
    candidates_tsv = File(exists=True)
    candidates_sidecar = File(exists=True)
    cmb_tsv = File(exists=True)
    cmb_sidecar = File(exists=True)
    cmb_dseg = File(exists=True)
    cmb_mask = File(exists=True)
    detection_meta = traits.Dict()


class DetectMicrobleeds(SimpleInterface):
    """Detect microbleeds and write the candidate and CMB tables, label image and mask.

    All outputs go to the node's working directory; inputs are only read.
    """

    input_spec = _DetectInputSpec
    output_spec = _DetectOutputSpec

    def _run_interface(self, runtime):
        swi_img, swi = _load(self.inputs.swi, "SWI")
        _, brain = _load(self.inputs.brain_mask, "brain mask", swi_img)
        brain = brain > 0
        if not brain.any():
            raise DataError(f"{self.inputs.brain_mask}: the brain mask is empty")
        affine = swi_img.affine
        minip = None
        if _given(self.inputs.minip):
            _, minip = _load(self.inputs.minip, "minIP", swi_img)
        phase = None
        if _given(self.inputs.filtered_phase):
            _, phase = _load(self.inputs.filtered_phase, "filtered phase", swi_img)
        swi = np.asarray(swi, dtype=np.float32)
        if not np.isfinite(swi[brain]).all():
            raise DataError(f"{self.inputs.swi}: non-finite values inside the brain mask")
        try:
            result = detect_microbleeds(
                self.inputs.detector, swi, brain, affine,
                minip=None if minip is None else np.asarray(minip, np.float32),
                filtered_phase=None if phase is None else np.asarray(phase, np.float32),
                parameters=dict(self.inputs.parameters) if _given(self.inputs.parameters)
                else None,
                n_jobs=self.inputs.num_threads,
            )
        except ValueError as exc:
            raise DataError(f"{self.inputs.swi}: {exc}") from exc

        dseg = dseg_table = None
        if _given(self.inputs.dseg) and _given(self.inputs.dseg_tsv):
            _, dseg = _load(self.inputs.dseg, "atlas", swi_img)
            dseg = np.rint(np.asarray(dseg)).astype(np.int32)
            dseg_table = read_dseg_table(self.inputs.dseg_tsv)
        candidates = assign_regions(result.candidates, dseg, dseg_table,
                                    voxel_size_from_affine(affine))

        template_points = None
        meta = dict(result.parameters)
        meta["seed"] = int(self.inputs.seed)
        meta["code_id"] = self.inputs.code_id
        meta["template_coordinates"] = "n/a"
        if _given(self.inputs.template_to_swi_xfm) and len(candidates):
            from ..algorithms.registration import points_to_template, set_ants_threads

            set_ants_threads(self.inputs.num_threads)
            template_points = points_to_template(
                candidates[["x", "y", "z"]].to_numpy(float), self.inputs.template_to_swi_xfm)
            meta["template_coordinates"] = "points_to_template(template_to_swi_xfm)"
        if template_points is not None:
            for axis, col in enumerate(("mni_x", "mni_y", "mni_z")):
                candidates[col] = template_points[:, axis]
        cmb = cmb_table(candidates, template_points)

        cwd = Path(runtime.cwd)
        cand_tsv = write_table(candidates, cwd / "candidates.tsv")
        cand_json = write_sidecar(list(candidates.columns), cwd / "candidates.json")
        cmb_out = cmb.drop(columns="candidate_id")
        cmb_tsv = write_table(cmb_out, cwd / "cmb.tsv")
        cmb_json = write_sidecar(list(cmb_out.columns), cwd / "cmb.json")
        labels = cmb_label_image(result.labels, cmb)
        dseg_img = nib.Nifti1Image(labels, affine, swi_img.header)
        dseg_img.set_data_dtype(labels.dtype)
        dseg_img.header.set_slope_inter(1, 0)
        dseg_path = cwd / "cmb_dseg.nii.gz"
        dseg_img.to_filename(dseg_path)
        mask = (labels > 0).astype(np.uint8)
        mask_img = nib.Nifti1Image(mask, affine, swi_img.header)
        mask_img.set_data_dtype(np.uint8)
        mask_img.header.set_slope_inter(1, 0)
        mask_path = cwd / "cmb_mask.nii.gz"
        mask_img.to_filename(mask_path)

        meta["n_candidates"] = len(candidates)
        meta["n_cmb"] = len(cmb)
        meta["n_review"] = int((candidates["status"] == "review").sum()) if len(candidates) else 0
        self._results.update(
            candidates_tsv=str(cand_tsv), candidates_sidecar=str(cand_json),
            cmb_tsv=str(cmb_tsv), cmb_sidecar=str(cmb_json),
            cmb_dseg=str(dseg_path), cmb_mask=str(mask_path), detection_meta=meta,
        )
        return runtime


__all__ = ["DetectMicrobleeds", "read_dseg_table"]
