r"""Segment-weight re-optimisation after leaf sequencing, and dose comparisons.

Quantisation and sequencing change the optimal fluence a little.  With the apertures
fixed, the dose is linear in the segment meterset ``m`` (MU): ``d = D_seg m`` where column
``k`` of ``D_seg`` is the dose of segment ``k`` at 1 MU: ``D_seg = D S`` with ``D`` the
influence matrix (Gy/MU, voxels × beamlets) and ``S[j, k]`` the mean fluence of segment
``k`` over beamlet ``j``: 1 where open, the leaf transmission under the leaves, a fraction
where the dosimetric leaf gap or a tongue-and-groove band cuts the beamlet (the fluence of
the final aperture dose, :meth:`~rtplan.DeliverableBeam.segment_fluence`; exact but for
the fluence outside the beamlets, which the influence matrix does not cover).

:func:`reoptimize_segment_weights` solves the non-negative weighted least-squares problem

.. math:: \min_{m \ge 0} \sum_v w_v \, (D_{seg} m - d_{ref})_v^2

over the voxels of the given structures, where ``d_ref = D x*`` is the dose of the optimal
fluence ``x*``.  The problem is convex and the sequenced meterset is feasible, so the
optimum never has a larger error than the un-reoptimised segments (the solution is checked
and the sequenced meterset kept if a solver returned something worse).

:func:`compare_doses` reports target coverage (D95) and organ doses of two dose
distributions, e.g. optimal fluence vs delivered segments.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dose_engine import BeamModel, MLCParameters
from optimizers import Status, dose_at_volume

from .._internal.arguments import ARRAY, TEXT, check_arguments, sequence_of
from ..errors import InputError
from ._deliverable import DeliverableBeam

__all__ = [
    "DoseComparison",
    "SegmentWeightResult",
    "compare_doses",
    "reoptimize_segment_weights",
    "segment_beamlet_matrix",
]

logger = logging.getLogger("rtplan.segment_weights")

#: Eigenvalues of the normal matrix below this fraction of the largest count as zero
#: (directions of the segment weights that the fitted voxels cannot tell apart).
EIGEN_RTOL = 1e-12


def segment_beamlet_matrix(
    dbeams: Sequence[DeliverableBeam],
    beamlets,
    *,
    beam_indices: Sequence[int] | None = None,
    mlc_parameters: MLCParameters | None = None,
    model: BeamModel | None = None,
):
    """Mean fluence of every segment over every beamlet, with the MLC physics.

    Parameters
    ----------
    dbeams : sequence of DeliverableBeam
    beamlets : dose_engine.Beamlets
        Beamlet table of the influence matrix.
    beam_indices : sequence of int, optional, keyword-only
        Beam index in ``beamlets`` of each deliverable beam (default ``0, 1, ...``; use
        :attr:`rtplan.sequencing.PlanSequencing.beam_indices`).
    mlc_parameters : dose_engine.MLCParameters, optional, keyword-only
        Leaf and jaw parameters (default each beam's machine's); the final aperture dose
        must use the same ones (:func:`rtplan.dose.resolve_mlc_parameters`).
    model : dose_engine.BeamModel, optional, keyword-only
        The beam model of the final dose: each segment's column is scaled so that its head
        scatter is what its jaws and leaves let through
        (:meth:`DeliverableBeam.segment_fluence`), as in the final aperture dose.

    Returns
    -------
    S : scipy.sparse.csc_matrix, shape (n_beamlets, n_segments), float64
        ``S[j, k]`` = fluence of segment ``k`` per MU averaged over beamlet ``j``'s
        rectangle (:meth:`DeliverableBeam.segment_fluence`: 1 where open, the leaf
        transmission under the leaves, less in the tongue-and-groove bands, …; segments
        numbered beam by beam, in order).  For an ideal MLC it is the open fraction.
    """
    import scipy.sparse as sp

    if beam_indices is None:
        beam_indices = range(len(dbeams))
    rows, cols, vals = [], [], []
    k = 0
    for dbeam, b in zip(dbeams, beam_indices, strict=True):
        sl = beamlets.beam_slice(int(b))
        cells = beamlets.rectangles_mm(int(b))
        area = (cells[:, 1] - cells[:, 0]) * (cells[:, 3] - cells[:, 2])
        for s in range(len(dbeam.segments)):
            r, weight = dbeam.segment_fluence(s, mlc_parameters, model=model)
            ox, oy = cell_overlaps(cells, r)
            frac = (ox * oy) @ weight / area
            nz = np.flatnonzero(frac > 1e-12)
            rows.append(sl.start + nz)
            cols.append(np.full(nz.size, k))
            vals.append(frac[nz])
            k += 1
    if rows:
        rows_a, cols_a, vals_a = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    else:
        rows_a = cols_a = np.zeros(0, int)
        vals_a = np.zeros(0)
    return sp.csc_matrix((vals_a, (rows_a, cols_a)), shape=(len(beamlets), k))


def cell_overlaps(cells_mm: np.ndarray, rects_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Overlap of every beamlet cell with every fluence rectangle along x and along y.

    Parameters
    ----------
    cells_mm, rects_mm : (n_cells, 4) and (n_rects, 4) ndarray of float, mm
        ``[x1, x2, y1, y2]`` (isocentre plane).

    Returns
    -------
    ox, oy : (n_cells, n_rects) ndarray of float, mm
        Length of the intersection of the x (y) intervals, 0 where they do not meet.
    """
    ox = np.clip(
        np.minimum(cells_mm[:, None, 1], rects_mm[None, :, 1])
        - np.maximum(cells_mm[:, None, 0], rects_mm[None, :, 0]),
        0,
        None,
    )
    oy = np.clip(
        np.minimum(cells_mm[:, None, 3], rects_mm[None, :, 3])
        - np.maximum(cells_mm[:, None, 2], rects_mm[None, :, 2]),
        0,
        None,
    )
    return ox, oy


