"""Treatment beams in IEC 61217 geometry, expressed in DICOM patient coordinates (LPS, mm).

Coordinate systems (IEC 61217:2011, "Radiotherapy equipment – Coordinates, movements and
scales"; the same chain is drawn in DICOM PS3.3 section C.8.8.25.6, "Beam Geometry",
figures C.8.8.25-1 to -7, https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_C.8.8.25.6.html):

``f`` fixed
    Origin at the isocentre; +Zf up (towards the ceiling), +Yf from the isocentre towards
    the gantry, +Xf to the right of an observer who faces the gantry.
``g`` gantry
    ``Rg = Ry(gantry)`` about +Yf.  The radiation source lies on +Zg at ``SAD``.
``b`` beam limiting device (BLD)
    ``Rb = Rz(collimator)`` about +Zg.  +Xb is the leaf-travel (MLCX / ASYMX) direction,
    +Yb the leaf-stacking (ASYMY) direction.
``s`` patient support
    ``Rs = Rz(couch)`` about +Zf (isocentric patient-support rotation); the table top ``t``
    follows it (no pitch/roll here).
``p`` patient
    For a head-first-supine (HFS) patient the IEC patient system coincides with the table
    top: +Xt = patient left, +Yt = superior (head towards the gantry), +Zt = anterior.
    The other patient positions (0018,5100) *PatientPosition* are fixed rotations of the
    patient on the table top (DICOM PS3.3 C.7.3.1.1.2).

All rotations are positive clockwise when looked at from the origin along the positive
rotation axis, i.e. right-handed, which is the IEC 61217 convention.  With ``R(a)`` the
right-handed rotation, a vector with components ``v_b`` in the BLD system has fixed-system
components ``Rg Rb v_b``; its table-top components are ``Rs^T Rg Rb v_b`` and its DICOM
patient components ``M_pos Rs^T Rg Rb v_b``.  ``M_pos`` maps table-top components to LPS:

=====  =============================  ==========================================
pos.   LPS from table top (t)          reason
=====  =============================  ==========================================
HFS    x = +Xt, y = -Zt, z = +Yt       left on +Xt, anterior up, head to gantry
FFS    x = -Xt, y = -Zt, z = -Yt       feet to gantry: left and superior flip
HFP    x = -Xt, y = +Zt, z = +Yt       prone: anterior down, left flips
FFP    x = +Xt, y = +Zt, z = -Yt       prone and feet first: two flips cancel in x
=====  =============================  ==========================================

Each ``M_pos`` is a proper rotation (determinant +1).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ._arguments import INTEGER, check_arguments
from ._limits import check_limit
from .errors import InvalidGeometryError

__all__ = [
    "PATIENT_POSITIONS",
    "Beam",
    "PatientPosition",
    "equispaced_coplanar_beams",
    "isocenter_at_centroid",
]

logger = logging.getLogger("rtplan.dose_engine")

#: (0018,5100) *PatientPosition* values supported by the beam geometry.
PatientPosition = Literal["HFS", "FFS", "HFP", "FFP"]
PATIENT_POSITIONS: tuple[str, ...] = ("HFS", "FFS", "HFP", "FFP")

# LPS components from IEC table-top components (rows: x, y, z of LPS; columns: Xt, Yt, Zt).
_LPS_FROM_TABLE = {
    "HFS": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),
    "FFS": np.array([[-1.0, 0, 0], [0, 0, -1], [0, -1, 0]]),
    "HFP": np.array([[-1.0, 0, 0], [0, 0, 1], [0, 1, 0]]),
    "FFP": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),
}


def _rot_y(angle_deg: float) -> np.ndarray:
    """Right-handed rotation about +Y (IEC gantry rotation about +Yf)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(angle_deg: float) -> np.ndarray:
    """Right-handed rotation about +Z (IEC collimator about +Zg, couch about +Zf)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _check_angle(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidGeometryError(
            f"`{name}` must be a number of degrees; got {value!r}."
        ) from None
    if not math.isfinite(v) or v < 0.0 or v >= 360.0:
        raise InvalidGeometryError(
            f"`{name}` must be a finite angle in [0, 360) degrees (IEC 61217 scale); "
            f"got {value!r}. Use e.g. `angle % 360`."
        )
    return v


@dataclass(frozen=True)
class Beam:
    """One static photon beam in IEC 61217 geometry.

    Parameters
    ----------
    gantry_angle_deg : float
        IEC 61217 gantry angle in [0, 360) degrees, (300A,011E) *GantryAngle*.
    collimator_angle_deg : float, optional
        IEC 61217 beam-limiting-device angle, (300A,0120) *BeamLimitingDeviceAngle*.
    couch_angle_deg : float, optional
        IEC 61217 patient-support angle, (300A,0122) *PatientSupportAngle*.
    isocenter_mm : (3,) tuple of float, mm
        Isocentre ``(x, y, z)`` in DICOM patient coordinates (LPS), (300A,012C).
    sad_mm : float, optional
        Source-axis distance, mm (default 1000).
    patient_position : {"HFS", "FFS", "HFP", "FFP"}
        (0018,5100) *PatientPosition*.

    Notes
    -----
    For HFS at couch 0 and collimator 0, gantry 0 puts the source anterior (the beam
    travels towards +y), 90 at the patient's left (+x), 180 posterior, 270 right; BLD X
    is patient +x and BLD Y patient +z at gantry 0.  See the module docstring for the
    rotation chain.
    """

    gantry_angle_deg: float
    collimator_angle_deg: float = 0.0
    couch_angle_deg: float = 0.0
    isocenter_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sad_mm: float = 1000.0
    patient_position: PatientPosition = "HFS"
    _axes: np.ndarray = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "gantry_angle_deg", _check_angle("gantry_angle_deg", self.gantry_angle_deg)
        )
        object.__setattr__(
            self,
            "collimator_angle_deg",
            _check_angle("collimator_angle_deg", self.collimator_angle_deg),
        )
        object.__setattr__(
            self, "couch_angle_deg", _check_angle("couch_angle_deg", self.couch_angle_deg)
        )
        iso = np.asarray(self.isocenter_mm, dtype=float)
        if iso.shape != (3,) or not np.all(np.isfinite(iso)):
            raise InvalidGeometryError(
                "`isocenter_mm` must be 3 finite numbers (x, y, z) in mm; "
                f"got {self.isocenter_mm!r}."
            )
        object.__setattr__(self, "isocenter_mm", tuple(float(v) for v in iso))
        sad = float(self.sad_mm)
        if not math.isfinite(sad) or sad <= 0:
            raise InvalidGeometryError(
                f"`sad_mm` must be a positive distance; got {self.sad_mm!r}."
            )
        object.__setattr__(self, "sad_mm", sad)
        if self.patient_position not in PATIENT_POSITIONS:
            raise InvalidGeometryError(
                f"`patient_position` must be one of {', '.join(PATIENT_POSITIONS)} "
                f"((0018,5100) PatientPosition); got {self.patient_position!r}."
            )
        # Columns: BLD Xb, Yb, Zb expressed in LPS.
        fixed_from_bld = _rot_y(self.gantry_angle_deg) @ _rot_z(self.collimator_angle_deg)
        table_from_fixed = _rot_z(self.couch_angle_deg).T
        lps = _LPS_FROM_TABLE[self.patient_position] @ table_from_fixed @ fixed_from_bld
        lps[np.abs(lps) < 1e-15] = 0.0
        lps.setflags(write=False)
        object.__setattr__(self, "_axes", lps)

    # ------------------------------------------------------------------ axes
    @property
    def bld_x_axis(self) -> np.ndarray:
        """Unit vector of IEC BLD +X (leaf travel) in LPS."""
        return self._axes[:, 0].copy()

    @property
    def bld_y_axis(self) -> np.ndarray:
        """Unit vector of IEC BLD +Y (leaf stacking) in LPS."""
        return self._axes[:, 1].copy()

    @property
    def beam_axis(self) -> np.ndarray:
        """Unit vector from the source towards the isocentre (direction of travel), LPS."""
        return -self._axes[:, 2].copy()

    @property
    def source_position_mm(self) -> np.ndarray:
        """Position of the radiation source in LPS, mm."""
        return np.asarray(self.isocenter_mm) + self.sad_mm * self._axes[:, 2]

    def to_fan_coordinates(
        self, points_mm: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project patient points into the beam's divergent (fan) coordinates.

        Parameters
        ----------
        points_mm : (..., 3) array_like, mm
            Points ``(x, y, z)`` in LPS.

        Returns
        -------
        u_mm, v_mm : (...) ndarray, mm
            BLD x and y of the ray through the point, measured in the isocentre plane.
        z_mm : (...) ndarray, mm
            Distance from the source along the beam axis (``sad_mm`` at the isocentre plane).
        """
        p = np.asarray(points_mm, dtype=float) - self.source_position_mm
        z = p @ self.beam_axis
        scale = self.sad_mm / z
        return (p @ self.bld_x_axis) * scale, (p @ self.bld_y_axis) * scale, z

    def __repr__(self) -> str:
        return (
            f"Beam(gantry_angle_deg={self.gantry_angle_deg:g}, "
            f"collimator_angle_deg={self.collimator_angle_deg:g}, "
            f"couch_angle_deg={self.couch_angle_deg:g}, isocenter_mm="
            f"({', '.join(f'{v:.2f}' for v in self.isocenter_mm)}), sad_mm={self.sad_mm:g}, "
            f"patient_position={self.patient_position!r})"
        )


