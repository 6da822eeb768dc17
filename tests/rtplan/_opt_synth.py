"""Synthetic influence matrices of realistic size and sparsity for the optimiser benches.

Toy physics (parallel beams, exponential depth dose, erf-shaped beamlet profiles with a
Gaussian penumbra, entries below 1 % of the beam maximum dropped, as PortPy does): the
point is size, sparsity and conditioning, not dose accuracy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import erf


def beam_matrix(
    points_mm,
    gantry_deg,
    target_mask,
    *,
    beamlet_mm=(5.0, 5.0),
    margin_mm=5.0,
    sigma_mm=3.0,
    mu_per_mm=0.005,
    gy_per_mu=0.01,
    rel_cut=0.01,
):
    """CSR block (n_points x n_beamlets) of one coplanar parallel beam.

    ``points_mm`` is (n, 3) (x, y, z); gantry 0 irradiates along +y (IEC, HFS)."""
    th = np.deg2rad(gantry_deg)
    d = np.array([np.sin(th), np.cos(th), 0.0])  # beam direction (source -> iso)
    u = np.array([np.cos(th), -np.sin(th), 0.0])  # lateral, in the axial plane
    lat = points_mm @ u
    lon = points_mm[:, 2]
    depth = points_mm @ d
    depth = depth - depth.min()
    bw, bh = beamlet_mm
    tl, tz = lat[target_mask], lon[target_mask]
    x0 = np.floor((tl.min() - margin_mm) / bw) * bw
    x1 = np.ceil((tl.max() + margin_mm) / bw) * bw
    z0 = np.floor((tz.min() - margin_mm) / bh) * bh
    z1 = np.ceil((tz.max() + margin_mm) / bh) * bh
    cx = np.arange(x0, x1, bw) + bw / 2
    cz = np.arange(z0, z1, bh) + bh / 2
    nbx, nbz = cx.size, cz.size
    fac = np.exp(-mu_per_mm * depth) * gy_per_mu
    reach = 2.5 * sigma_mm
    near = (lat > x0 - reach) & (lat < x1 + reach) & (lon > z0 - reach) & (lon < z1 + reach)
    vi_all = np.nonzero(near)[0]
    ci = np.floor((lat[vi_all] - x0) / bw).astype(np.int64)
    ri = np.floor((lon[vi_all] - z0) / bh).astype(np.int64)
    rows, cols, vals = [], [], []
    kx = int(np.ceil(reach / bw)) + 1
    kz = int(np.ceil(reach / bh)) + 1
    s2 = np.sqrt(2.0) * sigma_mm
    for dc in range(-kx, kx + 1):
        for dr in range(-kz, kz + 1):
            c, r = ci + dc, ri + dr
            ok = (c >= 0) & (c < nbx) & (r >= 0) & (r < nbz)
            vi = vi_all[ok]
            ex = 0.5 * (
                erf((lat[vi] - cx[c[ok]] + bw / 2) / s2) - erf((lat[vi] - cx[c[ok]] - bw / 2) / s2)
            )
            ez = 0.5 * (
                erf((lon[vi] - cz[r[ok]] + bh / 2) / s2) - erf((lon[vi] - cz[r[ok]] - bh / 2) / s2)
            )
            rows.append(vi)
            cols.append(r[ok] * nbx + c[ok])
            vals.append(fac[vi] * ex * ez)
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    vals = np.concatenate(vals)
    keep = vals > rel_cut * vals.max()
    return sp.csr_matrix(
        (vals[keep].astype(np.float32), (rows[keep], cols[keep])),
        shape=(points_mm.shape[0], nbx * nbz),
    )


def tg119_cshape(*, spacing_mm=3.0, shape_zyx=(40, 100, 100), n_beams=9, beamlet_mm=(5.0, 5.0)):
    """TG-119 C-shape-like problem on a cube phantom.

    Returns ``(matrix, structures, info)``: float32 CSR (voxels x beamlets, Gy/MU),
    ``{"PTV", "CORE", "BODY"}`` voxel indices, and a dict of sizes. The PTV is an annular
    sector (radii 15-37 mm, open towards +x over 90 degrees), the core a 10 mm cylinder
    (TG-119, Ezzell et al., Med. Phys. 36 (2009) 5359, doi:10.1118/1.3238104).
    """
    nz, ny, nx = shape_zyx
    z = (np.arange(nz) - (nz - 1) / 2) * spacing_mm
    y = (np.arange(ny) - (ny - 1) / 2) * spacing_mm
    x = (np.arange(nx) - (nx - 1) / 2) * spacing_mm
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1)
    r = np.hypot(pts[:, 0], pts[:, 1])
    ang = np.degrees(np.arctan2(pts[:, 1], pts[:, 0]))
    inz = np.abs(pts[:, 2]) <= 40.0
    ptv = inz & (r >= 15.0) & (r <= 37.0) & (np.abs(ang) > 45.0)
    core = (np.abs(pts[:, 2]) <= 50.0) & (r <= 10.0)
    gantries = np.arange(n_beams) * 360.0 / n_beams
    blocks = [beam_matrix(pts, g, ptv, beamlet_mm=beamlet_mm) for g in gantries]
    a = sp.hstack(blocks, format="csr")
    a.sort_indices()
    structures = {
        "PTV": np.nonzero(ptv)[0],
        "CORE": np.nonzero(core)[0],
        "BODY": np.arange(pts.shape[0]),
    }
    info = {
        "n_voxels": a.shape[0],
        "n_beamlets": a.shape[1],
        "nnz": int(a.nnz),
        "ptv_voxels": int(ptv.sum()),
        "core_voxels": int(core.sum()),
    }
    return a, structures, info
