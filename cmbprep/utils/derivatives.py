"""Dataset-level files of the derivatives folder: description, .bidsignore, citation."""

from __future__ import annotations

import os
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
                           detector=settings.detector)


def write_dataset_files(settings) -> None:
    """Write ``dataset_description.json``, ``.bidsignore`` and ``logs/CITATION.md``."""
    out = Path(settings.output_dir)
    write_json_atomic(out / "dataset_description.json", dataset_description(settings))
    write_text_atomic(out / ".bidsignore",
                      "*.html\nlogs/\nfigures/\ngroup_*\n*_cmb.tsv\n*_cmb.json\n*_mosaic.png\n")
    write_text_atomic(out / "logs" / "CITATION.md", citation_text(settings))

