"""Nipype interfaces of the longitudinal step (thin wrappers).

:class:`RegisterSession` registers one later session's SWI onto the reference session's
(:func:`cmbprep.algorithms.registration.register_sessions`); :class:`TrackLesions`
carries every session's counted microbleeds (the rater's when the session was reviewed)
into the reference space, follows them (:mod:`cmbprep.algorithms.longitudinal`) and
writes the participant's longitudinal tables and transforms into the output dataset,
each file atomically. Inputs are never modified.
"""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..errors import DataError
from .anatomical import _load3d
from .itk_process import run_with_itk_threads

#: Descriptions of the lesion table's columns (``<ses>`` columns: one set per session).
LESION_COLUMNS = {
    "lesion_id": {"Description": "Lesion number within the participant, in order of "
                                 "first appearance"},
    "x": {"Description": "Centre in the reference (first) session's scanner space, RAS+ "
                         "(mean of the lesion's detections carried there)", "Units": "mm"},
    "y": {"Description": "Centre, reference scanner space, RAS+", "Units": "mm"},
    "z": {"Description": "Centre, reference scanner space, RAS+", "Units": "mm"},
    "first_seen": {"Description": "First session in which the lesion was found"},
    "label": {"Description": "The lesion over the sessions",
              "Levels": {
                  "persistent": "found first in the first session covering its place, "
                                "and found again later",
                  "new": "found first after an earlier session covered its place "
                         "without showing it",
                  "not_seen_again": "found first in the first session covering its "
                                    "place; later sessions cover it and none shows it",
                  "not_assessable": "found in one session only; no other session "
                                    "covers its place"}},
}
SESSION_LESION_COLUMNS = {
    "status": {"Description": "The lesion in session {ses}",
               "Levels": {"found": "a counted microbleed of the session matches it",
                          "not_found": "the session covers its place, no microbleed "
                                       "matches",
                          "not_covered": "outside the session's field of view"}},
    "score": {"Description": "Detector score of the matching microbleed in session {ses} "
                             "(n/a when not found or not scored)"},
    "volume_mm3": {"Description": "Volume of the matching microbleed in session {ses}",
                   "Units": "mm^3"},
    "source_id": {"Description": "The matching microbleed's cmb_id (automatic) or "
                                 "candidate_id (rater) in session {ses}'s table"},
}
SESSION_COLUMNS = {
    "session_id": {"Description": "Session, in time order (the first is the reference)"},
    "acq_time": {"Description": "acq_time of the session in sub-<label>_sessions.tsv of "
                                "the input dataset"},
    "days_since_reference": {"Description": "Days since the reference session",
                             "Units": "day"},
    "interval_days": {"Description": "Days since the previous session", "Units": "day"},
    "count_source": {"Description": "Whose microbleeds were followed",
                     "Levels": {"automatic": "the detector's accepted microbleeds",
                                "rater": "the microbleeds a rater accepted "
                                         "(cmbprep-review)"}},
    "rater": {"Description": "The rater whose decisions were used"},
    "n_cmb": {"Description": "Microbleeds found in the session"},
    "n_new": {"Description": "Lesions first found in this session whose place an "
                             "earlier session covered without showing them (n/a for the "
                             "reference)"},
    "n_persistent": {"Description": "Lesions found in this session and in an earlier one"},
    "n_not_seen_again": {"Description": "Lesions found in an earlier session whose place "
                                        "this session covers without showing them"},
    "n_not_covered": {"Description": "Lesions found in another session whose place this "
                                     "session does not cover"},
    "registration_residual_mm": {"Description": "Mean symmetric distance of the brain-"
                                                "mask surfaces after the rigid "
                                                "registration to the reference session",
                                 "Units": "mm"},
    "registration_nmi": {"Description": "Normalised mutual information of the two brains "
                                        "after registration (1 = independent, 2 = "
                                        "identical)"},
    "registration_ok": {"Description": "Residual at most max_residual_mm of the "
                                       "transform's sidecar"},
}


def _register_session(reference, reference_mask, moving, moving_mask, cwd, seed):
    """:func:`~cmbprep.algorithms.registration.register_sessions` on files; the
    transform paths and the QC dict (run in a process with one ITK thread)."""
    from ..algorithms import registration as reg

    result = reg.register_sessions(_load3d(reference), _load3d(reference_mask),
                                   _load3d(moving), _load3d(moving_mask),
                                   Path(cwd) / "session_", seed=seed)
    return str(result.forward), str(result.inverse), result.qc()


