"""The longitudinal graph of one participant: later sessions onto the first, then the
microbleeds followed over the sessions (graph assembly only).

Built after the participant units are written, from their outputs on disk (sessions
processed in earlier runs included), by :func:`init_longitudinal_wf`; the sessions come
from :func:`cmbprep.utils.derivatives.collect_session_series`.
"""

from __future__ import annotations

from nipype.pipeline import engine as pe

from ..interfaces.longitudinal import RegisterSession, TrackLesions
from .base import _node_name


def init_longitudinal_wf(series, *, output_dir: str, seed: int = 0,
                         name: str | None = None):
    """Register each later session's SWI onto the first and follow the microbleeds.

    Parameters
    ----------
    series : cmbprep.utils.derivatives.SessionSeries
        A participant's time-ordered sessions (two or more) and their output files.
    output_dir : str
        Root of the derivatives dataset (the tables and transforms are written to
        ``sub-<label>/anat/``).
    seed : int
        ``antsRegistration`` random seed (each registration runs with one ITK thread,
        so that it is reproducible).
    """
    sessions = series.sessions
    workflow = pe.Workflow(name=name or f"longitudinal_{_node_name(series.prefix[4:])}_wf")
    register = pe.MapNode(RegisterSession(seed=seed), iterfield=["moving", "moving_mask"],
                          name="register_sessions")
    # Its inputs are participant outputs, which every run commits again (new mtimes,
    # same bytes): hash them by content so that a rerun does not register again.
    register.config = {"execution": {"hash_method": "content"}}
    register.inputs.reference = sessions[0]["swi"]
    register.inputs.reference_mask = sessions[0]["brain_mask"]
    register.inputs.moving = [s["swi"] for s in sessions[1:]]
    register.inputs.moving_mask = [s["brain_mask"] for s in sessions[1:]]
    track = pe.Node(TrackLesions(
        output_dir=str(output_dir), prefix=series.prefix,
        session_ids=[s["session_id"] for s in sessions],
        acq_times=[s["acq_time"] for s in sessions],
        swi=[s["swi"] for s in sessions], cmb_tsv=[s["cmb"] for s in sessions],
        reviewed_tsv=[s["reviewed"] or "n/a" for s in sessions]), name="track_lesions",
        overwrite=True)  # cheap, and a rater's table may have changed since the last run
    workflow.connect([(register, track, [("forward", "forward"), ("inverse", "inverse"),
                                         ("qc", "registration_qc")])])
    return workflow
