"""Scores, thresholds and statuses of the default detector's candidates.

Two scorers: the packaged boosted-tree classifier (:mod:`.classifier`, the default) and
a rule-based score (:func:`score_candidates`, whose failed criteria also give every
candidate its ``reason``). :func:`assign_status` turns scores into ``cmb`` / ``review``
/ ``rejected`` and rejects duplicates.
"""

from __future__ import annotations

import numpy as np

from .classifier import (DEFAULT_MODEL_PATH, NETWORK_COLUMN, load_model, model_frame,
                         predict_proba, uses_network)
from .parameters import CMBPREP_PARAMETERS

__all__ = ["assign_status", "candidate_scores", "rule_memberships", "score_candidates",
           "score_thresholds", "scoring_network"]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def rule_memberships(f, p):
    """Logistic membership (1: passes) of every rule criterion, by criterion name.

    Each is centred on its threshold in ``p`` (see :func:`score_candidates`).
    """
    hess = f["hessian_ratio"].fillna(-1.0).to_numpy(float)
    return {
        "contrast": _sigmoid((f["contrast"].to_numpy(float) - p["min_contrast"]) / 0.05),
        "small": _sigmoid((f["diameter_mm"].to_numpy(float) - p["min_diameter_mm"]) / 0.2),
        "large": _sigmoid((p["max_diameter_mm"] - f["diameter_mm"].to_numpy(float)) / 0.5),
        "elongated": _sigmoid(
            (p["max_elongation_perp_b0"] - f["elongation_perp_b0"].to_numpy(float)) / 0.15
        ),
        "long_along_b0": _sigmoid((p["max_b0_aspect"] - f["b0_aspect"].to_numpy(float)) / 0.2),
        "tubular": _sigmoid((hess - p["min_hessian_ratio"]) / 0.05),
        "vessel_nearby": _sigmoid(
            (p["max_surrounding_dark_fraction"]
             - f["surrounding_dark_fraction"].fillna(1.0).to_numpy(float)) / 0.03
        ),
        "extends_beyond_patch": np.where(f["touches_patch_border"].to_numpy(bool), 0.1, 1.0),
        "bead_on_vessel": _sigmoid(
            (p["max_attached_depth_ratio"] - f["attached_depth_ratio"].to_numpy(float)) / 0.03
        ),
        "brain_edge": _sigmoid(
            (f["distance_to_edge_mm"].to_numpy(float) - p["min_distance_to_edge_mm"]) / 0.3
        ),
        # without phase the evidence is n/a and the criterion is neutral
        "not_paramagnetic": np.where(
            f["paramagnetic_evidence"].isna().to_numpy(), 1.0,
            _sigmoid((f["paramagnetic_evidence"].fillna(0.0).to_numpy(float)
                      - p["min_paramagnetic_evidence"]) / 0.04),
        ),
    }


def score_candidates(features, parameters=None):
    """Score candidates from their features (pure function, vectorised).

    Each criterion is a logistic membership centred on its threshold in
    :data:`.parameters.CMBPREP_PARAMETERS`; the score is their
    product, so one clearly failed criterion rejects a candidate and several marginal
    ones send it to review.

    Parameters
    ----------
    features : pandas.DataFrame
        Columns ``contrast diameter_mm elongation_perp_b0 b0_aspect hessian_ratio
        surrounding_dark_fraction touches_patch_border attached_depth_ratio
        distance_to_edge_mm
        paramagnetic_evidence``.
    parameters : dict, optional
        Overrides of the detector's parameters.

    Returns
    -------
    score : ndarray of float in [0, 1]
    reason : list of str
        The criteria with membership below 0.5 (``"n/a"`` when none).
    """
    p = dict(CMBPREP_PARAMETERS)
    p.update(parameters or {})
    members = rule_memberships(features, p)
    score = np.ones(len(features))
    for value in members.values():
        score = score * value
    reason = []
    for row in range(len(features)):
        failed = [name for name, value in members.items() if value[row] < 0.5]
        reason.append("+".join(failed) if failed else "n/a")
    return score, reason


def score_thresholds(p, use_phase):
    """Scorer description and the accept/review thresholds in use.

    Parameters
    ----------
    p : dict
        Detector parameters (``scorer``, ``model``, ``accept_score``, ``review_score``).
    use_phase : bool
        Whether the classifier's ``phase`` part applies (else ``no_phase``).

    Returns
    -------
    dict
        ``scorer``, (classifier) ``model model_version model_part``, ``accept_score``
        and ``review_score``; recorded in the detector's parameters.
    """
    if p["scorer"] == "rules":
        return {"scorer": "rules",
                "accept_score": 0.5 if p["accept_score"] is None else float(p["accept_score"]),
                "review_score": 0.2 if p["review_score"] is None else float(p["review_score"])}
    if p["scorer"] != "classifier":
        raise ValueError(f"unknown scorer {p['scorer']!r}; use 'classifier' or 'rules'")
    model = load_model(p["model"])
    part = model["phase" if use_phase else "no_phase"]
    return {
        "scorer": "classifier",
        "model": str(p["model"] or DEFAULT_MODEL_PATH.name),
        "model_version": model["version"],
        "model_part": "phase" if use_phase else "no_phase",
        "accept_score": float(part["accept_score"] if p["accept_score"] is None
                              else p["accept_score"]),
        "review_score": float(part["review_score"] if p["review_score"] is None
                              else p["review_score"]),
    }


