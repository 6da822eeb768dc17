"""Procedural test phantoms: the AAPM TG-119 geometries, a water box and a thorax.

- :func:`make_phantom` builds a :class:`rtplan.Patient` in memory;
- :func:`write_phantom` writes it as a DICOM CT series + RT-STRUCT (``rtplan phantom``);
- :func:`rtplan.io.write_patient` (formerly here) writes any :class:`rtplan.Patient` the
  same way.

Geometry (LPS mm, centred on the origin) is documented in :mod:`rtplan.phantoms._geometry`
and, for the thorax (lungs, heart, bone, a couch, a GTV), :mod:`rtplan.phantoms._thorax`.
"""

from __future__ import annotations

import os

from .. import io
from .._internal.arguments import PATH, TEXT, check_arguments
from .._internal.atomic import refuse_existing
from .._internal.deprecation import moved_names
from ._geometry import PHANTOM_NAMES, phantom_spec
from ._make import make_phantom

__all__ = ["PHANTOM_NAMES", "make_phantom", "write_phantom"]

#: Deprecated aliases (one release): the CT and RT-STRUCT writer is ``rtplan.io``'s.
__getattr__ = moved_names(
    __name__,
    {"write_patient": "rtplan.io:write_patient", "WrittenPatient": "rtplan.io:WrittenPatient"},
)


@check_arguments(name=TEXT, out_dir=PATH)
def write_phantom(
    name: str,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    **geometry,
) -> io.WrittenPatient:
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
    refuse_existing(out_dir, overwrite=overwrite)  # fail before any work
    patient = make_phantom(name, **geometry)
    body_part = phantom_spec(name).body_part
    return io.write_patient(patient, out_dir, overwrite=overwrite, body_part_examined=body_part)
