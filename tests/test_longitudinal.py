"""Follow-up sessions: matching and labelling (arrays), session registration (real
ANTsPy), and a simulated participant scanned twice through ``cmbprep ... participant``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cmbprep.algorithms.longitudinal import (SessionLesions, count_per_session,
                                             label_lesions, match_one_to_one,
                                             matching_tolerance_mm, track_lesions)
from cmbprep.algorithms.registration import (map_points, points_in_field_of_view,
                                             register_sessions)
from cmbprep.algorithms.registration.antsregistration import write_translation
from cmbprep.cli.run import main
from cmbprep.testing.longitudinal import write_longitudinal_dataset
from cmbprep.testing.scoring import match_detections
from cmbprep.utils.tables import read_tsv
from tests.test_review import browser  # noqa: F401 - fixture


# --------------------------------------------------------------------------------------
# Matching and labels
# --------------------------------------------------------------------------------------
def test_matching_tolerance_grows_with_both_voxel_sizes():
    assert matching_tolerance_mm((0.5, 0.5, 1.0), (0.9, 0.9, 2.0)) == pytest.approx(
        2.0 + 0.5 * (np.sqrt(1.5) + np.sqrt(5.62)))
    assert matching_tolerance_mm((1, 1, 1), (1, 1, 1), registration_mm=0) == \
        pytest.approx(np.sqrt(3))


def test_one_to_one_matching_minimises_total_distance_within_tolerance():
    # greedy nearest-first would pair a0-b0 (1 mm) and leave a1 (3.5 mm from b0) alone
    a = [[0, 0, 0], [3.4, 0, 0]]
    b = [[1, 0, 0], [-1.5, 0, 0]]
    assert sorted(match_one_to_one(a, b, 3.0)) == [(0, 1), (1, 0)]
    assert match_one_to_one(a, [[20, 0, 0]], 3.0) == []
    assert match_one_to_one([], b, 3.0) == []


def _session(ses, xyz, covered_x_below=None, voxel=(1, 1, 1)):
    def covers(points):
        return np.asarray(points)[:, 0] < covered_x_below

    return SessionLesions(session_id=ses, xyz_mm=np.asarray(xyz, float).reshape(-1, 3),
                          voxel_size_mm=voxel,
                          covers=None if covered_x_below is None else covers,
                          score=np.linspace(0.5, 0.9, len(xyz)),
                          volume_mm3=np.full(len(xyz), 10.0))


def test_lesions_followed_over_three_sessions_with_partial_coverage():
    # A at x=0 in all; B at x=20 gone in ses-2 and 3; C appears in ses-2 (x=40);
    # D at x=80 is only in ses-1, which alone covers x >= 60.
    ses1 = _session("ses-1", [[0, 0, 0], [20, 0, 0], [80, 0, 0]])
    ses2 = _session("ses-2", [[0.8, 0.4, 0], [40, 1, 0]], covered_x_below=60)
    ses3 = _session("ses-3", [[41, 0.5, 0.5], [-0.6, 0, 0]], covered_x_below=60)
    lesions = track_lesions([ses1, ses2, ses3])
    by_x = lesions.set_index(lesions["x"].round(-1).astype(int))
    assert by_x.loc[0, "label"] == "persistent"
    assert by_x.loc[20, "label"] == "not_seen_again"
    assert by_x.loc[40, "label"] == "new" and by_x.loc[40, "first_seen"] == "ses-2"
    assert by_x.loc[80, "label"] == "not_assessable"
    assert list(by_x.loc[80, ["ses-1_status", "ses-2_status", "ses-3_status"]]) == [
        "found", "not_covered", "not_covered"]
    assert by_x.loc[0, "x"] == pytest.approx((0 + 0.8 - 0.6) / 3)
    assert by_x.loc[40, "ses-3_source_id"] == 1 and by_x.loc[40, "ses-2_source_id"] == 2
    counts = count_per_session(lesions, ["ses-1", "ses-2", "ses-3"]).set_index(
        "session_id")
    assert counts.loc["ses-1", ["n_cmb", "n_persistent", "n_not_covered"]].tolist() == [
        3, 0, 0]
    assert np.isnan(counts.loc["ses-1", "n_new"])
    assert counts.loc["ses-2"].drop("n_new").tolist() == [2, 1, 1, 1]
    assert counts.loc["ses-2", "n_new"] == 1 and counts.loc["ses-3", "n_new"] == 0
    assert counts.loc["ses-3", ["n_cmb", "n_persistent", "n_not_seen_again"]].tolist() == [
        2, 2, 1]


def test_a_lesion_outside_the_tolerance_is_a_new_lesion():
    far = matching_tolerance_mm((1, 1, 1), (1, 1, 1)) + 0.2
    lesions = track_lesions([_session("ses-1", [[0, 0, 0]]),
                             _session("ses-2", [[far, 0, 0]])])
    assert sorted(lesions["label"]) == ["new", "not_seen_again"]


@pytest.mark.parametrize(("statuses", "label"), [
    (["found", "found"], "persistent"),
    (["found", "not_found", "found"], "persistent"),
    (["not_found", "found"], "new"),
    (["not_covered", "found", "not_found"], "not_seen_again"),
    (["not_covered", "found"], "not_assessable"),
    (["found", "not_covered"], "not_assessable"),
])
def test_labels(statuses, label):
    assert label_lesions(statuses) == label


# --------------------------------------------------------------------------------------
# Session registration (real ANTsPy)
# --------------------------------------------------------------------------------------
def _rotation(degrees_about_z, translation):
    t = np.deg2rad(degrees_about_z)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    matrix[:3, 3] = translation
    return matrix


@pytest.fixture(scope="module")
def moved_session(tmp_path_factory):
    """The phantom scanned once, and the same image with the head moved: rotated 6
    degrees about z and shifted, so a point p of the first scan is at M p in the second."""
    from cmbprep.testing.phantom import simulate_subject
    from cmbprep.testing.phantom.config import PhantomConfig

    ph = simulate_subject(PhantomConfig.from_protocol("small"), seed=11)
    magnitude = nib.Nifti1Image(ph.magnitude[..., 0].astype(np.float32), ph.affine)
    mask = nib.Nifti1Image(ph.brain_mask.astype(np.uint8), ph.affine)
    motion = _rotation(6.0, (4.0, -3.0, 2.5))
    moved = nib.Nifti1Image(np.asarray(magnitude.dataobj), motion @ ph.affine)
    moved_mask = nib.Nifti1Image(np.asarray(mask.dataobj), motion @ ph.affine)
    out = tmp_path_factory.mktemp("register")
    result = register_sessions(magnitude, mask, moved, moved_mask, out / "s_", seed=0)
    return {"ph": ph, "motion": motion, "result": result, "mask": mask,
            "moved": moved}


def test_session_registration_recovers_a_known_head_movement(moved_session):
    result, motion = moved_session["result"], moved_session["motion"]
    truth = moved_session["ph"].truth
    points = truth[["x", "y", "z"]].to_numpy(float)
    expected = nib.affines.apply_affine(motion, points)
    # forward maps reference points to later-session points; inverse maps them back
    assert np.abs(map_points(points, result.forward) - expected).max() < 0.75
    assert np.abs(map_points(expected, result.inverse) - points).max() < 0.75
    assert result.residual_mm < 0.75 and result.ok
    assert result.qc()["registration_ok"] is True and result.nmi > 1.1


_DETERMINISM_SCRIPT = """
import sys, numpy as np, nibabel as nib
from cmbprep.algorithms import registration as reg
folder = sys.argv[1]
images = [nib.load(f"{folder}/{name}.nii.gz") for name in ("ref", "ref_mask", "mov",
                                                           "mov_mask")]