@dataclass(frozen=True, eq=False)
class SegmentWeightResult:
    """Re-optimised segment meterset.

    Attributes
    ----------
    beams : tuple of DeliverableBeam
        The beams with the new MU; segments that reached 0 MU are dropped (a beam whose
        every segment reached 0 is dropped too).
    mu_before, mu_after : (n_segments,) ndarray of float, MU
        Segment meterset before and after (segments numbered beam by beam).
    objective_before, objective_after : float, Gy²
        Weighted squared dose error ``Σ w_v (d_v − d_ref,v)²`` over the selected voxels.
    n_voxels : int
        Voxels in the fit.
    solver : str
    message : str
    status : optimizers.Status
        Outcome in the vocabulary of :class:`optimizers.OptimizationResult`: ``optimal``
        (each NNLS solve is exact, and the cold-set iteration of ``underdose_weights``
        settled), ``iteration_limit`` (that iteration did not settle within
        ``max_underdose_iter``; the best iterate is kept) or ``optimal_inaccurate`` (the
        solution was not better than the sequenced meterset, which is kept).
    solve_time_s : float
    extras : dict
        ``cold_set_iterations``: iterations of the cold-set loop (0 without
        ``underdose_weights``).
    beamlet_fluence_mu : (n_beamlets,) ndarray of float64, MU, or None
        The delivered fluence of the re-optimised segments averaged over each beamlet
        (``S m``, :func:`segment_beamlet_matrix`): ``influence @ beamlet_fluence_mu`` is
        the segments' dose as the influence matrix models it.

        .. versionadded:: 0.1.0
    """

    beams: tuple[DeliverableBeam, ...]
    mu_before: np.ndarray
    mu_after: np.ndarray
    objective_before: float
    objective_after: float
    n_voxels: int
    solver: str
    message: str
    status: Status
    solve_time_s: float
    extras: dict = field(default_factory=dict)
    beamlet_fluence_mu: np.ndarray | None = None

    @property
    def success(self) -> bool:
        """``True`` when :attr:`status` is ``optimal`` or ``optimal_inaccurate``."""
        return self.status in (Status.OPTIMAL, Status.OPTIMAL_INACCURATE)

    def __repr__(self) -> str:
        return (
            f"SegmentWeightResult(status={str(self.status)!r}, message={self.message!r}, "
            f"objective_before="
            f"{self.objective_before:.6g}, objective_after={self.objective_after:.6g}, "
            f"total_mu {self.mu_before.sum():.5g} -> {self.mu_after.sum():.5g}, "
            f"n_segments {self.mu_before.size} -> {int(np.count_nonzero(self.mu_after))})"
        )


