"""Group level end to end on participant output trees written to disk."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmbprep.algorithms import stats
from cmbprep.errors import DataError, InputMissingError
from cmbprep.group import run_group
from .test_group_cohort import random_cmbs, synthesise_cohort, write_unit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _read(path):
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


def _tree_digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    bids_dir, output_dir, truth = synthesise_cohort(root, n_patients=40, n_controls=12,
                                                    seed=5, intercept=1.0)
    (output_dir / "sub-01.html").write_text("<html>participant report</html>")
    before = _tree_digest(bids_dir)
    before_outputs = _tree_digest(output_dir)
    written = run_group(output_dir, bids_dir,
                        prevalence_by=["platelet_nadir:0,5,10,15", "sex"])
    return {"bids": bids_dir, "out": output_dir, "truth": truth, "written": written,
            "before": before, "before_outputs": before_outputs}


def test_tables_written_with_sidecars(cohort):
    written = cohort["written"]
    for key in ("group_cmb", "prevalence", "prevalence_tests", "regression",
                "regression_models"):
        path = Path(written[key])
        assert path.parent == cohort["out"] and path.suffix == ".tsv"
        header = path.read_text().splitlines()[0].split("\t")
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert set(header) == set(sidecar), key
        assert all("Description" in v for v in sidecar.values())
        assert all(h == h.lower() and " " not in h for h in header)
    text = Path(written["group_cmb"]).read_text()
    assert "n/a" in text and "nan" not in text.lower().replace("n/a", "")
    assert not list(cohort["out"].glob(".*tmp"))  # atomic writes leave nothing behind


def test_inputs_untouched(cohort):
    assert _tree_digest(cohort["bids"]) == cohort["before"]
    after = _tree_digest(cohort["out"])
    for name, digest in cohort["before_outputs"].items():
        assert after[name] == digest


def test_counts_match_the_participant_tables(cohort):
    table = _read(cohort["written"]["group_cmb"])
    truth = cohort["truth"].set_index("participant_id")
    assert list(table["participant_id"]) == list(truth.index)
    assert (table["n_cmb"].to_numpy() == truth["true_count"].to_numpy()).all()
    mars = table[["n_lobar", "n_deep", "n_infratentorial", "n_not_assigned"]].sum(axis=1)
    assert (mars == table["n_cmb"]).all()
    lobes = table[[c for c in table if c.startswith("n_lobe_")]].sum(axis=1)
    assert (lobes == table["n_lobar"]).all()
    assert (table["count_source"] == "automatic").all()
    assert (table.loc[table["n_cmb"] == 0, "total_volume_mm3"] == 0).all()
    assert (table.loc[table["n_cmb"] > 0, "total_volume_mm3"] > 0).all()
    first = table.iloc[0]
    cmbs = _read(cohort["out"] / first["cmb_table"])
    assert first["total_volume_mm3"] == pytest.approx(cmbs["volume_mm3"].sum())
    assert first["qc_pass"] == True  # noqa: E712


def test_prevalence_and_tests(cohort):
    prev = _read(cohort["written"]["prevalence"])
    truth = cohort["truth"]
    any_cmb = prev[prev["outcome"] == "any_cmb"].set_index(["grouping", "level"])
    for group in ("itp", "control"):
        member = truth[truth["group"] == group]
        row = any_cmb.loc[("group", group)]
        assert row["n_participants"] == len(member)
        assert row["n_with"] == int((member["true_count"] > 0).sum())
        assert row["ci_lower"] <= row["prevalence"] <= row["ci_upper"]
    bins = any_cmb.loc["platelet_nadir"]
    assert list(bins.index) == ["[0, 5)", "[5, 10)", "[10, 15)", "[15, inf)"]
    patients = truth[truth["group"] == "itp"]
    low = patients[patients["platelet_nadir"] < 5]
    assert bins.loc["[0, 5)", "n_participants"] == len(low)
    assert bins.loc["[0, 5)", "n_with"] == int((low["true_count"] > 0).sum())
    assert (bins["n_not_binned"] == 12).all()  # controls have no platelet nadir
    tests = _read(cohort["written"]["prevalence_tests"]).set_index(["outcome", "grouping"])
    trend = tests.loc[("any_cmb", "platelet_nadir")]
    assert trend["test"] == "cochran_armitage"
    expected = stats.cochran_armitage_trend_test(bins["n_with"], bins["n_participants"])
    assert trend["statistic"] == pytest.approx(expected.statistic, rel=1e-8)
    assert trend["p_value"] == pytest.approx(expected.p_value, rel=1e-8)
    assert trend["statistic"] < 0  # the true model: fewer CMBs with more platelets
    assert tests.loc[("any_cmb", "group"), "test"] == "fisher_exact"
    assert tests.loc[("any_cmb", "sex"), "test"] == "fisher_exact"


def test_regression_tables(cohort):
    models = _read(cohort["written"]["regression_models"])
    terms = _read(cohort["written"]["regression"])
    uni = models[(models["analysis"] == "univariate") & (models["family"] == "poisson")]
    assert set(uni["covariate"]) == {"group", "age", "sex", "platelet_nadir", "smog", "bmi"}
    plt = uni.set_index("covariate").loc["platelet_nadir"]
    assert plt["n_used"] == 40 and plt["n_dropped"] == 12
    plt_term = terms[(terms["model_id"] == plt["model_id"])
                     & (terms["term"] == "platelet_nadir")].iloc[0]
    truth = cohort["truth"]  # the same model fitted directly on the true counts
    direct = stats.fit_count_model(truth.rename(columns={"true_count": "n_cmb"}),
                                   "n_cmb ~ platelet_nadir").terms.set_index("term")
    assert plt_term["coef"] == pytest.approx(direct.loc["platelet_nadir", "coef"], abs=1e-9)
    assert plt_term["se"] == pytest.approx(direct.loc["platelet_nadir", "se"], abs=1e-9)
    assert plt_term["irr_ci_lower"] < plt_term["irr"] < plt_term["irr_ci_upper"]
    assert np.isclose(plt_term["irr"], np.exp(plt_term["coef"]))
    multi = models[models["analysis"] == "multivariate"]
    assert multi.iloc[0]["formula"] == "n_cmb ~ age + sex + group"  # pre-specified
    assert (models["n_automatic"] == models["n_used"]).all()
    assert (models.loc[models["fitted"], "n_rater"] == 0).all()
    assert models["offset"].isna().all()  # every unit fully covered
    nb = models[models["family"] == "negative_binomial"]
    poisson_over = models[(models["family"] == "poisson") & (models["overdispersed"] == True)]  # noqa: E712
    assert len(nb) == len(poisson_over)
    assert (nb["alpha"] > 0).all()


def test_univariate_p_selection_is_an_option(cohort, tmp_path):
    """--covariate-selection univariate-p: the study's selection, with its caveat."""
    out = tmp_path / "out"
    shutil.copytree(cohort["out"], out)
    written = run_group(out, cohort["bids"], covariate_selection="univariate-p")
    models = _read(written["regression_models"])
    formula = models[models["analysis"] == "multivariate"].iloc[0]["formula"]
    assert "age" in formula and "sex" in formula and "platelet_nadir" in formula
    assert "group" not in formula  # constant among participants with a platelet nadir
    html = Path(written["report"]).read_text()
    assert "inflates the type I error" in html
    assert "inflates" not in Path(cohort["written"]["report"]).read_text()
    prov = json.loads(Path(written["provenance"]).read_text())
    assert prov["covariate_selection"] == "univariate-p"
    with pytest.raises(DataError, match="covariate-selection"):
        run_group(out, cohort["bids"], covariate_selection="stepwise")


