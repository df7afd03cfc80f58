"""Subject transform between template and scanner space: head pose and deformation.

Template mm ``m`` map to scanner mm ``x = R (c + s (m + u(m) - c)) + t``: ``R, t`` is the
random head pose (acquisition seed), ``u`` an optional smooth deformation (anatomy seed),
``s`` an optional isotropic scale of the anatomy (``brain_scale``) about the brain centre
``c`` (:data:`SCALE_CENTRE_MNI`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .anatomy import TEMPLATE_PAD_MM, template_maps
from .geometry import apply_affine, rotation_matrix
from .smooth_field import SmoothField

__all__ = ["SCALE_CENTRE_MNI", "TemplateTransform", "subject_transform"]

#: Template mm point about which ``brain_scale`` scales the anatomy (the brain centre).
SCALE_CENTRE_MNI = (0.0, -18.0, 8.0)


class TemplateTransform:
    """Template -> scanner: ``x = R (c + s (m + u(m) - c)) + t`` with a smooth displacement
    ``u`` and an isotropic scale ``s`` about ``c`` = :data:`SCALE_CENTRE_MNI`.

    Parameters
    ----------
    rotation : (3, 3) array
    translation : (3,) array, mm
    displacement : (3, nx, ny, nz) float32 array, optional
        ``u`` on a coarse template grid, mm.
    disp_affine : (4, 4) array, optional
        Voxel to template mm of the displacement grid.
    inverse_displacement : array like ``displacement``, optional
        Approximate inverse (computed when not given).
    scale : float
        Isotropic scale of the anatomy (1: none).
    """

    def __init__(self, rotation, translation, displacement=None, disp_affine=None,
                 inverse_displacement=None, scale=1.0):
        self.rotation = np.asarray(rotation, float)
        self.translation = np.asarray(translation, float)
        self.scale = float(scale)
        self._centre = np.asarray(SCALE_CENTRE_MNI, float)
        self.displacement = displacement  # (3, nx, ny, nz) float32 on a coarse grid, mm
        self.disp_affine = disp_affine
        self.disp_inv_affine = None if disp_affine is None else np.linalg.inv(disp_affine)
        self.inverse_displacement = inverse_displacement
        if displacement is not None and inverse_displacement is None:
            self.inverse_displacement = self._invert_grid()

    def _u(self, field, points):
        vox = apply_affine(self.disp_inv_affine, points).T
        return np.stack([ndi.map_coordinates(f, vox, order=1, mode="nearest")
                         for f in field], -1)

    def _invert_grid(self):
        shape = self.displacement.shape[1:]
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"),
                        -1).reshape(-1, 3)
        pts = apply_affine(self.disp_affine, grid)
        inv = np.zeros_like(pts)
        for _ in range(15):  # contraction: |grad u| <~ 0.2 for the default wavelengths
            inv = -self._u(self.displacement, pts + inv)
        return np.ascontiguousarray(inv.T.reshape((3,) + shape).astype(np.float32))

    def template_to_scanner(self, points_mm):
        """Map (N, 3) template mm points to scanner mm."""
        m = np.atleast_2d(np.asarray(points_mm, float))
        if self.displacement is not None:
            m = m + self._u(self.displacement, m)
        if self.scale != 1.0:
            m = self._centre + self.scale * (m - self._centre)
        fwd = np.eye(4)
        fwd[:3, :3], fwd[:3, 3] = self.rotation, self.translation
        return apply_affine(fwd, m)

    def scanner_to_template(self, points_mm, exact=True):
        """Map (N, 3) scanner mm points to template mm (``exact``: refine the inverse
        deformation by fixed-point iteration)."""
        inv = np.eye(4)
        inv[:3, :3] = self.rotation.T
        inv[:3, 3] = -self.rotation.T @ self.translation
        y = apply_affine(inv, np.atleast_2d(np.asarray(points_mm, float)))
        if self.scale != 1.0:
            y = self._centre + (y - self._centre) / self.scale
        if self.displacement is None:
            return y
        m = y + self._u(self.inverse_displacement, y)
        if exact:  # fixed-point refinement: solve m + u(m) = y
            for _ in range(20):
                m = y - self._u(self.displacement, m)
        return m


def _head_pose(cfg, rng):
    """Rotation about a random axis and translation (identity without ``random_affine``)."""
    if not cfg.random_affine:
        return np.eye(3), np.zeros(3)
    axis = rng.normal(size=3)
    angle = np.deg2rad(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    rotation = rotation_matrix(axis, angle)
    translation = rng.uniform(-cfg.max_translation_mm, cfg.max_translation_mm, 3)
    return rotation, translation


def _deformation(cfg, rng):
    """Smooth random displacement field (mm) on a 4 mm template grid and its affine, or
    ``(None, None)`` when ``deformation_mm`` is 0."""
    if cfg.deformation_mm <= 0:
        return None, None
    lo, hi = template_maps()["brain_bbox_mm"]
    step = 4.0
    lo = lo - TEMPLATE_PAD_MM - 2 * step
    hi = hi + TEMPLATE_PAD_MM + 2 * step
    shape = tuple(int(np.ceil((h - l) / step)) + 1 for l, h in zip(lo, hi))
    disp_affine = np.diag([step, step, step, 1.0])
    disp_affine[:3, 3] = lo
    # each component: smooth random plane-cosine field (peak <= 1), wavelengths
    # 60-150 mm; the vector norm is at most deformation_mm
    centre = 0.5 * (lo + hi)
    disp = np.stack([
        SmoothField(rng, centre, n_terms=4, wavelength_mm=(60.0, 150.0)).on_grid(
            disp_affine, shape) for _ in range(3)])
    disp *= cfg.deformation_mm / np.sqrt(3.0)
    return disp.astype(np.float32), disp_affine


def subject_transform(cfg, rng_anatomy, rng_acquisition) -> TemplateTransform:
    """Template <-> scanner transform of one scan: the deformation is drawn from the
    anatomy stream, the head pose from the acquisition stream; ``brain_scale`` scales the
    anatomy (no random draw)."""
    displacement, disp_affine = _deformation(cfg, rng_anatomy)
    rotation, translation = _head_pose(cfg, rng_acquisition)
    return TemplateTransform(rotation, translation, displacement, disp_affine,
                             scale=cfg.brain_scale)
