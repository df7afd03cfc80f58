"""The longitudinal part of the participant report: lesions per session on a timeline,
and each new lesion beside the same place in the session before it.

Read from the participant's longitudinal outputs (``<prefix>_desc-sessions_cmb.tsv``,
``<prefix>_desc-longitudinal_cmb.tsv`` and the session transforms in
``sub-<label>/anat/``). The side-by-side crops are resampled from each session's SWI on
one axial plane of the reference session's space (through the session transforms), so
the two panels show the same tissue in the same orientation. PNGs carry no date.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..utils.derivatives import session_transform_name
from ..utils.tables import read_tsv
from .crops import _figure, _png, _window

#: Crops of at most this many new lesions per series are drawn.
MAX_NEW_CROPS = 30
CROP_HALF_WIDTH_MM = 15.0
CROP_SPACING_MM = 0.5

__all__ = ["longitudinal_sections", "reference_plane", "timeline_figure"]


def timeline_figure(sessions: pd.DataFrame) -> bytes:
    """PNG: microbleeds per session (persistent and new stacked), on a time axis in days
    when every session has a date, else in session order."""
    fig = _figure(6.0, 2.8)
    ax = fig.add_axes([0.11, 0.26, 0.86, 0.66])
    days = sessions["days_since_reference"].to_numpy(float)
    dated = np.isfinite(days).all()
    x = days if dated else np.arange(len(sessions), dtype=float)
    width = max(1.0, 0.08 * (np.ptp(x) or 1.0)) if dated else 0.6
    n_cmb = sessions["n_cmb"].to_numpy(float)
    new = np.nan_to_num(sessions["n_new"].to_numpy(float))
    older = n_cmb - new
    ax.bar(x, older, width=width, color="#4a6fa5", label="seen before / first session")
    ax.bar(x, new, width=width, bottom=older, color="#d1495b", label="new")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{s}\n{d:g} d" if dated else s for s, d in
                        zip(sessions["session_id"], days, strict=True)], fontsize=8)
    ax.set_ylabel("microbleeds")
    ax.set_xlabel("days since the first session" if dated else "session (no dates)")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    return _png(fig, facecolor="white")


def reference_plane(centre_mm, half_width_mm=CROP_HALF_WIDTH_MM,
                    spacing_mm=CROP_SPACING_MM) -> np.ndarray:
    """Points (n, n, 3) of an axial square about ``centre_mm`` in reference RAS mm;
    first axis left -> right, second posterior -> anterior."""
    offsets = np.arange(-half_width_mm, half_width_mm + spacing_mm / 2, spacing_mm)
    gx, gy = np.meshgrid(offsets, offsets, indexing="ij")
    centre = np.asarray(centre_mm, float)
    return np.stack([centre[0] + gx, centre[1] + gy, np.full_like(gx, centre[2])], -1)


def _sample_session(swi_path, points_ref, transform):
    """The session's SWI at reference-space points (NaN outside its field of view)."""
    from scipy import ndimage

    from ..algorithms.registration import map_points

    img = nib.load(str(swi_path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    flat = points_ref.reshape(-1, 3)
    if transform is not None:
        flat = map_points(flat, transform)
    ijk = nib.affines.apply_affine(np.linalg.inv(img.affine), flat).T
    values = ndimage.map_coordinates(data, ijk, order=1, mode="constant", cval=np.nan)
    return values.reshape(points_ref.shape[:2]), _window(data, "SWI")


def _new_lesion_figure(lesion, before, after, half_width_mm=CROP_HALF_WIDTH_MM):
    """PNG: the earlier session and the session the lesion appeared in, same place."""
    points = reference_plane([lesion["x"], lesion["y"], lesion["z"]], half_width_mm)
    fig = _figure(4.6, 2.5)
    extent = [-half_width_mm, half_width_mm, -half_width_mm, half_width_mm]
    for column, (session_id, swi, transform) in enumerate((before, after)):
        plane, (vmin, vmax) = _sample_session(swi, points, transform)
        ax = fig.add_axes([0.02 + 0.5 * column, 0.02, 0.46, 0.84])
        ax.imshow(plane.T, origin="lower", cmap="gray", vmin=vmin, vmax=vmax,
                  extent=extent, interpolation="nearest")
        ax.add_patch(_circle(4.0))
        ax.set_axis_off()
        ax.set_title(session_id, color="white", fontsize=9)
    return _png(fig)


def _circle(radius_mm):
    from matplotlib.patches import Circle

    return Circle((0.0, 0.0), radius_mm, fill=False, edgecolor="#ffcc00", linewidth=1.0)


def _img(png: bytes, alt: str) -> str:
    return (f"<img alt='{html.escape(alt)}' src='data:image/png;base64,"
            f"{base64.b64encode(png).decode('ascii')}'>")


def _session_files(anat, prefix, session_ids, output_dir, subject):
    """``{ses: (swi path, forward transform or None)}`` of a series."""
    files = {}
    for ses in session_ids:
        unit = prefix.replace(f"sub-{subject}", f"sub-{subject}_{ses}", 1)
        swi = Path(output_dir) / f"sub-{subject}" / ses / "anat" / \
            f"{unit}_desc-preproc_swi.nii.gz"
        transform = None
        if ses != session_ids[0]:
            transform = anat / f"{session_transform_name(prefix, ses, session_ids[0])}.h5"
        files[ses] = (swi, transform)
    return files


def _series_section(output_dir, subject, sessions_tsv):
    anat = sessions_tsv.parent
    prefix = sessions_tsv.name[: -len("_desc-sessions_cmb.tsv")]
    sessions = read_tsv(sessions_tsv)
    lesions = read_tsv(anat / f"{prefix}_desc-longitudinal_cmb.tsv")
    session_ids = list(sessions["session_id"])
    parts = [f"<h2>Follow-up: {html.escape(prefix)}</h2>",
             "<p class='small'>Later sessions registered rigidly onto the first; each "
             "session's microbleeds (the rater's when reviewed) matched one-to-one in "
             "the first session's space. Tables: "
             f"<a href='{html.escape(sessions_tsv.relative_to(output_dir).as_posix())}'>"
             "sessions</a>, <a href='" + html.escape(
                 (anat / f"{prefix}_desc-longitudinal_cmb.tsv")
                 .relative_to(output_dir).as_posix()) + "'>lesions</a>.</p>"]
    shown = ["session_id", "acq_time", "interval_days", "count_source", "n_cmb", "n_new",
             "n_persistent", "n_not_seen_again", "n_not_covered",
             "registration_residual_mm", "registration_ok"]
    parts.append(sessions[shown].to_html(index=False, na_rep="n/a", float_format="%.3g",
                                         border=0))
    bad = sessions[sessions["registration_ok"].astype(str).str.lower() == "false"]
    for _, row in bad.iterrows():
        parts.append(f"<p class='warn'>{html.escape(row['session_id'])}: registration "
                     f"residual {row['registration_residual_mm']:.2f} mm: check the "
                     "matches before using its counts.</p>")
    parts.append(_img(timeline_figure(sessions), "microbleeds per session"))
    new = lesions[lesions["label"] == "new"]
    if len(new):
        files = _session_files(anat, prefix, session_ids, output_dir, subject)
        figures = []
        for _, lesion in new.head(MAX_NEW_CROPS).iterrows():
            after = session_ids.index(lesion["first_seen"])
            earlier = [s for s in session_ids[:after]
                       if lesion[f"{s}_status"] == "not_found"][-1]
            png = _new_lesion_figure(lesion, (earlier, *files[earlier]),
                                     (lesion["first_seen"], *files[lesion["first_seen"]]))
            figures.append(f"<figure class='crop'>{_img(png, f'lesion {lesion.lesion_id}')}"
                           f"<figcaption>lesion {int(lesion['lesion_id'])}: new in "
                           f"{html.escape(lesion['first_seen'])} (left: {earlier}, "
                           "same place; axial, 30 mm)</figcaption></figure>")
        parts.append("<h3>New lesions</h3>" + "".join(figures))
        if len(new) > MAX_NEW_CROPS:
            parts.append(f"<p class='small'>{len(new) - MAX_NEW_CROPS} more new lesions "
                         "are in the table.</p>")
    return "\n".join(parts)


def longitudinal_sections(output_dir, subject) -> list[str]:
    """HTML of every follow-up series of a participant (empty without one)."""
    output_dir = Path(output_dir)
    anat = output_dir / f"sub-{subject}" / "anat"
    return [_series_section(output_dir, subject, path)
            for path in sorted(anat.glob(f"sub-{subject}*_desc-sessions_cmb.tsv"))]
