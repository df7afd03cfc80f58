"""cmbprep: find cerebral microbleeds on susceptibility-weighted MRI, as a BIDS-App."""

__version__ = "0.1.0"
__all__ = ["__version__"]
