"""File names and folders of the BIDS-Derivatives outputs (pure path logic, no I/O).

:func:`derivative_path` builds cmbprep's path pattern, used by the Nipype sink
(:class:`cmbprep.interfaces.bids.DerivativesDataSink`) and by the reports.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ENTITY_ORDER", "ENTITY_SHORT_NAMES", "derivative_path", "file_extension"]

#: Order of the entities in a derivative file name (BIDS entity table).
ENTITY_ORDER = ("subject", "session", "acquisition", "run", "part", "from", "to", "mode",
                "space", "atlas", "res", "label", "desc")
#: Entity long name -> the key written in file names (``subject`` -> ``sub``).
ENTITY_SHORT_NAMES = {"subject": "sub", "session": "ses", "acquisition": "acq",
                      "run": "run", "part": "part", "from": "from", "to": "to",
                      "mode": "mode", "space": "space", "atlas": "atlas", "res": "res",
                      "label": "label", "desc": "desc"}


def derivative_path(entities: dict, suffix: str, extension: str,
                    datatype: str | None = "anat") -> Path:
    """Relative path of a derivative, e.g. ``sub-01/ses-1/anat/sub-01_ses-1_desc-cmb_cmb.tsv``.

    Parameters
    ----------
    entities : dict
        BIDS entities by long name (``subject``, ``session``, ``acquisition``, ``run``,
        ``space``, ``atlas``, ``label``, ``desc``...). ``None`` values are skipped.
    suffix : str
        The BIDS suffix (``swi``, ``mask``, ``dseg``, ``cmb``, ``xfm``...).
    extension : str
        With its leading dot (``.nii.gz``, ``.tsv``, ``.json``, ``.h5``).
    datatype : str or None
        Folder below the subject/session folder; ``None`` puts the file at the root.
    """
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}")
    parts = [f"{ENTITY_SHORT_NAMES[key]}-{entities[key]}" for key in ENTITY_ORDER
             if entities.get(key) not in (None, "")]
    name = "_".join(parts + [suffix]) + extension
    if datatype is None:
        return Path(name)
    folder = Path(f"sub-{entities['subject']}")
    if entities.get("session"):
        folder = folder / f"ses-{entities['session']}"
    return folder / datatype / name


def file_extension(path: str | Path) -> str:
    """The extension of a file name, double ones included (``.nii.gz``, ``.tsv.gz``)."""
    name = Path(path).name
    for ext in (".nii.gz", ".tsv.gz"):
        if name.endswith(ext):
            return ext
    return Path(path).suffix