result = reg.register_sessions(*images, sys.argv[2] + "/s_", seed=3, resolution_mm=3.0)
np.save(sys.argv[2] + "/mapped.npy", reg.map_points(np.load(f"{folder}/pts.npy"),
                                                    result.forward))
"""


def test_session_registration_is_deterministic(moved_session, tmp_path):
    """Same inputs + seed + one ITK thread (each run in its own process, as a Nipype
    node runs) -> bit-identical transforms. On a 3 mm grid to keep it short: what could
    differ between runs (threads, metric sampling) does not depend on the grid."""
    import os
    import subprocess
    import sys

    ph = moved_session["ph"]
    nib.save(nib.Nifti1Image(ph.magnitude[..., 0].astype(np.float32), ph.affine),
             tmp_path / "ref.nii.gz")
    nib.save(moved_session["mask"], tmp_path / "ref_mask.nii.gz")
    moved = moved_session["moved"]
    nib.save(moved, tmp_path / "mov.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(moved_session["mask"].dataobj), moved.affine),
             tmp_path / "mov_mask.nii.gz")
    np.save(tmp_path / "pts.npy", ph.truth[["x", "y", "z"]].to_numpy(float))
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1")
    mapped = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT, str(tmp_path),
                        str(tmp_path / run)], env=env, check=True)
        mapped.append(np.load(tmp_path / run / "mapped.npy"))
    np.testing.assert_array_equal(mapped[0], mapped[1])


def test_field_of_view_check_in_mm_through_a_transform(tmp_path):
    affine = np.diag([2.0, 2.0, 4.0, 1.0])  # voxels 0..9 x 0..9 x 0..4: x in [-1, 19]
    points = [[5, 5, 5], [16, 5, 5], [-5, 5, 5], [18.5, 5, 5]]
    assert points_in_field_of_view(points, (10, 10, 5), affine).tolist() == [
        True, True, False, False]
    assert points_in_field_of_view(points, (10, 10, 5), affine, margin_mm=0).tolist() == [
        True, True, False, True]
    # a transform that maps reference points 10 mm to the right (RAS; ANTs is LPS)
    shift = write_translation(tmp_path / "shift.mat", np.array([-10.0, 0.0, 0.0]))
    assert np.allclose(map_points([[0, 0, 0]], shift), [[10, 0, 0]])
    assert points_in_field_of_view([[-5, 5, 5], [10, 5, 5]], (10, 10, 5), affine,
                                   transform=shift).tolist() == [True, False]


# --------------------------------------------------------------------------------------
# A participant scanned twice, through the CLI
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def followed(tmp_path_factory):
    root = tmp_path_factory.mktemp("followup")
    bids = write_longitudinal_dataset(root / "bids", n_subjects=1, seed=3, n_persistent=4,
                                      new_per_session=(0, 2),
                                      config_overrides={"cmb_radius_mm": (0.9, 1.5)})
    out, work = root / "out", root / "work"
    args = [str(bids), str(out), "participant", "-w", str(work), "--nprocs", "2",
            "--omp-nthreads", "1"]
    assert main(args) == 0
    return {"bids": bids, "out": out, "work": work, "args": args}


def _truth_labels_found(followed, lesions):
    """Truth label of each followed lesion (None for a false detection), matched in
    ses-02's space, where every simulated lesion exists."""
    bids, anat = followed["bids"], followed["out"] / "sub-01" / "anat"
    truth_dir = bids / "derivatives" / "phantom-truth" / "sub-01"
    labels = read_tsv(truth_dir / "sub-01_desc-longitudinal_cmb.tsv")["label"].tolist()
    truth = read_tsv(truth_dir / "ses-02" / "anat" / "sub-01_ses-02_desc-truth_cmb.tsv")
    forward = anat / "sub-01_from-ses02_to-ses01_mode-image_xfm.h5"
    in_ses2 = map_points(lesions[["x", "y", "z"]].to_numpy(float), forward)
    pairs = dict(match_detections(in_ses2, truth[["x", "y", "z"]].to_numpy(float), 4.0))
    return [labels[pairs[i]] if i in pairs else None for i in range(len(lesions))]


