"""The install-time atlas build: the shipped template-to-template field and its storage."""

from __future__ import annotations

import importlib.util

import nibabel as nib
import numpy as np
import pytest

from cmbprep.algorithms import lobes
from cmbprep.algorithms import registration as reg
from cmbprep.algorithms.lobes import build


def _blob_image(shape=(40, 44, 36), voxel=2.0):
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = -np.array(shape) * voxel / 2
    grid = np.indices(shape).astype(float)
    centre = np.array(shape) / 2 + np.array([3.0, -2.0, 1.0])
    data = np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / 30.0).astype(np.float32)
    return nib.Nifti1Image(data, affine)


def test_store_field_matches_the_ants_transform(tmp_path):
    """An ANTs affine stored as the int16 displacement field resamples like the affine
    itself; the stored field is cropped to the mask (+ margin) and quantised."""
    img = _blob_image()
    mask = nib.Nifti1Image((np.asarray(img.dataobj) > 0.05).astype(np.uint8), img.affine)
    xfm = reg.antsregistration.write_translation(tmp_path / "t.mat",
                                                 np.array([3.3, -1.7, 2.2]))
    out = build.store_field(xfm, img, mask, tmp_path / "field.nii.gz", margin_mm=4.0)
    stored = nib.load(out)
    assert stored.get_data_dtype() == np.int16
    assert stored.header.get_intent()[0] == "vector"
    assert stored.shape[3:] == (1, 3) and all(
        s < f for s, f in zip(stored.shape[:3], img.shape))
    disp = stored.get_fdata().reshape(-1, 3)
    # every displacement is the translation (ITK LPS mm), to the storage step
    np.testing.assert_allclose(disp, np.tile([3.3, -1.7, 2.2], (len(disp), 1)),
                               atol=build.TRANSFORM_STEP_MM)
    field = build._load_field(out, tmp_path)
    via_field = reg.apply_transform(img, img, [field], interpolation="linear")
    via_affine = reg.apply_transform(img, img, [xfm], interpolation="linear")
    inside = np.asarray(mask.dataobj) > 0
    a = np.asarray(via_field.dataobj)[inside]
    b = np.asarray(via_affine.dataobj)[inside]
    assert np.abs(a - b).max() < 0.02 * np.abs(b).max()


def test_shipped_field_is_in_the_package():
    field = lobes.ATLAS_DIR / build.TRANSFORM_FILE
    assert field.is_file(), "the 2009cAsym->2009aSym field must ship with cmbprep"
    img = nib.load(field)
    assert img.get_data_dtype() == np.int16 and img.shape[3:] == (1, 3)
    tpl, _ = reg.load_template(1.0)
    # it covers the template brain: its grid spans the template's brain box
    corners = nib.affines.apply_affine(img.affine, [[0, 0, 0], np.array(img.shape[:3]) - 1])
    assert np.all(np.abs(corners[0] - corners[1]) > 120)


@pytest.mark.skipif(importlib.util.find_spec("deepmriprep") is None,
                    reason="deepmriprep (atlas sources) not installed")
def test_build_with_shipped_field_gives_the_installed_atlas(tmp_path):
    """`python -m cmbprep.algorithms.lobes` with the shipped field rebuilds the same
    atlas, and prints one line per step."""
    lines = []
    path = lobes.build_atlas(tmp_path, progress=lines.append)
    assert [line[:5] for line in lines] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    new = np.asarray(nib.load(path).dataobj)
    if lobes.atlas_available():
        installed = np.asarray(nib.load(lobes.ATLAS_DIR / lobes.ATLAS_FILE).dataobj)
        assert np.array_equal(new, installed)
    tpl, mask = reg.load_template(1.0)
    inside = np.asarray(mask.dataobj) > 0
    assert (new[inside] > 0).all() and (new[~inside] == 0).all()
    assert set(np.unique(new[inside])) <= set(lobes.lookup_table()["index"])
