"""Can the phase tell a small microbleed from a short vein piece along B0 in thick slices?
(issue 11; a measurement of the physics, nothing here is shipped)

The confident false positives on the families the model never saw are vein pieces
running within 30 degrees of B0, which is also the slice direction (docs/benchmarks.md).
This script builds the two objects on a 0.1 mm grid, nothing else in the image:

``sphere``
    a microbleed: radius R, susceptibility 1.5 ppm, 10 % of the signal left inside;
``vein``
    a straight vein piece along B0 (or at 45 or 90 degrees to it): radius R, length L,
    0.45 ppm (deoxygenated blood), half the signal left inside.

Each field is the k-space dipole (:func:`cmbprep.algorithms.detection.phase.dipole_field`),
the signal ``exp(i gamma B0 TE field)`` (3 T, TE 20 ms) is averaged in the complex domain
over voxels of 0.8 x 0.8 mm and the slice thickness, and Gaussian noise (0.03 rad) is added
to the phase. On the result it reports the darkest magnitude, the mean phase in the ring
R + 0.5 to R + 2 mm around the object in its own slice (minus the ring R + 3 to R + 5 mm),
where a sphere's field is negative and a long vein's is zero, and the detector's sphere fit
(:func:`cmbprep.algorithms.detection.context.phase_fit_features`: ``dipole_fit_r2`` and
``dipole_vs_cylinder``), once as shipped (templates at the voxel centres) and once with
the templates averaged over each voxel's extent (``--voxel-averaged`` in the output;
sub-samples 0.25 mm apart, those inside the fitted radius counting 0; a variant tried
here and not in the detector).

About 30 s on one core::

    python benchmarks/thick_slice_mimics.py
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cmbprep.algorithms.detection import context
from cmbprep.algorithms.detection.phase import dipole_field

FINE_MM = 0.1
N_FINE = 200  # 20 mm field of view
GAMMA_B0_TE = 2 * np.pi * 127.7e6 * 0.020 * 1e-6  # rad per ppm at 3 T, TE 20 ms
OBJECTS = [  # (kind, radius mm, angle to B0 degrees, length mm)
    ("sphere", 0.4, 0, 0), ("sphere", 0.7, 0, 0),
    ("vein", 0.4, 0, 6), ("vein", 0.7, 0, 6), ("vein", 0.5, 45, 6), ("vein", 0.5, 90, 6),
]
SLICES_MM = (1.0, 2.0, 3.0)
IN_PLANE_MM = 0.8


def object_mask(kind, radius, angle_deg, length):
    """The object on the fine grid (B0 along axis 2)."""
    ax = (np.arange(N_FINE) - N_FINE / 2 + 0.5) * FINE_MM
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij", sparse=True)
    if kind == "sphere":
        return (x**2 + y**2 + z**2 <= radius**2).astype(np.float32)
    a = np.deg2rad(angle_deg)
    t = x * np.sin(a) + z * np.cos(a)
    return ((x**2 + y**2 + z**2 - t**2 <= radius**2) & (np.abs(t) <= length / 2)
            ).astype(np.float32)


def acquire(kind, radius, angle_deg, length, slice_mm, rng):
    """Complex-averaged phase and magnitude on voxels of IN_PLANE_MM x IN_PLANE_MM x
    slice_mm."""
    src = object_mask(kind, radius, angle_deg, length)
    chi, inside = (1.5, 0.1) if kind == "sphere" else (0.45, 0.5)
    field = dipole_field(src, (FINE_MM,) * 3, (0.0, 0.0, 1.0))
    signal = np.exp(1j * GAMMA_B0_TE * chi * field) * (1 - src * (1 - inside))
    factors = [int(round(IN_PLANE_MM / FINE_MM))] * 2 + [int(round(slice_mm / FINE_MM))]
    shape = [s // f * f for s, f in zip(signal.shape, factors)]
    signal = signal[:shape[0], :shape[1], :shape[2]].reshape(
        shape[0] // factors[0], factors[0], shape[1] // factors[1], factors[1],
        shape[2] // factors[2], factors[2]).mean(axis=(1, 3, 5))
    phase = np.angle(signal) + rng.normal(0.0, 0.03, signal.shape)
    return phase.astype(np.float32), np.abs(signal).astype(np.float32)


def object_centre(slice_mm):
    """Voxel coordinates of the fine grid's centre on the coarse grid."""
    factors = (IN_PLANE_MM / FINE_MM,) * 2 + (slice_mm / FINE_MM,)
    return np.array([N_FINE / 2 / f - 0.5 for f in factors])


