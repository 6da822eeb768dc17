"""The problem container: influence matrix, voxel index sets, terms, validated once."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from array_api_compat import array_namespace

from ._compress import CompressedMatrix, Compression, compress_matrix
from ._meterset import MetersetDose
from ._surrogates import first_order_surrogate
from ._terms import CvxpyTerm, Term, _LevelBound
from .errors import InvalidProblemError

__all__ = ["Problem"]

logger = logging.getLogger("rtplan.optimizers")

#: Smallest scale of a lexicographic level bound, per unit of the level's total weight
#: (objective units: for a quadratic dose term, the objective of a 0.1 Gy RMS deviation).
#: It keeps a level whose optimum is 0 from being judged relative to nothing.
LEVEL_SCALE_FLOOR = 1e-2


def constraint_scale(term: Term) -> float:
    """Scale ``s_k`` of a hard constraint: its violations are reported as fractions of it.

    Parameters
    ----------
    term : Term
        A hard term.

    Returns
    -------
    float
        ``max(|bound|, 1 Gy)`` for dose constraints (Gy); for a lexicographic level bound
        ``max(|bound|, LEVEL_SCALE_FLOOR * sum_k |w_k|)`` in the level objective's units,
        so that a 245 % overshoot of a 1e-3 bound reads 2.45, not 0.0025.
    """
    if isinstance(term, _LevelBound):
        total_weight = sum(abs(t.weight) for t in term.terms)
        return max(abs(term.bound), LEVEL_SCALE_FLOOR * total_weight, 1e-300)
    return max(abs(term.threshold()), 1.0)


#: Rows of the union matrix with at least this fraction of non-zero entries are multiplied
#: as one dense block (BLAS, 4 bytes per entry, multi-threaded) instead of CSR (8 bytes per
#: non-zero, one thread in scipy). Target and organ rows of a pencil-beam matrix are nearly
#: full: on the TG-119 head & neck PTV rows (14,688 x 7,548, 97 % filled, float32) a forward
#: product takes 14 ms dense against 59 ms CSR on 2 cores.
DENSE_ROW_FRACTION = 0.5


#: A problem whose rows hold at least this fraction of the matrix's non-zeros works on the
#: whole matrix instead of a row-sliced copy: at most a third more work per product, and no
#: second copy of a patient-sized matrix (a thorax's lungs alone hold 76 % of its 1 GB).
FULL_MATRIX_NNZ_FRACTION = 0.75


@dataclass(frozen=True)
class RowBlocks:
    """The union matrix split by row density, for the first-order solver's products.

    Attributes
    ----------
    dense_pos : (k,) ndarray of int64
        Positions (in the union rows) of the rows held in ``dense``.
    dense : (k, n_beamlets) ndarray or None
        Those rows as a C-contiguous array, Gy per MU (``None`` when no row is dense
        enough).
    sparse_pos : (n_u - k,) ndarray of int64
        Positions of the other rows.
    sparse : scipy.sparse.csr_matrix, shape (n_u - k, n_beamlets)
        The other rows (the union matrix itself when ``dense`` is ``None``).
    """

    dense_pos: np.ndarray
    dense: np.ndarray | None
    sparse_pos: np.ndarray
    sparse: Any

    @classmethod
    def split(cls, a_u: Any) -> RowBlocks:
        """Split a CSR matrix at :data:`DENSE_ROW_FRACTION` of non-zeros per row."""
        n_u, n_cols = a_u.shape
        is_dense = np.diff(a_u.indptr) >= DENSE_ROW_FRACTION * max(n_cols, 1)
        if not is_dense.any():
            return cls(np.zeros(0, np.int64), None, np.arange(n_u, dtype=np.int64), a_u)
        dense_pos = np.flatnonzero(is_dense)
        sparse_pos = np.flatnonzero(~is_dense)
        return cls(dense_pos, a_u[dense_pos].toarray(), sparse_pos, a_u[sparse_pos])


#: The key of :class:`_MatrixCache`'s row blocks of the whole matrix (any structures).
_WHOLE_MATRIX = frozenset({None})


class _MatrixCache:
    """Row-sliced influence matrices shared by every problem built on the same data."""

    def __init__(self, matrix: Any, dtype: Any = np.float64) -> None:
        self.matrix = matrix
        self.dtype = np.dtype(dtype)
        self._by_key: dict[frozenset, tuple] = {}
        self._blocks: dict[frozenset, RowBlocks] = {}
        self._compressed: dict[tuple, CompressedMatrix] = {}

    def union(self, structures: Mapping[str, np.ndarray], names: frozenset) -> tuple:
        if names not in self._by_key:
            if names:
                rows = np.unique(np.concatenate([structures[n] for n in sorted(names)]))
            else:
                rows = np.zeros(0, dtype=np.int64)
            if rows.size == self.matrix.shape[0] or self._most_entries(rows):
                rows = np.arange(self.matrix.shape[0], dtype=np.int64)
                a_u = self.matrix  # every row, or nearly every entry: no copy
            else:
                a_u = self.matrix[rows] if rows.size else self.matrix[:0]
            # float64 copy of the touched rows by default: float32 products are noisier in
            # the sufficient-decrease tests; float32 halves the bytes of bandwidth-bound
            # products on big matrices (``matrix_dtype``)
            a_u = a_u.tocsr().astype(self.dtype, copy=False)
            if not a_u.has_sorted_indices:
                a_u = a_u.copy()  # the caller's matrix is not changed
                a_u.sort_indices()
            if a_u is not self.matrix:
                self._drop_row_copies()
            self._by_key[names] = (rows, a_u)
        return self._by_key[names]

    def _most_entries(self, rows: np.ndarray) -> bool:
        """Whether ``rows`` hold :data:`FULL_MATRIX_NNZ_FRACTION` of the matrix's entries
        and the matrix already has the working dtype (products on every row then cost
        little more than a copy of those rows would save)."""
        m = self.matrix
        if not sp.issparse(m) or m.dtype != self.dtype or not m.nnz:
            return False
        counts = np.diff(m.indptr)
        return int(counts[rows].sum()) >= FULL_MATRIX_NNZ_FRACTION * m.nnz

    def _drop_row_copies(self) -> None:
        """Forget the row-sliced copies made so far (and their row blocks).

        Lexicographic levels build their problems one after another, and each level's rows
        can hold most of the matrix (a thorax's lungs: 1 GB), so the cache keeps only the
        latest copy; a problem still in use keeps its own reference.
        """
        for key in [k for k, (_, a_u) in self._by_key.items() if a_u is not self.matrix]:
            del self._by_key[key]
            self._blocks.pop(key, None)
            for compressed_key in [c for c in self._compressed if c[0] == key]:
                del self._compressed[compressed_key]

    def compressed(self, names: frozenset, a_u: Any, settings: Compression) -> CompressedMatrix:
        """The union matrix ``a_u`` of ``names`` compressed with ``settings`` (built once,
        then shared while ``names`` is cached)."""
        key = (names, settings)
        if key not in self._compressed:
            compressed = compress_matrix(a_u, settings)
            if names not in self._by_key:  # dropped for a later level's rows: do not keep it
                return compressed
            self._compressed[key] = compressed
        return self._compressed[key]

    def row_blocks(self, names: frozenset, a_u: Any) -> RowBlocks:
        """The union matrix ``a_u`` of ``names`` split by row density (built once, then
        shared while ``names`` is cached).  Every set of names whose union is the whole
        matrix shares one split: lexicographic levels on other structures but the same
        rows (a thorax's levels all work on the whole matrix) split it once and hold one
        dense block, not one per level (thorax: 1.1 CPU s and 291 MB per level)."""
        key = _WHOLE_MATRIX if a_u is self.matrix else names
        if key not in self._blocks:
            blocks = RowBlocks.split(a_u)
            if names not in self._by_key:  # dropped for a later level's rows: do not keep it
                return blocks
            self._blocks[key] = blocks
        return self._blocks[key]


def structures_read(term: Term) -> tuple[str, ...]:
    """Names of the structures whose doses ``term`` reads (none for a fluence term)."""
    if isinstance(term, CvxpyTerm):  # several structures and the fluence
        return term.structures
    return () if term.acts_on == "fluence" else (structure_of(term),)


def structure_of(term: Term) -> str:
    """The structure name of a dose term (InvalidProblemError for a fluence term)."""
    if term.structure is None:
        raise InvalidProblemError(f"{term.label} acts on the fluence: it has no structure.")
    return term.structure


def require_problem(problem: Any, name: str = "problem") -> None:
    """Raise TypeError naming ``name`` unless ``problem`` is a :class:`Problem`."""
    if not isinstance(problem, Problem):
        raise TypeError(
            f"`{name}` must be an optimizers.Problem; got {type(problem).__name__} "
            f"{repr(problem)[:80]}."
        )


def _as_csr(matrix: Any) -> Any:
    if sp.issparse(matrix):
        if matrix.ndim != 2:
            raise InvalidProblemError(f"`matrix` must be 2-D, got ndim={matrix.ndim}.")
        csr = sp.csr_matrix(matrix) if matrix.format != "csr" else matrix
        if csr.dtype not in (np.float32, np.float64):
            csr = csr.astype(np.float32)
        data = csr.data
    elif hasattr(matrix, "tocsr") and hasattr(matrix, "data"):  # cupyx.scipy.sparse
        csr = matrix.tocsr()
        data = csr.data
    else:
        raise InvalidProblemError(
            f"`matrix` must be a scipy.sparse (or cupyx) CSR matrix of Gy per MU, got "
            f"{type(matrix).__name__}; convert with scipy.sparse.csr_matrix(matrix)."
        )
    bad_nan = int((~_isfinite(data)).sum())
    if bad_nan:
        raise InvalidProblemError(
            f"`matrix` holds {bad_nan} NaN or infinite entries; the influence matrix must be "
            "finite (Gy per MU). Recompute or clean it (e.g. matrix.data[~isfinite] = 0)."
        )
    n_neg = int((data < 0).sum())
    if n_neg:
        raise InvalidProblemError(
            f"`matrix` holds {n_neg} negative entries (min {float(data.min()):.3g} Gy/MU); "
            "dose per MU cannot be negative. Clip them to zero or fix the dose calculation."
        )
    return csr


def _check_dose_offset(dose_offset: Any, n_vox: int) -> np.ndarray | None:
    """``dose_offset`` as a read-only (n_vox,) float64 array, or InvalidProblemError."""
    if dose_offset is None:
        return None
    a = np.array(dose_offset, dtype=np.float64)  # a copy: the caller's array may change
    if a.shape != (n_vox,):
        raise InvalidProblemError(
            f"`dose_offset` has shape {a.shape}, expected ({n_vox},): one dose (Gy) per "
            "row of `matrix`."
        )
    if not np.all(np.isfinite(a)):
        raise InvalidProblemError(
            f"`dose_offset` holds {int((~np.isfinite(a)).sum())} NaN or infinite values; "
            "it must be a finite dose per voxel (Gy)."
        )
    a.flags.writeable = False
    return a


def _isfinite(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        return np.isfinite(a)
    return array_namespace(a).isfinite(a)


class Problem:
    """A fluence-map optimisation problem.

    Parameters
    ----------
    matrix : (n_voxels, n_beamlets) scipy.sparse CSR matrix of float32, Gy per MU
        Dose-influence matrix; rows are dose-grid voxels, columns beamlets. The solver
        kernels take their array namespace from ``x0``; moving the sliced matrix to a GPU
        with cupyx is not wired up yet.
    structures : dict of str to (n_s,) array of int
        Voxel (row) indices of each structure.
    terms : sequence of Term
        Objective terms (``hard=False``) and hard constraints (``hard=True``).
    voxel_weights : dict of str to (n_s,) array of float, optional
        Per-voxel weights of a structure (e.g. fractional occupancy), non-negative. Each
        structure term is a weighted mean over its voxels.
    matrix_dtype : {numpy.float64, numpy.float32}, optional
        Precision of the row-sliced copy the solvers multiply with (default float64).
        float32 halves the memory traffic of the first-order solver's products, which are
        bandwidth-bound on large matrices (dose and gradients stay float64).
    dose_offset : (n_voxels,) array of float, Gy, optional
        A constant dose per voxel (row of ``matrix``) added to the matrix's dose: every
        term of both solvers (objectives, hard constraints, level bounds, custom terms,
        compressed matrices) reads ``d = matrix @ x + dose_offset``. A dose correction
        ``d_accurate(x0) - matrix @ x0`` makes the optimiser's dose equal a more accurate
        dose at ``x0``. Default: none.

        .. versionadded:: 0.1.0
    meterset_dose : MetersetDose, optional
        A dose part that follows each beam's (smoothed) sweep meterset, ``U κ∘M̃(x)``
        (the MLC leaf transmission), added to every term's dose; first-order solver only
        (:func:`solve_cvxpy` and :func:`certify_hard_constraints` refuse it). Default:
        none.

        .. versionadded:: 0.1.0

    Raises
    ------
    InvalidProblemError
        NaN/negative matrix entries, indices out of range, a term on an unknown or empty
        structure, mismatched weights, a ``dose_offset`` of the wrong shape or not finite,
        a ``meterset_dose`` on other rows or beamlets.

    Notes
    -----
    The terms only touch the rows of the union of the structures they name; the solvers
    work on that row-sliced matrix (sliced once and shared by :meth:`with_terms`).

    Examples
    --------
    Two voxels of a PTV that one beamlet each reaches, at 2 and 4 Gy/MU: the PTV gets
    exactly 60 Gy at x = (30, 15) MU, and both solvers find it. A hard maximum of 50 Gy
    moves the optimum to x = (25, 12.5) MU, where the underdose term is (60 - 50)² = 100 Gy².

    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> import optimizers as op
    >>> D = sp.csr_array(np.diag([2.0, 4.0]))  # Gy/MU
    >>> ptv = {"PTV": np.array([0, 1])}
    >>> problem = op.Problem(D, ptv, [op.Underdose("PTV", 60.0), op.Overdose("PTV", 60.0)])
    >>> result = op.solve_first_order(problem)
    >>> result.status.value, [round(float(v), 3) for v in result.x]
    ('optimal', [30.0, 15.0])
    >>> [round(float(v), 3) for v in op.solve_cvxpy(problem).x]
    [30.0, 15.0]
    >>> capped = op.Problem(D, ptv, [op.Underdose("PTV", 60.0), op.MaxDose("PTV", 50.0, hard=True)])
    >>> result = op.solve_first_order(capped)
    >>> [round(float(v), 2) for v in result.x], round(result.objective, 1)
    ([25.0, 12.5], 100.0)
    """

    def __init__(
        self,
        matrix: Any,
        structures: Mapping[str, Any],
        terms: Sequence[Term],
        *,
        voxel_weights: Mapping[str, Any] | None = None,
        matrix_dtype: Any = np.float64,
        dose_offset: Any = None,
        meterset_dose: MetersetDose | None = None,
        _cache: _MatrixCache | None = None,
        _checked: bool = False,
    ) -> None:
        if _cache is None:
            matrix = _as_csr(matrix)
            if np.dtype(matrix_dtype) not in (np.float32, np.float64):
                raise InvalidProblemError(
                    f"`matrix_dtype` must be float32 or float64, got {matrix_dtype!r}."
                )
            _cache = _MatrixCache(matrix, matrix_dtype)
        self._cache = _cache
        self.matrix = _cache.matrix
        n_vox, n_bl = self.matrix.shape
        if not _checked:
            structures, voxel_weights = self._check_structures(structures, voxel_weights, n_vox)
        self.structures: dict[str, np.ndarray] = dict(structures)
        self.voxel_weights: dict[str, np.ndarray] = dict(voxel_weights or {})
        self.terms: tuple[Term, ...] = tuple(self._check_terms(terms, n_bl))
        self.dose_offset: np.ndarray | None = (
            dose_offset if _checked else _check_dose_offset(dose_offset, n_vox)
        )
        if meterset_dose is not None and (
            not isinstance(meterset_dose, MetersetDose)
            or meterset_dose.columns.shape[0] != n_vox
            or meterset_dose.n_beamlets != n_bl
        ):
            raise InvalidProblemError(
                "`meterset_dose` must be an optimizers.MetersetDose with one column row per "
                f"row of `matrix` ({n_vox}) and {n_bl} beamlets; got {meterset_dose!r}."
            )
        #: the dose part that follows each beam's meterset (None without one)
        self.meterset_dose: MetersetDose | None = meterset_dose
        names = frozenset(n for t in self._all_dose_terms() for n in structures_read(t))
        self._names = names
        rows, self.a_union = _cache.union(self.structures, names)
        self.union_rows = rows
        #: (n_union,) float64, Gy: ``dose_offset`` on the union rows (None without one)
        self.union_offset: np.ndarray | None = (
            None if self.dose_offset is None else self.dose_offset[rows]
        )
        #: (n_union, n_beams) float64, Gy per MU: ``meterset_dose.columns`` on the union rows
        self.union_meterset_columns: np.ndarray | None = (
            None if meterset_dose is None else meterset_dose.columns[rows]
        )
        self.local_index: dict[str, np.ndarray] = {
            n: np.searchsorted(rows, self.structures[n]) for n in names
        }
        self.p: dict[str, np.ndarray] = {}
        for n in names:
            w = self.voxel_weights.get(n)
            if w is None:
                k = self.structures[n].size
                self.p[n] = np.full(k, 1.0 / k)
            else:
                self.p[n] = w / w.sum()

    # -- validation --------------------------------------------------------------------
    @staticmethod
    def _check_structures(structures, voxel_weights, n_vox):
        if not isinstance(structures, Mapping):
            raise InvalidProblemError(
                "`structures` must be a dict of name -> voxel indices, got "
                f"{type(structures).__name__}."
            )
        out = {}
        for name, idx in structures.items():
            a = np.asarray(idx)
            if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
                raise InvalidProblemError(
                    f"Structure `{name}`: voxel indices must be a 1-D integer array, got shape "
                    f"{a.shape} dtype {a.dtype}."
                )
            a = a.astype(np.int64, copy=False)
            if a.size and (a.min() < 0 or a.max() >= n_vox):
                bad = int(a.min()) if a.min() < 0 else int(a.max())
                raise InvalidProblemError(
                    f"Structure `{name}`: voxel index {bad} is out of range for a matrix with "
                    f"{n_vox} rows (valid 0..{n_vox - 1}); check that the indices refer to the "
                    "dose grid of this matrix."
                )
            if np.unique(a).size != a.size:
                raise InvalidProblemError(
                    f"Structure `{name}`: voxel indices contain duplicates; pass each voxel once "
                    "(use `voxel_weights` for partial occupancy)."
                )
            out[name] = a
        weights = {}
        for name, w in (voxel_weights or {}).items():
            if name not in out:
                raise InvalidProblemError(
                    f"`voxel_weights` names structure `{name}` which is not in `structures` "
                    f"(available: {', '.join(sorted(out))})."
                )
            w = np.asarray(w, dtype=np.float64)
            if w.shape != out[name].shape:
                raise InvalidProblemError(
                    f"`voxel_weights[{name!r}]` has shape {w.shape}, expected {out[name].shape} "
                    "(one weight per voxel index)."
                )
            if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise InvalidProblemError(
                    f"`voxel_weights[{name!r}]` must be finite, >= 0 and not all zero."
                )
            weights[name] = w
        return out, weights

    def _check_terms(self, terms, n_bl):
        terms = list(terms)
        for t in terms:
            if not isinstance(t, Term):
                raise InvalidProblemError(
                    f"`terms` must hold optimizers terms (e.g. Overdose, MaxDose), got {t!r}."
                )
        for t in self.flatten(terms):
            for name in structures_read(t):
                if name not in self.structures:
                    raise InvalidProblemError(
                        f"{t.label}: structure `{name}` is not in `structures` "
                        f"(available: {', '.join(sorted(self.structures)) or 'none'})."
                    )
                if self.structures[name].size == 0:
                    raise InvalidProblemError(
                        f"{t.label}: structure `{name}` has no voxels on the dose grid; "
                        "remove the goal or check the structure's contours and the grid."
                    )
            if getattr(t, "operator", None) is not None and t.operator.shape[1] != n_bl:
                raise InvalidProblemError(
                    f"{t.label}: difference operator has {t.operator.shape[1]} columns but the "
                    f"matrix has {n_bl} beamlets."
                )
        return terms

    @staticmethod
    def flatten(terms: Iterable[Term]) -> Iterator[Term]:
        """``terms`` with each lexicographic level bound replaced by the terms it sums."""
        for t in terms:
            if isinstance(t, _LevelBound):
                yield from Problem.flatten(t.terms)
            else:
                yield t

    def _all_dose_terms(self):
        return [t for t in self.flatten(self.terms) if t.acts_on != "fluence"]

    # -- views -------------------------------------------------------------------------
    @property
    def n_beamlets(self) -> int:
        """Number of beamlets (columns)."""
        return int(self.matrix.shape[1])

    @property
    def n_voxels(self) -> int:
        """Number of dose-grid voxels (rows of the full matrix)."""
        return int(self.matrix.shape[0])

    @property
    def soft_terms(self) -> list[Term]:
        """Objective terms."""
        return [t for t in self.terms if not t.hard]

    @property
    def hard_terms(self) -> list[Term]:
        """Hard constraints."""
        return [t for t in self.terms if t.hard]

    def row_blocks(self) -> RowBlocks:
        """The union matrix split into a dense block and a CSR rest (:class:`RowBlocks`),
        built on first use and shared by every problem on the same matrix and rows."""
        return self._cache.row_blocks(self._names, self.a_union)

    def compressed(self, settings: Compression) -> CompressedMatrix:
        """The union matrix compressed to sparse plus low rank (:func:`compress_matrix`),
        built on first use and shared by every problem on the same matrix and rows."""
        return self._cache.compressed(self._names, self.a_union, settings)

    def with_terms(self, terms: Sequence[Term]) -> Problem:
        """A new problem on the same matrix and structures with other terms (no re-validation
        of the matrix, no re-slicing when the same structures are used)."""
        return Problem(
            self.matrix,
            self.structures,
            terms,
            voxel_weights=self.voxel_weights,
            dose_offset=self.dose_offset,
            meterset_dose=self.meterset_dose,
            _cache=self._cache,
            _checked=True,
        )

    # -- evaluation --------------------------------------------------------------------
    def union_dose(self, x: Any) -> np.ndarray:
        """Dose in the union of the terms' structures, Gy, ``(n_union,)`` float64 (with
        ``meterset_dose`` and ``dose_offset``)."""
        d = np.asarray(self.a_union @ np.asarray(x, dtype=self.a_union.dtype), dtype=np.float64)
        if self.meterset_dose is not None:
            d = d + self.union_meterset_columns @ self.meterset_dose.meterset(x)
        return d if self.union_offset is None else d + self.union_offset

    def dose(self, x: Any) -> np.ndarray:
        """Dose on the whole grid, Gy, ``(n_voxels,)`` float64 (with ``meterset_dose`` and
        ``dose_offset``)."""
        d = np.asarray(self.matrix @ np.asarray(x, dtype=self.matrix.dtype), dtype=np.float64)
        if self.meterset_dose is not None:
            d = d + self.meterset_dose.dose(x)
        return d if self.dose_offset is None else d + self.dose_offset

    def term_dose(self, term: Term, d_union: np.ndarray) -> np.ndarray:
        """Dose in ``term``'s structure, Gy, ``(n_s,)``, from the union dose ``d_union``."""
        return d_union[self.local_index[structure_of(term)]]

    def _structure_doses(self, term: Term, d_union: np.ndarray) -> tuple[dict, dict]:
        """Doses (Gy) and normalised voxel weights of each structure a several-structure
        term (:class:`~optimizers.CvxpyTerm`) reads."""
        names = structures_read(term)
        return {n: d_union[self.local_index[n]] for n in names}, {n: self.p[n] for n in names}

    def term_objective(
        self, term: Term, d_union: np.ndarray, x: np.ndarray, *, smooth: bool = False
    ) -> float:
        """Unweighted soft value of one term (``smooth=True``: the first-order solver's
        smooth surrogate, e.g. the softplus CVaR of DVH goals)."""
        if isinstance(term, _LevelBound):
            return sum(
                s.weight * self.term_objective(s, d_union, x, smooth=smooth) for s in term.terms
            )
        if term.acts_on == "fluence":
            return term.value(x, None)
        if isinstance(term, CvxpyTerm):
            return term.structures_value(*self._structure_doses(term, d_union), x)
        d, p = self.term_dose(term, d_union), self.p[structure_of(term)]
        if smooth:
            return first_order_surrogate(term).value(term, d, p)
        return term.value(d, p)

    def term_quantity(self, term: Term, d_union: np.ndarray, x: np.ndarray) -> float:
        """The quantity a hard term bounds (for level bounds: the level's objective)."""
        if isinstance(term, _LevelBound):
            return self.term_objective(term, d_union, x)
        if isinstance(term, CvxpyTerm):
            return term.structures_quantity(*self._structure_doses(term, d_union), x)
        return term.quantity(self.term_dose(term, d_union), self.p[structure_of(term)])

    def objective(self, x: Any, *, d_union: np.ndarray | None = None) -> float:
        """Weighted objective ``sum_k weight_k * value_k(x)`` of the soft terms
        (``d_union``: the dose ``union_dose(x)`` if already computed)."""
        x = np.asarray(x, dtype=np.float64)
        d = self.union_dose(x) if d_union is None else d_union
        return float(sum(t.weight * self.term_objective(t, d, x) for t in self.soft_terms))

    def evaluate(self, x: Any, *, d_union: np.ndarray | None = None) -> dict[str, float]:
        """``term_values`` of a fluence: each term's unweighted value (see
        :attr:`OptimizationResult.term_values`)."""
        x = np.asarray(x, dtype=np.float64)
        d = self.union_dose(x) if d_union is None else d_union
        out: dict[str, float] = {}
        for t in self.terms:
            if isinstance(t, _LevelBound):
                out[t.label] = self.term_objective(t, d, x)
            elif t.acts_on == "fluence":
                out[t.label] = t.value(x, None)
            elif isinstance(t, CvxpyTerm):
                f = self.term_quantity if t.hard else self.term_objective
                out[t.label] = f(t, d, x)
            else:
                out.update(t.reported(self.term_dose(t, d), self.p[structure_of(t)]))
        return out

    def max_violation(
        self, x: Any, *, d_union: np.ndarray | None = None
    ) -> tuple[float, dict[str, float]]:
        """Largest relative violation of the hard constraints and each constraint's own.

        Violations are relative to :func:`constraint_scale` (0 when satisfied): to
        ``max(|bound|, 1 Gy)`` for dose constraints, to the bound itself for lexicographic
        level bounds."""
        x = np.asarray(x, dtype=np.float64)
        d = self.union_dose(x) if d_union is None else d_union
        per = {}
        for t in self.hard_terms:
            b = t.threshold()
            if t.per_voxel:
                dd = self.term_dose(t, d)
                q = float(dd.max()) if t.sense == "<=" else float(dd.min())
            else:
                q = self.term_quantity(t, d, x)
            v = (q - b) if t.sense == "<=" else (b - q)
            per[t.label] = max(v, 0.0) / constraint_scale(t)
        return (max(per.values()) if per else 0.0), per
