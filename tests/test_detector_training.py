"""Training-data plumbing of the detector classifier (cmbprep.testing.detector_training)."""

import shutil

import numpy as np
import pandas as pd
import pytest

from cmbprep.testing.detector_training import (
    COHORTS,
    HELD_OUT_FAMILY,
    NETWORK_MAX_LOGIT_SHIFT,
    TEST_FAMILIES,
    candidate_table,
    choose_accept_threshold,
    fixed_scan,
    model_families,
    phantom_fingerprint,
    prepare_scan,
    scan_list,
    sensitivity_at_fp_rates,
    swi_fingerprint,
)
from cmbprep.testing.phantom.randomise import FAMILIES

FAST = {"voxel_size_mm": (2.5, 2.5, 2.5), "n_veins": 4, "n_cmbs": 2, "n_calcifications": 1,
        "cmb_radius_mm": (1.0, 1.4), "cmb_dchi_ppm": (1.5, 3.0)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("scans")


def _seeds(cohort):
    return [s for seeds in COHORTS[cohort].values() for s in seeds]


def test_cohorts_are_disjoint_and_above_test_seeds():
    train, val = _seeds("train"), _seeds("validation")
    assert len(set(train)) == len(train) and len(set(val)) == len(val)
    train, val = set(train), set(val)
    assert not train & val and min(train | val) >= 12000
    assert not (train | val) & set(range(1001, 1100))  # benchmark
    assert set(COHORTS["train"]) == set(FAMILIES) and HELD_OUT_FAMILY in FAMILIES
    specs = scan_list("train")
    assert [s.seed for s in specs] == [s for f in COHORTS["train"] for s in COHORTS["train"][f]]
    assert {s.family for s in specs} == set(FAMILIES)


def test_test_families_are_kept_out_of_every_model():
    assert set(TEST_FAMILIES) < set(FAMILIES) and HELD_OUT_FAMILY not in TEST_FAMILIES
    learned = model_families(FAMILIES, HELD_OUT_FAMILY)
    assert learned == sorted(set(FAMILIES) - {HELD_OUT_FAMILY} - set(TEST_FAMILIES))
    assert HELD_OUT_FAMILY not in learned and not set(TEST_FAMILIES) & set(learned)
    assert set(model_families(FAMILIES)) == set(FAMILIES) - set(TEST_FAMILIES)


def test_cache_is_reused_only_for_the_same_phantom_and_swi_versions(cache):
    tmp_path = cache
    spec = fixed_scan("small", FAST, 7)
    arrays, truth, timing = prepare_scan(spec, tmp_path)
    assert np.isfinite(timing["swi_s"])
    stamp = tmp_path / "small_7.phantom"
    assert stamp.read_text().split() == ["phantom", phantom_fingerprint(), "swi",
                                         swi_fingerprint()]
    again, truth2, timing2 = prepare_scan(spec, tmp_path)
    assert np.isnan(timing2["swi_s"])  # from the cache
    np.testing.assert_array_equal(again["swi"], arrays["swi"])
    for other in (f"phantom another-version swi {swi_fingerprint()}",  # generator changed
                  f"phantom {phantom_fingerprint()} swi another-version"):  # SWI chain
        stamp.write_text(other + "\n")
        _, _, timing3 = prepare_scan(spec, tmp_path)
        assert np.isfinite(timing3["swi_s"])  # recomputed


def test_candidates_are_labelled_against_truth(cache):
    cand, truth, _ = candidate_table(fixed_scan("small", FAST, 7), cache)
    assert set(cand["truth"]) <= {"cmb", "invisible_cmb", "calcification", "none"}
    visible = truth[(truth["kind"] == "cmb") & (truth["apparent_diameter_mm"] > 0)]
    found = set(cand.loc[cand["truth"] == "cmb", "truth_row"])
    assert len(visible) >= 1 and found  # the large, strong lesions are candidates
    assert {"screened_out", "n_voxels", "paramagnetic_evidence"} <= set(cand.columns)


def test_scanner_swi_scans_enter_without_phase(tmp_path):
    spec = fixed_scan("small", FAST, 8, input_kind="swi")
    arrays, truth, _ = prepare_scan(spec, tmp_path)
    assert arrays["phase"] is None and arrays["swi"].shape == arrays["brain"].shape
    again, _, timing = prepare_scan(spec, tmp_path)  # cached without a phase array
    assert again["phase"] is None and np.isnan(timing["swi_s"])
    cand, _, _ = candidate_table(spec, tmp_path)
    assert not cand["has_phase"].any() and cand["paramagnetic_evidence"].isna().all()


def test_candidate_tables_are_reused_only_for_the_same_detector(cache, tmp_path, monkeypatch):
    """Cached candidate tables carry the phantom's and the detector's source fingerprints:
    a change to either recomputes them (a table with another detector's features or
    phase-sign rules would otherwise be trained on silently)."""
    import cmbprep.testing.detector_training as training

    spec = fixed_scan("small", FAST, 7)
    prepare_scan(spec, cache)  # the module's scan (made once), without its candidate table
    for suffix in (".npz", ".csv", ".phantom"):
        shutil.copy(cache / f"small_7{suffix}", tmp_path)
    real, calls = training.candidate_table, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "candidate_table", counting)
    first, _ = training.collect([spec], tmp_path)
    training.collect([spec], tmp_path)
    assert len(calls) == 1  # reused
    monkeypatch.setattr(training, "detector_fingerprint", lambda: "another-detector")
    again, _ = training.collect([spec], tmp_path)
    assert len(calls) == 2  # recomputed
    assert len(again) == len(first)


