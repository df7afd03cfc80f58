"""Finding inputs with pybids: kinds, sessions, runs, acquisitions, filters, sidecars."""

from __future__ import annotations

import json

import pytest

from cmbprep.errors import (BIDSValidationError, DataError, InputMissingError,
                            SelectionError)
from cmbprep.utils import bids as bids_utils

from .conftest import make_tiny_gre_dataset, write_json, write_nifti


def _units(root, subject="01", sessions=None, filter_file=None):
    layout = bids_utils.load_layout(root)
    queries = bids_utils.load_filters(filter_file)
    return bids_utils.collect_inputs(layout, subject, sessions, queries)


def test_single_echo_gre_found_with_metadata(tiny_gre):
    (unit,) = _units(tiny_gre)
    assert unit.kind == "gre"
    assert unit.magnitude[0].endswith("sub-01_part-mag_T2starw.nii.gz")
    assert unit.phase[0].endswith("sub-01_part-phase_T2starw.nii.gz")
    assert unit.echo_times == [0.02]
    assert unit.field_strength == 3.0
    assert unit.phase_units == "rad"
    assert unit.name == "sub-01"


def test_sessions_and_runs_are_separate_units(tmp_path):
    root = make_tiny_gre_dataset(tmp_path / "bids", sessions=("1", "2"), runs=("1", "2"))
    units = _units(root)
    assert sorted(u.name for u in units) == [
        "sub-01_ses-1_run-1", "sub-01_ses-1_run-2", "sub-01_ses-2_run-1",
        "sub-01_ses-2_run-2"]
    only_two = _units(root, sessions=["2"])
    assert {u.entities["session"] for u in only_two} == {"2"}
    with pytest.raises(SelectionError, match="session"):
        _units(root, sessions=["9"])


def test_acquisition_variants_and_megre(tmp_path):
    root = make_tiny_gre_dataset(tmp_path / "bids", acq="highres")
    make_tiny_gre_dataset(tmp_path / "bids", kind="megre", acq="me")
    units = {u.entities["acquisition"]: u for u in _units(root)}
    assert units["highres"].kind == "gre"
    assert units["me"].kind == "megre"
    assert units["me"].echo_times == [0.01, 0.02, 0.03]
    assert [p.rsplit("echo-", 1)[1][0] for p in units["me"].magnitude] == ["1", "2", "3"]
    assert units["me"].phase == []


def test_dataset_with_only_scanner_swi_passes_validation(tmp_path):
    root = make_tiny_gre_dataset(tmp_path / "bids", kind="swi")
    bids_utils.validate_bids_dataset(root)  # *_swi listed in .bidsignore
    (unit,) = _units(root)
    assert unit.kind == "swi" and unit.magnitude[0].endswith("_swi.nii.gz")
    (root / ".bidsignore").unlink()
    with pytest.raises(BIDSValidationError, match="sub-01_swi"):
        bids_utils.validate_bids_dataset(root)


def test_magnitude_only(tmp_path):
    root = make_tiny_gre_dataset(tmp_path / "bids", kind="magnitude")
    (unit,) = _units(root)
    assert unit.kind == "magnitude" and unit.phase == []


def test_broken_sidecar_is_a_data_error_naming_it(tiny_gre):
    sidecar = tiny_gre / "sub-01" / "anat" / "sub-01_part-mag_T2starw.json"
    sidecar.write_text('{"EchoTime": 0.02,')
    with pytest.raises(DataError, match="sub-01_part-mag_T2starw.json"):
        _units(tiny_gre)


def test_sidecar_inheritance_from_dataset_root(tiny_gre):
    write_json(tiny_gre / "T2starw.json", {"MagneticFieldStrength": 7})
    sidecar = tiny_gre / "sub-01" / "anat" / "sub-01_part-mag_T2starw.json"
    sidecar.write_text(json.dumps({"EchoTime": 0.015}))
    (unit,) = _units(tiny_gre)
    assert unit.field_strength == 7.0 and unit.echo_times == [0.015]


