"""Patch network: a small multi-layer perceptron on candidate patches (pure numpy).

The network is fitted at development time with scikit-learn's ``MLPClassifier`` by
:mod:`cmbprep.testing.detector_training` on the patches (:mod:`.patches`) of generated
phantoms, and stored inside the classifier's JSON file (:func:`export_mlp`; weights as
base64 little-endian float32). At run time :func:`network_probability` runs it with
numpy, averaged over the four mirror images of each patch that keep B0 an axis
(:func:`.patches.patch_views`).

Its output is combined with the boosted trees' (:func:`stack_logit`): the trees' logit,
moved toward the network's by at most a fixed amount, then mapped to a calibrated
probability (:func:`.classifier.calibrate`). The network can thus sort the candidates the
trees are unsure of, but cannot reverse a confident verdict of the trees: on data unlike
its training data it can be confidently wrong (a microbleed beside a vein, on another
simulator's scene, got 2.6e-9 where the trees gave 0.81).
"""

from __future__ import annotations

import base64

import numpy as np

from .patches import PATCH_POINTS, PATCH_STEP_MM, candidate_patches, patch_views

__all__ = ["candidate_network_probability", "check_network", "decode_array", "encode_array",
           "export_mlp", "network_probability", "stack_logit"]


_BATCH = 2048  # patches per forward pass (bounds the memory)


def encode_array(array):
    """``{"shape": [...], "float32_base64": "..."}`` of an array (little-endian)."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(a.shape), "float32_base64": base64.b64encode(a.tobytes()).decode()}


def decode_array(entry):
    """Inverse of :func:`encode_array` (as float64)."""
    raw = np.frombuffer(base64.b64decode(entry["float32_base64"]), dtype="<f4")
    return raw.reshape(entry["shape"]).astype(np.float64)


def export_mlp(estimator):
    """A fitted binary ``MLPClassifier`` (ReLU hidden layers, logistic output) as a
    JSON-serialisable dict: ``layers`` (weights ``(n_in, n_out)`` and biases, float32) and
    the patch it expects (``patch_points``, ``patch_step_mm``)."""
    if estimator.activation != "relu" or estimator.out_activation_ != "logistic":
        raise ValueError("only ReLU networks with one logistic output are supported")
    return {"kind": "mlp", "activation": "relu", "output": "logistic",
            "patch_points": PATCH_POINTS, "patch_step_mm": PATCH_STEP_MM,
            "layers": [{"weights": encode_array(w), "bias": encode_array(b)}
                       for w, b in zip(estimator.coefs_, estimator.intercepts_)]}


def check_network(network):
    """Raise ``ValueError`` naming what is wrong when ``network`` (a model file's
    ``network`` entry) is not a network :func:`network_probability` can run: a ReLU
    ``mlp`` with a logistic output, on patches of :data:`.patches.PATCH_POINTS` points
    :data:`.patches.PATCH_STEP_MM` apart (two channels), whose layers chain to one
    output."""
    if not isinstance(network, dict):
        raise ValueError("'network' is not an object")
    expected = {"kind": "mlp", "activation": "relu", "output": "logistic"}
    for key, value in expected.items():
        if network.get(key) != value:
            raise ValueError(f"network {key!r} is {network.get(key)!r}, not {value!r}")
    try:
        points, step = int(network["patch_points"]), float(network["patch_step_mm"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("network 'patch_points' and 'patch_step_mm' must be numbers") \
            from None
    if points != PATCH_POINTS or step != PATCH_STEP_MM:
        raise ValueError(f"the network expects {points}-point patches {step} mm apart; "
                         f"this version makes {PATCH_POINTS}-point patches "
                         f"{PATCH_STEP_MM} mm apart")
    layers = network.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError("network 'layers' must be a non-empty list")
    n_in = 2 * PATCH_POINTS ** 3
    for i, layer in enumerate(layers):
        try:
            w, b = decode_array(layer["weights"]), decode_array(layer["bias"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"network layer {i} cannot be read ({exc})") from None
        if w.ndim != 2 or w.shape[0] != n_in or b.shape != (w.shape[1],):
            raise ValueError(f"network layer {i} has weights {list(w.shape)} and bias "
                             f"{list(b.shape)}; {n_in} inputs were expected")
        n_in = w.shape[1]
    if n_in != 1:
        raise ValueError(f"the network's last layer has {n_in} outputs, not 1")


def _forward(x, layers):
    for w, b in layers[:-1]:
        x = np.maximum(x @ w + b, 0.0)
    w, b = layers[-1]
    return 1.0 / (1.0 + np.exp(-(x @ w + b)[:, 0]))


def network_probability(patches, network):
    """The network's probability that each patch shows a microbleed, averaged over the
    four mirror images of the patch.

    Parameters
    ----------
    patches : (N, 2, P, P, P) ndarray
        From :func:`.patches.candidate_patches`.
    network : dict
        From :func:`export_mlp` (the model file's ``network``).

    Returns
    -------
    (N,) ndarray in [0, 1]
    """
    patches = np.asarray(patches)
    if int(network["patch_points"]) != patches.shape[-1] or \
            float(network["patch_step_mm"]) != PATCH_STEP_MM:
        raise ValueError(f"the network expects {network['patch_points']}-point patches "
                         f"{network['patch_step_mm']} mm apart")
    if not len(patches):
        return np.zeros(0)
    layers = [(decode_array(layer["weights"]), decode_array(layer["bias"]))
              for layer in network["layers"]]
    out = np.empty(len(patches))
    for start in range(0, len(patches), _BATCH):
        batch = patches[start:start + _BATCH]
        out[start:start + len(batch)] = np.mean(
            [_forward(np.ascontiguousarray(v, dtype=np.float64).reshape(len(batch), -1),
                      layers) for v in patch_views(batch)], axis=0)
    return out


def candidate_network_probability(table, swi, magnitude, brain_mask, affine, network):
    """:func:`network_probability` of every candidate of ``table`` that was not screened
    out (NaN for the others), on patches (:func:`.patches.candidate_patches`) centred on
    the table's voxel indices ``i j k``.

    Parameters
    ----------
    table : pandas.DataFrame
        Candidate table (``i j k screened_out``).
    swi, magnitude, brain_mask, affine
        As :func:`.patches.candidate_patches` (``magnitude`` may be None).
    network : dict
        The model file's ``network``.

    Returns
    -------
    (N,) ndarray
    """
    out = np.full(len(table), np.nan)
    keep = ~table["screened_out"].astype(bool).to_numpy() if len(table) else np.zeros(0, bool)
    if keep.any():
        centres = table.loc[keep, ["i", "j", "k"]].to_numpy(float)
        out[keep] = network_probability(
            candidate_patches(swi, magnitude, brain_mask, affine, centres), network)
    return out


def stack_logit(p_trees, p_network, max_shift):
    """The trees' logit moved toward the network's by at most ``max_shift``.

    Parameters
    ----------
    p_trees, p_network : (N,) array_like
        Calibrated probability of the trees and the network's output (clipped to [1e-6,
        1 - 1e-6]).
    max_shift : float
        Largest change of the trees' logit (0: the trees alone; a logit change of 0.5
        multiplies the odds by 1.65 at most).

    Returns
    -------
    (N,) ndarray
        ``logit(p_trees) + clip(logit(p_network) - logit(p_trees), -max_shift,
        max_shift)``.
    """
    p = np.clip(np.stack([np.asarray(p_trees, float), np.asarray(p_network, float)]),
                1e-6, 1.0 - 1e-6)
    trees, network = np.log(p / (1.0 - p))
    return trees + np.clip(network - trees, -max_shift, max_shift)
