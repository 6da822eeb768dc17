"""The patient model: the CT :class:`Image` on a grid, :class:`Structure` (contours →
masks on any grid, :mod:`._rasterize`), :class:`Patient`, and source-to-surface distances.
"""

from ._image import Image
from ._patient import PATIENT_POSITIONS, Patient, PatientPosition, Structure
from ._ssd import ssd_mm

__all__ = ["PATIENT_POSITIONS", "Image", "Patient", "PatientPosition", "Structure", "ssd_mm"]
