"""Does the classifier read the distance to the brain edge as a phantom placement rule?
(issue 11; a diagnosis, nothing here is shipped)

The phantom draws lesion centres from template regions, away from veins, and so puts
almost no microbleed near the brain-mask edge; juxtacortical microbleeds (lobar, the
ITP study's finding) lie 1-3 mm from it in real brains. Three measures:

1. ``--cache``: how the candidates of the training cache's training and validation scans
   (not screened out) are spread over ``distance_to_edge_mm``, by truth.
2. ``--cache``: the packaged model's scores of the candidates on visible microbleeds (and
   on no lesion) that lie >= 6 mm from the edge, with ``distance_to_edge_mm`` set to 5,
   3, 2 and 1 mm; the validation scans of the families it learned and, apart, every scan
   of the families it never saw (D, G, H).
3. ``--real-background``: romeo-small with the lesions of
   ``benchmarks/real_background.py`` (20 rounds, same seeds), the visible microbleeds
   accepted as measured and with every candidate's ``distance_to_edge_mm`` raised to at
   least 6 mm (duplicates and screened-out candidates never accepted)::

    .venv/bin/python benchmarks/edge_distance.py --cache /work/train/cache --real-background
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from cmbprep.algorithms.detection.classifier import DEFAULT_MODEL_PATH, load_model
from cmbprep.testing import detector_training as dt

FAR_MM = 6.0
EDGE_BINS = [0, 1, 2, 3, 4, 6, 10, np.inf]


def spread_by_truth(cand):
    """Candidates per ``distance_to_edge_mm`` bin (rows) and truth (columns)."""
    bins = pd.cut(cand["distance_to_edge_mm"], EDGE_BINS, right=False)
    return cand.groupby([bins, cand["truth"]], observed=False).size().unstack(fill_value=0)


def accepted(cand, model, distance_mm=None):
    """Which of ``cand`` the model accepts (each by its part's threshold) and their
    scores, with ``distance_to_edge_mm`` replaced by ``distance_mm`` when given."""
    if distance_mm is not None:
        cand = cand.assign(distance_to_edge_mm=distance_mm)
    score = dt.system_scores(cand, model)
    accept = np.where(cand["has_phase"], model["phase"]["accept_score"],
                      model["no_phase"]["accept_score"])
    return score >= accept, score


def accepted_share(cand, model, distance_mm=None):
    """Share of ``cand`` the model accepts and the median score (:func:`accepted`)."""
    keep, score = accepted(cand, model, distance_mm)
    return float(np.mean(keep)), float(np.median(score))


def cache_measures(cache, model):
    unseen = {dt.HELD_OUT_FAMILY, *dt.TEST_FAMILIES}
    specs = [s for c in ("train", "validation") for s in dt.scan_list(c)]
    cand, _ = dt.collect(specs, cache)
    cand = cand[~cand["screened_out"].astype(bool)].reset_index(drop=True)
    learned = cand[~cand["family"].isin(unseen)]
    print("Candidates (training and validation scans of the families learned, not screened "
          "out) by distance to the brain edge (mm) and truth:")
    print(spread_by_truth(learned).to_string())
    validation = {(s.family, s.seed) for s in dt.scan_list("validation")}
    is_val = pd.Series(list(zip(cand["family"], cand["seed"]))).isin(validation).to_numpy()
    cohorts = {"validation": cand[is_val & ~cand["family"].isin(unseen).to_numpy()],
               "unseen D G H": cand[cand["family"].isin(unseen)]}
    for name, group in cohorts.items():
        for truth in ("cmb", "none"):
            sel = group[(group["distance_to_edge_mm"] >= FAR_MM) & (group["truth"] == truth)]
            share, median = accepted_share(sel, model)
            line = [f"{name:13s} {truth:4s} n={len(sel):6d}: accepted {share:.3f} "
                    f"(median score {median:.3f}) as measured"]
            for d in (5.0, 3.0, 2.0, 1.0):
                share, median = accepted_share(sel, model, d)
                line.append(f"{share:.3f} ({median:.3f}) at {d:g} mm")
            print("; ".join(line), flush=True)


def real_background_measures(model, model_path=None, rounds=20):
    import real_background as rb

    mag, phase, affine = rb.load()
    totals = {"as measured": np.zeros(3, int), f"edge >= {FAR_MM:g} mm": np.zeros(3, int)}
    n_visible = n_large = 0
    for _, truth, result in rb.injected_rounds(mag, phase, affine, rounds, model=model_path):
        cand = result.candidates.assign(
            has_phase=bool(result.parameters.get("phase_used", False)))
        cand["screened_out"] = (cand["screened_out"].astype(bool)
                                | (cand["reason"] == "duplicate"))
        floored = np.maximum(cand["distance_to_edge_mm"], FAR_MM)
        for name, distance in zip(totals, (None, floored)):
            keep, _ = accepted(cand, model, distance)
            rows, counts = rb.score_round(cand[keep].assign(status="cmb"), truth)
            visible = [r for r in rows if r["apparent_diameter_mm"] > 0]
            totals[name] += [sum(r["found"] for r in visible),
                             sum(r["found"] for r in visible if r["apparent_diameter_mm"] >= 3),
                             counts["false_positives"]]
        visible = truth[(truth["kind"] == "cmb") & (truth["apparent_diameter_mm"] > 0)]
        n_visible += len(visible)
        n_large += int((visible["apparent_diameter_mm"] >= 3).sum())
    for name, (found, large, fp) in totals.items():
        print(f"real background, {name}: visible microbleeds accepted {found}/{n_visible}, "
              f">= 3 mm {large}/{n_large}, false positives {fp} in {rounds} crops", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="training cache (measures 1 and 2)")
    parser.add_argument("--real-background", action="store_true", help="measure 3")
    parser.add_argument("--model", default=None, help="default: the packaged model")
    args = parser.parse_args(argv)
    model = load_model(args.model or DEFAULT_MODEL_PATH)
    if args.cache:
        cache_measures(args.cache, model)
    if args.real_background:
        real_background_measures(model, args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
