"""Synthetic participant-output trees for the group-level tests and benchmark.

The trees follow the contract of ``docs/architecture.rst`` ("Participant outputs"):
``sub-<label>[/ses-<label>]/anat/<prefix>_desc-{cmb,candidates}_cmb.tsv`` (+ JSON) and
``<prefix>_desc-summary_cmb.json``. They are synthesised directly from a known Poisson
model of the CMB counts (the imaging pipeline is not run), so the group level's
regression can be checked against the true incidence-rate ratios.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

CMB_COLUMNS = ["cmb_id", "x", "y", "z", "i", "j", "k", "mni_x", "mni_y", "mni_z",
               "volume_mm3", "diameter_mm", "score", "region", "lobe", "hemisphere",
               "mars_category"]
LOBAR_REGIONS = {"frontal": "Frontal_Sup", "parietal": "Parietal_Inf",
                 "temporal": "Temporal_Mid", "occipital": "Occipital_Mid",
                 "insula": "Insula"}
DEEP_REGIONS = ["Thalamus", "Putamen", "Caudate"]
INFRA_REGIONS = ["Cerebellum_Crus1", "Brainstem"]

#: The true model of :func:`synthesise_cohort` (log incidence-rate ratios).
TRUE_LOG_IRR = {"age_per_year": 0.03, "sex_M": 0.4, "platelet_nadir_per_unit": -0.06,
                "smog_ge_2": 0.5, "bmi_per_unit": 0.0}


def write_unit(anat_dir, prefix, cmbs, *, n_rejected=0, n_review=0, summary=None,
               rng=None):
    """Write one unit's cmb, candidates and summary files; return the cmb TSV path."""
    rng = rng or np.random.default_rng(0)
    anat_dir = Path(anat_dir)
    anat_dir.mkdir(parents=True, exist_ok=True)
    cmbs = pd.DataFrame(cmbs, columns=CMB_COLUMNS)
    cmb_path = anat_dir / f"{prefix}_desc-cmb_cmb.tsv"
    cmbs.to_csv(cmb_path, sep="\t", index=False, na_rep="n/a")
    (anat_dir / f"{prefix}_desc-cmb_cmb.json").write_text(json.dumps(
        {c: {"Description": c} for c in CMB_COLUMNS}))
    extra = []
    for n, status in ((n_rejected, "rejected"), (n_review, "review")):
        for _ in range(n):
            extra.append({"candidate_id": 0, "x": rng.uniform(-60, 60), "y": 0.0,
                          "z": 0.0, "score": rng.uniform(0, 1), "status": status,
                          "mars_category": "deep", "lobe": "n/a", "volume_mm3": 3.0})
    candidates = pd.concat([
        cmbs.assign(status="cmb").rename(columns={"cmb_id": "candidate_id"}),
        pd.DataFrame(extra)], ignore_index=True)
    candidates["candidate_id"] = np.arange(1, len(candidates) + 1)
    candidates.to_csv(anat_dir / f"{prefix}_desc-candidates_cmb.tsv", sep="\t",
                      index=False, na_rep="n/a")
    by_mars = {k: int((cmbs["mars_category"] == k).sum())
               for k in ("lobar", "deep", "infratentorial")}
    content = {"n_cmb": int(len(cmbs)), "counts_by_mars": by_mars, "detector": "cmbprep",
               "registration_ok": True, "registration_warnings": [],
               "regions_not_covered": [], "count_source": "automatic"}
    content.update(summary or {})
    (anat_dir / f"{prefix}_desc-summary_cmb.json").write_text(json.dumps(content))
    return cmb_path


def random_cmbs(n, rng, p_lobar=0.6, p_deep=0.25):
    """``n`` plausible CMB rows (MARS category, lobe, volume...)."""
    rows = []
    for cmb_id in range(1, n + 1):
        u = rng.uniform()
        if u < p_lobar:
            category = "lobar"
            lobe = list(LOBAR_REGIONS)[rng.integers(0, 5)]
            region = LOBAR_REGIONS[lobe]
        elif u < p_lobar + p_deep:
            category, lobe = "deep", None
            region = DEEP_REGIONS[rng.integers(0, len(DEEP_REGIONS))]
        else:
            category, lobe = "infratentorial", None
            region = INFRA_REGIONS[rng.integers(0, len(INFRA_REGIONS))]
        xyz = rng.uniform(-60, 60, 3)
        diameter = rng.uniform(2, 8)
        rows.append({"cmb_id": cmb_id, "x": xyz[0], "y": xyz[1], "z": xyz[2],
                     "i": int(rng.integers(0, 200)), "j": int(rng.integers(0, 200)),
                     "k": int(rng.integers(0, 100)), "mni_x": xyz[0], "mni_y": xyz[1],
                     "mni_z": xyz[2], "volume_mm3": np.pi / 6 * diameter ** 3,
                     "diameter_mm": diameter, "score": rng.uniform(0.5, 1),
                     "region": region, "lobe": lobe,
                     "hemisphere": "left" if xyz[0] < 0 else "right",
                     "mars_category": category})
    return rows


