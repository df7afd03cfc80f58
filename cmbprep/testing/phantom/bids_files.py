"""Files of one simulated scan in a BIDS dataset: images with sidecars, scanner SWI and
minIP, and the ground truth (truth table with sidecar, brain and vein masks)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from cmbprep.algorithms.arrays import b0_direction
from cmbprep.algorithms.registration import TEMPLATE_NAME
from cmbprep.utils.tables import write_tsv

from .physics import GAMMA_HZ_PER_T

__all__ = ["save_nifti", "write_json", "write_scan_images", "write_truth"]

TRUTH_JSON = {
    "lesion_id": {"Description": "Lesion number within the image"},
    "kind": {"Description": "Lesion type",
             "Levels": {"cmb": "cerebral microbleed (paramagnetic sphere)",
                        "calcification": "calcification (diamagnetic sphere)"}},
    "x": {"Description": "Centre, scanner RAS+", "Units": "mm"},
    "y": {"Description": "Centre, scanner RAS+", "Units": "mm"},
    "z": {"Description": "Centre, scanner RAS+", "Units": "mm"},
    "i": {"Description": "Centre, continuous voxel index along array axis 0 (round for the voxel)"},
    "j": {"Description": "Centre, continuous voxel index along array axis 1"},
    "k": {"Description": "Centre, continuous voxel index along array axis 2"},
    "mni_x": {"Description": f"Centre in template space ({TEMPLATE_NAME})", "Units": "mm"},
    "mni_y": {"Description": f"Centre in template space ({TEMPLATE_NAME})", "Units": "mm"},
    "mni_z": {"Description": f"Centre in template space ({TEMPLATE_NAME})", "Units": "mm"},
    "radius_mm": {"Description": "Physical radius of the sphere", "Units": "mm"},
    "dchi_ppm": {"Description": "Susceptibility relative to the surrounding tissue (SI)",
                 "Units": "ppm"},
    "apparent_diameter_mm": {
        "Description": "Diameter of the sphere with the volume of the voxels where the lesion "
                       "lowers the noise-free magnitude below 50% of the lesion-free magnitude "
                       "at the longest echo (0: not visible by this criterion)",
        "Units": "mm"},
    "min_relative_signal": {
        "Description": "Lowest noise-free magnitude ratio (with / without lesion) over voxels "
                       "at the longest echo"},
    "mars_category": {"Description": "MARS location category",
                      "Levels": {"lobar": "lobar", "deep": "deep",
                                 "infratentorial": "infratentorial"}},
}


def save_nifti(data, affine, path, dtype=np.float32):
    """Write a NIfTI image with qform and sform (code 1) and mm units."""
    img = nib.Nifti1Image(np.asarray(data, dtype), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def write_json(obj, path):
    """Write indented JSON (keys in insertion order) and a final newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def scanner_swi(mag, phase, voxel_size, phase_sign, power=4, sigma_mm=4.0):
    """Scanner-style SWI: magnitude times a negative phase mask of the homodyne-filtered
    phase (Haacke 2004)."""
    z = mag * np.exp(1j * phase)
    sig = [sigma_mm / v for v in voxel_size]
    low = ndi.gaussian_filter(z.real, sig) + 1j * ndi.gaussian_filter(z.imag, sig)
    hp = np.angle(z * np.conj(low))
    para = phase_sign * hp  # > 0 for paramagnetic shift
    mask = np.where(para > 0, np.clip(1.0 - para / np.pi, 0, 1), 1.0)
    return (mag * mask ** power).astype(np.float32)


def scanner_minip(img, voxel_size, slice_axis, slab_mm=8.0):
    """Scanner-style sliding minimum intensity projection over ``round(slab_mm / slice
    thickness)`` slices (may be even, unlike :func:`cmbprep.algorithms.mip.sliding_minip`)."""
    n = max(1, round(slab_mm / voxel_size[slice_axis]))
    return ndi.minimum_filter1d(img, n, axis=slice_axis, mode="nearest")


def _acquisition_sidecar(ph) -> dict:
    """Sidecar fields shared by all gradient-echo images of a scan."""
    b0 = ph.field_strength_t
    return {
        "MagneticFieldStrength": b0,
        "ImagingFrequency": round(GAMMA_HZ_PER_T * b0 / 1e6, 6),
        "Manufacturer": "cmbprep-phantom",
        "MRAcquisitionType": "3D",
        "ScanningSequence": "GR",
        "SequenceVariant": "SP",
        "RepetitionTime": round(max(ph.echo_times_s) + 0.008, 4),
        "FlipAngle": 15,
        "SliceThickness": float(ph.config.voxel_size_mm[2]),
    }


def _phase_data(phase, phase_units):
    """Phase as stored: float32 radians, or int16 in [-4096, 4095] (``arbitrary``)."""
    if phase_units == "rad":
        return phase.astype(np.float32), np.float32
    return np.round(phase / np.pi * 4096).clip(-4096, 4095).astype(np.int16), np.int16


