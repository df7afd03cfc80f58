"""Participant summaries, figures and the ``sub-<label>.html`` report.

Pure functions (files in, files out); :mod:`cmbprep.interfaces.reports` wraps the
per-unit ones for the Nipype graph, and :func:`assemble_participant_reports` runs after
the graph, reading only the derivatives (as fMRIPrep's report generation does). The page
is rendered from the jinja2 templates ``templates/participant.html`` and
``templates/participant_unit.html``.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import __version__
from ..utils.io import write_text_atomic
from ..utils.paths import derivative_path
from ..utils.tables import NA

#: Categories of the Microbleed Anatomical Rating Scale (the ``mars_category`` column).
MARS_CATEGORIES = ("lobar", "deep", "infratentorial")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a BIDS TSV (``n/a`` as missing; unlike :func:`cmbprep.utils.tables.read_tsv`
    an empty cell stays an empty string)."""
    return pd.read_csv(path, sep="\t", na_values=[NA], keep_default_na=False)


def _value_counts(cmbs: pd.DataFrame, column: str) -> dict:
    """``{value: count}`` of a column, sorted; missing values as ``not_assigned``."""
    if column not in cmbs:
        return {}
    return dict(sorted(Counter(cmbs[column].fillna("not_assigned")).items()))


def _mars_counts(cmbs: pd.DataFrame) -> dict:
    by_mars = {category: 0 for category in MARS_CATEGORIES}
    by_mars["not_assigned"] = 0
    for category in cmbs.get("mars_category", pd.Series(dtype=str)).fillna("not_assigned"):
        by_mars[category if category in by_mars else "not_assigned"] += 1
    return by_mars


def _swi_warnings(swi_meta: dict) -> list:
    """What the SWI's metadata says a reader should know: a phase convention changed by
    the second pass inside the brain (SWI chain step 5)."""
    detection = swi_meta.get("HandednessDetection") or {}
    if not (detection.get("InBrain") or {}).get("Changed"):
        return []
    first = (detection.get("FirstPass") or {}).get("Handedness", "n/a")
    used = swi_meta.get("Handedness", "n/a")
    return [f"phase convention: '{first}' before brain extraction, '{used}' inside the "
            f"brain; the SWI and minIP were made with '{used}'"]


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
    by_mars = _mars_counts(cmbs)
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
        "detection_warnings": list(detection_meta.get("warnings", []) or []),
        "swi_warnings": _swi_warnings(swi_meta),
        "phase_artefact_zone_cm3": detection_meta.get("phase_artefact_zone_cm3"),
        "n_cmb": int(len(cmbs)),
        "n_candidates": int(len(candidates)) if candidates is not None else None,
        "n_review": int((candidates["status"] == "review").sum())
        if candidates is not None and "status" in candidates else None,
        "counts_by_mars": by_mars,
        "counts_by_lobe": _value_counts(cmbs, "lobe"),
        "counts_by_region": _value_counts(cmbs, "region"),
        "counts_by_hemisphere": _value_counts(cmbs, "hemisphere"),
        "total_volume_mm3": float(cmbs["volume_mm3"].sum()) if "volume_mm3" in cmbs
        and len(cmbs) else 0.0,
        "count_source": "automatic",
        "registration_ok": bool(anat_meta.get("registration_ok", not warnings)),
        "registration_warnings": warnings,
        "regions_not_covered": list(anat_meta.get("regions_not_covered", []) or []),
        "brain_coverage_fraction": anat_meta.get("brain_coverage_fraction"),
        "cmbprep_version": __version__,
    }
    return summary


def _display_volume(path):
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    return img, data


def _table_voxels(table, inverse_affine, status=None):
    """Voxel coordinates (float) of a table's ``x y z`` rows (those with ``status``)."""
    if table is None:
        return np.zeros((0, 3))
    frame = read_table(table)
    if status is not None and "status" in frame:
        frame = frame[frame["status"] == status]
    if not {"x", "y", "z"} <= set(frame.columns) or frame.empty:
        return np.zeros((0, 3))
    xyz = frame[["x", "y", "z"]].to_numpy(float)
    return (inverse_affine @ np.c_[xyz, np.ones(len(xyz))].T).T[:, :3]


def _mosaic_slices(accepted, nz, n_panels):
    """Slices with detections first, then evenly spread ones; sorted."""
    marked = sorted({int(round(k)) for k in accepted[:, 2] if 0 <= round(k) < nz})
    rest = [int(k) for k in np.linspace(nz * 0.15, nz * 0.85, n_panels)]
    slices = (marked + [k for k in rest if k not in marked])[:n_panels]
    return sorted(slices)


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
    accepted = _table_voxels(cmb_tsv, inv)
    review = _table_voxels(candidates_tsv, inv, "review")
    n_panels = n_columns * n_rows
    slices = _mosaic_slices(accepted, data.shape[2], n_panels)
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


