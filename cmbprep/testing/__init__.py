"""Testing helpers: the physics-based SWI phantom (:mod:`cmbprep.testing.phantom`).

Names are imported lazily so that ``python -m cmbprep.testing.phantom`` does not import
the module twice.
"""

__all__ = [
    "PROTOCOLS",
    "PhantomConfig",
    "SubjectPhantom",
    "simulate_subject",
    "write_bids_dataset",
    "write_example_dataset",
]


def __getattr__(name):
    if name in __all__:
        from cmbprep.testing import phantom

        return getattr(phantom, name)
    raise AttributeError(f"module 'cmbprep.testing' has no attribute {name!r}")