def _write_single_echo(ph, anat, prefix, common, with_phase, phase_units):
    """``_part-mag_T2starw`` (and ``_part-phase_T2starw``) of the first echo."""
    te = ph.echo_times_s[0]
    save_nifti(ph.magnitude[..., 0], ph.affine, anat / f"{prefix}_part-mag_T2starw.nii.gz")
    write_json({**common, "EchoTime": te, "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
               anat / f"{prefix}_part-mag_T2starw.json")
    if with_phase:
        data, dt = _phase_data(ph.phase[..., 0], phase_units)
        save_nifti(data, ph.affine, anat / f"{prefix}_part-phase_T2starw.nii.gz", dtype=dt)
        write_json({**common, "EchoTime": te, "Units": phase_units,
                    "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]},
                   anat / f"{prefix}_part-phase_T2starw.json")


def _write_multi_echo(ph, anat, prefix, common, with_phase, phase_units):
    """``_echo-N_part-{mag,phase}_MEGRE`` of every echo."""
    for e, te in enumerate(ph.echo_times_s):
        base = f"{prefix}_echo-{e + 1}"
        save_nifti(ph.magnitude[..., e], ph.affine, anat / f"{base}_part-mag_MEGRE.nii.gz")
        write_json({**common, "EchoTime": te, "EchoNumber": e + 1,
                    "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
                   anat / f"{base}_part-mag_MEGRE.json")
        if with_phase:
            data, dt = _phase_data(ph.phase[..., e], phase_units)
            save_nifti(data, ph.affine, anat / f"{base}_part-phase_MEGRE.nii.gz", dtype=dt)
            write_json({**common, "EchoTime": te, "EchoNumber": e + 1, "Units": phase_units,
                        "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]},
                       anat / f"{base}_part-phase_MEGRE.json")


def phantom_scanner_swi(ph):
    """The scanner SWI of a simulated subject (first echo), reconstructed with its
    config's ``scanner_swi_power`` and ``scanner_swi_highpass_mm``."""
    return scanner_swi(ph.magnitude[..., 0], ph.phase[..., 0], ph.voxel_size,
                       ph.config.phase_sign, power=ph.config.scanner_swi_power,
                       sigma_mm=ph.config.scanner_swi_highpass_mm)


def _write_scanner_swi(ph, anat, prefix, common):
    """Scanner ``_swi`` and ``_minIP`` images (8 mm slabs along the axis nearest B0)."""
    te = ph.echo_times_s[0]
    vox = ph.voxel_size
    swi = phantom_scanner_swi(ph)
    slice_axis = int(np.argmax(np.abs(b0_direction(ph.affine))))
    save_nifti(swi, ph.affine, anat / f"{prefix}_swi.nii.gz")
    write_json({**common, "EchoTime": te, "ImageType": ["DERIVED", "PRIMARY", "M", "SWI"]},
               anat / f"{prefix}_swi.json")
    save_nifti(scanner_minip(swi, vox, slice_axis), ph.affine, anat / f"{prefix}_minIP.nii.gz")
    write_json({**common, "EchoTime": te,
                "ImageType": ["DERIVED", "PRIMARY", "M", "SWI", "MNIP"],
                "MinIPSlabThickness": 8.0},
               anat / f"{prefix}_minIP.json")


def write_scan_images(ph, anat: Path, prefix: str, input_kind: str, phase_units: str,
                      megre_phase: bool):
    """Images and sidecars of one scan (``input_kind`` as in
    :func:`~cmbprep.testing.phantom.write_bids_dataset`), plus the T1w when simulated."""
    anat.mkdir(parents=True, exist_ok=True)
    common = _acquisition_sidecar(ph)
    if input_kind in ("gre", "magnitude"):
        _write_single_echo(ph, anat, prefix, common, input_kind == "gre", phase_units)
    elif input_kind == "megre":
        _write_multi_echo(ph, anat, prefix, common, megre_phase, phase_units)
    elif input_kind == "swi":
        _write_scanner_swi(ph, anat, prefix, common)
    if ph.t1w is not None:
        save_nifti(ph.t1w, ph.t1w_affine, anat / f"{prefix}_T1w.nii.gz")
        write_json({"MagneticFieldStrength": ph.field_strength_t,
                    "Manufacturer": "cmbprep-phantom", "MRAcquisitionType": "3D"},
                   anat / f"{prefix}_T1w.json")


def write_truth(ph, tdir: Path, prefix: str, simulation: dict):
    """Truth table (+ sidecar with the simulation parameters), brain and vein masks."""
    tdir.mkdir(parents=True, exist_ok=True)
    write_tsv(ph.truth, tdir / f"{prefix}_desc-truth_cmb.tsv", float_format="%.4f")
    meta = dict(TRUTH_JSON)
    meta["SimulationParameters"] = simulation
    write_json(meta, tdir / f"{prefix}_desc-truth_cmb.json")
    save_nifti(ph.brain_mask.astype(np.uint8), ph.affine,
               tdir / f"{prefix}_desc-brain_mask.nii.gz", dtype=np.uint8)
    save_nifti(ph.vein_mask.astype(np.uint8), ph.affine,
               tdir / f"{prefix}_label-vein_mask.nii.gz", dtype=np.uint8)
