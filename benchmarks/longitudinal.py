"""Follow-up pairs: are persistent and new microbleeds told apart? (issue 15; by hand)

    .venv/bin/python benchmarks/longitudinal.py [--subjects 6] [--seed 0]
                                                 [--work DIR] [--json OUT] [--reuse]

Writes ``--subjects`` simulated participants scanned twice
(:func:`cmbprep.testing.longitudinal.write_longitudinal_dataset`, defaults: 4 microbleeds
from the first session on and 2 new in the second; session 1 ``small`` protocol 1.5 mm
isotropic TE 20 ms, session 2 1.2x1.2x1.8 mm TE 25 ms six months later; another head pose,
bias and noise), runs ``cmbprep bids out participant`` on them and scores each
participant's ``_desc-longitudinal_cmb.tsv`` against the truth.

Scoring: every followed lesion is carried into session 2's space through the written
session transform and matched one-to-one to session 2's simulated lesions (all of them
exist there) within max(3 mm, apparent radius + 1.5 mm)
(:func:`cmbprep.testing.scoring.match_detections`). Only *visible* lesions count
(apparent diameter > 0 in each session they exist in). Sensitivity for persistent
lesions: visible persistent lesions labelled ``persistent``; for new lesions: visible new
lesions labelled ``new``. False new: lesions labelled ``new`` that are not a simulated
new lesion (a persistent lesion missed in session 1, or a false detection). This is the
project's own generator: an in-family figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import numpy as np
import pandas as pd

from cmbprep.algorithms.registration import map_points
from cmbprep.cli.run import main as cmbprep
from cmbprep.testing.longitudinal import write_longitudinal_dataset
from cmbprep.testing.scoring import match_detections, matching_radius_mm
from cmbprep.utils.tables import read_tsv


def score_participant(bids, out, subject):
    """Counts for one participant (see the module docstring)."""
    truth_dir = bids / "derivatives" / "phantom-truth" / subject
    anat = out / subject / "anat"
    truth = read_tsv(truth_dir / f"{subject}_desc-longitudinal_cmb.tsv")
    first = read_tsv(truth_dir / "ses-01" / "anat" / f"{subject}_ses-01_desc-truth_cmb.tsv")
    second = read_tsv(truth_dir / "ses-02" / "anat" /
                      f"{subject}_ses-02_desc-truth_cmb.tsv")
    lesions = read_tsv(anat / f"{subject}_desc-longitudinal_cmb.tsv")
    sessions = read_tsv(anat / f"{subject}_desc-sessions_cmb.tsv")
    second = second[second["kind"] == "cmb"].reset_index(drop=True)
    visible = second["apparent_diameter_mm"].to_numpy(float) > 0
    n_first = int((first["kind"] == "cmb").sum())
    visible[:n_first] &= first.loc[first["kind"] == "cmb",
                                   "apparent_diameter_mm"].to_numpy(float) > 0
    forward = anat / f"{subject}_from-ses02_to-ses01_mode-image_xfm.h5"
    in_second = map_points(lesions[["x", "y", "z"]].to_numpy(float), forward)
    pairs = dict(match_detections(
        in_second, second[["x", "y", "z"]].to_numpy(float),
        matching_radius_mm(second["apparent_diameter_mm"].to_numpy(float))))
    label_of_truth = {t: lesions["label"].iloc[d] for t, d in pairs.items()}
    matched_detections = {d: t for t, d in pairs.items()}
    true_label = truth["label"].tolist()
    row = {"participant": subject,
           "registration_residual_mm": float(sessions["registration_residual_mm"].iloc[1])}
    for kind in ("persistent", "new"):
        wanted = [t for t in range(len(second)) if visible[t] and true_label[t] == kind]
        row[f"n_{kind}"] = len(wanted)
        row[f"found_{kind}"] = sum(label_of_truth.get(t) == kind for t in wanted)
    row["false_new"] = sum(
        1 for d, label in enumerate(lesions["label"]) if label == "new" and
        (d not in matched_detections or true_label[matched_detections[d]] != "new"))
    row["not_seen_again"] = int((lesions["label"] == "not_seen_again").sum())
    row["n_lesions_followed"] = len(lesions)
    return row


def run(subjects, seed, work, reuse=False):
    bids = work / "bids"
    if not (reuse and (bids / "participants.tsv").exists()):
        write_longitudinal_dataset(bids, n_subjects=subjects, seed=seed)
    start = time.monotonic()
    code = cmbprep([str(bids), str(work / "out"), "participant", "-w", str(work / "work"),
                    "--nprocs", "2", "--omp-nthreads", "1"])
    elapsed = time.monotonic() - start
    if code != 0:
        raise SystemExit(f"cmbprep participant exited {code}")
    rows = [score_participant(bids, work / "out", f"sub-{s + 1:02d}")
            for s in range(subjects)]
    table = pd.DataFrame(rows)
    totals = {
        "participants": subjects,
        "sensitivity_persistent": table["found_persistent"].sum() / table["n_persistent"].sum(),
        "sensitivity_new": table["found_new"].sum() / table["n_new"].sum(),
        "false_new_per_participant": table["false_new"].mean(),
        "not_seen_again_per_participant": table["not_seen_again"].mean(),
        "residual_mm_median": float(np.median(table["registration_residual_mm"])),
        "residual_mm_max": float(table["registration_residual_mm"].max()),
        "participant_level_wall_s": round(elapsed, 1),
    }
    return table, totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cmbprep-bench-longitudinal"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the dataset already in --work (same --subjects and "
                             "--seed): a rerun with the same work folder then only "
                             "recomputes what the code change affects")
    args = parser.parse_args(argv)
    table, totals = run(args.subjects, args.seed, args.work, reuse=args.reuse)
    print(table.to_string(index=False))
    print(json.dumps({k: (round(float(v), 3) if isinstance(v, (float, np.floating)) else v)
                      for k, v in totals.items()}, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"participants": table.to_dict("records"),
                                         "totals": totals}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
