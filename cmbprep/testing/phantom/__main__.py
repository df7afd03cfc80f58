"""``python -m cmbprep.testing.phantom OUT_DIR ...``: see :mod:`.cli`."""

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
