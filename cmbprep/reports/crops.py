"""Candidate crops and QC figures, shared by the review page and the participant report.

:func:`candidate_crops` draws three orthogonal crops (axial, coronal, sagittal) centred
on a candidate for each image of a unit: the preprocessed SWI, the minimum-intensity
projection (mIP) and, when present, the filtered phase, with a cross-hair (open in the
middle so the lesion itself stays visible) and a scale bar in mm. The review page
(:mod:`cmbprep.review`) and the participant report (:mod:`.participant`) show the same
PNG. :func:`brain_mask_figure` and :func:`registration_figure` are the report's QC
figures (the brain-mask outline, and the atlas regions carried into the SWI by the
template registration, over the SWI).

Everything is drawn in RAS orientation in the neurological convention (image left =
participant left; sagittal panels: anterior on the right), in mm (square pixels whatever
the voxel size). Only matplotlib's object API is used (no ``pyplot``), so several
threads of the review server can draw at once. PNGs carry no date: same inputs, same
bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

#: Image rows of the crops: label -> file name ending after the unit prefix.
UNIT_IMAGES = {"SWI": "_desc-preproc_swi.nii.gz", "mIP": "_desc-minip_swi.nii.gz",
               "phase": "_part-phase_desc-filtered_swi.nii.gz"}
#: Views: name, the array axis held fixed, the two axes shown (horizontal, vertical).
VIEWS = (("axial", 2, (0, 1)), ("coronal", 1, (0, 2)), ("sagittal", 0, (1, 2)))
#: Half-widths (mm) of the crops at the zoom levels of the review page (index 0 default).
ZOOM_HALF_WIDTHS_MM = (20.0, 10.0, 40.0)
PANEL_INCHES = 2.3
DPI = 80


def unit_image_paths(anat_dir: str | Path, prefix: str) -> dict:
    """``{label: path}`` of the unit's images that exist (``SWI``, ``mIP``, ``phase``)."""
    anat_dir = Path(anat_dir)
    paths = {}
    for label, ending in UNIT_IMAGES.items():
        path = anat_dir / f"{prefix}{ending}"
        if path.exists():
            paths[label] = path
    return paths


def _canonical(path):
    img = nib.as_closest_canonical(nib.load(str(path)))
    return img, np.asarray(img.dataobj, dtype=np.float32)


def _window(data, label):
    finite = data[np.isfinite(data) & (data != 0)]
    if not finite.size:
        return (-1.0, 1.0) if label == "phase" else (0.0, 1.0)
    if label == "phase":  # symmetric about 0: dark and bright phase read alike
        limit = float(np.percentile(np.abs(finite), 99)) or 1.0
        return -limit, limit
    low, high = (float(v) for v in np.percentile(finite, [1, 99]))
    return low, (high if high > low else low + 1.0)


@dataclass
class UnitImages:
    """A unit's images in RAS orientation, with their display windows.

    ``volumes`` maps a label (``SWI``, ``mIP``, ``phase``) to ``(data, (vmin, vmax))``;
    every volume is on the grid of ``affine`` (RAS, the first image's).
    """

    affine: np.ndarray
    zooms: tuple
    volumes: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)

    @classmethod
    def load(cls, paths: dict) -> "UnitImages":
        """Load ``{label: path}`` (see :func:`unit_image_paths`); images on another grid
        than the first are left out (listed in ``skipped``)."""
        images = None
        for label, path in paths.items():
            img, data = _canonical(path)
            if data.ndim > 3:
                data = data[..., 0]
            if images is None:
                images = cls(affine=img.affine, zooms=tuple(
                    float(z) for z in img.header.get_zooms()[:3]))
            elif data.shape != next(iter(images.volumes.values()))[0].shape or \
                    not np.allclose(img.affine, images.affine, atol=1e-3):
                images.skipped.append(f"{label}: {Path(path).name} is on another grid")
                continue
            images.volumes[label] = (data, _window(data, label))
        if images is None:
            raise FileNotFoundError("no SWI, mIP or phase image of the unit")
        return images

    def voxel(self, xyz_mm) -> np.ndarray:
        """Voxel coordinates (float, RAS array) of a scanner point in mm."""
        inverse = np.linalg.inv(self.affine)
        return (inverse @ np.r_[np.asarray(xyz_mm, float), 1.0])[:3]


