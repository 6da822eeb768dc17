r"""TERMA of one beam for the collapsed-cone engine.

The total energy released per unit mass at a point of fan coordinates ``(u, v)``, distance
``z`` from the source and radiological depth ``d`` (from the exact ray tracer) is

.. math::

   T = Ψ(u, v) \left(\frac{SAD}{z}\right)^2 \sum_E w_E\, μ_E \, e^{-μ_E d},

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

import numpy as np

from ._ccc_kernel import mu_water_per_mm
from ._field_dose import prepare_beam_points
from ._model import BeamModel, _ApertureLayout, _device_kw, _pair, horn_axis_terms

__all__ = ["aperture_fluence", "beam_terma", "released_per_fluence"]


def aperture_fluence(u_mm, v_mm, rectangles_mm, mu, model: BeamModel, xp):
    """Energy fluence per MU-weighted aperture at the fan coordinates ``(u, v)``.

    Parameters
    ----------
    u_mm, v_mm : (m,) array, mm
        BLD x / y in the isocentre plane.
    rectangles_mm : (n, 4) ndarray, mm
    mu : (n,) ndarray, MU
    model : BeamModel
        Its ``source_sigma_mm``, ``head_scatter_weight``/``_sigma_mm`` and ``horn``.
    xp : namespace

    Returns
    -------
    (m,) array like ``u_mm``: 1 per MU inside a large open field on the axis.
    """
    kw = _device_kw(u_mm, xp)
    layout = _ApertureLayout(np.asarray(rectangles_mm, float), np.asarray(mu, float))
    p = model.parameters
    wh = float(p["head_scatter_weight"])
    horn_a, horn_s = model.horn
    inv = 1.0 / math.sqrt(2.0)
    out = xp.zeros(u_mm.shape, dtype=u_mm.dtype, **kw)
    for weight, sigmas, focal in (
        (1.0 - wh, _pair(p["source_sigma_mm"]), True),
        (wh, _pair(p["head_scatter_sigma_mm"]), False),
    ):
        sx = xp.full(u_mm.shape, sigmas[0], dtype=u_mm.dtype, **kw)
        sy = xp.full(u_mm.shape, sigmas[1], dtype=u_mm.dtype, **kw)
        acc = layout.integrate(u_mm, inv / sx, v_mm, inv / sy, xp, kw)
        if focal and horn_a > 0.0:
            cx, ix, fx = horn_axis_terms(u_mm, sx, horn_s, xp)
            cy, iy, fy = horn_axis_terms(v_mm, sy, horn_s, xp)
            acc = acc - (horn_a * fx * fy) * layout.integrate(cx, ix, cy, iy, xp, kw)
        out = out + weight * 0.25 * acc
    return out


def beam_terma(
    density,
    ct_grid,
    grid,
    beam,
    rectangles_mm,
    mu,
    model: BeamModel,
    energies_mev,
    weights,
    *,
    xp,
    map_fn=None,
):
    """TERMA of one beam at every voxel of ``grid`` (energy per mass per unit fluence).

    Parameters
    ----------
    density : (nz, ny, nx) array on ``ct_grid``
    grid : Grid
        Where to compute it (the transport grid).
    beam : Beam
    rectangles_mm, mu : aperture (see :func:`aperture_fluence`)
    model : BeamModel
    energies_mev, weights : (ne,) ndarray
        Spectrum bins, MeV, and their energy-fluence weights (sum 1).
    xp : namespace
    map_fn : callable, optional
        Runs the ray-tracing chunks.

    Returns
    -------
    (nz, ny, nx) array of float32 on ``grid``
    """
    pts = prepare_beam_points(density, ct_grid, grid, beam, xp=xp, map_fn=map_fn)
    flu = aperture_fluence(pts.u_mm, pts.v_mm, rectangles_mm, mu, model, xp)
    released = released_per_fluence(pts, beam, energies_mev, weights, xp)
    out = xp.zeros((grid.voxel_count,), dtype=xp.float32)
    out[pts.flat_index] = xp.astype(flu * released, xp.float32)
    return xp.reshape(out, grid.shape)


def released_per_fluence(pts, beam, energies_mev, weights, xp):
    """TERMA per unit isocentre-plane energy fluence at the traced points ``pts``.

    The factor ``(SAD/z)² Σ_E w_E μ_E exp(-μ_E d)`` of the module's formula.

    Parameters
    ----------
    pts : BeamPoints
        From :func:`dose_engine._field_dose.prepare_beam_points`.
    beam : Beam
    energies_mev, weights : (ne,) ndarray
    xp : namespace

    Returns
    -------
    (m,) array like ``pts.depth_mm``
    """
    released = xp.zeros(pts.depth_mm.shape, dtype=pts.depth_mm.dtype)
    mus = mu_water_per_mm(energies_mev)
    for w, m in zip(np.asarray(weights, float), mus, strict=True):
        released = released + (w * m) * xp.exp(-m * pts.depth_mm)
    scale = beam.sad_mm / pts.z_mm
    return released * scale * scale
