"""Head anatomy: ICBM152 template maps, lesion regions and tissue fractions on a grid.

The ICBM152 2009a nonlinear symmetric maps that nilearn ships (grey matter, white
matter, T1; brain mask ``T1 > 0.2``) are read once per process (:func:`template_maps`)
with a signed distance to the brain surface, deep grey nuclei and the regions where
lesions are placed. :func:`tissue_fractions` samples them through the subject transform
onto an acquisition grid and adds extra-cerebral CSF, skull and scalp layers.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from .geometry import apply_affine, grid_points, shifted_affine

__all__ = [
    "CSF_OUTER_MM",
    "SCALP_OUTER_MM",
    "SKULL_OUTER_MM",
    "TEMPLATE_PAD_MM",
    "TISSUE_NAMES",
    "distance_and_gradient",
    "juxtacortical_sites",
    "lesion_site_ok",
    "sample",
    "template_maps",
    "tissue_fractions",
    "ventricle_growth_mm",
    "ventricle_maps",
]

# Head layers outside the brain mask, as distances from the brain surface in mm.
CSF_OUTER_MM = 3.0
SKULL_OUTER_MM = 9.0
SCALP_OUTER_MM = 15.0
#: Padding of the template distance map around the brain, mm.
TEMPLATE_PAD_MM = 24.0
#: Compartments sampled from the template (veins are added by :mod:`.veins`).
TISSUE_NAMES = ("gm", "wm", "csf", "deep_gm", "skull", "scalp")
_DISTANCE_STEP = 2  # voxels of the 1 mm template per voxel of the distance map


def _template_file(name: str) -> Path:
    """Path of a template file shipped inside the nilearn package (no download, and no
    import of ``nilearn.datasets``, which pulls in scikit-learn)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nilearn is required for the phantom templates")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"nilearn template file not found: {path}")
    return path


