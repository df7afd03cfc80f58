"""Nipype interfaces around :mod:`cmbprep.algorithms.detection`.

:class:`DetectMicrobleeds` runs a whole detector in one node (``bian2013`` in the
pipeline). The default ``cmbprep`` detector runs as three nodes so that Nipype can spread
the per-candidate analysis over processes: :class:`FindCandidates` (writes the candidate
context), :class:`AnalyseCandidates` (one chunk of the candidates; a MapNode over chunks)
and :class:`ScoreCandidates` (merge, score and write the tables). The interfaces only
read inputs, call the algorithms and save their results.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..algorithms.detection import (
    DETECTORS,
    PHASE_SIGN_OF_HANDEDNESS,
    analyse_candidates,
    detect_microbleeds,
    detection_outputs,
    find_candidates,
    merge_and_score,
    write_detection_tables,
)
from ..algorithms.detection.scoring import scoring_network
from ..errors import DataError

__all__ = ["AnalyseCandidates", "DetectMicrobleeds", "FindCandidates", "ScoreCandidates",
           "read_dseg_table"]


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


def _load_scan(inputs):
    """SWI image, SWI (float32), brain mask, minIP and filtered phase (float32 or None)."""
    swi_img, swi = _load(inputs.swi, "SWI")
    _, brain = _load(inputs.brain_mask, "brain mask", swi_img)
    brain = brain > 0
    if not brain.any():
        raise DataError(f"{inputs.brain_mask}: the brain mask is empty")
    minip = None
    if _given(getattr(inputs, "minip", None)):
        _, minip = _load(inputs.minip, "minIP", swi_img)
        minip = np.asarray(minip, np.float32)
    phase = None
    if _given(getattr(inputs, "filtered_phase", None)):
        _, phase = _load(inputs.filtered_phase, "filtered phase", swi_img)
        phase = np.asarray(phase, np.float32)
    swi = np.asarray(swi, dtype=np.float32)
    if not np.isfinite(swi[brain]).all():
        raise DataError(f"{inputs.swi}: non-finite values inside the brain mask")
    return swi_img, swi, brain, minip, phase


def _load_magnitude(inputs, swi_img):
    """The bias-corrected magnitude (float32) or None."""
    if not _given(inputs.magnitude):
        return None
    _, magnitude = _load(inputs.magnitude, "magnitude", swi_img)
    return np.asarray(magnitude, np.float32)


def _parameters(inputs):
    return dict(inputs.parameters) if _given(inputs.parameters) else None


def _save_pickle(obj, path):
    with open(path, "wb") as fobj:
        pickle.dump(obj, fobj, protocol=pickle.HIGHEST_PROTOCOL)
    return str(path)


def _load_pickle(path):
    with open(path, "rb") as fobj:
        return pickle.load(fobj)


def _save_labels(data, dtype, swi_img, path):
    img = nib.Nifti1Image(data, swi_img.affine, swi_img.header)
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1, 0)
    img.to_filename(path)
    return str(path)


def _write_outputs(interface, runtime, swi_img, result):
    """Locate and tabulate a detection result; save tables and images in the node dir."""
    inputs = interface.inputs
    dseg = dseg_table = None
    if _given(inputs.dseg) and _given(inputs.dseg_tsv):
        _, dseg = _load(inputs.dseg, "atlas", swi_img)
        dseg = np.rint(np.asarray(dseg)).astype(np.int32)
        dseg_table = read_dseg_table(inputs.dseg_tsv)
    xfm = inputs.template_to_swi_xfm if _given(inputs.template_to_swi_xfm) else None
    outputs = detection_outputs(result, swi_img.affine, dseg=dseg, dseg_table=dseg_table,
                                template_to_swi_xfm=xfm, n_threads=inputs.num_threads,
                                seed=inputs.seed, code_id=inputs.code_id)
    cwd = Path(runtime.cwd)
    tables = write_detection_tables(outputs, cwd)
    labels = outputs.labels
    interface._results.update(
        {key: str(path) for key, path in tables.items()},
        cmb_dseg=_save_labels(labels, labels.dtype, swi_img, cwd / "cmb_dseg.nii.gz"),
        cmb_mask=_save_labels((labels > 0).astype(np.uint8), np.uint8, swi_img,
                              cwd / "cmb_mask.nii.gz"),
        detection_meta=outputs.meta,
    )


class _OutputsInputSpec(BaseInterfaceInputSpec):
    swi = File(exists=True, mandatory=True, desc="bias-corrected SWI")
    dseg = traits.Str("n/a", usedefault=True, desc="atlas labels on the SWI grid or n/a")
    dseg_tsv = traits.Str("n/a", usedefault=True, desc="atlas lookup table or n/a")
    template_to_swi_xfm = traits.Str(
        "n/a", usedefault=True,
        desc="ANTs transform resampling template images to SWI space (maps SWI points "
             "to the template), or n/a")
    num_threads = traits.Int(1, usedefault=True, desc="threads for ANTs point mapping")
    seed = traits.Int(0, usedefault=True, desc="random seed (recorded; detectors are "
                                               "deterministic)")
    code_id = traits.Str(
        "", usedefault=True,
        desc="identifies the detector code and model (a change makes Nipype re-run the "
             "node in an existing work directory); recorded")


class _DetectInputSpec(_OutputsInputSpec):
    minip = File(exists=True, desc="minimum-intensity projection (bian2013)")
    filtered_phase = traits.Str("n/a", usedefault=True, desc="filtered phase path or n/a")
    magnitude = traits.Str(
        "n/a", usedefault=True,
        desc="bias-corrected magnitude the SWI was made from (cmbprep: phase-mask "
             "artefact zones) or n/a")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the SWI grid")
    detector = traits.Enum(*DETECTORS, usedefault=True, desc="detector name")
    parameters = traits.Dict(desc="overrides of the detector parameters")


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

    The whole detector runs in this node's process. All outputs go to the node's
    working directory; inputs are only read.
    """

    input_spec = _DetectInputSpec
    output_spec = _DetectOutputSpec

    def _run_interface(self, runtime):
        swi_img, swi, brain, minip, phase = _load_scan(self.inputs)
        try:
            result = detect_microbleeds(self.inputs.detector, swi, brain, swi_img.affine,
                                        minip=minip, filtered_phase=phase,
                                        magnitude=_load_magnitude(self.inputs, swi_img),
                                        parameters=_parameters(self.inputs))
        except ValueError as exc:
            raise DataError(f"{self.inputs.swi}: {exc}") from exc
        _write_outputs(self, runtime, swi_img, result)
        return runtime


