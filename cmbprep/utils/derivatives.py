"""Dataset-level files of the derivatives folder: description, .bidsignore, citation."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .. import __version__
from .io import write_json_atomic, write_text_atomic

CODE_URL = "https://github.com/cmbprep/cmbprep"


def container_info() -> dict | None:
    """``{"Type": ..., "Tag": ...}`` when running in a container, else ``None``."""
    if os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"):
        return {"Type": "singularity",
                "Tag": os.environ.get("APPTAINER_NAME",
                                      os.environ.get("SINGULARITY_NAME", "cmbprep"))}
    if os.environ.get("CMBPREP_CONTAINER"):
        return {"Type": os.environ["CMBPREP_CONTAINER"],
                "Tag": os.environ.get("CMBPREP_CONTAINER_TAG", f"cmbprep:{__version__}")}
    return None


def bids_uri(path: str | Path, bids_dir: Path) -> str:
    """``bids:raw:<relative path>`` for a file of the input dataset."""
    try:
        rel = Path(path).resolve().relative_to(Path(bids_dir).resolve())
    except ValueError:
        return str(path)
    return f"bids:raw:{rel.as_posix()}"


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
        "DatasetLinks": {"raw": Path(settings.bids_dir).resolve().as_uri()},
        "SourceDatasets": [{"URL": Path(settings.bids_dir).resolve().as_uri()}],
    }


def citation_text(settings) -> str:
    """Methods boilerplate for ``logs/CITATION.md``, filled with this run's settings."""
    template = resources.files("cmbprep.data").joinpath("boilerplate.md").read_text()
    return template.format(version=__version__, settings=settings,
                           detector=settings.detector)


def write_dataset_files(settings) -> None:
    """Write ``dataset_description.json``, ``.bidsignore`` and ``logs/CITATION.md``."""
    out = Path(settings.output_dir)
    write_json_atomic(out / "dataset_description.json", dataset_description(settings))
    write_text_atomic(out / ".bidsignore",
                      "*.html\nlogs/\nfigures/\ngroup_*\n*_cmb.tsv\n*_cmb.json\n*_mosaic.png\n")
    write_text_atomic(out / "logs" / "CITATION.md", citation_text(settings))

