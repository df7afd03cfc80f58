"""Participant summaries, figures and the ``sub-<label>.html`` report.

Pure functions (files in, files out); :mod:`cmbprep.interfaces.reports` wraps the
per-unit ones for the Nipype graph, and :func:`assemble_participant_reports` runs after
the graph, reading only the derivatives (as fMRIPrep's report generation does).
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import __version__

MARS_CATEGORIES = ("lobar", "deep", "infratentorial")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a BIDS TSV (``n/a`` as missing)."""
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


def summarize_cmbs(cmb_tsv: str | Path, candidates_tsv: str | Path | None,
                   unit: dict, swi_meta: dict, anat_meta: dict,
                   detection_meta: dict, swi: str | Path | None = None) -> dict:
    """Counts of accepted microbleeds by MARS category, lobe and region, plus QC flags.

    Parameters
    ----------
    cmb_tsv, candidates_tsv
        The accepted-CMB and candidate tables of one participant unit.
    unit : dict
        ``subject``, ``entities`` (session/acquisition/run), ``kind``, ``sources``.
    swi_meta, anat_meta, detection_meta : dict
        Metadata of the SWI, anatomy and detection sub-workflows.
    swi : path, optional
        The SWI image, for the voxel size and matrix of the protocol.

    Returns
    -------
    dict
        The content of ``_desc-summary_cmb.json``.
    """
    cmbs = read_table(cmb_tsv)
    candidates = read_table(candidates_tsv) if candidates_tsv else None
    by_mars = {category: 0 for category in MARS_CATEGORIES}
    by_mars["not_assigned"] = 0
    for category in cmbs.get("mars_category", pd.Series(dtype=str)).fillna("not_assigned"):
        by_mars[category if category in by_mars else "not_assigned"] += 1

    def counts(column):
        if column not in cmbs:
            return {}
        return dict(sorted(Counter(cmbs[column].fillna("not_assigned")).items()))

    warnings = list(anat_meta.get("registration_warnings",
                                  anat_meta.get("warnings", [])) or [])
    entities = unit.get("entities", {})
    voxel_size, shape = swi_meta.get("voxel_size_mm"), swi_meta.get("shape")
    if swi is not None:
        header = nib.load(str(swi)).header
        voxel_size = [round(float(z), 4) for z in header.get_zooms()[:3]]
        shape = [int(n) for n in header.get_data_shape()[:3]]
    summary = {
        "participant_id": f"sub-{unit['subject']}",
        "session_id": f"ses-{entities['session']}" if entities.get("session") else None,
        "acquisition": entities.get("acquisition"),
        "run": entities.get("run"),
        "input_kind": unit.get("kind"),
        "Sources": unit.get("sources", []),
        "protocol": {
            "EchoTime": unit.get("echo_times"),
            "MagneticFieldStrength": unit.get("field_strength"),
            "voxel_size_mm": voxel_size,
            "shape": shape,
        },
        "detector": detection_meta.get("detector"),
        "detector_version": detection_meta.get("version", __version__),
        "n_cmb": int(len(cmbs)),
        "n_candidates": int(len(candidates)) if candidates is not None else None,
        "n_review": int((candidates["status"] == "review").sum())
        if candidates is not None and "status" in candidates else None,
        "counts_by_mars": by_mars,
        "counts_by_lobe": counts("lobe"),
        "counts_by_region": counts("region"),
        "counts_by_hemisphere": counts("hemisphere"),
        "total_volume_mm3": float(cmbs["volume_mm3"].sum()) if "volume_mm3" in cmbs
        and len(cmbs) else 0.0,
        "count_source": "automatic",
        "registration_ok": bool(anat_meta.get("registration_ok", not warnings)),
        "registration_warnings": warnings,
        "regions_not_covered": list(anat_meta.get("regions_not_covered", []) or []),
        "cmbprep_version": __version__,
    }
    return summary


def _display_volume(path, mask=None):
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    return img, data


