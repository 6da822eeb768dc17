"""Write a patient's structures, derived ones included, to a new RT Structure Set."""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path

from .._internal.arguments import PATH, check_arguments
from .._internal.atomic import atomic_file
from ..structures._body import BODY_OUTLINE_NAME
from ..structures._derived import DerivedStructure
from ._patient_write import _rtstruct

__all__ = ["has_generated_structures", "write_structure_set"]

logger = logging.getLogger("rtplan.structures")


def _generated(s) -> bool:
    return isinstance(s, DerivedStructure) or (
        s.name == BODY_OUTLINE_NAME and s.roi_type.upper() == "EXTERNAL"
    )


@check_arguments(patient="rtplan.patient._patient:Patient")
def has_generated_structures(patient) -> bool:
    """True when ``patient`` holds derived structures or a body outline made by rtplan."""
    return any(_generated(s) for s in patient.structures.values())


@check_arguments(path=PATH, patient="rtplan.patient._patient:Patient")
def write_structure_set(
    path: str | os.PathLike,
    patient,
    *,
    overwrite: bool = False,
    label: str = "RTPLAN",
    sop_instance_uid: str | None = None,
) -> Path:
    """Write every structure of ``patient`` to a new RT-STRUCT file, atomically.

    The patient's own ROIs are written unchanged (name, number, type, colour, contours);
    each :class:`DerivedStructure` is traced on every CT slice (contours of its occupancy
    on the CT grid, see :func:`rtplan.structures.contours_from_occupancy`); derived ROIs
    and the body outline get (3006,0036) *ROIGenerationAlgorithm* AUTOMATIC.  The file has
    a new (0008,0018) *SOPInstanceUID* and (0020,000E) *SeriesInstanceUID*, the CT's
    (0020,0052) *FrameOfReferenceUID*, and refers to the CT series and each CT slice.

    Parameters
    ----------
    path : path
        The ``.dcm`` file to write.
    patient : rtplan.Patient
    overwrite : bool
        Replace an existing file (default: refuse).
    label : str
        (3006,0002) *StructureSetLabel* (16 characters at most).
    sop_instance_uid : str, optional
        The new (0008,0018) *SOPInstanceUID* (e.g. to be referenced by an RT-PLAN written
        alongside); a fresh UID by default.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    rtplan.errors.OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    from dataclasses import replace

    grid = patient.ct.grid
    structures = {
        n: (s.to_structure(grid) if isinstance(s, DerivedStructure) else s)
        for n, s in patient.structures.items()
    }
    automatic = frozenset(n for n, s in patient.structures.items() if _generated(s))
    flat = replace(patient, structures=structures)
    ds = _rtstruct(
        flat,
        datetime.datetime.now(),
        sop_uid=sop_instance_uid or _new_uid(),
        label=label[:16],
        set_name="rtplan structures",
        description="rtplan derived structures",
        model_name="rtplan",
        automatic=automatic,
    )
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    logger.info("wrote %d ROIs (%d generated) to %s", len(structures), len(automatic), path.name)
    return path


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()
