"""Sphinx configuration of the pywino3d documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors;
``tests/test_docs.py`` runs exactly this).
"""
import pywino3d

project = "pywino3d"
author = "the pywino3d developers"
copyright = "2026, the pywino3d developers"
release = version = pywino3d.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "benchmarks_cpu.md", "benchmarks_layers_table.md"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

autosummary_generate = True
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

html_theme = "pydata_sphinx_theme"
html_title = "pywino3d"
html_theme_options = {"navigation_depth": 2, "show_toc_level": 2}
