"""Group level: tables, prevalence, count models and a report from participant outputs.

``cmbprep bids_dir output_dir group`` calls :func:`run_group`. It reads only the
participant outputs (``docs/architecture.rst``, "Participant outputs") and a covariates
table (``participants.tsv`` of the input dataset or ``--covariates FILE``) and never
reruns anything; like MRIQC's group level it lives beside, not inside, the Nipype
workflows. Statistics are the pure functions of :mod:`cmbprep.algorithms.stats`; the
HTML report is built by :mod:`cmbprep.reports.group`.

Modules: :mod:`.units` (find the participant output units and count each one's
microbleeds), :mod:`.covariates` (the covariates table and ``--prevalence-by``),
:mod:`.selection` (the units analysed: registration QC, reviewed counts, coverage
offset), :mod:`.analysis` (prevalence, rater agreement), :mod:`.models` (count-model
tables), :mod:`.repeated` (models over repeated sessions), :mod:`.sidecars` (column
descriptions), :mod:`.run` (:func:`run_group`).

Rater review
------------
``cmbprep-review`` (:mod:`cmbprep.review`, ``docs/review.rst``) writes a unit's
``<prefix>_desc-reviewed_cmb.tsv`` beside its candidate table: one row per rater and
candidate, with ``rater``, ``decision`` (``yes``/``no``/``unsure``), ``decided_at`` and
``status`` (``cmb``, ``rejected``, or ``review`` while unsure or undecided). When that
file exists the chosen rater's ``cmb`` rows are counted (``count_source = rater``; the
rater is ``--rater``, else the only one, else the first by name); that rater's ``review``
rows are not counted and are reported in ``n_review_pending``. A unit the chosen rater has
not reviewed is counted automatically. With two raters on a unit,
``group_rater_agreement.tsv`` gives Cohen's kappa on the candidates and the ICC(A,1) of
the counts per unit (:func:`.analysis.rater_agreement`). A table without a ``rater``
column (a rater's hand-edited copy of the candidate table, ``status`` set to ``cmb`` or
``rejected``) is read as one rater's, named by ``"Rater"`` in its JSON sidecar.
Otherwise the accepted table ``_desc-cmb_cmb.tsv`` is counted (``count_source =
automatic``). Pipeline outputs are never edited, so rerunning the participant level does
not overwrite a review.
"""

from .analysis import run_prevalence
from .models import run_regressions
from .covariates import parse_prevalence_by, read_covariates
from .run import run_group
from .units import find_participant_units, summarise_unit

__all__ = ["find_participant_units", "parse_prevalence_by", "read_covariates",
           "run_group", "run_prevalence", "run_regressions", "summarise_unit"]
