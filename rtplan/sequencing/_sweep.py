"""Step-and-shoot leaf sequencing of fluence maps by a synchronised unidirectional sweep.

Algorithm
---------
1. **Leaf-pair units.**  Fluence-map rows (along BLD +y) are grouped with the leaf pairs that
   cover them into *units*: the connected groups of rows and leaf pairs that overlap.  When
   the beamlet rows coincide with the leaves (5 mm beamlets under 5 mm leaves) every unit is
   one row and one pair.  When a leaf is wider than the rows (Varian's 10 mm outer leaves
   over 5 mm rows) the rows under it form one unit and receive their height-weighted mean
   fluence: this is the approximation the MLC forces (one leaf cannot modulate two rows).
   When leaves are narrower than the rows, several pairs move together.
2. **Quantisation.**  ``level_mu = max(fluence) / n_levels``; unit fluence is rounded to
   integer levels ``L``.
3. **Sweep** (Bortfeld et al. 1994; Spirou & Chui 1994; Xia & Verhey 1998).  In each unit the
   leaves move left to right (+x).  Column ``j`` is uncovered by the leading bank-B leaf at
   ``tB_j = Σ_{k ≤ j} max(L_{k-1} − L_k, 0)`` and covered by the trailing bank-A leaf at
   ``tA_j = Σ_{k ≤ j} max(L_k − L_{k-1}, 0)`` (level units of time), so it receives
   ``tA_j − tB_j = L_j`` exactly, and the unit needs ``Σ max(ΔL, 0)`` levels: the minimum for
   that row (Bortfeld's bound).  The beam then needs ``max`` over units of that — optimal
   total MU when leaves may interdigitate.
4. **Interdigitation** (machines that forbid it).  Leaf A of unit ``i`` may not pass leaf B of
   an adjacent unit ``k``: ``a_i(t) ≤ b_k(t)`` for all ``t``, which holds iff
   ``tA_i,j + d_i,j ≥ tB_k,j + d_k,j`` for every column.  Both leaves of a unit are delayed
   by the same non-decreasing ``d_i,j ≥ 0`` (fluence unchanged); the least such delays are
   the least solution of this system of difference constraints, found by fixed-point
   iteration (no positive cycles: a round trip between ``i`` and ``k`` sums to
   ``−L_i,j − L_k,j ≤ 0``).  Kamath et al. 2003 prove this synchronisation gives the least
   total MU among unidirectional schedules under the constraint.
5. **Engel's decomposition** (``method="engel"``, the default when no inter-leaf constraint
   can bind: interdigitation allowed and the map narrower than the carriage limit) reaches
   the same minimum MU with fewer segments; see :mod:`rtplan.sequencing._engel`.
6. **Segments.**  Between consecutive event times the aperture is constant; each distinct
   aperture becomes one :class:`~rtplan.Segment` whose MU is the number of levels it is open
   times ``level_mu``.  Identical apertures are merged (their order does not matter in
   step-and-shoot).  Closed pairs: on machines with X jaws and interdigitation they are
   parked with their gap under the X1 jaw; otherwise they sit closed at the sweep position
   (gap = the minimum leaf gap centred on it), which keeps the interdigitation constraint.
   Jaws are fitted to the open leaves of each segment (``jaw_fitting="segment"``) or of the
   whole beam (``"beam"``) and clipped to their range.

The delivered fluence equals the quantised fluence exactly (every segment opens whole
beamlet cells); :func:`fluence_from_segments` rebuilds it from the segment geometry.

References
----------
.. [1] T. Bortfeld, D. Kahler, T. Waldron, A. Boyer, "X-ray field compensation with
   multileaf collimators", Int J Radiat Oncol Biol Phys 28:723–730 (1994),
   doi:10.1016/0360-3016(94)90200-3.
.. [2] P. Xia, L. Verhey, "Multileaf collimator leaf sequencing algorithm for intensity
   modulated beams with multiple static segments", Med Phys 25:1424–1434 (1998),
   doi:10.1118/1.598315.
.. [3] S. Kamath, S. Sahni, J. Li, J. Palta, S. Ranka, "Leaf sequencing algorithms for
   segmented multileaf collimation", Phys Med Biol 48:307–324 (2003),
   doi:10.1088/0031-9155/48/3/303.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._internal.arguments import ARRAY, check_arguments, sequence_of
from ..delivery._deliverable import DeliverableBeam, Segment
from ..delivery._machine import Machine
from ..errors import InputError, SequencingError
from ._engel import engel_decomposition

if TYPE_CHECKING:  # pragma: no cover
    from dose_engine import Beam

__all__ = [
    "SequencingError",
    "SequencingResult",
    "fluence_from_segments",
    "leaf_units",
    "sequence_fluence",
    "sweep_levels",
]

logger = logging.getLogger("rtplan.sequencing")

_TOL = 1e-6
JAW_FITTINGS = ("segment", "beam")
METHODS = ("auto", "engel", "sweep")


@dataclass(frozen=True, eq=False)
class SequencingResult:
    """Segments of one beam and the quantised fluence they deliver.

    Attributes
    ----------
    segments : tuple of Segment
        Apertures with their meterset (``total_mu``: MU summed over all fractions when the
        input fluence is total MU per beamlet).
    segment_levels : (n_segments,) ndarray of int64
        Meterset of each segment in quantisation levels (``total_mu = levels * level_mu``).
    level_mu : float, MU
        One quantisation level.
    levels : (n_rows, n_cols) ndarray of int64
        Quantised fluence in levels on the input map (rows sharing a leaf carry the unit's
        level).
    quantized_fluence_mu : (n_rows, n_cols) ndarray of float
        ``levels * level_mu``: what the segments deliver, MU.
    min_total_levels : int
        Lower bound on the total levels of any unidirectional decomposition (max over units
        of the sum of positive increments, Bortfeld 1994).  Equal to ``sum(segment_levels)``
        unless the interdigitation or carriage (``max_leaf_travel_mm``) constraint binds.
    x_edges_mm, y_edges_mm : ndarray of float, mm
        Column and row edges of the fluence map (BLD).
    """

    segments: tuple[Segment, ...]
    segment_levels: np.ndarray
    level_mu: float
    levels: np.ndarray
    quantized_fluence_mu: np.ndarray
    min_total_levels: int
    x_edges_mm: np.ndarray
    y_edges_mm: np.ndarray

    def __repr__(self) -> str:
        return (
            f"SequencingResult(n_segments={self.n_segments}, total_mu={self.total_mu:.4g}, "
            f"level_mu={self.level_mu:.4g}, total_levels={int(self.segment_levels.sum())}, "
            f"min_total_levels={self.min_total_levels})"
        )

    @property
    def n_segments(self) -> int:
        """Number of segments."""
        return len(self.segments)

    @property
    def total_mu(self) -> float:
        """Sum of the segments' meterset, MU."""
        return float(sum(s.total_mu for s in self.segments))

    def to_beam(self, number: int, name: str, beam: Beam, machine: Machine) -> DeliverableBeam:
        """Wrap the segments as a :class:`~rtplan.DeliverableBeam`."""
        return DeliverableBeam(
            number=number, name=name, beam=beam, machine=machine, segments=self.segments
        )


