"""Sphinx configuration of the cmbprep documentation."""

import cmbprep

project = "cmbprep"
author = "The cmbprep developers"
copyright = "2026, The cmbprep developers"
version = release = cmbprep.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinxarg.ext", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