class _FindInputSpec(BaseInterfaceInputSpec):
    swi = File(exists=True, mandatory=True, desc="bias-corrected SWI")
    filtered_phase = traits.Str("n/a", usedefault=True, desc="filtered phase path or n/a")
    magnitude = traits.Str(
        "n/a", usedefault=True,
        desc="bias-corrected magnitude the SWI was made from (phase-mask artefact "
             "zones) or n/a")
    swi_handedness = traits.Enum(
        "n/a", "left", "right", usedefault=True,
        desc="handedness the SWI chain detected (cross-check of the detector's own "
             "phase-sign calibration) or n/a")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the SWI grid")
    parameters = traits.Dict(desc="overrides of the cmbprep detector parameters")
    code_id = traits.Str("", usedefault=True, desc="detector code and model (cache key)")


class _FindOutputSpec(TraitedSpec):
    context = File(exists=True, desc="pickled CandidateContext (cropped arrays, seeds)")


class FindCandidates(SimpleInterface):
    """First stage of the ``cmbprep`` detector: seeds and their analysis context."""

    input_spec = _FindInputSpec
    output_spec = _FindOutputSpec

    def _run_interface(self, runtime):
        swi_img, swi, brain, _, phase = _load_scan(self.inputs)
        magnitude = _load_magnitude(self.inputs, swi_img)
        parameters = _parameters(self.inputs) or {}
        if self.inputs.swi_handedness in PHASE_SIGN_OF_HANDEDNESS:
            parameters.setdefault("phase_sign_reference",
                                  PHASE_SIGN_OF_HANDEDNESS[self.inputs.swi_handedness])
        try:
            context = find_candidates(swi, brain, swi_img.affine, filtered_phase=phase,
                                      magnitude=magnitude, parameters=parameters)
        except ValueError as exc:
            raise DataError(f"{self.inputs.swi}: {exc}") from exc
        self._results["context"] = _save_pickle(context, Path(runtime.cwd) / "context.pkl")
        return runtime


class _AnalyseInputSpec(BaseInterfaceInputSpec):
    context = File(exists=True, mandatory=True, desc="output of FindCandidates")
    chunk = traits.Int(0, usedefault=True, desc="this chunk: seeds chunk, chunk + "
                                                "n_chunks, chunk + 2 n_chunks, ...")
    n_chunks = traits.Int(1, usedefault=True, desc="number of chunks")
    code_id = traits.Str("", usedefault=True, desc="detector code and model (cache key)")


class _AnalyseOutputSpec(TraitedSpec):
    analysed = File(exists=True, desc="pickled {seed index: CandidateAnalysis or None}")


class AnalyseCandidates(SimpleInterface):
    """Second stage of the ``cmbprep`` detector: segmentation and features of one
    interleaved chunk of the seeds."""

    input_spec = _AnalyseInputSpec
    output_spec = _AnalyseOutputSpec

    def _run_interface(self, runtime):
        context = _load_pickle(self.inputs.context)
        indices = range(int(self.inputs.chunk), len(context.peaks), int(self.inputs.n_chunks))
        analysed = analyse_candidates(context, indices)
        self._results["analysed"] = _save_pickle(analysed,
                                                 Path(runtime.cwd) / "analysed.pkl")
        return runtime


class _ScoreInputSpec(_OutputsInputSpec):
    context = File(exists=True, mandatory=True, desc="output of FindCandidates")
    analysed = InputMultiObject(File(exists=True), mandatory=True,
                                desc="outputs of AnalyseCandidates (every chunk)")
    magnitude = traits.Str(
        "n/a", usedefault=True,
        desc="bias-corrected magnitude the SWI was made from (the classifier's patch "
             "network) or n/a")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the SWI grid")


class ScoreCandidates(SimpleInterface):
    """Last stage of the ``cmbprep`` detector: merge the analysed chunks, score, and
    write the same outputs as :class:`DetectMicrobleeds`."""

    input_spec = _ScoreInputSpec
    output_spec = _DetectOutputSpec

    def _run_interface(self, runtime):
        context = _load_pickle(self.inputs.context)
        analysed = {}
        for path in self.inputs.analysed:
            analysed.update(_load_pickle(path))
        swi_img, images = nib.load(str(self.inputs.swi)), None
        try:
            # the volumes only for a classifier with a patch network
            if scoring_network(context.parameters) is not None:
                swi_img, swi, brain, _, _ = _load_scan(self.inputs)
                images = (swi, _load_magnitude(self.inputs, swi_img), brain)
            result = merge_and_score(context, analysed, images=images)
        except ValueError as exc:
            raise DataError(f"{self.inputs.swi}: {exc}") from exc
        _write_outputs(self, runtime, swi_img, result)
        return runtime
