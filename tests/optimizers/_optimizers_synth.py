"""Small synthetic influence matrices for the optimizers tests (no dose engine needed)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def slab_problem(
    rng: np.random.Generator,
    *,
    n_side: int = 24,
    n_beamlets: int = 40,
    scatter_fraction: float = 0.0,
):
    """A 2-D slab of ``n_side x n_side`` voxels irradiated by two opposed-ish fans of Gaussian
    beamlets: returns ``(matrix, structures)`` with a central square target ``PTV``, an organ
    ``OAR`` beside it and ``BODY`` (all voxels). Doses of order 1 Gy/MU * 0.01.
    ``scatter_fraction`` adds a broad Gaussian tail (sigma ``n_side / 3``) of that height
    relative to the primary, like a pencil beam's scatter."""
    yy, xx = np.mgrid[0:n_side, 0:n_side]
    xx = xx.ravel().astype(float)
    yy = yy.ravel().astype(float)
    cols = []
    half = n_beamlets // 2
    for j in range(n_beamlets):
        pos = (j % half + 0.5) * n_side / half
        lateral = xx if j < half else yy
        depth = yy if j < half else xx
        prof = np.exp(-0.5 * ((lateral - pos) / 1.2) ** 2) * np.exp(-0.03 * depth)
        prof += scatter_fraction * np.exp(-0.5 * ((lateral - pos) / (n_side / 3)) ** 2)
        prof *= 0.01 * (1 + 0.05 * rng.random())
        prof[prof < 1e-4] = 0
        cols.append(prof)
    a = sp.csr_matrix(np.stack(cols, 1).astype(np.float32))
    c = n_side // 2
    ptv = np.nonzero((abs(xx - c) < n_side / 6) & (abs(yy - c) < n_side / 6))[0]
    oar = np.nonzero((xx > c + n_side / 6 + 1) & (abs(yy - c) < n_side / 8))[0]
    return a, {"PTV": ptv, "OAR": oar, "BODY": np.arange(n_side * n_side)}


def random_problem(
    rng: np.random.Generator, n_voxels: int = 400, n_beamlets: int = 30, density: float = 0.2
):
    """A random non-negative sparse matrix with three disjoint structures."""
    a = sp.random(
        n_voxels, n_beamlets, density=density, random_state=rng, dtype=np.float32, format="csr"
    )
    a.data *= 0.02
    third = n_voxels // 3
    return a, {
        "PTV": np.arange(third),
        "OAR": np.arange(third, 2 * third),
        "BODY": np.arange(n_voxels),
    }
