"""Finding the inputs of a run in a BIDS dataset.

The dataset is indexed with pybids (``validate=False``, as fMRIPrep does, so that
scanner-reconstructed ``*_swi.nii.gz`` files listed in ``.bidsignore`` are seen) and
inputs are selected with explicit queries, which ``--bids-filter-file`` can override.

Per participant, session, acquisition and run the best available input is chosen:

1. multi-echo GRE (``*_echo-<i>_part-mag_MEGRE``, phase optional),
2. single-echo GRE magnitude and phase (``*_part-mag_T2starw`` + ``*_part-phase_T2starw``),
3. scanner-reconstructed SWI (``*_swi.nii.gz``),
4. magnitude-only T2*-weighted GRE (``*_T2starw``).

GRE data with phase come first because cmbprep then computes the SWI itself and keeps the
phase to tell microbleeds from calcifications.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BIDSValidationError, DataError, InputMissingError, SelectionError

LOGGER = logging.getLogger("cmbprep")

_NIFTI = [".nii", ".nii.gz"]

#: Default queries; keys can be overridden by ``--bids-filter-file``.
DEFAULT_QUERIES = {
    "megre_mag": {"datatype": "anat", "suffix": "MEGRE", "part": ["mag", None]},
    "megre_phase": {"datatype": "anat", "suffix": "MEGRE", "part": "phase"},
    "mag": {"datatype": "anat", "suffix": "T2starw", "part": "mag"},
    "phase": {"datatype": "anat", "suffix": "T2starw", "part": "phase"},
    "swi": {"datatype": "anat", "suffix": "swi"},
    "magnitude": {"datatype": "anat", "suffix": "T2starw", "part": ["mag", None]},
    "t1w": {"datatype": "anat", "suffix": "T1w", "part": ["mag", None]},
}

#: Entities that split one participant's data into separate processing units.
GROUPING_ENTITIES = ("session", "acquisition", "run")

#: Top-level folders the BIDS specification allows to hold anything.
_FREE_FOLDERS = {"derivatives", "sourcedata", "code", "stimuli", "phenotype"}


@dataclass
class SWIInput:
    """One processing unit: the images of one participant/session/acquisition/run."""

    subject: str
    kind: str  # megre, gre, swi or magnitude
    magnitude: list[str]
    phase: list[str] = field(default_factory=list)
    echo_times: list[float] | None = None  # seconds, one per echo
    field_strength: float | None = None  # tesla
    phase_units: str | None = None  # "rad" or "arbitrary"
    t1w: str | None = None
    entities: dict = field(default_factory=dict)  # session/acquisition/run present
    warnings: list[str] = field(default_factory=list)  # fallbacks: recorded with outputs

    @property
    def name(self) -> str:
        """BIDS prefix of the outputs, e.g. ``sub-01_ses-1_run-2``."""
        parts = [f"sub-{self.subject}"]
        for key, short in (("session", "ses"), ("acquisition", "acq"), ("run", "run")):
            if self.entities.get(key) is not None:
                parts.append(f"{short}-{self.entities[key]}")
        return "_".join(parts)


def _bidsignore_patterns(bids_dir: Path) -> list[str]:
    path = bids_dir / ".bidsignore"
    if not path.exists():
        return []
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _ignored(relpath: str, patterns: list[str]) -> bool:
    name = relpath.rsplit("/", 1)[-1]
    for pattern in patterns:
        pat = pattern.rstrip("/")
        if pat.startswith("/"):
            if fnmatch.fnmatch(relpath, pat) or relpath.startswith(pat + "/"):
                return True
        elif fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(relpath, "*/" + pat) \
                or fnmatch.fnmatch(relpath, pat) or ("/" + pat + "/") in relpath:
            return True
    return False


def validate_bids_dataset(bids_dir: Path) -> None:
    """Check that ``bids_dir`` is a BIDS dataset.

    Checks ``dataset_description.json`` (readable JSON with ``Name`` and
    ``BIDSVersion``), the presence of ``sub-*`` folders, and that every file name under
    them is valid BIDS (with the schema-based ``bids_validator`` shipped with pybids),
    honouring ``.bidsignore``.

    Raises
    ------
    BIDSValidationError
        Naming the first offending file (exit 16).
    """
    from bids_validator import BIDSValidator

    bids_dir = Path(bids_dir)
    description = bids_dir / "dataset_description.json"
    if not description.exists():
        raise BIDSValidationError(f"{description}: missing (required by BIDS)")
    try:
        content = json.loads(description.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BIDSValidationError(f"{description}: not valid JSON ({exc})") from exc
    for key in ("Name", "BIDSVersion"):
        if key not in content:
            raise BIDSValidationError(f"{description}: required field '{key}' missing")
    if not any(p.is_dir() for p in bids_dir.glob("sub-*")):
        raise BIDSValidationError(f"{bids_dir}: no sub-<label> folders")

    patterns = _bidsignore_patterns(bids_dir)
    validator = BIDSValidator()
    bad = []
    for path in sorted(bids_dir.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(bids_dir).as_posix()
        top = rel.split("/", 1)[0]
        if top in _FREE_FOLDERS or any(part.startswith(".") for part in rel.split("/")):
            continue
        if _ignored(rel, patterns):
            continue
        if not validator.is_bids("/" + rel):
            bad.append(rel)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise BIDSValidationError(
            f"{bids_dir / bad[0]}: not a valid BIDS file name{more}; list scanner SWI "
            "or other non-standard files in .bidsignore, or use --skip-bids-validation")


def load_layout(bids_dir: Path, database_dir: Path | None = None):
    """Index ``bids_dir`` with pybids (no validation, no metadata index)."""
    from bids import BIDSLayout, BIDSLayoutIndexer

    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise InputMissingError(f"{bids_dir}: BIDS dataset folder does not exist")
    if not (bids_dir / "dataset_description.json").exists():
        raise InputMissingError(f"{bids_dir}: no dataset_description.json, not a BIDS "
                                "dataset")
    indexer = BIDSLayoutIndexer(validate=False, index_metadata=False)
    kwargs = {}
    if database_dir is not None:
        kwargs["database_path"] = str(database_dir)
    try:
        return BIDSLayout(str(bids_dir), validate=False, indexer=indexer, **kwargs)
    except (OSError, ValueError) as exc:
        raise DataError(f"{bids_dir}: cannot index the dataset ({exc})") from exc


def load_filters(path: Path | None) -> dict:
    """Merge a ``--bids-filter-file`` into :data:`DEFAULT_QUERIES`."""
    queries = {key: dict(value) for key, value in DEFAULT_QUERIES.items()}
    if path is None:
        return queries
    try:
        user = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot read the BIDS filter file ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: BIDS filter file is not valid JSON ({exc})") from exc
    if not isinstance(user, dict):
        raise DataError(f"{path}: BIDS filter file must hold a JSON object")
    unknown = sorted(set(user) - set(queries))
    if unknown:
        raise DataError(f"{path}: unknown filter key(s) {', '.join(unknown)}; "
                        f"known: {', '.join(queries)}")
    for key, value in user.items():
        if not isinstance(value, dict):
            raise DataError(f"{path}: filter '{key}' must be a JSON object")
        queries[key].update(value)
    return queries


def _to_pybids(query: dict) -> dict:
    from bids.layout import Query

    def convert(value):
        if value is None:
            return Query.NONE
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    out = {key: convert(value) for key, value in query.items()}
    out.setdefault("extension", _NIFTI)
    return out


def empty_subject_folders(layout, labels=()) -> list[tuple[str, InputMissingError]]:
    """``(sub-<label>, error)`` for each participant folder without any BIDS file (e.g.
    an empty ``anat/``), of the participants in ``labels`` (all when empty), sorted."""
    available = set(layout.get_subjects())
    return [(folder.name,
             InputMissingError(f"{folder}: no image files (an empty anat/ folder?)"))
            for folder in sorted(Path(layout.root).glob("sub-*"))
            if folder.is_dir() and folder.name[4:] not in available
            and (not labels or folder.name[4:] in labels)]


def select_subjects(layout, labels: list[str]) -> list[str]:
    """Participants to process: all, or those asked for (exit 18 if none exist).

    A participant folder without any file is an error (exit 66) when it is asked for or
    when it is the only kind there is; otherwise the run lists it as a failed
    participant (see :func:`empty_subject_folders`) and processes the others."""
    available = sorted(layout.get_subjects())
    empty = empty_subject_folders(layout, labels)
    if empty and (labels or not available):
        raise empty[0][1]
    if not labels:
        if not available:
            raise SelectionError(f"{layout.root}: no participants found")
        return available
    missing = sorted(set(labels) - set(available))
    if missing:
        raise SelectionError(
            f"{layout.root}: participant(s) {', '.join('sub-' + m for m in missing)} "
            f"not found (available: {', '.join(available) or 'none'})")
    return sorted(set(labels))


def read_sidecar(layout, path: str) -> dict:
    """Metadata of ``path`` merged over its sidecars (BIDS inheritance principle).

    Raises
    ------
    DataError
        A sidecar that is not valid JSON, naming it (exit 65).
    """
    bids_file = layout.get_file(path)
    entities = {k: v for k, v in bids_file.get_entities().items()
                if k not in ("extension",)}
    target_dir = Path(path).parent
    candidates = layout.get(suffix=entities.get("suffix"), extension=".json")
    chosen = []
    for sidecar in candidates:
        sdir = Path(sidecar.path).parent
        if not (target_dir == sdir or sdir in target_dir.parents):
            continue
        sent = {k: v for k, v in sidecar.get_entities().items() if k != "extension"}
        if all(entities.get(k) == v for k, v in sent.items()):
            chosen.append((len(Path(sidecar.path).parts), len(sent), sidecar.path))
    metadata = {}
    for _, _, sidecar_path in sorted(chosen):
        try:
            content = json.loads(Path(sidecar_path).read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{sidecar_path}: sidecar is not valid JSON ({exc.msg} at "
                            f"line {exc.lineno})") from exc
        except OSError as exc:
            raise DataError(f"{sidecar_path}: cannot read sidecar ({exc})") from exc
        if not isinstance(content, dict):
            raise DataError(f"{sidecar_path}: sidecar must hold a JSON object")
        metadata.update(content)
    return metadata


def _group_key(bids_file) -> tuple:
    ent = bids_file.get_entities()
    return tuple(ent.get(e) for e in GROUPING_ENTITIES)


def _number(value, name, path):
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: sidecar field {name}={value!r} is not a number") from None
    if not number > 0:
        raise DataError(f"{path}: sidecar field {name}={value!r} must be positive")
    return number


def _echo_times(value, path) -> list[float] | None:
    """``EchoTime`` of one sidecar as a list: a number (one echo), or a list of numbers
    (a 4D file holding several echoes, as many converters write it)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            raise DataError(f"{path}: sidecar field EchoTime is an empty list")
        return [_number(v, "EchoTime", path) for v in value]
    return [_number(value, "EchoTime", path)]