def isocenter_at_centroid(points_or_mask, grid=None) -> tuple[float, float, float]:
    """A physicist's default isocentre: the centroid of a target.

    Parameters
    ----------
    points_or_mask : (n, 3) array_like of mm points ``(x, y, z)``, or (nz, ny, nx) array
        Target points in LPS, or a target occupancy/mask on ``grid`` (voxel-weighted).
    grid : Grid, optional
        Needed when a mask is given.

    Returns
    -------
    isocenter_mm : (3,) tuple of float, mm

    Examples
    --------
    The centroid of a box of voxels ``[2:4, 5:9, 10:20]``:

    >>> import numpy as np
    >>> from dose_engine import Grid, isocenter_at_centroid
    >>> grid = Grid((10, 20, 30), origin_mm=(-29.0, -19.0, 0.0), spacing_mm=(2.0, 2.0, 3.0))
    >>> mask = np.zeros(grid.shape, bool)
    >>> mask[2:4, 5:9, 10:20] = True
    >>> isocenter_at_centroid(mask, grid)  # x: -29 + 14.5 * 2, y: -19 + 6.5 * 2, z: 2.5 * 3
    (0.0, -6.0, 7.5)
    """
    arr = np.asarray(points_or_mask)
    if arr.ndim == 3:
        if grid is None:
            raise InvalidGeometryError("`grid` is needed to find the centroid of a mask.")
        if tuple(arr.shape) != tuple(grid.shape):
            raise InvalidGeometryError(
                f"The mask has shape {arr.shape} but `grid` describes {grid.shape} voxels."
            )
        w = arr.astype(float)
        total = w.sum()
        if total <= 0:
            raise InvalidGeometryError("The target mask is empty; cannot place an isocentre.")
        idx = np.nonzero(w)
        zyx = np.stack(idx, axis=-1).astype(float)
        centre_idx = (zyx * w[idx][:, None]).sum(axis=0) / total
        x, y, z = (float(v) for v in grid.index_to_point(centre_idx))
        return (x, y, z)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise InvalidGeometryError(
            f"`points_or_mask` must be (n, 3) points or a 3-D mask; got shape {arr.shape}."
        )
    x, y, z = (float(v) for v in arr.astype(float).mean(axis=0))
    return (x, y, z)


