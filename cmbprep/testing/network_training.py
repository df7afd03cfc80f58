"""Fit the classifier's patch network (:mod:`cmbprep.algorithms.detection.network`).

Used by :mod:`cmbprep.testing.detector_training`: the patches
(:func:`~cmbprep.algorithms.detection.patches.candidate_patches`) of every candidate
that was not screened out are sampled once from the training cache's volumes (the same
function the detector runs), a multi-layer perceptron (scikit-learn ``MLPClassifier``,
one thread, fixed ``random_state``: the same weights on every run) is fitted on the
training scans of the families the model learns from, and its output is added to the
candidate tables as :data:`~cmbprep.algorithms.detection.classifier.NETWORK_COLUMN`.

Training set: every candidate on a visible microbleed and up to
:data:`NEGATIVES_PER_SCAN` others per scan (drawn with the scan's seed), the
microbleeds resampled to a quarter of the set, each patch in its four mirror images that
keep B0 an axis (:func:`~cmbprep.algorithms.detection.patches.patch_views`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["NEGATIVES_PER_SCAN", "NETWORK_PARAMETERS", "PatchBank", "fit_patch_network",
           "patch_bank", "with_network_probability"]

#: Candidates not on a microbleed per training scan the network sees at most.
NEGATIVES_PER_SCAN = 150
#: Share of microbleed patches in the training set (resampled with replacement).
POSITIVE_SHARE = 0.25
#: Settings of scikit-learn's ``MLPClassifier`` (ReLU hidden layers).
NETWORK_PARAMETERS = {"hidden_layer_sizes": (128, 64), "alpha": 1e-3, "batch_size": 256,
                      "max_iter": 60, "early_stopping": True, "validation_fraction": 0.1,
                      "n_iter_no_change": 5, "random_state": 0}

_KEY = ["family", "seed", "candidate_id"]


@dataclass
class PatchBank:
    """Patches of candidates (``patches[n]``) and their ``(family, seed, candidate_id)``
    (``index``)."""

    patches: np.ndarray
    index: pd.MultiIndex

    def rows(self, cand):
        """Positions in :attr:`patches` of the candidates of ``cand`` (-1: none)."""
        return self.index.get_indexer(pd.MultiIndex.from_frame(cand[_KEY]))


def patch_bank(cand, cache_dir):
    """Patches of every candidate of ``cand`` (candidate tables of
    :func:`~cmbprep.testing.detector_training.collect`) that was not screened out, from
    the cached volumes of its scan."""
    from ..algorithms.detection.patches import candidate_patches

    t0 = time.perf_counter()
    kept = cand[~cand["screened_out"].to_numpy(bool)]
    patches, keys = [], []
    for (family, seed), rows in kept.groupby(["family", "seed"], sort=True):
        with np.load(Path(cache_dir) / f"{family}_{seed}.npz") as d:
            patches.append(candidate_patches(d["swi"], d["magnitude"], d["brain"],
                                             d["affine"], rows[["i", "j", "k"]]))
        keys.append(rows[_KEY])
    index = pd.MultiIndex.from_frame(pd.concat(keys, ignore_index=True))
    if not index.is_unique:
        raise ValueError("candidates of one scan were given twice")
    print(f"patches of {len(index)} candidates in {len(keys)} scans: "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return PatchBank(np.concatenate(patches), index)


def _training_rows(bank, train_c):
    """Bank positions of the network's training candidates of ``train_c`` and labels."""
    from .detector_training import _usable

    usable = _usable(train_c)
    chosen = []
    for (_, seed), rows in usable.groupby(["family", "seed"], sort=True):
        negatives = rows[rows["truth"] != "cmb"]
        if len(negatives) > NEGATIVES_PER_SCAN:
            negatives = negatives.sample(NEGATIVES_PER_SCAN, random_state=int(seed))
        chosen += [rows[rows["truth"] == "cmb"], negatives]
    chosen = pd.concat(chosen)
    return bank.rows(chosen), (chosen["truth"] == "cmb").to_numpy()


def fit_patch_network(bank, train_c):
    """The network fitted on the training candidates of ``train_c`` (see the module),
    exported with :func:`~cmbprep.algorithms.detection.network.export_mlp`, with
    ``n_patches`` (mirror images included), ``epochs`` and ``parameters``."""
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    from ..algorithms.detection.network import export_mlp
    from ..algorithms.detection.patches import patch_views

    rows, y = _training_rows(bank, train_c)
    if (rows < 0).any():
        raise ValueError("training candidates without patches")
    rng = np.random.default_rng(NETWORK_PARAMETERS["random_state"])
    positives, negatives = np.flatnonzero(y), np.flatnonzero(~y)
    n_pos = int(round(len(negatives) * POSITIVE_SHARE / (1.0 - POSITIVE_SHARE)))
    order = np.concatenate([negatives, rng.choice(positives, n_pos)])
    rng.shuffle(order)
    x = bank.patches[rows[order]]
    x = np.concatenate([np.ascontiguousarray(v).reshape(len(x), -1) for v in patch_views(x)])
    labels = np.tile(y[order], 4)
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):  # one thread: the same weights on every run
        net = MLPClassifier(**NETWORK_PARAMETERS).fit(x, labels)
    print(f"patch network: {len(x)} patches, {net.n_iter_} epochs, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return {**export_mlp(net), "n_patches": int(len(x)), "epochs": int(net.n_iter_),
            "parameters": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in NETWORK_PARAMETERS.items()}}


def with_network_probability(cand, bank, network):
    """``cand`` with the network's output in
    :data:`~cmbprep.algorithms.detection.classifier.NETWORK_COLUMN` (NaN for screened-out
    candidates)."""
    from ..algorithms.detection.classifier import NETWORK_COLUMN
    from ..algorithms.detection.network import network_probability

    out = np.full(len(cand), np.nan)
    rows = bank.rows(cand)
    have = rows >= 0
    if have.any():
        out[have] = network_probability(bank.patches[rows[have]], network)
    return cand.assign(**{NETWORK_COLUMN: out})