def _n_volumes(path) -> int:
    """Volumes along the 4th axis of an image (1 for 3D), from its header only."""
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception as exc:  # nibabel raises many types
        raise DataError(f"{path}: cannot be read as NIfTI ({exc})") from exc
    return int(shape[3]) if len(shape) >= 4 else 1


def _by_group(bids_files) -> dict[tuple, list]:
    """BIDS files grouped by (session, acquisition, run)."""
    groups: dict[tuple, list] = {}
    for f in bids_files:
        groups.setdefault(_group_key(f), []).append(f)
    return groups


def _echo_sorted(bids_files) -> list:
    return sorted(bids_files, key=lambda f: int(f.get_entities().get("echo", 1) or 1))


def _pair_inputs(subject: str, found: dict) -> dict[tuple, SWIInput]:
    """One unit per (session, acquisition, run), the best input kind first: multi-echo
    GRE, then single-echo magnitude + phase, then scanner SWI, then magnitude only."""
    units: dict[tuple, SWIInput] = {}

    def add(key, kind, mags, phases):
        if key in units:
            return
        ent = mags[0].get_entities()
        entities = {e: ent.get(e) for e in GROUPING_ENTITIES if ent.get(e) is not None}
        units[key] = SWIInput(subject=subject, kind=kind,
                              magnitude=[m.path for m in mags],
                              phase=[p.path for p in phases], entities=entities)

    phases_megre = _by_group(found["megre_phase"])
    for key, mags in _by_group(found["megre_mag"]).items():
        add(key, "megre", _echo_sorted(mags), _echo_sorted(phases_megre.get(key, [])))
    phases = _by_group(found["phase"])
    for key, mags in _by_group(found["mag"]).items():
        if key in phases:
            if len(mags) != 1 or len(phases[key]) != 1:
                raise DataError(f"{mags[0].path}: expected one magnitude and one phase "
                                f"image, found {len(mags)} and {len(phases[key])}")
            add(key, "gre", mags, phases[key])
    for key, swis in _by_group(found["swi"]).items():
        add(key, "swi", swis[:1], [])
    for key, mags in _by_group(found["magnitude"]).items():
        add(key, "magnitude", mags[:1], [])
    return units


