"""Group level: tables, prevalence, count models and a report from participant outputs.

``cmbprep bids_dir output_dir group`` calls :func:`run_group`. It reads only the
participant outputs (``docs/architecture.rst``, "Participant outputs") and a covariates
table (``participants.tsv`` of the input dataset or ``--covariates FILE``) and never
reruns anything; like MRIQC's group level it lives beside, not inside, the Nipype
workflows. Statistics are the pure functions of :mod:`cmbprep.algorithms.stats`; the
HTML report is built by :mod:`cmbprep.reports.group`.

Modules: :mod:`.units` (find the participant output units and count each one's
microbleeds), :mod:`.covariates` (the covariates table and ``--prevalence-by``),
:mod:`.analysis` (prevalence and count-model tables), :mod:`.sidecars` (column
descriptions), :mod:`.run` (:func:`run_group`).

Rater review
------------
A rater records a review by copying a unit's ``<prefix>_desc-candidates_cmb.tsv`` to
``<prefix>_desc-reviewed_cmb.tsv`` (same folder) and setting the ``status`` of every row
to ``cmb`` (accept) or ``rejected``. When that file exists its ``cmb`` rows are counted
(``count_source = rater``); rows still marked ``review`` are not counted and are
reported in ``n_review_pending``. The rater's name may be given as ``"Rater"`` in the
file's JSON sidecar. Otherwise the accepted table ``_desc-cmb_cmb.tsv`` is counted
(``count_source = automatic``). Pipeline outputs are never edited, so rerunning the
participant level does not overwrite a review.
"""

from .analysis import run_prevalence, run_regressions
from .covariates import parse_prevalence_by, read_covariates
from .run import run_group
from .units import find_participant_units, summarise_unit

__all__ = ["find_participant_units", "parse_prevalence_by", "read_covariates",
           "run_group", "run_prevalence", "run_regressions", "summarise_unit"]
