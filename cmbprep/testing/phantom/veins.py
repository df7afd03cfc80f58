"""Vein network: centre lines in template space and venous volume fractions on a grid.

Vein models (``PhantomConfig.vein_model``, :data:`~.config.VEIN_MODELS`):

* ``"surface_walk"`` (default): cortical veins (with branches) walk along the brain
  surface, medullary veins run straight and radially through deep white matter.
* ``"dense_medullary"``: many thin, short, slightly curved medullary veins fanning out
  from the ventricle walls and deep white matter at all angles to B0, subependymal
  veins along the ventricles and a few cortical veins.
* ``"tree"``: branching venous trees (Murray-like radius ratios) through white matter
  and cortex, tortuosity varying per tree.
* ``"tortuous_segments"``: many short, strongly curved segments, loops and coils in
  white matter, deep grey matter, insula and corpus callosum, plus cortical veins.
* ``"beaded"``: nearly straight medullary and deep veins whose calibre changes along
  their length (thick beads of 1-4 mm between stretches too thin to see, as veins look
  when their calibre or the partial volume varies), short straight stubs at every angle
  to B0 (a vein seen over a few millimetres), and a few cortical veins. Visible parts are
  compact: the vessel mimics that round microbleeds must be told from.
* ``"random_cylinders"``: the statistical model of randomly oriented straight cylinders
  (as used for the MR signal of a capillary/venous network): direction uniform on the
  sphere, position anywhere in the parenchyma, length 4-40 mm, calibre 0.2-1.5 mm,
  varying smoothly along each vessel; placement and direction ignore the anatomy.
* ``"converging"``: veins that meet. Medusa heads (many thin spokes converging from every
  direction on one point and drained by one thicker collector, as a developmental venous
  anomaly drains) and confluences (3-5 veins leaving one point), so that where they meet
  the vessels overlap into a compact dark knot attached to several vessels.

All models add the internal cerebral veins and the superior sagittal sinus. Centre lines
depend on the anatomy seed and the vein parameters only and are cached.
:func:`splat_veins` splats vessel cross sections onto a scanner grid.
"""

from __future__ import annotations

import functools

import numpy as np

from .anatomy import distance_and_gradient, sample, template_maps, ventricle_maps
from .config import VEIN_MODELS, PhantomConfig
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


# --- alternative vein models (domain randomisation) ------------------------------------

def _unit(v):
    v = np.asarray(v, float)
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _inside(pts):
    """Truncate a centre line at its first point outside the brain (deeper than 0.5 mm)
    or inside the ventricles; empty when it starts outside."""
    t = template_maps()
    dist, _ = distance_and_gradient(pts)
    dv = sample(ventricle_maps()["dist"], t["inv_affine"], pts, cval=1e3)
    bad = np.flatnonzero((dist > -0.5) | (dv < 0.5))
    return pts if not len(bad) else pts[:bad[0]]


def _free_walk(start, direction, length, rng, step=1.0, wiggle=0.1):
    """Smooth random curve of ``length`` mm (persistent direction plus ``wiggle``),
    truncated where it leaves the brain or enters the ventricles."""
    n = max(2, int(np.ceil(length / step)))
    noise = rng.normal(size=(n, 3))
    pts = np.empty((n + 1, 3))
    pts[0] = start
    d = _unit(direction)
    for i in range(n):
        d = _unit(d + wiggle * noise[i])
        pts[i + 1] = pts[i] + step * d
    return _inside(pts)


def _points(idx, rng, n):
    """``n`` random template mm points (jittered by +-0.5 mm) from voxel indices."""
    t = template_maps()
    pick = idx[rng.integers(len(idx), size=n)]
    return apply_affine(t["affine"], pick.astype(float)) + rng.uniform(-0.5, 0.5, (n, 3))