def _voxel_weights(
    structures: Mapping[str, np.ndarray],
    n_voxels: int,
    structure_weights: Mapping[str, float] | None,
):
    if not structures:
        raise InputError("`structures` is empty; give the voxel indices of the target and organs.")
    sw = dict(structure_weights or {})
    unknown = set(sw) - set(structures)
    if unknown:
        raise InputError(
            f"`structure_weights` names {sorted(unknown)} which are not in `structures` "
            f"{sorted(structures)}."
        )
    w = np.zeros(n_voxels)
    for name, idx in structures.items():
        idx = np.asarray(idx, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= n_voxels):
            raise InputError(
                f"Structure {name!r}: voxel indices must be in [0, {n_voxels}); got "
                f"[{idx.min()}, {idx.max()}]."
            )
        wt = float(sw.get(name, 1.0))
        if not (wt >= 0 and math.isfinite(wt)):
            raise InputError(f"`structure_weights[{name!r}]` must be ≥ 0; got {wt!r}.")
        w[idx] = np.maximum(w[idx], wt)
    rows = np.flatnonzero(w > 0)
    return rows, w[rows]


def fit_voxels(
    structures: Mapping[str, np.ndarray],
    n_voxels: int,
    structure_weights: Mapping[str, float] | None = None,
    underdose_weights: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fitted voxels of :func:`reoptimize_segment_weights`: ``(rows, w, u)``, their
    indices (ascending), weights and extra weights when cold (``underdose_weights``)."""
    rows, w = _voxel_weights(structures, n_voxels, structure_weights)
    u = np.zeros(rows.size)
    for name, wt in dict(underdose_weights or {}).items():
        if name not in structures:
            raise InputError(
                f"`underdose_weights` names {name!r}, which is not in `structures` "
                f"{sorted(structures)}."
            )
        wt = float(wt)
        if not (wt >= 0 and math.isfinite(wt)):
            raise InputError(f"`underdose_weights[{name!r}]` must be ≥ 0; got {wt!r}.")
        pos = np.searchsorted(rows, np.asarray(structures[name], dtype=np.int64).ravel())
        u[pos] = np.maximum(u[pos], wt)
    return rows, w, u


def fit_objective_value(
    residual_gy: np.ndarray, weights: np.ndarray, underdose_weights: np.ndarray
) -> float:
    """``Σ w_v r_v² + Σ u_v min(r_v, 0)²``, Gy²: the weight fit's objective of the residual
    ``r = dose − reference`` on the fitted voxels (:func:`fit_voxels`' ``w`` and ``u``);
    the leaf refinement lowers the same number."""
    cold = np.minimum(residual_gy, 0.0)
    return float(
        np.sum(weights * residual_gy * residual_gy) + np.sum(underdose_weights * cold * cold)
    )


#: Fitted rows of the influence matrix multiplied by the segment matrix at a time: the
#: copy of those rows stays small (4,096 rows of 5,000 entries: 160 MB).
SEGMENT_DOSE_CHUNK_ROWS = 4096


def _segment_dose_rows(D, S, rows: np.ndarray) -> np.ndarray:
    """``(D S)[rows]``: the dose of every segment at 1 MU on the fitted voxels, Gy/MU.

    Parameters
    ----------
    D : scipy.sparse.csr_matrix, shape (n_voxels, n_beamlets)
    S : scipy.sparse matrix, shape (n_beamlets, n_segments)
    rows : (n,) ndarray of int
        Rows of ``D`` to fit.

    Returns
    -------
    (n, n_segments) ndarray of float64
        Dense: a segment reaches nearly every fitted voxel of its beam.

    Only these rows are multiplied, in chunks of :data:`SEGMENT_DOSE_CHUNK_ROWS`, and ``S``
    takes ``D``'s dtype (a float64 ``S`` would copy all of a float32 ``D``).
    """
    s = S.astype(D.dtype).tocsr()
    out = np.empty((rows.size, S.shape[1]))
    for lo in range(0, rows.size, SEGMENT_DOSE_CHUNK_ROWS):
        sl = slice(lo, lo + SEGMENT_DOSE_CHUNK_ROWS)
        out[sl] = (D[rows[sl]] @ s).toarray()
    return out


def _nnls_normal_equations(
    M: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    *,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    normal: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``argmin_{lower ≤ m ≤ upper} Σ_v w_v (M m − y)_v²`` solved on the ``n × n`` normal
    equations (default bounds ``0 ≤ m``); ``normal``: their ``(G, b)``
    (:func:`_normal_equations`) when already formed.

    With ``G = Mᵀ W M = Q Λ Qᵀ`` and ``b = Mᵀ W y``, ``A = Λ^½ Qᵀ`` and ``c = Λ^-½ Qᵀ b``
    give ``‖A m − c‖² = mᵀ G m − 2 bᵀ m + const``: the same objective up to a constant, so
    Lawson–Hanson NNLS (or, with bounds, bounded-variable least squares, Stark & Parker
    1995) on the ``n × n`` system reaches the same optimum as on the ``n_voxels × n``
    one, at a cost independent of the voxel count after one product
    (``M`` dense, (n_voxels, n) float64).
    """
    from scipy.optimize import lsq_linear, nnls

    bounded = lower is not None or upper is not None
    lo = np.zeros(M.shape[1]) if lower is None else np.asarray(lower, dtype=float)
    hi = np.full(M.shape[1], np.inf) if upper is None else np.asarray(upper, dtype=float)
    gram, b = _normal_equations(M, w, y) if normal is None else normal
    lam, q = np.linalg.eigh(0.5 * (gram + gram.T))
    keep = lam > EIGEN_RTOL * max(float(lam.max()), 0.0)
    if not keep.any():  # no fitted voxel receives dose from any segment
        return lo.copy()
    root = np.sqrt(lam[keep])
    a = root[:, None] * q[:, keep].T
    c = (q[:, keep].T @ b) / root
    if not bounded:
        return nnls(a, c, maxiter=50 * M.shape[1])[0]
    fixed = hi <= lo  # bvls needs lo < hi: variables pinned by their bounds stay there
    x = lo.copy()
    free = ~fixed
    if free.any():
        res = lsq_linear(
            a[:, free], c - a[:, fixed] @ lo[fixed], bounds=(lo[free], hi[free]), method="bvls"
        )
        x[free] = np.clip(res.x, lo[free], hi[free])
    return x


def _normal_equations(M: np.ndarray, w: np.ndarray, y: np.ndarray):
    """``(Mᵀ W M, Mᵀ W y)`` of :func:`_nnls_normal_equations`: ``(n, n)`` and ``(n,)``."""
    return M.T @ (w[:, None] * M), M.T @ (w * y)


@dataclass(frozen=True)
class _WeightFit:
    """Outcome of :func:`fit_weights` (internal)."""

    mu: np.ndarray
    objective_before: float
    objective_after: float
    status: Status
    message: str
    cold_set_iterations: int


def fit_weights(
    M: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    u: np.ndarray,
    m0: np.ndarray,
    *,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    max_underdose_iter: int = 20,
) -> _WeightFit:
    """The weight fit of :func:`reoptimize_segment_weights` on given dose columns.

    Minimises ``Σ w_v r_v² + Σ u_v min(r_v, 0)²`` with ``r = M m − y`` over
    ``lower ≤ m ≤ upper`` (default ``m ≥ 0``) by repeated bounded least squares on the
    current set of cold voxels, keeping the best iterate, and keeps ``m0`` (clipped to
    the bounds) if nothing better was found.

    Parameters
    ----------
    M : (n_voxels, n) ndarray of float, Gy/MU
        Dose of each column (segment, arc interval) at 1 MU on the fitted voxels.
    y : (n_voxels,) ndarray, Gy
        Reference dose there.
    w, u : (n_voxels,) ndarray
        Voxel weights and extra weights on cold voxels (underdose).
    m0 : (n,) ndarray, MU
        The starting (sequenced) meterset.
    lower, upper : (n,) ndarray, MU, optional, keyword-only
        Bounds on each column's meterset (e.g. machine limits); default ``0`` and none.
    max_underdose_iter : int, keyword-only

    Returns
    -------
    _WeightFit
    """
    bounded = lower is not None or upper is not None

    def objective(m):
        return fit_objective_value(M @ m - y, w, u)

    base = _normal_equations(M, w, y)

    def solve(cold):
        # the exact optimum of this convex problem, in time set by the column count; the
        # weights w + u on the cold voxels add their rows' terms to the normal equations
        # of w, formed once (the product over every fitted voxel took three quarters of
        # the segment-weight stage on the thorax)
        normal = base
        if cold is not None:
            rows = np.flatnonzero(cold & (u > 0))
            normal = tuple(
                a + c
                for a, c in zip(base, _normal_equations(M[rows], u[rows], y[rows]), strict=True)
            )
        return _nnls_normal_equations(M, w, y, lower=lower, upper=upper, normal=normal)

    detail = "bounded least squares (BVLS)" if bounded else "Lawson-Hanson NNLS"
    if bounded:
        lo = np.zeros(m0.size) if lower is None else lower
        hi = np.full(m0.size, np.inf) if upper is None else upper
        m0 = np.minimum(np.maximum(m0, lo), hi)
    obj0 = objective(m0)
    m1 = solve(None)
    status = Status.OPTIMAL
    n_cold_iter = 0
    if u.any():
        best, best_obj = m1, objective(m1)
        cold = np.zeros(y.size, dtype=bool)
        for n_cold_iter in range(1, max_underdose_iter + 1):  # noqa: B007
            new_cold = (u > 0) & (M @ m1 - y < 0)
            if np.array_equal(new_cold, cold):
                break
            cold = new_cold
            m1 = solve(cold)
            obj = objective(m1)
            if obj < best_obj:
                best, best_obj = m1, obj
        else:
            status = Status.ITERATION_LIMIT
            detail += " (the cold set did not settle; the best iterate kept)"
        m1 = best
        detail += f", {n_cold_iter} cold-set iterations"
    if not bounded:
        m1 = np.clip(m1, 0.0, None)
        # Segments with a negligible share are dropped (below 1e-6 of the total).
        m1[m1 < 1e-6 * max(m1.sum(), 1e-300)] = 0.0
    obj1 = objective(m1)
    message = f"re-optimised {m0.size} weights ({detail})"
    if not obj1 <= obj0:
        m1, obj1 = m0.copy(), obj0
        message = "solver result was not better; kept the sequenced meterset"
        status = Status.OPTIMAL_INACCURATE
    return _WeightFit(m1, obj0, obj1, status, message, n_cold_iter)


@check_arguments(
    influence=ARRAY,
    beamlets="dose_engine._beamlets:Beamlets",
    dbeams=sequence_of("rtplan.delivery._deliverable:DeliverableBeam"),
    reference_dose_gy=ARRAY,
    structures="collections.abc:Mapping",
)
def reoptimize_segment_weights(
    influence,
    beamlets,
    dbeams: Sequence[DeliverableBeam],
    reference_dose_gy,
    structures: Mapping[str, np.ndarray],
    *,
    structure_weights: Mapping[str, float] | None = None,
    underdose_weights: Mapping[str, float] | None = None,
    beam_indices: Sequence[int] | None = None,
    max_underdose_iter: int = 20,
    mlc_parameters: MLCParameters | None = None,
    model: BeamModel | None = None,
) -> SegmentWeightResult:
    """Re-solve non-negative segment MU so the segments' dose matches a reference dose.

    Parameters
    ----------
    influence : scipy.sparse matrix, shape (n_voxels, n_beamlets), Gy/MU
        Influence matrix (rows = dose-grid voxels, flat C order).
    beamlets : dose_engine.Beamlets
        Its beamlet table.
    dbeams : sequence of DeliverableBeam
        Sequenced beams (segment ``total_mu`` = MU over all fractions).
    reference_dose_gy : (n_voxels,) array of float, Gy
        Dose to match, normally ``influence @ x_optimal``.
    structures : mapping of str to (n,) array of int
        Flat voxel indices of the structures to fit (target and organs at risk).
    structure_weights : mapping of str to float, optional, keyword-only
        Weight per voxel of each structure (default 1; a voxel in several structures takes
        the largest).
    underdose_weights : mapping of str to float, optional, keyword-only
        Extra weight on the voxels of these structures (normally the target) where the dose
        falls *below* the reference: the objective becomes ``Σ w_v r_v² + Σ u_v min(r_v, 0)²``
        with ``r = d − d_ref``, which protects target coverage (D95).  Solved by repeated
        NNLS on the current set of cold voxels (a semismooth Newton / active-set iteration),
        keeping the best iterate.
    beam_indices : sequence of int, optional, keyword-only
        Beam index in ``beamlets`` of each deliverable beam (default ``0, 1, ...``).
    max_underdose_iter : int, keyword-only
        Bound on the cold-set iterations (default 20).
    mlc_parameters : dose_engine.MLCParameters, optional, keyword-only
        Leaf and jaw parameters of the segment fluence (:func:`segment_beamlet_matrix`);
        default each beam's machine's.  Pass those of the final dose.
    model : dose_engine.BeamModel, optional, keyword-only
        The final dose's beam model (head scatter through the jaws and leaves, see
        :func:`segment_beamlet_matrix`); default: no such scaling.

    Returns
    -------
    SegmentWeightResult
        ``objective_before`` / ``objective_after`` use the full objective (with the
        underdose term when ``underdose_weights`` is given).
    """
    import scipy.sparse as sp

    t0 = time.perf_counter()
    D = sp.csr_matrix(influence)
    n_vox, n_bl = D.shape
    if n_bl != len(beamlets):
        raise InputError(
            f"`influence` has {n_bl} columns but the beamlet table has {len(beamlets)} beamlets."
        )
    ref = np.asarray(reference_dose_gy, dtype=float).ravel()
    if ref.shape != (n_vox,):
        raise InputError(
            f"`reference_dose_gy` has {ref.size} values; expected one per influence-matrix row "
            f"({n_vox})."
        )
    rows, w, u = fit_voxels(structures, n_vox, structure_weights, underdose_weights)
    S = segment_beamlet_matrix(
        dbeams, beamlets, beam_indices=beam_indices, mlc_parameters=mlc_parameters, model=model
    )
    m0 = np.array([s.total_mu for b in dbeams for s in b.segments])
    M = _segment_dose_rows(D, S, rows)  # segment dose at 1 MU (Gy/MU), fitted voxels
    fit = fit_weights(M, ref[rows], w, u, m0, max_underdose_iter=max_underdose_iter)
    m1, obj0, obj1, status = fit.mu, fit.objective_before, fit.objective_after, fit.status
    n_cold_iter = fit.cold_set_iterations
    solver = "scipy.optimize.nnls (normal equations)"
    message = fit.message.replace(" weights ", " segment weights ", 1)
    new_beams = []
    k = 0
    for b in dbeams:
        segs = []
        for s in b.segments:
            if m1[k] > 0:
                segs.append(s.with_mu(float(m1[k])))
            k += 1
        if segs:
            new_beams.append(DeliverableBeam(b.number, b.name, b.beam, b.machine, tuple(segs)))
    dt = time.perf_counter() - t0
    logger.info(
        "segment weights: objective %.6g -> %.6g on %d voxels in %.2f s", obj0, obj1, rows.size, dt
    )
    return SegmentWeightResult(
        beams=tuple(new_beams),
        mu_before=m0,
        mu_after=m1,
        objective_before=obj0,
        objective_after=obj1,
        n_voxels=int(rows.size),
        solver=solver,
        message=message,
        status=status,
        solve_time_s=dt,
        extras={"cold_set_iterations": n_cold_iter},
        beamlet_fluence_mu=np.asarray(S @ m1, dtype=np.float64),
    )


# ----------------------------------------------------------------------- comparisons
def _dxx(d: np.ndarray, volume_percent: float) -> float:
    """Minimum dose to the hottest ``volume_percent`` % (equal-volume voxels), Gy
    (:func:`optimizers.dose_at_volume`, the DVH's curve)."""
    return dose_at_volume(d, np.ones_like(d), volume_percent) if d.size else float("nan")


@dataclass(frozen=True)
class DoseComparison:
    """Target coverage and organ doses of a dose distribution against a reference.

    Attributes
    ----------
    target_name : str
    d95_reference_gy, d95_gy : float, Gy
        Target D95 (voxels of equal volume; the DVH's voxel-midpoint curve, as
        :meth:`rtplan.evaluation.DVH.dose_at_volume`).
    coverage_loss_percent : float
        ``100 (D95_ref − D95) / D95_ref``; negative when coverage improved.
    mean_gy, max_gy : dict of str to (float, float), Gy
        ``(reference, evaluated)`` mean and voxel maximum per structure.
    """

    target_name: str
    d95_reference_gy: float
    d95_gy: float
    coverage_loss_percent: float
    mean_gy: dict
    max_gy: dict


@check_arguments(
    reference_dose_gy=ARRAY, dose_gy=ARRAY, structures="collections.abc:Mapping", target_name=TEXT
)
def compare_doses(
    reference_dose_gy, dose_gy, structures: Mapping[str, np.ndarray], target_name: str
) -> DoseComparison:
    """Compare target D95 and per-structure mean/max dose of two dose distributions.

    Parameters
    ----------
    reference_dose_gy, dose_gy : (n_voxels,) or (nz, ny, nx) array of float, Gy
        Same grid (flattened in C order).
    structures : mapping of str to (n,) array of int
        Flat voxel indices per structure.
    target_name : str
        Key of the target in ``structures``.

    Returns
    -------
    DoseComparison
    """
    ref = np.asarray(reference_dose_gy, dtype=float).ravel()
    new = np.asarray(dose_gy, dtype=float).ravel()
    if ref.shape != new.shape:
        raise InputError(f"Dose arrays differ in size: {ref.size} vs {new.size} voxels.")
    if target_name not in structures:
        raise InputError(
            f"Target {target_name!r} is not among the structures {sorted(structures)}."
        )
    t = np.asarray(structures[target_name], dtype=np.int64)
    if t.size == 0:
        raise InputError(f"Target {target_name!r} has no voxels on this grid.")
    d95_ref, d95 = _dxx(ref[t], 95.0), _dxx(new[t], 95.0)
    mean, mx = {}, {}
    for name, idx in structures.items():
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size:
            mean[name] = (float(ref[idx].mean()), float(new[idx].mean()))
            mx[name] = (float(ref[idx].max()), float(new[idx].max()))
    return DoseComparison(target_name, d95_ref, d95, 100.0 * (d95_ref - d95) / d95_ref, mean, mx)