def synthesise_cohort(root, n_patients=60, n_controls=20, seed=0, intercept=-0.2,
                      write_outputs=True):
    """A BIDS root with ``participants.tsv`` and a cmbprep output tree from a known model.

    Patients' counts are Poisson with ``log mu = intercept + 0.03 (age - 50)
    + 0.4 [sex = M] - 0.06 platelet_nadir + 0.5 [smog >= 2]`` (``bmi`` has no effect);
    controls have ``log mu = intercept - 3`` and no platelet nadir or SMOG (``n/a``).

    Returns
    -------
    (Path, Path, pandas.DataFrame)
        ``bids_dir``, ``output_dir`` and the participants table with the true counts.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    bids_dir, output_dir = root / "bids", root / "out"
    bids_dir.mkdir(parents=True, exist_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    n = n_patients + n_controls
    width = max(2, len(str(n)))
    table = pd.DataFrame({
        "participant_id": [f"sub-{i:0{width}d}" for i in range(1, n + 1)],
        "group": ["itp"] * n_patients + ["control"] * n_controls,
        "age": np.round(rng.normal(50, 15, n)),
        "sex": rng.choice(["F", "M"], n),
        "platelet_nadir": np.round(rng.gamma(2.0, 6.0, n), 1),
        "smog": rng.integers(0, 5, n).astype(float),
        "bmi": np.round(rng.normal(25, 4, n), 1),
    })
    patient = table["group"] == "itp"
    t = TRUE_LOG_IRR
    log_mu = (intercept + t["age_per_year"] * (table["age"] - 50)
              + t["sex_M"] * (table["sex"] == "M")
              + t["platelet_nadir_per_unit"] * table["platelet_nadir"]
              + t["smog_ge_2"] * (table["smog"] >= 2) + t["bmi_per_unit"] * table["bmi"])
    log_mu = np.where(patient, log_mu, intercept - 3.0)
    table["true_count"] = rng.poisson(np.exp(log_mu))
    table.loc[~patient, ["platelet_nadir", "smog"]] = np.nan
    table.drop(columns="true_count").to_csv(bids_dir / "participants.tsv", sep="\t",
                                            index=False, na_rep="n/a")
    (bids_dir / "participants.json").write_text(json.dumps({
        "age": {"Description": "age", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
        "group": {"Description": "group", "Levels": {"control": "control",
                                                     "itp": "immune thrombocytopenia"}},
        "platelet_nadir": {"Description": "lowest platelet count", "Units": "10^9/L"},
    }))
    if write_outputs:
        for pid, count in zip(table["participant_id"], table["true_count"]):
            write_unit(output_dir / pid / "anat", pid, random_cmbs(int(count), rng),
                       n_rejected=int(rng.integers(0, 4)), rng=rng)
    return bids_dir, output_dir, table


def test_synthetic_tree_follows_contract(tmp_path):
    bids_dir, output_dir, table = synthesise_cohort(tmp_path, n_patients=4, n_controls=2)
    for pid, count in zip(table["participant_id"], table["true_count"]):
        anat = output_dir / pid / "anat"
        cmbs = pd.read_csv(anat / f"{pid}_desc-cmb_cmb.tsv", sep="\t")
        assert list(cmbs.columns) == CMB_COLUMNS
        assert len(cmbs) == count
        candidates = pd.read_csv(anat / f"{pid}_desc-candidates_cmb.tsv", sep="\t")
        assert (candidates["status"] == "cmb").sum() == count
        summary = json.loads((anat / f"{pid}_desc-summary_cmb.json").read_text())
        assert summary["n_cmb"] == count
    covariates = pd.read_csv(bids_dir / "participants.tsv", sep="\t")
    assert list(covariates["participant_id"]) == list(table["participant_id"])