# ------------------------------------------------------------------------ geometry helpers
def _edges(name: str, edges) -> np.ndarray:
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise SequencingError(
            f"`{name}` must be a 1-D strictly increasing array of ≥ 2 finite edges (mm); got "
            f"{np.asarray(edges)!r}."
        )
    return e


@check_arguments(y_edges_mm=ARRAY, leaf_boundaries_mm=ARRAY)
def leaf_units(y_edges_mm, leaf_boundaries_mm) -> tuple[np.ndarray, np.ndarray]:
    """Group fluence-map rows and the leaf pairs that cover them into units.

    Parameters
    ----------
    y_edges_mm : (n_rows + 1,) array of float, mm
        Row edges of the fluence map along BLD +y.
    leaf_boundaries_mm : (n_pairs + 1,) array of float, mm

    Returns
    -------
    row_unit : (n_rows,) ndarray of int
        Unit of each row.
    pair_unit : (n_pairs,) ndarray of int
        Unit of each leaf pair, −1 for pairs that cover no row.

    Raises
    ------
    SequencingError
        Some row lies (partly) outside the MLC.
    """
    ye = _edges("y_edges_mm", y_edges_mm)
    lb = np.asarray(leaf_boundaries_mm, dtype=float)
    if ye[0] < lb[0] - _TOL or ye[-1] > lb[-1] + _TOL:
        raise SequencingError(
            f"The fluence map spans y = [{ye[0]:g}, {ye[-1]:g}] mm but the MLC covers only "
            f"[{lb[0]:g}, {lb[-1]:g}] mm; shrink the beamlet grid or use another machine."
        )
    n_rows, n_pairs = ye.size - 1, lb.size - 1
    # overlap[p, r]: leaf pair p and row r share a y-interval of positive length.
    lo = np.maximum(lb[:-1, None], ye[None, :-1])
    hi = np.minimum(lb[1:, None], ye[None, 1:])
    overlap = (hi - lo) > _TOL
    # Rows and pairs are intervals on one axis, so the connected groups are runs of rows:
    # row r starts a new unit unless some leaf pair overlaps both r - 1 and r.
    row_unit = np.empty(n_rows, dtype=int)
    unit = -1
    for r in range(n_rows):
        if r == 0 or not np.any(overlap[:, r] & overlap[:, r - 1]):
            unit += 1
        row_unit[r] = unit
    pair_unit = np.full(n_pairs, -1, dtype=int)
    for p in range(n_pairs):
        rows = np.flatnonzero(overlap[p])
        if rows.size:
            pair_unit[p] = row_unit[rows[0]]
    return row_unit, pair_unit


