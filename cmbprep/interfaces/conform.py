"""Input loading and conformance: read, check and normalise the headers of the inputs.

The voxel order (orientation) of the data is kept: algorithms read the geometry from the
affine. What changes: data become float32, the sform and qform are made consistent
(niworkflows' ``ValidateImage`` rule: a valid sform wins, else the qform), and 4D files
holding several echoes are split into one file per echo.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
)

from ..errors import DataError, IOFailure


def load_image(path: str | Path) -> nib.Nifti1Image:
    """Load a NIfTI image, turning failures into errors naming the file.

    Raises
    ------
    IOFailure
        The file cannot be opened (missing, dangling symlink...) (exit 74).
    DataError
        The file is not a readable NIfTI image (exit 65).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise IOFailure(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise DataError(f"{path}: not a NIfTI image")
        img.get_fdata(dtype=np.float32)  # decompress once: truncated files fail here
    except DataError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"{path}: unreadable NIfTI image ({exc})") from exc
    return img


def conform_affine(img: nib.Nifti1Image, path: str | Path) -> np.ndarray:
    """The image's voxel-to-scanner affine, checked for sanity."""
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise DataError(f"{path}: header affine is singular or not finite")
    return affine


def split_echoes(img: nib.Nifti1Image, path: str | Path) -> list[np.ndarray]:
    """3D image -> [volume]; 4D image -> one volume per 4th-axis index."""
    data = np.asanyarray(img.dataobj).astype(np.float32)
    if data.ndim == 3:
        return [data]
    if data.ndim == 4:
        return [data[..., e] for e in range(data.shape[3])]
    raise DataError(f"{path}: expected a 3D or 4D image, got {data.ndim} dimensions")


def check_unit_inputs(unit) -> list[str]:
    """Read every image of a processing unit and check it before any processing.

    Returns the warnings of documented fallbacks (e.g. a missing single-echo EchoTime).
    Raises :class:`~cmbprep.errors.DataError` (exit 65) or
    :class:`~cmbprep.errors.IOFailure` (exit 74) naming the file.
    """
    images = {}
    for path in list(unit.magnitude) + list(unit.phase) + ([unit.t1w] if unit.t1w else []):
        images[path] = load_image(path)
        conform_affine(images[path], path)
    shapes = {p: images[p].shape[:3] for p in list(unit.magnitude) + list(unit.phase)}
    reference = unit.magnitude[0]
    for path, shape in shapes.items():
        if shape != shapes[reference]:
            raise DataError(f"{path}: shape {shape} differs from {reference} "
                            f"{shapes[reference]}")
        if not np.allclose(images[path].affine, images[reference].affine, atol=1e-3):
            raise DataError(f"{path}: affine differs from that of {reference}")
    from ..algorithms.swi import check_swi_inputs

    return check_swi_inputs(
        magnitude=[str(p) for p in unit.magnitude],
        phase=[str(p) for p in unit.phase],
        echo_times=unit.echo_times,
        input_kind=unit.kind,
        phase_units=unit.phase_units,
    )


class _ConformInputSpec(BaseInterfaceInputSpec):
    magnitude = InputMultiObject(File(exists=True), mandatory=True,
                                 desc="magnitude images, one per echo (or one 4D file)")
    phase = InputMultiObject(File(exists=True), desc="phase images, one per echo")


class _ConformOutputSpec(TraitedSpec):
    magnitude = OutputMultiObject(File(exists=True), desc="float32 magnitude, per echo")
    phase = OutputMultiObject(File(exists=True), desc="float32 phase, per echo")


class ConformInputs(SimpleInterface):
    """Write float32 copies of the inputs with consistent headers, one file per echo."""

    input_spec = _ConformInputSpec
    output_spec = _ConformOutputSpec

    def _conform(self, paths, stem, cwd):
        out = []
        for path in paths:
            img = load_image(path)
            affine = conform_affine(img, path)
            for volume in split_echoes(img, path):
                header = img.header.copy()
                header.set_data_dtype(np.float32)
                new = nib.Nifti1Image(volume, affine, header)
                new.set_sform(affine, code=1)
                new.set_qform(affine, code=1)
                target = Path(cwd) / f"{stem}_echo-{len(out) + 1}.nii.gz"
                new.to_filename(target)
                out.append(str(target))
        return out

    def _run_interface(self, runtime):
        self._results["magnitude"] = self._conform(self.inputs.magnitude, "magnitude",
                                                   runtime.cwd)
        phase = self.inputs.phase if self.inputs.phase else []
        self._results["phase"] = self._conform(phase, "phase", runtime.cwd)
        if phase and len(self._results["phase"]) != len(self._results["magnitude"]):
            raise DataError(f"{phase[0]}: {len(self._results['phase'])} phase echo(es) "
                            f"for {len(self._results['magnitude'])} magnitude echo(es)")
        return runtime
