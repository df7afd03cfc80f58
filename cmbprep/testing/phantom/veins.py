"""Vein network: centre lines in template space and venous volume fractions on a grid.

Cortical veins (with branches) walk along the brain surface, medullary veins run
straight and radially through deep white matter; the internal cerebral veins and the
superior sagittal sinus are added. Centre lines depend on the anatomy seed only and are
cached. :func:`vein_fractions` splats vessel cross sections onto a scanner grid.
"""

from __future__ import annotations

import functools

import numpy as np

from .anatomy import distance_and_gradient, template_maps
from .config import PhantomConfig
from .geometry import apply_affine

__all__ = ["add_veins", "cached_veins", "generate_veins", "resample_polyline",
           "splat_veins"]


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
            dist, grad = distance_and_gradient(p[None])
            g = grad[0] / max(np.linalg.norm(grad[0]), 1e-6)
            d = d - np.dot(d, g) * g  # stay tangential to the surface
        if plane_x is not None:
            d[0] = 0.0
        d /= max(np.linalg.norm(d), 1e-9)
        p = p + step * d
        if target_depth is not None:
            dist, grad = distance_and_gradient(p[None])
            g = grad[0] / max(np.linalg.norm(grad[0]), 1e-6)
            p = p - (dist[0] + target_depth) * g  # depth = -dist
        if plane_x is not None:
            p[0] = plane_x
        pts.append(p)
    return np.array(pts)