def test_followed_lesions_carry_the_simulated_labels(followed):
    anat = followed["out"] / "sub-01" / "anat"
    sessions = read_tsv(anat / "sub-01_desc-sessions_cmb.tsv")
    lesions = read_tsv(anat / "sub-01_desc-longitudinal_cmb.tsv")
    assert list(sessions["session_id"]) == ["ses-01", "ses-02"]
    assert sessions["interval_days"].iloc[1] == pytest.approx(183.0)
    assert sessions["registration_residual_mm"].iloc[1] < 1.5
    assert list(sessions["count_source"]) == ["automatic", "automatic"]
    truth = _truth_labels_found(followed, lesions)
    assert truth.count("persistent") >= 3 and truth.count("new") == 2, truth
    for found, expected in zip(lesions["label"], truth, strict=True):
        if expected is not None:
            assert found == expected
    assert sessions["n_new"].iloc[1] == (lesions["label"] == "new").sum()
    assert sessions["n_new"].iloc[1] - truth.count("new") <= 1  # at most one false new


def test_longitudinal_files_and_report(followed):
    out = followed["out"]
    anat = out / "sub-01" / "anat"
    for name in ("sub-01_desc-longitudinal_cmb", "sub-01_desc-sessions_cmb"):
        header = (anat / f"{name}.tsv").read_text().splitlines()[0].split("\t")
        sidecar = json.loads((anat / f"{name}.json").read_text())
        assert header == list(sidecar), name
        assert all("Description" in v for v in sidecar.values())
    xfm = json.loads((anat / "sub-01_from-ses02_to-ses01_mode-image_xfm.json").read_text())
    assert xfm["registration_ok"] is True and xfm["transform"] == "rigid"
    assert xfm["Sources"] == ["sub-01/ses-02/anat/sub-01_ses-02_desc-preproc_swi.nii.gz"]
    page = (out / "sub-01.html").read_text()
    assert "Follow-up: sub-01" in page
    assert page.count("new in ses-02") == (
        read_tsv(anat / "sub-01_desc-longitudinal_cmb.tsv")["label"] == "new").sum()
    assert not list(anat.glob(".*tmp"))


