"""Dataset-level files of the derivatives folder: description, .bidsignore, citation."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .. import __version__
from .io import write_json_atomic, write_text_atomic

CODE_URL = "https://github.com/cmbprep/cmbprep"


def container_info(environ=None, root: str | Path = "/") -> dict | None:
    """``{"Type": ..., "Tag": ...}`` when this run is in the cmbprep image, else ``None``.

    The image sets ``CMBPREP_CONTAINER_TAG`` (a build argument of the Dockerfile); a
    run without it is not from the image, even inside some other container, and records
    no container. The type is read at run time from what each runtime leaves:
    Apptainer/Singularity set ``APPTAINER_CONTAINER``/``SINGULARITY_CONTAINER``, Docker
    creates ``/.dockerenv``, Podman ``/run/.containerenv``; otherwise it is ``"oci"``.
    """
    env = os.environ if environ is None else environ
    tag = env.get("CMBPREP_CONTAINER_TAG")
    if not tag:
        return None
    root = Path(root)
    for found, kind in ((bool(env.get("APPTAINER_CONTAINER")), "apptainer"),
                        (bool(env.get("SINGULARITY_CONTAINER")), "singularity"),
                        ((root / ".dockerenv").exists(), "docker"),
                        ((root / "run" / ".containerenv").exists(), "podman")):
        if found:
            return {"Type": kind, "Tag": tag}
    return {"Type": "oci", "Tag": tag}


def bids_uri(path: str | Path, bids_dir: Path) -> str:
    """``bids:raw:<relative path>`` for a file of the input dataset."""
    try:
        rel = Path(path).resolve().relative_to(Path(bids_dir).resolve())
    except ValueError:
        return str(path)
    return f"bids:raw:{rel.as_posix()}"


def raw_link(bids_dir: str | Path, output_dir: str | Path) -> str:
    """The input dataset's location relative to the output dataset (POSIX path)."""
    return Path(os.path.relpath(Path(bids_dir).resolve(),
                                Path(output_dir).resolve())).as_posix()


def dataset_description(settings) -> dict:
    """Content of the derivatives' ``dataset_description.json``."""
    generated = {"Name": "cmbprep", "Version": __version__, "CodeURL": CODE_URL}
    container = container_info()
    if container:
        generated["Container"] = container
    return {
        "Name": "cmbprep - cerebral microbleed detection on SWI",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "HowToAcknowledge": "Cite cmbprep (see logs/CITATION.md) and the methods it uses.",
        # relative to this dataset (BIDS allows a relative path): it stays right when
        # both folders are moved or mounted together, and names no host path
        "DatasetLinks": {"raw": raw_link(settings.bids_dir, settings.output_dir)},
        "SourceDatasets": [{"URL": "bids:raw:"}],
    }


def citation_text(settings) -> str:
    """Methods boilerplate for ``logs/CITATION.md``, filled with this run's settings."""
    template = resources.files("cmbprep.data").joinpath("boilerplate.md").read_text()
    return template.format(version=__version__, settings=settings,
                           detector=settings.detector, megre=_MEGRE_METHODS[settings.megre_echoes])


#: The boilerplate's sentence on multi-echo data, by ``--megre-echoes``.
_MEGRE_METHODS = {
    "longest": ("From multi-echo data with phase, the echo with the longest echo time "
                "was used alone (magnitude and phase); multi-echo magnitude without phase "
                "was combined across echoes by root sum of squares."),
    "fit": ("Multi-echo data were combined across echoes before this step (magnitude by "
            "root sum of squares; phase by Laplacian unwrapping and a weighted linear fit "
            "of the phase over echo time, scaled to the mean echo time)."),
}


def write_dataset_files(settings) -> None:
    """Write ``dataset_description.json``, ``.bidsignore`` and ``logs/CITATION.md``."""
    out = Path(settings.output_dir)
    write_json_atomic(out / "dataset_description.json", dataset_description(settings))
    write_text_atomic(out / ".bidsignore",
                      "*.html\nlogs/\nfigures/\ngroup_*\n*_cmb.tsv\n*_cmb.json\n*_mosaic.png\n"
                      "*_manifest.json\n")
    write_text_atomic(out / "logs" / "CITATION.md", citation_text(settings))