def _cortical_veins(n, r_lo, r_hi, rng):
    """Branching veins along the cortical surface, 1-2.5 mm deep."""
    t = template_maps()
    veins = []
    for _ in range(n):
        start = apply_affine(t["affine"], t["surface"][rng.integers(len(t["surface"]))])
        radius = rng.uniform(0.5 * (r_lo + r_hi), r_hi)
        pts = _walk(start, rng.normal(size=3), int(rng.integers(30, 80)), rng,
                    target_depth=rng.uniform(1.0, 2.5))
        veins.append((pts, radius))
        for _b in range(int(rng.integers(0, 3))):  # branches
            origin = pts[rng.integers(len(pts) // 4, len(pts))]
            branch = _walk(origin, rng.normal(size=3), int(rng.integers(10, 30)), rng,
                           target_depth=rng.uniform(1.0, 2.5))
            veins.append((branch, max(r_lo, 0.7 * radius)))
    return veins


def _medullary_veins(n, r_lo, r_hi, rng):
    """Thin, nearly straight veins running outwards from deep white matter."""
    t = template_maps()
    veins = []
    for _ in range(n):
        start = apply_affine(t["affine"], t["wm_deep"][rng.integers(len(t["wm_deep"]))])
        _, grad = distance_and_gradient(start[None])
        direction = grad[0] / max(np.linalg.norm(grad[0]), 1e-6)
        pts = _walk(start, direction, int(rng.integers(15, 30)), rng, wiggle=0.03)
        veins.append((pts, rng.uniform(r_lo, min(r_hi, r_lo + 0.25))))
    return veins


def _large_veins(r_hi, rng):
    """Internal cerebral veins (paired, deep) and the superior sagittal sinus."""
    veins = []
    for side in (-1.0, 1.0):
        start = np.array([2.5 * side, 2.0, 14.0]) + rng.normal(scale=0.5, size=3)
        pts = np.linspace(start, np.array([1.5 * side, -36.0, 6.0]), 40)
        bow = 2.0 * np.sin(np.linspace(0, np.pi, 40))  # arched upwards by up to 2 mm
        pts = pts + np.stack([np.zeros(40), np.zeros(40), bow], -1)
        veins.append((pts, min(1.0, r_hi)))
    top = np.array([0.0, 55.0, 60.0])
    while distance_and_gradient(top[None])[0][0] < 3.0 and top[2] < 120:
        top[2] += 1.0
    sss = _walk(top, np.array([0.0, -1.0, 0.3]), 150, rng, target_depth=-3.0, wiggle=0.02,
                plane_x=0.0)
    sss = sss[sss[:, 2] > -5]
    veins.append((sss, 2.5))
    return veins


def generate_veins(cfg: PhantomConfig, rng) -> list[tuple[np.ndarray, float]]:
    """List of (points (N, 3) template mm, radius mm) vessel centre lines: about 60 %
    of ``n_veins`` cortical, the rest medullary, plus the large veins."""
    if cfg.n_veins <= 0:
        return []
    r_lo, r_hi = cfg.vein_radius_mm
    n_cortical = round(0.6 * cfg.n_veins)
    return (_cortical_veins(n_cortical, r_lo, r_hi, rng)
            + _medullary_veins(cfg.n_veins - n_cortical, r_lo, r_hi, rng)
            + _large_veins(r_hi, rng))


@functools.lru_cache(maxsize=8)
def cached_veins(seed: int, n_veins: int, vein_radius_mm: tuple) -> tuple:
    """Vein centre lines of an anatomy seed (template space; random stream ``[seed, 0, 1]``),
    cached because they only depend on these arguments."""
    cfg = PhantomConfig(n_veins=n_veins, vein_radius_mm=vein_radius_mm)
    veins = generate_veins(cfg, np.random.default_rng([seed, 0, 1]))
    for pts, _ in veins:
        pts.setflags(write=False)
    return tuple(veins)


def resample_polyline(points, spacing):
    """Points along a polyline at (about) ``spacing`` mm arc length."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    if s[-1] <= 0:
        return points[:1]
    n = max(int(np.ceil(s[-1] / spacing)) + 1, 2)
    si = np.linspace(0, s[-1], n)
    return np.stack([np.interp(si, s, points[:, a]) for a in range(3)], -1)


def _cross_section(radius, vmin):
    """Sample offsets (u, w) across a vessel of ``radius`` (centre plus rings of
    ``6 * ring`` points) and the area each represents (summing to the disc area)."""
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
    return offsets, area


def _vessel_frame(pts):
    """Along a centre line: ``sin^2`` of the angle to scanner z (B0) and two unit normals."""
    tang = np.gradient(pts, axis=0)
    tang /= np.maximum(np.linalg.norm(tang, axis=1, keepdims=True), 1e-9)
    sin2 = 1.0 - tang[:, 2] ** 2
    helper = np.where(np.abs(tang[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    u = np.cross(tang, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = np.cross(tang, u)
    return sin2, u, w


def splat_veins(veins_scanner, inv_affine, shape, vox_mm):
    """Venous volume fraction by splatting cross-section samples of each vessel.

    Returns the fraction and the fraction weighted by ``sin^2`` of the angle between the
    vessel and B0 (scanner z), used for the extravascular static dephasing.
    """
    flat_all, weight_all, sin2_all = [], [], []
    vmin = float(min(vox_mm))
    vvol = float(np.prod(vox_mm))
    ds = vmin / 4.0
    for pts, radius in veins_scanner:
        pts = resample_polyline(pts, ds)
        if len(pts) < 2:
            continue
        sin2, u, w = _vessel_frame(pts)
        offsets, area = _cross_section(radius, vmin)
        for (ou, ow, _), a in zip(offsets, area):
            vox = apply_affine(inv_affine, pts + ou * u + ow * w)
            base = np.floor(vox).astype(int)
            fr = vox - base
            weight = a * ds / vvol
            for corner in np.ndindex(2, 2, 2):  # trilinear splatting
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


def add_veins(fractions, veins_scanner, inv_affine, shape, vox_mm):
    """Add the venous fraction to ``fractions`` (in place; other compartments shrink so
    that the total is unchanged, and there is no blood in air).

    Returns
    -------
    vein_frac, vein_frac_sin2 : ndarray float32
        Venous fraction, and venous fraction weighted by ``sin^2`` of the vessel angle
        to B0.
    """
    if veins_scanner:
        vein_frac, vein_frac_sin2 = splat_veins(veins_scanner, inv_affine, shape, vox_mm)
    else:
        vein_frac = vein_frac_sin2 = np.zeros(shape, np.float32)
    tissue_total = sum(fractions.values())
    vein_frac = np.minimum(vein_frac, tissue_total)  # no blood in air
    keep = np.where(tissue_total > 0, 1.0 - vein_frac / np.maximum(tissue_total, 1e-6),
                    1.0).astype(np.float32)
    del tissue_total
    for frac in fractions.values():
        frac *= keep
    fractions["vein"] = vein_frac
    return vein_frac, vein_frac_sin2
