"""Small physical test scenes: a vein at a chosen angle to B0, optionally a microbleed
beside it, in a block of uniform tissue.

The susceptibility map is drawn on a supersampled grid, its field is computed with the
dipole kernel (:func:`cmbprep.testing.phantom.physics.field_from_susceptibility`), and the
complex gradient-echo signal ``rho exp(-R2* TE) exp(i gamma B0 dB TE)`` is averaged over
the sub-voxels of each voxel (partial volume and intravoxel dephasing), then complex
Gaussian noise is added. B0 is along the scanner ``z`` axis, which is the third array axis
(the slice axis when the slices are the thickest voxel side). Used by the tests that pin
what the detector does with vessels crossing the slice at 0, 45 and 90 degrees to B0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .phantom.physics import GAMMA_RAD, field_from_susceptibility

__all__ = ["VesselScene", "vessel_scene"]

#: R2* (1/s at 3 T) of tissue, venous blood and a haemosiderin core.
_R2STAR = {"tissue": 20.0, "blood": 45.0, "bleed": 400.0}


@dataclass
class VesselScene:
    """Output of :func:`vessel_scene`: ``magnitude`` and ``phase`` (X, Y, Z, 1) in
    radians (phase = +gamma dB TE, i.e. handedness ``left``), ``affine``, ``brain`` mask,
    ``echo_times_s``, the vein axis (unit vector, array axes) through ``vein_point_vox``,
    and ``sphere_vox`` (voxel centre of the microbleed, or ``None``)."""

    magnitude: np.ndarray
    phase: np.ndarray
    affine: np.ndarray
    brain: np.ndarray
    echo_times_s: tuple
    vein_direction: np.ndarray
    vein_point_vox: np.ndarray
    sphere_vox: np.ndarray | None


def vessel_scene(angle_deg, *, voxel_size_mm=(0.8, 0.8, 1.6), shape=(64, 64, 36),
                 vein_radius_mm=0.6, vein_dchi_ppm=0.45, sphere_offset_mm=None,
                 sphere_radius_mm=0.8, sphere_dchi_ppm=1.5, echo_time_s=0.020,
                 field_strength_t=3.0, noise=0.02, supersample=3, seed=0):
    """A straight vein through the centre of a tissue block at ``angle_deg`` to B0.

    Parameters
    ----------
    angle_deg : float
        Angle between the vein and B0 (scanner z, the third array axis): 0 runs through
        the slices, 90 lies in the slice plane.
    voxel_size_mm : 3 floats
    shape : 3 ints
    vein_radius_mm, vein_dchi_ppm : float
        Vessel radius and susceptibility of venous blood relative to tissue.
    sphere_offset_mm : float, optional
        Put a microbleed (``sphere_radius_mm``, ``sphere_dchi_ppm``) this far from the
        vein axis (centre to axis, perpendicular to both the vein and B0 where possible).
    echo_time_s, field_strength_t : float
    noise : float
        Standard deviation of the complex noise relative to the tissue signal.
    supersample : int
        Sub-voxels per voxel side.
    seed : int
        Noise seed.

    Returns
    -------
    VesselScene
    """
    vox = np.asarray(voxel_size_mm, float)
    shape = tuple(int(n) for n in shape)
    sub = vox / supersample
    fine_shape = tuple(n * supersample for n in shape)
    centre_mm = np.asarray(shape, float) * vox / 2.0
    a = np.deg2rad(angle_deg)
    direction = np.array([np.sin(a), 0.0, np.cos(a)])  # in the x-z plane
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(fine_shape, sub)],
                        indexing="ij", sparse=True)
    rel = [g - c for g, c in zip(grids, centre_mm)]
    along = sum(r * d for r, d in zip(rel, direction))
    dist2 = sum(r ** 2 for r in rel) - along ** 2
    vein = dist2 <= vein_radius_mm ** 2
    chi = np.where(vein, vein_dchi_ppm, 0.0).astype(np.float32)
    r2 = np.where(vein, _R2STAR["blood"], _R2STAR["tissue"]).astype(np.float32)
    sphere_vox = None
    if sphere_offset_mm is not None:
        side = np.cross(direction, [0.0, 0.0, 1.0])
        side = side / np.linalg.norm(side) if np.linalg.norm(side) > 1e-6 else np.array(
            [0.0, 1.0, 0.0])
        sphere_mm = centre_mm + sphere_offset_mm * side
        d2 = sum((g - c) ** 2 for g, c in zip(grids, sphere_mm))
        core = d2 <= sphere_radius_mm ** 2
        chi = np.where(core, sphere_dchi_ppm, chi).astype(np.float32)
        r2 = np.where(core, _R2STAR["bleed"], r2).astype(np.float32)
        sphere_vox = sphere_mm / vox - 0.5
    field = field_from_susceptibility(chi, sub, np.array([0.0, 0.0, 1.0]), pad_mm=12.0)
    scale = field_strength_t / 3.0
    gamma_b0 = GAMMA_RAD * field_strength_t * 1e-6  # rad / s / ppm
    signal = np.exp(-r2 * scale * echo_time_s) * np.exp(1j * gamma_b0 * echo_time_s * field)
    signal = signal.reshape(shape[0], supersample, shape[1], supersample, shape[2],
                            supersample).mean(axis=(1, 3, 5))
    rng = np.random.default_rng(seed)
    level = noise * np.exp(-_R2STAR["tissue"] * scale * echo_time_s)
    signal = signal + level * (rng.normal(size=shape) + 1j * rng.normal(size=shape))
    affine = np.diag([*vox, 1.0])
    brain = np.ones(shape, bool)
    return VesselScene(
        magnitude=np.abs(signal).astype(np.float32)[..., None],
        phase=np.angle(signal).astype(np.float32)[..., None],
        affine=affine, brain=brain, echo_times_s=(float(echo_time_s),),
        vein_direction=direction, vein_point_vox=centre_mm / vox - 0.5,
        sphere_vox=sphere_vox)
