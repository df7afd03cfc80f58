"""Nipype wrappers of :mod:`cmbprep.reports.participant`."""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..reports.participant import plot_detection_mosaic, summarize_cmbs


class _SummarizeInputSpec(BaseInterfaceInputSpec):
    cmb_tsv = File(exists=True, mandatory=True)
    swi = File(exists=True, desc="the SWI (for voxel size and matrix)")
    candidates_tsv = File(exists=True)
    unit = traits.Dict(mandatory=True, desc="subject, entities, kind, sources...")
    swi_meta = traits.Dict({}, usedefault=True)
    anat_meta = traits.Dict({}, usedefault=True)
    detection_meta = traits.Dict({}, usedefault=True)


class _SummarizeOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="summary JSON")


class SummarizeCMBs(SimpleInterface):
    """Write the ``_desc-summary_cmb.json`` content of one participant unit."""

    input_spec = _SummarizeInputSpec
    output_spec = _SummarizeOutputSpec

    def _run_interface(self, runtime):
        candidates = self.inputs.candidates_tsv if isdefined(
            self.inputs.candidates_tsv) else None
        summary = summarize_cmbs(self.inputs.cmb_tsv, candidates, self.inputs.unit,
                                 self.inputs.swi_meta, self.inputs.anat_meta,
                                 self.inputs.detection_meta,
                                 swi=self.inputs.swi if isdefined(self.inputs.swi) else None)
        out = Path(runtime.cwd) / "summary_cmb.json"
        out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        self._results["out_file"] = str(out)
        return runtime


class _MosaicInputSpec(BaseInterfaceInputSpec):
    minip = File(exists=True, mandatory=True)
    cmb_tsv = File(exists=True, mandatory=True)
    candidates_tsv = File(exists=True)


class _MosaicOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class DetectionMosaic(SimpleInterface):
    """A PNG mosaic of the minimum-intensity projection with the detections circled."""

    input_spec = _MosaicInputSpec
    output_spec = _MosaicOutputSpec

    def _run_interface(self, runtime):
        candidates = self.inputs.candidates_tsv if isdefined(
            self.inputs.candidates_tsv) else None
        out = plot_detection_mosaic(self.inputs.minip, self.inputs.cmb_tsv,
                                    Path(runtime.cwd) / "detections_mosaic.png",
                                    candidates_tsv=candidates)
        self._results["out_file"] = str(out)
        return runtime