def test_magnitude_is_hidden_on_every_fifth_training_scan():
    import pandas as pd

    from cmbprep.testing.detector_training import (
        HIDE_MAGNITUDE_EVERY,
        _hide_magnitude_sometimes,
    )

    seeds = np.repeat(np.arange(20000, 20010), 3)
    data = pd.DataFrame({"seed": seeds, "magnitude_contrast": np.linspace(0, 1, len(seeds))})
    out = _hide_magnitude_sometimes(data)
    hidden = out["magnitude_contrast"].isna().to_numpy()
    np.testing.assert_array_equal(hidden, seeds % HIDE_MAGNITUDE_EVERY == 0)
    assert hidden.sum() == 6
    np.testing.assert_array_equal(out.loc[~hidden, "magnitude_contrast"],
                                  data.loc[~hidden, "magnitude_contrast"])
    assert data["magnitude_contrast"].notna().all()  # the input is not modified


def test_accept_threshold_is_the_peak_of_the_averaged_f1_within_the_limits():
    """An isolated one-point F1 spike (a few validation lesions) is not chosen over a
    broad plateau; a spike at the plateau's edge pulls the choice less far than the raw
    maximum. Thresholds over the false-positive or the calcification limit are never
    chosen while another one meets them."""
    t = np.round(np.arange(0.30, 0.96, 0.02), 2)
    f1 = np.where((t >= 0.50) & (t <= 0.70), 0.78, 0.70)
    f1[t == 0.90] = 0.79  # isolated spike
    curve = pd.DataFrame({"threshold": t, "f1": f1, "fp_per_scan": 1.0 - t,
                          "calcifications_as_cmb": np.where(t < 0.4, 5, 0)})
    assert curve.loc[curve["f1"].idxmax(), "threshold"] == 0.90  # what the raw max takes
    best = choose_accept_threshold(curve, max_fp_per_scan=0.5)
    assert 0.54 <= best["threshold"] <= 0.66  # inside the plateau, away from its edges
    edge = curve.assign(f1=np.where(t == 0.70, 0.79, f1))  # spike at the plateau's edge
    assert 0.60 <= choose_accept_threshold(edge, 0.5)["threshold"] < 0.70
    # the false-positive limit: thresholds below 0.62 are over it
    tight = choose_accept_threshold(curve.assign(fp_per_scan=np.where(t < 0.62, 1.0, 0.1)),
                                    max_fp_per_scan=0.5)
    assert tight["threshold"] >= 0.62
    # the calcification limit (thresholds below 0.4), and no threshold meeting the
    # limits at all (the best overall)
    calc = choose_accept_threshold(curve.assign(fp_per_scan=0.0, f1=0.8 - 0.1 * t), 0.5,
                                   max_calcifications=0)
    assert calc["threshold"] == 0.40
    none = choose_accept_threshold(curve.assign(fp_per_scan=9.0), max_fp_per_scan=0.5)
    assert 0.54 <= none["threshold"] <= 0.66


