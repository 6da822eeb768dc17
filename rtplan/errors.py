"""Exceptions and warnings of :mod:`rtplan`.

Every error caused by bad input derives from :class:`InputError` (itself a
:class:`ValueError`), and its message names the file, the DICOM element or the
structure, what was expected and what was found.  The command-line interface turns
any :class:`RtplanError`, :class:`dose_engine.errors.DoseEngineError` or
:class:`optimizers.errors.OptimizerError` into one line on stderr and exit status 2.
Messages never contain patient names or IDs.
"""

from __future__ import annotations

#: A job would exceed a documented memory or work limit (``dose_engine._limits``; the
#: message gives the estimate and the environment variable that raises the limit).
from dose_engine.errors import ResourceLimitError

__all__ = [
    "ClusterError",
    "DicomReadError",
    "DicomWarning",
    "InputError",
    "MachineError",
    "OutputError",
    "OutputExistsError",
    "ProtocolError",
    "ReferenceMismatchError",
    "ResourceLimitError",
    "RtplanError",
    "RtplanWarning",
    "SegmentError",
    "SequencingError",
    "SeriesError",
    "StructureError",
]


class RtplanError(Exception):
    """Base class of every error raised by :mod:`rtplan`."""


class InputError(RtplanError, ValueError):
    """Bad input: a file, element, structure or option that cannot be used as given."""


class DicomReadError(InputError):
    """A file is not readable DICOM, or lacks an element that is required."""


class SeriesError(InputError):
    """A CT series is inconsistent: missing or duplicated slices, mixed series, oblique."""


class ReferenceMismatchError(InputError):
    """Two objects refer to different frames of reference or structure sets."""


class StructureError(InputError):
    """A structure is missing, empty where it must not be, or has malformed contours."""


class ProtocolError(InputError):
    """A planning protocol is malformed or names something the patient lacks."""


class MachineError(InputError):
    """A machine model file is malformed, or a machine name is unknown."""


class SegmentError(InputError):
    """An MLC segment or deliverable beam breaks the machine's limits or is malformed."""


class SequencingError(InputError):
    """A fluence map cannot be sequenced for this machine (outside the MLC, too wide, ...)."""


class OutputExistsError(InputError, FileExistsError):
    """An output already exists and overwriting was not requested (use ``--force``)."""


class RtplanWarning(UserWarning):
    """Base class of rtplan's warnings."""


class DicomWarning(RtplanWarning):
    """A DICOM object was read, but something about it is unusual (e.g. a series UID mismatch)."""


class OutputError(RtplanError):
    """An output cannot be written where asked: a path under a regular file, a folder that
    is not writable, a read-only or full file system, a ``--cache-dir`` that is a file."""


class ClusterError(RtplanError):
    """The Dask scheduler given by ``--scheduler`` cannot be reached or failed."""