def _escape_html(value):
    """``html.escape(str(value))`` as markup (jinja2's own escaping writes quotes
    differently: ``&#39;`` where the reports have always had ``&#x27;``)."""
    from markupsafe import Markup

    return Markup(html.escape(str(value)))


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none", NA)


def format_value(value, digits: int | None = None) -> str:
    """A value as the reports write it: ``n/a`` for a missing one (``None``, NaN, the
    text ``nan``), lists joined with commas, floats with ``digits`` decimals (default:
    four significant digits), booleans as ``yes``/``no``."""
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, digits) for v in value) or NA
    if _missing(value):
        return NA
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}" if digits is not None else f"{value:.4g}"
    return str(value)


def _template(name: str):
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["escape_html"] = _escape_html
    env.filters["na"] = format_value
    text = resources.files("cmbprep.reports").joinpath(f"templates/{name}").read_text(
        encoding="utf-8")
    return env.from_string(text)


def _cmb_rows(cmb_tsv):
    """Columns and rows (floats to one decimal) of the microbleed table, if any rows."""
    if cmb_tsv is None or not Path(cmb_tsv).exists():
        return [], []
    frame = read_table(cmb_tsv)
    cols = [c for c in ("cmb_id", "x", "y", "z", "diameter_mm", "score", "region",
                        "hemisphere", "mars_category") if c in frame]
    if not len(frame):
        return cols, []
    rows = [tuple(format_value(v, 1 if isinstance(v, float) else None) for v in row)
            for row in frame[cols].itertuples(index=False)]
    return cols, rows


def _unit_context(summary: dict, mosaic_png: Path | None, cmb_tsv: Path | None,
                  extras: dict | None = None) -> dict:
    """The values ``participant_unit.html`` shows, computed from the summary."""
    title = " ".join(str(v) for v in (summary["participant_id"], summary.get("session_id"),
                                      summary.get("acquisition") and
                                      f"acq-{summary['acquisition']}",
                                      summary.get("run") and f"run-{summary['run']}") if v)
    protocol = summary.get("protocol", {})
    registration_warning = None
    if not summary.get("registration_ok", True) or summary.get("registration_warnings"):
        registration_warning = "; ".join(summary.get("registration_warnings", [])
                                         or ["registration check failed"])
    cmb_columns, cmb_rows = _cmb_rows(cmb_tsv)
    mosaic = None
    if mosaic_png is not None and Path(mosaic_png).exists():
        mosaic = base64.b64encode(Path(mosaic_png).read_bytes()).decode()
    extras = dict(extras or {})
    warnings = [f"input: {w}" for w in summary.get("input_warnings") or []] + [
        f"SWI: {w}" for w in summary.get("swi_warnings") or []] + list(
        summary.get("detection_warnings") or []) + list(extras.get("warnings", []))
    return {
        "title": title,
        "protocol": [("input kind", summary.get("input_kind")),
                     ("echo time(s) (s)", protocol.get("EchoTime")),
                     ("field strength (T)", protocol.get("MagneticFieldStrength")),
                     ("voxel size (mm)", protocol.get("voxel_size_mm")),
                     ("matrix", protocol.get("shape")),
                     ("detector", summary.get("detector"))],
        "sources": summary.get("Sources", []),
        "registration_warning": registration_warning,
        "regions_not_covered": (", ".join(summary["regions_not_covered"])
                                if summary.get("regions_not_covered") else None),
        "warnings": warnings,
        "n_cmb": summary["n_cmb"],
        "n_review": summary.get("n_review") or 0,
        "n_candidates": summary.get("n_candidates") or 0,
        "mars_counts": sorted(summary["counts_by_mars"].items()),
        "lobe_counts": sorted((summary.get("counts_by_lobe") or {}).items()),
        "cmb_columns": cmb_columns, "cmb_rows": cmb_rows,
        "mosaic_base64": mosaic,
        "crops": extras.get("crops", []),
        "crops_note": extras.get("crops_note"),
        "qc_figures": extras.get("qc_figures", []),
        "registration_qc": extras.get("registration_qc", []),
        "review": extras.get("review"),
        "links": extras.get("links", []),
    }


def render_unit_section(summary: dict, mosaic_png: Path | None, cmb_tsv: Path | None,
                        extras: dict | None = None) -> str:
    """HTML of one participant unit (session/acquisition/run).

    ``extras`` (from :func:`unit_extras`): candidate crops, QC figures and numbers,
    the review's state, links and warnings.
    """
    return _template("participant_unit.html").render(
        _unit_context(summary, mosaic_png, cmb_tsv, extras))


