"""The rater's review: ``cmbprep-review OUTPUT_DIR --participant-label LABEL``.

A local web page (served on 127.0.0.1 by :mod:`.server`, page in ``page.html``) shows
the detector's candidates one by one (three orthogonal crops of the SWI, the mIP and the
phase, :mod:`cmbprep.reports.crops`); each decision of the rater (``y`` / ``n`` / ``u``)
is written at once to ``<prefix>_desc-reviewed_cmb.tsv`` (:mod:`.store`), which the
group level counts (:mod:`cmbprep.group`). See ``docs/review.rst``.
"""

from .cli import main
from .server import ReviewSession, make_server

__all__ = ["ReviewSession", "main", "make_server"]
