"""Simulated follow-up scans: participants scanned in several sessions, with microbleeds
that persist and microbleeds that appear between sessions.

Every session of a participant shares the anatomy (veins, deformation) and the lesion
sequence of the participant's anatomy seed; session ``k`` shows the first
``n_persistent + sum(new_per_session[:k + 1])`` lesions of that sequence (the phantom
places lesions one after the other from one random stream, so a longer list starts with
the shorter one). Head pose, bias, noise and, by default, the protocol (voxel size, echo
time) differ between sessions.

:func:`write_longitudinal_dataset` writes a raw BIDS dataset with
``sub-<label>_sessions.tsv`` (``acq_time``) and, under ``derivatives/phantom-truth``,
each session's truth table plus ``sub-<label>_desc-longitudinal_cmb.tsv``: one row per
lesion with its template position, the session it first appears in and its label
(``persistent`` or ``new``).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils.tables import write_tsv
from .phantom.bids_files import write_json, write_scan_images, write_truth
from .phantom.config import PhantomConfig
from .phantom.simulate import simulate_subject

__all__ = ["DEFAULT_SESSIONS", "write_longitudinal_dataset"]

#: Two sessions six months apart; the second with another voxel size and echo time.
DEFAULT_SESSIONS = (
    {"label": "01", "days": 0, "protocol": "small", "overrides": {}},
    {"label": "02", "days": 183, "protocol": "small",
     "overrides": {"voxel_size_mm": (1.2, 1.2, 1.8), "echo_times_s": (0.025,)}},
)
FIRST_SCAN = datetime(2024, 1, 15, 9, 0, 0)

_LONGITUDINAL_TRUTH_JSON = {
    "lesion_index": {"Description": "Position of the lesion in the participant's lesion "
                                    "sequence (1 = placed first)"},
    "mni_x": {"Description": "Centre, template (MNI152NLin2009aSym) x", "Units": "mm"},
    "mni_y": {"Description": "Centre, template y", "Units": "mm"},
    "mni_z": {"Description": "Centre, template z", "Units": "mm"},
    "first_session": {"Description": "Session in which the lesion first exists"},
    "label": {"Description": "persistent (exists from the first session on) or new "
                             "(appears in a later session)"},
}


def _config(session, n_cmbs, overrides):
    cfg = PhantomConfig.from_protocol(session["protocol"])
    return dataclasses.replace(cfg, n_cmbs=int(n_cmbs), **{**overrides,
                                                           **session["overrides"]})


def write_longitudinal_dataset(out_dir, n_subjects: int = 1, seed: int = 0,
                               n_persistent: int = 4, new_per_session=(0, 2),
                               sessions=DEFAULT_SESSIONS, input_kind: str = "gre",
                               config_overrides: dict | None = None) -> Path:
    """Write a raw BIDS dataset of participants scanned in several sessions.

    Parameters
    ----------
    out_dir : path
        Dataset root (created).
    n_subjects : int
        Participants ``sub-01`` ...
    seed : int
        Dataset seed; participant ``s`` has anatomy seed ``seed * 1000 + 500 + s``.
    n_persistent : int
        Microbleeds present from the first session on.
    new_per_session : sequence of int
        Microbleeds appearing in each session (the first entry adds to the first
        session's); one entry per session.
    sessions : sequence of dict
        ``label``, ``days`` (since the first scan), ``protocol`` (a phantom protocol
        name) and ``overrides`` (:class:`PhantomConfig` fields) per session.
    input_kind : str
        As in :func:`cmbprep.testing.phantom.write_bids_dataset`.
    config_overrides : dict, optional
        :class:`PhantomConfig` fields for every session (e.g. ``cmb_radius_mm``).

    Returns
    -------
    pathlib.Path
        The dataset root.
    """
    if len(new_per_session) != len(sessions):
        raise ValueError("new_per_session needs one entry per session")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    truth_root = root / "derivatives" / "phantom-truth"
    write_json({"Name": "cmbprep longitudinal phantom", "BIDSVersion": "1.10.0",
                "DatasetType": "raw", "License": "CC0",
                "Authors": ["cmbprep phantom generator"]},
               root / "dataset_description.json")
    write_json({"Name": "cmbprep longitudinal phantom ground truth",
                "BIDSVersion": "1.10.0", "DatasetType": "derivative"},
               truth_root / "dataset_description.json")
    rng = np.random.default_rng([int(seed), 77])
    participants = []
    n_present = np.cumsum(new_per_session) + int(n_persistent)
    for s_idx in range(n_subjects):
        sub = f"sub-{s_idx + 1:02d}"
        anat_seed = int(seed) * 1000 + 500 + s_idx
        participants.append({"participant_id": sub, "age": int(rng.integers(20, 80)),
                             "sex": str(rng.choice(["F", "M"])), "group": "patient"})
        session_rows, templates = [], None
        for ses_i, session in enumerate(sessions):
            cfg = _config(session, n_present[ses_i], config_overrides or {})
            acq_seed = anat_seed * 100 + ses_i * 10 + 1
            ph = simulate_subject(cfg, seed=anat_seed, acquisition_seed=acq_seed)
            ses = f"ses-{session['label']}"
            prefix = f"{sub}_{ses}"
            write_scan_images(ph, root / sub / ses / "anat", prefix, input_kind, "rad",
                              True)
            write_truth(ph, truth_root / sub / ses / "anat", prefix, {
                "config": cfg.to_dict(), "anatomy_seed": anat_seed,
                "acquisition_seed": acq_seed, "input_kind": input_kind})
            cmbs = ph.truth[ph.truth["kind"] == "cmb"]
            templates = cmbs[["mni_x", "mni_y", "mni_z"]].to_numpy()
            session_rows.append({"session_id": ses, "acq_time": (
                FIRST_SCAN + timedelta(days=float(session["days"]))).isoformat()})
        write_tsv(pd.DataFrame(session_rows), root / sub / f"{sub}_sessions.tsv")
        write_json({"acq_time": {"Description": "Date and time of the session's first "
                                                "scan"}},
                   root / sub / f"{sub}_sessions.json")
        first = np.searchsorted(n_present, np.arange(len(templates)), side="right")
        truth = pd.DataFrame({
            "lesion_index": np.arange(1, len(templates) + 1),
            "mni_x": templates[:, 0], "mni_y": templates[:, 1], "mni_z": templates[:, 2],
            "first_session": [f"ses-{sessions[i]['label']}" for i in first],
            "label": ["persistent" if i == 0 else "new" for i in first]})
        write_tsv(truth, truth_root / sub / f"{sub}_desc-longitudinal_cmb.tsv",
                  _LONGITUDINAL_TRUTH_JSON, float_format="%.4f")
    write_tsv(pd.DataFrame(participants), root / "participants.tsv")
    (root / "README").write_text("Simulated follow-up SWI sessions with known microbleeds "
                                 "(cmbprep.testing.longitudinal).\n")
    return root