def ring_phase(phase, centre, voxel_size, radius):
    """Mean phase R + 0.5 to R + 2 mm from the axis through ``centre`` along B0, in the
    object's own slice, minus the mean R + 3 to R + 5 mm."""
    idx = np.indices(phase.shape).reshape(3, -1).T
    off = (idx - centre) * voxel_size
    rho = np.hypot(off[:, 0], off[:, 1])
    own = np.abs(off[:, 2]) <= voxel_size[2] / 2
    near = own & (rho >= radius + 0.5) & (rho <= radius + 2.0)
    far = own & (rho >= radius + 3.0) & (rho <= radius + 5.0)
    flat = phase.ravel()
    return float(flat[near].mean() - flat[far].mean())


@contextmanager
def voxel_averaged_templates(voxel_size, inner_radius_mm, step_mm=0.25):
    """Replace the detector's phase templates by their means over each voxel's extent
    (sub-samples within ``inner_radius_mm`` of the centre, inside the object, count 0)."""
    steps = [max(int(np.ceil(v / step_mm)), 1) for v in voxel_size]
    axes = [((np.arange(n) + 0.5) / n - 0.5) * v for n, v in zip(steps, voxel_size)]
    sub = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    originals = context.dipole_template, context.cylinder_template

    def averaged(template):
        def wrapped(offsets, *args):
            points = (offsets[:, None, :] + sub[None]).reshape(-1, 3)
            values = np.zeros(len(points))
            keep = np.linalg.norm(points, axis=1) > inner_radius_mm
            values[keep] = template(points[keep], *args)
            return values.reshape(len(offsets), len(sub)).mean(axis=1)
        return wrapped

    context.dipole_template = averaged(originals[0])
    context.cylinder_template = averaged(originals[1])
    try:
        yield
    finally:
        context.dipole_template, context.cylinder_template = originals


def measure(kind, radius, angle_deg, length, slice_mm, seed):
    rng = np.random.default_rng(seed)
    phase, magnitude = acquire(kind, radius, angle_deg, length, slice_mm, rng)
    voxel_size = np.array([IN_PLANE_MM, IN_PLANE_MM, slice_mm])
    centre = object_centre(slice_mm)
    fit_radius = max(radius, 0.5)

    def fit():
        feats = context.phase_fit_features(
            phase, magnitude, centre, voxel_size, fit_radius, np.array([0.0, 0.0, 1.0]),
            np.array([0.0, 0.0, 1.0]), 1, image=magnitude, dark_level=0.5)
        return round(feats["dipole_fit_r2"], 3), round(feats["dipole_vs_cylinder"], 3)

    shipped = fit()
    with voxel_averaged_templates(voxel_size, fit_radius):
        averaged = fit()
    return {"object": kind, "radius_mm": radius, "angle_deg": angle_deg,
            "length_mm": length, "slice_mm": slice_mm,
            "darkest_magnitude": round(float(magnitude.min()), 3),
            "ring_phase_rad": round(ring_phase(phase, centre, voxel_size, fit_radius), 3),
            "dipole_fit_r2": shipped[0], "dipole_vs_cylinder": shipped[1],
            "dipole_fit_r2_voxel_averaged": averaged[0],
            "dipole_vs_cylinder_voxel_averaged": averaged[1]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = [measure(*obj, slice_mm, args.seed) for slice_mm in SLICES_MM for obj in OBJECTS]
    cols = ("darkest_magnitude", "ring_phase_rad", "dipole_fit_r2", "dipole_vs_cylinder",
            "dipole_fit_r2_voxel_averaged", "dipole_vs_cylinder_voxel_averaged")
    print("slice  object              " + "  ".join(c[:22].rjust(22) for c in cols))
    for r in rows:
        name = f"{r['object']} R {r['radius_mm']}" + (
            f" {r['angle_deg']} deg L {r['length_mm']}" if r["object"] == "vein" else "")
        print(f"{r['slice_mm']:.0f} mm   {name:<20}" + "  ".join(
            f"{r[c]:22.3f}" for c in cols))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
