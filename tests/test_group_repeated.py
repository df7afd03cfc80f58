"""Group level with repeated sessions, partial coverage, failed QC and count sources.

The participant output trees (sessions, and the per-participant session tables of the
longitudinal step, ``sub-<label>/anat/sub-<label>_desc-sessions_cmb.tsv``) are written
by hand from a known model, following the contract of ``docs/group.rst``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmbprep.algorithms import stats
from cmbprep.group import run_group
from .test_group_cohort import random_cmbs, write_unit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: The true model of :func:`follow_up_cohort` (log incidence-rate ratios).
LOG_IRR_YEAR = 0.25
LOG_IRR_NEW_ITP = 1.0


def _read(path):
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


def _session_table(anat, pid, days, counts, new, *, source="automatic", dated=True):
    """The participant level's ``_desc-sessions_cmb.tsv`` (one row per session)."""
    rows = []
    for k, (day, n_cmb) in enumerate(zip(days, counts)):
        rows.append({
            "session_id": f"ses-{k + 1}",
            "acq_time": "2020-01-01T00:00:00" if dated and k == 0 else "n/a",
            "days_since_reference": day if dated else "n/a",
            "interval_days": day - days[k - 1] if dated and k else "n/a",
            "count_source": source, "rater": "n/a", "n_cmb": n_cmb,
            "n_new": new[k - 1] if k else "n/a", "n_persistent": 0,
            "n_not_seen_again": 0, "n_not_covered": 0,
            "registration_residual_mm": 0.4 if k else "n/a", "registration_ok": "true"})
    pd.DataFrame(rows).to_csv(anat / f"{pid}_desc-sessions_cmb.tsv", sep="\t",
                              index=False, na_rep="n/a")


def follow_up_cohort(root, n=60, seed=3, dated=True):
    """Participants with 1-4 sessions; counts Poisson with a participant frailty and
    ``log mu = 0.3 + 0.02 (age - 50) + 0.25 years``; new microbleeds per interval
    Poisson with rate ``0.3 exp(1.0 [group = itp])`` per year."""
    rng = np.random.default_rng(seed)
    bids, out = root / "bids", root / "out"
    bids.mkdir(parents=True)
    table = pd.DataFrame({
        "participant_id": [f"sub-{i:02d}" for i in range(1, n + 1)],
        "age": np.round(rng.normal(50, 12, n)),
        "sex": rng.choice(["F", "M"], n),
        "group": np.where(np.arange(n) % 3 == 0, "control", "itp")})
    table.to_csv(bids / "participants.tsv", sep="\t", index=False)
    sessions = []
    for pid, age, group in zip(table["participant_id"], table["age"], table["group"]):
        n_sessions = int(rng.integers(1, 5))
        days = np.concatenate([[0], np.cumsum(rng.integers(150, 700, n_sessions - 1))])
        frailty = rng.gamma(4.0, 0.25)
        counts = rng.poisson(np.exp(0.3 + 0.02 * (age - 50) + LOG_IRR_YEAR * days / 365.25)
                             * frailty)
        rate = 0.3 * np.exp(LOG_IRR_NEW_ITP * (group == "itp"))
        new = rng.poisson(rate * np.diff(days) / 365.25)
        for k, count in enumerate(counts):
            write_unit(out / pid / f"ses-{k + 1}" / "anat", f"{pid}_ses-{k + 1}",
                       random_cmbs(int(count), rng), rng=rng,
                       summary={"brain_coverage_fraction": 1.0})
            sessions.append({"participant_id": pid, "session_id": f"ses-{k + 1}",
                             "years": days[k] / 365.25, "n_cmb": int(count)})
        if n_sessions > 1:
            (out / pid / "anat").mkdir(parents=True, exist_ok=True)
            _session_table(out / pid / "anat", pid, list(days), counts, new, dated=dated)
    return bids, out, table, pd.DataFrame(sessions)


@pytest.fixture(scope="module")
def follow_up(tmp_path_factory):
    root = tmp_path_factory.mktemp("follow_up")
    bids, out, table, sessions = follow_up_cohort(root)
    written = run_group(out, bids)
    return {"bids": bids, "out": out, "table": table, "sessions": sessions,
            "written": written}


