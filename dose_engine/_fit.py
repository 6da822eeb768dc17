"""Fit the pencil-beam model to measured water-tank data (commissioning).

:func:`fit_beam_model` takes any :class:`~dose_engine._measured.MeasuredData` (PDDs and
profiles of open fields at any SSD and depth, output factors, an absolute calibration);
``python -m dose_engine.fit --measurements DIR`` runs it on a folder (see
:mod:`dose_engine._commission_cli`).  ``python -m dose_engine.fit [OUT.json]`` regenerates
``data/beam_model_6MV.json`` from the pymedphys 6 MV data (:func:`fit_6mv_model`).

Procedure (variable projection: the depth function ``A(d)`` cancels from every quantity
compared in step 1, because they are ratios of doses at the same depth):

1. Shape parameters — focal-source blur ``σ_src`` (BLD x and y), primary and scatter kernel
   widths ``σ_p(d) = p0 + p1 d``, ``σ_s(d) = s0 + s1 d``, head-scatter weight ``w_h`` and
   widths ``σ_h`` (x and y), the off-axis horn (dip ``a`` and width ``s``) and the
   scatter-to-primary ratio ``r(d)`` at depth nodes (:data:`R_NODES_MM` up to the deepest
   reference-PDD point) and, when the data hold broad fields (a PDD of a field at least
   :data:`BROAD_FIELD_MM` wide), the long-range scatter tail (width ``σ_t(d) = t0 + t1 d``
   and weight ``r_t(d)`` at :data:`TAIL_NODES_MM`) — by nonlinear least squares
   (:func:`scipy.optimize.least_squares`) on (a) every profile, normalised to its value
   at position 0, (b) the ratio of every other PDD to the reference field's PDD at the
   same depths, normalised at the output-factor depth, (c) every output factor relative
   to the reference field, and (d) with the electron contamination, the reference PDD
   itself (see below).  The fit runs to convergence (relative cost change below
   :data:`FIT_TOLERANCE`), not to an evaluation budget, so its result does not depend on
   the path the solver took: from the generic start, from a perturbed one and with the
   scans in another order it lands on the same model (doses within 0.01 % on every scan
   point; ``tests/dose_engine/test_commissioning``).
2. Primary depth function ``A(d) = PDD_ref(d) / G_ref(d)`` from the reference PDD, where
   ``G_ref`` (inverse square and lateral integral) comes from step 1; extended to
   :data:`MAX_DEPTH_MM` with an exponential fitted to the deepest 100 mm.
3. Absolute calibration ``N`` from the calibration geometry (at dmax or a stated depth).

With ``electron_contamination=True`` step 1 also fits the electron-contamination term
``w_e exp(-d/λ_e) P(σ_e)`` (:mod:`dose_engine._model`).  It is added to the photon dose,
so ``A(d)`` no longer cancels from the ratios: every evaluation of step 1 takes ``A(d)``
from the reference PDD less the contamination (step 2, :func:`_depth_function`), and a
contamination larger than the reference PDD (``A`` floored at 0) shows as a misfit of
that PDD (residual d).
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ._arguments import check_arguments
from ._measured import MeasuredData, pymedphys_6mv_data
from ._model import BeamModel, rectangle_dose
from ._scan import MeasuredScan, field_label, point_label
from .errors import BeamModelError

__all__ = [
    "fit_6mv_model",
    "fit_beam_model",
    "has_broad_fields",
    "shape_from_model",
    "water_point_geometry",
]

logger = logging.getLogger("rtplan.dose_engine")

SAD_MM = 1000.0
R_NODES_MM = np.array([0, 5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 250, 300, 350], float)
#: The long-range scatter tail is fitted only when the data hold a PDD of a field at least
#: this wide (mm, the shorter side): below, the narrow scatter Gaussian holds all the
#: scatter the data show, and the tail's share and width would be undetermined.
BROAD_FIELD_MM = 150.0
#: Depth nodes of the tail's weight ``r_t(d)`` (mm; constant beyond the last).
TAIL_NODES_MM = np.array([0.0, 50.0, 100.0, 200.0, 300.0])
#: Start, lower and upper bounds of the tail's width ``t0`` (mm), ``t1`` and node weights.
TAIL_START = (60.0, 0.05, 0.05)
TAIL_LO = (20.0, 0.0, 0.0)
TAIL_HI = (200.0, 0.5, 2.0)
#: Start, lower and upper bounds of the electron contamination ``w_e exp(-d/λ_e) P(σ_e)``:
#: its weight (relative to the primary depth function ``A(d)``, whose maximum is 1),
#: e-folding depth ``λ_e`` and lateral width ``σ_e`` (mm, isocentre plane).
CONTAMINATION_START = (0.1, 4.0, 40.0)
CONTAMINATION_LO = (0.0, 0.5, 5.0)
CONTAMINATION_HI = (1.0, 30.0, 300.0)
MAX_DEPTH_MM = 600.0
#: Residual weights of the PDD ratios and output factors against profile points.
PDD_RATIO_WEIGHT = 4.0
OUTPUT_FACTOR_WEIGHT = 20.0
#: Start, lower and upper bounds of the 11 scalar shape parameters (see :func:`_shape_params`).
THETA0 = np.array([1.0, 1.0, 0.01, 15.0, 0.1, 0.05, 30.0, 1.0, 30.0, 0.03, 60.0])
THETA_LO = np.array([0.1, 0.1, 0.0, 2.0, 0.0, 0.0, 5.0, 0.1, 5.0, 0.0, 20.0])
THETA_HI = np.array([5.0, 10.0, 0.2, 100.0, 1.0, 0.5, 150.0, 5.0, 150.0, 0.15, 200.0])
#: Start, lower and upper bound of the horn's dip ``a`` and width ``s`` (mm) by fluence mode
#: (the last two entries of the scalar vector).  The off-axis focal fluence is
#: ``1 - a exp(-r²/2s²)``.  Physical bounds: a flattening filter over-compensates near the
#: axis, so a flattened beam has a shallow dip, ``0 ≤ a ≤ 0.15`` (the "horns"); without the
#: filter the fluence falls monotonically off axis, ``a ≤ 0`` (a peak), by at most a factor
#: 2.5 (``a ≥ -1.5``; 6-10 MV FFF beams fall to 0.5-0.7 of their central value at 15-20 cm
#: off axis: Georg et al. 2011, Med Phys 38:1280, doi:10.1118/1.3554643), over widths up to
#: 400 mm.  The fluence stays positive for every ``a`` in either range.
HORN_BOUNDS = {
    "STANDARD": {"start": (0.03, 60.0), "lo": (0.0, 20.0), "hi": (0.15, 200.0)},
    "FFF": {"start": (-0.3, 120.0), "lo": (-1.5, 30.0), "hi": (0.0, 400.0)},
}
SIX_MV_NAME = "rtplan generic 6 MV pencil beam"
#: ``ftol``, ``xtol`` and ``gtol`` of the shape fit: it stops on convergence, not on a budget.
FIT_TOLERANCE = 1e-12
#: Default evaluation budget of the shape fit (the pymedphys data converge in 55-115).
MAX_NFEV = 500
#: Calibration entry of the intermediate (unnormalised) models of steps 1-2.
_NO_CALIB = {"dose_gy_per_mu": 1.0, "field_size_mm": 100.0, "ssd_mm": 1000.0, "depth_mm": 0.0}


def water_point_geometry(ssd_mm, depth_mm, offaxis_x_mm, offaxis_y_mm=0.0, sad_mm=SAD_MM):
    """Exact fan coordinates of points in a flat water phantom (beam along the normal).

    Parameters
    ----------
    ssd_mm : float
    depth_mm, offaxis_x_mm, offaxis_y_mm : array_like, mm
        Geometric depth below the surface and off-axis distances at that depth.

    Returns
    -------
    u_mm, v_mm, z_mm, radiological_depth_mm : ndarray of float64
        Iso-plane fan coordinates, distance from the source along the axis and slant
        water depth along the ray.
    """
    d, x, y = np.broadcast_arrays(
        np.asarray(depth_mm, float),
        np.asarray(offaxis_x_mm, float),
        np.asarray(offaxis_y_mm, float),
    )
    z = ssd_mm + d
    u = x * sad_mm / z
    v = y * sad_mm / z
    slant = np.sqrt(1.0 + (x * x + y * y) / (z * z))
    return u, v, z, d * slant


def _shape_params(
    theta: np.ndarray, nodes_mm: np.ndarray, tail: bool = False, contamination: bool = False
) -> dict:
    """Shape parameters from the fit vector (11 scalars, then ``r`` at each node, then with
    ``tail`` the tail's ``t0``, ``t1`` and ``r_t`` at each of :data:`TAIL_NODES_MM`, then
    with ``contamination`` the electron contamination's ``w_e``, ``λ_e`` and ``σ_e``)."""
    shape = {
        "source_sigma_mm": [float(theta[0]), float(theta[7])],
        "sigma_primary_mm": [float(theta[1]), float(theta[2])],
        "sigma_scatter_mm": [float(theta[3]), float(theta[4])],
        "head_scatter_weight": float(theta[5]),
        "head_scatter_sigma_mm": [float(theta[6]), float(theta[8])],
        "horn": {"dip": float(theta[9]), "sigma_mm": float(theta[10])},
        "scatter_ratio_depth_mm": [float(v) for v in nodes_mm],
        "scatter_ratio_nodes": [float(v) for v in theta[11 : 11 + nodes_mm.size]],
    }
    rest = theta[11 + nodes_mm.size :]
    if tail:
        shape["scatter_tail"] = {
            "sigma_mm": [float(rest[0]), float(rest[1])],
            "depth_mm": [float(v) for v in TAIL_NODES_MM],
            "ratio": [float(v) for v in rest[2 : 2 + TAIL_NODES_MM.size]],
        }
        rest = rest[2 + TAIL_NODES_MM.size :]
    if contamination:
        shape["electron_contamination"] = {
            "weight": float(rest[0]),
            "depth_mm": float(rest[1]),
            "sigma_mm": float(rest[2]),
        }
    return shape


def shape_from_model(params: dict, nodes_mm=R_NODES_MM) -> dict:
    """The step-1 (shape) parameters of an existing model file's content."""
    nodes = np.asarray(nodes_mm, float)
    shape = {
        "source_sigma_mm": list(params["source_sigma_mm"]),
        "sigma_primary_mm": list(params["sigma_primary_mm"]),
        "sigma_scatter_mm": list(params["sigma_scatter_mm"]),
        "head_scatter_weight": float(params["head_scatter_weight"]),
        "head_scatter_sigma_mm": list(params["head_scatter_sigma_mm"]),
        "horn": dict(params["horn"]),
        "scatter_ratio_depth_mm": [float(v) for v in nodes],
        "scatter_ratio_nodes": [
            float(v) for v in np.interp(nodes, params["depth_mm"], params["scatter_ratio"])
        ],
    }
    if "scatter_tail" in params:
        shape["scatter_tail"] = dict(params["scatter_tail"])
    if "electron_contamination" in params:
        shape["electron_contamination"] = dict(params["electron_contamination"])
    return shape


def _model_from(shape: dict, depth_mm, primary, norm: float, calib: dict, meta: dict) -> BeamModel:
    """A :class:`BeamModel` from shape parameters and a tabulated depth function.

    ``meta`` holds ``name``, ``energy_mv``, ``sad_mm``, ``provenance`` and optionally
    ``mlc`` (the commissioning table's MLC and jaw parameters, which every aperture dose
    applies over the machine's defaults: ``applied_to_dose`` is true).
    """
    ratio = np.interp(depth_mm, shape["scatter_ratio_depth_mm"], shape["scatter_ratio_nodes"])
    params = {
        "name": meta.get("name", "fit in progress"),
        "energy_mv": meta.get("energy_mv"),
        "sad_mm": float(meta.get("sad_mm", SAD_MM)),
        "calibration": calib,
        "normalisation_gy_per_mu": float(norm),
        "depth_mm": [float(v) for v in depth_mm],
        "primary_weight": [float(v) for v in primary],
        "scatter_ratio": [float(v) for v in ratio],
        "sigma_primary_mm": shape["sigma_primary_mm"],
        "sigma_scatter_mm": shape["sigma_scatter_mm"],
        "source_sigma_mm": shape["source_sigma_mm"],
        "head_scatter_weight": shape["head_scatter_weight"],
        "head_scatter_sigma_mm": shape["head_scatter_sigma_mm"],
        "horn": shape["horn"],
        "provenance": meta.get("provenance", {}),
    }
    if "scatter_tail" in shape:
        params["scatter_tail"] = shape["scatter_tail"]
    if "electron_contamination" in shape:
        params["electron_contamination"] = shape["electron_contamination"]
    if meta.get("fluence_mode", "STANDARD") != "STANDARD":  # absent: STANDARD (the
        params["fluence_mode"] = meta["fluence_mode"]  # shipped 6 MV file's fingerprint)
    if "mlc" in meta:
        params["mlc"] = meta["mlc"]
    return BeamModel(params)


def _unit_model(shape: dict, meta: dict, measured: MeasuredData | None = None) -> BeamModel:
    """Steps 1-2 model: ``N = 1``, ``r(d)`` tabulated at its own nodes and ``A(d) = 1`` —
    or, with an electron contamination (an additive dose, so ``A(d)`` no longer cancels from
    the ratios step 1 compares), ``A(d)`` from the reference PDD of ``measured``
    (:func:`_depth_function`)."""
    if "electron_contamination" in shape:
        if measured is None:
            raise BeamModelError("a model with electron contamination needs the reference PDD")
        depth, prim = _depth_function(shape, measured, meta)
        return _model_from(shape, depth, prim, 1.0, _NO_CALIB, meta)
    depth = np.append(shape["scatter_ratio_depth_mm"], MAX_DEPTH_MM)
    return _model_from(shape, depth, np.ones(depth.size), 1.0, _NO_CALIB, meta)


def _dose(model: BeamModel, ssd, field, depth, x, y=0.0):
    """Dose (Gy/MU) of an ``(x, y)`` mm field at water points ``(depth, x, y)`` (broadcast)."""
    u, v, z, d = water_point_geometry(ssd, depth, x, y, model.sad_mm)
    fx, fy = field
    rect = np.array([[-fx / 2, fx / 2, -fy / 2, fy / 2]])
    return rectangle_dose(u.ravel(), v.ravel(), z.ravel(), d.ravel(), rect, [1.0], model).reshape(
        u.shape
    )


def _profile_dose(model: BeamModel, scan: MeasuredScan, positions_mm) -> np.ndarray:
    """Model dose along a profile's line at ``positions_mm``."""
    pos = np.asarray(positions_mm, float)
    if scan.curve == "DIAGONAL_PROFILE":
        if scan.direction is None:
            raise BeamModelError(f"{scan.source}: a DIAGONAL_PROFILE scan has no direction.")
        ux, uy = scan.direction
        return _dose(model, scan.ssd_mm, scan.field, scan.depth_mm, pos * ux, pos * uy)
    if scan.curve == "CROSSPLANE_PROFILE":
        return _dose(model, scan.ssd_mm, scan.field, scan.depth_mm, pos, scan.offaxis_mm)
    return _dose(model, scan.ssd_mm, scan.field, scan.depth_mm, scan.offaxis_mm, pos)


# ------------------------------------------------------------------ fit targets
def _profile_targets(measured: MeasuredData) -> list[tuple[MeasuredScan, np.ndarray]]:
    """Each profile with its reading relative to the reading at position 0."""
    return [(s, s.value / np.interp(0.0, s.position_mm, s.value)) for s in measured.profiles()]


def _pdd_ratio_targets(measured: MeasuredData) -> list[tuple]:
    """``(scan, depths_mm, measured ratio, normalisation depth)`` for every non-reference PDD.

    The ratio is PDD(scan) / PDD(reference) at the reference PDD's depths inside the scan's
    range, normalised to 1 at the output-factor depth (clipped into that range).
    """
    ref = measured.reference_pdd()
    out = []
    for s in measured.pdds():
        if s is ref:
            continue
        inside = (ref.position_mm >= s.position_mm[0]) & (ref.position_mm <= s.position_mm[-1])
        depths = ref.position_mm[inside]
        if depths.size < 3:
            continue
        ratio = np.interp(depths, s.position_mm, s.value) / ref.value[inside]
        dn = float(np.clip(measured.of_depth_mm, depths[0], depths[-1]))
        out.append((s, depths, ratio / np.interp(dn, depths, ratio), dn))
    return out


def _of_targets(measured: MeasuredData) -> list[tuple[tuple[float, float], float]]:
    """``(field, OF / OF_ref)`` for every non-reference field of the output-factor table."""
    ref = measured.reference_field_mm
    of_ref = measured.output_factors[ref]
    return [(f, v / of_ref) for f, v in measured.output_factors.items() if f != ref]


def _shape_residuals(m: BeamModel, measured: MeasuredData, targets: dict) -> np.ndarray:
    """Step-1 residuals of a model (any ``A(d)``: it cancels from every term)."""
    res = []
    for s, rel in targets["profiles"]:
        prof = _profile_dose(m, s, np.concatenate([[0.0], s.position_mm]))
        res.append(prof[1:] / prof[0] - rel)
    ref = measured.reference_pdd()
    if "electron_contamination" in m.parameters:
        # A(d) gives the reference PDD back exactly unless a contamination larger than the
        # PDD floored it at 0: then the mismatch counts
        pdd = _dose(m, ref.ssd_mm, ref.field, ref.position_mm, 0.0)
        res.append(PDD_RATIO_WEIGHT * (pdd / pdd.max() - ref.value / ref.value.max()))
    for s, depths, ratio, dn in targets["pdd_ratios"]:
        dd = np.concatenate([[dn], depths])
        g = _dose(m, s.ssd_mm, s.field, dd, 0.0) / _dose(m, ref.ssd_mm, ref.field, dd, 0.0)
        res.append(PDD_RATIO_WEIGHT * (g[1:] / g[0] - ratio))
    ssd, depth = measured.of_ssd_mm, measured.of_depth_mm
    if targets["output_factors"]:
        d_ref = _dose(m, ssd, measured.reference_field_mm, depth, 0.0)
        res.append(
            [
                OUTPUT_FACTOR_WEIGHT * (_dose(m, ssd, f, depth, 0.0) / d_ref - of)
                for f, of in targets["output_factors"]
            ]
        )
    return np.concatenate([np.ravel(r) for r in res])


def _targets(measured: MeasuredData) -> dict:
    return {
        "profiles": _profile_targets(measured),
        "pdd_ratios": _pdd_ratio_targets(measured),
        "output_factors": _of_targets(measured),
    }


def _scatter_nodes(measured: MeasuredData) -> np.ndarray:
    """Depth nodes of ``r(d)``: :data:`R_NODES_MM` up to the deepest reference-PDD point."""
    deepest = float(measured.reference_pdd().position_mm[-1])
    nodes = R_NODES_MM[R_NODES_MM <= deepest]
    return nodes if nodes[-1] >= deepest else np.append(nodes, deepest)


def _theta_bounds(fluence_mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, lower and upper bounds of the scalar shape parameters for a fluence mode."""
    horn = HORN_BOUNDS[fluence_mode]
    return tuple(  # type: ignore[return-value]
        np.concatenate([base[:9], horn[key]])
        for base, key in ((THETA0, "start"), (THETA_LO, "lo"), (THETA_HI, "hi"))
    )


def has_broad_fields(measured: MeasuredData) -> bool:
    """Whether the data hold a PDD of a field at least :data:`BROAD_FIELD_MM` wide (the
    fit then fits the long-range scatter tail)."""
    return any(min(s.field) >= BROAD_FIELD_MM for s in measured.pdds())


def _fit_shape(
    measured: MeasuredData,
    targets: dict,
    max_nfev: int,
    meta: dict,
    start,
    tail: bool,
    contamination: bool = False,
):
    """Step 1 (with the long-range scatter tail if ``tail``, the electron contamination if
    ``contamination``).  Returns ``(shape, cost, nfev, converged)``."""
    from scipy.optimize import least_squares

    nodes = _scatter_nodes(measured)

    def residuals(theta):
        shape = _shape_params(theta, nodes, tail, contamination)
        return _shape_residuals(_unit_model(shape, meta, measured), measured, targets)

    n = nodes.size
    start0, theta_lo, theta_hi = _theta_bounds(measured.fluence_mode)
    lo = np.concatenate([theta_lo, np.zeros(n)])
    hi = np.concatenate([theta_hi, np.full(n, 5.0)])
    theta0 = np.concatenate([start0, np.full(n, 0.15)])
    if tail:
        k = TAIL_NODES_MM.size
        lo = np.concatenate([lo, TAIL_LO[:2], np.full(k, TAIL_LO[2])])
        hi = np.concatenate([hi, TAIL_HI[:2], np.full(k, TAIL_HI[2])])
        theta0 = np.concatenate([theta0, TAIL_START[:2], np.full(k, TAIL_START[2])])
    if contamination:
        lo = np.concatenate([lo, CONTAMINATION_LO])
        hi = np.concatenate([hi, CONTAMINATION_HI])
        theta0 = np.concatenate([theta0, CONTAMINATION_START])
    if start is not None:
        theta0 = _theta(start, nodes, tail, contamination)
    fit = least_squares(
        residuals,
        np.clip(theta0, lo, hi),
        bounds=(lo, hi),
        max_nfev=max_nfev,
        x_scale="jac",
        ftol=FIT_TOLERANCE,
        xtol=FIT_TOLERANCE,
        gtol=FIT_TOLERANCE,
    )
    converged = fit.status > 0
    log = logger.info if converged else logger.warning
    log(
        "shape fit: cost %.6g after %d evaluations (%s)",
        fit.cost,
        fit.nfev,
        "converged" if converged else "stopped at the evaluation budget before converging",
    )
    shape = _shape_params(fit.x, nodes, tail, contamination)
    return shape, float(fit.cost), int(fit.nfev), converged


def _theta(
    shape: dict, nodes_mm: np.ndarray, tail: bool = False, contamination: bool = False
) -> np.ndarray:
    """The fit vector of shape parameters (inverse of :func:`_shape_params`); with ``tail``
    (``contamination``) and a start without one, the tail starts at :data:`TAIL_START` (the
    contamination at :data:`CONTAMINATION_START`)."""
    ratio = np.interp(nodes_mm, shape["scatter_ratio_depth_mm"], shape["scatter_ratio_nodes"])
    scalars = [
        shape["source_sigma_mm"][0],
        shape["sigma_primary_mm"][0],
        shape["sigma_primary_mm"][1],
        shape["sigma_scatter_mm"][0],
        shape["sigma_scatter_mm"][1],
        shape["head_scatter_weight"],
        shape["head_scatter_sigma_mm"][0],
        shape["source_sigma_mm"][1],
        shape["head_scatter_sigma_mm"][1],
        shape["horn"]["dip"],
        shape["horn"]["sigma_mm"],
    ]
    extra: list[float] = []
    if tail:
        t = shape.get("scatter_tail")
        if t is None:
            extra += [*TAIL_START[:2], *np.full(TAIL_NODES_MM.size, TAIL_START[2])]
        else:
            extra += [*t["sigma_mm"], *np.interp(TAIL_NODES_MM, t["depth_mm"], t["ratio"])]
    if contamination:
        e = shape.get("electron_contamination")
        extra += (
            list(CONTAMINATION_START) if e is None else [e["weight"], e["depth_mm"], e["sigma_mm"]]
        )
    return np.concatenate([np.asarray(scalars, float), ratio, np.asarray(extra, float)])


def software_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a fit (recorded in the model file)."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "rtplan"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def _depth_function(shape: dict, measured: MeasuredData, meta: dict):
    """Step 2: ``(depth_mm, A(d))`` tabulated from 0 to :data:`MAX_DEPTH_MM`, max 1.

    The reference PDD ``v(d) = k (A G + w_e E)``: ``G`` is the photon dose of ``A = 1`` and
    ``E`` the electron contamination's dose of unit weight (none without one), both with
    ``N = 1``.  ``A = 1`` at its maximum fixes ``k = max_d v / (G + w_e E)``, and
    ``A = v / (k G) - w_e E / G`` (floored at 0).  A PDD that starts below the surface is
    continued to it on its first two points' slope (the build-up is steep there: continued
    flat from 0.5 mm, a synthetic clinic's surface dose came out 11 % high).
    """
    ref = measured.reference_pdd()
    photon = {k: v for k, v in shape.items() if k != "electron_contamination"}
    depth = ref.position_mm
    g = _dose(_unit_model(photon, meta), ref.ssd_mm, ref.field, depth, 0.0)
    prim = ref.value / g
    if "electron_contamination" in shape:  # its dose alone: the same shape with A(d) = 0
        zero = _model_from(shape, [0.0, MAX_DEPTH_MM], [0.0, 0.0], 1.0, _NO_CALIB, meta)
        e_g = _dose(zero, ref.ssd_mm, ref.field, depth, 0.0) / g
        prim = np.maximum(prim / np.max(prim / (1.0 + e_g)) - e_g, 0.0)
    else:
        prim = prim / prim.max()
    if depth[0] > 0.0:  # a PDD from below the surface: A(d) continued on its first slope
        slope0 = (prim[1] - prim[0]) / (depth[1] - depth[0])
        depth, prim = np.append(0.0, depth), np.append(max(prim[0] - slope0 * depth[0], 0.0), prim)
    tail = (depth >= depth[-1] - 100.0) & (prim > 0)
    slope, icpt = np.polyfit(depth[tail], np.log(prim[tail]), 1)
    ext = np.arange((np.floor(depth[-1] / 50.0) + 1) * 50.0, MAX_DEPTH_MM + 1.0, 50.0)
    return np.concatenate([depth, ext]), np.concatenate([prim, np.exp(icpt + slope * ext)])


def _calibrate(shape: dict, depth_mm, prim, measured: MeasuredData, meta: dict):
    """Step 3: ``(normalisation_gy_per_mu, calibration entry of the model file)``."""
    cal = measured.calibration
    fx, fy = cal["field_mm"]
    entry = {
        "dose_gy_per_mu": cal["dose_gy_per_mu"],
        "field_size_mm": fx if fx == fy else [fx, fy],
        "ssd_mm": cal["ssd_mm"],
        "depth_mm": 0.0,
    }
    m = _model_from(shape, depth_mm, prim, 1.0, entry, meta)
    if cal["depth_mm"] == "dmax":
        fine = np.arange(0.0, 60.0, 0.25)
        ref = _dose(m, cal["ssd_mm"], cal["field_mm"], fine, 0.0)
        entry["depth_mm"], dose = float(fine[np.argmax(ref)]), float(ref.max())
    else:
        entry["depth_mm"] = cal["depth_mm"]
        dose = float(_dose(m, cal["ssd_mm"], cal["field_mm"], cal["depth_mm"], 0.0))
    return cal["dose_gy_per_mu"] / dose, entry


def _residual_summary(model: BeamModel, measured: MeasuredData, targets: dict) -> dict:
    """RMS profile and reference-PDD residuals, output factors and absolute doses."""
    prof = [
        _profile_dose(model, s, s.position_mm) / _profile_dose(model, s, 0.0) - rel
        for s, rel in targets["profiles"]
    ]
    ref = measured.reference_pdd()
    pdd = _dose(model, ref.ssd_mm, ref.field, ref.position_mm, 0.0)
    ssd, depth = measured.of_ssd_mm, measured.of_depth_mm
    d_ref = _dose(model, ssd, measured.reference_field_mm, depth, 0.0)
    return {
        "profile_rms_fraction_of_cax": float(np.sqrt(np.mean(np.concatenate(prof) ** 2))),
        "reference_pdd_rms_fraction_of_max": float(
            np.sqrt(np.mean((pdd / pdd.max() - ref.value / ref.value.max()) ** 2))
        ),
        "output_factors": {
            field_label(f): {
                "model": float(_dose(model, ssd, f, depth, 0.0) / d_ref),
                "measured": of,
            }
            for f, of in targets["output_factors"]
        },
        "absolute_dose_gy_per_mu": [
            {
                "point": point_label(p),
                "model": float(_dose(model, p["ssd_mm"], p["field_mm"], p["depth_mm"], 0.0)),
                "measured": p["dose_gy_per_mu"],
            }
            for p in measured.absolute_dose
        ],
    }


def _describe(measured: MeasuredData) -> str:
    """One sentence on the data: files, fields, SSDs and profile depths."""
    files = sorted({Path(s.source.split(", scan")[0]).name for s in measured.scans})
    fields = sorted({field_label(s.field) for s in measured.scans})
    ssds = sorted({s.ssd_mm for s in measured.scans})
    depths = sorted({s.depth_mm for s in measured.profiles() if s.depth_mm is not None})
    return (
        f"{measured.source}: {len(measured.pdds())} PDDs and {len(measured.profiles())} profiles "
        f"from {', '.join(files)} (fields {', '.join(fields)} mm, SSD "
        f"{'/'.join(f'{v:g}' for v in ssds)} mm, profile depths "
        f"{'/'.join(f'{v:g}' for v in depths)} mm); output factors "
        f"{', '.join(field_label(f) for f in measured.output_factors)} at SSD "
        f"{measured.of_ssd_mm:g} mm, {measured.of_depth_mm:g} mm depth"
    )


def _require_two_pdd_fields(measured: MeasuredData) -> None:
    """Refuse a shape fit from PDDs of one field size: the fit cannot then separate primary
    from scattered dose (fitted from the pymedphys 10 x 10 cm² scans alone, the model put
    the held-out 5 x 5 PDD 6.8 % off at depth)."""
    fields = sorted({s.field for s in measured.pdds()})
    if len(fields) < 2:
        raise BeamModelError(
            f"{measured.source}: PDDs of {len(fields)} field size(s) "
            f"({', '.join(field_label(f) for f in fields) or 'none'}); fitting the beam model "
            "needs PDDs of at least two field sizes (e.g. 5x5 and 10x10 cm²) to separate "
            "primary from scattered dose."
        )


@check_arguments(measured="dose_engine._measured:MeasuredData")
def fit_beam_model(
    measured: MeasuredData,
    *,
    max_nfev: int = MAX_NFEV,
    shape: dict | None = None,
    start: dict | None = None,
    name: str | None = None,
    fitted_by: str = "dose_engine.fit_beam_model",
    scatter_tail: bool | None = None,
    electron_contamination: bool = False,
) -> dict:
    """Fit the pencil-beam model to a commissioning data set.

    Parameters
    ----------
    measured : MeasuredData
        From :func:`~dose_engine.read_measured_data` (checked again here).
    max_nfev : int
        Evaluation budget of the nonlinear shape fit (step 1).  The fit stops when it has
        converged; a fit that meets the budget first is marked ``"converged": false`` in the
        provenance and logged as a warning.
    shape : dict, optional
        Skip step 1 and use these shape parameters (see :func:`shape_from_model`); steps 2-3
        (depth function and calibration) and the residual summary still run.
    start : dict, optional
        Start step 1 from these shape parameters (e.g. ``shape_from_model`` of an earlier
        commissioning of the machine) instead of the generic start :data:`THETA0`.  The
        converged result does not depend on it.
    name : str, optional
        Model name; default ``"rtplan <E> MV pencil beam (<folder>)"``.
    fitted_by : str
        Recorded in the provenance.
    scatter_tail : bool, optional
        Fit the long-range scatter tail; default: when the data hold broad fields
        (:func:`has_broad_fields`).
    electron_contamination : bool
        Fit the electron-contamination term (weight, e-folding depth and lateral width)
        with the other shape parameters.

    Returns
    -------
    params : dict
        JSON-serialisable content of a beam-model file (:func:`~dose_engine.load_beam_model`
        reads it), with a ``provenance`` entry holding the data, the procedure, the date
        and the residuals.

    Raises
    ------
    BeamModelError
        If the data set cannot be fitted (see :meth:`MeasuredData.check`), or, without
        ``shape``, holds PDDs of fewer than two field sizes.
    """
    measured.check()
    if shape is None:
        _require_two_pdd_fields(measured)
    energy = measured.energy_mv
    first_source = Path(measured.source.split(", ")[0]).name
    energy_text = "" if energy is None else f"{energy:g} MV "
    fff_text = "FFF " if measured.fluence_mode == "FFF" else ""
    meta: dict[str, Any] = {
        "name": name or f"rtplan {energy_text}{fff_text}pencil beam ({first_source})",
        "energy_mv": energy,
        "fluence_mode": measured.fluence_mode,
        "sad_mm": measured.sad_mm,
    }
    targets = _targets(measured)
    cost, nfev, converged = float("nan"), 0, True
    if shape is None:
        tail = has_broad_fields(measured) if scatter_tail is None else scatter_tail
        shape, cost, nfev, converged = _fit_shape(
            measured, targets, max_nfev, meta, start, tail, electron_contamination
        )
    depth_mm, prim = _depth_function(shape, measured, meta)
    norm, calib = _calibrate(shape, depth_mm, prim, measured, meta)
    final = _model_from(shape, depth_mm, prim, norm, calib, meta)
    residuals = _residual_summary(final, measured, targets)
    if measured.mlc:
        meta["mlc"] = {**measured.mlc, "applied_to_dose": True}
    residuals.update(least_squares_cost=cost, least_squares_nfev=nfev, converged=converged)
    largest = max(max(s.field) for s in measured.scans)
    meta["provenance"] = {
        "data": _describe(measured),
        "fitted_by": fitted_by,
        "date": _dt.date.today().isoformat(),
        "software": software_versions(),
        "output_factor_definition": f"dose ratio to {field_label(measured.reference_field_mm)} "
        f"at {measured.of_depth_mm:g} mm depth, SSD {measured.of_ssd_mm:g} mm, central axis",
        "residuals": residuals,
        "not_modelled": "off-axis beam softening (depth dependence of the horns), MLC and "
        f"jaw transmission, tongue-and-groove, fields beyond {largest:g} mm (no measurements: "
        "the horn and head-scatter are extrapolated)",
    }
    logger.info("fit residuals: %s", residuals)
    return _model_from(shape, depth_mm, prim, norm, calib, meta).parameters


def fit_6mv_model(
    *,
    max_nfev: int = MAX_NFEV,
    shape: dict | None = None,
    start: dict | None = None,
    broad_fields: bool = False,
    electron_contamination: bool = False,
) -> dict:
    """:func:`fit_beam_model` on the pymedphys 6 MV data (the shipped model's recipe).

    With ``broad_fields`` the 20 × 20 and 40 × 40 cm² PDDs of
    :func:`dose_engine._broad_fields.with_broad_fields` are added, and the long-range
    scatter tail is fitted (not yet the shipped recipe: docs/commissioning.md); with
    ``electron_contamination`` the electron-contamination term (not shipped either).
    The provenance names the data by the pymedphys release and the folder inside its wheel,
    not by the path of the machine where the fit ran.
    """
    from importlib import metadata

    from ._broad_fields import with_broad_fields

    measured = pymedphys_6mv_data()
    data = with_broad_fields(measured) if broad_fields else measured
    params = fit_beam_model(
        data,
        max_nfev=max_nfev,
        shape=shape,
        start=start,
        name=SIX_MV_NAME,
        fitted_by="dose_engine._fit.fit_6mv_model (python -m dose_engine.fit)",
        electron_contamination=electron_contamination,
    )
    wheel = f"pymedphys {metadata.version('pymedphys')} wheel: " + "/".join(
        Path(measured.source).parts[-6:]
    )
    provenance = params["provenance"]
    provenance["data"] = provenance["data"].replace(measured.source, wheel)
    return params
