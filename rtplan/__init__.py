"""rtplan: radiation therapy planning from CT + RT-STRUCT to a deliverable DICOM RT-PLAN.

``import rtplan`` stays light: CVXPY, CuPy, matplotlib and the report back-end are
imported only by the code that needs them.
"""

from dose_engine import Grid

from . import errors

__version__ = "0.1.0"

__all__ = ["Grid", "__version__", "errors"]