def _load_map(name):
    """One template map rescaled to a maximum of 1 (as nilearn's loaders do) and its affine."""
    img = nib.load(str(_template_file(f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")))
    data = np.asarray(img.dataobj, dtype=np.float32)
    return data / data.max(), np.asarray(img.affine, float)


def _brain_maps():
    """GM, WM, T1 and brain mask cropped to the brain (+2 voxels), their affine and the
    brain bounding box (template mm)."""
    gm, affine = _load_map("gm")
    wm, _ = _load_map("wm")
    t1, _ = _load_map("t1")
    brain = (t1 > 0.2).astype(np.float32)  # nilearn.datasets.load_mni152_brain_mask
    nz = np.argwhere(brain > 0.5)
    lo_idx = np.maximum(nz.min(0) - 2, 0)
    hi_idx = np.minimum(nz.max(0) + 3, brain.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo_idx, hi_idx))
    gm, wm, t1, brain = (np.ascontiguousarray(a[crop]) for a in (gm, wm, t1, brain))
    affine = shifted_affine(affine, lo_idx)
    bbox_mm = (apply_affine(affine, (nz.min(0) - lo_idx)[None].astype(float))[0],
               apply_affine(affine, (nz.max(0) - lo_idx)[None].astype(float))[0])
    gm = np.minimum(gm, brain)
    wm = np.minimum(wm, brain - gm)
    return gm, wm, t1, brain, affine, bbox_mm


def _surface_distance(brain, affine):
    """Signed distance to the brain surface (mm, > 0 outside) on a padded 2 mm grid,
    smoothed, and the affine of that grid."""
    step = _DISTANCE_STEP
    pad = int(TEMPLATE_PAD_MM / step)
    coarse = brain[::step, ::step, ::step] > 0.5
    coarse = np.pad(coarse, pad)
    dist = (ndi.distance_transform_edt(~coarse) - ndi.distance_transform_edt(coarse)) * step
    dist = ndi.gaussian_filter(dist.astype(np.float32), 1.0)
    dist_affine = affine @ np.diag([step, step, step, 1.0])
    dist_affine[:3, 3] -= pad * step * np.diag(affine)[:3]  # nilearn grid is axis-aligned
    return dist, dist_affine


def _regions(gm, wm, brain, affine, dist):
    """Deep grey nuclei (smoothed fraction) and voxel indices of the lesion regions
    (MARS categories), of the cortical surface (vein starts) and of deep white matter."""
    step = _DISTANCE_STEP
    pad = int(TEMPLATE_PAD_MM / step)
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

    def idx(mask):
        return np.argwhere(mask).astype(np.int16)

    return {
        "deep": deep_f,
        "regions": {"lobar": idx(lobar), "deep": idx(deep_region),
                    "infratentorial": idx(infra_region)},
        "surface": idx(surface),
        "wm_deep": idx(wm_deep),
    }


@functools.lru_cache(maxsize=1)
def template_maps() -> dict:
    """Template-space maps on the 1 mm ICBM152 grid and a coarse padded distance map
    (cached per process).

    Returns
    -------
    dict
        ``affine inv_affine gm wm brain deep t1`` (1 mm maps cropped to the brain),
        ``dist dist_affine dist_inv_affine dist_and_grad`` (signed distance to the brain
        surface in mm and its gradient), ``head_surface brain_surface`` (template mm
        points on the outer surface of the head / brain), ``regions`` (voxel indices per
        MARS category), ``surface`` and ``wm_deep`` (voxel indices) and
        ``brain_bbox_mm``.
    """
    gm, wm, t1, brain, affine, bbox_mm = _brain_maps()
    dist, dist_affine = _surface_distance(brain, affine)
    regions = _regions(gm, wm, brain, affine, dist)
    step = _DISTANCE_STEP
    dist_and_grad = np.stack([dist] + [g / step for g in np.gradient(dist)]).astype(np.float32)

    def shell(lo, hi):
        return apply_affine(dist_affine, np.argwhere((dist >= lo) & (dist < hi)))

    return {
        "affine": affine,
        "inv_affine": np.linalg.inv(affine),
        "gm": gm,
        "wm": wm,
        "brain": brain,
        "deep": regions["deep"],
        "t1": t1,
        "dist": dist,
        "dist_affine": dist_affine,
        "dist_inv_affine": np.linalg.inv(dist_affine),
        "dist_and_grad": dist_and_grad,
        "head_surface": shell(SCALP_OUTER_MM - 2.0, SCALP_OUTER_MM),
        "brain_surface": shell(-2.0, 0.0),
        "regions": regions["regions"],
        "surface": regions["surface"],
        "wm_deep": regions["wm_deep"],
        "brain_bbox_mm": bbox_mm,
    }


#: Depth range (mm inside the template brain mask's edge) of juxtacortical lesion sites.
JUXTACORTICAL_DEPTH_MM = (1.0, 3.5)


@functools.lru_cache(maxsize=1)
def juxtacortical_sites() -> dict:
    """Template voxels where a juxtacortical microbleed may sit (cached per process;
    computed only when ``PhantomConfig.juxtacortical_share`` is used).

    A site lies :data:`JUXTACORTICAL_DEPTH_MM` inside the edge of the 1 mm template brain
    mask (``brain > 0.5``, so the depth follows the sulci, unlike the smoothed 2 mm
    distance the lobar region uses), in tissue (grey + white matter >= 0.7) and within
    3 mm of the lobar region (so not in deep grey matter or below the tentorium).

    Returns
    -------
    dict
        ``index`` (int16 voxel indices of the 1 mm maps) and ``depth_mm`` (float32, each
        site's distance to the brain mask's edge).
    """
    t = template_maps()
    inside = t["brain"] > 0.5
    depth = ndi.distance_transform_edt(inside).astype(np.float32)
    lobar = np.zeros(inside.shape, bool)
    lobar[tuple(t["regions"]["lobar"].T)] = True
    near_lobar = ndi.distance_transform_edt(~lobar) <= 3.0
    lo, hi = JUXTACORTICAL_DEPTH_MM
    sites = (depth >= lo) & (depth <= hi) & (t["gm"] + t["wm"] >= 0.7) & near_lobar
    index = np.argwhere(sites)
    return {"index": index.astype(np.int16), "depth_mm": depth[sites].astype(np.float32)}


@functools.lru_cache(maxsize=1)
def ventricle_maps() -> dict:
    """Template maps for the anatomy variants (``atrophy``, ``ventricle_scale``) and the
    deep vein models (cached per process).

    Returns
    -------
    dict
        ``mask`` (bool, lateral and third ventricles: CSF > 0.5 deeper than 8 mm in a
        central box, components of >= 200 voxels), ``dist`` (float32 distance to the
        ventricles, mm, 0 inside), ``volume_mm3`` (ventricular volume),
        ``grow_dist`` (sorted distances of the brain voxels outside the ventricles, to
        find the dilation that multiplies the volume), ``wall`` (voxel indices of
        white matter 1-3 mm from the ventricles), ``gm_loss`` (float32: cortical grey
        matter weighted by the nearness of sulcal/extra-cerebral CSF, 0-1; the grey
        matter that atrophy removes first), all on the 1 mm template grid.
    """
    t = template_maps()
    gm, wm, brain, aff = t["gm"], t["wm"], t["brain"], t["affine"]
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in gm.shape], indexing="ij", sparse=True)
    x = aff[0, 0] * ii + aff[0, 3]
    y = aff[1, 1] * jj + aff[1, 3]
    z = aff[2, 2] * kk + aff[2, 3]
    step = _DISTANCE_STEP
    pad = int(TEMPLATE_PAD_MM / step)
    depth = -t["dist"][np.ix_(*[pad + np.arange(n) // step for n in gm.shape])]
    box = (np.abs(x) < 32) & (y > -50) & (y < 35) & (z > -8) & (z < 38)
    vent = (csf > 0.5) & (depth > 8) & box
    lab, n_lab = ndi.label(vent)
    sizes = np.bincount(lab.ravel(), minlength=n_lab + 1)
    keep = sizes >= 200
    keep[0] = False
    vent = keep[lab]
    dist = ndi.distance_transform_edt(~vent).astype(np.float32)  # 1 mm grid
    outside = (brain > 0.5) & ~vent
    grow_dist = np.sort(dist[outside])
    wall = (dist >= 1.0) & (dist <= 3.0) & (wm > 0.5)
    pial_csf = np.where(vent, 0.0, csf) + (1.0 - brain)
    near_csf = np.clip(ndi.gaussian_filter(pial_csf.astype(np.float32), 1.0) / 0.25, 0, 1)
    gm_loss = (gm * (1.0 - t["deep"]) * near_csf).astype(np.float32)
    return {"mask": vent, "dist": dist, "volume_mm3": float(vent.sum()),
            "grow_dist": grow_dist, "wall": np.argwhere(wall).astype(np.int16),
            "gm_loss": gm_loss}


def ventricle_growth_mm(ventricle_scale, atrophy=0.0):
    """Dilation of the ventricles (template mm) that multiplies their volume by
    ``ventricle_scale * (1 + atrophy)`` (0 when that is 1)."""
    factor = float(ventricle_scale) * (1.0 + float(atrophy))
    if factor <= 1.0:
        return 0.0
    v = ventricle_maps()
    n_extra = int(round((factor - 1.0) * v["volume_mm3"]))
    n_extra = min(max(n_extra, 1), len(v["grow_dist"]) - 1)
    return float(v["grow_dist"][n_extra]) + 0.5


def _variant_fractions(points_mm, gm, wm, deep, atrophy, grow_mm):
    """GM (incl. deep), WM and deep-GM fractions after atrophy and ventricle growth."""
    v = ventricle_maps()
    t = template_maps()
    if atrophy > 0:
        loss = atrophy * sample(v["gm_loss"], t["inv_affine"], points_mm)
        gm = gm - np.minimum(loss, np.maximum(gm - deep, 0.0))
    if grow_mm > 0:
        dv = sample(v["dist"], t["inv_affine"], points_mm, cval=1e3)
        keep = 1.0 - np.clip(grow_mm - dv + 0.5, 0.0, 1.0)  # 1 mm partial-volume ramp
        gm, wm, deep = gm * keep, wm * keep, deep * keep
    return gm, wm, deep


def lesion_site_ok(point_mm, radius_mm, atrophy=0.0, ventricle_scale=1.0):
    """False when a lesion at a template point would reach the enlarged ventricles or
    sit in tissue that atrophy turned into CSF (always True without the variants)."""
    grow = ventricle_growth_mm(ventricle_scale, atrophy)
    if atrophy <= 0 and grow <= 0:
        return True
    p = np.atleast_2d(np.asarray(point_mm, float))
    t = template_maps()
    if grow > 0 and sample(ventricle_maps()["dist"], t["inv_affine"], p, cval=1e3)[0] < \
            grow + radius_mm + 1.0:
        return False
    _, gm, wm, _, deep = _sample_brain(p)
    gm, wm, _ = _variant_fractions(p, gm, wm, deep, atrophy, grow)
    return bool(gm[0] + wm[0] >= 0.7)


def sample(volume, inv_affine, points_mm, order=1, cval=0.0):
    """Sample ``volume`` at (N, 3) mm points (linear interpolation), float32."""
    vox = apply_affine(inv_affine, points_mm)
    return ndi.map_coordinates(volume, vox.T, order=order, mode="constant", cval=cval,
                               prefilter=False).astype(np.float32)


def distance_and_gradient(points_mm):
    """Signed distance to the brain surface (mm, > 0 outside) and its gradient at (N, 3)
    template mm points (trilinear on the 2 mm map)."""
    t = template_maps()
    stack = t["dist_and_grad"]
    vox = apply_affine(t["dist_inv_affine"], np.atleast_2d(points_mm))
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


def _ramp(edge_mm, dist_mm, width_mm):
    """Partial-volume fraction inside a layer edge at ``edge_mm`` (one voxel wide ramp)."""
    return np.clip((edge_mm - dist_mm) / width_mm + 0.5, 0.0, 1.0)


def _sample_brain(points_mm):
    """Distance to the brain surface and GM, WM, brain, deep-GM fractions at template
    points; the 1 mm maps are only sampled within 4 mm of the brain."""
    t = template_maps()
    d = sample(t["dist"], t["dist_inv_affine"], points_mm, cval=60.0)
    near = d < 4.0
    gm, wm, br, deep = (np.zeros(len(points_mm), np.float32) for _ in range(4))
    m_near = points_mm[near]
    gm[near] = sample(t["gm"], t["inv_affine"], m_near)
    wm[near] = sample(t["wm"], t["inv_affine"], m_near)
    br[near] = sample(t["brain"], t["inv_affine"], m_near)
    deep[near] = sample(t["deep"], t["inv_affine"], m_near) * gm[near]
    return d, gm, wm, br, deep


def tissue_fractions(xfm, affine, shape, voxel_size, include_head, atrophy=0.0,
                     ventricle_scale=1.0):
    """Partial-volume fraction of each compartment on a scanner grid.

    Parameters
    ----------
    xfm : TemplateTransform
        Subject transform (template <-> scanner).
    affine : (4, 4) ndarray
        Voxel to scanner mm of the grid.
    shape : tuple of 3 int
    voxel_size : tuple of 3 float
        mm, stored order (the head layer ramps are one smallest voxel wide).
    include_head : bool
        Add extra-cerebral CSF, skull and scalp layers.
    atrophy, ventricle_scale : float
        Anatomy variants (see :class:`~.config.PhantomConfig`): grey matter near sulcal
        CSF and periventricular tissue become CSF.

    Returns
    -------
    fractions : dict of ndarray float32
        One map per :data:`TISSUE_NAMES` entry.
    brain : ndarray float32
        Brain mask fraction.
    """
    n0 = shape[0]
    step = max(1, int(2_000_000 // (shape[1] * shape[2])))
    fracs = {n: np.zeros(shape, np.float32) for n in TISSUE_NAMES}
    brain_p = np.zeros(shape, np.float32)
    width = float(min(voxel_size)) / xfm.scale  # template mm
    grow_mm = ventricle_growth_mm(ventricle_scale, atrophy)
    for s0 in range(0, n0, step):
        sl = slice(s0, min(n0, s0 + step))
        m = xfm.scanner_to_template(grid_points(affine, shape, sl), exact=False)
        sub_shape = (sl.stop - sl.start,) + shape[1:]
        d, gm, wm, br, deep = _sample_brain(m)
        if atrophy > 0 or grow_mm > 0:
            gm, wm, deep = _variant_fractions(m, gm, wm, deep, atrophy, grow_mm)
        del m
        csf = np.clip(br - gm - wm, 0, 1)
        fracs["gm"][sl] = (gm - deep).reshape(sub_shape)
        fracs["deep_gm"][sl] = deep.reshape(sub_shape)
        fracs["wm"][sl] = wm.reshape(sub_shape)
        brain_p[sl] = br.reshape(sub_shape)
        if include_head:
            rest = 1.0 - br
            c_in, s_in, h_in = (_ramp(edge, d, width)
                                for edge in (CSF_OUTER_MM, SKULL_OUTER_MM, SCALP_OUTER_MM))
            csf = csf + rest * c_in
            fracs["skull"][sl] = (rest * (s_in - c_in)).reshape(sub_shape)
            fracs["scalp"][sl] = (rest * (h_in - s_in)).reshape(sub_shape)
        fracs["csf"][sl] = csf.reshape(sub_shape)
    return fracs, brain_p