# -- participant units as sets ------------------------------------------------------------
#
# A unit's derivatives are written into a staging folder inside the output dataset and
# committed together by :func:`commit_unit`: a "Complete": false manifest first, then the
# files moved in (renames on one file system), files of the previous set that the new one
# lacks removed, and the manifest listing every file with its checksum written last. The
# group level counts a unit only when its manifest is complete and every file matches.

#: The manifest's file name ends with this (``sub-01[_ses-1...]_manifest.json``).
MANIFEST_SUFFIX = "_manifest.json"
#: Settings recorded in each unit's manifest (all change the outputs).
MANIFEST_SETTINGS = ("detector", "swi_power", "highpass_mm", "minip_slab_mm", "handedness",
                     "registration_resolution_mm", "random_seed", "version")


def unit_prefix(entities: dict) -> str:
    """``sub-01_ses-1_acq-x_run-2`` from long-name entities."""
    parts = [f"sub-{entities['subject']}"]
    for key, short in (("session", "ses"), ("acquisition", "acq"), ("run", "run")):
        if entities.get(key) not in (None, ""):
            parts.append(f"{short}-{entities[key]}")
    return "_".join(parts)


def staging_dir(output_dir: str | Path, entities: dict) -> Path:
    """Where a unit's files are written before they are committed."""
    from .io import STATE_FOLDER

    return Path(output_dir) / STATE_FOLDER / "staging" / unit_prefix(entities)


def manifest_path(output_dir: str | Path, entities: dict) -> Path:
    """``<output_dir>/sub-01/[ses-1/]anat/sub-01[_ses-1]_manifest.json``."""
    from .paths import derivative_path

    keys = ("subject", "session", "acquisition", "run")
    return Path(output_dir) / derivative_path({k: entities.get(k) for k in keys},
                                              "manifest", ".json")


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_settings(settings) -> dict:
    """The settings of a run that change a unit's outputs (no paths, no run id)."""
    recorded = {key: getattr(settings, key) for key in MANIFEST_SETTINGS}
    recorded["omp_nthreads"] = settings.resolved_omp_nthreads()
    model = getattr(settings, "detector_model", None)
    recorded["detector_model_sha256"] = _sha256(Path(model)) if model else None
    filters = getattr(settings, "bids_filter_file", None)
    recorded["bids_filter_sha256"] = _sha256(Path(filters)) if filters else None
    return recorded


def _read_manifest(path: Path) -> dict | None:
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def commit_unit(staging: str | Path, output_dir: str | Path, entities: dict,
                settings: dict | None = None, warnings=()) -> Path:
    """Move a unit's staged files into the output dataset as one set; return the
    manifest. ``warnings`` (input fallbacks) go into the manifest and the summary."""
    from .io import STATE_FOLDER

    staging, output_dir = Path(staging), Path(output_dir)
    prefix = unit_prefix(entities)
    staged = sorted(p for p in staging.rglob("*") if p.is_file()
                    and not p.name.startswith("."))
    warnings = [str(w) for w in warnings]
    summaries = [p for p in staged if p.name.endswith("_desc-summary_cmb.json")]
    for summary in summaries:
        content = json.loads(summary.read_text())
        content["input_warnings"] = warnings
        write_json_atomic(summary, content)
    files = {p.relative_to(staging).as_posix(): {"sha256": _sha256(p),
                                                 "size": p.stat().st_size}
             for p in staged}
    manifest = manifest_path(output_dir, entities)
    old = _read_manifest(manifest) or {}
    old_files = set(old.get("Files") or {})
    write_json_atomic(manifest, {"Unit": prefix, "Complete": False,
                                 "Note": "being written; a run that stops here leaves "
                                 "this unit incomplete (rerun the participant level)"})
    for rel in files:
        target = output_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)
    for rel in sorted(old_files - set(files)):  # files of the previous settings
        with contextlib.suppress(OSError):
            (output_dir / rel).unlink()
    write_json_atomic(manifest, {
        "Unit": prefix, "Complete": True,
        "GeneratedBy": {"Name": "cmbprep", "Version": __version__},
        "Settings": dict(settings or {}),
        "InputWarnings": warnings,
        "Files": files,
    })
    shutil.rmtree(staging, ignore_errors=True)
    for folder in (staging.parent, output_dir / STATE_FOLDER):
        with contextlib.suppress(OSError):
            folder.rmdir()
    return manifest


