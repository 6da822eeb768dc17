"""Sparse dose-influence matrices (voxels × beamlets, Gy per MU).

Work is proportional to the number of stored entries: for each beam, every dose voxel
within reach of the beamlets is visited once, the beamlets whose centres lie within the
lateral cut-off of the voxel's fan coordinates form a small window of the beam's fluence
lattice, and the kernel is evaluated for that window only — as outer products of erf
differences along BLD x and y (the rectangle integral of :func:`rectangle_dose` is
separable), so one voxel costs ``K × 2 × (window + 1)`` erf evaluations (``K`` Gaussian terms: 4, 5
with the model's long-range scatter tail, and the horn's) however many
beamlets it meets.  Each beam is assembled as CSR and the beams are stacked column-wise.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ._arguments import ARRAY, check_arguments, sequence_of
from ._backend import Backend, erf, get_backend, to_numpy
from ._beam import Beam
from ._beamlets import Beamlets
from ._field_dose import BeamPoints, check_inputs, prepare_beam_points
from ._grid import Grid
from ._limits import check_limit
from ._model import BeamModel, horn_axis_terms, load_beam_model
from .errors import InvalidGeometryError

__all__ = ["InfluenceMatrix", "compute_influence_matrix"]

logger = logging.getLogger("rtplan.dose_engine")

#: Default lateral cut-off (iso plane, from the voxel's ray to a beamlet centre), mm.
DEFAULT_LATERAL_CUTOFF_MM = 30.0
#: Default relative threshold: entries below this fraction of the reference beamlet maximum
#: are dropped.
DEFAULT_RELATIVE_THRESHOLD = 1e-3
#: Voxel × beamlet pairs evaluated per chunk.
CHUNK_PAIRS = 3_000_000

#: Part of the influence-matrix cache key; bumped whenever computed values change.
CODE_VERSION = "influence-3"


@dataclass(frozen=True)
class InfluenceMatrix:
    """A dose-influence matrix and what it was computed from.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix (or cupyx) of float32, shape (n_voxels, n_beamlets)
        Gy per MU; rows are every voxel of ``dose_grid`` (flat C order on (nz, ny, nx)),
        columns the beamlets of all beams in beam order.
    dose_grid : Grid
    beams : tuple of Beam
    beamlets : Beamlets
    model_provenance : dict
        The beam model's ``provenance`` plus its name and file.
    settings : dict
        ``lateral_cutoff_mm``, ``relative_threshold``, code version, timings.
    """

    matrix: Any
    dose_grid: Grid
    beams: tuple
    beamlets: Beamlets
    model_provenance: dict
    settings: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.matrix.nnz)

    @property
    def nbytes(self) -> int:
        """Bytes held by the CSR arrays (data + indices + indptr)."""
        m = self.matrix
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)

    def dose(self, mu_per_beamlet):
        """Dose ``matrix @ x`` reshaped to the dose grid, Gy (``x`` in MU per beamlet)."""
        x = np.asarray(mu_per_beamlet, dtype=np.float32)
        if x.shape != (self.matrix.shape[1],):
            raise InvalidGeometryError(
                f"`mu_per_beamlet` has shape {x.shape}; expected ({self.matrix.shape[1]},)."
            )
        return to_numpy(self.matrix @ x).reshape(self.dose_grid.shape)

    def __repr__(self) -> str:
        return (
            f"InfluenceMatrix(shape={self.shape}, nnz={self.nnz}, "
            f"nbytes={self.nbytes / 2**20:.1f} MiB, beams={len(self.beams)})"
        )


def _beam_entries(
    pts, beam_lat: dict, model: BeamModel, xp, cutoff_mm: float, rel_thr: float, backend: Backend
):
    """``(rows, cols, values, pairs)`` of one beam's entries at the points ``pts``: lists
    of arrays (one per chunk) of voxel rows, beam-local beamlet columns and Gy/MU above
    the floor, and the number of voxel-beamlet pairs evaluated.

    The points are taken in chunks of about :data:`CHUNK_PAIRS` voxel-beamlet pairs, run by
    ``backend.map`` (a thread per CPU on numpy)."""
    x0, y0 = beam_lat["origin"]
    w, h = beam_lat["w"], beam_lat["h"]
    n_r, n_c = beam_lat["shape"]
    lut = beam_lat["lut"]  # (n_r, n_c) int, -1 = no beamlet
    u, v = pts.u_mm, pts.v_mm
    m = int(u.shape[0])
    f32, i32 = xp.float32, xp.int32
    if m == 0:
        return [], [], [], 0
    # the cut-off's window: kx x ky lattice cells from the first one within the cut-off
    kx = int(math.floor(2 * cutoff_mm / w)) + 1
    ky = int(math.floor(2 * cutoff_mm / h)) + 1
    # A window wider than the lattice (a 100 mm cut-off over a 60 mm target) is evaluated
    # on the whole lattice instead, with the cells outside the cut-off masked: the same
    # voxel-beamlet pairs at a fraction of the work.
    whole_x, whole_y = kx > n_c, ky > n_r
    wx, wy = min(kx, n_c), min(ky, n_r)
    lut_pad = -np.ones((n_r + 2 * ky + 2, n_c + 2 * kx + 2), dtype=np.int32)
    lut_pad[ky + 1 : ky + 1 + n_r, kx + 1 : kx + 1 + n_c] = lut
    lut_flat = xp.asarray(lut_pad.ravel())
    pad_c = n_c + 2 * kx + 2
    ox = xp.asarray(np.arange(wx + 1, dtype=np.float32) * np.float32(w))
    oy = xp.asarray(np.arange(wy + 1, dtype=np.float32) * np.float32(h))
    jx = xp.asarray(np.arange(wx, dtype=np.int32))
    jy = xp.asarray(np.arange(wy, dtype=np.int32))
    win = xp.asarray(
        (
            np.arange(wy, dtype=np.int32)[:, None] * pad_c + np.arange(wx, dtype=np.int32)[None, :]
        ).ravel()
    )
    chunk = max(1, CHUNK_PAIRS // (wx * wy))
    inv_sqrt2 = float(1.0 / math.sqrt(2.0))
    horn_a, horn_s = model.horn
    # One absolute floor for every column: relative_threshold x the reference beamlet
    # maximum (central-axis dmax dose of a w x h beamlet in water, source-surface distance =
    # SAD).  Applied on the fly, so the dropped entries never take memory.
    floor = rel_thr * _column_max_estimate(model, w, h)

    def chunk_entries(sl: slice):
        """Rows, columns and values above the floor for the points in ``sl``."""
        uu = xp.astype(u[sl], f32)
        vv = xp.astype(v[sl], f32)
        zz = xp.astype(pts.z_mm[sl], f32)
        dd = xp.astype(pts.depth_mm[sl], f32)
        rows = xp.astype(pts.flat_index[sl], i32)
        # first lattice column/row of the window: beamlet centres within the cut-off
        c_lo = xp.clip(xp.astype(xp.ceil((uu - cutoff_mm - x0) / w), i32), -kx - 1, n_c)
        r_lo = xp.clip(xp.astype(xp.ceil((vv - cutoff_mm - y0) / h), i32), -ky - 1, n_r)
        c_0 = xp.zeros_like(c_lo) if whole_x else c_lo  # first cell of the evaluated window
        r_0 = xp.zeros_like(r_lo) if whole_y else r_lo
        # lower edges of the window cells relative to the voxel's ray, iso plane
        ex0 = (x0 - w / 2) + xp.astype(c_0, f32) * w - uu
        ey0 = (y0 - h / 2) + xp.astype(r_0, f32) * h - vv
        dx = ex0[:, None] + ox[None, :]  # (k, wx+1)
        dy = ey0[:, None] + oy[None, :]  # (k, wy+1)
        weights, sig_x, sig_y = model.components(zz, dd, xp)
        pxs, pys = [], []
        for term, (wt, sx, sy) in enumerate(zip(weights, sig_x, sig_y, strict=True)):
            fx = erf(dx * (inv_sqrt2 / sx)[:, None])
            fy = erf(dy * (inv_sqrt2 / sy)[:, None])
            pxs.append(fx[:, 1:] - fx[:, :-1])  # (k, kx)
            pys.append((fy[:, 1:] - fy[:, :-1]) * (0.25 * wt)[:, None])
            if horn_a != 0.0 and term < 2:
                # off-axis horn of the focal fluence: minus a * (Gaussian-product integrals)
                cx, ix, kx_f = horn_axis_terms(uu, sx, horn_s, xp)
                cy, iy, ky_f = horn_axis_terms(vv, sy, horn_s, xp)
                hx = erf((dx + (uu - cx)[:, None]) * ix[:, None])
                hy = erf((dy + (vv - cy)[:, None]) * iy[:, None])
                pxs.append((hx[:, 1:] - hx[:, :-1]) * kx_f[:, None])
                pys.append((hy[:, 1:] - hy[:, :-1]) * (-0.25 * horn_a * wt * ky_f)[:, None])
        # sum over the Gaussian terms of outer products = batched (ky × K) @ (K × kx)
        val = xp.matmul(xp.stack(pys, axis=2), xp.stack(pxs, axis=1))  # (k, wy, wx)
        val = xp.reshape(val, (-1,))
        base = (r_0 + (ky + 1)) * pad_c + (c_0 + (kx + 1))
        cols = xp.take(lut_flat, xp.reshape(base[:, None] + win[None, :], (-1,)))
        keep = (cols >= 0) & (val > floor)
        if whole_x or whole_y:  # only the cells within the cut-off
            in_x = (jx[None, :] >= c_lo[:, None]) & (jx[None, :] < c_lo[:, None] + kx)
            in_y = (jy[None, :] >= r_lo[:, None]) & (jy[None, :] < r_lo[:, None] + ky)
            keep = keep & xp.reshape(in_y[:, :, None] & in_x[:, None, :], (-1,))
        pos = xp.nonzero(keep)[0]
        voxel_rows = xp.take(rows, xp.astype(pos // (wx * wy), i32))
        return voxel_rows, xp.take(cols, pos), xp.take(val, pos)

    slices = [slice(start, min(start + chunk, m)) for start in range(0, m, chunk)]
    entries = backend.map(chunk_entries, slices)
    # concatenated once, with the other group's, in :func:`_beam_block`
    return [e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries], m * wx * wy


def _beam_block(parts: list, n_cols: int, n_rows: int, xp, sparse):
    """CSR block (n_rows × n_cols) of one beam from the ``(rows, cols, values, pairs)`` of
    :func:`_beam_entries` for disjoint sets of voxels, and the pairs evaluated."""
    rows = _concat(xp, [a for p in parts for a in p[0]], xp.int32)
    cols = _concat(xp, [a for p in parts for a in p[1]], xp.int32)
    vals = _concat(xp, [a for p in parts for a in p[2]], xp.float32)
    pairs = sum(p[3] for p in parts)
    parts.clear()
    block = sparse.coo_matrix((vals, (rows, cols)), shape=(n_rows, n_cols)).tocsr()
    del rows, cols, vals
    # Keep the blocks compact until the merge: int16 local column indices when they fit.
    if n_cols <= 2**15 - 1 and isinstance(block.data, np.ndarray):
        block = _CompactBlock(
            block.data, block.indices.astype(np.int16), block.indptr.astype(np.int64), block.shape
        )
    return block, pairs


def _concat(xp, arrays: list, dtype):
    """``arrays`` end to end (an empty array of ``dtype`` when there are none)."""
    return xp.concat(arrays) if arrays else xp.zeros((0,), dtype=dtype)


def _reach_box(beam_lat: dict, cutoff_mm: float) -> tuple[float, float, float, float]:
    """``(u_min, u_max, v_min, v_max)``, mm in the isocentre plane: the beam's beamlets
    widened by the lateral cut-off (rays outside it meet no beamlet)."""
    (x0, y0), w, h, (n_r, n_c) = beam_lat["origin"], beam_lat["w"], beam_lat["h"], beam_lat["shape"]
    return (
        x0 - w / 2 - cutoff_mm,
        x0 + (n_c - 0.5) * w + cutoff_mm,
        y0 - h / 2 - cutoff_mm,
        y0 + (n_r - 0.5) * h + cutoff_mm,
    )


def _subset(pts: BeamPoints, keep) -> BeamPoints:
    """The points where the boolean array ``keep`` is true."""
    return BeamPoints(
        *(a[keep] for a in (pts.flat_index, pts.u_mm, pts.v_mm, pts.z_mm, pts.depth_mm))
    )


class _CompactBlock:
    """CSR arrays of one beam with int16 column indices (numpy only; merged at the end)."""

    def __init__(self, data, indices, indptr, shape):
        self.data, self.indices, self.indptr, self.shape = data, indices, indptr, shape
        self.nnz = int(data.shape[0])


def _hstack_csr(blocks: list, n_rows: int, xp, sparse):
    """Stack CSR blocks side by side into one CSR (int32 indices), freeing blocks as it goes.

    Peak memory is the blocks plus the result (no COO detour).
    """
    counts = [xp.astype(b.indptr[1:] - b.indptr[:-1], xp.int64) for b in blocks]
    total = counts[0]
    for c in counts[1:]:
        total = total + c
    indptr = xp.concat([xp.zeros((1,), dtype=xp.int64), xp.cumulative_sum(total)])
    nnz = int(indptr[-1])
    n_cols = sum(int(b.shape[1]) for b in blocks)
    idx_t = xp.int32 if nnz < 2**31 - 1 and n_cols < 2**31 - 1 else xp.int64
    data = xp.empty((nnz,), dtype=xp.float32)
    indices = xp.empty((nnz,), dtype=idx_t)
    filled = indptr[:-1]
    col_off = 0
    for i in range(len(blocks)):
        blk, cnt = blocks[i], counts[i]
        nb = int(blk.nnz)
        if nb:
            shift = xp.astype(filled - xp.astype(blk.indptr[:-1], xp.int64), idx_t)
            if isinstance(shift, np.ndarray):
                dest = np.repeat(shift, cnt)
            else:  # CuPy's repeat takes no array of counts: find each entry's row instead
                row = xp.searchsorted(
                    xp.astype(blk.indptr[1:], xp.int64), xp.arange(nb, dtype=xp.int64), side="right"
                )
                dest = xp.take(shift, row)
            dest += xp.arange(nb, dtype=idx_t)
            data[dest] = blk.data
            indices[dest] = xp.astype(blk.indices, idx_t) + col_off
            del dest, shift
        filled = filled + cnt
        col_off += int(blk.shape[1])
        blocks[i] = None
        del blk
        _trim_heap()
    return sparse.csr_matrix((data, indices, xp.astype(indptr, idx_t)), shape=(n_rows, n_cols))


def _column_max_estimate(model: BeamModel, w: float, h: float) -> float:
    """Largest central-axis dose (Gy/MU) of a ``w × h`` beamlet at the isocentre distance."""
    from ._model import rectangle_dose

    d = np.arange(0.0, 60.0, 1.0)
    z = np.full_like(d, model.sad_mm)
    zero = np.zeros_like(d)
    dose = rectangle_dose(zero, zero, z, d, [[-w / 2, w / 2, -h / 2, h / 2]], [1.0], model)
    return float(np.max(dose))


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS between beams (glibc only; no-op elsewhere).

    The per-beam work arrays (10-30 MB each) live below glibc's dynamic mmap threshold, so
    without this the process keeps their pages and the peak resident memory grows by tens of
    MB per beam.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            _MALLOC_TRIM = getattr(ctypes.CDLL(name), "malloc_trim", False) if name else False
        except OSError:
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None  # libc malloc_trim, False where absent, None until looked up


def _lattices(beamlets: Beamlets) -> list[dict]:
    out = []
    for b in range(beamlets.n_beams):
        sl = beamlets.beam_slice(b)
        shape = beamlets.fluence_map_shape(b)
        lut = -np.ones(shape, dtype=np.int64)
        lut[beamlets.row[sl], beamlets.col[sl]] = np.arange(sl.stop - sl.start)
        w = np.unique(beamlets.width_mm[sl])
        h = np.unique(beamlets.height_mm[sl])
        if w.size > 1 or h.size > 1:
            raise InvalidGeometryError(
                f"Beam {b}: beamlets of one beam must share one width and height; got widths "
                f"{w.tolist()} and heights {h.tolist()} mm."
            )
        out.append(
            {
                "origin": tuple(beamlets.map_origin_mm[b]),
                "w": float(w[0]),
                "h": float(h[0]),
                "shape": shape,
                "lut": lut,
                "offset": sl.start,
                "n": sl.stop - sl.start,
            }
        )
    return out


def _row_settings(prefix: str, cutoff_mm, threshold) -> tuple[float, float]:
    """``(lateral cut-off mm, relative threshold)`` of one set of rows, checked."""
    if cutoff_mm is None or not (cutoff_mm > 0):
        raise InvalidGeometryError(f"`{prefix}lateral_cutoff_mm` must be > 0; got {cutoff_mm!r}.")
    if threshold is None or not (0 <= threshold < 1):
        raise InvalidGeometryError(
            f"`{prefix}relative_threshold` must lie in [0, 1); got {threshold!r}."
        )
    return float(cutoff_mm), float(threshold)


@check_arguments(
    density=ARRAY,
    ct_grid="dose_engine._grid:Grid",
    dose_grid="dose_engine._grid:Grid",
    beams=sequence_of("dose_engine._beam:Beam"),
    beamlets="dose_engine._beamlets:Beamlets",
)
def compute_influence_matrix(
    density,
    ct_grid: Grid,
    dose_grid: Grid,
    beams: Sequence[Beam],
    beamlets: Beamlets,
    model: BeamModel | None = None,
    *,
    backend: str = "numpy",
    voxel_mask=None,
    lateral_cutoff_mm: float = DEFAULT_LATERAL_CUTOFF_MM,
    relative_threshold: float = DEFAULT_RELATIVE_THRESHOLD,
    wide_mask=None,
    wide_lateral_cutoff_mm: float | None = None,
    wide_relative_threshold: float | None = None,
    progress: bool = True,
) -> InfluenceMatrix:
    """Dose per MU of every beamlet on every dose-grid voxel.

    Parameters
    ----------
    density : (nz, ny, nx) ndarray on ``ct_grid``
        Electron density relative to water (:func:`hu_to_density`).  Ray tracing runs on
        this (fine) grid; dose is evaluated at the centres of the ``dose_grid`` voxels.
    ct_grid : Grid
    dose_grid : Grid
        E.g. ``ct_grid.with_spacing(3.0)``.
    beams : sequence of Beam
    beamlets : Beamlets
        From :func:`beamlets_for_target`; beam indices refer to ``beams``.
    model : BeamModel, optional
        Default: the shipped 6 MV model.
    backend : {"numpy", "cupy"}
    voxel_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, optional
        Rows outside the mask (e.g. outside the body) stay empty.
    lateral_cutoff_mm : float
        A beamlet contributes to a voxel only when its centre lies within this distance (in
        the isocentre plane, along BLD x and y separately) of the voxel's ray.
    relative_threshold : float
        Entries below ``relative_threshold × D_ref`` are dropped, where ``D_ref`` is the
        reference beamlet maximum: the central-axis dmax dose per MU of one beamlet of this
        size in water at source-surface distance = SAD (an a-priori column maximum; the
        actual maxima are within a few % of it in water, larger where the patient surface
        is nearer the source).  One absolute floor for all columns, applied on the fly.
    wide_mask : (nz, ny, nx) bool ndarray on ``dose_grid``, optional
        Voxels whose rows are computed with ``wide_lateral_cutoff_mm`` and
        ``wide_relative_threshold`` instead (e.g. targets and organs, where the scatter tails
        matter); they get rows whether or not ``voxel_mask`` holds them.  Each beam's rays
        are traced once for both sets of voxels.
    wide_lateral_cutoff_mm, wide_relative_threshold : float, optional
        Required with ``wide_mask``; the same meaning and ranges as the two above.
    progress : bool
        Show a tqdm progress bar over beams.

    Returns
    -------
    InfluenceMatrix

    Notes
    -----
    Error bound (tested in ``tests/dose_engine/test_influence.py``): entries are only ever
    dropped, so the matrix under-estimates dose.  With the shipped model and the defaults
    (30 mm cut-off, threshold 1e-3 of the reference beamlet maximum) the summed dose of an
    open field built from all its beamlets, compared with :func:`field_dose`, is low by at
    most 0.9 % of the field's maximum for 3 × 3 cm² and 5.1 % for 9 × 9 cm² (8.6 % locally
    inside the field at 150 mm depth): the lost dose is the phantom-scatter and broad
    head-scatter tails of distant beamlets, which grows with the field size.  A larger
    cut-off and a lower threshold shrink it (50 mm, 2e-4: 2.7 % for 9 × 9 cm², 3.5 × the
    entries).  With a cut-off that reaches every voxel and no threshold the two agree to
    float32 round-off.  Final plan doses should come from :func:`field_dose` of the
    delivered apertures.
    """
    model = load_beam_model() if model is None else model
    beams = list(beams)
    if not beams:
        raise InvalidGeometryError("`beams` is empty.")
    if beamlets.n_beams != len(beams):
        raise InvalidGeometryError(
            f"`beamlets` covers {beamlets.n_beams} beams but {len(beams)} beams were given; "
            "build them together with `beamlets_for_target(beams, ...)`."
        )
    cutoff_mm, threshold = _row_settings("", lateral_cutoff_mm, relative_threshold)
    wide_settings = (
        None
        if wide_mask is None
        else _row_settings("wide_", wide_lateral_cutoff_mm, wide_relative_threshold)
    )
    masks = {"voxel_mask": voxel_mask, "wide_mask": wide_mask}
    for name, mask in masks.items():
        if mask is not None and np.shape(mask) != tuple(dose_grid.shape):
            raise InvalidGeometryError(
                f"`{name}` has shape {np.shape(mask)} but `dose_grid` describes "
                f"{dose_grid.shape} voxels."
            )
    if wide_mask is not None:
        wide_mask = np.asarray(wide_mask, dtype=bool)
        if voxel_mask is not None:
            voxel_mask = np.asarray(voxel_mask, dtype=bool) | wide_mask
    n_voxels = dose_grid.voxel_count if voxel_mask is None else int(np.count_nonzero(voxel_mask))
    check_limit(
        "influence_pairs",
        float(n_voxels) * float(len(beamlets.x_mm)),
        f"An influence matrix of {n_voxels:,} voxels × {len(beamlets.x_mm):,} beamlets",
        hint="Use a coarser dose grid or larger beamlets.",
    )
    for beam in beams:
        check_inputs(density, ct_grid, dose_grid, beam)
        if abs(beam.sad_mm - model.sad_mm) > 1e-6:
            raise InvalidGeometryError(
                f"Beam SAD {beam.sad_mm:g} mm differs from the beam model's {model.sad_mm:g} mm."
            )
    be = get_backend(backend)
    xp = array_namespace(be.xp.zeros(1))  # array-API view of the backend (numpy / CuPy)
    dens = xp.asarray(density, dtype=xp.float32)
    lats = _lattices(beamlets)
    n_rows = dose_grid.voxel_count
    reach_mm = cutoff_mm if wide_settings is None else max(cutoff_mm, wide_settings[0])
    wide_flat = None if wide_mask is None else xp.asarray(wide_mask.ravel())
    blocks = []
    pairs = 0
    t0 = time.perf_counter()
    iterator = range(len(beams))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="influence matrix", unit="beam")
    for b in iterator:
        lat = lats[b]
        pts = prepare_beam_points(
            dens,
            ct_grid,
            dose_grid,
            beams[b],
            voxel_mask=voxel_mask,
            xp=xp,
            uv_box_mm=_reach_box(lat, reach_mm),
            map_fn=be.map,
        )
        if wide_flat is None or wide_settings is None:
            groups = [(pts, cutoff_mm, threshold)]
        else:  # one ray trace, two sets of rows
            is_wide = xp.take(wide_flat, pts.flat_index)
            u_lo, u_hi, v_lo, v_hi = _reach_box(lat, lateral_cutoff_mm)
            near = (pts.u_mm >= u_lo) & (pts.u_mm <= u_hi) & (pts.v_mm >= v_lo) & (pts.v_mm <= v_hi)
            groups = [
                (_subset(pts, is_wide), *wide_settings),
                (_subset(pts, ~is_wide & near), cutoff_mm, threshold),
            ]
        del pts
        parts = [_beam_entries(g, lat, model, xp, c, t, be) for g, c, t in groups]
        del groups
        block, n_pairs = _beam_block(parts, lat["n"], n_rows, xp, be.sparse)
        blocks.append(block)
        pairs += n_pairs
        del block
        _trim_heap()
    matrix = _hstack_csr(blocks, n_rows, xp, be.sparse)
    del blocks
    elapsed = time.perf_counter() - t0
    prov = dict(model.provenance())
    prov.update(name=model.name, file=model.path, fingerprint=model.fingerprint())
    settings = {
        "lateral_cutoff_mm": float(lateral_cutoff_mm),
        "relative_threshold": float(relative_threshold),
        "backend": be.name,
        "code_version": CODE_VERSION,
        "compute_time_s": elapsed,
        "pairs_evaluated": int(pairs),
    }
    if wide_settings is not None:
        settings["wide_lateral_cutoff_mm"], settings["wide_relative_threshold"] = wide_settings
        settings["wide_rows"] = int(np.count_nonzero(wide_mask))
    logger.info(
        "influence matrix %s × %s, nnz %d, %.1f MiB, %.1f s",
        *matrix.shape,
        matrix.nnz,
        (matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) / 2**20,
        elapsed,
    )
    return InfluenceMatrix(matrix, dose_grid, tuple(beams), beamlets, prov, settings)
