"""Derivative names, the datasink, summaries and report figures."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cmbprep.interfaces.bids import DerivativesDataSink
from cmbprep.utils.paths import derivative_path
from cmbprep.reports.participant import (plot_detection_mosaic, render_unit_section,
                                         summarize_cmbs)

from .conftest import write_nifti


@pytest.mark.parametrize("entities,suffix,ext,datatype,expected", [
    ({"subject": "01", "desc": "preproc"}, "swi", ".nii.gz", "anat",
     "sub-01/anat/sub-01_desc-preproc_swi.nii.gz"),
    ({"subject": "01", "session": "1", "run": "2", "part": "phase", "desc": "filtered"},
     "swi", ".nii.gz", "anat", "sub-01/ses-1/anat/sub-01_ses-1_run-2_part-phase_desc-filtered_swi.nii.gz"),
    ({"subject": "01", "acquisition": "hr", "atlas": "cmbprepLobes"}, "dseg", ".tsv", "anat",
     "sub-01/anat/sub-01_acq-hr_atlas-cmbprepLobes_dseg.tsv"),
    ({"subject": "01", "from": "MNI152NLin2009cSym", "to": "swi", "mode": "image"}, "xfm",
     ".h5", "anat", "sub-01/anat/sub-01_from-MNI152NLin2009cSym_to-swi_mode-image_xfm.h5"),
    ({"subject": "01", "label": "CMB"}, "mask", ".nii.gz", "anat",
     "sub-01/anat/sub-01_label-CMB_mask.nii.gz"),
])
def test_derivative_path(entities, suffix, ext, datatype, expected):
    assert derivative_path(entities, suffix, ext, datatype).as_posix() == expected


def test_derivative_path_rejects_unknown_entity():
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        derivative_path({"subject": "01", "colour": "red"}, "swi", ".nii.gz")


def test_datasink_writes_file_and_sidecar_atomically(tmp_path):
    src = write_nifti(tmp_path / "in.nii.gz", np.ones((4, 4, 4)))
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps({"score": {"Description": "a score"}}))
    sink = DerivativesDataSink(base_directory=str(tmp_path / "out"), in_file=str(src),
                               entities={"subject": "01", "session": "a"}, desc="minip",
                               suffix="swi", meta_dict={"SlabThickness": 8.0},
                               source_files=["bids:raw:sub-01/anat/x.nii.gz"],
                               sidecar=str(columns))
    result = sink.run(cwd=str(tmp_path))
    out = tmp_path / "out" / "sub-01" / "ses-a" / "anat" / "sub-01_ses-a_desc-minip_swi.nii.gz"
    assert result.outputs.out_file == str(out) and out.exists()
    meta = json.loads(out.with_name("sub-01_ses-a_desc-minip_swi.json").read_text())
    assert meta == {"SlabThickness": 8.0, "Sources": ["bids:raw:sub-01/anat/x.nii.gz"],
                    "score": {"Description": "a score"}}
    assert not list(out.parent.glob(".*tmp*"))  # no temporary files left


def _cmb_table(path, rows):
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def test_summary_counts_and_qc_flags(tmp_path):
    cmb = _cmb_table(tmp_path / "cmb.tsv", [
        {"cmb_id": 1, "x": 0, "y": 0, "z": 0, "volume_mm3": 10.0, "region": "frontal",
         "lobe": "frontal", "hemisphere": "left", "mars_category": "lobar"},
        {"cmb_id": 2, "x": 5, "y": 0, "z": 0, "volume_mm3": 5.5, "region": "thalamus",
         "lobe": None, "hemisphere": "right", "mars_category": "deep"},
        {"cmb_id": 3, "x": 9, "y": 0, "z": 0, "volume_mm3": 2.0, "region": "frontal",
         "lobe": "frontal", "hemisphere": "right", "mars_category": "lobar"},
    ])
    candidates = _cmb_table(tmp_path / "cand.tsv", [{"status": s} for s in
                                                    ("cmb", "cmb", "cmb", "review", "rejected")])
    summary = summarize_cmbs(cmb, candidates, {"subject": "01", "entities": {"run": "2"},
                                               "kind": "gre"},
                             {"voxel_size_mm": [1.5, 1.5, 1.5]},
                             {"registration_ok": False,
                              "registration_warnings": ["low mask overlap"],
                              "regions_not_covered": ["cerebellum"]},
                             {"detector": "cmbprep", "phase_artefact_zone_cm3": 12.5})
    assert summary["n_cmb"] == 3 and summary["n_candidates"] == 5 and summary["n_review"] == 1
    assert summary["phase_artefact_zone_cm3"] == 12.5
    assert summary["counts_by_mars"] == {"lobar": 2, "deep": 1, "infratentorial": 0,
                                         "not_assigned": 0}
    assert summary["counts_by_lobe"] == {"frontal": 2, "not_assigned": 1}
    assert summary["total_volume_mm3"] == pytest.approx(17.5)
    assert summary["registration_ok"] is False
    assert summary["regions_not_covered"] == ["cerebellum"]
    assert summary["run"] == "2" and summary["participant_id"] == "sub-01"


def test_mosaic_marks_detections_in_any_storage_order(tmp_path):
    data = np.full((40, 40, 30), 100.0, dtype=np.float32)
    data[20, 10, 15] = 0.0
    affine = np.array([[-2.0, 0, 0, 40], [0, 2.0, 0, -40], [0, 0, 2.0, -30], [0, 0, 0, 1]])
    img_path = tmp_path / "minip.nii.gz"
    nib.Nifti1Image(data, affine).to_filename(img_path)
    xyz = affine @ [20, 10, 15, 1]
    cmb = _cmb_table(tmp_path / "cmb.tsv", [{"cmb_id": 1, "x": xyz[0], "y": xyz[1],
                                             "z": xyz[2]}])
    png = plot_detection_mosaic(img_path, cmb, tmp_path / "m.png")
    assert png.stat().st_size > 1000
    html = render_unit_section({"participant_id": "sub-01", "n_cmb": 1,
                                "counts_by_mars": {"lobar": 1}, "protocol": {}}, png, cmb)
    assert "data:image/png;base64," in html and "<b>1</b>" in html


def test_every_expected_output_is_documented():
    """Each file of tests/data/expected_outputs.txt is named in docs/outputs.rst or group.rst."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[1]
    docs = (root / "docs" / "outputs.rst").read_text() + (root / "docs" / "group.rst").read_text()
    expected = [line.strip() for line in (root / "tests" / "data" /
                                          "expected_outputs.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    undocumented = []
    for rel in expected:
        name = rel.rsplit("/", 1)[-1]
        pattern = re.sub(r"^sub-[0-9a-zA-Z]+(_ses-[0-9a-zA-Z]+)?", "<prefix>", name)
        if name.startswith("sub-") and name.endswith(".html"):
            pattern = "sub-<label>.html"
        candidates = {pattern, name}
        if pattern.endswith(".json") and not pattern.endswith("_summary_cmb.json"):
            continue  # sidecars are covered by "every image and table has a JSON sidecar"
        if not any(c in docs for c in candidates):
            undocumented.append(rel)
    assert not undocumented, f"not in docs/outputs.rst or docs/group.rst: {undocumented}"


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    """Outputs are readable like files from open() (umask applies), not owner-only."""
    import os
    import stat

    from cmbprep.utils.io import copy_atomic, write_text_atomic

    mask = os.umask(0o022)
    os.umask(mask)
    expected = 0o666 & ~mask
    a = write_text_atomic(tmp_path / "a.tsv", "x\n")
    b = copy_atomic(a, tmp_path / "b.tsv")
    plain = tmp_path / "plain.tsv"
    plain.write_text("x\n")
    for path in (a, b):
        assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == expected


def test_utils_and_reports_import_no_nipype():
    """Layers: utils and reports are importable without Nipype (nor the interfaces)."""
    import subprocess
    import sys

    code = ("import sys, cmbprep.utils.derivatives, cmbprep.utils.paths, "
            "cmbprep.reports.participant, cmbprep.reports.group, cmbprep.group; "
            "print([m for m in sys.modules if m.startswith(('nipype', 'cmbprep.interfaces'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_container_type_is_detected_at_run_time(tmp_path):
    from cmbprep.utils.derivatives import container_info

    bare = tmp_path / "bare"
    bare.mkdir()
    assert container_info({}, bare) is None
    image = {"CMBPREP_CONTAINER_TAG": "cmbprep:9.9"}
    assert container_info(image, bare) == {"Type": "oci", "Tag": "cmbprep:9.9"}
    apptainer = {**image, "APPTAINER_CONTAINER": "/scratch/cmbprep.sif",
                 "APPTAINER_NAME": "cmbprep.sif"}
    assert container_info(apptainer, bare) == {"Type": "apptainer", "Tag": "cmbprep:9.9"}
    assert container_info({**image, "SINGULARITY_CONTAINER": "/x/c.sif"},
                          bare) == {"Type": "singularity", "Tag": "cmbprep:9.9"}
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / ".dockerenv").touch()
    assert container_info(image, docker) == {"Type": "docker", "Tag": "cmbprep:9.9"}
    # a venv run inside some other container is not a run of the cmbprep image
    assert container_info({}, docker) is None
    assert container_info({"APPTAINER_CONTAINER": "/x/other.sif"}, bare) is None
    podman = tmp_path / "podman"
    (podman / "run").mkdir(parents=True)
    (podman / "run" / ".containerenv").touch()
    assert container_info(image, podman) == {"Type": "podman", "Tag": "cmbprep:9.9"}


def test_dataset_links_name_no_host_path(tmp_path):
    from cmbprep.config import Settings
    from cmbprep.utils.derivatives import dataset_description

    settings = Settings(bids_dir=tmp_path / "study" / "bids",
                        output_dir=tmp_path / "study" / "derivatives" / "cmbprep")
    description = dataset_description(settings)
    assert description["DatasetLinks"] == {"raw": "../../bids"}
    assert str(tmp_path) not in json.dumps(description)


def test_participant_report_shows_input_and_detection_warnings(tmp_path):
    """Warnings of the summary JSON (the SWI's, the detector's, and the input fallbacks
    the commit adds) appear in the report's warnings box."""
    import re

    from cmbprep.reports.participant import assemble_participant_reports
    from cmbprep.utils.bids import SWIInput
    from cmbprep.utils.derivatives import commit_unit

    anat = tmp_path / "staging" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    cmb = _cmb_table(anat / "sub-01_desc-cmb_cmb.tsv", [
        {"cmb_id": 1, "x": 0, "y": 0, "z": 0, "volume_mm3": 10.0, "region": "frontal",
         "lobe": "frontal", "hemisphere": "left", "mars_category": "lobar"}])
    swi_meta = {"Handedness": "left", "HandednessDetection": {
        "Method": "pole-minus-equator inside the brain mask (second pass)",
        "InBrain": {"Handedness": "left", "Changed": True},
        "FirstPass": {"Handedness": "right", "Method": "veins"}}}
    summary = summarize_cmbs(cmb, None, {"subject": "01", "kind": "gre"}, swi_meta, {},
                             {"detector": "cmbprep",
                              "warnings": ["phase sign conflicts with the veins: phase "
                                           "dropped <b>"]})
    assert summarize_cmbs(cmb, None, {"subject": "01", "kind": "gre"}, {}, {},
                          {})["swi_warnings"] == []
    (anat / "sub-01_desc-summary_cmb.json").write_text(json.dumps(summary))
    out = tmp_path / "out"
    commit_unit(tmp_path / "staging", out, {"subject": "01"}, {"swi_power": 4},
                warnings=["ses-2: no phase selected, ran magnitude-only"])
    written = json.loads((out / "sub-01" / "anat" /
                          "sub-01_desc-summary_cmb.json").read_text())
    assert written["input_warnings"] == ["ses-2: no phase selected, ran magnitude-only"]
    unit = SWIInput(subject="01", kind="gre", magnitude=["m.nii.gz"])
    [report] = assemble_participant_reports(out, [unit])
    page = report.read_text()
    box = re.search(r"<div class='warnbox'>.*?</div>", page, flags=re.DOTALL)
    assert box, "no warnings box"
    assert "input: ses-2: no phase selected, ran magnitude-only" in box.group(0)
    assert "phase sign conflicts with the veins: phase dropped &lt;b&gt;" in box.group(0)
    assert ("SWI: phase convention: &#x27;right&#x27; before brain extraction, "
            "&#x27;left&#x27; inside the brain" in box.group(0)), box.group(0)


def test_methods_boilerplate_says_which_echoes_made_the_swi():
    """logs/CITATION.md describes the multi-echo handling that ran (--megre-echoes) and
    every placeholder is filled."""
    from cmbprep.config import Settings
    from cmbprep.utils.derivatives import citation_text

    longest = citation_text(Settings())
    fit = citation_text(Settings(megre_echoes="fit"))
    assert "longest echo time was used alone" in longest and "linear fit" not in longest
    assert "weighted linear fit" in fit and "longest echo" not in fit
    for text in (longest, fit):
        assert "{" not in text and "}" not in text