def plot_detection_mosaic(minip_path: str | Path, cmb_tsv: str | Path, out_png: str | Path,
                          candidates_tsv: str | Path | None = None, n_columns: int = 6,
                          n_rows: int = 2) -> Path:
    """A mosaic of axial slices of the minimum-intensity projection with detections.

    Accepted microbleeds are circled in red, candidates left for review in yellow. The
    image is shown in RAS orientation (neurological convention: the figure's left is the
    participant's left), whatever its storage order. Slices with
    detections come first; the rest are spread evenly through the volume.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, data = _display_volume(minip_path)
    inv = np.linalg.inv(img.affine)
    zooms = img.header.get_zooms()[:3]

    def voxels(table, status=None):
        if table is None:
            return np.zeros((0, 3))
        frame = read_table(table)
        if status is not None and "status" in frame:
            frame = frame[frame["status"] == status]
        if not {"x", "y", "z"} <= set(frame.columns) or frame.empty:
            return np.zeros((0, 3))
        xyz = frame[["x", "y", "z"]].to_numpy(float)
        return (inv @ np.c_[xyz, np.ones(len(xyz))].T).T[:, :3]

    accepted = voxels(cmb_tsv)
    review = voxels(candidates_tsv, "review")
    n_panels = n_columns * n_rows
    nz = data.shape[2]
    marked = sorted({int(round(k)) for k in accepted[:, 2] if 0 <= round(k) < nz})
    rest = [int(k) for k in np.linspace(nz * 0.15, nz * 0.85, n_panels)]
    slices = (marked + [k for k in rest if k not in marked])[:n_panels]
    slices = sorted(slices)
    finite = data[np.isfinite(data)]
    vmin, vmax = (np.percentile(finite, [1, 99]) if finite.size else (0, 1))
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(2.2 * n_columns, 2.4 * n_rows),
                             facecolor="black")
    aspect = zooms[1] / zooms[0]
    radius = 4.0 / zooms[0]
    for ax, k in zip(np.ravel(axes), slices + [None] * (n_panels - len(slices))):
        ax.set_axis_off()
        if k is None:
            continue
        ax.imshow(data[:, :, k].T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax,
                  aspect=aspect, interpolation="nearest")
        for points, colour in ((accepted, "red"), (review, "yellow")):
            for i, j, kk in points:
                if abs(kk - k) <= 1.0:
                    ax.add_patch(plt.Circle((i, j), radius, fill=False, color=colour,
                                            linewidth=1.2))
        z_mm = (img.affine @ [0, 0, k, 1])[2]
        ax.set_title(f"z = {z_mm:.0f} mm", color="white", fontsize=8)
    fig.suptitle("Minimum-intensity projection; red: microbleeds, yellow: for review "
                 "(image left = participant left)", color="white", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=90, facecolor="black")
    plt.close(fig)
    return out_png


_STYLE = """
body{font-family:Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{border-bottom:2px solid #444} h2{margin-top:1.6em;color:#335}
table{border-collapse:collapse;margin:0.6em 0} td,th{border:1px solid #bbb;padding:3px 8px}
th{background:#eef} .warn{color:#a00;font-weight:bold} img{max-width:100%}
.small{color:#666;font-size:90%}
"""


def _table(rows: list[tuple], header: tuple) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_unit_section(summary: dict, mosaic_png: Path | None, cmb_tsv: Path | None) -> str:
    """HTML of one participant unit (session/acquisition/run)."""
    title = " ".join(str(v) for v in (summary["participant_id"], summary.get("session_id"),
                                      summary.get("acquisition") and
                                      f"acq-{summary['acquisition']}",
                                      summary.get("run") and f"run-{summary['run']}") if v)
    protocol = summary.get("protocol", {})
    parts = [f"<h2>{html.escape(title)}</h2>", "<h3>Inputs and protocol</h3>",
             _table([("input kind", summary.get("input_kind")),
                     ("echo time(s) (s)", protocol.get("EchoTime")),
                     ("field strength (T)", protocol.get("MagneticFieldStrength")),
                     ("voxel size (mm)", protocol.get("voxel_size_mm")),
                     ("matrix", protocol.get("shape")),
                     ("detector", summary.get("detector"))], ("item", "value")),
             "<p class='small'>Sources: " + ", ".join(html.escape(str(s)) for s in
                                                        summary.get("Sources", [])) + "</p>"]
    if not summary.get("registration_ok", True) or summary.get("registration_warnings"):
        parts.append("<p class='warn'>Registration warning: "
                     + html.escape("; ".join(summary.get("registration_warnings", [])
                                             or ["registration check failed"])) + "</p>")
    if summary.get("regions_not_covered"):
        parts.append("<p class='warn'>Regions not covered by the field of view: "
                     + html.escape(", ".join(summary["regions_not_covered"])) + "</p>")
    parts.append("<h3>Microbleeds</h3>")
    parts.append(f"<p><b>{summary['n_cmb']}</b> accepted microbleed(s); "
                 f"{summary.get('n_review') or 0} candidate(s) left for review; "
                 f"{summary.get('n_candidates') or 0} candidate(s) in all.</p>")
    parts.append(_table(sorted(summary["counts_by_mars"].items()),
                        ("MARS category", "count")))
    if summary.get("counts_by_lobe"):
        parts.append(_table(sorted(summary["counts_by_lobe"].items()), ("lobe", "count")))
    if cmb_tsv is not None and Path(cmb_tsv).exists():
        frame = read_table(cmb_tsv)
        cols = [c for c in ("cmb_id", "x", "y", "z", "diameter_mm", "score", "region",
                            "hemisphere", "mars_category") if c in frame]
        if len(frame):
            rows = [tuple(f"{v:.1f}" if isinstance(v, float) else v for v in row)
                    for row in frame[cols].itertuples(index=False)]
            parts.append(_table(rows, tuple(cols)))
    if mosaic_png is not None and Path(mosaic_png).exists():
        encoded = base64.b64encode(Path(mosaic_png).read_bytes()).decode()
        parts.append(f"<img alt='detections' src='data:image/png;base64,{encoded}'>")
    return "\n".join(parts)


def assemble_participant_reports(output_dir: Path, units, settings=None) -> list[Path]:
    """Write ``sub-<label>.html`` at the output root for every participant of ``units``."""
    from ..interfaces.bids import derivative_path, write_text_atomic

    output_dir = Path(output_dir)
    by_subject: dict[str, list] = {}
    for unit in units:
        by_subject.setdefault(unit.subject, []).append(unit)
    written = []
    for subject, subject_units in sorted(by_subject.items()):
        sections = []
        for unit in subject_units:
            entities = {"subject": unit.subject, **unit.entities}
            summary_path = output_dir / derivative_path({**entities, "desc": "summary"},
                                                        "cmb", ".json")
            if not summary_path.exists():
                sections.append(f"<h2>{html.escape(unit.name)}</h2><p class='warn'>"
                                "No outputs found (the run failed?).</p>")
                continue
            summary = json.loads(summary_path.read_text())
            mosaic = output_dir / derivative_path({**entities, "desc": "detections"},
                                                  "mosaic", ".png", datatype="figures")
            cmb_tsv = output_dir / derivative_path({**entities, "desc": "cmb"}, "cmb", ".tsv")
            sections.append(render_unit_section(summary, mosaic, cmb_tsv))
        page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>cmbprep: "
                f"sub-{subject}</title><style>{_STYLE}</style></head><body>"
                f"<h1>cmbprep report: sub-{html.escape(subject)}</h1>"
                f"<p class='small'>cmbprep {__version__}. Automatic detections: check "
                "each one before reporting counts.</p>" + "\n".join(sections)
                + "</body></html>\n")
        written.append(write_text_atomic(output_dir / f"sub-{subject}.html", page))
    return written
