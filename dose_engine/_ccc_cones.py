"""Collapsed-cone directions and the kernel each beam sends along them.

The transport directions are one fixed set in the patient frame for all beams (so the
beams share every pass through the grid): ``n / 2`` near-uniform directions on a
hemisphere (a Fibonacci lattice) and their opposites.  Each direction stands for the cone
of all directions nearer to it than to any other (its Voronoi cell on the sphere).

For one beam, the polar-binned kernel of :mod:`dose_engine._ccc_kernel` (mixed over the
beam's energies) is spread over a fine set of directions around the beam axis (every
polar bin × :data:`AZIMUTHS` azimuths) and each fine direction is collapsed onto its
nearest transport direction: that cone's energy fraction ``F`` is the sum of the fine
fractions and its mean radiological range the fraction-weighted mean, for the primary
(electron) and the scatter (photon) part separately.  Each part's fractions of one beam
add up to 1, whatever the number of cones: each part transports its own TERMA
(:mod:`dose_engine._ccc_transport`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._ccc_kernel import KernelTable
from .errors import InvalidGeometryError

__all__ = ["ConeKernels", "cone_directions", "cone_kernels", "with_beam_axes", "MIN_CONES"]

#: Azimuthal samples per polar bin when a beam's kernel is collapsed onto the cones.
AZIMUTHS = 48
#: Fewest transport directions accepted.
MIN_CONES = 24
#: ``1 - |cos|`` below which two directions count as the same axis.
AXIS_TOLERANCE = 1e-9


def cone_directions(n: int) -> np.ndarray:
    """``n`` transport directions (``n`` even): a hemisphere Fibonacci lattice and its mirror.

    Returns
    -------
    (n, 3) ndarray of unit vectors (x, y, z), mm-space.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < MIN_CONES or n % 2:
        raise InvalidGeometryError(
            f"`cones` must be an even integer ≥ {MIN_CONES}; got {n!r} (use ≥ 48 for "
            "optimisation, 72-96 for a final dose)."
        )
    half = n // 2
    k = np.arange(half) + 0.5
    cos_t = 1.0 - k / half  # uniform in cos θ over the upper hemisphere (z > 0)
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    up = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    return np.concatenate([up, -up])


def with_beam_axes(lattice: np.ndarray, beam_axes) -> np.ndarray:
    """``lattice`` followed by both senses of every distinct beam axis.

    The forward-peaked part of a beam's kernel (the electrons and the first-scattered
    photons within a few degrees of the beam) collapsed onto the nearest lattice direction
    travels 5-18° off the beam axis with 72 cones, depending on the gantry angle (12° at
    gantry 0): it leaves a small field sideways, and the collapsed cone's depth dose fell
    with depth faster for a 5 × 5 cm² field than for 10 × 10 (2 % at 250 mm; 144 cones
    halved it).  Each beam's own axis carries its forward and backward cones instead
    (:func:`cone_kernels`), at the cost of two transport directions for that beam alone.

    Parameters
    ----------
    lattice : (n, 3) ndarray
        From :func:`cone_directions`.
    beam_axes : (nb, 3) array_like
        Unit vectors from the source towards the isocentre.

    Returns
    -------
    (n + 2 k, 3) ndarray
        ``k`` distinct axes (opposed beams share one).
    """
    extra: list[np.ndarray] = []
    for ax in np.atleast_2d(np.asarray(beam_axes, float)):
        ax = ax / np.linalg.norm(ax)
        if not any(abs(float(ax @ e)) > 1.0 - AXIS_TOLERANCE for e in extra):
            extra += [ax, -ax]
    return np.concatenate([np.asarray(lattice, float), np.reshape(extra, (-1, 3))])


@dataclass(frozen=True)
class ConeKernels:
    """Per beam and cone: energy fraction and attenuation coefficient of each kernel part.

    Attributes
    ----------
    fraction : (2, nb, n) ndarray
        ``[primary, scatter]`` fraction of the part's energy sent along each cone (each
        part's fractions of one beam sum to 1).
    coeff_per_mm : (2, nb, n) ndarray
        Its exponential coefficient ``a = 1 / mean range`` (1/mm of water-equivalent path).
    """

    fraction: np.ndarray
    coeff_per_mm: np.ndarray


def mixed_kernel(table: KernelTable, energy_weights) -> tuple[np.ndarray, np.ndarray]:
    """Polar-bin fractions and mean ranges of a mixture of energies.

    Parameters
    ----------
    energy_weights : (ne,) array_like
        Share of the released energy (TERMA) from each energy bin of ``table``.

    Returns
    -------
    fraction, mean_mm : (2, nbins) ndarray
    """
    w = np.asarray(energy_weights, float)
    w = w / w.sum()
    frac = np.stack([w @ table.primary_fraction, w @ table.scatter_fraction])
    moment = np.stack(
        [
            w @ (table.primary_fraction * table.primary_mean_mm),
            w @ (table.scatter_fraction * table.scatter_mean_mm),
        ]
    )
    mean = np.where(frac > 0, moment / np.where(frac > 0, frac, 1.0), 1.0)
    return frac, mean


def cone_kernels(
    table: KernelTable, energy_weights, beam_axes, directions: np.ndarray, shared: int | None = None
) -> ConeKernels:
    """Collapse the mixed kernel of each beam onto the transport directions.

    Parameters
    ----------
    table : KernelTable
    energy_weights : (ne,) array_like
        TERMA share of each energy (the same for every beam): each part's angular and
        radial distribution is mixed over the energies by the energy they give that part.
    beam_axes : (nb, 3) array_like
        Unit vectors from the source towards the isocentre (LPS).
    directions : (n, 3) ndarray
        From :func:`cone_directions`, or :func:`with_beam_axes`.
    shared : int, optional
        The first ``shared`` directions (the lattice) serve every beam, the others only
        the beams along them (default: all serve every beam).
    """
    frac_bins, mean_bins = mixed_kernel(table, energy_weights)
    edges = np.radians(table.polar_edges_deg)
    theta = 0.5 * (edges[:-1] + edges[1:])
    phi = (np.arange(AZIMUTHS) + 0.5) * (2.0 * math.pi / AZIMUTHS)
    axes = np.atleast_2d(np.asarray(beam_axes, float))
    nb, n = axes.shape[0], directions.shape[0]
    fraction = np.zeros((2, nb, n))
    moment = np.zeros((2, nb, n))
    for b, ax in enumerate(axes):
        ax = ax / np.linalg.norm(ax)
        helper = np.array([1.0, 0.0, 0.0]) if abs(ax[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        e1 = np.cross(ax, helper)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(ax, e1)
        st, ct = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
        fine = ct * ax + st * (np.cos(phi)[None, :, None] * e1 + np.sin(phi)[None, :, None] * e2)
        usable = np.abs(directions @ ax) > 1.0 - AXIS_TOLERANCE
        usable[: n if shared is None else shared] = True
        cos = np.where(usable, fine.reshape(-1, 3) @ directions.T, -2.0)
        nearest = np.argmax(cos, axis=1)
        for part in range(2):
            f = np.repeat(frac_bins[part] / AZIMUTHS, AZIMUTHS)
            m = np.repeat(mean_bins[part], AZIMUTHS)
            fraction[part, b] = np.bincount(nearest, f, n)
            moment[part, b] = np.bincount(nearest, f * m, n)
    mean = np.where(fraction > 0, moment / np.where(fraction > 0, fraction, 1.0), 1.0)
    return ConeKernels(fraction / fraction.sum(axis=-1, keepdims=True), 1.0 / mean)
