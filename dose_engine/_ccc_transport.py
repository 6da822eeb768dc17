r"""Collapsed-cone transport: energy released (TERMA) carried along lines to dose.

The standard recursive formulation (Ahnesjö A 1989, "Collapsed cone convolution of
radiant energy for photon dose calculation in heterogeneous media", Med Phys 16:577,
doi:10.1118/1.596360; Lu W et al 2005, Phys Med Biol 50:655): for one cone with energy
fraction ``F`` and a kernel ``F a exp(-a x)`` per unit radiological distance ``x``, the
energy deposited per unit radiological length at the entry of segment ``i`` of a line
(density ``ρ_i``, geometric length ``Δ``, radiological length ``τ_i = ρ_i Δ``, TERMA
``T_i`` of the kernel part) obeys

.. math::

   P_{i+1} = P_i e^{-a τ_i} + T_i F (1 - e^{-a τ_i}), \qquad
   D_i = \frac{P_i g_i + T_i F (τ_i - g_i)}{τ_i}, \quad g_i = \frac{1 - e^{-a τ_i}}{a},

(the dose is energy per radiological length integrated over the segment, over its mass
per unit area ``τ_i``).  In a homogeneous medium ``P → T F`` and the cones' doses add up
to ``T`` (charged-particle equilibrium).  Density scales the distance only: in lung the
electrons' energy spreads four times further, which is what a pencil beam misses.

Each kernel part (the electrons', "primary", and the scattered photons', "scatter") carries
its own TERMA: the energy the local spectrum gives that part
(:meth:`~dose_engine._ccc_commission.CCCCommissioning.part_weights`), so the electron
share rises as the beam hardens with depth (Ahnesjö and Aspradakis 1999, Phys Med Biol
44:R99).  Both parts run in the same pass along each line.

Lines: for each direction the axis it advances fastest along is the "step" axis; a line
moves one voxel along it per step and ``round(s · slope)`` voxels along the other two, so
every voxel of every slice lies on exactly one line (a sheared grid).  All lines and all
beams of one direction advance together (one vectorised update per slice); directions run
on the backend's workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._backend import Backend
from ._ccc_cones import ConeKernels

__all__ = ["collapsed_cone_transport"]

#: Radiological step below which a segment counts as vacuum (mm).
MIN_TAU_MM = 1e-6
#: Directions one worker task sums before handing its dose back (bounds the memory held).
DIRECTIONS_PER_TASK = 6


def _one_direction(xp, terma_t, rho_t, spacing_t, direction_t, frac, coeff, reverse: bool):
    """Dose of one direction on a grid whose step axis is axis 0 (after transposition).

    Parameters
    ----------
    terma_t : (2, nb, n0, n1, n2) array
        TERMA of the primary and of the scatter part.
    rho_t : (n0, n1, n2) array
    spacing_t : (3,) float, mm, in the same axis order
    direction_t : (3,) float, unit vector in the same axis order (|component 0| largest
        after scaling by the spacing)
    frac, coeff : (2, nb) ndarray
        Energy fraction and coefficient (1/mm) of the primary and scatter part per beam.
    reverse : bool
        Walk the slices from the last to the first (the direction points to lower index).

    Returns
    -------
    (nb, n0, n1, n2) array
        Each beam's dose from this direction, in the unit of ``terma_t``.
    """
    _, nb, n0, n1, n2 = terma_t.shape
    step_mm = spacing_t[0] / abs(direction_t[0])
    slopes = [direction_t[j] * step_mm / spacing_t[j] for j in (1, 2)]
    order = range(n0 - 1, -1, -1) if reverse else range(n0)
    offs = np.array([[round(k * s) for s in slopes] for k in range(n0)], dtype=int)
    c = offs.max(axis=0)
    size = (n1 + c[0] - offs[:, 0].min(), n2 + c[1] - offs[:, 1].min())
    dt = terma_t.dtype
    # per kernel part: its index, fraction, minus its coefficient and one over it, (nb, 1, 1)
    parts = [
        (
            i,
            xp.asarray(frac[i], dtype=dt)[:, None, None],
            xp.asarray(-coeff[i], dtype=dt)[:, None, None],
            xp.asarray(1.0 / coeff[i], dtype=dt)[:, None, None],
        )
        for i in (0, 1)
        if float(frac[i].sum()) > 0.0
    ]
    energy = [xp.zeros((nb, *size), dtype=dt) for _ in parts]
    dose = xp.empty((nb, n0, n1, n2), dtype=dt)
    # every update in ``dt`` into buffers allocated once (a temporary per operation and a
    # float64 step length, which promoted τ and every product with it to float64, took
    # twice the CPU time; the dose moved by 3e-7 of its maximum,
    # tests/dose_engine/test_ccc_transport_precision.py)
    step = xp.asarray(step_mm, dtype=dt)
    tau = xp.empty((1, n1, n2), dtype=dt)
    tf, e, q, t, acc = (xp.empty((nb, n1, n2), dtype=dt) for _ in range(5))
    for k, s in enumerate(order):
        y0, x0 = int(c[0] - offs[k, 0]), int(c[1] - offs[k, 1])
        win = (slice(None), slice(y0, y0 + n1), slice(x0, x0 + n2))
        xp.multiply(rho_t[s], step, out=tau[0])
        xp.maximum(tau, MIN_TAU_MM, out=tau)
        # the module's update with e = expm1(-a τ) = -(1 - exp(-a τ)) and q = P - T F:
        # D τ = Σ_parts (T F τ - q e / a) and P' = P + q e, in place
        acc[...] = 0
        for p, (i, f, minus_a, inv_a) in zip(energy, parts, strict=True):
            pw = p[win]
            xp.multiply(terma_t[i, :, s], f, out=tf)
            xp.multiply(minus_a, tau, out=e)
            xp.expm1(e, out=e)
            xp.subtract(pw, tf, out=q)
            tf *= tau
            xp.multiply(e, inv_a, out=t)
            t *= q
            tf -= t
            acc += tf
            e *= q
            pw += e
        xp.divide(acc, tau, out=dose[:, s])
    return dose


def collapsed_cone_transport(
    terma, density, spacing_mm, directions: np.ndarray, kernels: ConeKernels, backend: Backend
) -> Any:
    """Dose from TERMA by collapsed-cone transport along every direction.

    Parameters
    ----------
    terma : (2, nb, nz, ny, nx) array (backend), energy per mass (any consistent unit)
        TERMA of each beam's primary and scatter kernel part (module docstring).
    density : (nz, ny, nx) array (backend)
        Density relative to water on the same grid.
    spacing_mm : (3,) float
        Voxel size ``(dx, dy, dz)``, mm.
    directions : (n, 3) ndarray
        Unit transport directions ``(x, y, z)`` (:func:`~dose_engine._ccc_cones.cone_directions`).
    kernels : ConeKernels
        Per beam and direction (:func:`~dose_engine._ccc_cones.cone_kernels`).
    backend : Backend

    Returns
    -------
    (nb, nz, ny, nx) array (backend), in the unit of ``terma``
        Each beam's dose, summed over the directions.
    """
    xp = backend.xp
    sp_zyx = np.asarray(spacing_mm, float)[::-1]
    rho = xp.maximum(xp.asarray(density, dtype=terma.dtype), 0.0)
    views: dict[int, tuple[Any, Any, tuple[int, ...]]] = {}
    jobs = []
    for m, d_xyz in enumerate(np.asarray(directions, float)):
        d_zyx = d_xyz[::-1]
        axis = int(np.argmax(np.abs(d_zyx) / sp_zyx))
        perm = (axis, *[j for j in range(3) if j != axis])
        if axis not in views:
            views[axis] = (
                xp.ascontiguousarray(xp.transpose(terma, (0, 1, *[p + 2 for p in perm]))),
                xp.ascontiguousarray(xp.transpose(rho, perm)),
                perm,
            )
        jobs.append((m, axis, d_zyx[list(perm)], sp_zyx[list(perm)]))

    nb = terma.shape[1]

    def run(job, total):
        m, axis, d_t, sp_t = job
        t_t, r_t, perm = views[axis]
        # the beams that send energy along this direction (a beam's own axis: that beam)
        active = np.flatnonzero(kernels.fraction[:, :, m].sum(axis=0) > 0)
        if active.size == 0:
            return
        if active.size < nb:
            t_t = t_t[:, xp.asarray(active)]
        frac = kernels.fraction[:, active, m]
        coeff = kernels.coeff_per_mm[:, active, m]
        d = _one_direction(xp, t_t, r_t, sp_t, d_t, frac, coeff, reverse=bool(d_t[0] < 0))
        d = xp.transpose(d, (0, *[int(i) + 1 for i in np.argsort(perm)]))
        if active.size < nb:
            total[xp.asarray(active)] += d
        else:
            total += d

    def run_group(group):
        total = xp.zeros(terma.shape[1:], dtype=terma.dtype)
        for job in group:
            run(job, total)
        return total

    groups = [jobs[i : i + DIRECTIONS_PER_TASK] for i in range(0, len(jobs), DIRECTIONS_PER_TASK)]
    total = None
    for d in backend.map(run_group, groups):
        total = d if total is None else total + d
    return total
