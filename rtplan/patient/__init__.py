"""The patient model: the CT :class:`Image` on a grid, :class:`Patient` (a CT with its
:class:`~rtplan.structures.Structure` objects) and source-to-surface distances.
"""

from ._image import Image
from ._patient import PATIENT_POSITIONS, Patient, PatientPosition
from ._ssd import ssd_mm

__all__ = ["PATIENT_POSITIONS", "Image", "Patient", "PatientPosition", "ssd_mm"]
