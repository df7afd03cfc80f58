"""Writing outputs into the BIDS-Derivatives tree.

:class:`DerivativesDataSink` plays the role of niworkflows' interface of the same name,
with cmbprep's own path pattern (:func:`cmbprep.utils.paths.derivative_path`). Every
file is written atomically (a temporary file in the target folder, then
:func:`os.replace`), and every file gets a JSON sidecar unless it is itself a JSON file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..utils.io import copy_atomic, copy_h5_atomic, write_json_atomic
from ..utils.paths import derivative_path, file_extension

__all__ = ["CommitUnit", "DerivativesDataSink", "PrepareStaging"]


LOGGER = logging.getLogger("cmbprep")
#: Metadata keys holding run times: logged, never written (reruns give the same bytes).
TIMING_KEYS = ("duration_s", "elapsed_s", "runtime_s")


def _without_timings(meta, where: str):
    """``meta`` without run-time entries (at any depth); those are logged instead."""
    def strip(value, path):
        if isinstance(value, dict):
            kept = {}
            for key, item in value.items():
                if key in TIMING_KEYS:
                    LOGGER.info("%s: %s = %s", where, ".".join(path + [key]), item)
                    continue
                kept[key] = strip(item, path + [key])
            return kept
        return value

    return strip(meta, [])


class _DerivativesDataSinkInputSpec(BaseInterfaceInputSpec):
    base_directory = traits.Str(mandatory=True, desc="root of the derivatives dataset")
    in_file = File(exists=True, mandatory=True, desc="file to write")
    entities = traits.Dict(mandatory=True, desc="BIDS entities of the participant unit "
                           "(subject, session, acquisition, run)")
    suffix = traits.Str(mandatory=True, desc="BIDS suffix")
    desc = traits.Str(desc="desc entity")
    space = traits.Str(desc="space entity")
    atlas = traits.Str(desc="atlas entity")
    label = traits.Str(desc="label entity")
    part = traits.Str(desc="part entity")
    from_ = traits.Str(desc="from entity (transforms)")
    to = traits.Str(desc="to entity (transforms)")
    mode = traits.Str(desc="mode entity (transforms)")
    datatype = traits.Str("anat", usedefault=True, desc="datatype folder")
    source_files = traits.List(traits.Str, desc="BIDS-URIs or paths of the sources")
    meta_dict = traits.Dict(desc="metadata for the JSON sidecar")
    sidecar = File(exists=True, desc="a JSON file whose content starts the sidecar "
                   "(e.g. column descriptions of a TSV)")
    write_sidecar = traits.Bool(True, usedefault=True,
                                desc="write a JSON sidecar (off for a dseg lookup TSV, "
                                "whose image's sidecar describes both, and for figures)")


class _DerivativesDataSinkOutputSpec(TraitedSpec):
    out_file = File(desc="the written file")
    out_meta = File(desc="the written JSON sidecar")


class DerivativesDataSink(SimpleInterface):
    """Copy a file into the derivatives tree under its BIDS name, with a JSON sidecar."""

    input_spec = _DerivativesDataSinkInputSpec
    output_spec = _DerivativesDataSinkOutputSpec
    # Writing is cheap and must happen on every run (the output folder may be new).
    always_run = True

    def _run_interface(self, runtime):
        entities = {k: v for k, v in self.inputs.entities.items() if v is not None}
        for name, key in (("part", "part"), ("from_", "from"), ("to", "to"),
                          ("mode", "mode"), ("space", "space"), ("atlas", "atlas"),
                          ("label", "label"), ("desc", "desc")):
            value = getattr(self.inputs, name)
            if isdefined(value) and value:
                entities[key] = value
        ext = file_extension(self.inputs.in_file)
        rel = derivative_path(entities, self.inputs.suffix, ext, self.inputs.datatype)
        out = Path(self.inputs.base_directory) / rel
        if ext == ".h5":  # same bytes for the same transform (no HDF5 time stamps)
            copy_h5_atomic(self.inputs.in_file, out)
        else:
            copy_atomic(self.inputs.in_file, out)
        self._results["out_file"] = str(out)
        if ext != ".json" and self.inputs.write_sidecar:
            meta = {}
            if isdefined(self.inputs.sidecar):
                meta.update(json.loads(Path(self.inputs.sidecar).read_text()))
            if isdefined(self.inputs.meta_dict):
                meta.update(self.inputs.meta_dict)
            meta = _without_timings(meta, f"{rel.name}")
            if isdefined(self.inputs.source_files) and self.inputs.source_files:
                meta["Sources"] = list(self.inputs.source_files)
            sidecar = out.with_name(out.name[: -len(ext)] + ".json")
            write_json_atomic(sidecar, meta)
            self._results["out_meta"] = str(sidecar)
        return runtime


class _PrepareStagingInputSpec(BaseInterfaceInputSpec):
    staging_dir = traits.Str(mandatory=True, desc="the unit's staging folder")


class _PrepareStagingOutputSpec(TraitedSpec):
    staging_dir = traits.Str(desc="the (empty) staging folder")


class PrepareStaging(SimpleInterface):
    """Empty a unit's staging folder (files of an interrupted run must not be committed)."""

    input_spec = _PrepareStagingInputSpec
    output_spec = _PrepareStagingOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        import shutil

        folder = Path(self.inputs.staging_dir)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        self._results["staging_dir"] = str(folder)
        return runtime


class _CommitUnitInputSpec(BaseInterfaceInputSpec):
    staging_dir = traits.Str(mandatory=True, desc="the unit's staging folder")
    output_dir = traits.Str(mandatory=True, desc="root of the derivatives dataset")
    entities = traits.Dict(mandatory=True, desc="subject, session, acquisition, run")
    unit_name = traits.Str(desc="BIDS prefix of the unit (e.g. sub-01_ses-1)")
    settings = traits.Dict(desc="settings recorded in the manifest")
    input_warnings = traits.List(traits.Str, desc="input fallbacks of the unit")
    written = traits.List(traits.Any, desc="outputs of every sink (orders the commit "
                          "after them)")


class _CommitUnitOutputSpec(TraitedSpec):
    manifest = File(desc="the unit's manifest, listing every file with its checksum")


class CommitUnit(SimpleInterface):
    """Move a unit's staged derivatives into place as one set, manifest last
    (:func:`cmbprep.utils.derivatives.commit_unit`)."""

    input_spec = _CommitUnitInputSpec
    output_spec = _CommitUnitOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        from ..utils.derivatives import commit_unit

        settings = self.inputs.settings if isdefined(self.inputs.settings) else {}
        warnings = (self.inputs.input_warnings if isdefined(self.inputs.input_warnings)
                    else [])
        entities = {k: v for k, v in self.inputs.entities.items() if v is not None}
        self._results["manifest"] = str(commit_unit(
            self.inputs.staging_dir, self.inputs.output_dir, entities, settings, warnings))
        return runtime