def _models_and_terms(written):
    models = _read(written["longitudinal_models"]).set_index("model_id")
    terms = _read(written["longitudinal"])
    return models, terms


def test_longitudinal_tables_and_sidecars(follow_up):
    written = follow_up["written"]
    for key in ("longitudinal_models", "longitudinal"):
        path = Path(written[key])
        header = path.read_text().splitlines()[0].split("\t")
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert set(header) == set(sidecar) and all("Description" in v
                                                   for v in sidecar.values())
    provenance = json.loads(Path(written["provenance"]).read_text())
    assert {"group_longitudinal_models.tsv", "group_longitudinal.tsv"} <= set(
        provenance["files"])
    models, _terms = _models_and_terms(written)
    assert list(models["analysis"].iloc[:2]) == ["repeated_counts", "new_lesion_rate"]
    html = Path(written["report"]).read_text()
    assert "Repeated sessions" in html and "group_longitudinal_models.tsv" in html


def test_gee_of_counts_over_sessions(follow_up):
    """One row per session, clustered by participant, time in years; the estimates are
    those of the GEE fitted directly to the true counts."""
    models, terms = _models_and_terms(follow_up["written"])
    gee = models[models["analysis"] == "repeated_counts"].iloc[0]
    assert gee["family"] == "poisson_gee" and gee["working_correlation"] == "exchangeable"
    assert gee["formula"] == "n_cmb ~ age + sex + group + years_since_first"
    sessions = follow_up["sessions"]
    assert gee["n_used"] == len(sessions) and gee["n_participants"] == 60
    assert gee["n_automatic"] == len(sessions) and gee["n_rater"] == 0
    assert 0 < gee["correlation"] < 1  # the frailty correlates a participant's sessions
    direct_data = sessions.rename(columns={"years": "years_since_first"}).merge(
        follow_up["table"], on="participant_id")
    for column, levels in (("sex", ["F", "M"]), ("group", ["control", "itp"])):
        direct_data[column] = pd.Categorical(direct_data[column], categories=levels)
    direct = stats.fit_gee_poisson(direct_data, gee["formula"], "participant_id")
    ours = terms[terms["model_id"] == gee.name].set_index("term")
    np.testing.assert_allclose(ours.loc[direct.terms["term"], "coef"],
                               direct.terms["coef"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.loc[direct.terms["term"], "se"],
                               direct.terms["se"], rtol=0, atol=1e-8)
    year = ours.loc["years_since_first"]
    assert year["irr_ci_lower"] < np.exp(LOG_IRR_YEAR) < year["irr_ci_upper"]
    assert year["p_value"] < 0.01 and year["ci_method"] == "wald"


def test_rate_of_new_microbleeds_per_year(follow_up):
    models, terms = _models_and_terms(follow_up["written"])
    rate = models[(models["analysis"] == "new_lesion_rate")
                  & (models["family"] == "poisson")].iloc[0]
    assert rate["offset"] == "log_interval_years" and rate["fitted"]
    n_intervals = int((follow_up["sessions"]["session_id"] != "ses-1").sum())
    assert rate["n_used"] == n_intervals
    group = terms[(terms["model_id"] == rate.name)
                  & (terms["term"] == "group[T.itp]")].iloc[0]
    assert group["irr_ci_lower"] < np.exp(LOG_IRR_NEW_ITP) < group["irr_ci_upper"]
    intercept = terms[(terms["model_id"] == rate.name)
                      & (terms["term"] == "Intercept")].iloc[0]
    assert intercept["irr_ci_lower"] < 5 and intercept["irr_ci_upper"] > 0.01


def test_same_inputs_same_longitudinal_tables(follow_up, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(follow_up["out"], out)
    written = run_group(out, follow_up["bids"])
    for key in ("longitudinal_models", "longitudinal", "report"):
        assert (Path(written[key]).read_bytes()
                == Path(follow_up["written"][key]).read_bytes()), key


def test_session_dates_from_bids_sessions_tsv_or_left_out(tmp_path):
    """Without days in the session tables the dates come from sub-<label>_sessions.tsv;
    without either the time is left out (said in a note); intervals of unknown length
    are left out of the rate model (note)."""
    bids, out, _table, sessions = follow_up_cohort(tmp_path / "undated", n=24, seed=8,
                                                   dated=False)
    written = run_group(out, bids)
    models, _ = _models_and_terms(written)
    gee = models[models["analysis"] == "repeated_counts"].iloc[0]
    assert "years_since_first" not in gee["formula"]
    rate = models[models["analysis"] == "new_lesion_rate"].iloc[0]
    assert not rate["fitted"] and rate["n_used"] == 0
    notes = json.loads(Path(written["provenance"]).read_text())["notes"]
    assert any("no session dates" in n for n in notes)
    assert any("unknown length" in n for n in notes)

    for pid, member in sessions.groupby("participant_id"):
        if len(member) > 1:
            days = [0, 200, 500, 900][: len(member)]
            (bids / pid).mkdir()
            times = [(pd.Timestamp("2021-03-01") + pd.Timedelta(days=d)).isoformat()
                     for d in days]
            times[0] = times[0][:10]  # a date without time: ISO 8601 as well
            pd.DataFrame({"session_id": member["session_id"], "acq_time": times}).to_csv(
                bids / pid / f"{pid}_sessions.tsv", sep="\t", index=False)
    written = run_group(out, bids)
    models, terms = _models_and_terms(written)
    gee = models[models["analysis"] == "repeated_counts"].iloc[0]
    assert gee["formula"].endswith("+ years_since_first") and gee["n_dropped"] == 0


def test_no_repeated_sessions_no_longitudinal_tables(tmp_path):
    rng = np.random.default_rng(2)
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    for label, n in (("01", 1), ("02", 3)):
        write_unit(out / f"sub-{label}" / "ses-1" / "anat", f"sub-{label}_ses-1",
                   random_cmbs(n, rng), rng=rng)
    written = run_group(out, bids)
    assert "longitudinal" not in written and not list(out.glob("group_longitudinal*"))
    assert "No participant has two or more sessions" in Path(
        written["report"]).read_text()


def _coverage_tree(root):
    """Eight participants, one of them with half of the brain covered, one written by
    an older cmbprep (no brain_coverage_fraction), one failing registration QC."""
    rng = np.random.default_rng(4)
    bids, out = root / "bids", root / "out"
    bids.mkdir(parents=True)
    counts = [1, 4, 0, 2, 6, 3, 0, 5]
    ages = [40, 70, 35, 55, 75, 60, 45, 68]
    fractions = [1.0, 0.5, 1.0, None, 1.0, 1.0, 0.9, 1.0]
    for i, (n, fraction) in enumerate(zip(counts, fractions), 1):
        summary = {} if fraction is None else {"brain_coverage_fraction": fraction}
        if i == 8:
            summary["registration_ok"] = False
        write_unit(out / f"sub-{i:02d}" / "anat", f"sub-{i:02d}", random_cmbs(n, rng),
                   rng=rng, summary=summary)
    (bids / "participants.tsv").write_text("participant_id\tage\n" + "".join(
        f"sub-{i:02d}\t{a}\n" for i, a in enumerate(ages, 1)))
    return bids, out, counts, ages, fractions


def test_partial_coverage_offset_and_failed_qc(tmp_path):
    bids, out, counts, ages, fractions = _coverage_tree(tmp_path)
    written = run_group(out, bids)
    table = _read(written["group_cmb"])
    assert list(table["brain_coverage_fraction"].fillna(-1)) == [
        -1 if f is None else f for f in fractions]
    models = _read(written["regression_models"])
    age_model = models[models["covariate"] == "age"].iloc[0]
    assert age_model["offset"] == "log_brain_coverage" and age_model["n_used"] == 7
    direct = pd.DataFrame({"n_cmb": counts[:7], "age": ages[:7],
                           "off": np.log([1.0 if f is None else f
                                          for f in fractions[:7]])})
    expected = stats.fit_count_model(direct, "n_cmb ~ age", offset="off").terms
    terms = _read(written["regression"])
    ours = terms[terms["model_id"] == age_model["model_id"]]
    np.testing.assert_allclose(ours["coef"], expected["coef"], rtol=0, atol=1e-9)
    prevalence = _read(written["prevalence"])
    assert prevalence.iloc[0]["n_participants"] == 7  # sub-08 failed registration QC
    provenance = json.loads(Path(written["provenance"]).read_text())
    assert provenance["excluded_failed_qc"] == ["sub-08"]
    assert provenance["coverage_offset"] is True
    assert any("older cmbprep" in n for n in provenance["notes"])
    assert "log(brain_coverage_fraction)" in Path(written["report"]).read_text()

    kept = run_group(out, bids, keep_failed_qc=True)
    assert _read(kept["prevalence"]).iloc[0]["n_participants"] == 8
    provenance = json.loads(Path(kept["provenance"]).read_text())
    assert provenance["excluded_failed_qc"] == [] and provenance["keep_failed_qc"]
    assert any("--keep-failed-qc" in n for n in provenance["notes"])


def test_count_sources_reported_and_reviewed_only(tmp_path):
    """A reviewed unit among automatic ones: the models count each source and a note
    says they are mixed; --reviewed-only keeps the reviewed one only."""
    bids, out, *_ = _coverage_tree(tmp_path)
    anat = out / "sub-02" / "anat"
    reviewed = _read(anat / "sub-02_desc-candidates_cmb.tsv")
    reviewed["status"] = ["cmb"] * 3 + ["rejected"] * (len(reviewed) - 3)
    reviewed.to_csv(anat / "sub-02_desc-reviewed_cmb.tsv", sep="\t", index=False,
                    na_rep="n/a")
    written = run_group(out, bids)
    models = _read(written["regression_models"])
    age_model = models[models["covariate"] == "age"].iloc[0]
    assert (age_model["n_rater"], age_model["n_automatic"]) == (1, 6)
    notes = json.loads(Path(written["provenance"]).read_text())["notes"]
    assert any("mix counts" in n for n in notes)
    assert sum("6 of 7 analysed unit(s) are counted from the automatic" in n
               for n in notes) == 1

    written = run_group(out, bids, reviewed_only=True)
    assert _read(written["prevalence"]).iloc[0]["n_participants"] == 1
    models = _read(written["regression_models"])
    assert (models["n_automatic"].fillna(0) == 0).all()
    notes = json.loads(Path(written["provenance"]).read_text())["notes"]
    assert not any("counted from the automatic detection without" in n for n in notes)


def test_group_options_travel_from_the_command_line(tmp_path):
    """--covariate-selection, --keep-failed-qc and --reviewed-only reach the group level
    through ``cmbprep ... group`` (recorded in the provenance file)."""
    from cmbprep.cli.run import main

    from .test_group_cohort import synthesise_cohort

    bids, out, _truth = synthesise_cohort(tmp_path, n_patients=12, n_controls=4, seed=2)
    assert main([str(bids), str(out), "group"]) == 0
    default = json.loads((out / "group_cmb_provenance.json").read_text())
    assert (default["covariate_selection"], default["keep_failed_qc"],
            default["reviewed_only"]) == ("prespecified", False, False)
    assert main([str(bids), str(out), "group", "--covariate-selection", "univariate-p",
                 "--keep-failed-qc"]) == 0
    chosen = json.loads((out / "group_cmb_provenance.json").read_text())
    assert (chosen["covariate_selection"], chosen["keep_failed_qc"]) == (
        "univariate-p", True)
    # no unit was reviewed: --reviewed-only leaves nothing to analyse
    assert main([str(bids), str(out), "group", "--reviewed-only"]) == 0
    provenance = json.loads((out / "group_cmb_provenance.json").read_text())
    assert provenance["reviewed_only"] is True
    assert provenance["n_participants_analysed"] == 0