@check_arguments(n=INTEGER)
def equispaced_coplanar_beams(
    n: int,
    *,
    isocenter_mm=(0.0, 0.0, 0.0),
    start_deg: float = 0.0,
    collimator_angle_deg: float = 0.0,
    sad_mm: float = 1000.0,
    patient_position: PatientPosition = "HFS",
) -> list[Beam]:
    """``n`` coplanar beams at gantry ``start_deg + k * 360 / n``, couch 0.

    Parameters
    ----------
    n : int
        Number of beams (≥ 1); 9 gives the classic 40° IMRT template.
    isocenter_mm : (3,) tuple of float, mm
    start_deg : float
        Gantry angle of the first beam.

    Examples
    --------
    >>> from dose_engine import equispaced_coplanar_beams
    >>> [beam.gantry_angle_deg for beam in equispaced_coplanar_beams(5)]
    [0.0, 72.0, 144.0, 216.0, 288.0]
    >>> [beam.gantry_angle_deg for beam in equispaced_coplanar_beams(4, start_deg=45.0)]
    [45.0, 135.0, 225.0, 315.0]
    """
    if int(n) != n or n < 1:
        raise InvalidGeometryError(f"`n` must be a positive number of beams; got {n!r}.")
    check_limit("beams", n, f"{n} equispaced beams", hint="Use fewer beams.")
    return [
        Beam(
            (start_deg + k * 360.0 / n) % 360.0,
            collimator_angle_deg=collimator_angle_deg,
            isocenter_mm=tuple(isocenter_mm),
            sad_mm=sad_mm,
            patient_position=patient_position,
        )
        for k in range(int(n))
    ]
