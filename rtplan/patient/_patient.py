"""The patient model: :class:`Patient`, a CT :class:`~rtplan.Image` with its structures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dose_engine import Grid

from ..errors import StructureError
from ..structures import Structure, derive_structure
from ._image import Image

__all__ = ["PATIENT_POSITIONS", "Patient", "PatientPosition"]

PatientPosition = Literal["HFS", "FFS", "HFP", "FFP"]  # (0018,5100) PatientPosition
PATIENT_POSITIONS: tuple[str, ...] = ("HFS", "FFS", "HFP", "FFP")


@dataclass(frozen=True, eq=False)
class Patient:
    """A CT image with its structures, as loaded from DICOM or built as a phantom.

    Attributes
    ----------
    ct : Image
        Hounsfield units, float32, ``[z, y, x]``; the grid increases along +x, +y, +z (LPS).
    structures : dict of str to Structure
        In file (ROI) order.
    position : {"HFS", "FFS", "HFP", "FFP"}
        (0018,5100) *PatientPosition* of the CT.
    frame_of_reference_uid : str
        (0020,0052) *FrameOfReferenceUID* shared by CT and structures.
    study_instance_uid, ct_series_instance_uid : str
        (0020,000D), (0020,000E) of the CT.
    ct_sop_instance_uids : tuple of str
        (0008,0018) of the CT slices, in slice order (+z).
    structure_set_uid : str or None
        (0008,0018) of the RT-STRUCT, None when there is none.
    dicom_patient : pydicom.Dataset
        Only the Patient and General Study module elements, to copy into new objects.
    """

    ct: Image
    structures: dict
    position: str
    frame_of_reference_uid: str
    study_instance_uid: str
    ct_series_instance_uid: str
    ct_sop_instance_uids: tuple
    structure_set_uid: str | None
    dicom_patient: Any

    @property
    def grid(self) -> Grid:
        """The CT grid."""
        return self.ct.grid

    def structure(self, name: str) -> Structure:
        """The structure called ``name``.

        Raises
        ------
        StructureError
            If there is none; the message lists the available names.
        """
        try:
            return self.structures[name]
        except KeyError:
            raise StructureError(
                f"No structure named {name!r}; available: "
                f"{', '.join(repr(n) for n in self.structures) or '(none)'}."
            ) from None

    def derive(
        self,
        name: str,
        expression: Any,
        *,
        roi_type: str = "",
        color_rgb: tuple[int, int, int] | None = None,
    ) -> Patient:
        """A copy of the patient with one more structure, derived from the others.

        Parameters
        ----------
        name : str
            Name of the new structure (must be new).
        expression : rtplan.structures.Expr or str
            E.g. ``expand("GTV", 5.0)`` or ``(roi("Lung_L") | roi("Lung_R")) - "PTV"``
            (see :mod:`rtplan.structures`).
        roi_type : str, optional
            (3006,00A4) *RTROIInterpretedType* when written ("PTV", "ORGAN", ...).
        color_rgb : (3,) tuple of int, optional
            Display colour; a distinct palette colour by default.

        Returns
        -------
        Patient
            Same CT and UIDs; ``structures`` holds the original ones plus a
            :class:`rtplan.structures.DerivedStructure` evaluated lazily on any grid.

        Raises
        ------
        StructureError
            ``name`` is taken or the expression names a structure the patient lacks.

        Examples
        --------
        >>> from rtplan.phantoms import make_phantom
        >>> from rtplan.structures import expand
        >>> p = make_phantom("cshape").derive("PTV+5", expand("PTV", 5.0))
        >>> p.structure("PTV+5")
        DerivedStructure('PTV+5' = expand(roi('PTV'), 5))
        """
        from dataclasses import replace

        new = derive_structure(
            self.structures, name, expression, roi_type=roi_type, color_rgb=color_rgb
        )
        return replace(self, structures={**self.structures, name: new})

    def __repr__(self) -> str:
        return (
            f"Patient(position={self.position!r}, ct={self.ct!r}, "
            f"structures={list(self.structures)})"
        )
