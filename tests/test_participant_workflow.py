"""End to end: the bundled example dataset through ``cmbprep ... participant`` and ``group``.

The same dataset as ``make demo`` (``cmbprep.testing.phantom.write_example_dataset``):
real Nipype graph, real ANTsPy registration, real files. Checks the derivative file list
against ``tests/data/expected_outputs.txt`` (like fMRIPrep's ``*_outputs.txt``), sidecars,
that inputs are untouched, that a rerun with the same work dir recomputes nothing, and
that the group level reads the outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import checksums

EXPECTED = Path(__file__).parent / "data" / "expected_outputs.txt"


def _listing(out: Path) -> list[str]:
    files = []
    for path in sorted(out.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(out).as_posix()
        if rel.startswith("logs/config-"):
            rel = "logs/config-<run_uuid>.toml"
        files.append(rel)
    return sorted(set(files))


@pytest.fixture(scope="module")
def demo(example_run):
    """The shared run (tests/conftest.py: participant, cached rerun with ``--use-plugin``
    and ``--write-graph``, group level)."""
    assert "single_subject_01_wf" in (example_run["work"] / "graph.dot").read_text()
    return example_run


def test_derivative_file_list_matches_expected(demo):
    listing = _listing(demo["out"])
    expected = [line.strip() for line in EXPECTED.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    missing = sorted(set(expected) - set(listing))
    extra = sorted(set(listing) - set(expected))
    assert not missing and not extra, f"missing: {missing}\nunexpected: {extra}"


def test_every_image_and_table_has_a_sidecar_with_sources(demo):
    out = demo["out"]
    for path in list(out.rglob("sub-*/anat/*.nii.gz")) + list(out.rglob("sub-*/anat/*.tsv")):
        stem = path.name.split(".")[0]
        sidecar = path.with_name(stem + ".json")
        assert sidecar.exists(), f"no sidecar for {path}"
        meta = json.loads(sidecar.read_text())
        assert meta.get("Sources"), f"{sidecar} has no Sources"
        assert all(s.startswith("bids:raw:sub-") for s in meta["Sources"])
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "cmbprep"
    assert "raw" in description["DatasetLinks"]


def test_inputs_are_not_modified(demo):
    assert checksums(demo["bids"]) == demo["before"]


def test_rerun_with_same_work_dir_recomputes_nothing(demo):
    assert len(demo["first"]) > 10
    assert demo["second"] == demo["first"]


def test_cmb_tables_agree_with_truth_and_masks(demo):
    out, bids = demo["out"], demo["bids"]
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    import nibabel as nib

    for sub in participants["participant_id"]:
        table = pd.read_csv(out / sub / "anat" / f"{sub}_desc-cmb_cmb.tsv", sep="\t",
                            na_values="n/a")
        for column in ("cmb_id", "x", "y", "z", "i", "j", "k", "mni_x", "mni_y", "mni_z",
                       "volume_mm3", "diameter_mm", "score", "region", "lobe",
                       "hemisphere", "mars_category"):
            assert column in table.columns
        dseg = nib.load(out / sub / "anat" / f"{sub}_desc-cmb_dseg.nii.gz")
        labels = set(np.unique(np.asarray(dseg.dataobj)).astype(int)) - {0}
        assert labels == set(table["cmb_id"].astype(int))
        truth = pd.read_csv(bids / "derivatives" / "phantom-truth" / sub / "anat" /
                            f"{sub}_desc-truth_cmb.tsv", sep="\t")
        truth = truth[truth["kind"] == "cmb"]
        if len(truth) == 0:
            assert len(table) <= 1, f"{sub} is a control but has {len(table)} detections"
            continue
        found = 0
        for _, row in truth.iterrows():
            if len(table):
                distance = np.sqrt(((table[["x", "y", "z"]].to_numpy() -
                                     row[["x", "y", "z"]].to_numpy(float)) ** 2).sum(1))
                found += distance.min() <= 3.0
        assert found >= 0.6 * len(truth), f"{sub}: {found}/{len(truth)} CMBs found"


def test_reports_and_group_table(demo):
    out = demo["out"]
    for sub in ("sub-01", "sub-02", "sub-03"):
        page = (out / f"{sub}.html").read_text()
        assert "data:image/png;base64," in page and "MARS category" in page
    group = pd.read_csv(out / "group_cmb.tsv", sep="\t", na_values="n/a")
    assert len(group) == 3
    for sub in group["participant_id"]:
        table = pd.read_csv(out / sub / "anat" / f"{sub}_desc-cmb_cmb.tsv", sep="\t")
        row = group[group["participant_id"] == sub].iloc[0]
        assert int(row["n_cmb"] if "n_cmb" in group else row["total_cmb"]) == len(table)
