"""Domain randomisation: random scan descriptions drawn per generator family.

A *family* (:data:`FAMILIES`) fixes the vein model and the ranges of the acquisition
protocol (field strength, echo time, voxel size), and the lesion model (family H:
lobulated lesions; the others spheres). Within a family, :func:`random_scan`
also draws the noise, bias, background field, artefacts, anatomy scale, atrophy,
orientation, lesion counts and the input kind (GRE magnitude + phase, multi-echo GRE or
scanner SWI only). Families differ in both the vein model and the protocol, so a
detector can be validated on a family it was not trained on.

Each (family, seed) gives the same :class:`ScanSpec`; the draws use their own stream
``np.random.default_rng([seed, family_index, 7])`` and the phantom's own seed is drawn
from it (so the same ``seed`` in two families gives two different subjects).

To keep the simulation affordable, the whole-head simulation grid is limited to about
:data:`MAX_SIM_VOXELS` voxels (the voxel volume is raised within the family ranges: the
slice first, then the in-plane size) and the output is a slab of 50-90 mm, shortened so
that the output has at most about :data:`MAX_OUTPUT_VOXELS` voxels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .bids_files import phantom_scanner_swi
from .config import PhantomConfig
from .simulate import simulate_subject

__all__ = ["FAMILIES", "MAX_OUTPUT_VOXELS", "MAX_SIM_VOXELS", "Family", "ScanSpec",
           "SimulatedScan", "random_scan", "simulate_scan"]

#: Approximate simulation-grid budget (whole head, ~100 bytes and ~1 us per voxel).
MAX_SIM_VOXELS = 16e6
#: Approximate output (slab) budget.
MAX_OUTPUT_VOXELS = 4e6
#: Bounding-box volume (mm^3) and in-plane area (mm^2) of the head at ``brain_scale`` 1
#: in a posed, oblique acquisition frame (generous estimates from simulated grids).
_HEAD_BOX_MM3 = 8.0e6
_HEAD_AREA_MM2 = 4.4e4
#: Limits of TE * B0 (s T): veins visible, but not everything dephased.
TE_B0_RANGE = (0.04, 0.12)
#: Input kinds and their probabilities.
INPUT_KINDS = {"gre": 0.60, "megre": 0.15, "swi": 0.25}


@dataclass(frozen=True)
class Family:
    """Generator family: vein model and acquisition protocol ranges.

    ``te_ms`` is further restricted per field strength to ``TE * B0`` in
    :data:`TE_B0_RANGE`; ``inplane_mm`` bounds both in-plane voxel sizes (read, phase);
    ``slice_mm`` the slice thickness; ``lesion_vein_clearance_mm`` the range of
    ``PhantomConfig.lesion_vein_clearance_mm`` (drawn last, only when it is a range:
    family D keeps the fixed 4 mm its benchmark scans were made with);
    ``lesion_model`` that of ``PhantomConfig.lesion_model``; ``juxtacortical_share`` the
    range of ``PhantomConfig.juxtacortical_share`` (drawn after the clearance, only when
    its upper end is above 0, so families without it draw the scans they drew before it
    existed); ``beside_vein_share`` likewise for ``PhantomConfig.beside_vein_share``
    (drawn after that).
    """

    description: str
    vein_model: str
    field_strengths_t: tuple
    te_ms: tuple
    inplane_mm: tuple
    slice_mm: tuple
    lesion_vein_clearance_mm: tuple = (2.0, 4.0)
    lesion_model: str = "sphere"
    juxtacortical_share: tuple = (0.0, 0.0)
    beside_vein_share: tuple = (0.0, 0.0)


#: ``Family.juxtacortical_share`` and ``Family.beside_vein_share`` of the families the
#: shipped model learns from; the benchmark's families (D, G, H) keep 0, so that their
#: scans stay as they were.
_JUXTACORTICAL = (0.3, 0.7)
_BESIDE_VEIN = (0.2, 0.4)

FAMILIES: dict[str, Family] = {
    "A": Family("surface-walk veins, 3 T, clinical 2D-like slices", "surface_walk",
                (3.0,), (15.0, 25.0), (0.6, 1.0), (1.0, 2.5),
                juxtacortical_share=_JUXTACORTICAL, beside_vein_share=_BESIDE_VEIN),
    "B": Family("dense medullary veins, 1.5/3 T, long TE, fine in-plane", "dense_medullary",
                (1.5, 3.0), (20.0, 40.0), (0.4, 0.9), (0.8, 2.0),
                juxtacortical_share=_JUXTACORTICAL, beside_vein_share=_BESIDE_VEIN),
    "C": Family("vein trees, 3/7 T, short TE", "tree",
                (3.0, 7.0), (10.0, 25.0), (0.5, 1.0), (1.0, 3.0),
                juxtacortical_share=_JUXTACORTICAL, beside_vein_share=_BESIDE_VEIN),
    "D": Family("tortuous vein segments, 1.5/3 T, thick slices", "tortuous_segments",
                (1.5, 3.0), (15.0, 35.0), (0.7, 1.0), (1.5, 3.0), (4.0, 4.0)),
    "E": Family("beaded veins and short stubs, 3/7 T", "beaded",
                (3.0, 7.0), (10.0, 30.0), (0.5, 0.9), (0.8, 2.5),
                juxtacortical_share=_JUXTACORTICAL, beside_vein_share=_BESIDE_VEIN),
    "F": Family("randomly oriented straight cylinders, 1.5/3/7 T, any protocol",
                "random_cylinders", (1.5, 3.0, 7.0), (10.0, 40.0), (0.4, 1.0), (1.0, 3.0),
                juxtacortical_share=_JUXTACORTICAL, beside_vein_share=_BESIDE_VEIN),
    "G": Family("converging veins (medusa heads, confluences), 1.5/3/7 T", "converging",
                (1.5, 3.0, 7.0), (10.0, 35.0), (0.5, 1.0), (0.8, 3.0)),
    "H": Family("lobulated lesions with signal inside, closer to veins; D's veins and "
                "protocol", "tortuous_segments", (1.5, 3.0), (15.0, 35.0), (0.7, 1.0),
                (1.5, 3.0), (1.5, 2.5), "lobulated"),
}


@dataclass
class ScanSpec:
    """One randomised scan.

    Attributes
    ----------
    family : str
    seed : int
        The (family, seed) pair that drew this spec.
    input_kind : {"gre", "megre", "swi"}
    config : PhantomConfig
    sim_seed : int
        Seed passed to :func:`simulate_subject` (anatomy and acquisition).
    swi_power, swi_highpass_mm : int, float or None
        Scanner SWI mask power (0-6; 0: the magnitude image) and high-pass sigma
        (``input_kind == "swi"``; also set in
        ``config.scanner_swi_power`` / ``config.scanner_swi_highpass_mm``).
    """

    family: str
    seed: int
    input_kind: str
    config: PhantomConfig
    sim_seed: int
    swi_power: int | None = None
    swi_highpass_mm: float | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable description."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["config"] = self.config.to_dict()
        return d


def _echo_times(rng, fam, b0, n_echo):
    """Echo times (s): the longest within the family range and ``TE * B0`` limits,
    the others evenly spaced below it."""
    lo = max(fam.te_ms[0], 1e3 * TE_B0_RANGE[0] / b0)
    hi = min(fam.te_ms[1], 1e3 * TE_B0_RANGE[1] / b0)
    lo = min(lo, hi)  # the TE * B0 limits win over the family range
    te = rng.uniform(lo, hi) * 1e-3
    return tuple(round(te * (k + 1) / n_echo, 5) for k in range(n_echo))


def _voxel_size(rng, fam, brain_scale):
    """(read, phase, slice) mm within the family ranges, coarsened (slice first) so that
    the whole-head grid has at most about :data:`MAX_SIM_VOXELS` voxels."""
    min_vol = _HEAD_BOX_MM3 * brain_scale ** 3 / MAX_SIM_VOXELS
    (ilo, ihi), (slo, shi) = fam.inplane_mm, fam.slice_mm
    s = rng.uniform(slo, shi)
    r_lo = max(ilo, np.sqrt(min_vol / s))
    if r_lo > ihi:
        s = min(shi, max(s, min_vol / ihi ** 2))
        r_lo = ihi
    r = rng.uniform(r_lo, ihi)
    p = min(ihi, r * rng.uniform(1.0, 1.15))
    return round(r, 3), round(p, 3), round(s, 3)


def random_scan(family: str, seed: int) -> ScanSpec:
    """Draw the scan of ``seed`` in ``family`` (deterministic)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {sorted(FAMILIES)}")
    fam = FAMILIES[family]
    rng = np.random.default_rng([int(seed), sorted(FAMILIES).index(family), 7])
    sim_seed = int(rng.integers(0, 2 ** 31 - 1))
    kinds = list(INPUT_KINDS)
    input_kind = str(rng.choice(kinds, p=[INPUT_KINDS[k] for k in kinds]))
    n_echo = int(rng.integers(2, 5)) if input_kind == "megre" else 1
    b0 = float(rng.choice(fam.field_strengths_t))
    tes = _echo_times(rng, fam, b0, n_echo)
    brain_scale = float(rng.uniform(0.9, 1.12))
    vox = _voxel_size(rng, fam, brain_scale)
    slab = float(rng.uniform(50.0, 90.0))
    slab = min(slab, MAX_OUTPUT_VOXELS * np.prod(vox) / (_HEAD_AREA_MM2 * brain_scale ** 2))
    slab_offset = float(rng.uniform(-1.0, 1.0)) * max(0.0, (120.0 - slab) / 2.0)
    n_cmbs = 0 if rng.random() < 0.2 else int(rng.integers(1, 15))
    # mask power 0 is the magnitude itself (a T2*-weighted reconstruction, the pipeline's
    # "magnitude" input), 1 a faint mask: microbleeds without the phase mask's lobes
    swi_power = int(rng.integers(0, 7)) if input_kind == "swi" else None
    swi_hp = float(round(rng.uniform(2.0, 8.0), 3)) if input_kind == "swi" else None
    params = dict(
        voxel_size_mm=vox,
        echo_times_s=tes,
        field_strength_t=b0,
        fov_mm=(None, None, round(slab, 2)),
        slab_offset_mm=round(slab_offset, 2),
        n_cmbs=n_cmbs,
        n_calcifications=int(rng.integers(0, 4)),
        n_veins=int(rng.integers(20, 41)),
        noise_level=float(rng.uniform(0.01, 0.05)),
        bias_strength=float(rng.uniform(0.0, 0.4)),
        background_field_ppm=float(rng.uniform(0.1, 0.5)),
        gibbs_ringing=bool(rng.random() < 0.5),
        motion_blur_mm=float(rng.uniform(0.0, 0.5)),
        phase_sign=int(rng.choice([1, -1])),
        max_oblique_deg=float(rng.uniform(0.0, 15.0)),
        random_storage_order=bool(rng.random() < 0.8),
        vein_model=fam.vein_model,
        lesion_model=fam.lesion_model,
        brain_scale=brain_scale,
        atrophy=float(rng.uniform(0.0, 1.0) ** 2),
        ventricle_scale=float(1.0 + rng.uniform(0.0, 1.0) ** 2),
    )
    if swi_power is not None:
        params.update(scanner_swi_power=swi_power, scanner_swi_highpass_mm=swi_hp)
    lo, hi = fam.lesion_vein_clearance_mm
    params["lesion_vein_clearance_mm"] = (
        float(round(rng.uniform(lo, hi), 3)) if hi > lo else float(lo))
    lo, hi = fam.juxtacortical_share
    if hi > 0:
        params["juxtacortical_share"] = float(round(rng.uniform(lo, hi), 3))
    lo, hi = fam.beside_vein_share
    if hi > 0:
        params["beside_vein_share"] = float(round(rng.uniform(lo, hi), 3))
    return ScanSpec(family=family, seed=int(seed), input_kind=input_kind,
                    config=PhantomConfig(**params), sim_seed=sim_seed, swi_power=swi_power,
                    swi_highpass_mm=swi_hp)


