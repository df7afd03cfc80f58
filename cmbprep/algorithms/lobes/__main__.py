"""``python -m cmbprep.algorithms.lobes``: build the region atlas (see :mod:`.build`)."""

import sys

from .build import main

sys.exit(main())
