"""Writer of synthetic patient folders in PortPy's on-disk layout (for tests and benches).

Written from PortPy's documented layout (JSON metadata + HDF5, see rtplan/io/_portpy.py);
no PortPy code. ``synthetic_lung`` builds a lung-like case with toy physics: parallel
beams, exponential depth dose, erf beamlet profiles, entries below 1 % of the maximum dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from scipy.spatial import ConvexHull
from scipy.special import erf


def write_portpy_patient(
    folder,
    *,
    ct_hu,
    origin_xyz_mm,
    spacing_xyz_mm,
    masks,
    ct_to_dose,
    dose_spacing_xyz_mm,
    beams,
    planner_ids=None,
):
    """Write a PortPy-format patient folder.

    ``beams`` is a list of dicts with ``id``, ``gantry``, ``iso`` (x, y, z mm), ``table``
    (beamlet columns: id, width_mm, height_mm, position_x_mm, position_y_mm, MLC_leaf_idx),
    ``triplets`` ((nnz, 3) row, col, value) and optionally ``bev_ptv_mm`` ((n, 2) outline of
    the PTV in the beam's-eye view, mm) and ``sparse_tol`` (the value below which entries
    were dropped). The metadata PortPy's own loader also reads (structure
    volumes, calculation box, jaws, MLC leaf edges, BEV outline) is written too, so that
    PortPy 1.2.0 plans the same folder (``benches/bench_peers.py``)."""
    folder = Path(folder)
    (folder / "Beams").mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "CT_Data.h5", "w") as f:
        f["ct_hu_3d"] = ct_hu
    nz, ny, nx = ct_hu.shape
    (folder / "CT_MetaData.json").write_text(
        json.dumps(
            {
                "origin_xyz_mm": list(origin_xyz_mm),
                "resolution_xyz_mm": list(spacing_xyz_mm),
                "size_xyz_mm": [nx, ny, nz],
                "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                "ct_hu_3d_File": "CT_Data.h5/ct_hu_3d",
            }
        )
    )
    meta = []
    with h5py.File(folder / "StructureSet_Data.h5", "w") as f:
        for name, m in masks.items():
            f[name] = m.astype(np.uint8)
            meta.append(
                {
                    "name": name,
                    "dicom_structure_name": name,
                    "volume_cc": float(m.sum()) * float(np.prod(spacing_xyz_mm)) / 1000.0,
                    "fraction_of_vol_in_calc_box": 1,
                    "structure_mask_3d_File": f"StructureSet_Data.h5/{name}",
                }
            )
    (folder / "StructureSet_MetaData.json").write_text(json.dumps(meta))
    with h5py.File(folder / "OptimizationVoxels_Data.h5", "w") as f:
        f["ct_to_dose_voxel_map"] = ct_to_dose
    (folder / "OptimizationVoxels_MetaData.json").write_text(
        json.dumps(
            {
                "ct_to_dose_voxel_map_File": "OptimizationVoxels_Data.h5/ct_to_dose_voxel_map",
                "dose_voxel_resolution_xyz_mm": list(dose_spacing_xyz_mm),
                "ct_origin_xyz_mm": np.asarray(origin_xyz_mm, float).tolist(),
                "ct_voxel_resolution_xyz_mm": np.asarray(spacing_xyz_mm, float).tolist(),
                "cal_box_xyz_start": np.asarray(origin_xyz_mm, float).tolist(),
                "cal_box_xyz_end": np.add(
                    origin_xyz_mm, np.multiply((nx, ny, nz), spacing_xyz_mm), dtype=float
                ).tolist(),
            }
        )
    )
    for b in beams:
        bid = b["id"]
        with h5py.File(folder / "Beams" / f"Beam_{bid}_Data.h5", "w") as f:
            g = f.create_group("beamlets")
            for k, v in b["table"].items():
                g[k] = np.asarray(v).reshape(-1, 1)  # PortPy stores (N, 1) columns
            f["inf_matrix_sparse"] = b["triplets"]
            x = np.asarray(b["table"]["position_x_mm"], float)
            y = np.asarray(b["table"]["position_y_mm"], float)
            w = np.asarray(b["table"]["width_mm"], float)
            h = np.asarray(b["table"]["height_mm"], float)
            f["MLC_leaves_pos_y_mm"] = np.unique(y + h / 2)[::-1]  # upper leaf edges, top first
            if "bev_ptv_mm" in b:
                bev = f.create_group("BEV_structure_contour_points").create_group("PTV")
                bev["Segment_0"] = np.asarray(b["bev_ptv_mm"], float)
        extra = {
            "jaw_position": {
                "top_left_x_mm": float((x - w / 2).min()),
                "top_left_y_mm": float((y + h / 2).max()),
                "bottom_right_x_mm": float((x + w / 2).max()),
                "bottom_right_y_mm": float((y - h / 2).min()),
            },
            "MLC_leaves_pos_y_mm_File": f"Beam_{bid}_Data.h5/MLC_leaves_pos_y_mm",
            "MLC_name": "VARIAN MILLENIUM 120",
            "beam_modality": "Photon",
            "energy_MV": "6",
            "SAD_mm": 1000,
            "machine_name": "SYNTH",
        }
        if "sparse_tol" in b:
            extra["influenceMatrixSparse_tol"] = float(b["sparse_tol"])
        if "bev_ptv_mm" in b:
            bev_file = f"Beam_{bid}_Data.h5/BEV_structure_contour_points"
            extra["BEV_structure_contour_points_File"] = bev_file
        (folder / "Beams" / f"Beam_{bid}_MetaData.json").write_text(
            json.dumps(
                {
                    **extra,
                    "ID": bid,
                    "gantry_angle": b["gantry"],
                    "collimator_angle": 0,
                    "couch_angle": 0,
                    "iso_center": {"x_mm": b["iso"][0], "y_mm": b["iso"][1], "z_mm": b["iso"][2]},
                    "beamlets": {
                        k + "_File": f"Beam_{bid}_Data.h5/beamlets/{k}" for k in b["table"]
                    },
                    "influenceMatrixSparse_File": f"Beam_{bid}_Data.h5/inf_matrix_sparse",
                }
            )
        )
    ids = [b["id"] for b in beams] if planner_ids is None else planner_ids
    (folder / "PlannerBeams.json").write_text(json.dumps({"IDs": ids}))


def _beam_triplets(points, gantry_deg, target, *, bw=2.5, bh=5.0, sigma=3.0, mu=0.0045):
    th = np.deg2rad(gantry_deg)
    d = np.array([np.sin(th), np.cos(th), 0.0])
    u = np.array([np.cos(th), -np.sin(th), 0.0])
    lat, lon, depth = points @ u, points[:, 2], points @ d
    depth = depth - depth.min()
    x0 = np.floor((lat[target].min() - 5) / bw) * bw
    x1 = np.ceil((lat[target].max() + 5) / bw) * bw
    z0 = np.floor((lon[target].min() - 5) / bh) * bh
    z1 = np.ceil((lon[target].max() + 5) / bh) * bh
    cx = np.arange(x0, x1, bw) + bw / 2
    cz = np.arange(z0, z1, bh) + bh / 2
    reach = 2.5 * sigma
    vi0 = np.nonzero(
        (lat > x0 - reach) & (lat < x1 + reach) & (lon > z0 - reach) & (lon < z1 + reach)
    )[0]
    ci = np.floor((lat[vi0] - x0) / bw).astype(int)
    ri = np.floor((lon[vi0] - z0) / bh).astype(int)
    s2 = np.sqrt(2) * sigma
    rows, cols, vals = [], [], []
    for dc in range(-5, 6):
        for dr in range(-3, 4):
            c, r = ci + dc, ri + dr
            ok = (c >= 0) & (c < cx.size) & (r >= 0) & (r < cz.size)
            vi = vi0[ok]
            ex = 0.5 * (
                erf((lat[vi] - cx[c[ok]] + bw / 2) / s2) - erf((lat[vi] - cx[c[ok]] - bw / 2) / s2)
            )
            ez = 0.5 * (
                erf((lon[vi] - cz[r[ok]] + bh / 2) / s2) - erf((lon[vi] - cz[r[ok]] - bh / 2) / s2)
            )
            rows.append(vi)
            cols.append(r[ok] * cx.size + c[ok])
            vals.append(np.exp(-mu * depth[vi]) * ex * ez)
    rows, cols, vals = map(np.concatenate, (rows, cols, vals))
    nbx, nbz = cx.size, cz.size
    X, Z = np.meshgrid(cx, cz[::-1])
    table = {
        "id": np.arange(nbx * nbz),
        "width_mm": np.full(nbx * nbz, bw),
        "height_mm": np.full(nbx * nbz, bh),
        "position_x_mm": X.ravel(),
        "position_y_mm": Z.ravel(),
        "MLC_leaf_idx": np.repeat(np.arange(nbz), nbx),
    }
    # rows of cz were reversed for the table (top row first); flip the column index to match
    r_idx = cols // nbx
    c_idx = cols % nbx
    cols = (nbz - 1 - r_idx) * nbx + c_idx
    bev = np.stack([lat[target], lon[target]], 1)  # the PTV's outline in the BEV
    return rows, cols, vals, table, bev[ConvexHull(bev).vertices]


def synthetic_lung(
    folder,
    *,
    shape_zyx=(50, 120, 160),
    spacing_xyz_mm=(2.0, 2.0, 3.0),
    block=2,
    n_beams=7,
    ptv_radius_mm=35.0,
):
    """Write a lung-like PortPy patient; returns a dict of sizes.

    Dose voxels are ``block x block x 1`` blocks of body CT voxels. Structures: PTV (sphere in
    the right lung), GTV, LUNG_L, LUNG_R, HEART, CORD, ESOPHAGUS, BODY."""
    nz, ny, nx = shape_zyx
    dx, dy, dz = spacing_xyz_mm
    origin = np.array([-(nx - 1) * dx / 2, -(ny - 1) * dy / 2, -(nz - 1) * dz / 2])
    z = origin[2] + dz * np.arange(nz)
    y = origin[1] + dy * np.arange(ny)
    x = origin[0] + dx * np.arange(nx)
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    ax, ay = 0.47 * nx * dx, 0.44 * ny * dy
    body = (X / ax) ** 2 + (Y / ay) ** 2 <= 1
    lung_r = (
        ((X + 0.45 * ax) / (0.35 * ax)) ** 2 + ((Y + 0.05 * ay) / (0.65 * ay)) ** 2 <= 1
    ) & body
    lung_l = (
        ((X - 0.45 * ax) / (0.35 * ax)) ** 2 + ((Y + 0.05 * ay) / (0.65 * ay)) ** 2 <= 1
    ) & body
    heart = (
        (
            ((X - 0.15 * ax) / (0.3 * ax)) ** 2
            + ((Y + 0.35 * ay) / (0.35 * ay)) ** 2
            + (Z / (0.4 * nz * dz)) ** 2
            <= 1
        )
        & body
        & ~lung_l
    )
    cord = (X**2 + (Y - 0.7 * ay) ** 2 <= 6**2) & body
    esoph = ((X - 5) ** 2 + (Y - 0.45 * ay) ** 2 <= 8**2) & body
    iso = np.array([-0.45 * ax, -0.05 * ay, 0.0])
    rr = np.sqrt((X - iso[0]) ** 2 + (Y - iso[1]) ** 2 + (Z - iso[2]) ** 2)
    ptv = (rr <= ptv_radius_mm) & body
    gtv = (rr <= ptv_radius_mm - 8) & body
    ct = np.where(body, 0, -1000).astype(np.int16)
    ct[lung_r | lung_l] = -750
    masks = {
        "GTV": gtv,
        "PTV": ptv,
        "ESOPHAGUS": esoph,
        "HEART": heart,
        "LUNG_L": lung_l,
        "LUNG_R": lung_r,
        "CORD": cord,
        "BODY": body,
    }
    by, bx = ny // block, nx // block
    blk_body = (
        body[:, : by * block, : bx * block].reshape(nz, by, block, bx, block).any(axis=(2, 4))
    )
    dose_idx = -np.ones((nz, by, bx), dtype=np.int64)
    dose_idx[blk_body] = np.arange(int(blk_body.sum()))
    ct2dose = -np.ones(ct.shape, dtype=np.int64)
    ct2dose[:, : by * block, : bx * block] = np.repeat(np.repeat(dose_idx, block, 1), block, 2)
    ct2dose[~body] = -1
    kz, ky, kx = np.nonzero(blk_body)
    pts = (
        np.stack(
            [x[kx * block] + (block - 1) * dx / 2, y[ky * block] + (block - 1) * dy / 2, z[kz]], 1
        )
        - iso
    )
    ptv_dose = np.zeros(pts.shape[0], bool)
    ptv_dose[np.unique(ct2dose[ptv & (ct2dose >= 0)])] = True
    beams = []
    raw = []
    for b in range(n_beams):
        g = round(b * 360.0 / n_beams)
        raw.append((b, g, *_beam_triplets(pts, g, ptv_dose)))
    vmax = max(r[4].max() for r in raw)
    nnz = 0
    for b, g, rows, cols, vals, table, bev in raw:
        keep = vals > 0.01 * vmax
        trip = np.stack([rows[keep], cols[keep], vals[keep] * 0.02 / vmax], 1)
        # PortPy sizes each beam's matrix from its largest indices: a zero at the last
        # (voxel, beamlet) gives every beam the full shape (rtplan drops explicit zeros)
        trip = np.vstack([trip, [pts.shape[0] - 1, table["id"].size - 1, 0.0]])
        nnz += int(keep.sum())
        beams.append(
            {
                "id": b,
                "gantry": g,
                "iso": iso.tolist(),
                "table": table,
                "triplets": trip,
                "bev_ptv_mm": bev,
                "sparse_tol": 0.01 * 0.02,  # entries below 1 % of the maximum were dropped
            }
        )
    write_portpy_patient(
        folder,
        ct_hu=ct,
        origin_xyz_mm=origin,
        spacing_xyz_mm=spacing_xyz_mm,
        masks=masks,
        ct_to_dose=ct2dose,
        dose_spacing_xyz_mm=(dx * block, dy * block, dz),
        beams=beams,
    )
    return {
        "n_dose_voxels": int(blk_body.sum()),
        "n_beamlets": sum(b["table"]["id"].size for b in beams),
        "nnz": nnz,
    }
