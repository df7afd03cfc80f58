"""Microbleeds and calcifications: placement in template space and their signal.

Lesions (CMBs paramagnetic, calcifications diamagnetic) are placed in MARS regions away
from each other and from veins. With ``lesion_model="sphere"`` each is a uniformly
magnetised sphere with no signal inside; with ``"lobulated"`` a sphere with 1-3
overlapping lobes of their own susceptibility (their fields add) and some signal left
inside, decaying with echo time (:data:`~.config.LESION_MODELS`). Near a lesion the
complex signal is supersampled and averaged into each voxel (so lesions "bloom" with
echo time, field strength and susceptibility); farther out the lesion field is added at
voxel centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .anatomy import juxtacortical_sites, lesion_site_ok, template_maps
from .geometry import apply_affine
from .physics import GAMMA_RAD, sphere_field_ppm

__all__ = ["BESIDE_VEIN_GAP_MM", "THIN_VEIN_CLEARANCE_MM", "THIN_VEIN_RADIUS_MM",
           "TRUTH_COLUMNS", "LesionSignal", "in_field_of_view", "lesion_signal",
           "place_lesions"]

#: Column order of the truth table (before ``lesion_id``).
TRUTH_COLUMNS = [
    "kind", "x", "y", "z", "i", "j", "k", "mni_x", "mni_y", "mni_z", "radius_mm",
    "dchi_ppm", "apparent_diameter_mm", "min_relative_signal", "mars_category"]
_CATEGORIES = ("lobar", "deep", "infratentorial")
#: Veins thinner than this (radius, mm) need a lesion clearance of only
#: :data:`THIN_VEIN_CLEARANCE_MM` (instead of 4 mm) beyond the lesion radius.
THIN_VEIN_RADIUS_MM = 0.3
THIN_VEIN_CLEARANCE_MM = 1.5
#: A lesion placed *beside a vein* (``PhantomConfig.beside_vein_share``) has its centre
#: this far (mm, min and max) beyond its extent from the centre line of the nearest vein of
#: radius >= :data:`THIN_VEIN_RADIUS_MM`, instead of ``lesion_vein_clearance_mm`` or more.
BESIDE_VEIN_GAP_MM = (1.2, 3.0)


def in_field_of_view(point_sc, inv_affine, crop, margin=2):
    """True when a scanner mm point lies at least ``margin`` voxels inside ``crop``."""
    crop_lo = np.array([s.start for s in crop], float)
    crop_hi = np.array([s.stop - 1 for s in crop], float)
    ijk = apply_affine(inv_affine, point_sc[None])[0]
    return bool(np.all(ijk >= crop_lo + margin) and np.all(ijk <= crop_hi - margin))


def _lesion_specs(cfg):
    """(kind, radius range, susceptibility range) per lesion to place."""
    return [("cmb", cfg.cmb_radius_mm, cfg.cmb_dchi_ppm)] * cfg.n_cmbs + [
        ("calcification", cfg.calcification_radius_mm, cfg.calcification_dchi_ppm)
    ] * cfg.n_calcifications


def _draw_centre(category, radius, rng, centres, tree, xfm, fov_check, min_spacing,
                 thin_tree, site_check, clearance, vein_distance=None):
    """A template mm centre in ``category`` (a MARS category or ``"juxtacortical"``:
    :func:`~.anatomy.juxtacortical_sites` at least ``radius`` deep; up to 500 attempts),
    or None.

    With ``vein_distance`` (each site's distance, mm, to the nearest centre line in
    ``tree``) only sites :data:`BESIDE_VEIN_GAP_MM` beyond ``radius`` from a vein are
    drawn, and ``clearance`` is that band's lower end."""
    t = template_maps()
    if category == "juxtacortical":
        sites = juxtacortical_sites()
        keep = sites["depth_mm"] >= radius
        candidates = sites["index"]
    else:
        candidates = t["regions"][category]
        keep = np.ones(len(candidates), bool)
    if vein_distance is not None:
        lo, hi = BESIDE_VEIN_GAP_MM
        d = vein_distance(category)
        keep &= (d >= radius + lo) & (d <= radius + hi)
        clearance = lo
    candidates = candidates[keep]
    if not len(candidates):
        return None
    for _attempt in range(500):
        m = apply_affine(t["affine"], candidates[rng.integers(len(candidates))])
        m = m + rng.uniform(-0.5, 0.5, 3)
        if any(np.linalg.norm(m - c) < min_spacing for c in centres):
            continue
        if tree is not None and tree.query(m)[0] < radius + clearance:
            continue
        if thin_tree is not None and thin_tree.query(m)[0] < radius + THIN_VEIN_CLEARANCE_MM:
            continue
        if site_check is not None and not site_check(m, radius):
            continue
        if not fov_check(xfm.template_to_scanner(m[None])[0]):
            continue
        return m
    return None