@functools.lru_cache(maxsize=1)
def _region_indices() -> dict:
    """Template voxel indices of white matter (> 4 mm deep), the insular cortex and the
    corpus callosum region (coordinate boxes on the ICBM152 maps)."""
    t = template_maps()
    gm, wm, aff = t["gm"], t["wm"], t["affine"]
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in gm.shape], indexing="ij", sparse=True)
    x = aff[0, 0] * ii + aff[0, 3]
    y = aff[1, 1] * jj + aff[1, 3]
    z = aff[2, 2] * kk + aff[2, 3]
    vent_far = ventricle_maps()["dist"] > 1.5
    wm_mask = (wm > 0.7) & vent_far & (z > -25)
    insula = ((gm + wm > 0.6) & (np.abs(x) > 30) & (np.abs(x) < 44) & (y > -28) & (y < 22)
              & (z > -12) & (z < 22))
    cc = (wm > 0.7) & (np.abs(x) < 14) & (y > -42) & (y < 32) & (z > 5) & (z < 32) & vent_far

    def idx(mask):
        return np.argwhere(mask).astype(np.int16)

    return {"wm": idx(wm_mask), "insula": idx(insula), "cc": idx(cc)}


def _dense_medullary(n_veins, r_lo, r_hi, rng):
    """``8 * n_veins`` thin medullary veins (radius 0.1-0.35 mm, 8-25 mm) fanning out from
    the ventricle walls and deep white matter, 30 % of them close to B0 (template z);
    ``max(4, n_veins // 3)`` subependymal veins (radius 0.25-0.5 mm, 10-30 mm) along the
    ventricles; ``max(2, n_veins // 5)`` cortical veins (``vein_radius_mm``)."""
    t = template_maps()
    wall = ventricle_maps()["wall"]
    veins = []
    n_med = 8 * n_veins
    from_wall = rng.random(n_med) < 0.5
    starts = np.where(from_wall[:, None], _points(wall, rng, n_med),
                      _points(t["wm_deep"], rng, n_med))
    _, grads = distance_and_gradient(starts)
    for start, grad in zip(starts, grads):
        out = _unit(grad)  # towards the cortex
        if rng.random() < 0.3:  # through-plane: close to B0
            direction = np.array([0.0, 0.0, 1.0 if out[2] >= 0 else -1.0])
            direction = direction + 0.35 * rng.normal(size=3)
        else:
            direction = out + 0.8 * rng.normal(size=3)
        pts = _free_walk(start, direction, rng.uniform(8.0, 25.0), rng, step=1.0,
                         wiggle=rng.uniform(0.03, 0.12))
        veins.append((pts, rng.uniform(0.1, 0.35)))
    for start in _points(wall, rng, max(4, n_veins // 3)):  # subependymal veins
        direction = np.array([rng.uniform(-0.3, 0.3), rng.choice([-1.0, 1.0]),
                              rng.uniform(-0.3, 0.3)])
        pts = _free_walk(start, direction, rng.uniform(10.0, 30.0), rng, step=1.0,
                         wiggle=0.08)
        veins.append((pts, rng.uniform(0.25, 0.5)))
    veins += _cortical_veins(max(2, n_veins // 5), r_lo, r_hi, rng)
    return [(p, r) for p, r in veins if len(p) >= 2]


def _rotate_away(d, angle, rng):
    """Unit vector at ``angle`` (rad) from ``d``, about a random perpendicular axis."""
    perp = _unit(np.cross(d, rng.normal(size=3)))
    return _unit(np.cos(angle) * d + np.sin(angle) * perp)


def _trees(n_veins, rng, max_segments=48):
    """``max(1, round(n_veins / 2))`` venous trees. Root radius 0.4-0.75 mm; each segment
    (4-10 mm + 12 mm per mm radius) splits into two daughters with
    ``r1^3 + r2^3 = r^3`` (ratio r2/r1 0.5-1, so 0.79 r for a symmetric split) at
    25-75 deg from the parent direction, down to 0.1 mm radius (at most ``max_segments``
    per tree). 60 % of the trees start at the cortex and grow inwards, 40 % start at the
    ventricle walls and grow outwards; tortuosity (wiggle 0.02-0.4) varies per tree."""
    t = template_maps()
    wall = ventricle_maps()["wall"]
    veins = []
    for _ in range(max(1, round(n_veins / 2))):
        wiggle = rng.uniform(0.02, 0.4)
        if rng.random() < 0.6:
            start = _points(t["surface"], rng, 1)[0]
            sign = -1.0
        else:
            start = _points(wall, rng, 1)[0]
            sign = 1.0
        _, grad = distance_and_gradient(start[None])
        queue = [(start, _unit(sign * _unit(grad[0]) + 0.5 * rng.normal(size=3)),
                  rng.uniform(0.4, 0.75))]
        n_seg = 0
        while queue and n_seg < max_segments:
            p, d, r = queue.pop(0)  # breadth first: thick segments first
            pts = _free_walk(p, d, rng.uniform(4.0, 10.0) + 12.0 * r, rng, step=0.5,
                             wiggle=wiggle)
            if len(pts) < 2:
                continue
            veins.append((pts, r))
            n_seg += 1
            q = rng.uniform(0.5, 1.0)
            r1 = r / (1.0 + q ** 3) ** (1.0 / 3.0)
            end_dir = _unit(pts[-1] - pts[-2])
            for rd in (r1, q * r1):
                if rd >= 0.1:
                    queue.append((pts[-1], _rotate_away(end_dir, np.deg2rad(
                        rng.uniform(25.0, 75.0)), rng), rd))
    return veins


def _curly(length, rng):
    """Centre line (relative to 0) of a loop/arc (40 %) or a coil (25 %) of ``length``
    mm in a random orientation, or None (35 %: use a wiggly walk)."""
    kind = rng.random()
    if kind < 0.35:
        return None
    n = max(8, int(np.ceil(length / 0.3)))
    if kind < 0.75:  # arc or loop of 180-400 deg
        angle = rng.uniform(np.pi, 2.2 * np.pi)
        rad = length / angle
        s = np.linspace(0.0, angle, n)
        local = np.stack([rad * np.cos(s), rad * np.sin(s),
                          rng.uniform(-0.3, 0.3) * rad * s], -1)
    else:  # coil (corkscrew)
        rad = rng.uniform(0.5, 1.5)
        pitch = rng.uniform(1.0, 3.0)
        per_turn = np.hypot(2 * np.pi * rad, pitch)
        s = np.linspace(0.0, 2 * np.pi * length / per_turn, n)
        local = np.stack([rad * np.cos(s), rad * np.sin(s), pitch * s / (2 * np.pi)], -1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # random orientation
    local = local @ q.T
    return local - local[len(local) // 2]


def _tortuous_segments(n_veins, r_lo, r_hi, rng):
    """``6 * n_veins`` short (3-12 mm), strongly curved segments (wiggly walks, arcs,
    loops, coils; radius 0.1-0.6 mm, thin ones more frequent) centred in white matter
    (40 %), deep grey matter, the insula and the corpus callosum region (20 % each);
    plus ``max(1, round(0.3 * n_veins))`` cortical veins (``vein_radius_mm``)."""
    t = template_maps()
    reg = _region_indices()
    pools = [reg["wm"], t["regions"]["deep"], reg["insula"], reg["cc"]]
    veins = []
    for _ in range(6 * n_veins):
        pool = pools[int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]))]
        centre = _points(pool, rng, 1)[0]
        length = rng.uniform(3.0, 12.0)
        radius = 0.1 + 0.5 * rng.random() ** 2
        local = _curly(length, rng)
        if local is None:
            pts = _free_walk(centre, rng.normal(size=3), length, rng, step=0.4,
                             wiggle=rng.uniform(0.4, 0.9))
        else:
            pts = _inside(centre + local)
        if len(pts) >= 2:
            veins.append((pts, radius))
    return veins + _cortical_veins(max(1, round(0.3 * n_veins)), r_lo, r_hi, rng)


def _beads(pts, rng):
    """Split a centre line into consecutive pieces of 1-4 mm: about a third thick (radius
    0.2-0.7 mm), the others thin (0.04-0.1 mm, hardly visible); (points, radius) pairs."""
    pts = resample_polyline(pts, 0.25)
    pieces, start = [], 0
    while start < len(pts) - 1:
        stop = min(len(pts), start + max(2, int(rng.uniform(1.0, 4.0) / 0.25)))
        thick = rng.random() < 0.35
        radius = rng.uniform(0.2, 0.7) if thick else rng.uniform(0.04, 0.1)
        pieces.append((pts[start:stop + 1], radius))
        start = stop
    return [(p, r) for p, r in pieces if len(p) >= 2]


def _beaded(n_veins, r_lo, r_hi, rng):
    """``3 * n_veins`` nearly straight veins (6-30 mm) in deep and subcortical white matter
    and deep grey matter, split into thick beads and thin stretches (:func:`_beads`);
    ``3 * n_veins`` straight stubs (1.5-5 mm, radius 0.15-0.6 mm, any direction) in white
    matter, deep grey matter and the insula; ``max(1, n_veins // 4)`` cortical veins
    (``vein_radius_mm``)."""
    t = template_maps()
    reg = _region_indices()
    veins = []
    for start in _points(t["wm_deep"], rng, 2 * n_veins):  # medullary, outwards
        _, grad = distance_and_gradient(start[None])
        direction = _unit(grad[0]) + 0.6 * rng.normal(size=3)
        pts = _free_walk(start, direction, rng.uniform(6.0, 30.0), rng, step=1.0,
                         wiggle=rng.uniform(0.02, 0.1))
        if len(pts) >= 2:
            veins += _beads(pts, rng)
    for start in _points(t["regions"]["deep"], rng, n_veins):  # deep (thalamostriate-like)
        pts = _free_walk(start, rng.normal(size=3), rng.uniform(6.0, 20.0), rng, step=1.0,
                         wiggle=rng.uniform(0.02, 0.1))
        if len(pts) >= 2:
            veins += _beads(pts, rng)
    pools = [reg["wm"], t["regions"]["deep"], reg["insula"]]
    for _ in range(3 * n_veins):  # stubs
        pool = pools[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
        centre = _points(pool, rng, 1)[0]
        direction = _unit(rng.normal(size=3))
        half = 0.5 * rng.uniform(1.5, 5.0)
        pts = _inside(np.stack([centre - half * direction, centre + half * direction]))
        if len(pts) >= 2:
            veins.append((pts, 0.15 + 0.45 * rng.random() ** 1.5))
    return veins + _cortical_veins(max(1, n_veins // 4), r_lo, r_hi, rng)


def _straight_through(centre, direction, length):
    """Straight centre line of ``length`` mm through ``centre`` (0.5 mm steps), both
    halves truncated where they leave the brain or enter the ventricles."""
    half = np.arange(0.0, 0.5 * length + 0.25, 0.5)[:, None] * _unit(direction)
    ahead, behind = _inside(centre + half), _inside(centre - half)
    return np.concatenate([behind[::-1], ahead[1:]])


def _modulated(pts, radius, rng):
    """Split a centre line into 1 mm pieces whose radius varies smoothly around
    ``radius`` (relative amplitude 0-0.4, wavelength 3-12 mm); (points, radius) pairs."""
    pts = resample_polyline(pts, 0.5)
    amplitude, wavelength = rng.uniform(0.0, 0.4), rng.uniform(3.0, 12.0)
    phase = rng.uniform(0.0, 2 * np.pi)
    pieces = []
    for start in range(0, len(pts) - 1, 2):
        piece = pts[start:start + 3]
        s = 0.5 * (start + 1)  # arc length (mm) at the piece's middle
        pieces.append((piece, radius * (1 + amplitude * np.sin(2 * np.pi * s / wavelength
                                                                  + phase))))
    return pieces


def _random_cylinders(n_veins, r_lo, r_hi, rng):
    """``5 * n_veins`` straight vessels in the statistical model of randomly oriented
    cylinders: direction uniform on the sphere (so every angle to B0 and to the slice),
    centre anywhere in white matter (45 %), deep grey matter (20 %), the insula (10 %),
    the corpus callosum region (10 %) or lobar cortex (15 %), length log-uniform
    4-40 mm, radius log-uniform 0.1-0.75 mm (calibre 0.2-1.5 mm) with a smooth calibre
    modulation along the vessel (:func:`_modulated`); plus ``max(1, n_veins // 4)``
    cortical veins (``vein_radius_mm``). Unlike the other models, neither the placement
    nor the direction follows the anatomy."""
    t = template_maps()
    reg = _region_indices()
    pools = [reg["wm"], t["regions"]["deep"], reg["insula"], reg["cc"],
             t["regions"]["lobar"]]
    veins = []
    for _ in range(5 * n_veins):
        pool = pools[int(rng.choice(5, p=[0.45, 0.2, 0.1, 0.1, 0.15]))]
        centre = _points(pool, rng, 1)[0]
        direction = rng.normal(size=3)
        length = float(np.exp(rng.uniform(np.log(4.0), np.log(40.0))))
        radius = float(np.exp(rng.uniform(np.log(0.1), np.log(0.75))))
        pts = _straight_through(centre, direction, length)
        if len(pts) >= 2:
            veins += _modulated(pts, radius, rng)
    return veins + _cortical_veins(max(1, n_veins // 4), r_lo, r_hi, rng)


def _nearest(points, p):
    """The row of ``points`` (N, 3) nearest to ``p``."""
    return points[np.argmin(np.linalg.norm(points - p, axis=1))]


def _converging(n_veins, r_lo, r_hi, rng):
    """Veins that meet: ``max(2, n_veins // 4)`` medusa heads (as a developmental venous
    anomaly drains: 6-16 thin spokes, radius 0.08-0.3 mm and 4-14 mm long, converging
    from every direction on one point in white matter or deep grey matter, drained by a
    collector of radius 0.3-0.8 mm running 10-35 mm towards the cortex or a ventricle)
    and ``1.5 * n_veins`` confluences (3-5 veins, 3-20 mm long, leaving one point in
    white matter, deep grey matter, the insula or the corpus callosum region at any
    angle; radius 0.1-0.5 mm, one branch up to twice as thick (at most 0.75 mm), the
    others down to half); plus ``max(1, n_veins // 4)``
    cortical veins (``vein_radius_mm``). Where the veins meet, the dark vessels overlap
    into a compact knot attached to several vessels: a round mimic that is neither a
    short segment nor a bead on one vessel."""
    t = template_maps()
    reg = _region_indices()
    wall_mm = apply_affine(t["affine"], ventricle_maps()["wall"].astype(float))
    veins = []
    heads = [reg["wm"], t["regions"]["deep"]]
    for _ in range(max(2, n_veins // 4)):
        centre = _points(heads[int(rng.random() < 0.25)], rng, 1)[0]
        for _ in range(int(rng.integers(6, 17))):
            spoke = _free_walk(centre, rng.normal(size=3), rng.uniform(4.0, 14.0), rng,
                               step=0.5, wiggle=rng.uniform(0.02, 0.15))
            if len(spoke) >= 2:
                veins.append((spoke, float(rng.uniform(0.08, 0.3))))
        if rng.random() < 0.6:  # drains to the cortex
            _, grad = distance_and_gradient(centre[None])
            direction = _unit(grad[0]) + 0.4 * rng.normal(size=3)
        else:  # to the nearest ventricle wall
            direction = _nearest(wall_mm, centre) - centre + 0.4 * rng.normal(size=3)
        collector = _free_walk(centre, direction, rng.uniform(10.0, 35.0), rng, step=0.5,
                               wiggle=0.05)
        if len(collector) >= 2:
            veins.append((collector, float(rng.uniform(0.3, 0.8))))
    pools = [reg["wm"], t["regions"]["deep"], reg["insula"], reg["cc"]]
    for _ in range(3 * n_veins // 2):
        centre = _points(pools[int(rng.choice(4, p=[0.5, 0.2, 0.15, 0.15]))], rng, 1)[0]
        radius = 0.1 + 0.4 * rng.random() ** 1.5
        for k in range(int(rng.integers(3, 6))):
            branch = _free_walk(centre, rng.normal(size=3), rng.uniform(3.0, 20.0), rng,
                                step=0.5, wiggle=rng.uniform(0.02, 0.3))
            if len(branch) >= 2:
                r = radius * (rng.uniform(1.0, 2.0) if k == 0 else rng.uniform(0.5, 1.0))
                veins.append((branch, float(min(r, 0.75))))
    return veins + _cortical_veins(max(1, n_veins // 4), r_lo, r_hi, rng)


def generate_veins(cfg: PhantomConfig, rng) -> list[tuple[np.ndarray, float]]:
    """List of (points (N, 3) template mm, radius mm) vessel centre lines of
    ``cfg.vein_model`` plus the large veins. ``"surface_walk"``: about 60 % of
    ``n_veins`` cortical, the rest medullary (see the module docstring and the private
    model functions for the other models' counts and radii)."""
    if cfg.n_veins <= 0:
        return []
    r_lo, r_hi = cfg.vein_radius_mm
    model = cfg.vein_model
    if model != "surface_walk":
        if model not in VEIN_MODELS:
            raise ValueError(f"unknown vein_model {model!r}")
        make = {"dense_medullary": _dense_medullary,
                "tree": lambda n, lo, hi, g: _trees(n, g),
                "tortuous_segments": _tortuous_segments, "beaded": _beaded,
                "random_cylinders": _random_cylinders, "converging": _converging}[model]
        return make(cfg.n_veins, r_lo, r_hi, rng) + _large_veins(r_hi, rng)
    n_cortical = round(0.6 * cfg.n_veins)
    return (_cortical_veins(n_cortical, r_lo, r_hi, rng)
            + _medullary_veins(cfg.n_veins - n_cortical, r_lo, r_hi, rng)
            + _large_veins(r_hi, rng))


@functools.lru_cache(maxsize=8)
def cached_veins(seed: int, n_veins: int, vein_radius_mm: tuple,
                 vein_model: str = "surface_walk") -> tuple:
    """Vein centre lines of an anatomy seed (template space; random stream ``[seed, 0, 1]``),
    cached because they only depend on these arguments."""
    cfg = PhantomConfig(n_veins=n_veins, vein_radius_mm=vein_radius_mm,
                        vein_model=vein_model)
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
        offsets = np.asarray(offsets)
        # cross-section samples in chunks (offset-major order, as one loop per offset)
        chunk = max(1, 100_000 // len(pts))
        for c0 in range(0, len(offsets), chunk):
            ou = offsets[c0:c0 + chunk, 0, None, None]
            ow = offsets[c0:c0 + chunk, 1, None, None]
            weight = (area[c0:c0 + chunk] * ds / vvol)[:, None]
            vox = apply_affine(inv_affine, pts + ou * u + ow * w)  # (n_off, n_pts, 3)
            base = np.floor(vox).astype(int)
            fr = vox - base
            flat_c, weight_c, sin2_c = [], [], []
            for corner in np.ndindex(2, 2, 2):  # trilinear splatting
                idx = base + np.array(corner)
                cw = np.prod(np.where(np.array(corner), fr, 1 - fr), axis=-1) * weight
                ok = np.all((idx >= 0) & (idx < np.array(shape)), axis=-1)
                flat_c.append(np.where(ok, np.ravel_multi_index(
                    tuple(np.moveaxis(idx, -1, 0)), shape, mode="clip"), -1))
                weight_c.append(cw)
                sin2_c.append(np.broadcast_to(sin2, cw.shape))
            # order: offset, corner, point
            flat_c, weight_c, sin2_c = (np.stack(a, 1).ravel()
                                        for a in (flat_c, weight_c, sin2_c))
            keep = flat_c >= 0
            flat_all.append(flat_c[keep])
            weight_all.append(weight_c[keep])
            sin2_all.append(sin2_c[keep])
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
