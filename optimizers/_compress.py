"""Sparse-plus-low-rank compression of the influence matrix for the CVXPY solve.

A pencil-beam matrix is nearly dense in the rows of a target: every beamlet's scatter tail
reaches every voxel (the TG-119 C-shape at 3 mm: 98 % of the 5,352 beamlets in each PTV
row, 98 M non-zeros). An interior-point solver then factors a dense beamlet block at every
iteration and CVXPY keeps several float64 copies of the matrix. The tails are small and
smooth, so the matrix is split (Adeli et al., CompressRTP)

``A = S + U V + R``

with ``S`` the entries of at least ``rel_threshold`` times their beamlet's (column's)
largest entry, ``U V`` a rank-``k`` approximation of the dropped tails ``A - S``
(randomised SVD, Halko et al. 2011) and ``R`` the residual. The solver sees ``S x + U (V x)``;
the dose error at voxel ``i`` is ``R_i x``, bounded by
``min(||R_i||_1 max(x), ||R_i||_2 ||x||_2)`` (Hoelder), which :class:`CompressedMatrix`
computes from the exact row norms of ``R``. The result is always judged on ``A``.

References
----------
M. Adeli, M. Zarepisheh et al., "CompressRTP: sparse-plus-low-rank compression of the
dose-influence matrix for fast radiotherapy optimisation", arXiv:2410.00756 (2024).
N. Halko, P. G. Martinsson, J. A. Tropp, "Finding structure with randomness", SIAM Rev.
53 (2011) 217, doi:10.1137/090771806.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._blas import one_blas_thread
from .errors import InvalidProblemError

__all__ = ["CompressedMatrix", "Compression", "compress_matrix"]

#: Rows of ``A - S - U V`` made dense at once when the residual norms are measured
#: (about 40 MB of float64 per block at 5,000 beamlets).
_RESIDUAL_BLOCK_ROWS = 1000


@dataclass(frozen=True)
class Compression:
    """Settings of the matrix compression for :func:`optimizers.solve_cvxpy`.

    .. versionadded:: 0.1.0

    Parameters
    ----------
    rel_threshold : float, optional
        Entries below this fraction of their beamlet's largest entry leave the sparse
        part (default 0.01); ``0`` keeps every entry (no compression).
    rank : int, optional
        Rank of the low-rank part that carries the dropped scatter tails (default 12);
        ``0`` drops them (the bound then holds their whole dose).
    oversampling, power_iterations : int, optional
        Randomised SVD settings (Halko et al. 2011, defaults 8 and 2).
    seed : int, optional
        Seed of the random test matrix (the compression is reproducible).
    """

    rel_threshold: float = 0.01
    rank: int = 12
    oversampling: int = 8
    power_iterations: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.rel_threshold, bool) or not isinstance(
            self.rel_threshold, (int, float, np.integer, np.floating)
        ):
            raise TypeError(
                f"`rel_threshold` must be a number, got {type(self.rel_threshold).__name__}."
            )
        if not (np.isfinite(self.rel_threshold) and 0.0 <= self.rel_threshold < 1.0):
            raise InvalidProblemError(
                f"`rel_threshold` must be in [0, 1), got {self.rel_threshold!r}."
            )
        for name in ("rank", "oversampling", "power_iterations"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 0:
                raise InvalidProblemError(f"`{name}` must be an integer >= 0, got {v!r}.")


@dataclass(frozen=True, eq=False)
class CompressedMatrix:
    """``A ≈ S + U V`` with the exact row norms of the residual ``R = A - S - U V``.

    Attributes
    ----------
    sparse : scipy.sparse.csr_matrix, (n_rows, n_beamlets), Gy per MU
        ``S``: the entries of at least ``rel_threshold`` times their column's maximum.
    left : (n_rows, k) ndarray of float64
        ``U`` (Gy per MU per unit of ``V x``).
    right : (k, n_beamlets) ndarray of float64
        ``V``.
    residual_l1, residual_l2 : (n_rows,) ndarray of float64, Gy per MU
        ``||R_i||_1`` and ``||R_i||_2`` of each row.
    settings : Compression
    nnz_full : int
        Non-zeros of ``A``.
    """

    sparse: Any
    left: np.ndarray
    right: np.ndarray
    residual_l1: np.ndarray
    residual_l2: np.ndarray
    settings: Compression
    nnz_full: int
    _extra: dict = field(default_factory=dict, repr=False)

    @property
    def rank(self) -> int:
        """Rank of the low-rank part."""
        return int(self.right.shape[0])

    @property
    def stored_entries(self) -> int:
        """Numbers the solver sees: non-zeros of ``S`` plus the entries of ``U`` and ``V``."""
        return int(self.sparse.nnz + self.left.size + self.right.size)

    def dose(self, x: Any) -> np.ndarray:
        """``S x + U (V x)``, Gy, ``(n_rows,)`` float64."""
        x = np.asarray(x, dtype=np.float64)
        return np.asarray(self.sparse @ x, dtype=np.float64) + self.left @ (self.right @ x)

    def error_bound_gy(self, x: Any) -> np.ndarray:
        """Per-row bound of ``|A x - S x - U V x|``, Gy, ``(n_rows,)``: the smaller of
        ``||R_i||_1 max|x|`` and ``||R_i||_2 ||x||_2``."""
        x = np.asarray(x, dtype=np.float64)
        inf = float(np.max(np.abs(x))) if x.size else 0.0
        two = float(np.linalg.norm(x))
        return np.minimum(self.residual_l1 * inf, self.residual_l2 * two)

    def record(
        self, x: Any, exact_dose: np.ndarray, *, offset: Any = None, corrections: int = 0
    ) -> dict[str, Any]:
        """What a result records: sizes, settings, the bound and the measured error at ``x``
        (of the dose the solver saw: ``S x + U V x + offset``, Gy; ``offset`` from
        ``corrections`` dose corrections, whose error is no longer bounded a priori)."""
        seen = self.dose(x) if offset is None else self.dose(x) + np.asarray(offset)
        err = np.abs(np.asarray(exact_dose, dtype=np.float64) - seen)
        return {
            "corrections": int(corrections),
            "rel_threshold": self.settings.rel_threshold,
            "rank": self.rank,
            "nnz_full": self.nnz_full,
            "nnz_sparse": int(self.sparse.nnz),
            "rows": int(self.sparse.shape[0]),
            "max_dose_error_bound_gy": float(np.max(self.error_bound_gy(x), initial=0.0)),
            "max_dose_error_gy": float(np.max(err, initial=0.0)),
            "compress_time_s": float(self._extra.get("time_s", 0.0)),
        }


def _column_threshold_split(a: Any, rel_threshold: float) -> Any:
    """``S``: the entries of CSR ``a`` of at least ``rel_threshold`` times their column's
    largest entry (CSR, float64, sorted indices)."""
    a = sp.csr_matrix(a)
    # SciPy's reduction along columns (np.maximum.at took 5x its time: 3.6 against
    # 0.7 CPU s on the C-shape's 66 M entries), and the running count of kept entries
    # over bytes (0.2 against 0.9 s over booleans)
    colmax = np.asarray(a.max(axis=0).toarray(), dtype=np.float64).ravel()
    keep = a.data >= rel_threshold * colmax[a.indices]
    indptr = np.concatenate([[0], np.cumsum(keep.view(np.uint8), dtype=np.int64)])[a.indptr]
    return sp.csr_matrix((a.data[keep].astype(np.float64), a.indices[keep], indptr), shape=a.shape)


def _randomized_svd(matvec, rmatvec, shape, settings: Compression):
    """Rank-``k`` factors ``(U s, V)`` of the operator ``E`` (``matvec(Y) = E Y``,
    ``rmatvec(Y) = E^T Y``), Halko et al. (2011) algorithm 4.4."""
    n_rows, n_cols = shape
    k = min(settings.rank, n_rows, n_cols)
    if k == 0:
        return np.zeros((n_rows, 0)), np.zeros((0, n_cols))
    rng = np.random.default_rng(settings.seed)
    ell = min(k + settings.oversampling, n_rows, n_cols)
    q, _ = np.linalg.qr(matvec(rng.standard_normal((n_cols, ell))))
    for _ in range(settings.power_iterations):
        w, _ = np.linalg.qr(rmatvec(q))
        q, _ = np.linalg.qr(matvec(w))
    b = rmatvec(q).T  # (ell, n_cols) = Q^T E
    ub, s, vt = np.linalg.svd(b, full_matrices=False)
    return (q @ ub[:, :k]) * s[:k], vt[:k]


def compress_matrix(a: Any, settings: Compression | None = None) -> CompressedMatrix:
    """Split ``a`` into sparse plus low rank and measure the residual (see the module).

    Parameters
    ----------
    a : (n_rows, n_beamlets) scipy.sparse matrix, Gy per MU
        The rows the CVXPY formulation uses (the union of the terms' structures).
    settings : Compression, optional
        Threshold and rank (default ``Compression()``).

    Returns
    -------
    CompressedMatrix
    """
    t0 = time.perf_counter()
    if not sp.issparse(a) or a.ndim != 2 or a.dtype not in (np.float32, np.float64):
        kind = type(a).__name__ + (f" of {a.dtype}" if hasattr(a, "dtype") else "")
        raise InvalidProblemError(
            f"`a` must be a 2-D scipy.sparse matrix of float32 or float64 (Gy per MU), got {kind}."
        )
    if settings is not None and not isinstance(settings, Compression):
        raise TypeError(
            f"`settings` must be an optimizers.Compression or None, got {type(settings).__name__}."
        )
    settings = Compression() if settings is None else settings
    # one BLAS thread: the sketch's QR factorisations and products are thin (40 columns);
    # two OpenBLAS threads took 5x the CPU seconds on them on the shared machine (1.86
    # against 0.36 s for five QRs of 39,809 x 40), and the factors no longer depend on
    # the thread count
    with one_blas_thread():
        return _compress(sp.csr_matrix(a), settings, t0)


def _compress(a: Any, settings: Compression, t0: float) -> CompressedMatrix:
    """:func:`compress_matrix` of a checked CSR matrix (``t0``: its start, perf_counter)."""
    s = _column_threshold_split(a, settings.rel_threshold)

    def matvec(y):  # (A - S) y without forming A - S
        return np.asarray(a @ y, dtype=np.float64) - s @ y

    def rmatvec(y):
        return np.asarray(a.T @ y, dtype=np.float64) - s.T @ y

    left, right = _randomized_svd(matvec, rmatvec, a.shape, settings)
    l1 = np.empty(a.shape[0])
    l2 = np.empty(a.shape[0])
    for r0 in range(0, a.shape[0], _RESIDUAL_BLOCK_ROWS):
        r1 = min(r0 + _RESIDUAL_BLOCK_ROWS, a.shape[0])
        res = a[r0:r1].toarray().astype(np.float64) - s[r0:r1].toarray() - left[r0:r1] @ right
        l1[r0:r1] = np.abs(res).sum(axis=1)
        l2[r0:r1] = np.sqrt((res * res).sum(axis=1))
    return CompressedMatrix(
        s, left, right, l1, l2, settings, int(a.nnz), {"time_s": time.perf_counter() - t0}
    )