def place_lesions(cfg, rng, vein_points, xfm, fov_check,
                  thin_vein_points=None) -> list[dict]:
    """Lesion centres in template space, away from each other and from veins (lesion
    radius + ``cfg.lesion_vein_clearance_mm`` from ``vein_points``, +
    :data:`THIN_VEIN_CLEARANCE_MM` from ``thin_vein_points``) and, with ``atrophy`` or
    ``ventricle_scale``, away from the tissue that became CSF (:func:`~.anatomy.lesion_site_ok`).

    Each lesion draws its radius, susceptibility and MARS category (CMBs from
    ``cmb_location_weights``, calcifications 70 % deep); when that category cannot hold
    it (e.g. outside a slab field of view) the other categories are tried, and a lesion
    with no room anywhere is dropped. With ``cfg.juxtacortical_share > 0`` a lobar
    microbleed is first tried at a juxtacortical site with that probability (one more
    random number per lobar microbleed; none when the share is 0). With
    ``cfg.beside_vein_share > 0`` each lesion (microbleed or calcification) is then first
    tried, with that probability, *beside a vein*: its centre :data:`BESIDE_VEIN_GAP_MM`
    beyond its extent from a vein's centre line, in the category it would try first (one
    more random number per lesion; none when the share is 0 or the scan has no vein of
    radius >= :data:`THIN_VEIN_RADIUS_MM`).

    Returns
    -------
    list of dict
        ``kind mni radius_mm dchi_ppm mars_category`` per placed lesion.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(vein_points) if len(vein_points) else None
    thin_tree = (cKDTree(thin_vein_points)
                 if thin_vein_points is not None and len(thin_vein_points) else None)

    def site_check(m, radius):
        return lesion_site_ok(m, radius, cfg.atrophy, cfg.ventricle_scale)

    check = site_check if cfg.atrophy > 0 or cfg.ventricle_scale > 1 else None
    distances = {}

    def vein_distance(category):
        """Distance (mm) of each of ``category``'s template sites to the nearest vein
        centre line in ``tree`` (computed once per category)."""
        if category not in distances:
            t = template_maps()
            index = (juxtacortical_sites()["index"] if category == "juxtacortical"
                     else t["regions"][category])
            distances[category] = tree.query(
                apply_affine(t["affine"], index.astype(float)),
                distance_upper_bound=10.0 + BESIDE_VEIN_GAP_MM[1])[0]
        return distances[category]

    rows = []
    centres: list[np.ndarray] = []
    weights = {k: float(v) for k, v in cfg.cmb_location_weights.items() if v > 0}
    cats = sorted(weights)
    probs = np.array([weights[c] for c in cats])
    probs = probs / probs.sum()
    for kind, r_range, chi_range in _lesion_specs(cfg):
        radius = float(rng.uniform(*r_range))
        dchi = float(rng.uniform(*chi_range))
        drawn = str(rng.choice(cats, p=probs)) if kind == "cmb" else str(
            rng.choice(["deep", "lobar"], p=[0.7, 0.3]))
        shape = _draw_lobes(rng, radius, dchi) if cfg.lesion_model == "lobulated" else {}
        extent = shape.get("extent_mm", radius)
        order = [drawn] + [c for c in _CATEGORIES if c != drawn]
        if (kind == "cmb" and drawn == "lobar" and cfg.juxtacortical_share > 0
                and rng.random() < cfg.juxtacortical_share):
            order = ["juxtacortical"] + order
        beside = (cfg.beside_vein_share > 0 and tree is not None
                  and rng.random() < cfg.beside_vein_share)
        for attempt, category in enumerate([order[0]] * beside + order):
            m = _draw_centre(category, extent, rng, centres, tree, xfm, fov_check,
                             cfg.min_lesion_spacing_mm, thin_tree, check,
                             cfg.lesion_vein_clearance_mm,
                             vein_distance if beside and attempt == 0 else None)
            if m is not None:
                break
        category = "lobar" if category == "juxtacortical" else category
        if m is None:
            continue  # no room anywhere (tiny FOV): the truth table has fewer lesions
        centres.append(m)
        rows.append({"kind": kind, "mni": m, "radius_mm": radius, "dchi_ppm": dchi,
                     "mars_category": category, **shape})
    return rows


def _draw_lobes(rng, radius, dchi):
    """Lobes of a ``"lobulated"`` lesion around its main sphere (``radius``, ``dchi``).

    Returns
    -------
    dict
        ``parts``: (offset (3,) mm, radius mm, dchi ppm) per sphere, the main one first
        (offset 0); ``interior_r2star_3t``: R2* (1/s, at 3 T) of the signal left inside;
        ``extent_mm``: the farthest distance of the lesion from its centre.
    """
    parts = [(np.zeros(3), radius, dchi)]
    for _ in range(int(rng.integers(1, 4))):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        parts.append((direction * radius * rng.uniform(0.4, 0.9),
                      radius * rng.uniform(0.45, 0.85), dchi * rng.uniform(0.6, 1.0)))
    extent = max(float(np.linalg.norm(o)) + r for o, r, _ in parts)
    return {"parts": parts, "interior_r2star_3t": float(rng.uniform(100.0, 500.0)),
            "extent_mm": extent}


@dataclass
class LesionSignal:
    """Signal of one lesion near its centre.

    Attributes
    ----------
    box : tuple of 3 slice
        Near neighbourhood on the simulation grid.
    factor : (E, ...) complex64 ndarray
        Complex factor that multiplies the lesion-free signal in ``box``, per echo.
    centre_field : ndarray float32
        Lesion field at the voxel centres of ``box`` (ppm).
    truth : dict
        Truth table row (voxel coordinates on the simulation grid).
    """

    box: tuple
    factor: np.ndarray
    centre_field: np.ndarray
    truth: dict


def _box(c_vox, r_mm, vox, shape):
    """Voxel box of half-width ``r_mm`` around ``c_vox``, clipped to the grid."""
    return tuple(slice(max(0, int(np.floor(c_vox[d] - r_mm / vox[d]))),
                       min(shape[d], int(np.ceil(c_vox[d] + r_mm / vox[d])) + 1))
                 for d in range(3))


def _parts_field(points_mm, parts):
    """Field (ppm) of the lesion's spheres ``(centre, radius, dchi)`` at ``points_mm``
    (their fields add)."""
    (c0, a0, d0), *rest = parts
    out = sphere_field_ppm(points_mm, c0, a0, d0)
    for c, a, d in rest:
        out = out + sphere_field_ppm(points_mm, c, a, d)
    return out


def _add_far_field(field, affine, box_far, box_near, parts):
    """Add the lesion field at voxel centres of ``box_far`` outside ``box_near``."""
    far_idx = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box_far],
                                   indexing="ij"), -1).reshape(-1, 3)
    fvals = _parts_field(apply_affine(affine, far_idx), parts)
    fvals = fvals.reshape(tuple(s.stop - s.start for s in box_far)).astype(np.float32)
    rel = tuple(slice(n.start - f.start, n.stop - f.start) for n, f in zip(box_near, box_far))
    fvals[rel] = 0.0
    field[box_far] += fvals


def _near_signal(affine, box_near, parts, sub_n, tes, phase_factor, interior_r2star=None):
    """Supersampled complex average ``mean(w exp(i phase))`` per voxel and echo of
    ``box_near`` (``w`` = 0 inside the lesion's spheres, or ``exp(-TE interior_r2star)``
    when that is given), complex128 (E, N), the lesion field at the voxel centres (N,)
    and the lesion volume (mm^3, from the supersampling points inside it)."""
    near_idx = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box_near],
                                    indexing="ij"), -1).reshape(-1, 3)
    offs = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in sub_n],
                                indexing="ij"), -1).reshape(-1, 3)
    acc = np.zeros((len(tes), len(near_idx)), np.complex128)
    centre_field = _parts_field(apply_affine(affine, near_idx.astype(float)), parts)
    n_inside = 0
    chunk = max(1, 400_000 // len(offs))
    for c0 in range(0, len(near_idx), chunk):
        pv = near_idx[c0:c0 + chunk, None, :] + offs[None]
        pmm = apply_affine(affine, pv.reshape(-1, 3))
        dB = _parts_field(pmm, parts).reshape(pv.shape[:2])
        outside = np.ones(len(pmm), bool)
        for c, a, _ in parts:
            outside &= np.sum((pmm - c) ** 2, axis=1) > a * a
        n_inside += int((~outside).sum())
        wgt = outside.reshape(pv.shape[:2]).astype(float)
        for e, te in enumerate(tes):
            ph = phase_factor * te * dB
            w = wgt if interior_r2star is None else np.where(
                wgt > 0, 1.0, np.exp(-te * interior_r2star))
            acc[e, c0:c0 + chunk] = np.mean(w * np.exp(1j * ph), axis=1)
    volume = n_inside * abs(float(np.linalg.det(affine[:3, :3]))) / len(offs)
    return acc, centre_field, volume


def _dark_voxels(rel_sig, c_vox, box_near):
    """Number of voxels of the connected region where ``rel_sig < 0.5`` that holds the
    lesion centre (or is nearest to it); 0 when no voxel is that dark."""
    dark = rel_sig < 0.5
    if not dark.any():
        return 0
    centre_local = np.clip(np.round(c_vox).astype(int) - [s.start for s in box_near], 0,
                           np.array(rel_sig.shape) - 1)
    lab, _ = ndi.label(dark)
    lab_c = lab[tuple(centre_local)]
    if lab_c == 0:
        near = np.argwhere(dark)
        lab_c = lab[tuple(near[np.argmin(np.linalg.norm(near - centre_local, axis=1))])]
    return int((lab == lab_c).sum())


def lesion_signal(lesion, xfm, field, grid, tes, field_strength_t, phase_sign,
                  subvoxel_mm) -> LesionSignal:
    """Field and signal of one placed lesion on the simulation grid.

    The far field (phase above 0.002 rad at the longest echo) is added to ``field`` in
    place; the near neighbourhood (phase above 0.05 rad, at least radius + 2 voxels) is
    supersampled with spacing <= ``subvoxel_mm``. A ``"lobulated"`` lesion (``parts``,
    :func:`_draw_lobes`) reaches as far as the sphere of its summed moment would, from
    its farthest lobe.
    """
    affine, vox, shape = grid.affine, grid.voxel_size, grid.shape
    c_sc = xfm.template_to_scanner(lesion["mni"][None])[0]
    a, dchi = lesion["radius_mm"], lesion["dchi_ppm"]
    b0 = field_strength_t
    parts = [(c_sc + o, r, d) for o, r, d in lesion.get("parts", [(0.0, a, dchi)])]
    reach, spread = a, 0.0
    if len(parts) > 1:  # radius of a sphere of dchi with the lobes' summed moment
        reach = (sum(abs(d) * r ** 3 for _, r, d in parts) / abs(dchi)) ** (1 / 3)
        spread = max(float(np.linalg.norm(c - c_sc)) for c, _, _ in parts)
    phase_scale = GAMMA_RAD * b0 * 1e-6 * abs(dchi) * 2.0 / 3.0 * float(tes.max())
    r_near = reach * (phase_scale / 0.05) ** (1 / 3) + spread
    r_far = reach * (phase_scale / 0.002) ** (1 / 3) + spread
    r_near = max(r_near, lesion.get("extent_mm", a) + 2 * max(vox))
    r2star = lesion.get("interior_r2star_3t")
    r2star = None if r2star is None else r2star * b0 / 3.0
    if len(parts) > 1:  # the truth centre: the volume-weighted centre of the lobes
        c_sc = sum(c * r ** 3 for c, r, _ in parts) / sum(r ** 3 for _, r, _ in parts)
    c_vox = apply_affine(grid.inv_affine, c_sc[None])[0]
    box_near = _box(c_vox, r_near, vox, shape)
    _add_far_field(field, affine, _box(c_vox, r_far, vox, shape), box_near, parts)
    sub_n = [max(1, int(np.ceil(v / subvoxel_mm))) for v in vox]
    acc, centre_field, volume = _near_signal(affine, box_near, parts, sub_n, tes,
                                             phase_sign * GAMMA_RAD * b0 * 1e-6, r2star)
    near_shape = tuple(s.stop - s.start for s in box_near)
    rel_sig = np.abs(acc[int(np.argmax(tes))]).reshape(near_shape)
    n_dark = _dark_voxels(rel_sig, c_vox, box_near)
    app_d = (6.0 * n_dark * float(np.prod(vox)) / np.pi) ** (1 / 3) if n_dark else 0.0
    mni = lesion["mni"]
    truth = {
        "kind": lesion["kind"], "x": c_sc[0], "y": c_sc[1], "z": c_sc[2],
        "i": c_vox[0], "j": c_vox[1], "k": c_vox[2],
        "mni_x": mni[0], "mni_y": mni[1], "mni_z": mni[2],
        "radius_mm": a if len(parts) == 1 else (3.0 * volume / (4.0 * np.pi)) ** (1 / 3),
        "dchi_ppm": dchi, "apparent_diameter_mm": app_d,
        "min_relative_signal": float(rel_sig.min()),
        "mars_category": lesion["mars_category"],
    }
    return LesionSignal(box_near, acc.reshape((len(tes),) + near_shape).astype(np.complex64),
                        centre_field.reshape(near_shape).astype(np.float32), truth)
