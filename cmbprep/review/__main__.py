"""``python -m cmbprep.review``: the same as the ``cmbprep-review`` command."""

import sys

from .cli import main

sys.exit(main())
