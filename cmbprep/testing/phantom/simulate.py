"""Simulation of one subject: :func:`simulate_subject` and its result :class:`SubjectPhantom`.

The steps, each in its own module: subject transform (:mod:`.transforms`), acquisition
grid (:mod:`.grid`), tissue fractions (:mod:`.anatomy`), veins (:mod:`.veins`),
susceptibility and field (:mod:`.physics`), lesions (:mod:`.lesions`), gradient-echo
signal (:mod:`.gre_signal`) and the optional T1w image (:mod:`.t1w`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cmbprep.algorithms.arrays import voxel_sizes

from .anatomy import tissue_fractions
from .config import PhantomConfig
from .geometry import shifted_affine
from .grid import acquisition_frame, acquisition_grid
from .gre_signal import acquire
from .lesions import (
    THIN_VEIN_RADIUS_MM,
    TRUTH_COLUMNS,
    in_field_of_view,
    lesion_signal,
    place_lesions,
)
from .physics import (
    air_referenced,
    noise_sigma,
    proton_density_decay,
    susceptibility,
    tissue_field,
)
from .t1w import simulate_t1w
from .transforms import TemplateTransform, subject_transform
from .veins import add_veins, cached_veins, resample_polyline

__all__ = ["SubjectPhantom", "simulate_subject"]


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
    _xfm: TemplateTransform | None = None

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size in stored array order, mm."""
        return tuple(float(v) for v in voxel_sizes(self.affine))

    def scanner_to_template(self, points_mm) -> np.ndarray:
        """Map (N, 3) scanner RAS+ mm points to template (MNI) mm."""
        return self._xfm.scanner_to_template(points_mm)

    def template_to_scanner(self, points_mm) -> np.ndarray:
        """Map (N, 3) template (MNI) mm points to scanner RAS+ mm."""
        return self._xfm.template_to_scanner(points_mm)


@dataclass
class _TissueMaps:
    """What the signal needs from the compartment fractions (which are then freed)."""

    chi_fft: np.ndarray  # susceptibility relative to air (input of the field FFT), ppm
    chi_out: np.ndarray  # susceptibility relative to water (reported), ppm
    s_mag: np.ndarray  # decay-weighted proton density per echo
    head_mask: np.ndarray
    brain_mask: np.ndarray
    vein_frac: np.ndarray
    vein_frac_sin2: np.ndarray
    sigma: float  # noise standard deviation


def _tissue_maps(cfg, xfm, grid, veins_sc, tes) -> _TissueMaps:
    """Compartment fractions on the simulation grid, reduced to susceptibility,
    decay-weighted proton density and masks."""
    fracs, brain_p = tissue_fractions(xfm, grid.affine, grid.shape, grid.voxel_size,
                                      cfg.include_head, atrophy=cfg.atrophy,
                                      ventricle_scale=cfg.ventricle_scale)
    vein_frac, vein_frac_sin2 = add_veins(fracs, veins_sc, grid.inv_affine, grid.shape,
                                          grid.voxel_size)
    chi = susceptibility(fracs, cfg.venous_dchi_ppm)
    tissue_total = sum(fracs.values())
    head_mask = tissue_total > 0.5
    brain_mask = brain_p > 0.5
    del brain_p
    s_mag = proton_density_decay(fracs, tes, float(cfg.field_strength_t))
    sigma = noise_sigma(fracs["wm"], s_mag, cfg.noise_level)
    del fracs
    chi, chi_out = air_referenced(chi, tissue_total, cfg.include_head)
    return _TissueMaps(chi, chi_out, s_mag, head_mask, brain_mask, vein_frac,
                       vein_frac_sin2, sigma)


def _lesions(cfg, rng, veins, xfm, field, grid, tes):
    """Place the lesions (away from veins, inside the output FOV) and simulate their
    signal; their far fields are added to ``field`` in place. Thin veins (radius below
    :data:`THIN_VEIN_RADIUS_MM`) only need a smaller clearance."""
    thick = [p for p, r in veins if r >= THIN_VEIN_RADIUS_MM]
    thin = [p for p, r in veins if r < THIN_VEIN_RADIUS_MM]
    vein_pts = (np.concatenate([resample_polyline(p, 0.5) for p in thick])
                if thick else np.zeros((0, 3)))
    thin_pts = (np.concatenate([resample_polyline(p, 0.5) for p in thin])
                if thin else np.zeros((0, 3)))

    def in_fov(point_sc):
        return in_field_of_view(point_sc, grid.inv_affine, grid.crop)

    placed = place_lesions(cfg, rng, vein_pts, xfm, in_fov, thin_vein_points=thin_pts)
    return [lesion_signal(les, xfm, field, grid, tes, float(cfg.field_strength_t),
                          cfg.phase_sign, cfg.lesion_subvoxel_mm) for les in placed]


def _truth_table(lesions, crop) -> pd.DataFrame:
    """One row per lesion, voxel coordinates relative to the output FOV."""
    truth = pd.DataFrame([les.truth for les in lesions], columns=TRUTH_COLUMNS)
    if len(truth):
        truth[["i", "j", "k"]] -= np.array([s.start for s in crop], float)
    truth.insert(0, "lesion_id", np.arange(1, len(truth) + 1))
    return truth


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
    tes = np.array(cfg.echo_times_s, float)

    # anatomy-level randomness (deformation lives with the anatomy), pose and grid
    xfm = subject_transform(cfg, rng_deform, rng_acq)
    frame, perm = acquisition_frame(cfg, rng_acq)
    grid = acquisition_grid(cfg, xfm, frame, perm)
    crop = grid.crop

    veins = cached_veins(int(seed), int(cfg.n_veins), tuple(cfg.vein_radius_mm),
                         cfg.vein_model)
    veins_sc = [(xfm.template_to_scanner(p), r) for p, r in veins]
    maps = _tissue_maps(cfg, xfm, grid, veins_sc, tes)
    field = tissue_field(maps.chi_fft, grid.affine, grid.voxel_size, maps.brain_mask)
    maps.chi_fft = None  # free it before the lesions and the signal
    lesions = _lesions(cfg, rng_lesions, veins, xfm, field, grid, tes)
    mag, pha, field_out = acquire(cfg, field, maps.s_mag, maps.vein_frac_sin2, lesions,
                                  grid, tes, acq_seed, maps.sigma)
    del field
    maps.s_mag = None

    t1w = t1w_affine = None
    if cfg.include_t1w:
        t1w, t1w_affine = simulate_t1w(cfg, xfm, rng_acq, grid.head_points_mm)

    return SubjectPhantom(
        magnitude=mag,
        phase=pha,
        affine=shifted_affine(grid.affine, [s.start for s in crop]),
        echo_times_s=tuple(float(x) for x in tes),
        field_strength_t=float(cfg.field_strength_t),
        brain_mask=np.ascontiguousarray(maps.brain_mask[crop]),
        vein_mask=np.ascontiguousarray(maps.vein_frac[crop] >= 0.25),
        head_mask=np.ascontiguousarray(maps.head_mask[crop]),
        truth=_truth_table(lesions, crop),
        field_ppm=field_out,
        susceptibility_ppm=np.ascontiguousarray(maps.chi_out[crop]),
        vein_fraction=np.ascontiguousarray(maps.vein_frac[crop]),
        config=cfg,
        seed=int(seed),
        t1w=t1w,
        t1w_affine=t1w_affine,
        _xfm=xfm,
    )