def _figure(width_in, height_in):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, facecolor="black")
    FigureCanvasAgg(fig)
    return fig


def _png(fig, facecolor="black") -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor=facecolor,
                metadata={"Software": None})
    return buffer.getvalue()


def _crop(data, centre, view, half_width_mm, zooms):
    """The 2-D crop (horizontal axis first) and its extent in mm about the centre."""
    _name, fixed, (h, v) = view
    index = [slice(None)] * 3
    k = int(round(centre[fixed]))
    if not 0 <= k < data.shape[fixed]:
        return None, None
    index[fixed] = k
    plane = data[tuple(index)]  # axes (h, v) in order
    ch, cv = centre[h], centre[v]
    nh, nv = (int(np.ceil(half_width_mm / zooms[a])) for a in (h, v))
    lo_h, lo_v = int(round(ch)) - nh, int(round(cv)) - nv
    out = np.full((2 * nh + 1, 2 * nv + 1), np.nan, dtype=np.float32)
    src_h = slice(max(lo_h, 0), min(lo_h + 2 * nh + 1, plane.shape[0]))
    src_v = slice(max(lo_v, 0), min(lo_v + 2 * nv + 1, plane.shape[1]))
    if src_h.start < src_h.stop and src_v.start < src_v.stop:
        out[src_h.start - lo_h:src_h.stop - lo_h, src_v.start - lo_v:src_v.stop - lo_v] = \
            plane[src_h, src_v]
    extent = [(lo_h - 0.5 - ch) * zooms[h], (lo_h + 2 * nh + 0.5 - ch) * zooms[h],
              (lo_v - 0.5 - cv) * zooms[v], (lo_v + 2 * nv + 0.5 - cv) * zooms[v]]
    return out, extent


def _scale_bar_mm(half_width_mm):
    return 5.0 if half_width_mm <= 12 else 10.0 if half_width_mm <= 30 else 20.0


def candidate_crops(images: UnitImages, xyz_mm, half_width_mm: float = 20.0) -> bytes:
    """PNG of orthogonal crops of every image of ``images`` about a point (mm).

    Rows: the images (SWI, mIP, phase as present); columns: axial, coronal, sagittal.
    A cross-hair with an open centre (a third of the half-width, at most 4 mm)
    marks the point; the white bar at the bottom left of each panel is as long as the
    number of mm written above it.
    """
    import matplotlib

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="black")
    centre = images.voxel(xyz_mm)
    labels = list(images.volumes)
    fig = _figure(PANEL_INCHES * 3 + 0.35, PANEL_INCHES * len(labels) + 0.3)
    gap = min(4.0, half_width_mm / 3)
    bar = _scale_bar_mm(half_width_mm)
    grid = fig.add_gridspec(len(labels), 3, left=0.35 / (PANEL_INCHES * 3 + 0.35),
                            right=0.995, bottom=0.005, top=1 - 0.3 / (
                                PANEL_INCHES * len(labels) + 0.3), wspace=0.03, hspace=0.03)
    for row, label in enumerate(labels):
        data, (vmin, vmax) = images.volumes[label]
        for col, view in enumerate(VIEWS):
            ax = fig.add_subplot(grid[row, col])
            ax.set_facecolor("black")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("#444")
            if row == 0:
                ax.set_title(view[0], color="white", fontsize=10)
            if col == 0:
                ax.set_ylabel(label, color="white", fontsize=10)
            crop, extent = _crop(data, centre, view, half_width_mm, images.zooms)
            if crop is None:
                ax.text(0.5, 0.5, "outside the image", color="white", ha="center",
                        va="center", transform=ax.transAxes, fontsize=8)
                continue
            ax.imshow(crop.T, cmap=cmap, origin="lower", vmin=vmin, vmax=vmax,
                      extent=extent, interpolation="nearest")
            ax.set_xlim(-half_width_mm, half_width_mm)
            ax.set_ylim(-half_width_mm, half_width_mm)
            for sign in (-1, 1):
                ax.plot([sign * gap, sign * half_width_mm], [0, 0], color="#00e0ff",
                        linewidth=0.8, alpha=0.8)
                ax.plot([0, 0], [sign * gap, sign * half_width_mm], color="#00e0ff",
                        linewidth=0.8, alpha=0.8)
            x0, y0 = -0.92 * half_width_mm, -0.88 * half_width_mm
            ax.plot([x0, x0 + bar], [y0, y0], color="white", linewidth=3,
                    solid_capstyle="butt")
            ax.text(x0 + bar / 2, y0 + 0.05 * half_width_mm, f"{bar:g} mm", color="white",
                    ha="center", va="bottom", fontsize=8)
    return _png(fig)