def scoring_network(p):
    """The patch network (:mod:`.network`) the scorer of detector parameters ``p`` needs:
    the classifier's ``network`` when it has one, else None (rules, or trees alone)."""
    if p["scorer"] != "classifier":
        return None
    model = load_model(p["model"])
    return model["network"] if uses_network(model) else None


def candidate_scores(table, p, use_phase, no_phase=None):
    """Score and reason of every candidate; screened-out candidates score 0.

    Parameters
    ----------
    table : pandas.DataFrame
        Candidate features; with a classifier that has a patch network, also its output
        (:data:`.classifier.NETWORK_COLUMN`, :func:`.network.network_probability`).
    p : dict
        Detector parameters.
    use_phase : bool
        Whether the scan's phase is used (the classifier's ``phase`` part).
    no_phase : (N,) array_like of bool, optional
        Candidates scored as without phase even so (centred in a phase-mask artefact
        zone, where the phase is background field): the classifier's ``no_phase`` part
        with its own thresholds; for the rules, ``paramagnetic_evidence`` counts as n/a.

    Returns
    -------
    score : ndarray of float
    reason : list of str
        Failed rule criteria, prefixed ``screened:`` for screened-out candidates.
    scoring : dict
        :func:`score_thresholds` of the scan's part; with ``no_phase`` candidates (and
        phase used) also ``phase_artefact_zone_model_part`` and
        ``phase_artefact_zone_accept_score``/``_review_score``.
    accept, review : ndarray of float
        Each candidate's thresholds.
    """
    scoring = score_thresholds(p, use_phase)
    n = len(table)
    zone = np.zeros(n, dtype=bool)
    if use_phase and no_phase is not None:
        zone = np.asarray(no_phase, dtype=bool)
    features = table
    if zone.any():
        features = table.copy()
        features.loc[zone, "paramagnetic_evidence"] = np.nan
    rule_score, reason = score_candidates(features, p)
    screened = table["screened_out"].to_numpy(bool)
    accept = np.full(n, scoring["accept_score"], dtype=float)
    review = np.full(n, scoring["review_score"], dtype=float)
    if zone.any():
        zone_scoring = score_thresholds(p, False)
        scoring = {**scoring,
                   "phase_artefact_zone_model_part": zone_scoring.get("model_part", "rules"),
                   "phase_artefact_zone_accept_score": zone_scoring["accept_score"],
                   "phase_artefact_zone_review_score": zone_scoring["review_score"]}
        accept[zone] = zone_scoring["accept_score"]
        review[zone] = zone_scoring["review_score"]
    if scoring["scorer"] == "rules":
        score = rule_score
    else:
        score = np.zeros(n)
        model = load_model(p["model"]) if (~screened).any() else None
        network = (table[NETWORK_COLUMN].to_numpy(float)
                   if model is not None and uses_network(model) else None)
        for part_rows, part_phase in ((~screened & ~zone, use_phase),
                                      (~screened & zone, False)):
            if part_rows.any():
                score[part_rows] = predict_proba(
                    model_frame(table.loc[part_rows]), model, use_phase=part_phase,
                    network_probability=None if network is None else network[part_rows])
    score = np.where(screened, 0.0, score)
    reason = [("screened:" + r) if s else r for r, s in zip(reason, screened)]
    return score, reason, scoring, accept, review


def assign_status(table, score, reason, accept_score, review_score,
                  max_accept_diameter_mm=None):
    """Set ``score``, ``status`` and ``reason`` in place, then reject duplicates.

    ``cmb`` when ``score >= accept_score``, ``review`` when ``score >= review_score``,
    ``rejected`` otherwise; a candidate that would be ``cmb`` but whose ``diameter_mm``
    exceeds ``max_accept_diameter_mm`` (larger than a microbleed can be) is ``review``
    with the reason ``too_large_to_accept``; a non-rejected candidate whose centroid lies
    inside a better-scored one is rejected as ``duplicate``.
    """
    score = np.asarray(score, dtype=float)
    table["score"] = score
    status = np.where(score >= accept_score, "cmb",
                      np.where(score >= review_score, "review", "rejected"))
    reason = list(reason)
    if max_accept_diameter_mm is not None and len(table):
        too_large = (status == "cmb") & (table["diameter_mm"].to_numpy(float)
                                         > max_accept_diameter_mm)
        status[too_large] = "review"
        for n in np.flatnonzero(too_large):
            reason[n] = ("too_large_to_accept" if reason[n] in ("", "n/a")
                         else reason[n] + "+too_large_to_accept")
    table["status"] = status
    table["reason"] = reason
    _remove_duplicates(table)
    return table


def _remove_duplicates(table):
    """Reject non-rejected candidates whose centroid lies inside a better-scored one."""
    keep = table.index[table["status"] != "rejected"]
    order = table.loc[keep].sort_values("score", ascending=False, kind="stable").index
    kept = []
    xyz = table[["x", "y", "z"]].to_numpy(float)
    pos = {idx: n for n, idx in enumerate(table.index)}
    for idx in order:
        here = xyz[pos[idx]]
        duplicate = any(
            np.linalg.norm(here - xyz[pos[other]])
            <= max(table.at[idx, "diameter_mm"], table.at[other, "diameter_mm"]) / 2
            for other in kept
        )
        if duplicate:
            table.at[idx, "status"] = "rejected"
            table.at[idx, "reason"] = "duplicate"
        else:
            kept.append(idx)
