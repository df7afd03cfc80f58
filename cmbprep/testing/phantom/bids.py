"""BIDS dataset writer: simulated participants, sessions and runs with ground truth.

:func:`write_bids_dataset` writes a raw dataset plus a ``derivatives/phantom-truth``
dataset; :func:`write_subject` adds one already simulated subject;
:func:`write_example_dataset` writes the bundled demo dataset.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cmbprep.algorithms.registration import TEMPLATE_NAME
from cmbprep.utils.tables import write_tsv

from .bids_files import write_json, write_scan_images, write_truth
from .config import PROTOCOLS, PhantomConfig
from .simulate import SubjectPhantom, simulate_subject

__all__ = ["INPUT_KINDS", "default_count_model", "write_bids_dataset",
           "write_example_dataset", "write_subject"]

INPUT_KINDS = ("gre", "megre", "swi", "magnitude")

def default_count_model(row, rng) -> int:
    """Poisson CMB count whose rate rises as the platelet nadir (10^9/L) falls."""
    platelets = float(row["platelet_nadir"])
    rate = 0.5 + 8.0 * math.exp(-platelets / 15.0)
    return int(min(rng.poisson(rate), 15))


def _participants(n_subjects, n_controls, rng) -> pd.DataFrame:
    """Participants table: patients first, the last ``n_controls`` are controls."""
    rows = []
    for s in range(n_subjects):
        control = s >= n_subjects - n_controls
        platelets = (float(rng.uniform(150, 400)) if control
                     else float(np.clip(rng.lognormal(np.log(20), 0.8), 1, 140)))
        bleeding = 0 if control else int(np.clip(rng.poisson(max(0.2, 6 - platelets / 10)), 0, 10))
        rows.append({
            "participant_id": f"sub-{s + 1:02d}",
            "age": int(rng.integers(18, 80)),
            "sex": str(rng.choice(["F", "M"])),
            "group": "control" if control else "patient",
            "platelet_nadir": round(platelets, 1),
            "bleeding_score": bleeding,
        })
    return pd.DataFrame(rows)


_PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Participant label"},
    "age": {"Description": "Age at scan", "Units": "year"},
    "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
    "group": {"Description": "Study group",
              "Levels": {"patient": "immune thrombocytopenia patient",
                         "control": "healthy control"}},
    "platelet_nadir": {"Description": "Lowest recorded platelet count",
                       "Units": "10^9/L"},
    "bleeding_score": {"Description": "Bleeding score (0 = none)"},
}



def _version() -> str:
    try:
        from cmbprep import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


def _raw_description() -> dict:
    return {"Name": "cmbprep physics-based SWI phantom", "BIDSVersion": "1.10.0",
            "DatasetType": "raw", "License": "CC0", "Authors": ["cmbprep phantom generator"],
            "GeneratedBy": [{"Name": "cmbprep.testing.phantom", "Version": _version()}]}


def _truth_description() -> dict:
    return {"Name": "cmbprep phantom ground truth", "BIDSVersion": "1.10.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "cmbprep.testing.phantom", "Version": _version()}]}


def _draw_cohort(n_subjects, n_controls, seed, count_model):
    """Participants table and CMB count per participant (random stream ``[seed, 99]``)."""
    rng = np.random.default_rng([int(seed), 99])
    if n_controls is None:
        n_controls = round(n_subjects / 3)
    n_controls = min(int(n_controls), n_subjects)
    count_model = count_model or default_count_model
    participants = _participants(n_subjects, n_controls, rng)
    counts = [0 if row["group"] == "control" else int(count_model(row, rng))
              for _, row in participants.iterrows()]
    return participants, counts


def _session_labels(sessions) -> list:
    """``[None]`` (no session entity), or the labels of ``sessions`` (a count or labels)."""
    if sessions is None:
        return [None]
    if isinstance(sessions, int):
        return [f"{i + 1:02d}" for i in range(sessions)]
    return [str(s) for s in sessions]


def _base_config(protocol, input_kind, config_overrides, include_t1w, calcifications):
    """Config shared by all scans and the protocol name written to the README/sidecars."""
    if isinstance(protocol, PhantomConfig):
        base_cfg, protocol_name = protocol, "custom"
    else:
        base_cfg, protocol_name = PhantomConfig.from_protocol(protocol), protocol
    if config_overrides:
        base_cfg = dataclasses.replace(base_cfg, **config_overrides)
    if input_kind == "megre" and len(base_cfg.echo_times_s) < 2:
        base_cfg = dataclasses.replace(base_cfg, echo_times_s=PROTOCOLS["megre"]["echo_times_s"])
    if input_kind != "megre" and len(base_cfg.echo_times_s) > 1:
        base_cfg = dataclasses.replace(base_cfg, echo_times_s=base_cfg.echo_times_s[:1])
    base_cfg = dataclasses.replace(base_cfg, include_t1w=include_t1w,
                                   n_calcifications=int(calcifications))
    return base_cfg, protocol_name


def _write_dataset_files(root, participants, protocol_name, input_kind, seed):
    """Dataset-level files of the raw and the truth datasets."""
    write_json(_raw_description(), root / "dataset_description.json")
    (root / "README").write_text(
        "Simulated susceptibility-weighted MRI with known cerebral microbleeds.\n"
        f"Generated by cmbprep.testing.phantom (protocol={protocol_name}, "
        f"input_kind={input_kind}, seed={seed}).\n"
        "Ground truth: derivatives/phantom-truth/.\n")
    # float_format=None: pandas' shortest repr (``140.0``), as the phantom always wrote
    write_tsv(participants, root / "participants.tsv", float_format=None)
    write_json(_PARTICIPANTS_JSON, root / "participants.json")
    if input_kind == "swi":
        (root / ".bidsignore").write_text("*_swi.nii.gz\n*_swi.json\n*_minIP.nii.gz\n"
                                          "*_minIP.json\n")
    write_json(_truth_description(), root / "derivatives" / "phantom-truth"
               / "dataset_description.json")


def _scan_prefix(sub, ses, acq, run, runs):
    """BIDS file name prefix ``sub-X[_ses-Y][_acq-Z][_run-N]``."""
    ents = [sub]
    if ses is not None:
        ents.append(f"ses-{ses}")
    if acq:
        ents.append(f"acq-{acq}")
    if runs > 1:
        ents.append(f"run-{run}")
    return "_".join(ents)


def write_bids_dataset(out_dir, n_subjects: int = 3, seed: int = 0, protocol="small",
                       input_kind: str = "gre", n_controls: int | None = None,
                       sessions=None, runs: int = 1, acq: str | None = None,
                       include_t1w: bool = False, calcifications: int = 0,
                       count_model: Callable | None = None,
                       phase_units: str = "rad", megre_phase: bool = True,
                       config_overrides: dict | None = None) -> Path:
    """Write a raw BIDS dataset of simulated subjects plus ground truth.

    Parameters
    ----------
    out_dir : path
        Dataset root (created).
    n_subjects : int
        Number of participants (``sub-01`` ...).
    seed : int
        Seed of the whole dataset; subject ``s`` uses anatomy seed ``seed * 1000 + s``.
    protocol : str or PhantomConfig
        A :data:`PROTOCOLS` name or a full config (``n_cmbs`` is set per subject).
    input_kind : {"gre", "megre", "swi", "magnitude"}
        What is written: single-echo magnitude+phase ``_part-{mag,phase}_T2starw``;
        multi-echo ``_echo-N_part-{mag,phase}_MEGRE`` (protocol ``megre`` echoes if the
        protocol has a single echo); scanner ``_swi`` and ``_minIP`` (listed in
        ``.bidsignore``); or magnitude only ``_part-mag_T2starw``.
    n_controls : int, optional
        Number of controls (the last subjects; no CMBs). Default ``round(n / 3)``.
    sessions : int or list of str, optional
        Number of sessions or their labels; sessions of a subject share the anatomy and
        lesions and differ in pose, bias and noise.
    runs : int
        Runs per session (``run-N`` entity when > 1).
    acq : str, optional
        ``acq-<label>`` entity.
    include_t1w : bool
        Also write ``_T1w.nii.gz``.
    calcifications : int
        Calcifications per subject (patients and controls).
    count_model : callable(row, rng) -> int, optional
        CMB count of a patient from its ``participants.tsv`` row; default
        :func:`default_count_model`.
    phase_units : {"rad", "arbitrary"}
        ``arbitrary`` stores phase as int16 in [-4096, 4095] (sidecar ``Units``).
    megre_phase : bool
        Write phase images for ``megre``.
    config_overrides : dict, optional
        Extra :class:`PhantomConfig` fields.

    Returns
    -------
    pathlib.Path
        The dataset root.
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be gre, megre, swi or magnitude, not {input_kind!r}")
    if phase_units not in ("rad", "arbitrary"):
        raise ValueError(f"phase_units must be 'rad' or 'arbitrary', not {phase_units!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    base_cfg, protocol_name = _base_config(protocol, input_kind, config_overrides,
                                           include_t1w, calcifications)
    participants, counts = _draw_cohort(n_subjects, n_controls, seed, count_model)
    _write_dataset_files(root, participants, protocol_name, input_kind, seed)

    truth_root = root / "derivatives" / "phantom-truth"
    for s_idx, sub in enumerate(participants["participant_id"]):
        for ses_i, ses in enumerate(_session_labels(sessions)):
            for run in range(1, runs + 1):
                cfg = dataclasses.replace(base_cfg, n_cmbs=counts[s_idx])
                anat_seed = int(seed) * 1000 + s_idx
                acq_seed = anat_seed * 100 + ses_i * 10 + run
                ph = simulate_subject(cfg, seed=anat_seed, acquisition_seed=acq_seed)
                prefix = _scan_prefix(sub, ses, acq, run, runs)
                rel_dir = Path(sub) / (f"ses-{ses}" if ses is not None else "") / "anat"
                write_scan_images(ph, root / rel_dir, prefix, input_kind, phase_units,
                                  megre_phase)
                write_truth(ph, truth_root / rel_dir, prefix, {
                    "config": cfg.to_dict(), "anatomy_seed": anat_seed,
                    "acquisition_seed": acq_seed, "template": TEMPLATE_NAME,
                    "protocol": protocol_name, "input_kind": input_kind,
                })
    return root