def test_sensitivity_at_matched_false_positive_rates():
    """The best sensitivity among thresholds within each false-positive budget, 0 when
    none is that strict; what the threshold's own position is does not enter."""
    curve = pd.DataFrame({"threshold": [0.2, 0.4, 0.6, 0.8],
                          "sensitivity": [0.9, 0.8, 0.6, 0.3],
                          "fp_per_scan": [3.0, 1.0, 0.4, 0.1]})
    assert sensitivity_at_fp_rates(curve) == {"0.5": 0.6, "1": 0.8, "2": 0.8}
    assert sensitivity_at_fp_rates(curve, rates=(0.05, 5)) == {"0.05": 0.0, "5": 0.9}


def test_matched_rates_do_not_depend_on_the_accept_threshold(cache):
    """On real candidates: moving a model's accept thresholds changes its F1 but not its
    sensitivity at matched false-positive rates, which rises with the budget."""
    import copy
    import json

    from cmbprep.algorithms.detection.classifier import DEFAULT_MODEL_PATH
    from cmbprep.testing.detector_training import _measures, collect, matched_fp_measures

    model = json.loads(DEFAULT_MODEL_PATH.read_text())
    cand, truths = collect([fixed_scan("small", FAST, s) for s in (7, 8)], cache)
    strict = copy.deepcopy(model)
    for name in ("phase", "no_phase"):
        strict[name]["accept_score"] = 0.95
    matched = matched_fp_measures(cand, truths, model, rates=(0.5, 1, 2, 100))
    assert matched == matched_fp_measures(cand, truths, strict, rates=(0.5, 1, 2, 100))
    assert list(matched.values()) == sorted(matched.values()) and matched["100"] > 0
    assert (_measures(cand, truths, strict)["all"]["sensitivity"]
            < _measures(cand, truths, model)["all"]["sensitivity"])


def test_scan_statuses_give_each_candidate_the_status_its_score_earns(cache):
    """On real candidates: every candidate gets, once, in its own scan, the status its
    system score earns under the accept threshold (``cmb`` only at or above it and no
    larger than a microbleed can be; ``rejected`` below the review score), and a lower
    threshold accepts more; ``evaluate_system`` counts the same review candidates."""
    import json

    from cmbprep.algorithms.detection import CMBPREP_PARAMETERS
    from cmbprep.algorithms.detection.classifier import DEFAULT_MODEL_PATH
    from cmbprep.testing.detector_training import (
        collect,
        evaluate_system,
        scan_statuses,
        system_scores,
    )

    model = json.loads(DEFAULT_MODEL_PATH.read_text())
    cand, truths = collect([fixed_scan("small", FAST, s) for s in (7, 8)], cache)
    cand = cand.reset_index(drop=True)
    scores = system_scores(cand, model)
    largest = CMBPREP_PARAMETERS["max_accept_diameter_mm"]
    accepted = {}
    for t in (0.2, 0.9):
        thresholds = {"phase": t, "no_phase": t}
        seen, keys, n_cmb, n_review = [], [], 0, []
        for key, rows, c in scan_statuses(cand, model, thresholds):
            keys.append(key)
            seen.extend(rows)
            assert set(zip(cand.loc[rows, "family"], cand.loc[rows, "seed"])) == {key}
            np.testing.assert_array_equal(c["score"], scores[rows])
            part = model["phase" if bool(c["has_phase"].iloc[0]) else "no_phase"]
            cmb = c["status"] == "cmb"
            assert (c.loc[cmb, "score"] >= t).all()
            assert (c.loc[cmb, "diameter_mm"] <= largest).all()
            assert (c.loc[c["score"] < min(part["review_score"], t), "status"]
                    == "rejected").all()
            n_cmb += int(cmb.sum())
            n_review.append(int((c["status"] == "review").sum()))
        assert keys == sorted(keys) and len(keys) == 2
        assert sorted(seen) == list(range(len(cand)))
        measured = evaluate_system(cand, truths, model, thresholds)["all"]
        assert measured["n_scans"] == 2
        assert measured["review_per_scan"] == pytest.approx(np.mean(n_review))
        accepted[t] = n_cmb
    assert accepted[0.2] > accepted[0.9]