def test_non_numeric_echo_time_is_a_data_error(tiny_gre):
    sidecar = tiny_gre / "sub-01" / "anat" / "sub-01_part-mag_T2starw.json"
    sidecar.write_text(json.dumps({"EchoTime": "twenty"}))
    with pytest.raises(DataError, match="EchoTime"):
        _units(tiny_gre)


def test_participant_without_swi_input(tmp_path):
    root = make_tiny_gre_dataset(tmp_path / "bids", kind="t1w-only")
    with pytest.raises(InputMissingError, match="sub-01: no usable SWI input"):
        _units(root)


def test_filter_file_overrides_and_can_select_nothing(tmp_path):
    root = make_tiny_gre_dataset(tmp_path / "bids", acq="a")
    make_tiny_gre_dataset(tmp_path / "bids", acq="b")
    filters = write_json(tmp_path / "f.json", {"mag": {"acquisition": "b"},
                                               "phase": {"acquisition": "b"},
                                               "magnitude": {"acquisition": "b"}})
    assert [u.entities["acquisition"] for u in _units(root, filter_file=filters)] == ["b"]
    nothing = write_json(tmp_path / "n.json", {k: {"acquisition": "zzz"} for k in
                                               bids_utils.DEFAULT_QUERIES})
    with pytest.raises(SelectionError, match="filters"):
        _units(root, filter_file=nothing)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bold": {}}))
    with pytest.raises(DataError, match="unknown filter key"):
        bids_utils.load_filters(bad)


def test_select_subjects(tmp_path):
    root = make_tiny_gre_dataset(tmp_path / "bids", subjects=("01", "02"))
    layout = bids_utils.load_layout(root)
    assert bids_utils.select_subjects(layout, []) == ["01", "02"]
    assert bids_utils.select_subjects(layout, ["02"]) == ["02"]
    with pytest.raises(SelectionError, match="sub-03"):
        bids_utils.select_subjects(layout, ["03"])


def test_invalid_file_name_fails_validation(tiny_gre):
    write_nifti(tiny_gre / "sub-01" / "anat" / "sub-01_notasuffix.nii.gz",
                [[[0.0]]])
    with pytest.raises(BIDSValidationError, match="sub-01_notasuffix"):
        bids_utils.validate_bids_dataset(tiny_gre)


def _four_d_gre(root, echo_times, volumes=3):
    """One 4D magnitude and one 4D phase file holding ``volumes`` echoes, with an
    ``EchoTime`` list in the sidecars (as dcm2niix-style converters may write it)."""
    import numpy as np

    write_json(root / "dataset_description.json", {"Name": "4d", "BIDSVersion": "1.10.0"})
    anat = root / "sub-01" / "anat"
    shape = (16, 16, 12, volumes)
    write_nifti(anat / "sub-01_part-mag_T2starw.nii.gz", np.full(shape, 100.0))
    write_nifti(anat / "sub-01_part-phase_T2starw.nii.gz", np.zeros(shape))
    meta = {"EchoTime": echo_times, "MagneticFieldStrength": 3}
    write_json(anat / "sub-01_part-mag_T2starw.json", meta)
    write_json(anat / "sub-01_part-phase_T2starw.json", {**meta, "Units": "rad"})
    return root


def test_echo_time_list_of_a_4d_file_makes_a_multi_echo_unit(tmp_path):
    (unit,) = _units(_four_d_gre(tmp_path / "bids", [0.01, 0.02, 0.03]))
    assert unit.kind == "megre" and unit.echo_times == [0.01, 0.02, 0.03]
    assert len(unit.magnitude) == 1 and len(unit.phase) == 1


@pytest.mark.parametrize("echo_times, message", [
    ([0.01, 0.02], "EchoTime lists 2 echo times but the image has 3 volumes"),
    ([0.01, "x", 0.03], "EchoTime='x' is not a number"),
    ([0.01, 0.01, 0.03], "echoes share the same EchoTime"),
    ([], "EchoTime is an empty list"),
])
def test_echo_time_list_problems_are_reported_plainly(tmp_path, echo_times, message):
    root = _four_d_gre(tmp_path / "bids", echo_times)
    with pytest.raises(DataError, match=message) as err:
        _units(root)
    assert "sub-01_part-mag_T2starw" in str(err.value)
