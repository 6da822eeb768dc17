"""A small synthetic TG-119-like C-shape for leaf sequencing and segment weights: a
C-shaped target around a core organ in a water cylinder, with an analytic pencil-beam
influence matrix (erf beamlet profiles, exponential attenuation, inverse square) built
here, independent of the dose engine; and its weighted least-squares optimal fluence.

Shared by ``tests/rtplan/delivery/test_segment_weights.py`` and
``benches/bench_sequencing.py`` (which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import nnls
from scipy.special import erf

from dose_engine import Beam, Grid, beamlets_for_target

#: Weight per voxel of each structure in the fits.
WEIGHTS = {"PTV": 1.0, "Core": 0.3, "Body": 0.05}


def synthetic_cshape(n_beams=5, spacing_mm=5.0, n_slices=3):
    """``(grid, beams, beamlets, D, structures)``: float32 CSR ``D`` (voxels × beamlets,
    Gy/MU) and the flat voxel indices of ``PTV``, ``Core`` and ``Body`` (minus the PTV)."""
    n = int(200 / spacing_mm)
    grid = Grid(
        shape=(n_slices, n, n),
        origin_mm=(-100 + spacing_mm / 2, -100 + spacing_mm / 2, -5.0 * (n_slices - 1) / 2),
        spacing_mm=(spacing_mm, spacing_mm, 5.0),
    )
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij")
    x = grid.origin_mm[0] + xx * spacing_mm
    y = grid.origin_mm[1] + yy * spacing_mm
    z = grid.origin_mm[2] + zz * 5.0
    r = np.hypot(x, y)
    body = r <= 95
    target = (r >= 22) & (r <= 45) & ~((y < 0) & (np.abs(x) < 12))  # C open anteriorly
    core = r <= 15
    pts = np.stack([x, y, z], -1).reshape(-1, 3)
    beams = [Beam(g) for g in np.arange(n_beams) * 360.0 / n_beams]
    bl = beamlets_for_target(beams, pts[target.ravel()], margin_mm=5.0)
    cols = []
    s2 = np.sqrt(2) * 4.0
    for b, beam in enumerate(beams):
        u, v, zf = beam.to_fan_coordinates(pts)
        depth = np.clip(zf - (beam.sad_mm - 95.0), 0, None)
        att = 0.01 * np.exp(-0.005 * depth) * (beam.sad_mm / zf) ** 2 * body.ravel()
        for x1, x2, y1, y2 in bl.rectangles_mm(b):
            c = (
                att
                * 0.25
                * (erf((u - x1) / s2) - erf((u - x2) / s2))
                * (erf((v - y1) / s2) - erf((v - y2) / s2))
            )
            c[c < 1e-4 * c.max()] = 0
            cols.append(sp.csc_matrix(c[:, None]))
    D = sp.hstack(cols).tocsr().astype(np.float32)
    structs = {
        "PTV": np.flatnonzero(target.ravel()),
        "Core": np.flatnonzero(core.ravel()),
        "Body": np.flatnonzero((body & ~target).ravel()),
    }
    return grid, beams, bl, D, structs


def optimal_fluence(D, structs, rx_gy=50.0, reg=0.02):
    """Weighted least-squares optimum with a small ridge term (smooth enough fluence)."""
    Dd = D.toarray().astype(float)
    n = D.shape[1]
    parts = [np.sqrt(WEIGHTS[k]) * Dd[structs[k]] for k in ("PTV", "Core", "Body")]
    A = np.vstack(parts + [np.sqrt(reg) * Dd.max() * np.eye(n)])
    y = np.concatenate(
        [np.full(structs["PTV"].size, rx_gy), np.zeros(A.shape[0] - structs["PTV"].size)]
    )
    return nnls(A, y, maxiter=50 * n)[0]