@dataclass
class SimulatedScan:
    """Images of a :class:`ScanSpec` as the detector sees them.

    ``magnitude`` is (X, Y, Z, E) (the scanner SWI, E = 1, for ``"swi"``); ``phase`` is
    (X, Y, Z, E) or None for ``"swi"``; ``phantom`` is the full :class:`SubjectPhantom`.
    """

    magnitude: np.ndarray
    phase: np.ndarray | None
    affine: np.ndarray
    echo_times_s: tuple
    truth: object
    brain_mask: np.ndarray
    input_kind: str
    phantom: object


def simulate_scan(spec: ScanSpec) -> SimulatedScan:
    """Simulate ``spec``: all echoes for ``"megre"``, the first echo for ``"gre"``, the
    scanner SWI (no phase) for ``"swi"``."""
    ph = simulate_subject(spec.config, seed=spec.sim_seed)
    mag, pha, tes = ph.magnitude, ph.phase, ph.echo_times_s
    if spec.input_kind == "swi":
        mag = phantom_scanner_swi(ph)[..., None]
        pha, tes = None, tes[:1]
    elif spec.input_kind == "gre":
        mag, pha, tes = mag[..., :1], pha[..., :1], tes[:1]
    return SimulatedScan(magnitude=mag, phase=pha, affine=ph.affine, echo_times_s=tuple(tes),
                         truth=ph.truth, brain_mask=ph.brain_mask,
                         input_kind=spec.input_kind, phantom=ph)