def _read_unit_metadata(layout, unit: SWIInput, t1ws: dict[tuple, list]) -> None:
    """Fill echo times, field strength, phase units and a same-session T1w from the
    sidecars (checked: positive numbers, distinct echo times, known phase units)."""
    meta = [read_sidecar(layout, path) for path in unit.magnitude]
    phase_meta = [read_sidecar(layout, path) for path in unit.phase]
    tes = [_echo_times(m.get("EchoTime"), p) for m, p in zip(meta, unit.magnitude)]
    unit.echo_times = None if any(t is None for t in tes) else [t for ts in tes for t in ts]
    if any(t is not None and len(t) > 1 for t in tes):
        # echo times listed per file: each file must hold that many volumes
        for listed, path in zip(tes, unit.magnitude):
            volumes = _n_volumes(path)
            if listed is not None and len(listed) != volumes:
                raise DataError(f"{path}: sidecar EchoTime lists {len(listed)} echo times "
                                f"but the image has {volumes} volumes")
        if unit.kind == "gre":  # one 4D magnitude (+ phase) file with several echoes
            unit.kind = "megre"
    if unit.kind == "megre" and unit.echo_times and len(set(unit.echo_times)) != len(
            unit.echo_times):
        raise DataError(f"{unit.magnitude[0]}: echoes share the same EchoTime "
                        f"{unit.echo_times}")
    unit.field_strength = _number(meta[0].get("MagneticFieldStrength"),
                                  "MagneticFieldStrength", unit.magnitude[0])
    if phase_meta:
        units_value = phase_meta[0].get("Units")
        if units_value is not None and units_value not in ("rad", "arbitrary"):
            raise DataError(f"{unit.phase[0]}: phase sidecar Units={units_value!r}; "
                            "expected 'rad' or 'arbitrary'")
        unit.phase_units = units_value
    # A T1w of the same session (any acquisition/run) helps registration.
    session = unit.entities.get("session")
    same_session = [files for k, files in t1ws.items() if k[0] == session]
    if same_session:
        unit.t1w = sorted(f.path for f in same_session[0])[0]