def test_rater_decisions_replace_the_automatic_ones(followed):
    """A rater reviews ses-02 and rejects one new lesion; rerunning the participant level
    (cached) follows the rater's microbleeds."""
    out = followed["out"]
    ses2 = out / "sub-01" / "ses-02" / "anat"
    anat = out / "sub-01" / "anat"
    lesions = read_tsv(anat / "sub-01_desc-longitudinal_cmb.tsv")
    new_ids = set(lesions.loc[lesions["label"] == "new", "ses-02_source_id"].astype(int))
    assert new_ids
    rejected = min(new_ids)
    cmbs = read_tsv(ses2 / "sub-01_ses-02_desc-cmb_cmb.tsv")
    rows = pd.DataFrame({
        "candidate_id": cmbs["cmb_id"], "rater": "rater1", "decision": "yes",
        "decided_at": "2026-11-30T10:00:00", "status": "cmb", "auto_status": "cmb",
        "x": cmbs["x"], "y": cmbs["y"], "z": cmbs["z"], "volume_mm3": cmbs["volume_mm3"],
        "score": cmbs["score"]})
    rows.loc[rows["candidate_id"] == rejected, ["decision", "status"]] = ["no", "rejected"]
    reviewed = ses2 / "sub-01_ses-02_desc-reviewed_cmb.tsv"
    rows.to_csv(reviewed, sep="\t", index=False)
    registered = next(followed["work"].glob(
        "longitudinal_wf/*/register_sessions/result_register_sessions.pklz"))
    mtime = registered.stat().st_mtime_ns
    try:
        assert main(followed["args"]) == 0
        # the sessions' images were committed again (same bytes): no new registration
        assert registered.stat().st_mtime_ns == mtime
        sessions = read_tsv(anat / "sub-01_desc-sessions_cmb.tsv")
        assert list(sessions["count_source"]) == ["automatic", "rater"]
        assert sessions["rater"].iloc[1] == "rater1"
        assert sessions["n_new"].iloc[1] == len(new_ids) - 1
        after = read_tsv(anat / "sub-01_desc-longitudinal_cmb.tsv")
        assert rejected not in set(after["ses-02_source_id"].dropna().astype(int))
    finally:
        reviewed.unlink()


