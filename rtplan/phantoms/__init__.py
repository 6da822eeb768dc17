"""Procedural test phantoms: the AAPM TG-119 geometries, a water box and a thorax.

- :func:`make_phantom` builds a :class:`rtplan.Patient` in memory;
- :func:`write_phantom` writes it as a DICOM CT series + RT-STRUCT (``rtplan phantom``);
- :func:`write_patient` writes any :class:`rtplan.Patient` the same way.

Geometry (LPS mm, centred on the origin) is documented in :mod:`rtplan.phantoms._geometry`
and, for the thorax (lungs, heart, bone, a couch, a GTV), :mod:`rtplan.phantoms._thorax`.
"""

from __future__ import annotations

import os

from .._arguments import PATH, TEXT, check_arguments
from ._dicom import WrittenPatient, write_patient
from ._geometry import PHANTOM_NAMES
from ._make import make_phantom

__all__ = ["PHANTOM_NAMES", "WrittenPatient", "make_phantom", "write_patient", "write_phantom"]


@check_arguments(name=TEXT, out_dir=PATH)
def write_phantom(
    name: str,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    **geometry,
) -> WrittenPatient:
    """Build the phantom ``name`` and write it as DICOM (atomically).

    Parameters
    ----------
    name : str
        One of :data:`PHANTOM_NAMES`.
    out_dir : path
        Folder to create: ``CT/CT.0001.dcm ...`` and ``RS.dcm``.
    overwrite : bool, optional
        Replace an existing folder (default: raise :class:`~rtplan.errors.OutputExistsError`).
    **geometry
        Keyword arguments of :func:`make_phantom` (``pixel_spacing_mm``,
        ``slice_spacing_mm``, ``matrix_size``, ``n_slices``, ``position``,
        ``body_contour``).

    Returns
    -------
    WrittenPatient
        Paths of the CT folder, slice files and RT-STRUCT.
    """
    from .._atomic import refuse_existing
    from ._geometry import phantom_spec

    refuse_existing(out_dir, overwrite=overwrite)  # fail before any work
    patient = make_phantom(name, **geometry)
    body_part = phantom_spec(name).body_part
    return write_patient(patient, out_dir, overwrite=overwrite, body_part_examined=body_part)