def collect_inputs(layout, subject: str, sessions: list[str] | None = None,
                   queries: dict | None = None) -> list[SWIInput]:
    """All processing units of one participant.

    Raises
    ------
    InputMissingError
        The participant has no usable SWI-type input (exit 66).
    SelectionError
        ``sessions`` selects nothing for this participant (exit 18).
    DataError
        Broken or inconsistent sidecars (exit 65).
    """
    queries = queries or DEFAULT_QUERIES
    base = {"subject": subject}
    if sessions:
        available = layout.get_sessions(subject=subject)
        if not set(sessions) & set(available):
            raise SelectionError(
                f"sub-{subject}: session(s) {', '.join(sessions)} not found "
                f"(available: {', '.join(available) or 'none'})")
        base["session"] = sessions
    found = {key: layout.get(**base, **_to_pybids(query)) for key, query in queries.items()}
    units = _pair_inputs(subject, found)
    if not units and queries != DEFAULT_QUERIES:
        raise SelectionError(f"sub-{subject}: the BIDS filters select no SWI input")
    if not units:
        looked_for = ("*_echo-<i>_part-mag_MEGRE, *_part-mag_T2starw (+ *_part-phase_"
                      "T2starw), *_swi or *_T2starw NIfTI files under anat/")
        where = f" in session(s) {', '.join(sessions)}" if sessions else ""
        raise InputMissingError(f"sub-{subject}: no usable SWI input{where}; looked for "
                                f"{looked_for}")
    t1ws = _by_group(found["t1w"])
    for unit in units.values():
        _read_unit_metadata(layout, unit, t1ws)
    if queries != DEFAULT_QUERIES:
        _check_filtered_units(layout, subject, base, units)
    return [units[k] for k in sorted(units, key=lambda k: tuple(str(x) for x in k))]