@check_arguments(
    segments=sequence_of("rtplan.delivery._deliverable:Segment"), x_edges_mm=ARRAY, y_edges_mm=ARRAY
)
def fluence_from_segments(segments, x_edges_mm, y_edges_mm, *, closed_gap_mm: float = 0.0):
    """Rebuild a fluence map from segment geometry: Σ MU × open fraction of each cell.

    Parameters
    ----------
    segments : iterable of Segment
    x_edges_mm, y_edges_mm : 1-D arrays of float, mm
        Cell edges of the map (BLD x along columns, y along rows).
    closed_gap_mm : float, keyword-only
        Passed to :meth:`Segment.open_rectangles_mm`.

    Returns
    -------
    (n_rows, n_cols) ndarray of float, MU
    """
    xe = _edges("x_edges_mm", x_edges_mm)
    ye = _edges("y_edges_mm", y_edges_mm)
    cell_area = np.outer(np.diff(ye), np.diff(xe))
    out = np.zeros(cell_area.shape)
    for seg in segments:
        r = seg.open_rectangles_mm(closed_gap_mm=closed_gap_mm)
        if r.size == 0:
            continue
        ox = np.clip(
            np.minimum(r[:, 1:2], xe[None, 1:]) - np.maximum(r[:, 0:1], xe[None, :-1]), 0, None
        )
        oy = np.clip(
            np.minimum(r[:, 3:4], ye[None, 1:]) - np.maximum(r[:, 2:3], ye[None, :-1]), 0, None
        )
        out += seg.total_mu * (oy.T @ ox)
    return out / cell_area


