"""Every DICOM reader and writer: CT series, RT Structure Sets, RT-PLAN and RT-DOSE
(and PortPy's patient format)."""

from ._ct import CtSeries, load_ct
from ._load import load_patient
from ._patient_write import WrittenPatient, write_patient
from ._portpy import PortPyBeam, PortPyPatient, load_portpy_patient
from ._rtdose import RtDoseReferences, read_rtdose, write_rtdose
from ._rtplan_read import RtPlanBeams, read_rtplan, read_rtplan_beams
from ._rtplan_write import write_rtplan
from ._rtstruct import StructureSet, load_structure_set
from ._rtstruct_write import has_generated_structures, write_structure_set

__all__ = [
    "CtSeries",
    "RtDoseReferences",
    "RtPlanBeams",
    "StructureSet",
    "WrittenPatient",
    "has_generated_structures",
    "load_ct",
    "load_patient",
    "load_portpy_patient",
    "PortPyBeam",
    "PortPyPatient",
    "load_structure_set",
    "read_rtdose",
    "read_rtplan",
    "read_rtplan_beams",
    "write_patient",
    "write_rtdose",
    "write_rtplan",
    "write_structure_set",
]