def _check_filtered_units(layout, subject: str, base: dict, units: dict) -> None:
    """No silent change of method: a filter that keeps a magnitude but drops the phase
    the data offer for it is an error (exit 18); one that drops echoes or the T1w is a
    warning recorded with the unit's outputs."""
    found = {key: layout.get(**base, **_to_pybids(query))
             for key, query in DEFAULT_QUERIES.items()}
    offered = _pair_inputs(subject, found)
    for key, unit in units.items():
        full = offered.get(key)
        if full is None:
            continue
        if full.phase and not unit.phase:
            raise SelectionError(
                f"{unit.name}: the BIDS filters select {Path(unit.magnitude[0]).name} "
                f"but not the phase the data offer ({Path(full.phase[0]).name}): the unit "
                "would run magnitude-only; add the phase to the filter ('phase' or "
                "'megre_phase') or leave this session out")
        if full.kind == unit.kind and len(unit.magnitude) < len(full.magnitude):
            unit.warnings.append(f"the BIDS filters keep {len(unit.magnitude)} of the "
                                 f"{len(full.magnitude)} echoes the data offer")
        _read_unit_metadata(layout, full, _by_group(found["t1w"]))
        if full.t1w and not unit.t1w:
            unit.warnings.append(f"the BIDS filters leave out the T1w the data offer "
                                 f"({Path(full.t1w).name}); registration uses the SWI "
                                 "magnitude only")
        for warning in unit.warnings:
            LOGGER.warning("%s: %s", unit.name, warning)


def read_acq_times(bids_dir: str | Path, subject: str) -> dict:
    """``{ses-<label>: acq_time}`` from ``sub-<label>/sub-<label>_sessions.tsv`` of the
    input dataset (empty without the file; ``None`` where a session has no time).

    Raises
    ------
    DataError
        The table cannot be read or has no ``session_id`` column.
    """
    from .tables import read_rows

    subject = subject[4:] if subject.startswith("sub-") else subject
    path = Path(bids_dir) / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    if not path.exists():
        return {}
    rows = read_rows(path)
    if "session_id" not in rows.columns:
        raise DataError(f"{path}: no 'session_id' column")
    return {r["session_id"]: r.get("acq_time") for r in rows if r.get("session_id")}