def _spread_slices(mask, axis, n):
    """``n`` slices spread through the mask's extent along ``axis`` (or the volume's)."""
    others = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(mask.any(axis=others)) if mask is not None and mask.any() \
        else np.arange(0)
    lo, hi = (present[0], present[-1]) if present.size else (0, (mask.shape[axis] - 1))
    return [int(round(v)) for v in np.linspace(lo + 0.15 * (hi - lo), hi - 0.15 * (hi - lo),
                                               n)]


def _qc_mosaic(base_path, draw, *, title, n_columns=5):
    """Rows axial / coronal / sagittal of ``n_columns`` slices of ``base_path``; ``draw(ax,
    view, index)`` adds the overlay. Returns the PNG."""
    import matplotlib

    cmap = matplotlib.colormaps["gray"]
    img, data = _canonical(base_path)
    zooms = img.header.get_zooms()[:3]
    vmin, vmax = _window(data, "SWI")
    fig = _figure(2.0 * n_columns, 2.0 * 3 + 0.4)
    grid = fig.add_gridspec(3, n_columns, left=0.005, right=0.995, bottom=0.005,
                            top=1 - 0.4 / (2.0 * 3 + 0.4), wspace=0.02, hspace=0.02)
    fig.suptitle(title, color="white", fontsize=10)
    foreground = data > vmin
    for row, view in enumerate(VIEWS):
        _name, fixed, (h, v) = view
        for col, k in enumerate(_spread_slices(foreground, fixed, n_columns)):
            ax = fig.add_subplot(grid[row, col])
            ax.set_axis_off()
            plane = np.take(data, k, axis=fixed)
            ax.imshow(plane.T, cmap=cmap, origin="lower", vmin=vmin, vmax=vmax,
                      aspect=zooms[v] / zooms[h], interpolation="nearest")
            draw(ax, fixed, k)
    return _png(fig)


def brain_mask_figure(swi_path: str | Path, mask_path: str | Path) -> bytes:
    """PNG: the brain mask's outline (red) on the SWI, five slices in each orientation."""
    _img, mask = _canonical(mask_path)
    mask = mask > 0.5

    def draw(ax, axis, k):
        plane = np.take(mask, k, axis=axis)
        if plane.any() and not plane.all():
            ax.contour(plane.T.astype(float), levels=[0.5], colors="#ff3030",
                       linewidths=0.8, origin="lower")

    return _qc_mosaic(swi_path, draw, title="Brain mask (red outline) on the SWI")


def region_edges(labels: np.ndarray) -> np.ndarray:
    """True where a labelled pixel of a 2-D label image borders another label."""
    edges = np.zeros(labels.shape, bool)
    for axis in (0, 1):
        differ = np.diff(labels, axis=axis) != 0
        lead = [slice(None)] * 2
        lead[axis] = slice(1, None)
        edges[tuple(lead)] |= differ
        trail = [slice(None)] * 2
        trail[axis] = slice(None, -1)
        edges[tuple(trail)] |= differ
    return edges & (labels > 0)


def registration_figure(swi_path: str | Path, dseg_path: str | Path) -> bytes:
    """PNG: the region atlas carried into the SWI by the template registration, drawn as
    the regions' boundaries (yellow) over the SWI, five slices in each orientation."""
    _img, dseg = _canonical(dseg_path)
    dseg = np.rint(dseg).astype(np.int32)

    def draw(ax, axis, k):
        edges = region_edges(np.take(dseg, k, axis=axis))
        overlay = np.ma.masked_where(~edges.T, edges.T.astype(float))
        ax.imshow(overlay, cmap="autumn", origin="lower", vmin=0, vmax=1, alpha=0.9,
                  interpolation="nearest", aspect=ax.get_aspect())

    return _qc_mosaic(swi_path, draw, title="Template registration: atlas region "
                      "boundaries (yellow) warped to the SWI")
