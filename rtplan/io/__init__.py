"""Every DICOM reader and writer: CT series, RT Structure Sets, RT-PLAN and RT-DOSE
(and PortPy's patient format)."""

from .._internal.deprecation import moved_names
from ._ct import CtSeries, read_ct
from ._load import read_patient
from ._patient_write import WrittenPatient, write_patient
from ._portpy import PortPyBeam, PortPyPatient, read_portpy_patient
from ._rtdose import RtDoseReferences, read_rtdose, write_rtdose
from ._rtplan_read import RtPlanBeams, read_rtplan, read_rtplan_beams, read_rtplan_delivery
from ._rtplan_write import write_rtplan
from ._rtstruct import StructureSet, read_structure_set
from ._rtstruct_write import has_generated_structures, write_structure_set

__all__ = [
    "CtSeries",
    "RtDoseReferences",
    "RtPlanBeams",
    "StructureSet",
    "WrittenPatient",
    "has_generated_structures",
    "read_ct",
    "read_patient",
    "read_portpy_patient",
    "PortPyBeam",
    "PortPyPatient",
    "read_structure_set",
    "read_rtdose",
    "read_rtplan",
    "read_rtplan_beams",
    "read_rtplan_delivery",
    "write_patient",
    "write_rtdose",
    "write_rtplan",
    "write_structure_set",
]

#: Deprecated names (one release): files are read by ``read_*`` (``load_*`` is for "a
#: shipped name or a path": machines, protocols).
__getattr__ = moved_names(
    __name__,
    {
        "load_ct": "rtplan.io:read_ct",
        "load_patient": "rtplan.io:read_patient",
        "load_portpy_patient": "rtplan.io:read_portpy_patient",
        "load_structure_set": "rtplan.io:read_structure_set",
    },
)
