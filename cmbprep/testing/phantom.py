"""Physics-based phantom of susceptibility-weighted (gradient-echo) MRI with microbleeds.

The phantom builds a head from the ICBM152 2009a maps that nilearn ships (grey matter,
white matter, brain mask, T1), adds deep grey nuclei, extra-cerebral CSF, a skull shell,
scalp, veins (branching cortical veins, medullary veins, internal cerebral veins and the
superior sagittal sinus), cerebral microbleeds (paramagnetic spheres) and optional
calcifications (diamagnetic spheres). It then simulates a gradient-echo acquisition:

* the field perturbation from the susceptibility map with the k-space dipole kernel
  ``D(k) = 1/3 - (k . b0)^2 / |k|^2`` where ``b0`` is the scanner z axis expressed in the
  (possibly oblique, permuted, flipped) array axes of the acquisition grid;
* the field of each lesion analytically (uniformly magnetised sphere) on a supersampled
  grid around the lesion, complex-averaged into the output voxels, so lesions "bloom"
  with echo time, field strength and susceptibility;
* intra-voxel dephasing of the tissue field (sinc of the phase change across a voxel),
  T2* decay per tissue (scaled with field strength), partial volume of all compartments;
* a smooth background field, a smooth receive phase offset, a phase handedness sign,
  a smooth multiplicative receive bias and complex Gaussian noise (Rician magnitude);
* a random head pose (rotation, translation), a random acquisition orientation (oblique
  slices, random storage order and axis flips) and an optional smooth nonlinear
  deformation of the anatomy.

The public API is :class:`PhantomConfig`, :data:`PROTOCOLS`, :func:`simulate_subject`,
:func:`write_bids_dataset` and :func:`write_example_dataset`. See ``docs/phantom.rst``.

Command line::

    python -m cmbprep.testing.phantom OUT_DIR --n-subjects 3 --seed 0 \\
        --protocol small --input-kind gre
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import fft as sfft
from scipy import ndimage as ndi

__all__ = [
    "GAMMA_HZ_PER_T",
    "PROTOCOLS",
    "TISSUES",
    "PhantomConfig",
    "SubjectPhantom",
    "default_count_model",
    "dipole_kernel",
    "field_from_susceptibility",
    "main",
    "simulate_subject",
    "sphere_field_ppm",
    "write_bids_dataset",
    "write_example_dataset",
    "write_subject",
]

#: Proton gyromagnetic ratio / (2 pi), in Hz per tesla.
GAMMA_HZ_PER_T = 42.577478518e6
_GAMMA_RAD = 2.0 * np.pi * GAMMA_HZ_PER_T  # rad / s / T

#: Name of the template space of the ``mni_*`` truth coordinates: nilearn ships the
#: ICBM152 2009a nonlinear *symmetric* maps (``mni_icbm152_*_tal_nlin_sym_09a``).
TEMPLATE_NAME = "MNI152NLin2009aSym"

# float32 bounds that are strictly inside [-pi, pi) when compared in float64
_PI_F32_BELOW = float(np.nextafter(np.float32(np.pi), np.float32(0)))

#: Tissue properties. ``rho``: relative proton density; ``t2star_3t_s``: T2* at 3 T in
#: seconds (R2* is scaled linearly with field strength); ``dchi_ppm``: volume
#: susceptibility relative to water/CSF in ppm (SI). Air is handled separately.
TISSUES: dict[str, dict[str, float]] = {
    "gm": {"rho": 0.80, "t2star_3t_s": 0.045, "dchi_ppm": 0.02},
    "wm": {"rho": 0.70, "t2star_3t_s": 0.040, "dchi_ppm": -0.03},
    "csf": {"rho": 1.00, "t2star_3t_s": 0.200, "dchi_ppm": 0.0},
    "deep_gm": {"rho": 0.78, "t2star_3t_s": 0.025, "dchi_ppm": 0.08},
    "vein": {"rho": 0.85, "t2star_3t_s": 0.010, "dchi_ppm": 0.40},
    "skull": {"rho": 0.05, "t2star_3t_s": 0.002, "dchi_ppm": -2.0},
    "scalp": {"rho": 0.90, "t2star_3t_s": 0.030, "dchi_ppm": 0.0},
}

#: Acquisition presets. ``voxel_size_mm`` is (read, phase, slice) in mm.
PROTOCOLS: dict[str, dict] = {
    "small": {"voxel_size_mm": (1.5, 1.5, 1.5), "echo_times_s": (0.020,),
              "field_strength_t": 3.0},
    "itp": {"voxel_size_mm": (0.5, 0.5, 1.0), "echo_times_s": (0.020,),
            "field_strength_t": 3.0, "fov_mm": (180.0, 220.0, 150.0)},
    "clinical": {"voxel_size_mm": (0.9, 0.9, 2.0), "echo_times_s": (0.020,),
                 "field_strength_t": 3.0},
    "iso1": {"voxel_size_mm": (1.0, 1.0, 1.0), "echo_times_s": (0.015,),
             "field_strength_t": 3.0},
    "megre": {"voxel_size_mm": (1.5, 1.5, 1.5), "echo_times_s": (0.010, 0.020, 0.030),
              "field_strength_t": 3.0},
}

# Head layers outside the brain mask, as distances from the brain surface in mm.
_CSF_OUTER_MM = 3.0
_SKULL_OUTER_MM = 9.0
_SCALP_OUTER_MM = 15.0
_AIR_DCHI_PPM = 9.4  # air relative to water
_TEMPLATE_PAD_MM = 24.0


@dataclass
class PhantomConfig:
    """Parameters of one simulated subject (all physical units).

    Attributes
    ----------
    voxel_size_mm : tuple of 3 float
        Voxel size along the (read, phase, slice) acquisition axes, mm. The stored array
        order may be permuted (``random_storage_order``).
    echo_times_s : tuple of float
        Echo times, seconds.
    field_strength_t : float
        Main field B0, tesla (B0 is along scanner z).
    fov_mm : tuple of 3 (float or None), optional
        Field of view along (read, phase, slice), mm. ``None`` (or a ``None`` entry)
        covers the whole head. A short slice FOV gives a slab centred on the brain
        (shifted by ``slab_offset_mm`` along the slice axis). The field is always
        computed on the whole head, then cropped.
    slab_offset_mm : float
        Shift of the FOV centre along the slice axis from the brain centre, mm.
    n_cmbs : int
        Number of microbleeds.
    cmb_radius_mm : (float, float)
        Range of the physical CMB radius, mm (uniform).
    cmb_dchi_ppm : (float, float)
        Range of the CMB susceptibility relative to tissue, ppm (uniform).
    cmb_location_weights : dict
        Relative probability of the MARS categories ``lobar``, ``deep``,
        ``infratentorial``.
    n_calcifications : int
        Number of calcifications (diamagnetic spheres).
    calcification_radius_mm, calcification_dchi_ppm : (float, float)
        Ranges for calcifications (dchi negative).
    min_lesion_spacing_mm : float
        Minimum distance between lesion centres, mm.
    n_veins : int
        Number of random veins (about 60 % branching cortical veins, 40 % straight
        medullary veins crossing slices). When > 0, the internal cerebral veins and the
        superior sagittal sinus are added.
    vein_radius_mm : (float, float)
        Range of vein radii, mm.
    venous_dchi_ppm : float
        Susceptibility of venous blood relative to tissue, ppm.
    noise_level : float
        Standard deviation of the complex Gaussian noise (real and imaginary parts),
        as a fraction of the mean white-matter signal at the first echo.
    bias_strength : float
        Peak fractional deviation of the smooth multiplicative receive bias.
    background_field_ppm : float
        Peak amplitude of the smooth background field (shim residual), ppm.
    phase_offset : bool
        Add a smooth, echo-independent receive phase offset.
    phase_sign : int
        +1: a positive field shift (paramagnetic) gives a positive phase;
        -1: the opposite handedness.
    random_affine : bool
        Random head pose and acquisition orientation.
    max_rotation_deg, max_translation_mm : float
        Head pose: rotation about a random axis up to this angle, translation up to this
        distance per axis.
    max_oblique_deg : float
        Rotation of the slice frame from the scanner axes (oblique acquisition).
    random_storage_order : bool
        Random permutation and flips of the stored array axes.
    deformation_mm : float
        Peak magnitude of a smooth nonlinear deformation of the anatomy, mm (0: off).
    include_head : bool
        Add extra-cerebral CSF, skull, scalp and surrounding air.
    include_t1w : bool
        Also simulate a T1-weighted image (1 mm, own grid, same head pose).
    t1w_voxel_size_mm : float
        Isotropic voxel size of the T1w image, mm.
    lesion_subvoxel_mm : float
        Target spacing of the supersampling grid around lesions, mm.
    """

    voxel_size_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    echo_times_s: tuple[float, ...] = (0.020,)
    field_strength_t: float = 3.0
    fov_mm: tuple | None = None
    slab_offset_mm: float = 0.0
    n_cmbs: int = 5
    cmb_radius_mm: tuple[float, float] = (0.2, 1.5)
    cmb_dchi_ppm: tuple[float, float] = (0.4, 3.0)
    cmb_location_weights: dict = field(
        default_factory=lambda: {"lobar": 0.5, "deep": 0.3, "infratentorial": 0.2})
    n_calcifications: int = 0
    calcification_radius_mm: tuple[float, float] = (0.5, 1.5)
    calcification_dchi_ppm: tuple[float, float] = (-2.0, -0.5)
    min_lesion_spacing_mm: float = 10.0
    n_veins: int = 30
    vein_radius_mm: tuple[float, float] = (0.3, 1.0)
    venous_dchi_ppm: float = 0.40
    noise_level: float = 0.02
    bias_strength: float = 0.2
    background_field_ppm: float = 0.3
    phase_offset: bool = True
    phase_sign: int = 1
    random_affine: bool = True
    max_rotation_deg: float = 15.0
    max_translation_mm: float = 10.0
    max_oblique_deg: float = 10.0
    random_storage_order: bool = True
    deformation_mm: float = 0.0
    include_head: bool = True
    include_t1w: bool = False
    t1w_voxel_size_mm: float = 1.0
    lesion_subvoxel_mm: float = 0.3

    @classmethod
    def from_protocol(cls, name: str = "small", **overrides) -> PhantomConfig:
        """Config from a :data:`PROTOCOLS` preset, with keyword overrides."""
        if name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {name!r}; choose from {sorted(PROTOCOLS)}")
        params = dict(PROTOCOLS[name])
        params.update(overrides)
        return cls(**params)

    def __post_init__(self):
        self.voxel_size_mm = tuple(float(v) for v in self.voxel_size_mm)
        self.echo_times_s = tuple(float(t) for t in np.atleast_1d(self.echo_times_s))
        if len(self.voxel_size_mm) != 3 or min(self.voxel_size_mm) <= 0:
            raise ValueError(f"voxel_size_mm must be 3 positive numbers: {self.voxel_size_mm}")
        if not self.echo_times_s or min(self.echo_times_s) <= 0:
            raise ValueError(f"echo_times_s must be positive: {self.echo_times_s}")
        if self.phase_sign not in (1, -1):
            raise ValueError(f"phase_sign must be +1 or -1, got {self.phase_sign}")

    def to_dict(self) -> dict:
        """JSON-serialisable dict of all parameters."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass
class SubjectPhantom:
    """One simulated subject. Arrays are in stored voxel order of ``affine``.

    Attributes
    ----------
    magnitude : ndarray (X, Y, Z, E) float32
    phase : ndarray (X, Y, Z, E) float32, wrapped to [-pi, pi), rad
    affine : ndarray (4, 4)
        Voxel index to scanner RAS+ mm.
    echo_times_s : tuple of float
    field_strength_t : float
    brain_mask, vein_mask, head_mask : ndarray (X, Y, Z) bool
    truth : pandas.DataFrame
        One row per lesion (see :func:`simulate_subject`).
    field_ppm : ndarray (X, Y, Z) float32
        Noise-free field perturbation (tissue, veins, lesions at voxel centres,
        background), ppm of B0.
    susceptibility_ppm : ndarray (X, Y, Z) float32
        Voxel susceptibility relative to water (lesions excluded; air set to 9.4), ppm.
    vein_fraction : ndarray (X, Y, Z) float32
        Venous blood volume fraction.
    t1w, t1w_affine : ndarray or None
        T1-weighted image and its affine when ``include_t1w``.
    config : PhantomConfig
    seed : int
    """

    magnitude: np.ndarray
    phase: np.ndarray
    affine: np.ndarray
    echo_times_s: tuple
    field_strength_t: float
    brain_mask: np.ndarray
    vein_mask: np.ndarray
    head_mask: np.ndarray
    truth: pd.DataFrame
    field_ppm: np.ndarray
    susceptibility_ppm: np.ndarray
    vein_fraction: np.ndarray
    config: PhantomConfig
    seed: int
    t1w: np.ndarray | None = None
    t1w_affine: np.ndarray | None = None
    _xfm: _TemplateTransform | None = None

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size in stored array order, mm."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def scanner_to_template(self, points_mm) -> np.ndarray:
        """Map (N, 3) scanner RAS+ mm points to template (MNI) mm."""
        return self._xfm.scanner_to_template(points_mm)

    def template_to_scanner(self, points_mm) -> np.ndarray:
        """Map (N, 3) template (MNI) mm points to scanner RAS+ mm."""
        return self._xfm.template_to_scanner(points_mm)


# --------------------------------------------------------------------------------------
# Template anatomy (cached per process)
# --------------------------------------------------------------------------------------