def test_report(cohort):
    html = Path(cohort["written"]["report"]).read_text()
    assert html.count("<svg") >= 4  # regions, prevalence x3, count-vs-covariate
    assert 'href="sub-01.html"' in html and 'href="sub-52.html"' in html
    assert "platelet_nadir" in html and "Incidence" not in html.split("<body>")[0]
    for external in ('src="http', "src='http", 'href="http', "<script", "<link",
                     "url(http", "@import"):
        assert external not in html  # opens offline, nothing fetched
    # every unit was counted automatically: the report says how far to trust that
    n = len(cohort["truth"])
    assert f"{n} of {n} analysed unit(s) are counted from the automatic detection" in html
    assert "How far to trust the counts" in html


def test_same_inputs_same_outputs(cohort, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(cohort["out"], out)
    run_group(out, cohort["bids"], prevalence_by=["platelet_nadir:0,5,10,15", "sex"])
    names = ["group_cmb.tsv", "group_prevalence.tsv", "group_prevalence_tests.tsv",
             "group_regression.tsv", "group_regression_models.tsv", "group_cmb.html"]
    for name in names:
        assert (out / name).read_bytes() == (cohort["out"] / name).read_bytes(), name


def _small_tree(root, counts, covariates=None):
    """``counts``: {label: n_cmb}; writes outputs and a participants.tsv."""
    rng = np.random.default_rng(0)
    bids_dir, out = root / "bids", root / "out"
    bids_dir.mkdir(parents=True)
    for label, n in counts.items():
        write_unit(out / f"sub-{label}" / "anat", f"sub-{label}", random_cmbs(n, rng),
                   rng=rng)
    if covariates is not None:
        (bids_dir / "participants.tsv").write_text(covariates)
    return bids_dir, out


def test_reviewed_table_sessions_and_runs(tmp_path):
    rng = np.random.default_rng(1)
    bids_dir, out = _small_tree(tmp_path, {"01": 2, "02": 0})
    anat = out / "sub-01" / "anat"
    candidates = _read(anat / "sub-01_desc-candidates_cmb.tsv")
    reviewed = candidates.copy()
    reviewed["status"] = ["cmb", "rejected"] + ["rejected"] * (len(reviewed) - 2)
    reviewed.loc[len(reviewed)] = reviewed.iloc[0]
    reviewed.loc[len(reviewed) - 1, "status"] = "review"
    reviewed.to_csv(anat / "sub-01_desc-reviewed_cmb.tsv", sep="\t", index=False,
                    na_rep="n/a")
    (anat / "sub-01_desc-reviewed_cmb.json").write_text(json.dumps({"Rater": "AB"}))
    for ses in ("1", "2"):
        write_unit(out / "sub-03" / f"ses-{ses}" / "anat", f"sub-03_ses-{ses}_run-1",
                   random_cmbs(int(ses), rng), n_review=1, rng=rng)
    written = run_group(out, bids_dir)
    table = _read(written["group_cmb"])
    row = table[table["participant_id"] == "sub-01"].iloc[0]
    assert row["count_source"] == "rater" and row["rater"] == "AB"
    assert row["n_cmb"] == 1 and row["n_review_pending"] == 1
    assert row["cmb_table"].endswith("_desc-reviewed_cmb.tsv")
    sub3 = table[table["participant_id"] == "sub-03"]
    assert list(sub3["session_id"]) == ["ses-1", "ses-2"]
    assert list(sub3["run"]) == [1, 1]
    assert list(sub3["n_cmb"]) == [1, 2] and list(sub3["n_review_pending"]) == [1, 1]
    prov = json.loads(Path(written["provenance"]).read_text())
    assert any("first session" in n for n in prov["notes"])
    prev = _read(written["prevalence"])
    overall = prev[(prev["outcome"] == "any_cmb") & (prev["grouping"] == "all")].iloc[0]
    assert overall["n_participants"] == 3 and overall["n_with"] == 2  # ses-1 of sub-03


def test_missing_table_skipped_with_warning(tmp_path, caplog):
    bids_dir, out = _small_tree(tmp_path, {"01": 1, "02": 3},
                                "participant_id\tage\nsub-01\t50\nsub-02\t60\n"
                                "sub-03\t70\nsub-04\t80\n")
    (out / "sub-03" / "anat").mkdir(parents=True)
    (out / "sub-03" / "anat" / "sub-03_desc-summary_cmb.json").write_text("{}")
    with caplog.at_level("WARNING", logger="cmbprep.group"):
        written = run_group(out, bids_dir)
    assert any("sub-03" in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records)
    assert list(_read(written["group_cmb"])["participant_id"]) == ["sub-01", "sub-02"]
    assert any(s.startswith("sub-03") for s in written["skipped"])
    assert any(s.startswith("sub-04") for s in written["skipped"])
    assert "sub-04" in Path(written["report"]).read_text()


def test_non_numeric_value_is_a_data_error(tmp_path):
    bids_dir, out = _small_tree(tmp_path, {"01": 1, "02": 0, "03": 2},
                                "participant_id\tage\tsex\nsub-01\t50\tF\n"
                                "sub-02\tsixty\tM\nsub-03\t70\tn/a\n")
    with pytest.raises(DataError, match=r"participants.tsv.*'age'.*sixty") as info:
        run_group(out, bids_dir)
    assert info.value.exit_code == 65
    assert "\n" not in str(info.value)


def test_no_participant_outputs(tmp_path):
    (tmp_path / "out" / "sub-01" / "anat").mkdir(parents=True)
    with pytest.raises(InputMissingError, match="no participant CMB tables") as info:
        run_group(tmp_path / "out", tmp_path)
    assert info.value.exit_code == 66


def test_bad_options_are_data_errors(tmp_path):
    bids_dir, out = _small_tree(tmp_path, {"01": 1, "02": 0, "03": 2},
                                "participant_id\tage\tsex\nsub-01\t50\tF\n"
                                "sub-02\t60\tM\nsub-03\t70\tF\n")
    with pytest.raises(DataError, match="platelet"):
        run_group(out, bids_dir, prevalence_by=["platelet:0,5"])
    with pytest.raises(DataError, match="'sex'"):
        run_group(out, bids_dir, prevalence_by=["sex:0,5"])
    with pytest.raises(DataError, match="diagnosis"):
        run_group(out, bids_dir, group_column="diagnosis")
    with pytest.raises(DataError, match="nadir"):
        run_group(out, bids_dir, model="age + nadir")
    with pytest.raises(DataError, match="not found"):
        run_group(out, bids_dir, covariates_file=tmp_path / "missing.tsv")


def test_extra_and_missing_columns_and_covariates_file(tmp_path):
    bids_dir, out = _small_tree(tmp_path, {f"{i:02d}": n for i, n in
                                           enumerate([0, 1, 3, 0, 2, 5, 1, 0], 1)})
    cov = tmp_path / "clinical.csv"
    cov.write_text("participant_id,nadir,comment,smog\n"
                   "01,20,ok,0\n02,12,n/a,1\n03,3,x,3\n04,n/a,late,0\n05,8,y,2\n"
                   "06,1,z,4\n07,15,q,1\n")  # sub-08 not listed, labels without sub-
    written = run_group(out, bids_dir, covariates_file=cov,
                        prevalence_by=["nadir:0,5,10"], model="nadir + I(smog >= 2)")
    models = _read(written["regression_models"]).set_index("model_id")
    comment = models[models["covariate"] == "comment"].iloc[0]
    assert not comment["fitted"] and "levels" in comment["message"]
    multi = models[models["analysis"] == "multivariate"].iloc[0]
    assert multi["formula"] == "n_cmb ~ nadir + I(smog >= 2)"
    assert multi["n_used"] == 6 and multi["n_dropped"] == 2
    terms = _read(written["regression"])
    assert "I(smog >= 2)[T.True]" in set(terms["term"])
    prov = json.loads(Path(written["provenance"]).read_text())
    assert prov["covariate_types"] == {"nadir": "numeric", "comment": "categorical",
                                       "smog": "numeric"}


def test_single_participant_and_all_zero_counts(tmp_path):
    bids_dir, out = _small_tree(tmp_path / "one", {"01": 2},
                                "participant_id\tage\nsub-01\t50\n")
    written = run_group(out, bids_dir)
    models = _read(written["regression_models"])
    assert not models["fitted"].any()
    prev = _read(written["prevalence"])
    assert prev.iloc[0]["n_with"] == 1 and prev.iloc[0]["ci_upper"] == 1
    assert Path(written["report"]).exists()

    bids_dir, out = _small_tree(tmp_path / "zero", {"01": 0, "02": 0, "03": 0},
                                "participant_id\tage\tgroup\nsub-01\t50\tp\n"
                                "sub-02\t60\tc\nsub-03\t70\tp\n")
    written = run_group(out, bids_dir, prevalence_by=["age:0,60"])
    models = _read(written["regression_models"])
    uni = models[models["analysis"] == "univariate"]
    assert not uni["fitted"].any()
    assert uni["message"].str.contains("all CMB counts are zero").all()
    tests = _read(written["prevalence_tests"])
    trend = tests[tests["test"] == "cochran_armitage"]
    assert len(trend) == 4 and trend["p_value"].isna().all()
    assert trend["message"].str.contains("no variation").all()
    fisher = tests[tests["test"] == "fisher_exact"]
    assert len(fisher) == 4 and (fisher["p_value"] == 1).all()
    assert "all CMB counts are zero" in Path(written["report"]).read_text()


def test_separation_between_groups_is_reported(tmp_path):
    counts = {"01": 2, "02": 1, "03": 3, "04": 0, "05": 0, "06": 0}
    rows = "".join(f"sub-{k}\t{'itp' if int(k) < 4 else 'control'}\n" for k in counts)
    bids_dir, out = _small_tree(tmp_path, counts, "participant_id\tgroup\n" + rows)
    written = run_group(out, bids_dir)
    terms = _read(written["regression"])
    group_term = terms[terms["term"].str.startswith("group[")].iloc[0]
    assert group_term["estimable"] == False  # noqa: E712
    models = _read(written["regression_models"])
    assert models["message"].str.contains("separation", na=False).any()


def test_recovers_true_effects_fast(tmp_path):
    """A cohort drawn from a known Poisson model: the true effects are recovered."""
    bids_dir, out, truth = synthesise_cohort(tmp_path, n_patients=150, n_controls=0,
                                             seed=11)
    written = run_group(out, bids_dir, model="age + sex + platelet_nadir + I(smog >= 2)")
    terms = _read(written["regression"])
    models = _read(written["regression_models"])
    mid = models[(models["analysis"] == "multivariate")
                 & (models["family"] == "poisson")]["model_id"].iloc[0]
    est = terms[terms["model_id"] == mid].set_index("term")
    plt = est.loc["platelet_nadir"]
    assert plt["irr"] < 1 and plt["p_value"] < 0.01
    assert plt["irr_ci_lower"] < np.exp(-0.06) < plt["irr_ci_upper"]
    age = est.loc["age"]
    assert age["irr"] > 1 and age["p_value"] < 0.05
    assert age["irr_ci_lower"] < np.exp(0.03) < age["irr_ci_upper"]


@pytest.mark.parametrize("name, text, line, cells", [
    ("participants.tsv", "participant_id\tage\tsex\nsub-01\t50\tF\nsub-02\t60\n"
     "sub-03\t70\tF\n", 3, 2),
    ("participants.tsv", "participant_id\tage\tsex\nsub-01\t50\tF\n\n"
     "sub-02\t60\tM\tx\nsub-03\t70\tF\n", 4, 4),
    ("clinical.csv", "participant_id,age,sex\n01,50,F\n02,60,M\n03,70\n", 4, 2),
])
def test_covariates_row_with_wrong_cell_count_is_rejected(tmp_path, capsys, name, text,
                                                          line, cells):
    """A row with too few or too many cells: one line naming file and line, exit 65,
    before any group file is written."""
    from cmbprep.cli.run import main

    bids_dir, out = _small_tree(tmp_path, {"01": 1, "02": 0, "03": 2})
    cov = (bids_dir if name == "participants.tsv" else tmp_path) / name
    cov.write_text(text)
    extra = [] if name == "participants.tsv" else ["--covariates", str(cov)]
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code = main([str(bids_dir), str(out), "group", *extra])
    err = capsys.readouterr().err
    assert code == 65, err
    errors = [x for x in err.splitlines() if "error" in x.lower()]
    assert errors == [
        f"cmbprep: error: {cov}: line {line} has {cells} cells, the header has 3"]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
