"""Array back-ends of the first-order solver: where its vectors live and how the influence
matrix multiplies them.

The solver's vector code is written against the array API standard and takes its namespace
from an :class:`ArrayBackend`; only the two matrix products and the copies to and from the
host differ between back-ends, and they live here. Both built-in back-ends multiply the
problem's :class:`~optimizers._problem.RowBlocks`: nearly full rows (targets, organs) as one
dense array, the rest as CSR. ``"numpy"`` uses numpy and scipy; ``"cupy"`` copies the blocks
once per solve to the GPU (CuPy array, cupyx CSR).
CuPy is imported only when ``"cupy"`` is asked for.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import array_api_compat.numpy as np_xp
import numpy as np
import scipy.sparse as sp

from ._blas import _blas_controller as _blas_controller
from ._blas import _release_blas_control as _release_blas_control
from ._blas import one_blas_thread
from ._problem import Problem
from ._sparse_ops import import_cupy, to_cupy_csr
from .errors import InvalidProblemError

__all__ = ["BACKENDS", "ArrayBackend", "array_backend"]

BACKENDS = ("numpy", "cupy")


@dataclass(frozen=True)
class ArrayBackend:
    """The array namespace and matrix products the first-order solver runs on.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"cupy"`` or a caller's own name.
    xp : module
        Array-API namespace of every vector (``array_api_compat.numpy``,
        ``array_api_compat.cupy``, ``array_api_strict``...).
    matvec : callable
        ``A_u @ x``: (n_beamlets,) fluence, MU -> (n_u,) dose on the union rows, Gy.
    rmatvec : callable
        ``A_u^T @ g``: (n_u,) -> (n_beamlets,).
    float32_products : bool, optional
        The matrix is float32: vectors are cast to float32 before each product and the
        result back to float64 (default False: float64 products).
    to_host : callable, optional
        Copy of an ``xp`` array as a numpy array (default ``numpy.from_dlpack``).
    """

    name: str
    xp: Any
    matvec: Callable[[Any], Any]
    rmatvec: Callable[[Any], Any]
    float32_products: bool = False
    to_host: Callable[[Any], np.ndarray] = np.from_dlpack

    def asarray(self, a: Any) -> Any:
        """``a`` as a float64 array of this back-end (one host-to-device copy at most)."""
        return self.xp.asarray(a, dtype=self.xp.float64)


def array_backend(problem: Problem, backend: str | ArrayBackend) -> ArrayBackend:
    """The :class:`ArrayBackend` called ``backend`` for ``problem``'s union matrix.

    Parameters
    ----------
    problem : Problem
        Supplies the union matrix (n_u, n_beamlets), Gy per MU, as :class:`RowBlocks`.
    backend : {"numpy", "cupy"} or ArrayBackend
        ``"cupy"`` copies the row blocks to the GPU (CuPy, cupyx.scipy.sparse) once; an
        :class:`ArrayBackend` is returned as it is.

    Returns
    -------
    ArrayBackend

    Raises
    ------
    InvalidProblemError
        Unknown ``backend``.
    SolverError
        ``"cupy"`` asked for but CuPy (or its CUDA runtime) cannot be imported.
    """
    if isinstance(backend, ArrayBackend):
        return backend
    if backend == "numpy":
        return _numpy_backend(problem)
    if backend == "cupy":
        return _cupy_backend(problem)
    raise InvalidProblemError(
        f"Unknown `backend` {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}."
    )


def _numpy_backend(problem: Problem) -> ArrayBackend:
    matvec, rmatvec = _block_products(
        problem,
        np_xp,
        dense=_chunked_dense_products,
        sparse=_threaded_csr_products,
        index=lambda i: i,
    )
    return ArrayBackend(
        "numpy",
        np_xp,
        matvec,
        rmatvec,
        float32_products=problem.a_union.dtype == np.float32,
        to_host=np.asarray,
    )


#: A CSR block with at least this many non-zeros is multiplied in row chunks on a thread
#: pool (scipy's sparse products release the GIL but use one thread each). On 2 cores a
#: 37,344 x 7,548 ring block (56 M non-zeros, float32) takes 25 ms instead of 41 ms forward
#: and 22 ms instead of 43 ms transposed.
THREADED_CSR_MIN_NNZ = 1_000_000
#: Non-zeros per row chunk of a threaded CSR product.  The chunks depend on the matrix
#: only, never on the CPU count, and the transposed product sums their partial results in
#: chunk order, so the result is bit-identical on any number of CPUs.
CSR_CHUNK_NNZ = 2_000_000


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(int(n or 1), 1)


@functools.cache
def _thread_pool(n_workers: int) -> ThreadPoolExecutor:
    """One shared pool per worker count, created on first use."""
    return ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="rtplan-csr")


def _threaded_csr_products(
    csr: Any, n_chunks: int | None = None
) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``csr @ x`` and ``csr.T @ g`` for a scipy CSR matrix, split into ``n_chunks`` row
    chunks of about equal non-zeros (default: one per :data:`CSR_CHUNK_NNZ`, whatever the
    CPU count, so results do not depend on it) run on a thread pool of at most one worker
    per usable CPU, when the matrix has at least :data:`THREADED_CSR_MIN_NNZ` non-zeros.
    The transposed product reads only the rows where ``g`` is non-zero when they hold few
    of a chunk's non-zeros (:class:`_CsrChunk`)."""
    if n_chunks is None:
        n_chunks = -(-csr.nnz // CSR_CHUNK_NNZ)
    n_chunks = int(n_chunks)
    if csr.nnz < THREADED_CSR_MIN_NNZ or n_chunks < 2:
        return csr.__matmul__, csr.T.__matmul__
    pool = _thread_pool(min(n_chunks, _usable_cpus()))
    cuts = np.searchsorted(csr.indptr, np.linspace(0, csr.nnz, n_chunks + 1)[1:-1])
    bounds = [0, *(int(c) for c in cuts), csr.shape[0]]
    chunks = [_CsrChunk(csr, slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def matvec(x: Any) -> Any:
        return np.concatenate(list(pool.map(lambda c: c.view @ x, chunks)))

    def rmatvec(g: Any) -> Any:
        return sum(pool.map(lambda c: c.rmatvec(g[c.rows]), chunks))

    return matvec, rmatvec


#: The transposed product of a CSR chunk reads only the rows where ``g`` is non-zero when
#: they hold less than this share of the chunk's non-zeros.  One-sided terms (overdose of
#: the ring and the normal-tissue shells, a hot-spot limit) have a zero gradient wherever
#: the dose is below their level: at the TG-119 C-shape's optimum 2,730 of 60,514 helper
#: rows (8 % of their non-zeros) have a non-zero gradient.
ACTIVE_ROWS_MAX_SHARE = 0.5


class _CsrChunk:
    """Rows ``rows`` (a contiguous range) of a CSR matrix, sharing its arrays, with the
    two products of the threaded CSR product.

    ``rmatvec(g)`` is ``view.T @ g``. When the rows with ``g != 0`` hold less than
    :data:`ACTIVE_ROWS_MAX_SHARE` of the chunk's non-zeros, it multiplies ``g``'s non-zero
    entries as a sparse column (scipy's ``csr_matmat`` reads only those rows) instead of
    reading every row: the same sums in the same row order, so the result is the same to
    the bit (a skipped row would add ``0 * a = +0``).
    """

    def __init__(self, csr: Any, rows: slice) -> None:
        self.rows = rows
        self.view = _row_range_view(csr, rows)
        self.view_t = _transposed_view(self.view)
        self.row_nnz = np.diff(self.view.indptr)
        self.max_active_nnz = ACTIVE_ROWS_MAX_SHARE * self.view.nnz

    def rmatvec(self, g: Any) -> Any:
        if g.dtype == self.view.dtype:
            active = np.flatnonzero(g)
            if self.row_nnz[active].sum() < self.max_active_nnz:
                n_rows = self.view.shape[0]
                column = sp.csc_matrix(
                    (g[active], active, np.array([0, active.size])), shape=(n_rows, 1)
                )
                return (self.view_t @ column).toarray().reshape(-1)
        return self.view_t @ g


#: Rows per chunk of the dense block's products (fixed: results must not depend on the CPU
#: count).  A 16,384 x 2,612 float32 chunk is 171 MB.
DENSE_CHUNK_ROWS = 16_384


def _chunked_dense_products(a: np.ndarray) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``a @ x`` and ``a.T @ g`` over fixed row chunks of :data:`DENSE_CHUNK_ROWS`, each a
    single-threaded BLAS call (:func:`one_blas_thread`), run on a thread pool and summed in
    chunk order.

    Multi-threaded BLAS splits ``a.T @ g`` by rows and adds the partial sums in an order set
    by its thread count (float32 results differed by 2e-5 relative between 1 and 2
    threads): with the chunks fixed and BLAS held to one thread during the products, the
    result is bit-identical on any number of CPUs, at the same memory bandwidth.
    """
    n_rows = a.shape[0]
    bounds = list(range(0, n_rows, DENSE_CHUNK_ROWS)) + [n_rows]
    slices = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    blocks = [a[sl] for sl in slices]  # views
    pool = _thread_pool(max(1, min(len(blocks), _usable_cpus())))

    def matvec(x: Any) -> Any:
        with one_blas_thread():
            return np.concatenate(list(pool.map(lambda b: b @ x, blocks)))

    def rmatvec(g: Any) -> Any:
        with one_blas_thread():
            pairs = list(zip(blocks, slices, strict=True))
            parts = list(pool.map(lambda bs: bs[0].T @ g[bs[1]], pairs))
        out = parts[0].copy()
        for part in parts[1:]:
            out += part
        return out

    return matvec, rmatvec


def _row_range_view(csr: Any, rows: slice) -> Any:
    """Rows ``rows`` (a contiguous range) of a CSR matrix sharing its data and column
    indices. ``csr[rows]`` and the ``(data, indices, indptr)`` constructor both copy them
    (scipy prunes small views of large arrays), so the arrays are set on an empty matrix."""
    p0, p1 = int(csr.indptr[rows.start]), int(csr.indptr[rows.stop])
    view = sp.csr_matrix((rows.stop - rows.start, csr.shape[1]), dtype=csr.dtype)
    view.data = csr.data[p0:p1]
    view.indices = csr.indices[p0:p1]
    view.indptr = (csr.indptr[rows.start : rows.stop + 1] - p0).astype(csr.indptr.dtype)
    return view


def _transposed_view(csr: Any) -> Any:
    """The transpose of a CSR matrix as a CSC matrix sharing its three arrays.  ``csr.T``
    copies them when they are views of larger arrays (scipy prunes them), which doubled the
    memory of a threaded product's chunks."""
    view = sp.csc_matrix((csr.shape[1], csr.shape[0]), dtype=csr.dtype)
    view.data, view.indices, view.indptr = csr.data, csr.indices, csr.indptr
    return view


def _cupy_dense_products(a: np.ndarray) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``a @ x`` and ``a.T @ g`` on the GPU (the block copied once)."""
    _, cupy, _ = import_cupy()
    a_d = cupy.asarray(a)
    return a_d.__matmul__, a_d.T.__matmul__


def _cupy_csr_products(csr: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``csr @ x`` and ``csr.T @ g`` on the GPU (both as cupyx CSR)."""
    return to_cupy_csr(csr).__matmul__, to_cupy_csr(csr.T).__matmul__


def _block_products(
    problem: Problem,
    xp: Any,
    *,
    dense: Callable[[np.ndarray], Any],
    sparse: Callable[[Any], tuple[Callable[[Any], Any], Callable[[Any], Any]]],
    index: Callable[[np.ndarray], Any],
) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``A_u @ x`` and ``A_u^T @ g`` over the problem's :class:`RowBlocks`: the dense rows
    as one array product, the rest as CSR. ``dense`` gives the two products of the dense
    block (a numpy array), ``sparse`` those of a scipy CSR matrix; ``index`` copies an index
    array to the back-end."""
    blocks = problem.row_blocks()
    s_matvec, s_rmatvec = sparse(blocks.sparse)
    if blocks.dense is None:
        return s_matvec, s_rmatvec
    d_matvec, d_rmatvec = dense(blocks.dense)
    at_dense, at_sparse = index(blocks.dense_pos), index(blocks.sparse_pos)
    n_u = problem.union_rows.size

    def matvec(x: Any) -> Any:
        out = xp.empty(n_u, dtype=x.dtype)
        out[at_dense] = d_matvec(x)
        out[at_sparse] = s_matvec(x)
        return out

    def rmatvec(g: Any) -> Any:
        return d_rmatvec(g[at_dense]) + s_rmatvec(g[at_sparse])

    return matvec, rmatvec


def _cupy_backend(problem: Problem) -> ArrayBackend:
    xp, cupy, _ = import_cupy()
    matvec, rmatvec = _block_products(
        problem, xp, dense=_cupy_dense_products, sparse=_cupy_csr_products, index=cupy.asarray
    )
    return ArrayBackend(
        "cupy",
        xp,
        matvec,
        rmatvec,
        float32_products=problem.a_union.dtype == np.float32,
        to_host=cupy.asnumpy,
    )
