"""Simulation parameters: acquisition presets (:data:`PROTOCOLS`) and :class:`PhantomConfig`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LESION_MODELS", "PROTOCOLS", "VEIN_MODELS", "PhantomConfig"]

#: Vein network models (``PhantomConfig.vein_model``; see :mod:`.veins`).
VEIN_MODELS = ("surface_walk", "dense_medullary", "tree", "tortuous_segments", "beaded",
               "random_cylinders", "converging")

#: Lesion models (``PhantomConfig.lesion_model``; see :mod:`.lesions`).
LESION_MODELS = ("sphere", "lobulated")

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
    lesion_model : str
        Lesion model, one of :data:`LESION_MODELS`. ``"sphere"``: a uniformly
        magnetised sphere of the drawn radius and susceptibility with no signal inside.
        ``"lobulated"``: the drawn sphere plus 1-3 overlapping smaller lobes (radius
        0.45-0.85 of it, centres 0.4-0.9 of it away in random directions, each with
        0.6-1.0 of its susceptibility, so the susceptibility is not uniform where lobes
        overlap), and some signal left inside that decays with echo time (R2* 100-500
        /s at 3 T, scaled with field strength), as hemosiderin-laden tissue rather than
        a void. Its truth row reports the volume-weighted centre of the lobes (``x y z``,
        ``i j k``; ``mni_*`` stays the main sphere's centre) and the radius of a sphere of
        the lobes' union volume.
    lesion_vein_clearance_mm : float
        Lesions are placed at least their radius plus this far (mm) from the centre line
        of every vein of radius >= 0.3 mm (thinner veins: 1.5 mm). The default 4 mm keeps
        lesions clear of veins; the randomised training families draw 2-4 mm, so that
        microbleeds beside veins are learned too.
    juxtacortical_share : float
        Share (0-1) of the microbleeds drawn as ``lobar`` that are placed juxtacortically:
        centre 1-3.5 mm inside the brain surface (the 1 mm template brain mask's edge,
        sulci included) and at least the lesion's extent from it, in grey or white
        matter, with the same vein clearance (so beside the surface veins). Where no such
        site is free they go to the ordinary lobar region. 0 (the default) draws no
        random numbers, so configurations without it simulate exactly as before.
    beside_vein_share : float
        Share (0-1) of the lesions (microbleeds and calcifications alike, so that nearness
        to a vein tells nothing about the kind) that are first tried beside a vein: centre
        1.2-3 mm beyond the lesion's extent from the centre line of a vein of radius >=
        0.3 mm (:data:`~.lesions.BESIDE_VEIN_GAP_MM`), in the category the lesion would
        try first. Where no such site is free the ordinary rules place it. 0 (the
        default) draws no random numbers.
    n_veins : int
        Number of random veins (about 60 % branching cortical veins, 40 % straight
        medullary veins crossing slices). When > 0, the internal cerebral veins and the
        superior sagittal sinus are added.
    vein_radius_mm : (float, float)
        Range of vein radii, mm (``surface_walk``; the other models use it for their
        cortical veins only and have their own documented ranges).
    vein_model : str
        Vein network model, one of :data:`VEIN_MODELS`. ``"surface_walk"``: the
        cortical/medullary network described under ``n_veins``. ``"dense_medullary"``:
        about ``8 * n_veins`` thin (radius 0.1-0.35 mm), short (8-25 mm), slightly
        curved medullary veins fanning out from the ventricle walls and deep white
        matter at all angles to B0, plus subependymal veins (radius 0.25-0.5 mm) and a
        few cortical veins. ``"tree"``: about ``n_veins / 2`` branching trees (root
        radius 0.4-0.75 mm, daughters about 0.79 of the parent radius down to 0.1 mm,
        random branch angles, per-tree tortuosity) through white matter and cortex.
        ``"tortuous_segments"``: about ``6 * n_veins`` short (3-12 mm), strongly curved
        segments, loops and coils (radius 0.1-0.6 mm) in white matter, deep grey
        matter, the insula and the corpus callosum region, plus cortical veins.
        ``"beaded"``: nearly straight medullary and deep veins split into thick beads
        (1-4 mm, radius 0.2-0.7 mm) and near-invisible thin stretches, short straight
        stubs (1.5-5 mm) at every angle, and a few cortical veins.
        ``"random_cylinders"``: about ``5 * n_veins`` straight vessels, direction uniform
        on the sphere, centred anywhere in the parenchyma (white and deep grey matter,
        insula, corpus callosum region, cortex), 4-40 mm long, radius 0.1-0.75 mm varying
        smoothly along each vessel, and a few cortical veins. ``"converging"``:
        about ``n_veins / 4`` medusa heads (6-16 thin spokes converging on one point in
        white or deep grey matter, one collector of radius 0.3-0.8 mm) and about
        ``1.5 * n_veins`` confluences (3-5 veins, radius 0.05-0.75 mm, leaving one
        point), and a few cortical veins. All models add the
        internal cerebral veins and the superior sagittal sinus.
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
    gibbs_ringing : bool
        Truncation artefact: the complex signal of each echo (before noise) is cut to
        the central part of k-space along the two in-plane axes (read, phase) with a
        sharp window, so edges ring (sinc overshoot). The kept fraction, between
        1/1.5 and 1/1.25 of k-space per axis, is drawn from the acquisition seed.
    motion_blur_mm : float
        Slight motion during the scan: the complex signal of each echo (before noise)
        is the weighted average of copies of the image shifted by rigid sub-voxel
        translations (up to this length, mm; linear interpolation), drawn from the
        acquisition seed. 0: off.
    scanner_swi_power : int
        Power of the negative phase mask of the scanner SWI written for
        ``input_kind="swi"``.
    scanner_swi_highpass_mm : float
        Gaussian sigma (mm) of the homodyne high-pass filter of that scanner SWI.
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
    brain_scale : float
        Isotropic scale of the whole anatomy (head, brain, veins, lesion positions)
        about the brain centre; 1: the template size (brain volume scales with the
        cube). Lesion ``mni_*`` truth stays in template coordinates.
    atrophy : float
        Cortical atrophy, 0-1 (0: off): up to this fraction of the grey matter near
        sulcal/surface CSF becomes CSF (widened sulci, thinner cortex); the ventricles
        also grow (volume factor ``1 + atrophy``, on top of ``ventricle_scale``).
    ventricle_scale : float
        Enlarged lateral/third ventricles, 1-2 (1: off): periventricular tissue becomes
        CSF so that the ventricular volume grows by about this factor.
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
    lesion_vein_clearance_mm: float = 4.0
    lesion_model: str = "sphere"
    juxtacortical_share: float = 0.0
    beside_vein_share: float = 0.0
    n_veins: int = 30
    vein_radius_mm: tuple[float, float] = (0.3, 1.0)
    vein_model: str = "surface_walk"
    venous_dchi_ppm: float = 0.40
    noise_level: float = 0.02
    bias_strength: float = 0.2
    background_field_ppm: float = 0.3
    phase_offset: bool = True
    phase_sign: int = 1
    gibbs_ringing: bool = False
    motion_blur_mm: float = 0.0
    scanner_swi_power: int = 4
    scanner_swi_highpass_mm: float = 4.0
    random_affine: bool = True
    max_rotation_deg: float = 15.0
    max_translation_mm: float = 10.0
    max_oblique_deg: float = 10.0
    random_storage_order: bool = True
    deformation_mm: float = 0.0
    brain_scale: float = 1.0
    atrophy: float = 0.0
    ventricle_scale: float = 1.0
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
        if self.vein_model not in VEIN_MODELS:
            raise ValueError(f"unknown vein_model {self.vein_model!r}; choose from "
                             f"{VEIN_MODELS}")
        if self.lesion_model not in LESION_MODELS:
            raise ValueError(f"unknown lesion_model {self.lesion_model!r}; choose from "
                             f"{LESION_MODELS}")
        if not 0.5 <= self.brain_scale <= 2.0:
            raise ValueError(f"brain_scale must be in [0.5, 2]: {self.brain_scale}")
        if not 0.0 <= self.atrophy <= 1.0:
            raise ValueError(f"atrophy must be in [0, 1]: {self.atrophy}")
        if not 1.0 <= self.ventricle_scale <= 3.0:
            raise ValueError(f"ventricle_scale must be in [1, 3]: {self.ventricle_scale}")
        if not 0.0 <= self.juxtacortical_share <= 1.0:
            raise ValueError(f"juxtacortical_share must be in [0, 1]: {self.juxtacortical_share}")
        if not 0.0 <= self.beside_vein_share <= 1.0:
            raise ValueError(f"beside_vein_share must be in [0, 1]: {self.beside_vein_share}")
        if not self.lesion_vein_clearance_mm >= 1.5:
            raise ValueError("lesion_vein_clearance_mm must be at least 1.5: "
                             f"{self.lesion_vein_clearance_mm}")

    def to_dict(self) -> dict:
        """JSON-serialisable dict of all parameters."""
        return json.loads(json.dumps(dataclasses.asdict(self)))
