"""Following microbleeds over a participant's sessions: match, label and count them.

Pure functions on arrays and tables (no images, no Nipype). Each session's microbleeds
come in the *reference* session's scanner space (RAS+ mm), already carried there by the
session registration (:func:`cmbprep.algorithms.registration.register_sessions`); a
session also says which reference points its field of view covers.

Sessions are taken in time order. Each session's microbleeds are matched one-to-one to
the lesions known so far (minimum total distance, within a tolerance that grows with the
voxel sizes of both sessions, :func:`matching_tolerance_mm`); those left unmatched start
new lesions. Every lesion then has, per session, a status ``found``, ``not_found`` (the
session covers its place but shows no microbleed there) or ``not_covered``, and one
label:

``persistent``
    Seen first in the first session that covers its place, and seen again later.
``new``
    Seen first after an earlier session that covered its place without showing it.
``not_seen_again``
    Seen first in the first session that covers its place; later sessions cover it and
    none shows it.
``not_assessable``
    Seen in one session only, and no other session covers its place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["LABELS", "SESSION_COUNT_COLUMNS", "STATUSES", "SessionLesions",
           "count_per_session", "label_lesions", "parse_acq_times", "session_days", "match_one_to_one",
           "matching_tolerance_mm", "track_lesions"]

LABELS = ("persistent", "new", "not_seen_again", "not_assessable")
STATUSES = ("found", "not_found", "not_covered")
#: Registration error allowed for on top of the voxel sizes (mm).
REGISTRATION_TOLERANCE_MM = 2.0


@dataclass
class SessionLesions:
    """One session's microbleeds in the reference session's space.

    Attributes
    ----------
    session_id : str
        ``ses-<label>``.
    xyz_mm : (N, 3) ndarray
        Positions in the reference session's scanner space (RAS+ mm).
    voxel_size_mm : sequence of 3 float
        The session image's voxel size.
    covers : callable
        ``covers(points (M, 3) reference mm) -> (M,) bool``: whether the session's field
        of view holds each point. Default: every point.
    score, volume_mm3 : (N,) ndarray, optional
        Per microbleed, reported as they are.
    source_id : sequence, optional
        The microbleed's id in the session's own table (``cmb_id`` or
        ``candidate_id``).
    """

    session_id: str
    xyz_mm: np.ndarray
    voxel_size_mm: Sequence[float]
    covers: Callable[[np.ndarray], np.ndarray] | None = None
    score: np.ndarray | None = None
    volume_mm3: np.ndarray | None = None
    source_id: Sequence | None = field(default=None)

    def __post_init__(self):
        self.xyz_mm = np.asarray(self.xyz_mm, dtype=float).reshape(-1, 3)
        n = len(self.xyz_mm)
        self.score = (np.full(n, np.nan) if self.score is None
                      else np.asarray(self.score, dtype=float))
        self.volume_mm3 = (np.full(n, np.nan) if self.volume_mm3 is None
                           else np.asarray(self.volume_mm3, dtype=float))
        self.source_id = list(range(1, n + 1)) if self.source_id is None \
            else list(self.source_id)
        if not len(self.score) == len(self.volume_mm3) == len(self.source_id) == n:
            raise ValueError(f"{self.session_id}: score, volume_mm3 and source_id need "
                             f"one value per microbleed ({n})")

    def covered(self, points_mm) -> np.ndarray:
        """Whether the session's field of view holds each reference-space point."""
        points = np.asarray(points_mm, dtype=float).reshape(-1, 3)
        if self.covers is None:
            return np.ones(len(points), bool)
        return np.asarray(self.covers(points), bool).reshape(len(points))


def matching_tolerance_mm(voxel_a_mm, voxel_b_mm,
                          registration_mm: float = REGISTRATION_TOLERANCE_MM) -> float:
    """Largest distance (mm) at which detections of two sessions are the same lesion.

    A microbleed's centre is located to about half a voxel diagonal in each session,
    and the registration adds its own error: ``registration_mm + (d_a + d_b) / 2`` with
    ``d`` the voxel diagonal (0.5x0.5x1 mm and 0.9x0.9x2 mm sessions: 2 + (1.22 + 2.37)
    / 2 = 3.8 mm). Microbleeds closer than this to each other cannot be told apart.
    """
    diag_a = float(np.linalg.norm(np.asarray(voxel_a_mm, float)))
    diag_b = float(np.linalg.norm(np.asarray(voxel_b_mm, float)))
    return float(registration_mm) + 0.5 * (diag_a + diag_b)


