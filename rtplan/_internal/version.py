"""rtplan's version, in one place (``rtplan.__version__``; keep equal to pyproject.toml)."""

__version__ = "0.1.0"
