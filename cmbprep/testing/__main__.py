"""``python -m cmbprep.testing OUT_DIR ...``: same as ``python -m cmbprep.testing.phantom``."""

from cmbprep.testing.phantom import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
