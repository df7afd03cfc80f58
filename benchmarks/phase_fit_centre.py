"""How much of the sphere fit's weakness on microbleeds is the centre it is given? (issue 11;
a measurement, nothing here is shipped)

For the candidates of the held-out and test families' cached scans with phase (D, G, H;
every candidate on a microbleed and 15 drawn per scan on no lesion), the detector's
sphere fit of the phase (:func:`cmbprep.algorithms.detection.context.phase_fit_features`,
``dipole_fit_r2``) is computed again

``at_centroid``
    at the candidate's centroid, as the detector does;
``at_truth``
    at the phantom's lesion centre (microbleeds only);
``best_shift``
    the best of the centroid moved by -0.5, 0 or +0.5 voxel along each axis (27 fits),
    a sphere fit with a free centre; with ``--slice-axis-only``, by 0, +-0.25 or +-0.5
    voxel along the slice axis alone (:func:`cmbprep.algorithms.arrays.slice_axis`; 5
    fits, what the branch ``experiment/phase-fit-free-centre`` does).

The fits here weight and mask the shell with the SWI's relative intensity (dark level 0.5)
rather than the detector's continuation level, so ``at_centroid`` (not the stored column) is
the baseline of the other two. It prints the medians by apparent size (< 3 mm, >= 3 mm) and
the ROC AUC of microbleed against no-lesion candidates. Reads the cached volumes and
candidate tables (``python -m cmbprep.testing.detector_training --cache DIR``); about 20 s
on 2 cores::

    python benchmarks/phase_fit_centre.py --cache /work/train/cache14
"""

from __future__ import annotations

import argparse
import itertools
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cmbprep.algorithms.arrays import b0_direction, slice_axis, voxel_sizes
from cmbprep.algorithms.detection import CMBPREP_PARAMETERS
from cmbprep.algorithms.detection.candidates import relative_intensity
from cmbprep.algorithms.detection.context import phase_fit_features
from cmbprep.testing import detector_training as dt

SHIFTS = [np.array(s, float) for s in itertools.product((-0.5, 0.0, 0.5), repeat=3)]
SLICE_SHIFTS = (0.0, -0.5, -0.25, 0.25, 0.5)
FAMILIES = ("D", "G", "H")
NO_LESION_PER_SCAN = 15


def scan_fits(tag, cache, slice_axis_only=False):
    """Fit rows of one cached scan (empty without phase)."""
    cache = Path(cache)
    cand = pd.read_csv(cache / f"cand_{tag}.csv", low_memory=False)
    cand = cand[~cand["screened_out"].astype(str).str.lower().isin(["true", "1"])]
    truth = pd.read_csv(cache / f"{tag}.csv")
    with np.load(cache / f"{tag}.npz") as d:
        if "phase" not in d.files:
            return []
        swi, phase, affine = d["swi"], d["phase"], d["affine"]
        brain = d["brain"].astype(bool)
    voxel_size = np.array(voxel_sizes(affine))
    b0 = b0_direction(affine)
    shifts = SHIFTS
    if slice_axis_only:
        shifts = [np.eye(3)[slice_axis(affine)] * s for s in SLICE_SHIFTS]
    rel = relative_intensity(swi.astype(np.float32), brain,
                             background_mm=CMBPREP_PARAMETERS["background_sigma_mm"],
                             voxel_size=tuple(voxel_size))
    weight = np.clip(rel, 0.0, 1.5)
    none = cand[cand["truth"] == "none"]
    chosen = pd.concat([cand[cand["truth"] == "cmb"],
                        none.sample(min(NO_LESION_PER_SCAN, len(none)), random_state=0)])
    rows = []
    for _, row in chosen.iterrows():
        radius = min(row["diameter_mm"] / 2, 4.0)

        def fit(centre):
            return phase_fit_features(phase, weight, centre, voxel_size, radius, b0, b0, 1,
                                      image=rel, dark_level=0.5)["dipole_fit_r2"]

        centroid = np.array([row["i"], row["j"], row["k"]], float)
        out = {"scan": tag, "truth": row["truth"], "at_centroid": fit(centroid),
               "best_shift": max(fit(centroid + s) for s in shifts)}
        if row["truth"] == "cmb":
            lesion = truth.iloc[int(row["truth_row"])]
            centre = lesion[["i", "j", "k"]].to_numpy(float)
            out.update(apparent_diameter_mm=float(lesion["apparent_diameter_mm"]),
                       at_truth=fit(centre),
                       centre_error_mm=float(np.linalg.norm((centre - centroid) * voxel_size)))
        rows.append(out)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--slice-axis-only", action="store_true",
                        help="shift the centre along the slice axis only")
    parser.add_argument("--csv", help="write the rows here")
    args = parser.parse_args(argv)
    tags = [f"{s.family}_{s.seed}" for c in ("train", "validation") for s in dt.scan_list(c)
            if s.family in FAMILIES and s.input_kind != "swi"]
    with Pool(args.jobs) as pool:
        rows = [r for scan in pool.map(partial(scan_fits, cache=args.cache,
                                                   slice_axis_only=args.slice_axis_only),
                                           tags)
                for r in scan]
    df = pd.DataFrame(rows)
    if args.csv:
        df.to_csv(args.csv, index=False)
    cmb, none = df[df["truth"] == "cmb"], df[df["truth"] == "none"]
    print(f"{df['scan'].nunique()} scans with phase of {', '.join(FAMILIES)}: "
          f"{len(cmb)} microbleed candidates, {len(none)} no-lesion candidates")
    print(f"no lesion: median r2 at the centroid {none['at_centroid'].median():.3f}, "
          f"best shift {none['best_shift'].median():.3f}")
    for name, sel in (("< 3 mm", cmb["apparent_diameter_mm"] < 3),
                      (">= 3 mm", cmb["apparent_diameter_mm"] >= 3)):
        part = cmb[sel]
        both = pd.concat([part, none])
        y = both["truth"] == "cmb"
        print(f"microbleeds {name} ({len(part)}): median r2 at the centroid "
              f"{part['at_centroid'].median():.3f}, at the true centre "
              f"{part['at_truth'].median():.3f}, best shift {part['best_shift'].median():.3f}; "
              f"centre error {part['centre_error_mm'].median():.2f} mm; AUC against no lesion: "
              f"centroid {roc_auc_score(y, both['at_centroid'].fillna(0)):.3f}, best shift "
              f"{roc_auc_score(y, both['best_shift'].fillna(0)):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