# ------------------------------------------------------------------------ the sweep
def sweep_levels(
    levels,
    *,
    interdigitation: bool = True,
    max_span_columns: int | None = None,
    max_iter: int | None = None,
):
    """Leaf timings of the unidirectional sweep for an integer level map.

    Parameters
    ----------
    levels : (n_units, n_cols) array of int
        Non-negative integer intensity levels; row ``i`` is leaf-pair unit ``i`` (ordered along
        +y), column ``j`` the cell ``[x_j, x_{j+1})``.
    interdigitation : bool, keyword-only
        If false, delay leaves so that no bank-A leaf passes the bank-B leaf of an adjacent
        unit (see the module docstring).
    max_span_columns : int, optional, keyword-only
        Carriage limit in columns: at any time the leaves of one bank stay within this many
        columns of each other (``a_i(t) − a_k(t) ≤ s`` for all units; same for bank B), and
        ``b_i(t) − a_k(t) ≤ 2 s`` so that closed pairs can sit within both banks' spans.
        Leaves ahead of the slowest one wait: ``t_{i,j+s} ≥ t_{k,j}`` for every pair of units.
    max_iter : int, optional, keyword-only
        Bound on the fixed-point iterations (default ``4 * (n_units + n_cols) + 10``).

    Returns
    -------
    t_open : (n_units, n_cols) ndarray of int64
        Time (levels) at which leaf B uncovers each cell.
    t_close : (n_units, n_cols) ndarray of int64
        Time at which leaf A covers it; ``t_close − t_open == levels``; both non-decreasing
        along each row.

    Notes
    -----
    Both constraints are difference constraints on the per-cell delays ``d`` (added to both
    leaves, so the fluence is unchanged): interdigitation links cells of one column, the
    carriage limit links column ``j`` to column ``j + s`` (forward only), and ``d`` is
    non-decreasing along a row.  No cycle has positive weight, so the least delays exist
    and the fixed-point iteration below reaches them.
    """
    L = np.asarray(levels)
    if L.ndim != 2:
        raise SequencingError(f"`levels` must be 2-D (units, columns); got shape {L.shape}.")
    L = L.astype(np.int64)
    if np.any(L < 0):
        raise SequencingError("`levels` must be non-negative.")
    d = np.diff(L, axis=1, prepend=0)
    t_close = np.cumsum(np.maximum(d, 0), axis=1)
    t_open = np.cumsum(np.maximum(-d, 0), axis=1)
    n_units, n_cols = L.shape
    span = None
    if max_span_columns is not None:
        span = int(max_span_columns)
        if span < 1:
            raise SequencingError(
                f"`max_span_columns` must be ≥ 1; got {max_span_columns!r} (the maximum leaf "
                "travel is smaller than one beamlet)."
            )
        if span >= n_cols:
            span = None
    tie_rows = not interdigitation and n_units > 1
    if not tie_rows and span is None:
        return t_open, t_close
    delay = np.zeros_like(L)
    n_iter = max_iter if max_iter is not None else 4 * (n_units + n_cols) + 10
    for _ in range(n_iter):
        bo = t_open + delay
        bc = t_close + delay
        need = np.zeros_like(L)
        if tie_rows:
            need[:-1] = np.maximum(need[:-1], bo[1:] - bc[:-1])  # unit i vs unit i+1's leaf B
            need[1:] = np.maximum(need[1:], bo[:-1] - bc[1:])  # unit i vs unit i-1's leaf B
        if span is not None:
            # cell j + s of any unit may be passed only after every unit passed cell j
            need[:, span:] = np.maximum(need[:, span:], bc.max(axis=0)[None, :-span] - bc[:, span:])
            need[:, span:] = np.maximum(need[:, span:], bo.max(axis=0)[None, :-span] - bo[:, span:])
            # leaves closed outside the map must fit within both banks' spans:
            # b_i(t) - a_k(t) <= 2 s for all units i, k
            if 2 * span < n_cols:
                need[:, 2 * span :] = np.maximum(
                    need[:, 2 * span :], bc.max(axis=0)[None, : -2 * span] - bo[:, 2 * span :]
                )
        new = np.maximum.accumulate(np.maximum(delay, delay + need), axis=1)
        if np.array_equal(new, delay):
            break
        delay = new
    else:  # pragma: no cover - the constraint system has no positive cycle
        raise SequencingError("Leaf synchronisation did not converge.")
    return t_open + delay, t_close + delay


