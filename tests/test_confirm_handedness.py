"""Step 5 of the SWI chain: the phase convention decided again inside the brain mask,
as a pure function and as the Nipype node that makes the SWI and minIP again when the
convention changes (and passes its inputs on untouched when it does not)."""

import os

import nibabel as nib
import numpy as np
import pytest

from cmbprep.algorithms import swi as S
from cmbprep.algorithms.mip import sliding_minip
from cmbprep.interfaces.swi import ConfirmHandedness
from cmbprep.testing.phantom import PhantomConfig, simulate_subject

OTHER = {"left": "right", "right": "left"}


@pytest.fixture(scope="module")
def phantom():
    # 2 mm whole head, one echo at 20 ms, 3 T, random storage order; phase_sign=+1 is
    # cmbprep's "left" convention (negating the phase gives "right")
    config = PhantomConfig(voxel_size_mm=(2.0, 2.0, 2.0), echo_times_s=(0.020,),
                           n_cmbs=6, phase_sign=1)
    return simulate_subject(config, seed=1)


@pytest.fixture(scope="module", params=[(1, "left"), (-1, "right")])
def chain(request, phantom):
    sign, expected = request.param
    out = S.process_swi(phantom.magnitude, sign * phantom.phase, phantom.affine,
                        input_kind="gre", echo_times=[0.02], handedness=expected)
    return out, expected


def test_in_brain_convention_corrects_a_wrong_first_pass(chain, phantom):
    out, expected = chain
    for first in (expected, OTHER[expected]):
        used, meta = S.confirm_handedness_in_brain(
            out["magnitude"], out["filtered_phase"], phantom.affine, phantom.brain_mask,
            first)
        assert used == expected and meta["Handedness"] == expected
        assert meta["Changed"] is (first != expected)
        assert meta["DarkVoxels"] >= 20
        # the score's sign is the convention's (left: positive pole-minus-equator)
        assert meta["Score"] * (1 if expected == "left" else -1) > 0


def test_without_dark_voxels_the_first_pass_stands(chain, phantom):
    out, expected = chain
    tiny = np.zeros(phantom.brain_mask.shape, bool)
    tiny[tuple(s // 2 for s in tiny.shape)] = True  # one voxel: no decision
    used, meta = S.confirm_handedness_in_brain(
        out["magnitude"], out["filtered_phase"], phantom.affine, tiny, OTHER[expected])
    assert used == OTHER[expected] and meta["Handedness"] == "n/a"
    assert meta["Changed"] is False
    with pytest.raises(ValueError, match="handedness"):
        S.confirm_handedness_in_brain(out["magnitude"], out["filtered_phase"],
                                      phantom.affine, phantom.brain_mask, "n/a")


def _save(data, affine, path):
    nib.Nifti1Image(np.asarray(data, np.float32), affine).to_filename(path)
    return str(path)


def _node_inputs(tmp_path, out, phantom, first):
    """Files as the SWI workflow hands them on, with ``first`` as step 2's convention."""
    affine = phantom.affine
    swi = S.compute_swi(out["magnitude"], out["filtered_phase"], handedness=first)
    return {"swi": _save(swi, affine, tmp_path / "swi.nii.gz"),
            "minip": _save(sliding_minip(swi, affine, 8.0), affine, tmp_path / "minip.nii.gz"),
            "magnitude": _save(out["magnitude"], affine, tmp_path / "mag.nii.gz"),
            "filtered_phase": _save(out["filtered_phase"], affine, tmp_path / "ph.nii.gz"),
            "brain_mask": _save(phantom.brain_mask, affine, tmp_path / "brain.nii.gz"),
            "handedness": first,
            "swi_meta": {"Handedness": first,
                         "HandednessDetection": {"Method": "veins", "Score": 0.1}}}


def test_node_makes_the_swi_again_with_the_convention_found_in_the_brain(
        tmp_path, chain, phantom):
    out, expected = chain
    inputs = _node_inputs(tmp_path, out, phantom, OTHER[expected])
    before = {k: os.path.getmtime(inputs[k]) for k in ("swi", "minip", "magnitude")}
    os.chdir(tmp_path)  # the inputs' directory: the node must not write over them
    result = ConfirmHandedness(**inputs, slab_mm=8.0).run().outputs
    assert result.handedness == expected
    assert result.swi != inputs["swi"] and result.minip != inputs["minip"]
    swi = np.asarray(nib.load(result.swi).dataobj, np.float32)
    right = S.compute_swi(out["magnitude"], out["filtered_phase"], handedness=expected)
    np.testing.assert_allclose(swi, right, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(nib.load(result.minip).dataobj),
                               sliding_minip(right, phantom.affine, 8.0), rtol=1e-6)
    meta = result.swi_meta
    assert meta["Handedness"] == expected
    detection = meta["HandednessDetection"]
    assert detection["FirstPass"] == {"Handedness": OTHER[expected], "Method": "veins"}
    assert detection["InBrain"]["Changed"] is True
    assert "second pass" in detection["Method"]
    # inputs are never modified
    assert before == {k: os.path.getmtime(inputs[k]) for k in before}
    np.testing.assert_array_equal(
        np.asarray(nib.load(inputs["swi"]).dataobj, np.float32),
        S.compute_swi(out["magnitude"], out["filtered_phase"], handedness=OTHER[expected]))


def test_node_passes_its_inputs_on_when_nothing_changes(tmp_path, chain, phantom):
    out, expected = chain
    inputs = _node_inputs(tmp_path, out, phantom, expected)
    os.chdir(tmp_path)
    result = ConfirmHandedness(**inputs).run().outputs
    assert (result.swi, result.minip, result.handedness) == (
        inputs["swi"], inputs["minip"], expected)
    assert result.swi_meta["HandednessDetection"]["InBrain"]["Changed"] is False
    assert "FirstPass" not in result.swi_meta["HandednessDetection"]
    # a convention asked for, or no phase: nothing is checked
    (tmp_path / "wrong").mkdir()
    wrong = _node_inputs(tmp_path / "wrong", out, phantom, OTHER[expected])
    for extra in ({"requested": OTHER[expected]}, {"filtered_phase": "n/a"}):
        result = ConfirmHandedness(**{**wrong, **extra}).run().outputs
        assert (result.swi, result.handedness) == (wrong["swi"], OTHER[expected])
        assert result.swi_meta == wrong["swi_meta"]
