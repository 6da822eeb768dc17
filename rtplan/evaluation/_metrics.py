"""Plan-quality indices computed from DVHs: homogeneity, conformity and gradient.

HI and GI use the DVH interpolation convention of :mod:`rtplan.evaluation._dvh` (volumes
receiving *at least* a dose, partial voxels weighted by their occupancy), so they agree
with the ``Dx``/``Vx`` goals reported beside them; CI counts whole voxels (see its notes).

References
----------
.. [1] ICRU Report 83, "Prescribing, recording, and reporting photon-beam
   intensity-modulated radiation therapy (IMRT)", J ICRU 10(1), 2010, section 3.7.1
   (HI = (D2 − D98) / D50). :doi:`10.1093/jicru/ndq002`
.. [2] I. Paddick, "A simple scoring ratio to index the conformity of radiosurgical
   treatment plans", J Neurosurg 93 Suppl 3:219–222, 2000.
   :doi:`10.3171/jns.2000.93.supplement`
.. [3] I. Paddick and B. Lippitz, "A simple dose gradient measurement tool to complement
   the conformity index", J Neurosurg 105 Suppl:194–201, 2006.
   :doi:`10.3171/sup.2006.105.7.194`
"""

from __future__ import annotations

import math

import numpy as np

from .._internal.arguments import NUMBER, check_arguments
from .._internal.messages import quote
from ..errors import InputError
from ._dvh import DVH

__all__ = ["gradient_index", "homogeneity_index", "paddick_conformity_index", "quality_indices"]


def check_prescription_gy(prescription_gy) -> float:
    """``prescription_gy`` as a float: a finite, positive dose (Gy), else an error naming it.

    Raises
    ------
    TypeError
        Not a number.
    InputError
        Zero, negative, NaN or infinite.
    """
    if isinstance(prescription_gy, bool) or not isinstance(
        prescription_gy, int | float | np.integer | np.floating
    ):
        raise TypeError(
            f"`prescription_gy` must be a number (Gy); got {type(prescription_gy).__name__} "
            f"{quote(prescription_gy, 80)}."
        )
    rx = float(prescription_gy)
    if not (math.isfinite(rx) and rx > 0):
        raise InputError(
            f"`prescription_gy` must be a finite, positive dose in Gy; got {prescription_gy!r}."
        )
    return rx


@check_arguments(target="rtplan.evaluation._dvh:DVH")
def homogeneity_index(target: DVH) -> float:
    """ICRU 83 homogeneity index ``HI = (D2% − D98%) / D50%`` of a target DVH.

    0 is a perfectly uniform dose; larger is less homogeneous.  See [1]_ in the module.

    Parameters
    ----------
    target : DVH
        DVH of the target (usually the PTV).

    Returns
    -------
    float, dimensionless
    """
    d50 = target.d50_gy
    if d50 <= 0:
        raise InputError(
            f"HI is undefined for '{target.name}': its median dose D50 is {d50:g} Gy "
            "(expected > 0)."
        )
    return (target.d2_gy - target.d98_gy) / d50


@check_arguments(
    target="rtplan.evaluation._dvh:DVH", body="rtplan.evaluation._dvh:DVH", prescription_gy=NUMBER
)
def paddick_conformity_index(target: DVH, body: DVH, *, prescription_gy: float) -> float:
    """Paddick conformity index ``CI = TV_PIV² / (TV × PIV)``.

    ``TV`` is the target volume, ``PIV`` the prescription isodose volume (volume of
    ``body`` receiving at least ``prescription_gy``) and ``TV_PIV`` the target volume
    receiving at least ``prescription_gy``.  1 is a perfect plan.  Paddick (2000), [2]_.

    Parameters
    ----------
    target : DVH
        DVH of the target.
    body : DVH
        DVH of the region where the isodose volume is measured (the external contour, or
        the whole dose grid: ``dvh(dose, np.ones(shape), ...)``).
    prescription_gy : float, Gy
        Prescription dose defining the isodose.

    Returns
    -------
    float in [0, 1]
        0 when no voxel reaches the prescription.

    Notes
    -----
    Volumes are counted voxel by voxel as in Paddick's definition (a voxel is inside the
    isodose when its centre dose reaches the prescription, weighted by its occupancy; see
    :meth:`DVH.volume_at_or_above`), not interpolated: this keeps ``TV_PIV ≤ TV`` and, for a
    target inside ``body``, ``TV_PIV ≤ PIV`` exactly, so CI never exceeds 1.  Voxels count
    at their centre dose: where the target surface coincides with the prescription
    isodose, the partial target voxels whose centres lie just outside it count as
    under-dosed, so ``TV_PIV`` is low by about ``3 Δ / (8 R)`` of ``TV`` (voxel size Δ,
    target radius R) and CI by twice that: 0.93 instead of 1 for a 15 mm sphere on a
    1.5 mm grid.  Evaluate CI on a dose grid fine compared with the target.
    """
    rx = check_prescription_gy(prescription_gy)
    tv = target.total_volume_cc
    piv = body.volume_at_or_above(rx)
    tv_piv = target.volume_at_or_above(rx)
    if piv <= 0:
        return 0.0
    return tv_piv * tv_piv / (tv * piv)


@check_arguments(body="rtplan.evaluation._dvh:DVH", prescription_gy=NUMBER)
def gradient_index(body: DVH, *, prescription_gy: float) -> float:
    """Paddick–Lippitz gradient index ``GI = PIV_50% / PIV_100%``.

    Ratio of the volume receiving at least half the prescription to the volume receiving
    at least the prescription, both measured in ``body``.  Paddick & Lippitz (2006), [3]_.

    Parameters
    ----------
    body : DVH
        DVH of the external contour or the whole dose grid.
    prescription_gy : float, Gy

    Returns
    -------
    float ≥ 1

    Raises
    ------
    InputError
        No voxel receives the prescription dose (GI undefined).
    """
    rx = check_prescription_gy(prescription_gy)
    piv = body.volume_at_dose(rx)
    if piv <= 0:
        raise InputError(
            f"GI is undefined: no volume of '{body.name}' receives the prescription "
            f"{rx:g} Gy (maximum {body.true_max_gy:.4g} Gy)."
        )
    return body.volume_at_dose(0.5 * rx) / piv


@check_arguments(
    target="rtplan.evaluation._dvh:DVH", body="rtplan.evaluation._dvh:DVH", prescription_gy=NUMBER
)
def quality_indices(target: DVH, body: DVH, *, prescription_gy: float) -> dict[str, float | None]:
    """HI, Paddick CI and GI of a plan in one call.

    Parameters
    ----------
    target : DVH
        DVH of the prescription target.
    body : DVH
        DVH of the external contour or the whole dose grid.
    prescription_gy : float, Gy

    Returns
    -------
    dict
        ``{"HI": float | None, "CI": float, "GI": float | None}``; an index that is
        undefined for this dose (no dose at D50, nothing at the prescription) is None.
    """
    out: dict[str, float | None] = {}
    try:
        out["HI"] = homogeneity_index(target)
    except InputError:
        out["HI"] = None
    out["CI"] = paddick_conformity_index(target, body, prescription_gy=prescription_gy)
    try:
        out["GI"] = gradient_index(body, prescription_gy=prescription_gy)
    except InputError:
        out["GI"] = None
    return out
