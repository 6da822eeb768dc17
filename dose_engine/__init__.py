"""Photon dose engine: grids, IEC 61217 beams, ray tracing, pencil-beam kernels and
sparse dose-influence matrices on numpy (CPU) or CuPy (GPU).

Physics only: this package never imports :mod:`rtplan` or pydicom.
"""

from ._backend import BACKEND_NAMES, Backend, backend_of, get_backend, to_numpy
from ._grid import Grid
from .errors import (
    BackendError,
    BeamModelError,
    DoseEngineError,
    DoseEngineWarning,
    InvalidGeometryError,
)

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendError",
    "BeamModelError",
    "DoseEngineError",
    "DoseEngineWarning",
    "Grid",
    "InvalidGeometryError",
    "backend_of",
    "get_backend",
    "to_numpy",
]