def match_one_to_one(xyz_a, xyz_b, tolerance_mm) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of points of ``a`` and ``b`` matched one-to-one.

    The assignment minimises the total distance over pairs closer than
    ``tolerance_mm`` (a scalar or an ``(len(a), len(b))`` array); points without a
    partner that close stay unmatched.
    """
    a = np.asarray(xyz_a, dtype=float).reshape(-1, 3)
    b = np.asarray(xyz_b, dtype=float).reshape(-1, 3)
    if not len(a) or not len(b):
        return []
    from scipy.optimize import linear_sum_assignment

    distance = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    allowed = distance <= np.broadcast_to(np.asarray(tolerance_mm, float), distance.shape)
    big = 1e6 + distance.max()
    rows, cols = linear_sum_assignment(np.where(allowed, distance, big))
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if allowed[i, j]]


def track_lesions(sessions: Sequence[SessionLesions]) -> pd.DataFrame:
    """Follow the microbleeds of time-ordered sessions (the first is the reference).

    Returns
    -------
    pandas.DataFrame
        One row per lesion, ordered by first appearance: ``lesion_id`` (1, 2, ...),
        ``x y z`` (reference-space mean of its detections), ``first_seen``, ``label``
        (:data:`LABELS`), and per session ``<ses>_status`` (:data:`STATUSES`),
        ``<ses>_score``, ``<ses>_volume_mm3``, ``<ses>_source_id`` (``NaN``/``None``
        where not found).
    """
    if not sessions:
        raise ValueError("no session to track")
    ids = [s.session_id for s in sessions]
    if len(set(ids)) != len(ids):
        raise ValueError(f"session ids must differ: {ids}")
    positions: list[list[np.ndarray]] = []  # detections of each lesion (reference mm)
    first_voxel: list[Sequence[float]] = []  # voxel size of the session that found it
    found: list[dict] = []  # per lesion: session index -> detection index
    for s_idx, session in enumerate(sessions):
        centres = np.array([np.mean(p, axis=0) for p in positions]).reshape(-1, 3)
        tolerance = np.array([[matching_tolerance_mm(v, session.voxel_size_mm)]
                              for v in first_voxel]).reshape(-1, 1)
        pairs = match_one_to_one(centres, session.xyz_mm, tolerance)
        matched = set()
        for lesion, detection in pairs:
            positions[lesion].append(session.xyz_mm[detection])
            found[lesion][s_idx] = detection
            matched.add(detection)
        for detection in range(len(session.xyz_mm)):
            if detection not in matched:
                positions.append([session.xyz_mm[detection]])
                first_voxel.append(session.voxel_size_mm)
                found.append({s_idx: detection})
    centres = np.array([np.mean(p, axis=0) for p in positions]).reshape(-1, 3)
    covered = np.array([s.covered(centres) for s in sessions]).reshape(len(sessions), -1)
    rows = []
    for lesion, hits in enumerate(found):
        row = {"lesion_id": lesion + 1, "x": centres[lesion, 0], "y": centres[lesion, 1],
               "z": centres[lesion, 2], "first_seen": ids[min(hits)]}
        statuses = []
        for s_idx, session in enumerate(sessions):
            detection = hits.get(s_idx)
            status = ("found" if detection is not None
                      else "not_found" if covered[s_idx, lesion] else "not_covered")
            statuses.append(status)
            row[f"{session.session_id}_status"] = status
            row[f"{session.session_id}_score"] = (
                session.score[detection] if detection is not None else np.nan)
            row[f"{session.session_id}_volume_mm3"] = (
                session.volume_mm3[detection] if detection is not None else np.nan)
            row[f"{session.session_id}_source_id"] = (
                session.source_id[detection] if detection is not None else None)
        row["label"] = label_lesions(statuses)
        rows.append(row)
    columns = ["lesion_id", "x", "y", "z", "first_seen", "label"] + [
        f"{s}_{c}" for s in ids for c in ("status", "score", "volume_mm3", "source_id")]
    return pd.DataFrame(rows, columns=columns)


def label_lesions(statuses: Sequence[str]) -> str:
    """The label (:data:`LABELS`) of one lesion from its time-ordered session statuses."""
    seen = [i for i, s in enumerate(statuses) if s == "found"]
    if not seen:
        raise ValueError("a lesion must be found in at least one session")
    first = seen[0]
    if any(s == "not_found" for s in statuses[:first]):
        return "new"
    later = [s for s in statuses[first + 1:] if s != "not_covered"]
    if not later:
        return "not_assessable"
    return "persistent" if "found" in later else "not_seen_again"


#: Columns of :func:`count_per_session`'s table.
SESSION_COUNT_COLUMNS = ["session_id", "n_cmb", "n_new", "n_persistent",
                         "n_not_seen_again", "n_not_covered"]


def count_per_session(lesions: pd.DataFrame, session_ids: Sequence[str]) -> pd.DataFrame:
    """Counts per session from :func:`track_lesions`' table.

    ``n_cmb`` microbleeds found in the session; ``n_new`` lesions labelled ``new`` that
    appear in it (``NaN`` for the first session); ``n_persistent`` found in it and in an
    earlier session; ``n_not_seen_again`` found in an earlier session, covered here and
    not found; ``n_not_covered`` found in another session, not covered here.
    """
    rows = []
    for s_idx, ses in enumerate(session_ids):
        status = lesions[f"{ses}_status"]
        earlier = np.zeros(len(lesions), bool)
        for previous in session_ids[:s_idx]:
            earlier |= (lesions[f"{previous}_status"] == "found").to_numpy()
        here = (status == "found").to_numpy()
        rows.append({
            "session_id": ses,
            "n_cmb": int(here.sum()),
            "n_new": (int(((lesions["label"] == "new") & (lesions["first_seen"] == ses))
                          .sum()) if s_idx else np.nan),
            "n_persistent": int((here & earlier).sum()),
            "n_not_seen_again": int((earlier & (status == "not_found").to_numpy()).sum()),
            "n_not_covered": int((status == "not_covered").sum()),
        })
    return pd.DataFrame(rows, columns=SESSION_COUNT_COLUMNS)


def parse_acq_times(acq_times: Sequence[str]) -> pd.Series:
    """ISO 8601 date-times (with or without time of day or zone) as UTC timestamps;
    ``NaT`` where a date is unknown (``n/a``, empty, None or unparsable)."""
    return pd.to_datetime(pd.Series([None if t in (None, "", "n/a") else t
                                     for t in acq_times], dtype=object),
                          errors="coerce", utc=True, format="ISO8601")


def session_days(acq_times: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Days since the first session and since the previous one, from ISO date-times
    (``nan`` where a date is unknown, see :func:`parse_acq_times`)."""
    times = parse_acq_times(acq_times)
    since = ((times - times.iloc[0]).dt.total_seconds() / 86400.0).to_numpy(float)
    previous = np.concatenate([[np.nan], np.diff(since)])
    return since, previous