def test_a_bad_review_table_fails_the_follow_up_only(followed, capsys):
    """A reviewed table with an unknown status: the units stay written, the follow-up
    fails with exit 19 and a line naming the file; the earlier tables are kept."""
    out = followed["out"]
    anat = out / "sub-01" / "anat"
    before = (anat / "sub-01_desc-sessions_cmb.tsv").read_bytes()
    reviewed = out / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_desc-reviewed_cmb.tsv"
    reviewed.write_text("candidate_id\trater\tdecision\tstatus\n1\trater1\tyes\tmaybe\n")
    try:
        assert main(followed["args"]) == 19
    finally:
        reviewed.unlink()
    err = capsys.readouterr().err
    assert "sub-01 (follow-up) failed" in err
    assert f"{reviewed}: status must be cmb, rejected or review" in err
    assert (anat / "sub-01_desc-sessions_cmb.tsv").read_bytes() == before


def test_sessions_ordered_by_acq_time_else_by_label(followed, tmp_path):
    from cmbprep.utils.derivatives import collect_session_series

    out = followed["out"]
    (series,) = collect_session_series(out, followed["bids"], "01")
    assert series.prefix == "sub-01"
    assert [(s["session_id"], s["acq_time"]) for s in series.sessions] == [
        ("ses-01", "2024-01-15T09:00:00"), ("ses-02", "2024-07-16T09:00:00")]
    assert series.sessions[0]["reviewed"] is None
    # dates say ses-02 came first
    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True)
    (bids / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-01\t2025-03-01T10:00:00\nses-02\t2024-03-01T10:00:00\n")
    (series,) = collect_session_series(out, bids, "01")
    assert [s["session_id"] for s in series.sessions] == ["ses-02", "ses-01"]
    # no dates: by label, acq_time n/a
    (bids / "sub-01" / "sub-01_sessions.tsv").unlink()
    (series,) = collect_session_series(out, bids, "01")
    assert [(s["session_id"], s["acq_time"]) for s in series.sessions] == [
        ("ses-01", "n/a"), ("ses-02", "n/a")]


def test_intervals_unknown_without_dates():
    from cmbprep.algorithms.longitudinal import session_days

    since, interval = session_days(["2024-01-01T00:00:00", "2024-01-31T12:00:00", "n/a"])
    assert since[:2].tolist() == [0.0, 30.5] and np.isnan(since[2])
    assert np.isnan(interval[0]) and interval[1] == 30.5 and np.isnan(interval[2])
    # dates with and without a time of day (both ISO 8601)
    since, _ = session_days(["2024-01-01", "n/a", "2024-03-01T12:00:00"])
    assert since[0] == 0 and np.isnan(since[1]) and since[2] == 60.5


def test_group_level_reads_the_follow_up(followed):
    """The group level models the sessions of the participant-level run (one
    participant: the models are listed, whether or not they can be fitted)."""
    bids, out = followed["bids"], followed["out"]
    assert main([str(bids), str(out), "group"]) == 0
    group_cmb = read_tsv(out / "group_cmb.tsv")
    assert list(group_cmb["session_id"]) == ["ses-01", "ses-02"]
    models = read_tsv(out / "group_longitudinal_models.tsv")
    assert len(models) >= 2
    assert "Repeated sessions" in (out / "group_cmb.html").read_text()


def test_follow_up_section_opens_cleanly_in_a_browser(followed, browser):
    """The participant report with its follow-up section in headless Chromium: every
    image loads, no script error, no ``nan``/``None`` shown."""
    from tests.test_reports_browser import NAN_OR_NONE, _open

    anat = followed["out"] / "sub-01" / "anat"
    n_new = int((read_tsv(anat / "sub-01_desc-longitudinal_cmb.tsv")["label"] == "new")
                .sum())
    errors, images, broken, text = _open(browser, followed["out"] / "sub-01.html")
    assert errors == [] and broken == 0 and images > 1 + n_new
    for shown in ("Follow-up: sub-01", "New lesions", "interval_days",
                  "registration_residual_mm", "(left: ses-01, same place"):
        assert shown in text, shown
    assert not NAN_OR_NONE.search(text), NAN_OR_NONE.search(text)