class _RegisterSessionInputSpec(BaseInterfaceInputSpec):
    reference = File(exists=True, mandatory=True, desc="reference session's SWI")
    reference_mask = File(exists=True, mandatory=True, desc="its brain mask")
    moving = File(exists=True, mandatory=True, desc="later session's SWI")
    moving_mask = File(exists=True, mandatory=True, desc="its brain mask")
    seed = traits.Int(0, usedefault=True)


class _RegisterSessionOutputSpec(TraitedSpec):
    forward = File(exists=True, desc="resamples the later session onto the reference")
    inverse = File(exists=True, desc="maps later-session points to the reference")
    qc = File(exists=True, desc="residual and verdict (JSON)")


class RegisterSession(SimpleInterface):
    """Rigid registration of a later session onto the reference session, with one ITK
    thread (mutual information is only reproducible single-threaded)."""

    input_spec = _RegisterSessionInputSpec
    output_spec = _RegisterSessionOutputSpec

    def _run_interface(self, runtime):
        forward, inverse, qc = run_with_itk_threads(
            _register_session, 1, self.inputs.reference, self.inputs.reference_mask,
            self.inputs.moving, self.inputs.moving_mask, runtime.cwd, self.inputs.seed)
        qc_path = Path(runtime.cwd) / "registration_qc.json"
        qc_path.write_text(json.dumps(qc, indent=2) + "\n")
        self._results.update(forward=forward, inverse=inverse, qc=str(qc_path))
        return runtime


class _TrackLesionsInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True, desc="root of the derivatives dataset")
    prefix = traits.Str(mandatory=True, desc="sub-<label>[_acq-<label>][_run-<index>]")
    session_ids = traits.List(traits.Str, mandatory=True, desc="time-ordered ses-<label>")
    acq_times = traits.List(traits.Str, mandatory=True,
                            desc="ISO acquisition times ('n/a' when unknown)")
    swi = traits.List(File(exists=True), mandatory=True, desc="per session")
    cmb_tsv = traits.List(File(exists=True), mandatory=True, desc="per session")
    reviewed_tsv = traits.List(traits.Str, mandatory=True,
                               desc="per session: the rater's table or 'n/a'")
    forward = traits.List(File(exists=True), desc="per later session")
    inverse = traits.List(File(exists=True), desc="per later session")
    registration_qc = traits.List(File(exists=True), desc="per later session")


class _TrackLesionsOutputSpec(TraitedSpec):
    lesions_tsv = File(exists=True)
    sessions_tsv = File(exists=True)


class TrackLesions(SimpleInterface):
    """Follow the counted microbleeds over the sessions and write the results."""

    input_spec = _TrackLesionsInputSpec
    output_spec = _TrackLesionsOutputSpec

    def _run_interface(self, runtime):
        n_later = len(self.inputs.session_ids) - 1
        for name in ("forward", "inverse", "registration_qc"):
            given = getattr(self.inputs, name)
            if len(given or []) != n_later:
                raise ValueError(f"{name}: {len(given or [])} file(s) for {n_later} "
                                 "later session(s)")
        written = write_longitudinal_outputs(
            Path(self.inputs.output_dir), self.inputs.prefix,
            sessions=[{"session_id": ses, "acq_time": acq, "swi": swi, "cmb": cmb,
                       "reviewed": None if rev in ("", "n/a") else rev}
                      for ses, acq, swi, cmb, rev in zip(
                          self.inputs.session_ids, self.inputs.acq_times,
                          self.inputs.swi, self.inputs.cmb_tsv,
                          self.inputs.reviewed_tsv, strict=True)],
            registrations=[{"forward": f, "inverse": i,
                            "qc": json.loads(Path(q).read_text())}
                           for f, i, q in zip(self.inputs.forward, self.inputs.inverse,
                                              self.inputs.registration_qc, strict=True)])
        self._results.update(lesions_tsv=str(written["lesions"]),
                             sessions_tsv=str(written["sessions"]))
        return runtime


