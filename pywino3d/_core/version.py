"""The package version: one home, read by setup (pyproject) and the package."""
__version__ = "0.1.0"