@check_arguments(
    fluence_mu=ARRAY, machine="rtplan.delivery._machine:Machine", x_edges_mm=ARRAY, y_edges_mm=ARRAY
)
def sequence_fluence(
    fluence_mu,
    machine: Machine,
    *,
    x_edges_mm,
    y_edges_mm,
    n_levels: int = 10,
    level_mu: float | None = None,
    jaw_fitting: str = "segment",
    interdigitation: bool | None = None,
    method: str = "auto",
) -> SequencingResult:
    """Decompose one beam's fluence map into step-and-shoot MLC segments.

    Parameters
    ----------
    fluence_mu : (n_rows, n_cols) array of float, MU
        Fluence map (MU per beamlet, e.g. total over all fractions); rows along BLD +y
        (leaf pairs), columns along +x.  Non-negative.
    machine : Machine
    x_edges_mm : (n_cols + 1,) array of float, mm, keyword-only
        Column edges along BLD x (isocentre plane).
    y_edges_mm : (n_rows + 1,) array of float, mm, keyword-only
        Row edges along BLD y.
    n_levels : int, keyword-only
        Number of intensity levels from 0 to the map maximum (default 10).
    level_mu : float, optional, keyword-only
        Size of one level in MU; overrides ``n_levels`` (use the same value for all beams to
        quantise a plan uniformly).
    jaw_fitting : {"segment", "beam"}, keyword-only
        Fit the jaws to each segment's open leaves, or to the beam's.
    interdigitation : bool, optional, keyword-only
        Override the MLC's ``interdigitation`` flag (``False`` imposes the constraint).
    method : {"auto", "engel", "sweep"}, keyword-only
        ``"engel"``: Engel's decomposition (minimum MU, fewer segments; only without
        inter-leaf constraints); ``"sweep"``: the synchronised sweep (minimum MU without
        constraints, handles interdigitation and carriage limits); ``"auto"`` (default):
        Engel when no constraint can bind, else the sweep.

    Returns
    -------
    SequencingResult

    Raises
    ------
    SequencingError
        Bad shapes or values; map outside the MLC or leaf range; a segment that breaks the
        machine's limits (e.g. a map wider than ``max_leaf_travel_mm``: split the field).
    """
    if jaw_fitting not in JAW_FITTINGS:
        raise SequencingError(f"`jaw_fitting` must be one of {JAW_FITTINGS}; got {jaw_fitting!r}.")
    if method not in METHODS:
        raise SequencingError(f"`method` must be one of {METHODS}; got {method!r}.")
    f = np.asarray(fluence_mu, dtype=float)
    if f.ndim != 2 or f.size == 0:
        raise SequencingError(
            f"`fluence_mu` must be a non-empty 2-D map (rows along +y, columns along +x); got "
            f"shape {f.shape}."
        )
    if not np.all(np.isfinite(f)) or np.any(f < 0):
        raise SequencingError(
            f"`fluence_mu` must be finite and ≥ 0 MU; found min {np.nanmin(f):g} and "
            f"{int(np.sum(~np.isfinite(f)))} non-finite values."
        )
    xe = _edges("x_edges_mm", x_edges_mm)
    ye = _edges("y_edges_mm", y_edges_mm)
    if xe.size != f.shape[1] + 1 or ye.size != f.shape[0] + 1:
        raise SequencingError(
            f"`fluence_mu` has shape {f.shape} but got {ye.size} y edges and {xe.size} x edges; "
            "expected n_rows + 1 and n_cols + 1."
        )
    mlc = machine.mlc
    interdig = mlc.interdigitation if interdigitation is None else bool(interdigitation)
    g = mlc.min_leaf_gap_mm
    lim = mlc.bank_limits_mm()
    x_lo, x_hi = max(lim[0, 0], lim[1, 0]) + g / 2, min(lim[0, 1], lim[1, 1]) - g / 2
    if xe[0] < x_lo - _TOL or xe[-1] > x_hi + _TOL:
        raise SequencingError(
            f"The fluence map spans x = [{xe[0]:g}, {xe[-1]:g}] mm but both leaf banks of MLC "
            f"{mlc.name!r} reach only [{x_lo:g}, {x_hi:g}] mm (leaf range and over-travel); "
            "shrink the beamlet grid or split the field."
        )
    if n_levels < 1 or int(n_levels) != n_levels:
        raise SequencingError(f"`n_levels` must be an integer ≥ 1; got {n_levels!r}.")

    # -- units and quantisation
    row_unit, pair_unit = leaf_units(ye, mlc.leaf_boundaries_mm)
    n_units = int(row_unit.max()) + 1
    lb = mlc.leaf_boundaries_mm
    unit_lo = np.array([lb[np.flatnonzero(pair_unit == u)[0]] for u in range(n_units)])
    unit_hi = np.array([lb[np.flatnonzero(pair_unit == u)[-1] + 1] for u in range(n_units)])
    heights = np.diff(ye)
    unit_f = np.zeros((n_units, f.shape[1]))
    np.add.at(unit_f, row_unit, f * heights[:, None])
    unit_f /= (unit_hi - unit_lo)[:, None]
    fmax = float(unit_f.max())
    if level_mu is None:
        level_mu = fmax / n_levels if fmax > 0 else 1.0
    level_mu = float(level_mu)
    if not (level_mu > 0 and math.isfinite(level_mu)):
        raise SequencingError(f"`level_mu` must be > 0; got {level_mu!r}.")
    L = np.rint(unit_f / level_mu).astype(np.int64)
    levels_rows = L[row_unit]
    d = np.diff(L, axis=1, prepend=0)
    min_total = int(np.maximum(d, 0).sum(axis=1).max()) if L.size else 0

    # -- decomposition
    span_cols = None
    if math.isfinite(mlc.max_leaf_travel_mm):
        # closed pairs sit g/2 beyond the sweep position: keep the spread <= the limit
        span_cols = int(math.floor((mlc.max_leaf_travel_mm - g / 2) / np.diff(xe).max() + 1e-9))
    unconstrained = interdig and (span_cols is None or f.shape[1] <= span_cols)
    if method == "auto":
        method = "engel" if unconstrained else "sweep"
    if method == "engel" and not unconstrained:
        raise SequencingError(
            f"method='engel' ignores inter-leaf constraints, but MLC {mlc.name!r} forbids "
            "interdigitation or its carriage limit is narrower than the map; use "
            "method='sweep' (or 'auto')."
        )
    if method == "engel":
        intervals, seg_w = engel_decomposition(L)
        a = (
            np.stack([iv[:, 0] for iv in intervals], axis=1)
            if intervals
            else np.zeros((n_units, 0), np.int64)
        )
        b = np.stack([iv[:, 1] for iv in intervals], axis=1) if intervals else a
        is_open = a < b
        # closed units: any column will do (no constraint binds); take the nearest open
        # unit's leaf A column to keep the banks compact.
        for k in range(a.shape[1]):
            rows_open = np.flatnonzero(is_open[:, k])
            nearest = rows_open[
                np.abs(np.arange(n_units)[:, None] - rows_open[None, :]).argmin(axis=1)
            ]
            a[~is_open[:, k], k] = b[~is_open[:, k], k] = a[nearest[~is_open[:, k]], k]
        seg_w = [int(w) for w in seg_w]
    else:
        t_open, t_close = sweep_levels(L, interdigitation=interdig, max_span_columns=span_cols)
        events = np.unique(np.concatenate([t_open.ravel(), t_close.ravel(), [0]]))
        starts, weights = events[:-1], np.diff(events)
        # a[u, k] / b[u, k]: column index of leaf A / B of unit u during interval k.
        a_t = np.stack([np.searchsorted(t_close[u], starts, side="right") for u in range(n_units)])
        b_t = np.stack([np.searchsorted(t_open[u], starts, side="right") for u in range(n_units)])
        open_t = a_t < b_t
        apertures: dict[bytes, int] = {}
        order: list[int] = []
        seg_w = []
        for k in range(starts.size):
            if not open_t[:, k].any():
                continue
            key = (
                np.where(open_t[:, k], a_t[:, k], -1).tobytes()
                + np.where(open_t[:, k], b_t[:, k], -1).tobytes()
            )
            if key in apertures:
                seg_w[apertures[key]] += int(weights[k])
            else:
                apertures[key] = len(order)
                order.append(k)
                seg_w.append(int(weights[k]))
        a, b, is_open = a_t[:, order], b_t[:, order], open_t[:, order]
    # merge identical apertures (order does not matter in step-and-shoot)
    keys: dict[bytes, int] = {}
    order = []
    merged_w: list[int] = []
    for k in range(len(seg_w)):
        key = (
            np.where(is_open[:, k], a[:, k], -1).tobytes()
            + np.where(is_open[:, k], b[:, k], -1).tobytes()
        )
        if key in keys:
            merged_w[keys[key]] += seg_w[k]
        else:
            keys[key] = len(order)
            order.append(k)
            merged_w.append(seg_w[k])
    seg_w = merged_w

    # -- geometry of each segment
    first_pair = int(np.flatnonzero(pair_unit >= 0)[0])
    last_pair = int(np.flatnonzero(pair_unit >= 0)[-1])
    nearest_unit = pair_unit.copy()
    nearest_unit[:first_pair] = pair_unit[first_pair]
    nearest_unit[last_pair + 1 :] = pair_unit[last_pair]
    park_under_x_jaw = machine.has_x_jaws and interdig

    in_map = pair_unit >= 0
    span = span_cols if span_cols is not None else xe.size

    def aperture_geometry(k):
        au, bu, ou = a[:, k], b[:, k], is_open[:, k]
        # Pairs beyond the map (behind the Y jaws) close at a column p within the carriage
        # span of both banks and, without interdigitation, between the leaves of the
        # adjacent unit.
        p_out = np.empty(2, dtype=int)
        for side, u in enumerate((0, n_units - 1)):
            lo, hi = int(bu.max()) - span, int(au.min()) + span
            if not interdig:
                lo, hi = max(lo, int(au[u])), min(hi, int(bu[u]))
            p_out[side] = int(np.clip(au[u], lo, hi)) if lo <= hi else int(au[u])
        p = au[nearest_unit].copy()
        p[:first_pair] = p_out[0]
        p[last_pair + 1 :] = p_out[1]
        A = xe[p] - g / 2
        B = xe[p] + g / 2
        open_pair = in_map & ou[nearest_unit]
        A[open_pair] = xe[au[nearest_unit[open_pair]]]
        B[open_pair] = xe[bu[nearest_unit[open_pair]]]
        return A, B, open_pair

    geoms = [aperture_geometry(k) for k in order]
    if jaw_fitting == "beam" and geoms:
        allA = np.concatenate([A[o] for A, B, o in geoms])
        allB = np.concatenate([B[o] for A, B, o in geoms])
        ys = np.concatenate([np.flatnonzero(o) for A, B, o in geoms])
        beam_x = (float(allA.min()), float(allB.max()))
        beam_y = (float(lb[ys.min()]), float(lb[ys.max() + 1]))
    segments = []
    for (A, B, o), w in zip(geoms, seg_w, strict=True):
        if jaw_fitting == "beam":
            jx, jy = beam_x, beam_y
        else:
            rows = np.flatnonzero(o)
            jx = (float(A[o].min()), float(B[o].max()))
            jy = (float(lb[rows.min()]), float(lb[rows.max() + 1]))
        jaws = {}
        if machine.has_x_jaws:
            jaws["X"] = machine.jaws["X"].clip(*jx)
        if machine.has_y_jaws:
            jaws["Y"] = machine.jaws["Y"].clip(*jy)
        seg = Segment(np.stack([A, B]), jaws, w * level_mu, lb)
        if park_under_x_jaw and not o.all():
            # hide closed gaps under jaw X1 unless that breaks the carriage limit
            x1 = jaws["X"][0]
            Ap, Bp = A.copy(), B.copy()
            Ap[~o] = max(x1 - g, lim[0, 0])
            Bp[~o] = Ap[~o] + g
            parked = Segment(np.stack([Ap, Bp]), jaws, w * level_mu, lb)
            try:
                parked.validate(machine)
                seg = parked
            except InputError:
                pass
        try:
            seg.validate(machine)
        except InputError as exc:
            raise SequencingError(
                f"Sequencing for machine {machine.name!r} produced an undeliverable segment: {exc}"
            ) from None
        segments.append(seg)
    seg_levels = np.asarray(seg_w, dtype=np.int64)
    logger.info(
        "sequenced %d x %d map into %d segments, %d levels (bound %d), level %.4g MU",
        f.shape[0],
        f.shape[1],
        len(segments),
        int(seg_levels.sum()),
        min_total,
        level_mu,
    )
    return SequencingResult(
        segments=tuple(segments),
        segment_levels=seg_levels,
        level_mu=level_mu,
        levels=levels_rows,
        quantized_fluence_mu=levels_rows * level_mu,
        min_total_levels=min_total,
        x_edges_mm=xe,
        y_edges_mm=ye,
    )
