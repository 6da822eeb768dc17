r"""Leaf-position refinement after sequencing (direct aperture optimisation).

The sequencer cuts the optimal fluence into step-and-shoot apertures on the beamlet grid,
and :func:`~rtplan.delivery.reoptimize_segment_weights` re-fits their meterset with the
apertures fixed.  :func:`refine_leaf_positions` then moves the leaves of every open leaf
pair and the segment meterset together, by a projected gradient method, starting from
those segments (Shepard DM, Earl MA, Li XA, Naqvi S, Yu C 2002, "Direct aperture
optimization: a turnkey solution for step-and-shoot IMRT", Med Phys 29:1007,
doi:10.1118/1.1477415; the aperture-shape gradient as in Cassioli A, Unkelbach J 2013,
"Aperture shape optimization for IMRT treatment planning", Phys Med Biol 58:301,
doi:10.1088/0031-9155/58/2/301).

The dose model is the segment stage's: the influence matrix ``D`` (Gy/MU, rows × beamlets)
times each segment's fluence averaged over each beamlet,

.. math:: d(L, m) = D\,S(L)\,m, \qquad
   S_{jk}(L) = \frac{1}{|c_j|} \sum_r w_{kr}\, o_x(c_j, r)\, o_y(c_j, r)

with the rectangles ``r`` and weights ``w`` of segment ``k``'s fluence with the MLC
physics (:meth:`DeliverableBeam.segment_fluence`: leaf transmission, dosimetric leaf gap,
tongue-and-groove, jaws) and ``o_x``, ``o_y`` their overlaps with beamlet cell ``c_j``.
Each rectangle edge follows one leaf (:func:`dose_engine.aperture_fluence_edges`), so

.. math:: \frac{\partial S_{jk}}{\partial \ell} = \frac{1}{|c_j|} \sum_{r:\,x_2(r)=\ell}
   w_{kr}\, o_y\, [x_2 \in c_j] - \frac{1}{|c_j|} \sum_{r:\,x_1(r)=\ell} w_{kr}\, o_y\,
   [x_1 \in c_j]

and the gradient of an objective ``F(d)`` costs one product ``h = Dᵀ ∇F`` and one pass over
the cells: ``∂F/∂m_k = S_{:k}·h`` and ``∂F/∂ℓ = m_k Σ_j h_j ∂S_{jk}/∂ℓ``.  ``S`` is piecewise
linear in the leaf positions (kinks where an edge crosses a beamlet boundary); the head
scatter's scale of each segment (a function of its whole aperture) is held at its value
in the gradient and recomputed in every objective value.  The final dose stays the
accurate aperture dose (erf leaf edges, :func:`rtplan.dose.compute_plan_dose`), computed
by the planner after the refinement; its difference from ``D S m`` is the planner's
final-dose correction.

Machine limits hold by construction: only pairs open after sequencing move (closed pairs
stay parked); each bank stays within its range, within the X jaws, within the beam's
beamlet grid (where the model knows the dose) and the pair's gap at least the minimum
leaf gap; a step whose segments fail :meth:`Segment.validate` (leaf travel,
interdigitation) is shortened until they pass; the meterset stays ≥ 0.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from dose_engine import BeamModel, MLCParameters

from .._internal.arguments import ARRAY, check_arguments, sequence_of
from ..errors import InputError
from ._deliverable import DeliverableBeam, Segment, SegmentError
from ._machine import GAP_TOLERANCE_MM
from ._segment_weights import fit_objective_value

__all__ = ["LeafRefinementResult", "dose_fit_objective", "refine_leaf_positions"]

logger = logging.getLogger("rtplan.leaf_refinement")

#: Objective (value, gradient) of a dose on the influence matrix's rows.
DoseObjective = Callable[[np.ndarray], tuple[float, np.ndarray]]

#: Sufficient-decrease constant of the Armijo line search.
ARMIJO = 1e-4
#: Largest leaf move of one step, mm (the first trial step of every iteration is at most this).
MAX_STEP_MM = 2.0
#: One MU of the scaled variables is this fraction of the mean starting segment meterset:
#: a 1 mm leaf move changes a segment's dose by a few per cent of its aperture's.
MU_SCALE_FRACTION = 0.03


@dataclass(frozen=True, eq=False)
class LeafRefinementResult:
    """Outcome of :func:`refine_leaf_positions`.

    Attributes
    ----------
    beams : tuple of DeliverableBeam
        The refined beams (segments that reached 0 MU dropped; a beam left without MU
        dropped).
    objective_before, objective_after : float
        The objective at the sequenced segments and at the refined ones.
    mu_before, mu_after : float, MU
        Total meterset (all fractions) before and after.
    leaf_travel_mm : dict of str to float, mm
        ``mean`` and ``max`` displacement of the leaves that were free to move, and their
        ``count``.
    n_iterations, n_evaluations : int
        Gradient steps taken and objective evaluations (each one product with the
        influence matrix; those with a gradient, two).
    message : str
    solve_time_s : float
    beamlet_fluence_mu : (n_beamlets,) ndarray of float64, MU
        ``S m`` of the refined segments: ``influence @ beamlet_fluence_mu`` is their dose
        as the model sees it.
    history : tuple of float
        The objective after each step.
    """

    beams: tuple[DeliverableBeam, ...]
    objective_before: float
    objective_after: float
    mu_before: float
    mu_after: float
    leaf_travel_mm: dict
    n_iterations: int
    n_evaluations: int
    message: str
    solve_time_s: float
    beamlet_fluence_mu: np.ndarray
    history: tuple[float, ...] = field(default=())

    def as_record(self) -> dict:
        """The plan.json record (numbers only, no arrays)."""
        return {
            "objective_before": self.objective_before,
            "objective_after": self.objective_after,
            "objective_change_pct": 100.0
            * (self.objective_after - self.objective_before)
            / (abs(self.objective_before) or 1.0),
            "mu_before": self.mu_before,
            "mu_after": self.mu_after,
            "leaf_travel_mm": dict(self.leaf_travel_mm),
            "iterations": self.n_iterations,
            "evaluations": self.n_evaluations,
            "message": self.message,
            "solve_time_s": self.solve_time_s,
        }


def dose_fit_objective(
    reference_gy: np.ndarray, weights: np.ndarray, underdose_weights: np.ndarray, rows: np.ndarray
) -> DoseObjective:
    """The segment-weight stage's objective on the rows ``rows`` of a dose vector.

    ``F(d) = Σ w_v r_v² + Σ u_v min(r_v, 0)²`` with ``r = d[rows] − reference``
    (:func:`rtplan.delivery.reoptimize_segment_weights`), so that the refinement starts
    from the least-squares optimum of that stage and lowers the same number.

    Parameters
    ----------
    reference_gy : (n,) ndarray of float, Gy
    weights, underdose_weights : (n,) ndarray of float
    rows : (n,) ndarray of int
        Positions of the fitted voxels in the dose vector the objective is given.

    Returns
    -------
    callable
        ``dose -> (value, gradient)``, the gradient shaped like ``dose``.
    """
    ref = np.asarray(reference_gy, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    u = np.asarray(underdose_weights, dtype=np.float64)
    idx = np.asarray(rows, dtype=np.int64)

    def objective(dose: np.ndarray) -> tuple[float, np.ndarray]:
        r = np.asarray(dose, dtype=np.float64)[idx] - ref
        grad = np.zeros(np.shape(dose))
        grad[idx] = 2.0 * (w * r + u * np.minimum(r, 0.0))
        return fit_objective_value(r, w, u), grad

    return objective


@dataclass
class _Segments:
    """The variables: free leaves of every segment and the segment meterset."""

    dbeams: list[DeliverableBeam]
    beam_of: np.ndarray  # (n_segments,) index into dbeams
    seg_of: np.ndarray  # (n_segments,) index into the beam's segments
    free: list[np.ndarray]  # per segment: (2, n_pairs) bool, leaves that move
    lower: list[np.ndarray]  # per segment: (2, n_pairs) bounds, mm
    upper: list[np.ndarray]
    min_gap: list[float]

    @property
    def n_segments(self) -> int:
        return self.beam_of.size


def _setup(dbeams: Sequence[DeliverableBeam], beamlets, beam_indices) -> _Segments:
    beam_of, seg_of, free, lower, upper, gaps = [], [], [], [], [], []
    for i, (dbeam, b) in enumerate(zip(dbeams, beam_indices, strict=True)):
        mlc = dbeam.machine.mlc
        cells = beamlets.rectangles_mm(int(b))
        cx0, cx1 = float(cells[:, 0].min()), float(cells[:, 1].max())
        bank = mlc.bank_limits_mm()
        g = float(mlc.min_leaf_gap_mm)
        for k, seg in enumerate(dbeam.segments):
            a, bb = seg.leaf_positions_mm
            lo_y, hi_y = seg.leaf_boundaries_mm[:-1], seg.leaf_boundaries_mm[1:]
            open_pair = (bb - a) > g + GAP_TOLERANCE_MM
            x_lo, x_hi = cx0, cx1
            if "X" in seg.jaws_mm:
                x_lo, x_hi = max(x_lo, seg.jaws_mm["X"][0]), min(x_hi, seg.jaws_mm["X"][1])
            if "Y" in seg.jaws_mm:
                jy = seg.jaws_mm["Y"]
                open_pair &= (hi_y > jy[0]) & (lo_y < jy[1])
            lo = np.array([np.full(a.size, max(bank[0][0], x_lo)), np.full(a.size, x_lo + g)])
            hi = np.array([np.full(a.size, x_hi - g), np.full(a.size, min(bank[1][1], x_hi))])
            lo[0] = np.maximum(lo[0], bank[0][0])
            hi[0] = np.minimum(hi[0], bank[0][1])
            lo[1] = np.maximum(lo[1], bank[1][0])
            # the sequenced positions are feasible: the bounds never exclude them
            pos = seg.leaf_positions_mm
            lo, hi = np.minimum(lo, pos), np.maximum(hi, pos)
            beam_of.append(i)
            seg_of.append(k)
            free.append(np.stack([open_pair, open_pair]))
            lower.append(lo)
            upper.append(hi)
            gaps.append(g)
    return _Segments(list(dbeams), np.array(beam_of), np.array(seg_of), free, lower, upper, gaps)


def _project(leaves: np.ndarray, free: np.ndarray, lo: np.ndarray, hi: np.ndarray, g: float):
    """Leaf positions within their bounds with every moving pair's gap ≥ ``g``."""
    out = np.clip(leaves, lo, hi)
    pairs = free[0]
    a, b = out[0], out[1]
    tight = pairs & (b - a < g)
    if tight.any():
        mid = 0.5 * (a[tight] + b[tight])
        a_new = np.clip(mid - 0.5 * g, lo[0][tight], np.minimum(hi[0][tight], hi[1][tight] - g))
        a[tight] = a_new
        b[tight] = np.maximum(b[tight], a_new + g)
    return out