#: At most this many candidate crops per unit in the report (the review page shows all).
MAX_REPORT_CROPS = 100
#: Registration QC metrics: key of the registration record -> (label, criterion).
_REGISTRATION_METRICS = {
    "nmi": ("normalised mutual information", lambda t: f">= {t['min_nmi']}"
            if "min_nmi" in t else NA),
    "affine_scale": ("scale of the affine part", lambda t: f"{t['min_scale']} to "
                     f"{t['max_scale']}" if "min_scale" in t else NA),
    "mask_in_head": ("fraction of the warped brain mask in the head",
                     lambda t: f">= {t['min_mask_in_head']}"
                     if "min_mask_in_head" in t else NA),
}


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def _candidate_crops(prefix, anat, candidates_tsv, warnings):
    """Crops of the accepted and review candidates (as :mod:`cmbprep.review` shows)."""
    from . import crops

    if not Path(candidates_tsv).exists():
        return [], None
    frame = read_table(candidates_tsv)
    if "status" not in frame or not {"x", "y", "z"} <= set(frame.columns):
        return [], None
    chosen = frame[frame["status"].isin(["cmb", "review"])].copy()
    if "score" in chosen:
        chosen = chosen.sort_values("score", ascending=False, kind="stable")
    note = None
    if len(chosen) > MAX_REPORT_CROPS:
        note = (f"The {MAX_REPORT_CROPS} highest-scoring of {len(chosen)} candidates are "
                "shown; the review page shows all.")
        chosen = chosen.head(MAX_REPORT_CROPS)
    if not len(chosen):
        return [], note
    paths = crops.unit_image_paths(anat, prefix)
    try:
        images = crops.UnitImages.load(paths)
    except (OSError, ValueError) as exc:
        warnings.append(f"candidate crops not drawn: {exc}")
        return [], note
    warnings.extend(f"crops: {message}" for message in images.skipped)
    shown = []
    for number, row in enumerate(chosen.to_dict("records"), start=1):
        status = "accepted" if row["status"] == "cmb" else "for review"
        caption = (f"#{number}: candidate {format_value(row.get('candidate_id'))}, "
                   f"{status}; score {format_value(row.get('score'), 3)}; diameter "
                   f"{format_value(row.get('diameter_mm'), 1)} mm; "
                   f"{format_value(row.get('region'))} "
                   f"({format_value(row.get('hemisphere'))}); MARS "
                   f"{format_value(row.get('mars_category'))}")
        png = crops.candidate_crops(images, (row["x"], row["y"], row["z"]))
        shown.append({"caption": caption, "status": row["status"], "png": _b64(png)})
    return shown, note


def _registration_qc(anat, prefix):
    """Rows (metric, value, criterion) from the atlas's sidecar, and its dseg path."""
    for sidecar in sorted(Path(anat).glob(f"{prefix}_atlas-*_dseg.json")):
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue
        registration = meta.get("registration") or {}
        thresholds = registration.get("thresholds") or {}
        rows = [("registration passed its checks", meta.get("registration_ok"), NA)]
        for key, (label, criterion) in _REGISTRATION_METRICS.items():
            if key in registration:
                rows.append((label, registration[key], criterion(thresholds)))
        for key, label in (("registration_image", "image registered"),
                           ("resolution_mm", "registration grid (mm)"),
                           ("seed", "random seed")):
            if key in registration:
                rows.append((label, registration[key], NA))
        brain = meta.get("brain_mask") or {}
        for key, label in (("brain_volume_ml", "brain volume (ml)"),
                           ("template_mask_volume_ml", "template brain volume (ml)")):
            if key in brain:
                rows.append((label, brain[key], NA))
        rows = [(label, str(value) if isinstance(value, float) else value, criterion)
                for label, value, criterion in rows]
        dseg = sidecar.with_name(sidecar.name.replace(".json", ".nii.gz"))
        return rows, dseg
    return [], None


def _qc_figures(anat, prefix, dseg, warnings):
    from . import crops

    swi = Path(anat) / f"{prefix}_desc-preproc_swi.nii.gz"
    mask = Path(anat) / f"{prefix}_desc-brain_mask.nii.gz"
    figures = []
    if not swi.exists():
        return figures
    jobs = [("Brain mask", mask, crops.brain_mask_figure),
            ("Template registration", dseg, crops.registration_figure)]
    for title, overlay, draw in jobs:
        if overlay is None or not Path(overlay).exists():
            continue
        try:
            figures.append({"title": title, "png": _b64(draw(swi, overlay))})
        except (OSError, ValueError) as exc:
            warnings.append(f"{title} figure not drawn: {exc}")
    return figures