def write_subject(ph: SubjectPhantom, root, participant_label: str, input_kind: str = "gre",
                  phase_units: str = "rad") -> Path:
    """Add one simulated subject (images and truth) to a raw BIDS dataset.

    Creates ``dataset_description.json`` and ``derivatives/phantom-truth`` when missing
    and adds the participant to ``participants.tsv`` (``participant_id`` and ``group``:
    ``patient`` with microbleeds, ``control`` without).

    Parameters
    ----------
    ph : SubjectPhantom
        From :func:`simulate_subject`.
    root : path
        Dataset root.
    participant_label : str
        Label without ``sub-``.
    input_kind, phase_units
        As in :func:`write_bids_dataset`.

    Returns
    -------
    pathlib.Path
        The dataset root.
    """
    root = Path(root)
    truth_root = root / "derivatives" / "phantom-truth"
    for path, content in ((root / "dataset_description.json", _raw_description()),
                          (truth_root / "dataset_description.json", _truth_description())):
        if not path.exists():
            write_json(content, path)
    sub = f"sub-{participant_label}"
    write_scan_images(ph, root / sub / "anat", sub, input_kind, phase_units, True)
    write_truth(ph, truth_root / sub / "anat", sub, {
        "config": ph.config.to_dict(), "seed": ph.seed, "template": TEMPLATE_NAME,
        "input_kind": input_kind})
    n_cmbs = int((ph.truth["kind"] == "cmb").sum())
    row = pd.DataFrame([{"participant_id": sub, "group": "patient" if n_cmbs else "control"}])
    tsv = root / "participants.tsv"
    if tsv.exists():
        old = pd.read_csv(tsv, sep="\t", dtype=str)
        row = pd.concat([old[old["participant_id"] != sub], row], ignore_index=True)
    write_tsv(row, tsv, float_format=None)
    return root


def write_example_dataset(out_dir, seed: int = 0) -> Path:
    """The bundled demo dataset: 3 subjects (2 patients with a handful of CMBs, 1 control),
    ``small`` protocol, single-echo magnitude + phase."""
    def count_model(row, rng):
        return int(rng.integers(3, 7))

    return write_bids_dataset(out_dir, n_subjects=3, n_controls=1, seed=seed,
                              protocol="small", input_kind="gre", count_model=count_model)