# --------------------------------------------------------------------------------------
# Reading the sessions, writing the participant's tables
# --------------------------------------------------------------------------------------
def _session_lesions(session, registration, swi_img):
    """A session's counted microbleeds as :class:`SessionLesions` in reference space,
    and whose they are (``source``, ``rater``)."""
    import numpy as np

    from ..algorithms.longitudinal import SessionLesions
    from ..algorithms.registration import map_points, points_in_field_of_view
    from ..utils.units import counted_cmbs

    unit = {"cmb": session["cmb"]}
    if session["reviewed"]:
        unit["reviewed"] = session["reviewed"]
    counted = counted_cmbs(unit)
    rows = counted["cmbs"]
    for column in ("x", "y", "z"):
        if column not in counted["columns"]:
            raise DataError(f"{counted['path']}: no '{column}' column")

    def numbers(column):
        return np.array([float(r[column]) if r.get(column) is not None else np.nan
                         for r in rows], float)

    xyz = np.column_stack([numbers(c) for c in ("x", "y", "z")]).reshape(-1, 3)
    transform = None
    if registration is not None:
        xyz = map_points(xyz, registration["inverse"])
        transform = registration["forward"]
    id_column = "candidate_id" if counted["source"] == "rater" else "cmb_id"
    lesions = SessionLesions(
        session_id=session["session_id"], xyz_mm=xyz,
        voxel_size_mm=swi_img.header.get_zooms()[:3],
        covers=lambda p: points_in_field_of_view(p, swi_img.shape, swi_img.affine,
                                                 transform=transform),
        score=numbers("score"), volume_mm3=numbers("volume_mm3"),
        source_id=[r.get(id_column) for r in rows])
    return lesions, counted["source"], counted["rater"]


def _lesion_sidecar(session_ids):
    sidecar = dict(LESION_COLUMNS)
    for ses in session_ids:
        for column, meta in SESSION_LESION_COLUMNS.items():
            sidecar[f"{ses}_{column}"] = {k: v.format(ses=ses) if isinstance(v, str) else v
                                          for k, v in meta.items()}
    return sidecar


def write_longitudinal_outputs(output_dir, prefix, sessions, registrations):
    """Follow a participant's microbleeds over its sessions and write the results.

    Parameters
    ----------
    output_dir : pathlib.Path
        Root of the derivatives dataset.
    prefix : str
        ``sub-<label>[_acq-<label>][_run-<index>]``.
    sessions : list of dict
        Time-ordered: ``session_id``, ``acq_time`` (ISO or ``n/a``), ``swi`` (image
        path), ``cmb`` (accepted table) and ``reviewed`` (the rater's table or None).
    registrations : list of dict
        Per later session: ``forward``, ``inverse`` (transform files) and ``qc``.

    Returns
    -------
    dict
        ``lesions``, ``sessions`` (TSV paths) and ``transforms`` (list of paths).
    """
    import nibabel as nib
    import pandas as pd

    from ..algorithms.longitudinal import count_per_session, session_days, track_lesions
    from ..utils.derivatives import session_transform_name
    from ..utils.io import copy_h5_atomic, write_json_atomic
    from ..utils.tables import write_tsv

    subject = prefix.split("_")[0]
    anat = Path(output_dir) / subject / "anat"
    session_ids = [s["session_id"] for s in sessions]
    followed, sources = [], []
    for index, session in enumerate(sessions):
        registration = registrations[index - 1] if index else None
        lesions, source, rater = _session_lesions(session, registration,
                                                  nib.load(session["swi"]))
        followed.append(lesions)
        sources.append((source, rater))
    lesions = track_lesions(followed)
    counts = count_per_session(lesions, session_ids)
    since, interval = session_days([s["acq_time"] for s in sessions])
    counts.insert(1, "acq_time", [s["acq_time"] for s in sessions])
    counts.insert(2, "days_since_reference", since)
    counts.insert(3, "interval_days", interval)
    counts.insert(4, "count_source", [s for s, _ in sources])
    counts.insert(5, "rater", [r for _, r in sources])
    qc = [None] + [r["qc"] for r in registrations]
    counts["registration_residual_mm"] = [q["residual_mm"] if q else None for q in qc]
    counts["registration_nmi"] = [q["nmi"] if q else None for q in qc]
    counts["registration_ok"] = pd.array([q["registration_ok"] if q else None for q in qc],
                                         dtype=object)
    transforms = []
    for ses, registration in zip(session_ids[1:], registrations, strict=True):
        name = session_transform_name(prefix, ses, session_ids[0])
        transforms.append(copy_h5_atomic(registration["forward"], anat / f"{name}.h5"))
        write_json_atomic(anat / f"{name}.json", {
            **registration["qc"],
            "Description": f"Rigid transform that resamples {ses} images onto "
                           f"{session_ids[0]} (ANTs composite, HDF5); it maps "
                           f"{session_ids[0]} points to {ses} points.",
            "Sources": [f"{subject}/{ses}/anat/" + Path(
                sessions[session_ids.index(ses)]["swi"]).name]})
    lesion_tsv, _ = write_tsv(lesions, anat / f"{prefix}_desc-longitudinal_cmb.tsv",
                              _lesion_sidecar(session_ids))
    sessions_tsv, _ = write_tsv(counts, anat / f"{prefix}_desc-sessions_cmb.tsv",
                                SESSION_COLUMNS)
    return {"lesions": lesion_tsv, "sessions": sessions_tsv, "transforms": transforms}