def check_unit_manifest(path: str | Path, output_dir: str | Path,
                        verify: tuple[str, ...] = ()) -> str | None:
    """``None`` when the unit of manifest ``path`` is complete and consistent, else why
    not. Every listed file must exist with its size; those ending with one of
    ``verify`` also with their checksum."""
    content = _read_manifest(Path(path))
    if content is None:
        return f"{path}: manifest unreadable"
    if content.get("Complete") is not True:
        return (f"incomplete: a run stopped while writing it ({Path(path).name} says "
                "Complete: false)")
    output_dir = Path(output_dir)
    for rel, info in sorted((content.get("Files") or {}).items()):
        target = output_dir / rel
        try:
            size = target.stat().st_size
        except OSError:
            return f"incomplete: {rel} listed in {Path(path).name} is missing"
        if size != info.get("size"):
            return f"inconsistent: {rel} differs from {Path(path).name} (size)"
        if rel.endswith(verify) and _sha256(target) != info.get("sha256"):
            return f"inconsistent: {rel} differs from {Path(path).name} (checksum)"
    return None


def session_transform_name(prefix: str, session_id: str, reference_id: str) -> str:
    """File name (no extension) of the transform that resamples ``session_id``'s images
    onto the reference session: ``<prefix>_from-ses02_to-ses01_mode-image_xfm``."""
    return (f"{prefix}_from-{session_id.replace('-', '')}_to-"
            f"{reference_id.replace('-', '')}_mode-image_xfm")


@dataclass
class SessionSeries:
    """A participant's sessions with complete outputs, in time order.

    ``prefix`` is ``sub-<label>[_acq-<label>][_run-<index>]``; each session is a dict
    with ``session_id``, ``acq_time`` (ISO or ``n/a``), ``swi``, ``brain_mask``,
    ``cmb`` and ``reviewed`` (None when no rater reviewed it).
    """

    prefix: str
    sessions: list


def _session_order(sessions: list) -> list:
    """By ``acq_time`` when every session has one, else by session label."""
    from ..algorithms.longitudinal import parse_acq_times
    from ..algorithms.stats import natural_sort_key

    parsed = parse_acq_times([s["acq_time"] for s in sessions])
    if parsed.notna().all():
        return [sessions[i] for i in parsed.argsort(kind="stable")]
    return sorted(sessions, key=lambda s: natural_sort_key(s["session_id"]))


def collect_session_series(output_dir: str | Path, bids_dir: str | Path,
                           subject: str) -> list[SessionSeries]:
    """A participant's series of two or more sessions with complete outputs.

    Units are grouped by acquisition and run; a unit whose manifest says it is
    incomplete, or that lacks its SWI, brain mask or CMB table, is left out. Session
    times come from the input dataset's ``sub-<label>_sessions.tsv`` (``acq_time``).
    """
    from .bids import read_acq_times
    from .units import find_participant_units

    output_dir = Path(output_dir)
    units, _empty = find_participant_units(output_dir, [subject])
    times = read_acq_times(Path(bids_dir), subject)
    groups: dict = {}
    for prefix, unit in sorted(units.items()):
        entities = unit["entities"]
        if "ses" not in entities or "manifest" not in unit or "cmb" not in unit:
            continue
        if check_unit_manifest(unit["manifest"], output_dir) is not None:
            continue
        folder = Path(unit["folder"])
        swi = folder / f"{prefix}_desc-preproc_swi.nii.gz"
        mask = folder / f"{prefix}_desc-brain_mask.nii.gz"
        if not (swi.exists() and mask.exists()):
            continue
        key = unit_prefix({"subject": subject, "acquisition": entities.get("acq"),
                           "run": entities.get("run")})
        session_id = f"ses-{entities['ses']}"
        groups.setdefault(key, []).append({
            "session_id": session_id, "acq_time": times.get(session_id) or "n/a",
            "swi": str(swi), "brain_mask": str(mask), "cmb": str(unit["cmb"]),
            "reviewed": str(unit["reviewed"]) if "reviewed" in unit else None})
    return [SessionSeries(prefix=key, sessions=_session_order(sessions))
            for key, sessions in sorted(groups.items()) if len(sessions) > 1]
