"""The output-comparison tool used to show that a refactoring changed no result."""

import json

import h5py
import numpy as np

from cmbprep.testing.compare_derivatives import compare, main


def _write_tree(root, *, duration=1.0, uuid="a", transform=(1.0, 2.0), h5_attr="t0",
                mask_byte=b"\x00", extra_json=None):
    anat = root / "derivatives" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (root / "bids").mkdir()
    (root / "bids" / "participants.tsv").write_text("participant_id\nsub-01\n")
    sidecar = {"registration": {"nmi": 1.18, "duration_s": {"linear": duration}}}
    sidecar.update(extra_json or {})
    (anat / "sub-01_dseg.json").write_text(json.dumps(sidecar))
    (anat / "sub-01_mask.nii.gz").write_bytes(b"NIFTI" + mask_byte)
    with h5py.File(anat / "sub-01_xfm.h5", "w") as handle:
        handle["TransformGroup/0/TransformParameters"] = np.asarray(transform)
        handle.attrs["created"] = h5_attr  # stands in for HDF5's own timestamps
    logs = root / "derivatives" / "logs"
    logs.mkdir()
    (logs / f"config-{uuid}.toml").write_text(f'detector = "cmbprep"\nrun_uuid = "{uuid}"\n')


def test_same_results_with_other_timings_compare_equal(tmp_path):
    _write_tree(tmp_path / "old")
    _write_tree(tmp_path / "new", duration=9.5, uuid="b", h5_attr="t1")
    assert compare(tmp_path / "old", tmp_path / "new") == 0
    assert main([str(tmp_path / "old"), str(tmp_path / "new")]) == 0


def test_each_kind_of_real_difference_is_found(tmp_path):
    _write_tree(tmp_path / "old")
    cases = {"transform": {"transform": (1.0, 2.000001)},
             "sidecar": {"extra_json": {"n_candidates": 3}},
             "image": {"mask_byte": b"\x01"}}
    for name, change in cases.items():
        _write_tree(tmp_path / name, **change)
        assert compare(tmp_path / "old", tmp_path / name) == 1, name
    assert main([str(tmp_path / "old"), str(tmp_path / "image")]) == 1


def test_missing_file_is_a_difference(tmp_path):
    _write_tree(tmp_path / "old")
    _write_tree(tmp_path / "new")
    (tmp_path / "new" / "derivatives" / "sub-01" / "anat" / "sub-01_mask.nii.gz").unlink()
    assert compare(tmp_path / "old", tmp_path / "new") == 1
