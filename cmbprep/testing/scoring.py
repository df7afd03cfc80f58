"""Score detections against phantom ground truth (used by tests, benchmark and training).

Truth lesions come from :func:`cmbprep.testing.phantom.simulate_subject` (``truth`` table).
A microbleed is *visible* when its ``apparent_diameter_mm`` is > 0, i.e. it lowers the
noise-free magnitude below 50 % of the lesion-free magnitude in at least one voxel at the
longest echo. Invisible microbleeds are "don't care" truth: a detection matched to one is
neither a true nor a false positive, and they are not counted in the sensitivity (a rater
could not label them either). Both counts are reported by :func:`summarise`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from ..algorithms.longitudinal import match_one_to_one

__all__ = ["label_detections", "match_detections", "matching_radius_mm",
           "scan_bootstrap", "sensitivity_at_fp_rate", "summarise"]

#: Matching tolerance: max(MIN_RADIUS_MM, apparent radius + MARGIN_MM).
MIN_RADIUS_MM = 3.0
MARGIN_MM = 1.5
#: Apparent diameter (mm) from which a microbleed counts as large (``sensitivity_ge3mm``).
LARGE_DIAMETER_MM = 3.0


def matching_radius_mm(apparent_diameter_mm):
    """Per-lesion matching radius, max(3 mm, apparent radius + 1.5 mm)."""
    d = np.asarray(apparent_diameter_mm, dtype=float)
    return np.maximum(MIN_RADIUS_MM, d / 2.0 + MARGIN_MM)


def match_detections(detected_xyz, truth_xyz, radius_mm):
    """One-to-one matching of detections to truth within a per-truth radius.

    Parameters
    ----------
    detected_xyz : (N, 3) array_like
        Detection centres, scanner mm.
    truth_xyz : (M, 3) array_like
        Truth centres, scanner mm.
    radius_mm : (M,) array_like
        Largest allowed distance for each truth lesion.

    Returns
    -------
    list of (truth_index, detection_index)
        Pairs minimising the total distance (Hungarian algorithm).
    """
    radius = np.asarray(radius_mm, dtype=float).reshape(-1, 1)
    return match_one_to_one(truth_xyz, detected_xyz, radius)


def label_detections(detections, truth, *, one_to_one=True):
    """Label each detection by the truth lesion it matches.

    Detections are matched first to visible microbleeds, then (the rest) to invisible
    microbleeds, then to calcifications.

    Parameters
    ----------
    detections : pandas.DataFrame
        With ``x y z`` (scanner mm).
    truth : pandas.DataFrame
        Phantom truth with ``kind x y z apparent_diameter_mm``.
    one_to_one : bool
        ``True`` (scoring): at most one detection per lesion. ``False`` (training
        labels): every detection within a lesion's radius takes the nearest lesion.

    Returns
    -------
    labels : ndarray of str, one per detection
        ``cmb``, ``invisible_cmb``, ``calcification`` or ``none``.
    truth_match : ndarray of int, one per detection
        Row position in ``truth`` of the matched lesion (-1 if none).
    """
    det_xyz = detections[["x", "y", "z"]].to_numpy(float) if len(detections) else \
        np.zeros((0, 3))
    labels = np.full(len(det_xyz), "none", dtype=object)
    which = np.full(len(det_xyz), -1, dtype=int)
    truth = truth.reset_index(drop=True)
    visible = (truth["kind"] == "cmb") & (truth["apparent_diameter_mm"] > 0)
    invisible = (truth["kind"] == "cmb") & ~(truth["apparent_diameter_mm"] > 0)
    groups = [("cmb", visible), ("invisible_cmb", invisible),
              ("calcification", truth["kind"] == "calcification")]
    for name, sel in groups:
        t_idx = np.flatnonzero(sel.to_numpy())
        free = np.flatnonzero(labels == "none")
        if len(t_idx) == 0 or len(free) == 0:
            continue
        t = truth.iloc[t_idx]
        t_xyz = t[["x", "y", "z"]].to_numpy(float)
        radius = matching_radius_mm(t["apparent_diameter_mm"])
        if one_to_one:
            pairs = match_detections(det_xyz[free], t_xyz, radius)
        else:
            dist = np.linalg.norm(t_xyz[:, None] - det_xyz[free][None], axis=2)
            dist = np.where(dist <= radius[:, None], dist, np.inf)
            nearest = np.argmin(dist, axis=0)
            pairs = [(int(r), c) for c, r in enumerate(nearest) if np.isfinite(dist[r, c])]
        for r, c in pairs:
            labels[free[c]] = name
            which[free[c]] = t_idx[r]
    return labels, which


def _match_scans(per_scan):
    """Match each scan's detections to its truth: one row per true microbleed (found or
    not), false-positive and calcification counts, and (truth, detected) MARS pairs."""
    lesions, fp_control, fp_total, calc_hits, calc_total = [], [], 0, 0, 0
    mars_pairs = []
    for scan in per_scan:
        truth = scan["truth"].reset_index(drop=True)
        det = scan["detections"].reset_index(drop=True)
        labels, which = label_detections(det, truth)
        cmb_rows = np.flatnonzero(truth["kind"].to_numpy() == "cmb")
        found = set(which[np.isin(labels, ["cmb", "invisible_cmb"])])
        for r in cmb_rows:
            lesions.append({
                "protocol": scan.get("protocol", "n/a"),
                "apparent_diameter_mm": float(truth.at[r, "apparent_diameter_mm"]),
                "mars_category": truth.at[r, "mars_category"],
                "found": r in found,
            })
        for d in np.flatnonzero(labels == "cmb"):
            if "mars_category" in det.columns:
                mars_pairs.append((truth.at[which[d], "mars_category"],
                                   det.at[d, "mars_category"]))
        fp = int(np.sum((labels == "none") | (labels == "calcification")))
        fp_total += fp
        if len(cmb_rows) == 0:
            fp_control.append(fp)
        calc_hits += int(np.sum(labels == "calcification"))
        calc_total += int((truth["kind"] == "calcification").sum())
    les = pd.DataFrame(lesions, columns=["protocol", "apparent_diameter_mm",
                                         "mars_category", "found"])
    counts = {"fp_total": fp_total, "fp_control": fp_control, "calc_hits": calc_hits,
              "calc_total": calc_total}
    return les, counts, mars_pairs


def _visible_and_large(les):
    """Boolean rows of ``les`` (:func:`_match_scans`): visible microbleeds, and those
    of at least :data:`LARGE_DIAMETER_MM` apparent diameter."""
    diameter = les["apparent_diameter_mm"]
    return diameter > 0, diameter >= LARGE_DIAMETER_MM


def _detection_block(les, sel, fp_total):
    """Sensitivity, precision and F1 with the microbleeds ``sel`` as truth."""
    n = int(sel.sum())
    tp = int(les.loc[sel, "found"].sum())
    sens = tp / n if n else float("nan")
    prec = tp / (tp + fp_total) if tp + fp_total else float("nan")
    f1 = 2 * sens * prec / (sens + prec) if n and (sens + prec) > 0 else 0.0
    return {"n_cmbs": n, "true_positives": tp, "sensitivity": sens,
            "precision": prec, "f1": f1}


def summarise(per_scan):
    """Detection measures over scans.

    Parameters
    ----------
    per_scan : list of dict
        One per scan with ``truth`` (phantom truth table), ``detections`` (accepted
        detections with ``x y z``) and optionally ``protocol`` and, for MARS agreement,
        a ``mars_category`` column in ``detections``.

    Returns
    -------
    dict
        ``visible`` and ``all`` blocks (sensitivity, precision, F1 with truth = visible
        or all microbleeds), false positives per scan and per control scan,
        calcifications reported as microbleeds, sensitivity by apparent size, by MARS
        category and by protocol, and MARS-category agreement of matched detections.
    """
    les, counts, mars_pairs = _match_scans(per_scan)
    fp_total, fp_control = counts["fp_total"], counts["fp_control"]
    visible, big = _visible_and_large(les)
    small = visible & ~big

    def rate(sel):
        return float(les.loc[sel, "found"].mean()) if sel.any() else float("nan")

    agree = [a == b for a, b in mars_pairs]
    return {
        "visible": _detection_block(les, visible, fp_total),
        "all": _detection_block(les, pd.Series(True, index=les.index), fp_total),
        "false_positives": fp_total,
        "fp_per_scan": fp_total / len(per_scan) if per_scan else float("nan"),
        "fp_per_control_scan": float(np.mean(fp_control)) if fp_control else float("nan"),
        "n_control_scans": len(fp_control),
        "calcifications_as_cmb": counts["calc_hits"],
        "calcifications": counts["calc_total"],
        "sensitivity_ge3mm": rate(big), "n_ge3mm": int(big.sum()),
        "sensitivity_lt3mm_visible": rate(small), "n_lt3mm_visible": int(small.sum()),
        "sensitivity_invisible": rate(~visible), "n_invisible": int((~visible).sum()),
        "sensitivity_by_mars": {k: float(v) for k, v in
                                les[visible].groupby("mars_category")["found"].mean().items()},
        "sensitivity_by_protocol": {k: float(v) for k, v in
                                    les[visible].groupby("protocol")["found"].mean().items()},
        "mars_agreement": float(np.mean(agree)) if agree else float("nan"),
        "n_mars_pairs": len(agree),
    }


def sensitivity_at_fp_rate(per_scan, max_fp_per_scan):
    """One point of the free-response (FROC) curve: the highest sensitivity for visible
    microbleeds over score thresholds whose false positives per scan (non-lesion and
    calcification detections, as in :func:`summarise`) stay at or below
    ``max_fp_per_scan``.

    It is the operating point a study could choose for this kind of input (e.g. scanner
    SWI only), independent of the thresholds stored with the model.

    Parameters
    ----------
    per_scan : list of dict
        One per scan with ``truth`` and ``candidates`` (``x y z score``: the candidates a
        threshold may accept, e.g. the accepted and review ones; duplicates removed).
    max_fp_per_scan : float

    Returns
    -------
    dict
        ``sensitivity``, ``true_positives``, ``n_cmbs``, ``threshold`` (the lowest score
        accepted; ``nan`` when none is) and ``fp_per_scan`` at that threshold.
    """
    n_scans = len(per_scan)
    scores = np.unique(np.concatenate(
        [s["candidates"]["score"].to_numpy(float) for s in per_scan] or [np.zeros(0)]))

    def point(threshold):
        # the matching and counting of summarise(): same truth, same false positives
        les, counts, _ = _match_scans([
            {"truth": s["truth"],
             "detections": s["candidates"][s["candidates"]["score"] >= threshold]}
            for s in per_scan])
        visible, _ = _visible_and_large(les)
        return int((les["found"] & visible).sum()), int(visible.sum()), counts["fp_total"]

    _, n_cmbs, _ = point(np.inf)
    best = {"sensitivity": 0.0 if n_cmbs else float("nan"), "true_positives": 0,
            "n_cmbs": n_cmbs, "threshold": float("nan"), "fp_per_scan": 0.0}
    for threshold in scores[::-1]:  # from the strictest down; stop past the limit
        tp, _, fp = point(threshold)
        if fp > max_fp_per_scan * n_scans:
            break
        if tp > best["true_positives"] or np.isnan(best["threshold"]):
            best = {"sensitivity": tp / n_cmbs if n_cmbs else float("nan"),
                    "true_positives": tp, "n_cmbs": n_cmbs, "threshold": float(threshold),
                    "fp_per_scan": fp / n_scans}
    return best


def scan_bootstrap(per_scan, *, n_resamples=2000, seed=0, level=0.95, min_scans=10):
    """Percentile intervals of the main measures of :func:`summarise`, with the scan as
    the unit: the scans are drawn with replacement ``n_resamples`` times and the measures
    recomputed from their counts (matching as in :func:`summarise`, once per scan).

    Microbleeds of one scan are not independent (same protocol, same veins), so the scan,
    not the lesion, is resampled; on 17 scans the interval says how far a figure could
    move on another 17 scans of the same kind.

    Parameters
    ----------
    per_scan : list of dict
        As for :func:`summarise`.
    n_resamples : int
    seed : int
        Seed of the resampling (same inputs and seed, same interval).
    level : float
        Coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
    min_scans : int
        Fewer scans give no interval (NaN): resampling a handful of scans understates
        the spread.

    Returns
    -------
    dict
        ``f1``, ``sensitivity`` (visible microbleeds), ``sensitivity_ge3mm``,
        ``fp_per_scan`` and ``fp_per_control_scan``: each ``[low, high]`` (NaN when no
        resample defines it, or with fewer than ``min_scans`` scans), with ``n_scans``,
        ``n_resamples`` and ``level``.
    """
    rows = []
    for scan in per_scan:
        les, counts, _ = _match_scans([scan])
        visible, big = _visible_and_large(les)
        rows.append((visible.sum(), (les["found"] & visible).sum(), big.sum(),
                     (les["found"] & big).sum(), counts["fp_total"], len(les) == 0))
    c = np.asarray(rows, dtype=float).reshape(-1, 6)
    n_scans = len(c)
    out = {"n_scans": n_scans, "n_resamples": int(n_resamples), "level": float(level)}
    keys = ("f1", "sensitivity", "sensitivity_ge3mm", "fp_per_scan", "fp_per_control_scan")
    if n_scans < max(int(min_scans), 1):
        return dict(out, **{k: [float("nan")] * 2 for k in keys})
    draw = np.random.default_rng(seed).integers(0, n_scans, size=(int(n_resamples), n_scans))
    n_vis, tp, n_big, tp_big, fp, control = (c[draw, j].sum(axis=1) for j in range(6))
    fp_control = (c[draw, 4] * c[draw, 5]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {
            "f1": np.where(n_vis > 0, 2 * tp / (n_vis + tp + fp), np.nan),
            "sensitivity": tp / n_vis,
            "sensitivity_ge3mm": tp_big / n_big,
            "fp_per_scan": fp / n_scans,
            "fp_per_control_scan": fp_control / control,
        }
    tail = 100 * (1 - level) / 2
    for key in keys:
        v = values[key][np.isfinite(values[key])]
        out[key] = ([float(x) for x in np.percentile(v, [tail, 100 - tail])] if len(v)
                    else [float("nan")] * 2)
    return out
