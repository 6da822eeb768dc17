r"""TERMA of one beam for the collapsed-cone engine.

The total energy released per unit mass at a point of fan coordinates ``(u, v)``, distance
``z`` from the source and radiological depth ``d`` (from the exact ray tracer) is

.. math::

   T = Ψ(u, v) \left(\frac{SAD}{z}\right)^2 \sum_E w_E\, μ_E \, e^{-μ_E d},

split into the part each energy gives its electrons (the kernel's primary share
``s_E = σ_tr / σ``) and the rest (the scattered photons'), ``w_E s_E`` and
``w_E (1 - s_E)``: :meth:`~dose_engine._ccc_commission.CCCCommissioning.part_weights`.

with ``Ψ`` the pencil-beam model's energy fluence per MU in the isocentre plane (the
aperture's rectangles blurred by the focal source, with the off-axis horn, plus the
extra-focal head scatter: :func:`aperture_fluence`), ``w_E`` the commissioned
energy-fluence spectrum and ``μ_E`` water's attenuation coefficients (electron-density
scaling: ``μ/ρ`` is the same in every tissue at these energies).  Low energies are
attenuated first, so the beam hardens with depth.  The spectrum is the same across the
field (no off-axis softening).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._ccc_kernel import mu_water_per_mm
from ._field_dose import prepare_beam_points
from ._model import BeamModel, _ApertureLayout, _device_kw, _pair, horn_axis_terms

__all__ = ["TermaPoints", "aperture_fluence", "beam_terma", "released_per_fluence", "terma_points"]


@dataclass(frozen=True)
class TermaPoints:
    """What one beam's TERMA needs of the transport grid, whatever its aperture.

    Attributes
    ----------
    flat_index : (m,) array of int64
        C-order indices of the voxels in the transport grid (every voxel in front of the
        source).
    u_mm, v_mm : (m,) array of float64, mm
        BLD x / y of the ray through each voxel centre, in the isocentre plane.
    released : (k, m) array of float64
        TERMA per unit isocentre-plane energy fluence of each set of spectrum weights (the
        primary and the scatter kernel part: ``k = 2``; :func:`released_per_fluence`).
    """

    flat_index: Any
    u_mm: Any
    v_mm: Any
    released: Any


def terma_points(
    density, ct_grid, grid, beam, energies_mev, weights, *, xp, map_fn=None
) -> TermaPoints:
    """Trace one beam's rays to every voxel of ``grid`` (the costly part of its TERMA).

    Parameters
    ----------
    density : (nz, ny, nx) array on ``ct_grid``
    grid : Grid
        The transport grid.
    beam : Beam
    energies_mev : (ne,) ndarray
        Spectrum bins, MeV.
    weights : (k, ne) ndarray
        Their energy-fluence weights per kernel part (``k = 2``)
        (:meth:`~dose_engine._ccc_commission.CCCCommissioning.part_weights`).
    xp : namespace
    map_fn : callable, optional
        Runs the ray-tracing chunks.

    Returns
    -------
    TermaPoints
        In float64: the fluence and TERMA of a plan's doses are the same to the last bit
        whether the rays are traced afresh or reused (float32 points moved the thorax's
        dose by 2e-7 of its maximum, enough to move the correction loop's plan).
    """
    pts = prepare_beam_points(density, ct_grid, grid, beam, xp=xp, map_fn=map_fn)
    released = released_per_fluence(pts, beam, energies_mev, weights, xp)
    return TermaPoints(pts.flat_index, pts.u_mm, pts.v_mm, released)


def aperture_fluence(
    u_mm, v_mm, rectangles_mm, mu, model: BeamModel, xp, map_fn: Callable | None = None
):
    """Energy fluence per MU-weighted aperture at the fan coordinates ``(u, v)``.

    Parameters
    ----------
    u_mm, v_mm : (m,) array, mm
        BLD x / y in the isocentre plane (evaluated in their dtype).
    rectangles_mm : (n, 4) ndarray, mm
    mu : (n,) ndarray, MU
    model : BeamModel
        Its ``source_sigma_mm``, ``head_scatter_weight``/``_sigma_mm`` and ``horn``.
    xp : namespace
    map_fn : callable, optional
        Runs the chunks of the focal part (e.g. :meth:`Backend.map`: on the CPU's cores).

    Returns
    -------
    (m,) array like ``u_mm``: 1 per MU inside a large open field on the axis.

    Notes
    -----
    The extra-focal Gaussian (σ ≈ 90-115 mm) is evaluated on a lattice in the isocentre
    plane and interpolated (:data:`WIDE_CELLS_PER_SIGMA`; within 1e-5 of the fluence's
    maximum, ``tests/dose_engine/test_ccc_fluence.py``), the focal part at the points in
    chunks (:data:`FLUENCE_CHUNK_POINTS`).  Every aperture edge's error function at every
    voxel of the transport grid took three quarters of a thorax plan's collapsed-cone CPU
    time and 6 GB.
    """
    kw = _device_kw(u_mm, xp)
    layout = _ApertureLayout(np.asarray(rectangles_mm, float), np.asarray(mu, float))
    p = model.parameters
    wh = float(p["head_scatter_weight"])
    wide = _pair(p["head_scatter_sigma_mm"])
    out = wh * 0.25 * _wide_integral(layout, u_mm, v_mm, wide, xp, kw)
    focal = _pair(p["source_sigma_mm"])
    m = int(u_mm.shape[0])
    slices = [
        slice(start, min(start + FLUENCE_CHUNK_POINTS, m))
        for start in range(0, m, FLUENCE_CHUNK_POINTS)
    ]

    def chunk(sl: slice):
        return _focal_integral(layout, u_mm[sl], v_mm[sl], focal, model.horn, xp, kw)

    parts = (map_fn or (lambda fn, items: [fn(i) for i in items]))(chunk, slices)
    for sl, part in zip(slices, parts, strict=True):
        out[sl] = out[sl] + (1.0 - wh) * 0.25 * part
    return out


#: Points whose focal fluence is evaluated at once (the error functions of every
#: aperture edge at every point: this many × the edges are held, per worker).
FLUENCE_CHUNK_POINTS = 32_768

#: Lattice cells per standard deviation of the extra-focal (head-scatter) Gaussian on which
#: its fluence is evaluated before bilinear interpolation to the points.  One edge blurred
#: by a Gaussian of σ has ``|f''| ≤ 0.242 / σ²`` per MU, so cells of ``h = σ / 32`` err by at
#: most ``h² / 8 · 0.242 / σ² = 3e-5`` per MU and edge, times the head-scatter weight
#: (0.22 for the shipped 6 MV model).
WIDE_CELLS_PER_SIGMA = 32


def _focal_integral(layout, u_mm, v_mm, sigmas_mm, horn, xp, kw):
    """The focal source's blurred aperture with the off-axis horn at the points."""
    inv = 1.0 / math.sqrt(2.0)
    sx = xp.full(u_mm.shape, sigmas_mm[0], dtype=u_mm.dtype, **kw)
    sy = xp.full(u_mm.shape, sigmas_mm[1], dtype=u_mm.dtype, **kw)
    acc = layout.integrate(u_mm, inv / sx, v_mm, inv / sy, xp, kw)
    horn_a, horn_s = horn
    if horn_a != 0.0:  # a dip (flattened) or a peak (FFF)
        cx, ix, fx = horn_axis_terms(u_mm, sx, horn_s, xp)
        cy, iy, fy = horn_axis_terms(v_mm, sy, horn_s, xp)
        acc = acc - (horn_a * fx * fy) * layout.integrate(cx, ix, cy, iy, xp, kw)
    return acc


def _wide_integral(layout, u_mm, v_mm, sigmas_mm, xp, kw):
    """:meth:`_ApertureLayout.integrate` of a wide Gaussian (one σ per axis, mm) at the
    points ``(u, v)``: on a lattice of :data:`WIDE_CELLS_PER_SIGMA` cells per σ over the
    points' extent, interpolated bilinearly (evaluated at the points directly when they
    are fewer than the lattice's nodes)."""
    inv = 1.0 / math.sqrt(2.0)
    dt = u_mm.dtype
    h = min(sigmas_mm) / WIDE_CELLS_PER_SIGMA
    m = int(u_mm.shape[0])
    u0 = float(xp.min(u_mm)) if m else 0.0
    v0 = float(xp.min(v_mm)) if m else 0.0
    nu = int(math.ceil((float(xp.max(u_mm)) - u0) / h)) + 2 if m else 0
    nv = int(math.ceil((float(xp.max(v_mm)) - v0) / h)) + 2 if m else 0
    if nu * nv >= m:
        ix = xp.full(u_mm.shape, inv / sigmas_mm[0], dtype=dt, **kw)
        iy = xp.full(u_mm.shape, inv / sigmas_mm[1], dtype=dt, **kw)
        return layout.integrate(u_mm, ix, v_mm, iy, xp, kw)
    lu = u0 + h * xp.arange(nu, dtype=dt, **kw)
    rows = []
    for j in range(nv):  # one lattice row of nu nodes at a time (bounded memory)
        vj = xp.full((nu,), v0 + h * j, dtype=dt, **kw)
        ix = xp.full((nu,), inv / sigmas_mm[0], dtype=dt, **kw)
        iy = xp.full((nu,), inv / sigmas_mm[1], dtype=dt, **kw)
        rows.append(layout.integrate(lu, ix, vj, iy, xp, kw))
    table = xp.reshape(xp.stack(rows, axis=1), (-1,))  # node (i, j) at i * nv + j
    fu, fv = (u_mm - u0) / h, (v_mm - v0) / h
    iu = xp.clip(xp.astype(xp.floor(fu), xp.int64), 0, nu - 2)
    iv = xp.clip(xp.astype(xp.floor(fv), xp.int64), 0, nv - 2)
    tu, tv = fu - xp.astype(iu, dt), fv - xp.astype(iv, dt)
    k = iu * nv + iv
    f00, f01 = xp.take(table, k), xp.take(table, k + 1)
    f10, f11 = xp.take(table, k + nv), xp.take(table, k + nv + 1)
    return (1.0 - tu) * ((1.0 - tv) * f00 + tv * f01) + tu * ((1.0 - tv) * f10 + tv * f11)


def beam_terma(
    points: TermaPoints,
    grid,
    rectangles_mm,
    mu,
    model: BeamModel,
    *,
    xp,
    map_fn=None,
):
    """TERMA of one beam's aperture at every voxel of ``grid`` (energy per mass per unit
    fluence).

    Parameters
    ----------
    points : TermaPoints
        The beam's rays through ``grid`` (:func:`terma_points`).
    grid : Grid
        The transport grid.
    rectangles_mm, mu : aperture (see :func:`aperture_fluence`)
    model : BeamModel
    xp : namespace
    map_fn : callable, optional
        Runs the fluence's chunks.

    Returns
    -------
    (k, nz, ny, nx) array of float32 on ``grid``
        TERMA of each set of weights the points were traced with (the primary and the
        scatter kernel part).
    """
    # the fluence in float32 (the TERMA's precision: within 1e-6 of its maximum of the
    # float64 fluence, tests/dose_engine/test_ccc_transport_precision.py), from the same
    # float64 points whether traced afresh or reused: a third less CPU time than float64
    u32, v32 = (xp.astype(a, xp.float32) for a in (points.u_mm, points.v_mm))
    flu = aperture_fluence(u32, v32, rectangles_mm, mu, model, xp, map_fn)
    k = points.released.shape[0]
    out = xp.zeros((k, grid.voxel_count), dtype=xp.float32)
    out[:, points.flat_index] = xp.astype(flu * points.released, xp.float32)
    return xp.reshape(out, (k, *grid.shape))


def released_per_fluence(pts, beam, energies_mev, weights, xp):
    """TERMA per unit isocentre-plane energy fluence at the traced points ``pts``.

    The factor ``(SAD/z)² Σ_E w_E μ_E exp(-μ_E d)`` of the module's formula, for each set
    of weights.

    Parameters
    ----------
    pts : BeamPoints
        From :func:`dose_engine._field_dose.prepare_beam_points`.
    beam : Beam
    energies_mev : (ne,) ndarray
    weights : (k, ne) ndarray
        ``k`` sets of energy-fluence weights (the kernel parts').
    xp : namespace

    Returns
    -------
    (k, m) array like ``pts.depth_mm``
    """
    w = np.asarray(weights, float)
    released = [xp.zeros(pts.depth_mm.shape, dtype=pts.depth_mm.dtype) for _ in w]
    for e, m in enumerate(mu_water_per_mm(energies_mev)):
        att = m * xp.exp(-m * pts.depth_mm)
        for i, ws in enumerate(w):
            released[i] = released[i] + float(ws[e]) * att
    scale = beam.sad_mm / pts.z_mm
    return xp.stack(released) * (scale * scale)