def test_measure_test_families_measures_each_and_touches_nothing_else(cache):
    """``--measure-test-families``: the model's measures on every scan of each test
    family in the candidates replace its ``test_families`` block; the trees, thresholds
    and every other key stay as they were."""
    import copy
    import json

    from cmbprep.algorithms.detection.classifier import DEFAULT_MODEL_PATH
    from cmbprep.testing.detector_training import collect, measure_test_families

    model = json.loads(DEFAULT_MODEL_PATH.read_text())
    cand, truths = collect([fixed_scan("small", FAST, 7)], cache)
    (truth,) = truths.values()
    tables, scans = [], {}
    for family, seed in (("G", 1), ("G", 2), ("A", 3)) + tuple(
            (f, 4) for f in TEST_FAMILIES if f != "G"):
        tables.append(cand.assign(family=family, seed=seed))
        scans[(family, seed)] = truth
    stacked = pd.concat(tables, ignore_index=True)
    measured = measure_test_families(copy.deepcopy(model), stacked, scans)
    assert set(measured["test_families"]) == set(TEST_FAMILIES)
    assert measured["test_families"]["G"]["measured"]["all"]["n_scans"] == 2
    assert all(measured["test_families"][f]["measured"]["all"]["n_scans"] == 1
               for f in TEST_FAMILIES if f != "G")
    assert {k: v for k, v in measured.items() if k != "test_families"} == {
        k: v for k, v in model.items() if k != "test_families"}
    # without a test family's scans nothing is measured
    untouched = measure_test_families(copy.deepcopy(model), cand.assign(family="A"),
                                      {("A", s): truth for s in cand["seed"].unique()})
    assert untouched == model


def test_patch_network_is_fitted_the_same_twice_and_stacked(cache, monkeypatch):
    """The patch network (small settings here) gets the same weights on a second fit;
    every analysed candidate gets its output (screened-out ones none); a model fitted
    with it carries a stack calibration per part, thresholds on the stack's probability
    and the trees' own threshold beside them."""
    from cmbprep.algorithms.detection.classifier import NETWORK_COLUMN
    from cmbprep.testing import network_training
    from cmbprep.testing.detector_training import collect, fit_model, system_scores

    monkeypatch.setattr(network_training, "NETWORK_PARAMETERS",
                        {**network_training.NETWORK_PARAMETERS, "max_iter": 5,
                         "hidden_layer_sizes": (8,), "early_stopping": False})
    cand, truths = collect([fixed_scan("small", FAST, s) for s in (7, 8)], cache)
    assert (cand["truth"] == "cmb").any()
    bank = network_training.patch_bank(cand, cache)
    first = network_training.fit_patch_network(bank, cand)
    assert network_training.fit_patch_network(bank, cand) == first
    scored = network_training.with_network_probability(cand, bank, first)
    kept = ~scored["screened_out"].to_numpy(bool)
    assert scored.loc[kept, NETWORK_COLUMN].between(0, 1).all()
    assert scored.loc[~kept, NETWORK_COLUMN].isna().all()
    assert scored[NETWORK_COLUMN].nunique() > 2
    scored = scored.assign(family="A")
    truths = {("A", seed): t for (_, seed), t in truths.items()}
    parts = fit_model(scored, scored, truths, network=first)
    for name in ("phase", "no_phase"):
        part = parts[name]
        assert part["stack"]["calibration"]["method"] == "logistic"
        assert part["stack"]["max_logit_shift"] == NETWORK_MAX_LOGIT_SHIFT
        assert 0 < part["accept_score"] < 1 and 0 < part["trees_only"]["accept_score"] < 1
    model = {**parts, "network": first}
    trees = system_scores(scored, {k: parts[k] for k in ("phase", "no_phase")})
    stacked = system_scores(scored, model)
    assert not np.allclose(stacked[kept], trees[kept])
    assert np.all(stacked[~kept] == 0)
