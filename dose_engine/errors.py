"""Errors and warnings raised by :mod:`dose_engine`.

The physics package cannot import :mod:`rtplan`, so it has its own small hierarchy;
:mod:`rtplan.errors` re-exports it and the CLI treats it like rtplan's own errors.
"""

from __future__ import annotations


class DoseEngineError(Exception):
    """Base class of every error raised by :mod:`dose_engine`."""


class InvalidGeometryError(DoseEngineError, ValueError):
    """A grid, beam or field is not physically meaningful (e.g. isocentre outside the CT)."""


class BeamModelError(DoseEngineError, ValueError):
    """A beam-model or HU-to-density file is malformed (missing keys, non-monotonic table)."""


class BackendError(DoseEngineError, RuntimeError):
    """The requested array backend (e.g. ``"cupy"``) is not available on this machine."""


class DoseEngineWarning(UserWarning):
    """Something was computed, but with a caveat the user should read."""


class ResourceLimitError(DoseEngineError, ValueError):
    """A computation would exceed a documented memory or work limit (the message gives the
    estimate and the limit)."""