def _review_state(reviewed_tsv):
    """One line per rater of the unit's ``_desc-reviewed_cmb.tsv``."""
    from ..review.store import read_reviewed

    if not Path(reviewed_tsv).exists():
        return []
    table = read_reviewed(reviewed_tsv)
    lines = []
    for rater, rows in table.groupby("rater", sort=True):
        decided = rows["decision"].notna().sum()
        lines.append(f"{rater}: {decided} of {len(rows)} candidate(s) decided, "
                     f"{int((rows['status'] == 'cmb').sum())} microbleed(s) accepted")
    return lines


def unit_extras(output_dir: Path, summary_path: Path, participant: str,
                session: str | None = None) -> dict:
    """Crops, QC figures and numbers, the review's state, links and warnings of one
    unit, read from the derivatives (see :func:`render_unit_section`)."""
    output_dir = Path(output_dir)
    anat = Path(summary_path).parent
    prefix = Path(summary_path).name[: -len("_desc-summary_cmb.json")]
    warnings: list[str] = []
    candidates = anat / f"{prefix}_desc-candidates_cmb.tsv"
    reviewed = anat / f"{prefix}_desc-reviewed_cmb.tsv"
    shown, note = _candidate_crops(prefix, anat, candidates, warnings)
    registration_qc, dseg = _registration_qc(anat, prefix)
    figures = _qc_figures(anat, prefix, dseg, warnings)
    links = []
    for label, ending in (("accepted microbleeds", "_desc-cmb_cmb.tsv"),
                          ("all candidates", "_desc-candidates_cmb.tsv"),
                          ("rater's review", "_desc-reviewed_cmb.tsv"),
                          ("summary", "_desc-summary_cmb.json")):
        path = anat / f"{prefix}{ending}"
        if path.exists():
            links.append((label, path.relative_to(output_dir).as_posix()))
    # OUTPUT_DIR (the folder of this report), as in docs/review.rst: the report names
    # no host path, so the same run into another folder gives the same bytes
    command = f"cmbprep-review OUTPUT_DIR --participant-label {participant}"
    if session:
        command += f" --session {session}"
    return {"crops": shown, "crops_note": note, "qc_figures": figures,
            "registration_qc": registration_qc, "links": links, "warnings": warnings,
            "review": {"command": command, "raters": _review_state(reviewed)}}


def methods_html(output_dir: Path):
    """``logs/CITATION.md`` as HTML (headings, paragraphs, bold, italics, code), or
    ``None`` without it."""
    import re

    from markupsafe import Markup

    path = Path(output_dir) / "logs" / "CITATION.md"
    if not path.exists():
        return None
    parts = []
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8").strip()):
        text = html.escape(" ".join(line.strip() for line in block.splitlines()))
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        text = re.sub(r"\*(.+?)\*", r"<i>\1</i>", text)
        text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
        heading = re.match(r"^(#+)\s+(.*)$", text)
        parts.append(f"<h3>{heading.group(2)}</h3>" if heading else f"<p>{text}</p>")
    return Markup("\n".join(parts))


def assemble_participant_reports(output_dir: Path, units) -> list[Path]:
    """Write ``sub-<label>.html`` at the output root for every participant of ``units``."""
    from markupsafe import Markup

    from .longitudinal import longitudinal_sections

    output_dir = Path(output_dir)
    by_subject: dict[str, list] = {}
    for unit in units:
        by_subject.setdefault(unit.subject, []).append(unit)
    page = _template("participant.html")
    methods = methods_html(output_dir)
    written = []
    for subject, subject_units in sorted(by_subject.items()):
        sections = []
        sessions = set()
        for unit in subject_units:
            entities = {"subject": unit.subject, **unit.entities}
            summary_path = output_dir / derivative_path({**entities, "desc": "summary"},
                                                        "cmb", ".json")
            if not summary_path.exists():  # shown as "No outputs found"
                sections.append({"name": unit.name, "section": None})
                continue
            sessions.add(entities.get("session"))
            summary = json.loads(summary_path.read_text())
            mosaic = output_dir / derivative_path({**entities, "desc": "detections"},
                                                  "mosaic", ".png", datatype="figures")
            cmb_tsv = output_dir / derivative_path({**entities, "desc": "cmb"}, "cmb", ".tsv")
            extras = unit_extras(output_dir, summary_path, subject, entities.get("session"))
            sections.append({"name": unit.name, "section": Markup(
                render_unit_section(summary, mosaic, cmb_tsv, extras))})
        review_command = f"cmbprep-review OUTPUT_DIR --participant-label {subject}"
        followed = [Markup(section) for section in longitudinal_sections(output_dir,
                                                                          subject)]
        text = page.render(subject=subject, version=__version__, units=sections,
                           longitudinal=followed, methods=methods,
                           review_command=review_command,
                           group_report_exists=(output_dir / "group_cmb.html").exists())
        written.append(write_text_atomic(output_dir / f"sub-{subject}.html", text))
    return written