class _Lattice:
    """One beam's beamlet cells as a sub-grid of a lattice of columns (x) and rows (y).

    A segment's mean fluence over every cell is then ``M[row, col] / area`` with
    ``M = (o_y w)ᵀ o_x`` (rectangles' overlaps with the rows and with the columns): one
    product of (rows × rectangles) by (rectangles × columns), where the cell-by-rectangle
    overlaps of :func:`~rtplan.delivery._segment_weights.cell_overlaps` cost cells × rectangles.
    """

    def __init__(self, cells: np.ndarray) -> None:
        self.col_lo, col = np.unique(cells[:, 0], return_inverse=True)
        self.row_lo, row = np.unique(cells[:, 2], return_inverse=True)
        self.col_hi = np.zeros(self.col_lo.size)
        self.col_hi[col] = cells[:, 1]
        self.row_hi = np.zeros(self.row_lo.size)
        self.row_hi[row] = cells[:, 3]
        if not (
            np.array_equal(self.col_hi[col], cells[:, 1])
            and np.array_equal(self.row_hi[row], cells[:, 3])
            and np.all(self.col_hi[:-1] <= self.col_lo[1:])
            and np.all(self.row_hi[:-1] <= self.row_lo[1:])
        ):
            raise InputError(
                "The beamlets of a beam do not lie on one lattice of columns and rows; leaf "
                "refinement needs the beamlet grid of `dose_engine.beamlets_for_target`."
            )
        self.cell_col, self.cell_row = col, row
        self.area = (cells[:, 1] - cells[:, 0]) * (cells[:, 3] - cells[:, 2])

    def overlaps(self, rects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(o_x, o_y)``: (rects × columns) and (rects × rows) overlaps, mm."""
        ox = np.minimum(self.col_hi, rects[:, 1:2]) - np.maximum(self.col_lo, rects[:, 0:1])
        oy = np.minimum(self.row_hi, rects[:, 3:4]) - np.maximum(self.row_lo, rects[:, 2:3])
        return np.clip(ox, 0.0, None), np.clip(oy, 0.0, None)

    def column_of(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Column holding each ``x`` (``col_lo ≤ x < col_hi``) and whether there is one."""
        c = np.searchsorted(self.col_lo, x, side="right") - 1
        inside = c >= 0
        c = np.clip(c, 0, None)
        return c, inside & (x < self.col_hi[c])


class _Model:
    """``d = D S(L) m`` and its gradient for a set of segments."""

    def __init__(self, influence, beamlets, segs: _Segments, beam_indices, params, model):
        self.D = influence
        self.DT = influence.T.tocsr()
        self.beamlets = beamlets
        self.segs = segs
        self.params = params
        self.model = model
        self.lattices = [_Lattice(beamlets.rectangles_mm(int(b))) for b in beam_indices]
        self.slices = [beamlets.beam_slice(int(b)) for b in beam_indices]
        self.n_evaluations = 0

    def fluence(self, leaves: list[np.ndarray], mu: np.ndarray) -> tuple[np.ndarray, list]:
        """``S m`` over the beamlets and the per-segment data of the gradient."""
        x = np.zeros(len(self.beamlets))
        parts = []
        for k in range(self.segs.n_segments):
            i = int(self.segs.beam_of[k])
            dbeam = self._beam_with(i, k, leaves[k])
            rects, w, edges = dbeam.segment_fluence_edges(
                int(self.segs.seg_of[k]), self.params, model=self.model
            )
            lat = self.lattices[i]
            ox, oy = lat.overlaps(rects)
            grid = (oy * w[:, None]).T @ ox  # (rows, columns): fluence x area per cell
            column = grid[lat.cell_row, lat.cell_col] / lat.area
            x[self.slices[i]] += column * mu[k]
            parts.append((rects, w, edges, oy, column))
        return x, parts

    def _beam_with(self, i: int, k: int, leaves: np.ndarray) -> DeliverableBeam:
        dbeam = self.segs.dbeams[i]
        s = int(self.segs.seg_of[k])
        seg = dbeam.segments[s]
        if np.array_equal(seg.leaf_positions_mm, leaves):
            return dbeam
        new = replace(seg, leaf_positions_mm=leaves)
        return replace(dbeam, segments=dbeam.segments[:s] + (new,) + dbeam.segments[s + 1 :])

    def value(self, leaves, mu, objective: DoseObjective):
        x, parts = self.fluence(leaves, mu)
        dose = np.asarray(self.D @ x.astype(self.D.dtype), dtype=np.float64)
        self.n_evaluations += 1
        f, g = objective(dose)
        return f, g, x, parts

    def gradient(self, g_dose: np.ndarray, mu: np.ndarray, parts: list):
        """``(∂F/∂leaves per segment, ∂F/∂m)`` from ``∂F/∂d`` (one transposed product).

        An edge at ``e`` in column ``c`` moves the overlap with that column only (at rate
        +1 for a right edge, -1 for a left one: the derivative from the right where ``e``
        lies on a column boundary)."""
        h = np.asarray(self.DT @ g_dose.astype(self.DT.dtype), dtype=np.float64)
        g_leaves, g_mu = [], np.zeros(mu.size)
        grids = []
        for i, lat in enumerate(self.lattices):
            hb = h[self.slices[i]]
            grid = np.zeros((lat.row_lo.size, lat.col_lo.size))
            grid[lat.cell_row, lat.cell_col] = hb / lat.area
            grids.append((hb, grid))
        for k, (rects, w, edges, oy, column) in enumerate(parts):
            i = int(self.segs.beam_of[k])
            lat = self.lattices[i]
            hb, grid = grids[i]
            g_mu[k] = float(column @ hb)
            n_pairs = self.segs.free[k].shape[1]
            gl = np.zeros(2 * n_pairs)
            for col, sign in ((0, -1.0), (1, 1.0)):
                e = edges[:, col]
                sel = e >= 0
                c, inside = lat.column_of(rects[sel, col])
                t = sign * w[sel] * np.einsum("rn,nr->r", oy[sel], grid[:, c]) * inside
                np.add.at(gl, e[sel], t)
            g_leaves.append(gl.reshape(2, n_pairs) * mu[k])
        return g_leaves, g_mu


@check_arguments(
    influence=ARRAY,
    beamlets="dose_engine._beamlets:Beamlets",
    dbeams=sequence_of("rtplan.delivery._deliverable:DeliverableBeam"),
)
def refine_leaf_positions(
    influence,
    beamlets,
    dbeams: Sequence[DeliverableBeam],
    objective: DoseObjective,
    *,
    beam_indices: Sequence[int] | None = None,
    mlc_parameters: MLCParameters | None = None,
    model: BeamModel | None = None,
    max_iter: int = 40,
    rel_tol: float = 1e-4,
) -> LeafRefinementResult:
    """Refine the leaf positions and meterset of sequenced segments (module docstring).

    Parameters
    ----------
    influence : scipy.sparse matrix, shape (n_rows, n_beamlets), Gy/MU
        Influence matrix (or the rows of it the objective reads).
    beamlets : dose_engine.Beamlets
        Its beamlet table.
    dbeams : sequence of DeliverableBeam
        The sequenced beams with their meterset (total over all fractions, MU).
    objective : callable
        ``dose -> (value, gradient)`` on a dose vector over ``influence``'s rows (Gy),
        e.g. :func:`dose_fit_objective`.
    beam_indices : sequence of int, optional, keyword-only
        Beam index in ``beamlets`` of each deliverable beam (default ``0, 1, ...``).
    mlc_parameters : dose_engine.MLCParameters, optional, keyword-only
        Leaf and jaw parameters (default each beam's machine's); pass the final dose's.
    model : dose_engine.BeamModel, optional, keyword-only
        The final dose's beam model (head scatter of each aperture, as in
        :func:`segment_beamlet_matrix`).
    max_iter : int, keyword-only
        Gradient steps at most (≥ 0; 0 returns the segments unchanged).
    rel_tol : float, keyword-only
        Stop when three steps in a row lowered the objective by less than this fraction.

    Returns
    -------
    LeafRefinementResult

    Raises
    ------
    rtplan.errors.InputError
        Mismatched shapes, ``max_iter < 0``, an objective gradient of the wrong shape,
        beamlets of a beam that do not lie on one lattice.
    """
    import scipy.sparse as sp

    t0 = time.perf_counter()
    if int(max_iter) < 0:
        raise InputError(f"`max_iter` must be ≥ 0; got {max_iter!r}.")
    D = sp.csr_matrix(influence)
    if D.shape[1] != len(beamlets):
        raise InputError(
            f"`influence` has {D.shape[1]} columns but the beamlet table has {len(beamlets)} "
            "beamlets."
        )
    if beam_indices is None:
        beam_indices = range(len(dbeams))
    segs = _setup(dbeams, beamlets, beam_indices)
    m = _Model(D, beamlets, segs, beam_indices, mlc_parameters, model)
    leaves = [
        np.array(segs.dbeams[int(i)].segments[int(s)].leaf_positions_mm)
        for i, s in zip(segs.beam_of, segs.seg_of, strict=True)
    ]
    start_leaves = [a.copy() for a in leaves]
    mu = np.array(
        [
            segs.dbeams[int(i)].segments[int(s)].total_mu
            for i, s in zip(segs.beam_of, segs.seg_of, strict=True)
        ]
    )
    mu0 = mu.copy()
    sigma = max(MU_SCALE_FRACTION * float(mu.mean()) if mu.size else 1.0, 1e-9)
    f, g_dose, x, parts = m.value(leaves, mu, objective)
    if np.shape(g_dose) != (D.shape[0],):
        raise InputError(
            f"`objective` returned a gradient of shape {np.shape(g_dose)}; expected "
            f"({D.shape[0]},), one value per influence row."
        )
    f0 = f
    history: list[float] = []
    alpha = None
    prev = None  # (z, grad) of the last step, for the Barzilai-Borwein step length
    small = 0
    n_iter = 0
    message = "no step taken"
    for n_iter in range(1, int(max_iter) + 1):  # noqa: B007
        g_leaves, g_mu = m.gradient(g_dose, mu, parts)
        # scaled variables: leaves in mm, meterset in units of sigma MU
        g_l = [np.where(segs.free[k], g_leaves[k], 0.0) for k in range(segs.n_segments)]
        g_m = g_mu * sigma
        z_grad = np.concatenate([a.ravel() for a in g_l] + [g_m])
        z_now = np.concatenate([a.ravel() for a in leaves] + [mu / sigma])
        if alpha is None or prev is None:
            alpha = MAX_STEP_MM / max(float(np.max(np.abs(z_grad))), 1e-300)
        else:
            s_vec, y_vec = z_now - prev[0], z_grad - prev[1]
            sy = float(s_vec @ y_vec)
            alpha = float(s_vec @ s_vec) / sy if sy > 0 else 2.0 * alpha
        alpha = min(alpha, MAX_STEP_MM / max(float(np.max(np.abs(z_grad))), 1e-300))
        prev = (z_now, z_grad)
        accepted = False
        for _ in range(30):
            trial_leaves = [
                _project(
                    leaves[k] - alpha * g_l[k],
                    segs.free[k],
                    segs.lower[k],
                    segs.upper[k],
                    segs.min_gap[k],
                )
                if segs.free[k].any()
                else leaves[k]
                for k in range(segs.n_segments)
            ]
            trial_mu = np.maximum(mu - alpha * g_m * sigma, 0.0)
            if _valid(segs, trial_leaves):
                step = np.concatenate(
                    [(trial_leaves[k] - leaves[k]).ravel() for k in range(segs.n_segments)]
                    + [(trial_mu - mu) / sigma]
                )
                f_t, g_t, x_t, parts_t = m.value(trial_leaves, trial_mu, objective)
                if f_t <= f + ARMIJO * float(z_grad @ step):
                    accepted = True
                    break
            alpha *= 0.3
        if not accepted:
            message = f"stopped after {n_iter - 1} steps: no descent along the projected gradient"
            n_iter -= 1
            break
        decrease = (f - f_t) / max(abs(f), 1e-300)
        leaves, mu, f, g_dose, x, parts = trial_leaves, trial_mu, f_t, g_t, x_t, parts_t
        history.append(f)
        small = small + 1 if decrease < rel_tol else 0
        message = f"{n_iter} projected-gradient steps"
        if small >= 3:
            message += f" (relative decrease below {rel_tol:g} three times)"
            break
    else:
        message = f"{int(max_iter)} projected-gradient steps (the iteration limit)"
    beams = _refined_beams(segs, leaves, mu)
    moved = np.concatenate(
        [np.abs(leaves[k] - start_leaves[k])[segs.free[k]] for k in range(segs.n_segments)]
        or [np.zeros(0)]
    )
    travel = {
        "mean": float(moved.mean()) if moved.size else 0.0,
        "max": float(moved.max()) if moved.size else 0.0,
        "count": int(moved.size),
    }
    dt = time.perf_counter() - t0
    logger.info(
        "leaf refinement: objective %.6g -> %.6g (%s), MU %.5g -> %.5g, leaves moved %.2f mm "
        "on average (max %.2f) in %.1f s",
        f0,
        f,
        message,
        mu0.sum(),
        mu.sum(),
        travel["mean"],
        travel["max"],
        dt,
    )
    return LeafRefinementResult(
        beams=beams,
        objective_before=float(f0),
        objective_after=float(f),
        mu_before=float(mu0.sum()),
        mu_after=float(mu.sum()),
        leaf_travel_mm=travel,
        n_iterations=n_iter,
        n_evaluations=m.n_evaluations,
        message=message,
        solve_time_s=dt,
        beamlet_fluence_mu=x,
        history=tuple(history),
    )


def _valid(segs: _Segments, leaves: list[np.ndarray]) -> bool:
    """Whether every changed segment passes its machine's checks."""
    for k, pos in enumerate(leaves):
        dbeam = segs.dbeams[int(segs.beam_of[k])]
        seg = dbeam.segments[int(segs.seg_of[k])]
        if np.array_equal(pos, seg.leaf_positions_mm):
            continue
        try:
            replace(seg, leaf_positions_mm=pos).validate(dbeam.machine)
        except SegmentError:
            return False
    return True


def _refined_beams(segs: _Segments, leaves, mu) -> tuple[DeliverableBeam, ...]:
    """The beams with the refined segments; 0 MU segments (and empty beams) dropped."""
    out = []
    for i, dbeam in enumerate(segs.dbeams):
        new: list[Segment] = []
        for k in np.flatnonzero(segs.beam_of == i):
            if mu[k] > 1e-6 * max(float(mu.sum()), 1e-300):
                seg = dbeam.segments[int(segs.seg_of[k])]
                new.append(replace(seg, leaf_positions_mm=leaves[k], total_mu=float(mu[k])))
        if new and math.fsum(s.total_mu for s in new) > 0:
            out.append(replace(dbeam, segments=tuple(new)))
    return tuple(out)