def _apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to (..., 3) points."""
    points = np.asarray(points, dtype=float)
    out = np.empty(points.shape, float)
    for r in range(3):
        out[..., r] = (points[..., 0] * affine[r, 0] + points[..., 1] * affine[r, 1]
                       + points[..., 2] * affine[r, 2] + affine[r, 3])
    return out


def _template_file(name: str) -> Path:
    """Path of a template file shipped inside the nilearn package (no download, and no
    import of ``nilearn.datasets``, which pulls in scikit-learn)."""
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nilearn is required for the phantom templates")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"nilearn template file not found: {path}")
    return path


@functools.lru_cache(maxsize=1)
def _template() -> dict:
    """Template-space maps on the 1 mm ICBM152 grid and a coarse padded distance map."""
    def load(name):
        img = nib.load(str(_template_file(f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")))
        data = np.asarray(img.dataobj, dtype=np.float32)
        return data / data.max(), np.asarray(img.affine, float)

    # same rescaling and brain mask (T1 > 0.2) as nilearn.datasets.load_mni152_*
    gm, affine = load("gm")
    wm, _ = load("wm")
    t1, _ = load("t1")
    brain = (t1 > 0.2).astype(np.float32)
    # crop to the brain (+2 voxels) to halve the work below
    nz = np.argwhere(brain > 0.5)
    lo_idx = np.maximum(nz.min(0) - 2, 0)
    hi_idx = np.minimum(nz.max(0) + 3, brain.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo_idx, hi_idx))
    gm, wm, t1, brain = (np.ascontiguousarray(a[crop]) for a in (gm, wm, t1, brain))
    affine = affine.copy()
    affine[:3, 3] = _apply_affine(affine, lo_idx[None].astype(float))[0]
    bbox_mm = (_apply_affine(affine, (nz.min(0) - lo_idx)[None].astype(float))[0],
               _apply_affine(affine, (nz.max(0) - lo_idx)[None].astype(float))[0])
    del nz
    gm = np.minimum(gm, brain)
    wm = np.minimum(wm, brain - gm)
    inv = np.linalg.inv(affine)

    # Signed distance to the brain surface (mm, > 0 outside) on a padded 2 mm grid.
    step = 2
    pad = int(_TEMPLATE_PAD_MM / step)
    coarse = brain[::step, ::step, ::step] > 0.5
    coarse = np.pad(coarse, pad)
    dist = (ndi.distance_transform_edt(~coarse) - ndi.distance_transform_edt(coarse)) * step
    dist = ndi.gaussian_filter(dist.astype(np.float32), 1.0)
    dist_affine = affine @ np.diag([step, step, step, 1.0])
    dist_affine[:3, 3] -= pad * step * np.diag(affine)[:3]  # nilearn grid is axis-aligned

    # Coordinates of every template voxel (mm) for region definitions.
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in gm.shape], indexing="ij", sparse=True)
    x = affine[0, 0] * ii + affine[0, 3]
    y = affine[1, 1] * jj + affine[1, 3]
    z = affine[2, 2] * kk + affine[2, 3]
    # depth below the brain surface (mm) at 1 mm, nearest neighbour from the 2 mm map
    depth = -dist[np.ix_(*[pad + np.arange(n) // step for n in gm.shape])]
    infra = (brain > 0.5) & (
        ((np.abs(x) < 16) & (y > -45) & (y < -8) & (z < -12))
        | ((y < -42) & (z < -16 - 0.15 * np.abs(x)) & (np.abs(x) < 52))
    )
    deep_box = (np.abs(x) < 34) & (y > -40) & (y < 30) & (z > -14) & (z < 26)
    deep = (gm > 0.3) & (depth > 14) & deep_box & ~infra
    deep_f = ndi.gaussian_filter(deep.astype(np.float32), 0.7)

    cortical = (gm > 0.5) & ~deep & ~infra & (depth > 1.5)
    near_gm = ndi.gaussian_filter((gm > 0.5).astype(np.float32), 1.5) > 0.05  # within ~3 mm
    juxta = (wm > 0.6) & near_gm & ~deep & ~infra
    lobar = (cortical | juxta) & (depth > 2.5)
    deep_region = ((deep & (gm > 0.5)) | ((wm > 0.7) & (depth > 16) & deep_box)) & ~infra
    infra_region = infra & (gm + wm > 0.7) & (depth > 2.5)
    wm_deep = (wm > 0.7) & (depth > 18) & ~infra
    surface = (brain > 0.5) & (depth > 1.0) & (depth < 3.0) & (z > -20) & (gm > 0.2)

    dist_and_grad = np.stack([dist] + [g / step for g in np.gradient(dist)]).astype(np.float32)
    shell = lambda lo, hi: _apply_affine(dist_affine, np.argwhere((dist >= lo) & (dist < hi)))

    def idx(mask):
        return np.argwhere(mask).astype(np.int16)

    return {
        "affine": affine,
        "inv_affine": inv,
        "gm": gm,
        "wm": wm,
        "brain": brain,
        "deep": deep_f,
        "t1": t1,
        "dist": dist,
        "dist_affine": dist_affine,
        "dist_inv_affine": np.linalg.inv(dist_affine),
        "dist_and_grad": dist_and_grad,
        # points on the outer surface of the head / brain (template mm), for grid extents
        "head_surface": shell(_SCALP_OUTER_MM - 2.0, _SCALP_OUTER_MM),
        "brain_surface": shell(-2.0, 0.0),
        "regions": {"lobar": idx(lobar), "deep": idx(deep_region),
                    "infratentorial": idx(infra_region)},
        "surface": idx(surface),
        "wm_deep": idx(wm_deep),
        "brain_bbox_mm": bbox_mm,
        "infra_mask": infra,
    }


def _sample(volume, inv_affine, points_mm, order=1, cval=0.0):
    """Sample ``volume`` at (N, 3) mm points (linear interpolation)."""
    vox = _apply_affine(inv_affine, points_mm)
    return ndi.map_coordinates(volume, vox.T, order=order, mode="constant", cval=cval,
                               prefilter=False).astype(np.float32)


def _distance_and_gradient(points_mm):
    """Signed distance to the brain surface (mm, > 0 outside) and its gradient."""
    t = _template()
    stack = t["dist_and_grad"]
    vox = _apply_affine(t["dist_inv_affine"], np.atleast_2d(points_mm))
    vox = np.clip(vox, 0, np.array(stack.shape[1:]) - 1.000001)
    base = np.floor(vox).astype(int)
    fr = vox - base
    out = np.zeros((4, len(vox)))
    for corner in np.ndindex(2, 2, 2):
        c = np.array(corner)
        w = np.prod(np.where(c, fr, 1 - fr), axis=1)
        idx = base + c
        out += w * stack[:, idx[:, 0], idx[:, 1], idx[:, 2]]
    return out[0], out[1:].T


# --------------------------------------------------------------------------------------
# Spatial transforms
# --------------------------------------------------------------------------------------


def _rotation_matrix(axis, angle_rad) -> np.ndarray:
    axis = np.asarray(axis, float)
    axis = axis / np.linalg.norm(axis)
    x, y, z = axis
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    C = 1 - c
    return np.array([
        [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
        [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
        [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
    ])


class _TemplateTransform:
    """Template -> scanner: ``x = R (m + u(m)) + t`` with a smooth displacement ``u``."""

    def __init__(self, rotation, translation, displacement=None, disp_affine=None,
                 inverse_displacement=None):
        self.rotation = np.asarray(rotation, float)
        self.translation = np.asarray(translation, float)
        self.displacement = displacement  # (3, nx, ny, nz) float32 on a coarse grid, mm
        self.disp_affine = disp_affine
        self.disp_inv_affine = None if disp_affine is None else np.linalg.inv(disp_affine)
        self.inverse_displacement = inverse_displacement
        if displacement is not None and inverse_displacement is None:
            self.inverse_displacement = self._invert_grid()

    def _u(self, field, points):
        vox = _apply_affine(self.disp_inv_affine, points).T
        return np.stack([ndi.map_coordinates(f, vox, order=1, mode="nearest")
                         for f in field], -1)

    def _invert_grid(self):
        shape = self.displacement.shape[1:]
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"),
                        -1).reshape(-1, 3)
        pts = _apply_affine(self.disp_affine, grid)
        inv = np.zeros_like(pts)
        for _ in range(15):  # contraction: |grad u| <~ 0.2 for the default wavelengths
            inv = -self._u(self.displacement, pts + inv)
        return np.ascontiguousarray(inv.T.reshape((3,) + shape).astype(np.float32))

    def template_to_scanner(self, points_mm):
        m = np.atleast_2d(np.asarray(points_mm, float))
        if self.displacement is not None:
            m = m + self._u(self.displacement, m)
        fwd = np.eye(4)
        fwd[:3, :3], fwd[:3, 3] = self.rotation, self.translation
        return _apply_affine(fwd, m)

    def scanner_to_template(self, points_mm, exact=True):
        inv = np.eye(4)
        inv[:3, :3] = self.rotation.T
        inv[:3, 3] = -self.rotation.T @ self.translation
        y = _apply_affine(inv, np.atleast_2d(np.asarray(points_mm, float)))
        if self.displacement is None:
            return y
        m = y + self._u(self.inverse_displacement, y)
        if exact:  # fixed-point refinement: solve m + u(m) = y
            for _ in range(20):
                m = y - self._u(self.displacement, m)
        return m


def _random_transform(cfg: PhantomConfig, rng) -> _TemplateTransform:
    if cfg.random_affine:
        axis = rng.normal(size=3)
        angle = np.deg2rad(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
        rotation = _rotation_matrix(axis, angle)
        translation = rng.uniform(-cfg.max_translation_mm, cfg.max_translation_mm, 3)
    else:
        rotation, translation = np.eye(3), np.zeros(3)
    displacement = disp_affine = None
    if cfg.deformation_mm > 0:
        t = _template()
        lo, hi = t["brain_bbox_mm"]
        step = 4.0
        lo = lo - _TEMPLATE_PAD_MM - 2 * step
        hi = hi + _TEMPLATE_PAD_MM + 2 * step
        shape = tuple(int(np.ceil((h - l) / step)) + 1 for l, h in zip(lo, hi))
        disp_affine = np.diag([step, step, step, 1.0])
        disp_affine[:3, 3] = lo
        # each component: smooth random plane-cosine field (peak <= 1), wavelengths
        # 60-150 mm; the vector norm is at most deformation_mm
        centre = 0.5 * (lo + hi)
        disp = np.stack([
            _SmoothField(rng, centre, n_terms=4, wavelength_mm=(60.0, 150.0)).on_grid(
                disp_affine, shape) for _ in range(3)])
        disp *= cfg.deformation_mm / np.sqrt(3.0)
        displacement = disp.astype(np.float32)
    return _TemplateTransform(rotation, translation, displacement, disp_affine)


def _acquisition_frame(cfg: PhantomConfig, rng):
    """Unit vectors (columns) of the read/phase/slice axes in scanner coordinates and the
    storage permutation."""
    frame = np.eye(3)
    if cfg.random_affine:
        if rng.random() < 0.5:  # swap in-plane read/phase directions
            frame = frame[:, [1, 0, 2]]
        frame = frame * rng.choice([-1.0, 1.0], size=3)
        if cfg.max_oblique_deg > 0:
            oblique = _rotation_matrix(rng.normal(size=3),
                                       np.deg2rad(rng.uniform(0, cfg.max_oblique_deg)))
            frame = oblique @ frame
    perm = np.arange(3)
    if cfg.random_affine and cfg.random_storage_order:
        perm = rng.permutation(3)
    return frame, perm


# --------------------------------------------------------------------------------------
# Veins and lesions (template space geometry)
# --------------------------------------------------------------------------------------


def _walk(start, direction, n_steps, rng, target_depth=None, step=1.0, wiggle=0.15,
          plane_x=None):
    """Smooth random curve (template mm); optionally kept at ``target_depth`` below the
    brain surface (negative: outside)."""
    pts = [np.asarray(start, float)]
    d = np.asarray(direction, float)
    d /= np.linalg.norm(d)
    for _ in range(n_steps):
        d = d + wiggle * rng.normal(size=3)
        p = pts[-1].copy()
        if target_depth is not None:
            dist, grad = _distance_and_gradient(p[None])
            g = grad[0] / max(np.linalg.norm(grad[0]), 1e-6)
            d = d - np.dot(d, g) * g  # stay tangential to the surface
        if plane_x is not None:
            d[0] = 0.0
        d /= max(np.linalg.norm(d), 1e-9)
        p = p + step * d
        if target_depth is not None:
            dist, grad = _distance_and_gradient(p[None])
            g = grad[0] / max(np.linalg.norm(grad[0]), 1e-6)
            p = p - (dist[0] + target_depth) * g  # depth = -dist
        if plane_x is not None:
            p[0] = plane_x
        pts.append(p)
    return np.array(pts)


def _generate_veins(cfg: PhantomConfig, rng) -> list[tuple[np.ndarray, float]]:
    """List of (points (N, 3) template mm, radius mm) vessel centre lines."""
    if cfg.n_veins <= 0:
        return []
    t = _template()
    aff = t["affine"]
    r_lo, r_hi = cfg.vein_radius_mm
    veins: list[tuple[np.ndarray, float]] = []
    n_cortical = round(0.6 * cfg.n_veins)
    for _ in range(n_cortical):
        start = _apply_affine(aff, t["surface"][rng.integers(len(t["surface"]))])
        radius = rng.uniform(0.5 * (r_lo + r_hi), r_hi)
        pts = _walk(start, rng.normal(size=3), int(rng.integers(30, 80)), rng,
                    target_depth=rng.uniform(1.0, 2.5))
        veins.append((pts, radius))
        for _b in range(int(rng.integers(0, 3))):  # branches
            origin = pts[rng.integers(len(pts) // 4, len(pts))]
            branch = _walk(origin, rng.normal(size=3), int(rng.integers(10, 30)), rng,
                           target_depth=rng.uniform(1.0, 2.5))
            veins.append((branch, max(r_lo, 0.7 * radius)))
    for _ in range(cfg.n_veins - n_cortical):  # medullary veins: straight, radial
        start = _apply_affine(aff, t["wm_deep"][rng.integers(len(t["wm_deep"]))])
        _, grad = _distance_and_gradient(start[None])
        direction = grad[0] / max(np.linalg.norm(grad[0]), 1e-6)
        pts = _walk(start, direction, int(rng.integers(15, 30)), rng, wiggle=0.03)
        veins.append((pts, rng.uniform(r_lo, min(r_hi, r_lo + 0.25))))
    # internal cerebral veins (paired, deep) and the superior sagittal sinus
    for side in (-1.0, 1.0):
        start = np.array([2.5 * side, 2.0, 14.0]) + rng.normal(scale=0.5, size=3)
        pts = np.linspace(start, np.array([1.5 * side, -36.0, 6.0]), 40)
        pts = pts + np.stack([np.zeros(40), np.zeros(40), 2.0 * np.sin(np.linspace(0, np.pi, 40))], -1)
        veins.append((pts, min(1.0, r_hi)))
    top = np.array([0.0, 55.0, 60.0])
    while _distance_and_gradient(top[None])[0][0] < 3.0 and top[2] < 120:
        top[2] += 1.0
    sss = _walk(top, np.array([0.0, -1.0, 0.3]), 150, rng, target_depth=-3.0, wiggle=0.02,
                plane_x=0.0)
    sss = sss[sss[:, 2] > -5]
    veins.append((sss, 2.5))
    return veins


@functools.lru_cache(maxsize=8)
def _cached_veins(seed: int, n_veins: int, vein_radius_mm: tuple) -> tuple:
    """Vein centre lines of an anatomy seed (template space; random stream ``[seed, 0, 1]``),
    cached because they only depend on these arguments."""
    cfg = PhantomConfig(n_veins=n_veins, vein_radius_mm=vein_radius_mm)
    veins = _generate_veins(cfg, np.random.default_rng([seed, 0, 1]))
    for pts, _ in veins:
        pts.setflags(write=False)
    return tuple(veins)


def _resample_polyline(points, spacing):
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    if s[-1] <= 0:
        return points[:1]
    n = max(int(np.ceil(s[-1] / spacing)) + 1, 2)
    si = np.linspace(0, s[-1], n)
    return np.stack([np.interp(si, s, points[:, a]) for a in range(3)], -1)


def _place_lesions(cfg: PhantomConfig, rng, vein_points, xfm, fov_check) -> list[dict]:
    """Lesion centres in template space, away from each other and from veins."""
    from scipy.spatial import cKDTree

    t = _template()
    aff = t["affine"]
    tree = cKDTree(vein_points) if len(vein_points) else None
    rows = []
    centres: list[np.ndarray] = []
    weights = {k: float(v) for k, v in cfg.cmb_location_weights.items() if v > 0}
    cats = sorted(weights)
    probs = np.array([weights[c] for c in cats])
    probs = probs / probs.sum()
    specs = [("cmb", cfg.cmb_radius_mm, cfg.cmb_dchi_ppm)] * cfg.n_cmbs + [
        ("calcification", cfg.calcification_radius_mm, cfg.calcification_dchi_ppm)
    ] * cfg.n_calcifications
    for kind, r_range, chi_range in specs:
        radius = float(rng.uniform(*r_range))
        dchi = float(rng.uniform(*chi_range))
        drawn = str(rng.choice(cats, p=probs)) if kind == "cmb" else str(
            rng.choice(["deep", "lobar"], p=[0.7, 0.3]))
        placed = False
        # the drawn category first; if it cannot hold the lesion (e.g. outside a slab FOV
        # or full), the other categories
        for category in [drawn] + [c for c in ("lobar", "deep", "infratentorial")
                                   if c != drawn]:
            candidates = t["regions"][category]
            for _attempt in range(500):
                m = _apply_affine(aff, candidates[rng.integers(len(candidates))])
                m = m + rng.uniform(-0.5, 0.5, 3)
                if any(np.linalg.norm(m - c) < cfg.min_lesion_spacing_mm for c in centres):
                    continue
                if tree is not None and tree.query(m)[0] < radius + 4.0:
                    continue
                if not fov_check(xfm.template_to_scanner(m[None])[0]):
                    continue
                placed = True
                break
            if placed:
                break
        if not placed:
            continue  # no room anywhere (tiny FOV): the truth table has fewer lesions
        centres.append(m)
        rows.append({"kind": kind, "mni": m, "radius_mm": radius, "dchi_ppm": dchi,
                     "mars_category": category})
    return rows


# --------------------------------------------------------------------------------------
# Physics
# --------------------------------------------------------------------------------------


def dipole_kernel(shape, voxel_size, b0_direction) -> np.ndarray:
    """k-space unit dipole kernel ``D(k) = 1/3 - (k.b0)^2 / |k|^2`` for ``rfftn``.

    Parameters
    ----------
    shape : tuple of int
        Array shape (real space).
    voxel_size : tuple of float
        Voxel size per array axis, mm.
    b0_direction : array of 3 float
        Unit vector of B0 expressed in the (orthonormal) array axes.

    Returns
    -------
    ndarray, shape ``shape[:-1] + (shape[-1] // 2 + 1,)``, float32; ``D(0) = 0``.
    """
    ks = [sfft.fftfreq(n, d=v) for n, v in zip(shape[:-1], voxel_size[:-1])]
    ks.append(sfft.rfftfreq(shape[-1], d=voxel_size[-1]))
    kx, ky, kz = np.meshgrid(*[k.astype(np.float32) for k in ks], indexing="ij", sparse=True)
    b = np.asarray(b0_direction, np.float32)
    kb = kx * b[0] + ky * b[1] + kz * b[2]
    k2 = kx * kx + ky * ky + kz * kz
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.float32(1 / 3) - kb * kb / k2
    kernel[0, 0, 0] = 0.0
    return kernel.astype(np.float32)


def field_from_susceptibility(chi_ppm, voxel_size, b0_direction, pad_mm=40.0) -> np.ndarray:
    """Field perturbation (ppm of B0) of a susceptibility map (ppm) by k-space dipole
    convolution, with zero padding of ``pad_mm`` on every side (outside = 0)."""
    chi_ppm = np.asarray(chi_ppm, np.float32)
    pads = [int(np.ceil(pad_mm / v)) for v in voxel_size]
    shape = tuple(sfft.next_fast_len(n + 2 * p, real=True)
                  for n, p in zip(chi_ppm.shape, pads))
    spec = sfft.rfftn(chi_ppm, s=shape, workers=1)
    spec *= dipole_kernel(shape, voxel_size, b0_direction)
    out = sfft.irfftn(spec, s=shape, workers=1)
    del spec
    sl = tuple(slice(0, n) for n in chi_ppm.shape)
    return np.ascontiguousarray(out[sl], dtype=np.float32)


def sphere_field_ppm(points_mm, centre_mm, radius_mm, dchi_ppm) -> np.ndarray:
    """Field (ppm of B0) of a uniformly magnetised sphere, B0 along scanner z.

    ``dB/B0 = dchi/3 (a/r)^3 (3 cos^2(theta) - 1)`` outside, 0 inside (Lorentz-corrected).
    """
    d = np.asarray(points_mm, float) - np.asarray(centre_mm, float)
    r2 = np.einsum("...i,...i->...", d, d)
    r2 = np.maximum(r2, 1e-12)
    cos2 = d[..., 2] ** 2 / r2
    a3 = radius_mm ** 3
    out = dchi_ppm / 3.0 * a3 / r2 ** 1.5 * (3.0 * cos2 - 1.0)
    return np.where(r2 > radius_mm ** 2, out, 0.0)


class _SmoothField:
    """Smooth random function of scanner position: a sum of random plane cosines with
    wavelengths in ``wavelength_mm``, scaled so that its peak magnitude is at most 1."""

    def __init__(self, rng, centre, n_terms=6, wavelength_mm=(120.0, 300.0)):
        k = rng.normal(size=(n_terms, 3))
        self.k = k / np.linalg.norm(k, axis=1, keepdims=True)
        self.wavelength = rng.uniform(*wavelength_mm, n_terms)
        self.phase = rng.uniform(0, 2 * np.pi, n_terms)
        amp = rng.normal(size=n_terms)
        self.amp = amp / np.abs(amp).sum()
        self.centre = np.asarray(centre, float)

    def on_grid(self, affine, shape) -> np.ndarray:
        """Evaluate on the voxel centres of a grid (separable: no coordinate arrays)."""
        out = np.zeros(shape, np.float32)
        origin = affine[:3, 3] - self.centre
        for k, lam, ph, a in zip(self.k, self.wavelength, self.phase, self.amp):
            kk = 2 * np.pi * k / lam
            per_axis = affine[:3, :3].T @ kk  # phase increment per voxel along each axis
            e = [np.exp(1j * per_axis[d] * np.arange(n)).astype(np.complex64)
                 for d, n in enumerate(shape)]
            c0 = np.complex64(np.exp(1j * (kk @ origin + ph)))
            out += np.float32(a) * (c0 * e[0][:, None, None] * e[1][None, :, None]
                                    * e[2][None, None, :]).real
        return out

    def __call__(self, points_mm) -> np.ndarray:
        d = np.asarray(points_mm, float) - self.centre
        val = np.zeros(len(d))
        for k, lam, ph, a in zip(self.k, self.wavelength, self.phase, self.amp):
            val += a * np.cos(2 * np.pi * (d @ k) / lam + ph)
        return val.astype(np.float32)


# --------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------


def _r2star(tissue, b0):
    return 1.0 / TISSUES[tissue]["t2star_3t_s"] * (b0 / 3.0)


def _splat_veins(veins_scanner, inv_affine, shape, vox_mm):
    """Venous volume fraction by splatting cross-section samples of each vessel.

    Returns the fraction and the fraction weighted by ``sin^2`` of the angle between the
    vessel and B0 (scanner z), used for the extravascular static dephasing.
    """
    flat_all, weight_all, sin2_all = [], [], []
    vmin = float(min(vox_mm))
    vvol = float(np.prod(vox_mm))
    ds = vmin / 4.0
    for pts, radius in veins_scanner:
        pts = _resample_polyline(pts, ds)
        if len(pts) < 2:
            continue
        tang = np.gradient(pts, axis=0)
        tang /= np.maximum(np.linalg.norm(tang, axis=1, keepdims=True), 1e-9)
        sin2 = 1.0 - tang[:, 2] ** 2
        helper = np.where(np.abs(tang[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
        u = np.cross(tang, helper)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        w = np.cross(tang, u)
        n_rings = max(1, int(np.ceil(radius / (vmin / 2.0))))
        offsets = [(0.0, 0.0, 1.0)]
        area = [np.pi * (radius / (2 * n_rings)) ** 2]
        for ring in range(1, n_rings + 1):
            r_in, r_out = (ring - 0.5) * radius / n_rings, min(ring + 0.5, n_rings) * radius / n_rings
            rr = 0.5 * (r_in + r_out)
            n_ang = 6 * ring
            a_ring = np.pi * (r_out ** 2 - r_in ** 2)
            for ang in np.arange(n_ang) * 2 * np.pi / n_ang:
                offsets.append((rr * np.cos(ang), rr * np.sin(ang), 1.0))
                area.append(a_ring / n_ang)
        area = np.array(area)
        area *= np.pi * radius ** 2 / area.sum()
        for (ou, ow, _), a in zip(offsets, area):
            p = pts + ou * u + ow * w
            vox = _apply_affine(inv_affine, p)
            base = np.floor(vox).astype(int)
            fr = vox - base
            weight = a * ds / vvol
            for corner in np.ndindex(2, 2, 2):
                idx = base + np.array(corner)
                cw = np.prod(np.where(np.array(corner), fr, 1 - fr), axis=1) * weight
                ok = np.all((idx >= 0) & (idx < np.array(shape)), axis=1)
                flat_all.append(np.ravel_multi_index(idx[ok].T, shape))
                weight_all.append(cw[ok])
                sin2_all.append(sin2[ok])
    if not flat_all:
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    flat = np.concatenate(flat_all)
    weight = np.concatenate(weight_all)
    n = int(np.prod(shape))
    frac = np.bincount(flat, weight, minlength=n).reshape(shape)
    frac_sin2 = np.bincount(flat, weight * np.concatenate(sin2_all), minlength=n).reshape(shape)
    scale = np.where(frac > 1.0, 1.0 / np.maximum(frac, 1e-12), 1.0)
    return (np.minimum(frac, 1.0).astype(np.float32),
            (frac_sin2 * scale).astype(np.float32))


def _grid_points(affine, shape, chunk_axis0):
    """Scanner mm coordinates (N, 3) of voxel centres for slices ``chunk_axis0`` of axis 0."""
    i = np.arange(chunk_axis0.start, chunk_axis0.stop, dtype=float)[:, None, None]
    j = np.arange(shape[1], dtype=float)[None, :, None]
    k = np.arange(shape[2], dtype=float)[None, None, :]
    out = np.empty((len(i.ravel()), shape[1], shape[2], 3))
    for r in range(3):
        out[..., r] = affine[r, 0] * i + affine[r, 1] * j + affine[r, 2] * k + affine[r, 3]
    return out.reshape(-1, 3)


def _template_coords(xfm, affine, tpl_inv_affine, shape, chunk_axis0):
    """Template voxel coordinates (3, N) of the grid voxel centres of a chunk."""
    pts = _grid_points(affine, shape, chunk_axis0)
    m = xfm.scanner_to_template(pts, exact=False)
    return _apply_affine(tpl_inv_affine, m).T


def simulate_subject(config: PhantomConfig | None = None, seed: int = 0,
                     acquisition_seed: int | None = None) -> SubjectPhantom:
    """Simulate one subject.

    Parameters
    ----------
    config : PhantomConfig, optional
        Defaults to the ``"small"`` protocol.
    seed : int
        Seed of the anatomy (deformation, veins, lesions).
    acquisition_seed : int, optional
        Seed of the head pose, slice orientation, bias, background field and noise;
        defaults to ``seed``. Use different values to simulate repeated sessions/runs of
        the same subject.

    Returns
    -------
    SubjectPhantom
        ``truth`` columns: ``lesion_id kind x y z i j k mni_x mni_y mni_z radius_mm
        dchi_ppm apparent_diameter_mm min_relative_signal mars_category``. ``x y z`` are
        scanner RAS+ mm, ``i j k`` continuous voxel coordinates (round for the voxel),
        ``apparent_diameter_mm`` is the diameter of the sphere whose volume equals that
        of the voxels where the lesion lowers the noise-free magnitude below 50 % of the
        lesion-free magnitude at the longest echo (0 when no voxel drops that far);
        ``min_relative_signal`` is the lowest such ratio.
    """
    cfg = config if config is not None else PhantomConfig.from_protocol("small")
    acq_seed = seed if acquisition_seed is None else acquisition_seed
    rng_deform = np.random.default_rng([int(seed), 0, 0])
    rng_lesions = np.random.default_rng([int(seed), 0, 2])
    rng_acq = np.random.default_rng([int(acq_seed), 1])
    t = _template()
    b0 = float(cfg.field_strength_t)
    tes = np.array(cfg.echo_times_s, float)

    # anatomy-level randomness (deformation lives with the anatomy)
    xfm_anat = _random_transform(dataclasses.replace(cfg, random_affine=False), rng_deform)
    pose = _random_transform(dataclasses.replace(cfg, deformation_mm=0.0), rng_acq)
    xfm = _TemplateTransform(pose.rotation, pose.translation, xfm_anat.displacement,
                             xfm_anat.disp_affine, xfm_anat.inverse_displacement)
    frame, perm = _acquisition_frame(cfg, rng_acq)

    # --- grid: whole head in the acquisition frame ---------------------------------
    surface = t["head_surface"] if cfg.include_head else t["brain_surface"]
    corners_sc = xfm.template_to_scanner(surface)
    brain_centre_sc = xfm.template_to_scanner(np.array([[0.0, -18.0, 8.0]]))[0]
    proj = _apply_affine(np.block([[frame.T, np.zeros((3, 1))], [np.zeros((1, 3)), 1]]),
                         corners_sc)  # coordinates along read/phase/slice
    vox_acq = np.array(cfg.voxel_size_mm)
    full_lo, full_hi = proj.min(0) - 3.0, proj.max(0) + 3.0
    shape_acq = np.ceil((full_hi - full_lo) / vox_acq).astype(int) + 1
    origin_acq = full_lo
    # output FOV (crop) in acquisition coordinates
    centre_acq = brain_centre_sc @ frame
    out_lo, out_hi = full_lo.copy(), full_lo + (shape_acq - 1) * vox_acq
    if cfg.fov_mm is not None:
        for a, f in enumerate(cfg.fov_mm):
            if f is None:
                continue
            c = centre_acq[a] + (cfg.slab_offset_mm if a == 2 else 0.0)
            out_lo[a], out_hi[a] = c - f / 2.0, c + f / 2.0
    # the simulation grid covers the head and the requested FOV
    sim_lo = np.minimum(full_lo, out_lo)
    sim_hi = np.maximum(full_hi, out_hi)
    shape_acq = np.ceil((sim_hi - sim_lo) / vox_acq - 1e-6).astype(int) + 1
    origin_acq = sim_lo
    out_start = np.round((out_lo - sim_lo) / vox_acq).astype(int)
    out_shape = np.maximum(np.round((out_hi - out_lo) / vox_acq).astype(int), 1)

    # affine in acquisition (read, phase, slice) order, then permuted for storage
    aff_acq = np.eye(4)
    aff_acq[:3, :3] = frame * vox_acq
    aff_acq[:3, 3] = frame @ origin_acq
    shape = tuple(int(shape_acq[p]) for p in perm)
    affine = np.eye(4)
    affine[:3, :3] = aff_acq[:3, :3][:, perm]
    affine[:3, 3] = aff_acq[:3, 3]
    vox = tuple(float(vox_acq[p]) for p in perm)
    inv_affine = np.linalg.inv(affine)
    crop = tuple(slice(int(out_start[p]), int(out_start[p] + out_shape[p])) for p in perm)

    # --- tissue fractions on the grid ---------------------------------------------
    n0 = shape[0]
    step = max(1, int(2_000_000 // (shape[1] * shape[2])))
    names = ("gm", "wm", "csf", "deep_gm", "skull", "scalp")
    fracs = {n: np.zeros(shape, np.float32) for n in names}
    brain_p = np.zeros(shape, np.float32)
    for s0 in range(0, n0, step):
        sl = slice(s0, min(n0, s0 + step))
        pts = _grid_points(affine, shape, sl)
        m = xfm.scanner_to_template(pts, exact=False)
        del pts
        sub_shape = (sl.stop - sl.start,) + shape[1:]
        # the coarse distance map tells where the brain can be: sample the 1 mm maps there
        d = _sample(t["dist"], t["dist_inv_affine"], m, cval=60.0)
        near = d < 4.0
        gm, wm, br, deep = (np.zeros(len(m), np.float32) for _ in range(4))
        m_near = m[near]
        gm[near] = _sample(t["gm"], t["inv_affine"], m_near)
        wm[near] = _sample(t["wm"], t["inv_affine"], m_near)
        br[near] = _sample(t["brain"], t["inv_affine"], m_near)
        deep[near] = _sample(t["deep"], t["inv_affine"], m_near) * gm[near]
        del m, m_near
        csf = np.clip(br - gm - wm, 0, 1)
        fracs["gm"][sl] = (gm - deep).reshape(sub_shape)
        fracs["deep_gm"][sl] = deep.reshape(sub_shape)
        fracs["wm"][sl] = wm.reshape(sub_shape)
        brain_p[sl] = br.reshape(sub_shape)
        if cfg.include_head:
            w = float(min(vox))

            def ramp(edge, d=d, w=w):
                return np.clip((edge - d) / w + 0.5, 0.0, 1.0)

            rest = 1.0 - br
            c_in, s_in, h_in = ramp(_CSF_OUTER_MM), ramp(_SKULL_OUTER_MM), ramp(_SCALP_OUTER_MM)
            csf = csf + rest * c_in
            fracs["skull"][sl] = (rest * (s_in - c_in)).reshape(sub_shape)
            fracs["scalp"][sl] = (rest * (h_in - s_in)).reshape(sub_shape)
        fracs["csf"][sl] = csf.reshape(sub_shape)

    # --- veins ----------------------------------------------------------------------
    veins = _cached_veins(int(seed), int(cfg.n_veins), tuple(cfg.vein_radius_mm))
    veins_sc = [(xfm.template_to_scanner(p), r) for p, r in veins]
    if veins:
        vein_frac, vein_frac_sin2 = _splat_veins(veins_sc, inv_affine, shape, vox)
    else:
        vein_frac = vein_frac_sin2 = np.zeros(shape, np.float32)
    tissue_total = sum(fracs.values())
    vein_frac = np.minimum(vein_frac, tissue_total)  # no blood in air
    keep = np.where(tissue_total > 0, 1.0 - vein_frac / np.maximum(tissue_total, 1e-6),
                    1.0).astype(np.float32)
    del tissue_total
    for n in names:
        fracs[n] *= keep
    del keep
    fracs["vein"] = vein_frac
    venous_dchi = cfg.venous_dchi_ppm
    n_echo = len(tes)

    # --- susceptibility; decay-weighted proton density per echo; then drop fractions ----
    chi = np.zeros(shape, np.float32)
    for n, f in fracs.items():
        dchi = venous_dchi if n == "vein" else TISSUES[n]["dchi_ppm"]
        chi += f * np.float32(dchi)
    tissue_total = sum(fracs.values())
    head_mask = tissue_total > 0.5
    brain_mask = brain_p > 0.5
    del brain_p
    s_mag = np.zeros((n_echo,) + shape, np.float32)
    for e, te in enumerate(tes):
        for n, f in fracs.items():
            s_mag[e] += f * np.float32(TISSUES[n]["rho"] * np.exp(-te * _r2star(n, b0)))
    wm_sel = fracs["wm"] > 0.9
    noise_ref = float(s_mag[0][wm_sel].mean()) if wm_sel.any() else float(s_mag[0].max())
    sigma = cfg.noise_level * noise_ref
    del fracs, wm_sel
    if cfg.include_head:
        # the FFT reference is air (0 outside) so that zero padding is consistent
        chi_out = chi + np.float32(_AIR_DCHI_PPM) * np.clip(1.0 - tissue_total, 0.0, 1.0)
        chi -= np.float32(_AIR_DCHI_PPM) * np.minimum(tissue_total, 1.0)
    else:
        chi_out = chi.copy()
    del tissue_total
    b0_dir = affine[:3, :3].T @ np.array([0.0, 0.0, 1.0]) / np.array(vox)
    field = field_from_susceptibility(chi, vox, b0_dir)
    del chi
    if brain_mask.any():
        field -= np.float32(np.median(field[brain_mask]))

    # --- lesions ------------------------------------------------------------------------
    crop_lo_mm = np.array([s.start for s in crop], float)
    crop_hi_mm = np.array([s.stop - 1 for s in crop], float)

    def in_fov(p_sc):
        ijk = _apply_affine(inv_affine, p_sc[None])[0]
        return bool(np.all(ijk >= crop_lo_mm + 2) and np.all(ijk <= crop_hi_mm - 2))

    vein_pts = (np.concatenate([_resample_polyline(p, 0.5) for p, _ in veins])
                if veins else np.zeros((0, 3)))
    lesions = _place_lesions(cfg, rng_lesions, vein_pts, xfm, in_fov)

    near_factors = []  # (box, complex (E, ...) factor, centre field) per lesion
    truth_rows = []
    sub_n = [max(1, int(np.ceil(v / cfg.lesion_subvoxel_mm))) for v in vox]
    te_max = float(tes.max())
    for les in lesions:
        c_sc = xfm.template_to_scanner(les["mni"][None])[0]
        a, dchi = les["radius_mm"], les["dchi_ppm"]
        phase_scale = _GAMMA_RAD * b0 * 1e-6 * abs(dchi) * 2.0 / 3.0 * te_max
        r_near = a * (phase_scale / 0.05) ** (1 / 3)
        r_far = a * (phase_scale / 0.002) ** (1 / 3)
        r_near = max(r_near, a + 2 * max(vox))
        c_vox = _apply_affine(inv_affine, c_sc[None])[0]
        box_near = tuple(slice(max(0, int(np.floor(c_vox[d] - r_near / vox[d]))),
                               min(shape[d], int(np.ceil(c_vox[d] + r_near / vox[d])) + 1))
                         for d in range(3))
        box_far = tuple(slice(max(0, int(np.floor(c_vox[d] - r_far / vox[d]))),
                              min(shape[d], int(np.ceil(c_vox[d] + r_far / vox[d])) + 1))
                        for d in range(3))
        # far field at voxel centres (outside the near box): added to the tissue field
        far_idx = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box_far],
                                       indexing="ij"), -1).reshape(-1, 3)
        fvals = sphere_field_ppm(_apply_affine(affine, far_idx), c_sc, a, dchi)
        fvals = fvals.reshape(tuple(s.stop - s.start for s in box_far)).astype(np.float32)
        rel = tuple(slice(n.start - f.start, n.stop - f.start) for n, f in zip(box_near, box_far))
        fvals[rel] = 0.0
        field[box_far] += fvals
        del far_idx, fvals
        # near box: supersampled complex average
        near_idx = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box_near],
                                        indexing="ij"), -1).reshape(-1, 3)
        offs = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in sub_n],
                                    indexing="ij"), -1).reshape(-1, 3)
        near_shape = tuple(s.stop - s.start for s in box_near)
        acc = np.zeros((n_echo, len(near_idx)), np.complex128)
        centre_field = sphere_field_ppm(_apply_affine(affine, near_idx.astype(float)),
                                        c_sc, a, dchi)
        chunk = max(1, 400_000 // len(offs))
        for c0 in range(0, len(near_idx), chunk):
            pv = near_idx[c0:c0 + chunk, None, :] + offs[None]
            pmm = _apply_affine(affine, pv.reshape(-1, 3))
            dB = sphere_field_ppm(pmm, c_sc, a, dchi).reshape(pv.shape[:2])
            d2 = np.sum((pmm - c_sc) ** 2, axis=1)
            wgt = (d2 > a * a).reshape(pv.shape[:2]).astype(float)
            for e, te in enumerate(tes):
                ph = cfg.phase_sign * _GAMMA_RAD * b0 * 1e-6 * te * dB
                acc[e, c0:c0 + chunk] = np.mean(wgt * np.exp(1j * ph), axis=1)
        near_factors.append((box_near, acc.reshape((n_echo,) + near_shape).astype(np.complex64),
                             centre_field.reshape(near_shape).astype(np.float32)))
        rel_sig = np.abs(acc[int(np.argmax(tes))]).reshape(near_shape)
        dark = rel_sig < 0.5
        centre_local = np.clip(np.round(c_vox).astype(int) - [s.start for s in box_near], 0,
                               np.array(near_shape) - 1)
        if dark.any():
            lab, _ = ndi.label(dark)
            lab_c = lab[tuple(centre_local)]
            if lab_c == 0:
                near = np.argwhere(dark)
                lab_c = lab[tuple(near[np.argmin(np.linalg.norm(near - centre_local, axis=1))])]
            n_dark = int((lab == lab_c).sum())
        else:
            n_dark = 0
        app_d = (6.0 * n_dark * float(np.prod(vox)) / np.pi) ** (1 / 3) if n_dark else 0.0
        truth_rows.append({
            "kind": les["kind"], "x": c_sc[0], "y": c_sc[1], "z": c_sc[2],
            "i": c_vox[0], "j": c_vox[1], "k": c_vox[2],
            "mni_x": les["mni"][0], "mni_y": les["mni"][1], "mni_z": les["mni"][2],
            "radius_mm": a, "dchi_ppm": dchi, "apparent_diameter_mm": app_d,
            "min_relative_signal": float(rel_sig.min()),
            "mars_category": les["mars_category"],
        })

    # --- signal, assembled in chunks of the output FOV along array axis 0 ---------------
    bg_fn = _SmoothField(np.random.default_rng([int(acq_seed), 2]), brain_centre_sc)
    ph0_fn = _SmoothField(np.random.default_rng([int(acq_seed), 3]), brain_centre_sc)
    bias_fn = _SmoothField(np.random.default_rng([int(acq_seed), 4]), brain_centre_sc)
    ph0_const = float(np.random.default_rng([int(acq_seed), 5]).uniform(-np.pi, np.pi))
    rng_noise = np.random.default_rng([int(acq_seed), 6])
    crop_shape = tuple(s.stop - s.start for s in crop)
    mag = np.empty(crop_shape + (n_echo,), np.float32)
    pha = np.empty(crop_shape + (n_echo,), np.float32)
    field_out = np.empty(crop_shape, np.float32)
    gamma_b0 = _GAMMA_RAD * b0 * 1e-6  # rad / s / ppm
    dw_vein = np.float32(gamma_b0 * abs(venous_dchi) / 2.0)
    out_step = max(1, int(1_000_000 // max(1, crop_shape[1] * crop_shape[2])))

    def sub_affine(starts):
        out = affine.copy()
        out[:3, 3] = _apply_affine(affine, np.array([starts], float))[0]
        return out

    for a0 in range(crop[0].start, crop[0].stop, out_step):
        inner = (slice(a0, min(crop[0].stop, a0 + out_step)), crop[1], crop[2])
        halo = tuple(slice(max(0, q.start - 1), min(n, q.stop + 1)) for q, n in zip(inner, shape))
        in_h = tuple(slice(q.start - h.start, q.stop - h.start) for q, h in zip(inner, halo))
        out_sl = tuple(slice(q.start - c.start, q.stop - c.start) for q, c in zip(inner, crop))
        inner_shape = tuple(q.stop - q.start for q in inner)
        tf = field[halo] + np.float32(cfg.background_field_ppm) * bg_fn.on_grid(
            sub_affine([h.start for h in halo]), tuple(h.stop - h.start for h in halo))
        grads = [g[in_h] for g in np.gradient(tf)]  # ppm per voxel along each array axis
        tf = tf[in_h]
        aff_in = sub_affine([q.start for q in inner])
        ph0 = (np.float32(ph0_const) + np.float32(np.pi) * ph0_fn.on_grid(aff_in, inner_shape)
               if cfg.phase_offset else np.zeros(inner_shape, np.float32))
        bias = np.exp(np.float32(np.log1p(cfg.bias_strength)) * bias_fn.on_grid(aff_in,
                                                                               inner_shape))
        centre = np.zeros(inner_shape, np.float32)
        overlaps = []
        for box, fac, cfield in near_factors:
            ov = tuple(slice(max(b.start, q.start), min(b.stop, q.stop)) for b, q in zip(box, inner))
            if all(o.start < o.stop for o in ov):
                dst = tuple(slice(o.start - q.start, o.stop - q.start) for o, q in zip(ov, inner))
                src = tuple(slice(o.start - b.start, o.stop - b.start) for o, b in zip(ov, box))
                centre[dst] += cfield[src]
                overlaps.append((dst, fac, src))
        field_out[out_sl] = tf + centre
        vein_sin2 = vein_frac_sin2[inner]
        for e, te in enumerate(tes):
            # extravascular static dephasing by sub-voxel veins (Yablonskiy & Haacke 1994):
            # exp(-TE zeta dw), dw = gamma B0 dchi sin^2(theta) / 2; then the intra-voxel
            # dephasing of the tissue field (linear phase ramp across the voxel)
            dephase = np.exp(-np.float32(te) * dw_vein * vein_sin2)
            for g in grads:
                dephase *= _sinc_half(np.float32(gamma_b0 * te) * g)
            phase = np.float32(cfg.phase_sign * gamma_b0 * te) * tf + ph0
            sig = (s_mag[e][inner] * dephase * bias * np.float32(1000.0)).astype(np.complex64)
            sig *= np.exp(1j * phase).astype(np.complex64)
            for dst, fac, src in overlaps:
                sig[dst] *= fac[(e,) + src]
            if sigma > 0:
                noise = rng_noise.standard_normal(inner_shape + (2,), dtype=np.float32)
                sig += np.float32(1000.0 * sigma) * (noise[..., 0] + 1j * noise[..., 1])
            mag[out_sl + (e,)] = np.abs(sig)
            pha[out_sl + (e,)] = _wrap(np.angle(sig))
        del grads, tf, ph0, bias
    del s_mag, field

    # --- crop to the output FOV and finish -----------------------------------------------
    out_affine = affine.copy()
    out_affine[:3, 3] = _apply_affine(affine, np.array([[s.start for s in crop]], float))[0]
    truth = pd.DataFrame(truth_rows, columns=[
        "kind", "x", "y", "z", "i", "j", "k", "mni_x", "mni_y", "mni_z", "radius_mm",
        "dchi_ppm", "apparent_diameter_mm", "min_relative_signal", "mars_category"])
    if len(truth):
        truth[["i", "j", "k"]] -= np.array([s.start for s in crop], float)
    truth.insert(0, "lesion_id", np.arange(1, len(truth) + 1))

    t1w = t1w_affine = None
    if cfg.include_t1w:
        t1w, t1w_affine = _simulate_t1w(cfg, xfm, veins_sc, rng_acq, corners_sc)

    return SubjectPhantom(
        magnitude=mag,
        phase=pha,
        affine=out_affine,
        echo_times_s=tuple(float(x) for x in tes),
        field_strength_t=b0,
        brain_mask=np.ascontiguousarray(brain_mask[crop]),
        vein_mask=np.ascontiguousarray(vein_frac[crop] >= 0.25),
        head_mask=np.ascontiguousarray(head_mask[crop]),
        truth=truth,
        field_ppm=field_out,
        susceptibility_ppm=np.ascontiguousarray(chi_out[crop]),
        vein_fraction=np.ascontiguousarray(vein_frac[crop]),
        config=cfg,
        seed=int(seed),
        t1w=t1w,
        t1w_affine=t1w_affine,
        _xfm=xfm,
    )


def _sinc_half(dphi):
    """Mean of exp(i phi) over a uniform phase spread ``dphi``: sin(dphi/2)/(dphi/2)."""
    x = np.abs(np.asarray(dphi, np.float32)) * np.float32(0.5)
    out = np.ones_like(x)
    nz = x > 1e-4
    out[nz] = np.sin(x[nz]) / x[nz]
    return out


def _wrap(phase):
    out = np.mod(np.asarray(phase, np.float64) + np.pi, 2 * np.pi) - np.pi
    return np.clip(out, -_PI_F32_BELOW, _PI_F32_BELOW).astype(np.float32)


def _simulate_t1w(cfg, xfm, veins_sc, rng, corners_sc):
    """T1-weighted image on an axis-aligned (RAS) 1 mm grid covering the head."""
    t = _template()
    v = float(cfg.t1w_voxel_size_mm)
    lo, hi = corners_sc.min(0), corners_sc.max(0)
    shape = tuple(np.ceil((hi - lo) / v).astype(int) + 1)
    affine = np.diag([v, v, v, 1.0])
    affine[:3, 3] = lo
    out = np.zeros(shape, np.float32)
    step = max(1, int(2_000_000 // (shape[1] * shape[2])))
    for s0 in range(0, shape[0], step):
        sl = slice(s0, min(shape[0], s0 + step))
        pts = _grid_points(affine, shape, sl)
        m = xfm.scanner_to_template(pts, exact=False)
        t1 = _sample(t["t1"], t["inv_affine"], m)
        br = _sample(t["brain"], t["inv_affine"], m)
        val = t1 * br
        if cfg.include_head:
            d = _sample(t["dist"], t["dist_inv_affine"], m, cval=60.0)
            rest = 1 - br
            val += rest * np.where(d < _CSF_OUTER_MM, 0.1,
                                   np.where(d < _SKULL_OUTER_MM, 0.05,
                                            np.where(d < _SCALP_OUTER_MM, 0.85, 0.0)))
        out[sl] = val.reshape((sl.stop - sl.start,) + shape[1:])
    out = out * 1000.0
    if cfg.noise_level > 0:
        out = np.abs(out + 1000 * cfg.noise_level * rng.standard_normal(out.shape).astype(
            np.float32))
    return out.astype(np.float32), affine


# --------------------------------------------------------------------------------------
# BIDS writer
# --------------------------------------------------------------------------------------


def default_count_model(row, rng) -> int:
    """Poisson CMB count whose rate rises as the platelet nadir (10^9/L) falls."""
    platelets = float(row["platelet_nadir"])
    rate = 0.5 + 8.0 * math.exp(-platelets / 15.0)
    return int(min(rng.poisson(rate), 15))


def _participants(n_subjects, n_controls, rng) -> pd.DataFrame:
    rows = []
    for s in range(n_subjects):
        control = s >= n_subjects - n_controls
        platelets = (float(rng.uniform(150, 400)) if control
                     else float(np.clip(rng.lognormal(np.log(20), 0.8), 1, 140)))
        bleeding = 0 if control else int(np.clip(rng.poisson(max(0.2, 6 - platelets / 10)), 0, 10))
        rows.append({
            "participant_id": f"sub-{s + 1:02d}",
            "age": int(rng.integers(18, 80)),
            "sex": str(rng.choice(["F", "M"])),
            "group": "control" if control else "patient",
            "platelet_nadir": round(platelets, 1),
            "bleeding_score": bleeding,
        })
    return pd.DataFrame(rows)


_PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Participant label"},
    "age": {"Description": "Age at scan", "Units": "year"},
    "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
    "group": {"Description": "Study group",
              "Levels": {"patient": "immune thrombocytopenia patient",
                         "control": "healthy control"}},
    "platelet_nadir": {"Description": "Lowest recorded platelet count",
                       "Units": "10^9/L"},
    "bleeding_score": {"Description": "Bleeding score (0 = none)"},
}

_TRUTH_JSON = {
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


def _save_nifti(data, affine, path, dtype=np.float32, extra_header=None):
    img = nib.Nifti1Image(np.asarray(data, dtype), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if extra_header:
        for k, v in extra_header.items():
            img.header[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _write_json(obj, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _swi_from_complex(mag, phase, voxel_size, phase_sign, power=4, sigma_mm=4.0):
    """Scanner-style SWI: magnitude times a negative phase mask of the homodyne-filtered
    phase (Haacke 2004)."""
    z = mag * np.exp(1j * phase)
    sig = [sigma_mm / v for v in voxel_size]
    low = ndi.gaussian_filter(z.real, sig) + 1j * ndi.gaussian_filter(z.imag, sig)
    hp = np.angle(z * np.conj(low))
    para = phase_sign * hp  # > 0 for paramagnetic shift
    mask = np.where(para > 0, np.clip(1.0 - para / np.pi, 0, 1), 1.0)
    return (mag * mask ** power).astype(np.float32)


def _minip(img, voxel_size, slice_axis, slab_mm=8.0):
    n = max(1, round(slab_mm / voxel_size[slice_axis]))
    return ndi.minimum_filter1d(img, n, axis=slice_axis, mode="nearest")


def write_bids_dataset(out_dir, n_subjects: int = 3, seed: int = 0, protocol="small",
                       input_kind: str = "gre", n_controls: int | None = None,
                       sessions=None, runs: int = 1, acq: str | None = None,
                       include_t1w: bool = False, calcifications: int = 0,
                       count_model: Callable | None = None,
                       phase_units: str = "rad", megre_phase: bool = True,
                       config_overrides: dict | None = None) -> Path:
    """Write a raw BIDS dataset of simulated subjects plus ground truth.

    Parameters
    ----------
    out_dir : path
        Dataset root (created).
    n_subjects : int
        Number of participants (``sub-01`` ...).
    seed : int
        Seed of the whole dataset; subject ``s`` uses anatomy seed ``seed * 1000 + s``.
    protocol : str or PhantomConfig
        A :data:`PROTOCOLS` name or a full config (``n_cmbs`` is set per subject).
    input_kind : {"gre", "megre", "swi", "magnitude"}
        What is written: single-echo magnitude+phase ``_part-{mag,phase}_T2starw``;
        multi-echo ``_echo-N_part-{mag,phase}_MEGRE`` (protocol ``megre`` echoes if the
        protocol has a single echo); scanner ``_swi`` and ``_minIP`` (listed in
        ``.bidsignore``); or magnitude only ``_part-mag_T2starw``.
    n_controls : int, optional
        Number of controls (the last subjects; no CMBs). Default ``round(n / 3)``.
    sessions : int or list of str, optional
        Number of sessions or their labels; sessions of a subject share the anatomy and
        lesions and differ in pose, bias and noise.
    runs : int
        Runs per session (``run-N`` entity when > 1).
    acq : str, optional
        ``acq-<label>`` entity.
    include_t1w : bool
        Also write ``_T1w.nii.gz``.
    calcifications : int
        Calcifications per subject (patients and controls).
    count_model : callable(row, rng) -> int, optional
        CMB count of a patient from its ``participants.tsv`` row; default
        :func:`default_count_model`.
    phase_units : {"rad", "arbitrary"}
        ``arbitrary`` stores phase as int16 in [-4096, 4095] (sidecar ``Units``).
    megre_phase : bool
        Write phase images for ``megre``.
    config_overrides : dict, optional
        Extra :class:`PhantomConfig` fields.

    Returns
    -------
    pathlib.Path
        The dataset root.
    """
    if input_kind not in ("gre", "megre", "swi", "magnitude"):
        raise ValueError(f"input_kind must be gre, megre, swi or magnitude, not {input_kind!r}")
    if phase_units not in ("rad", "arbitrary"):
        raise ValueError(f"phase_units must be 'rad' or 'arbitrary', not {phase_units!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(seed), 99])
    if n_controls is None:
        n_controls = round(n_subjects / 3)
    n_controls = min(int(n_controls), n_subjects)
    count_model = count_model or default_count_model
    if sessions is None:
        ses_labels = [None]
    elif isinstance(sessions, int):
        ses_labels = [f"{i + 1:02d}" for i in range(sessions)]
    else:
        ses_labels = [str(s) for s in sessions]

    if isinstance(protocol, PhantomConfig):
        base_cfg = protocol
        protocol_name = "custom"
    else:
        base_cfg = PhantomConfig.from_protocol(protocol)
        protocol_name = protocol
    if config_overrides:
        base_cfg = dataclasses.replace(base_cfg, **config_overrides)
    if input_kind == "megre" and len(base_cfg.echo_times_s) < 2:
        base_cfg = dataclasses.replace(base_cfg, echo_times_s=PROTOCOLS["megre"]["echo_times_s"])
    if input_kind != "megre" and len(base_cfg.echo_times_s) > 1:
        base_cfg = dataclasses.replace(base_cfg, echo_times_s=base_cfg.echo_times_s[:1])
    base_cfg = dataclasses.replace(base_cfg, include_t1w=include_t1w,
                                   n_calcifications=int(calcifications))

    participants = _participants(n_subjects, n_controls, rng)
    counts = []
    for _, row in participants.iterrows():
        counts.append(0 if row["group"] == "control" else int(count_model(row, rng)))

    _write_json(_raw_description(), root / "dataset_description.json")
    (root / "README").write_text(
        "Simulated susceptibility-weighted MRI with known cerebral microbleeds.\n"
        f"Generated by cmbprep.testing.phantom (protocol={protocol_name}, "
        f"input_kind={input_kind}, seed={seed}).\n"
        "Ground truth: derivatives/phantom-truth/.\n")
    participants.to_csv(root / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    _write_json(_PARTICIPANTS_JSON, root / "participants.json")
    if input_kind == "swi":
        (root / ".bidsignore").write_text("*_swi.nii.gz\n*_minIP.nii.gz\n")

    truth_root = root / "derivatives" / "phantom-truth"
    _write_json(_truth_description(), truth_root / "dataset_description.json")

    for s_idx, (_, row) in enumerate(participants.iterrows()):
        sub = row["participant_id"]
        for ses_i, ses in enumerate(ses_labels):
            for run in range(1, runs + 1):
                cfg = dataclasses.replace(base_cfg, n_cmbs=counts[s_idx])
                anat_seed = int(seed) * 1000 + s_idx
                acq_seed = anat_seed * 100 + ses_i * 10 + run
                ph = simulate_subject(cfg, seed=anat_seed, acquisition_seed=acq_seed)
                ents = [sub]
                if ses is not None:
                    ents.append(f"ses-{ses}")
                if acq:
                    ents.append(f"acq-{acq}")
                if runs > 1:
                    ents.append(f"run-{run}")
                prefix = "_".join(ents)
                rel_dir = Path(sub) / (f"ses-{ses}" if ses is not None else "") / "anat"
                anat = root / rel_dir
                _write_subject_images(ph, anat, prefix, input_kind, phase_units, megre_phase)
                _write_truth(ph, truth_root / rel_dir, prefix, {
                    "config": cfg.to_dict(), "anatomy_seed": anat_seed,
                    "acquisition_seed": acq_seed, "template": TEMPLATE_NAME,
                    "protocol": protocol_name, "input_kind": input_kind,
                })
    return root


def _raw_description() -> dict:
    return {"Name": "cmbprep physics-based SWI phantom", "BIDSVersion": "1.10.0",
            "DatasetType": "raw", "License": "CC0", "Authors": ["cmbprep phantom generator"],
            "GeneratedBy": [{"Name": "cmbprep.testing.phantom", "Version": _version()}]}


def _truth_description() -> dict:
    return {"Name": "cmbprep phantom ground truth", "BIDSVersion": "1.10.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "cmbprep.testing.phantom", "Version": _version()}]}


def _write_truth(ph: SubjectPhantom, tdir: Path, prefix: str, simulation: dict):
    """Truth table (+ sidecar with the simulation parameters), brain and vein masks."""
    tdir.mkdir(parents=True, exist_ok=True)
    ph.truth.to_csv(tdir / f"{prefix}_desc-truth_cmb.tsv", sep="\t", index=False,
                    na_rep="n/a", float_format="%.4f")
    meta = dict(_TRUTH_JSON)
    meta["SimulationParameters"] = simulation
    _write_json(meta, tdir / f"{prefix}_desc-truth_cmb.json")
    _save_nifti(ph.brain_mask.astype(np.uint8), ph.affine,
                tdir / f"{prefix}_desc-brain_mask.nii.gz", dtype=np.uint8)
    _save_nifti(ph.vein_mask.astype(np.uint8), ph.affine,
                tdir / f"{prefix}_label-vein_mask.nii.gz", dtype=np.uint8)


def write_subject(ph: SubjectPhantom, root, participant_label: str, input_kind: str = "gre",
                  phase_units: str = "rad") -> Path:
    """Add one simulated subject (images and truth) to a raw BIDS dataset.

    Creates ``dataset_description.json`` and ``derivatives/phantom-truth`` when missing
    and adds the participant to ``participants.tsv`` (``participant_id`` and ``group``:
    ``patient`` with microbleeds, ``control`` without).

    Parameters
    ----------
    ph : SubjectPhantom
        From :func:`simulate_subject`.
    root : path
        Dataset root.
    participant_label : str
        Label without ``sub-``.
    input_kind, phase_units
        As in :func:`write_bids_dataset`.

    Returns
    -------
    pathlib.Path
        The dataset root.
    """
    root = Path(root)
    truth_root = root / "derivatives" / "phantom-truth"
    for path, content in ((root / "dataset_description.json", _raw_description()),
                          (truth_root / "dataset_description.json", _truth_description())):
        if not path.exists():
            _write_json(content, path)
    sub = f"sub-{participant_label}"
    _write_subject_images(ph, root / sub / "anat", sub, input_kind, phase_units, True)
    _write_truth(ph, truth_root / sub / "anat", sub, {
        "config": ph.config.to_dict(), "seed": ph.seed, "template": TEMPLATE_NAME,
        "input_kind": input_kind})
    n_cmbs = int((ph.truth["kind"] == "cmb").sum())
    row = pd.DataFrame([{"participant_id": sub, "group": "patient" if n_cmbs else "control"}])
    tsv = root / "participants.tsv"
    if tsv.exists():
        old = pd.read_csv(tsv, sep="\t", dtype=str)
        row = pd.concat([old[old["participant_id"] != sub], row], ignore_index=True)
    row.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    return root


def _write_subject_images(ph: SubjectPhantom, anat: Path, prefix: str, input_kind: str,
                          phase_units: str, megre_phase: bool):
    anat.mkdir(parents=True, exist_ok=True)
    b0 = ph.field_strength_t
    common = {
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

    def phase_data(p):
        if phase_units == "rad":
            return p.astype(np.float32), np.float32
        return np.round(p / np.pi * 4096).clip(-4096, 4095).astype(np.int16), np.int16

    if input_kind in ("gre", "magnitude"):
        te = ph.echo_times_s[0]
        _save_nifti(ph.magnitude[..., 0], ph.affine, anat / f"{prefix}_part-mag_T2starw.nii.gz")
        _write_json({**common, "EchoTime": te, "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
                    anat / f"{prefix}_part-mag_T2starw.json")
        if input_kind == "gre":
            data, dt = phase_data(ph.phase[..., 0])
            _save_nifti(data, ph.affine, anat / f"{prefix}_part-phase_T2starw.nii.gz", dtype=dt)
            _write_json({**common, "EchoTime": te, "Units": phase_units,
                         "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]},
                        anat / f"{prefix}_part-phase_T2starw.json")
    elif input_kind == "megre":
        for e, te in enumerate(ph.echo_times_s):
            base = f"{prefix}_echo-{e + 1}"
            _save_nifti(ph.magnitude[..., e], ph.affine, anat / f"{base}_part-mag_MEGRE.nii.gz")
            _write_json({**common, "EchoTime": te, "EchoNumber": e + 1,
                         "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
                        anat / f"{base}_part-mag_MEGRE.json")
            if megre_phase:
                data, dt = phase_data(ph.phase[..., e])
                _save_nifti(data, ph.affine, anat / f"{base}_part-phase_MEGRE.nii.gz", dtype=dt)
                _write_json({**common, "EchoTime": te, "EchoNumber": e + 1, "Units": phase_units,
                             "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]},
                            anat / f"{base}_part-phase_MEGRE.json")
    elif input_kind == "swi":
        te = ph.echo_times_s[0]
        vox = ph.voxel_size
        swi = _swi_from_complex(ph.magnitude[..., 0], ph.phase[..., 0], vox, ph.config.phase_sign)
        slice_axis = int(np.argmax(np.abs(ph.affine[2, :3]) / np.array(vox)))
        _save_nifti(swi, ph.affine, anat / f"{prefix}_swi.nii.gz")
        _write_json({**common, "EchoTime": te,
                     "ImageType": ["DERIVED", "PRIMARY", "M", "SWI"]},
                    anat / f"{prefix}_swi.json")
        _save_nifti(_minip(swi, vox, slice_axis), ph.affine, anat / f"{prefix}_minIP.nii.gz")
        _write_json({**common, "EchoTime": te,
                     "ImageType": ["DERIVED", "PRIMARY", "M", "SWI", "MNIP"],
                     "MinIPSlabThickness": 8.0},
                    anat / f"{prefix}_minIP.json")
    if ph.t1w is not None:
        _save_nifti(ph.t1w, ph.t1w_affine, anat / f"{prefix}_T1w.nii.gz")
        _write_json({"MagneticFieldStrength": b0, "Manufacturer": "cmbprep-phantom",
                     "MRAcquisitionType": "3D"}, anat / f"{prefix}_T1w.json")


def _version() -> str:
    try:
        from cmbprep import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


def write_example_dataset(out_dir, seed: int = 0) -> Path:
    """The bundled demo dataset: 3 subjects (2 patients with a handful of CMBs, 1 control),
    ``small`` protocol, single-echo magnitude + phase."""
    def count_model(row, rng):
        return int(rng.integers(3, 7))

    return write_bids_dataset(out_dir, n_subjects=3, n_controls=1, seed=seed,
                              protocol="small", input_kind="gre", count_model=count_model)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m cmbprep.testing.phantom",
        description="Write a simulated BIDS dataset of SWI with known microbleeds.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-subjects", type=int, default=3)
    parser.add_argument("--n-controls", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="small")
    parser.add_argument("--input-kind", choices=["gre", "megre", "swi", "magnitude"],
                        default="gre")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--acq", default=None)
    parser.add_argument("--include-t1w", action="store_true")
    parser.add_argument("--calcifications", type=int, default=0)
    parser.add_argument("--phase-units", choices=["rad", "arbitrary"], default="rad")
    parser.add_argument("--voxel-size", type=float, nargs="+", default=None, metavar="MM",
                        help="override the protocol voxel size (one value: isotropic; or "
                             "read phase slice), mm")
    parser.add_argument("--example", action="store_true",
                        help="write the bundled 3-subject example dataset and exit")
    args = parser.parse_args(argv)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    overrides = None
    if args.voxel_size is not None:
        if len(args.voxel_size) not in (1, 3):
            parser.error("--voxel-size takes 1 or 3 values")
        vs = args.voxel_size * 3 if len(args.voxel_size) == 1 else args.voxel_size
        overrides = {"voxel_size_mm": tuple(vs)}
    if args.example:
        root = write_example_dataset(args.out_dir, seed=args.seed)
    else:
        root = write_bids_dataset(
            args.out_dir, n_subjects=args.n_subjects, seed=args.seed, protocol=args.protocol,
            input_kind=args.input_kind, n_controls=args.n_controls, sessions=args.sessions,
            runs=args.runs, acq=args.acq, include_t1w=args.include_t1w,
            calcifications=args.calcifications, phase_units=args.phase_units,
            config_overrides=overrides)
    print(root)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
