"""A synthetic "clinic" for field-size tests: water-tank scans from an independent model.

The dose engine's kernel is a sum of Gaussians; this reference machine uses the
exponential pencil kernel of Ahnesjö, Saxner and Trepp (1992, Med Phys 19:263,
doi:10.1118/1.596856), ``k(r) = b e^{-b r} / (2 π r)`` per component (unit integral over
the plane), a primary one (``1/b`` = :data:`PRIMARY_RANGE_MM`) and a scatter one whose range
grows with depth (``1/b_s = 25 + 0.25 d`` mm).  Its long tail makes phantom scatter keep
growing up to 40 × 40 cm², as measured depth doses do.  The dose at a point of a water
phantom at SSD 1000 mm from a rectangle ``R`` (iso-plane, sharp edges) is

``D = (SAD/z)² [T_p(d) Π_p + T_s(d) Π_s]``, ``Π = 1/(2π) ∫ dθ [e^{-b r₁(θ)} - e^{-b r₂(θ)}]``

with ``r₁, r₂`` the distances (iso plane) at which the ray from the point's fan position at
angle ``θ`` enters and leaves ``R`` — the exact integral of the kernel over ``R``, evaluated
on :data:`N_ANGLES` angles.  ``T_p = e^{-μ d} B(d)``, ``T_s = s d e^{-μ_s d} B(d)``,
``B(d) = 1 - (1 - q) e^{-β d}``; no head scatter, no horns.
"""

from __future__ import annotations

import numpy as np

from dose_engine._measured import MeasuredData
from dose_engine._scan import MeasuredScan

SAD_MM = 1000.0
SSD_MM = 1000.0
N_ANGLES = 720
PRIMARY_RANGE_MM = 1.2
MU_PER_MM = 0.0046
BUILDUP_PER_MM = 0.25
#: Build-up ``1 - (1 - q) e^{-β d}``: ``q`` sets the surface dose (about 15 % of dmax).
SURFACE_SHARE = 0.15
SCATTER_PER_MM = 0.0022
MU_SCATTER_PER_MM = 0.0035


def _scatter_range_mm(depth_mm):
    return 25.0 + 0.25 * np.asarray(depth_mm, float)


def _kernel_integral(u, v, rect, range_mm):
    """``Π`` at iso-plane points ``(u, v)`` (arrays) for kernel ranges ``range_mm`` (same
    shape, iso plane)."""
    theta = (np.arange(N_ANGLES) + 0.5) * (2.0 * np.pi / N_ANGLES)
    cx, cy = np.cos(theta), np.sin(theta)
    x1, x2, y1, y2 = rect
    with np.errstate(divide="ignore", invalid="ignore"):
        tx1 = (x1 - u[:, None]) / cx
        tx2 = (x2 - u[:, None]) / cx
        ty1 = (y1 - v[:, None]) / cy
        ty2 = (y2 - v[:, None]) / cy
    t_in = np.maximum(np.minimum(tx1, tx2), np.minimum(ty1, ty2))
    t_out = np.minimum(np.maximum(tx1, tx2), np.maximum(ty1, ty2))
    t_in = np.maximum(t_in, 0.0)
    hit = t_out > t_in
    b = 1.0 / np.asarray(range_mm, float)[:, None]
    contrib = np.where(hit, np.exp(-b * t_in) - np.exp(-b * np.where(hit, t_out, 0.0)), 0.0)
    return contrib.mean(axis=1)


def dose(field_mm, depth_mm, x_mm=0.0, y_mm=0.0) -> np.ndarray:
    """Relative dose of an ``(X, Y)`` mm field at water points (depth, x, y), SSD 1000 mm."""
    d, x, y = (np.ravel(a) for a in np.broadcast_arrays(depth_mm, x_mm, y_mm))
    d = d.astype(float)
    z = SSD_MM + d
    u, v = x * SAD_MM / z, y * SAD_MM / z
    fx, fy = field_mm
    rect = (-fx / 2, fx / 2, -fy / 2, fy / 2)
    build = 1.0 - (1.0 - SURFACE_SHARE) * np.exp(-BUILDUP_PER_MM * d)
    tp = np.exp(-MU_PER_MM * d) * build
    ts = SCATTER_PER_MM * d * np.exp(-MU_SCATTER_PER_MM * d) * build
    scale = SAD_MM / z  # widths at depth, projected to the iso plane
    prim = _kernel_integral(u, v, rect, PRIMARY_RANGE_MM * scale)
    scat = _kernel_integral(u, v, rect, _scatter_range_mm(d) * scale)
    return (SAD_MM / z) ** 2 * (tp * prim + ts * scat)


def scans(fields_mm, profile_fields_mm, profile_depths_mm) -> tuple[MeasuredScan, ...]:
    """PDDs (0-300 mm, 2 mm steps) of ``fields_mm`` and crossplane profiles of
    ``profile_fields_mm`` at ``profile_depths_mm`` (2 mm steps to 30 mm beyond the edge)."""
    depth = np.arange(0.0, 300.1, 2.0)
    out = [
        MeasuredScan("PDD", f[0], SSD_MM, None, depth, dose(f, depth), f[1], source=f"pdd {f}")
        for f in fields_mm
    ]
    for f in profile_fields_mm:
        for dp in profile_depths_mm:
            half = f[0] / 2 * (SSD_MM + dp) / SAD_MM + 30.0
            pos = np.arange(-np.floor(half), np.floor(half) + 0.1, 2.0)
            val = dose(f, dp, pos, 0.0)
            out.append(
                MeasuredScan(
                    "CROSSPLANE_PROFILE",
                    f[0],
                    SSD_MM,
                    float(dp),
                    pos,
                    val,
                    f[1],
                    source=f"profile {f} {dp:g} mm",
                )
            )
    return tuple(out)


def output_factors(fields_mm, depth_mm=100.0) -> dict:
    """Central-axis dose at ``depth_mm`` relative to 100 × 100 mm², SSD 1000 mm."""
    ref = float(dose((100.0, 100.0), depth_mm)[0])
    return {tuple(map(float, f)): float(dose(f, depth_mm)[0]) / ref for f in fields_mm}


def measured_data(fields_mm, profile_fields_mm, profile_depths_mm) -> MeasuredData:
    """A :class:`MeasuredData` of this machine (reference field 100 × 100 mm²)."""
    of_fields = sorted(set(map(tuple, fields_mm)) | {(100.0, 100.0)})
    return MeasuredData(
        scans=scans(fields_mm, profile_fields_mm, profile_depths_mm),
        output_factors=output_factors(of_fields),
        of_ssd_mm=SSD_MM,
        of_depth_mm=100.0,
        reference_field_mm=(100.0, 100.0),
        calibration={
            "dose_gy_per_mu": 0.01,
            "field_mm": (100.0, 100.0),
            "ssd_mm": SSD_MM,
            "depth_mm": "dmax",
        },
        source="exponential-kernel clinic",
        table="exponential-kernel clinic (in memory)",
    )
