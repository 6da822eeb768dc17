"""Sparse-matrix products in any array namespace, and the one place CuPy is imported.

numpy vectors multiply scipy CSR matrices; CuPy vectors multiply ``cupyx.scipy.sparse`` CSR
copies; any other array-API namespace (array-api-strict in the tests) multiplies an
ELLPACK form (padded rows of column indices and coefficients), so that each product is a
``take``, a product and a row sum (the array API has no sparse matrices). CuPy is imported
only when a CuPy array or ``backend="cupy"`` asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from array_api_compat import array_namespace, is_cupy_namespace

from .errors import SolverError

__all__ = ["SparseProducts", "import_cupy", "to_cupy_csr"]

#: ``y -> A @ y``
Product = Callable[[Any], Any]


def import_cupy() -> tuple[Any, Any, Any]:
    """``(array_api_compat.cupy, cupy, cupyx.scipy.sparse)``, or a clear error.

    Raises
    ------
    SolverError
        CuPy (or its CUDA runtime) cannot be imported; the message says how to install it.
    """
    try:
        import array_api_compat.cupy as xp  # optional dependency: imported when asked for
        import cupy
        import cupyx.scipy.sparse as csp
    except ImportError as exc:
        raise SolverError(
            f"`backend='cupy'` needs CuPy and a CUDA GPU, but CuPy could not be imported "
            f'({exc}). Install it with `pip install "rtplan[gpu]"`, or use '
            "`backend='numpy'`."
        ) from exc
    return xp, cupy, csp


def to_cupy_csr(matrix: Any) -> Any:
    """A scipy sparse matrix copied to the GPU as a ``cupyx.scipy.sparse`` CSR matrix."""
    return import_cupy()[2].csr_matrix(matrix)


def ell(a: Any) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the CSR matrix ``a`` padded to equal length (ELLPACK): ``(cols, vals)``, both
    (n_rows, max_row_nnz), padding with column 0 and value 0."""
    a = sp.csr_matrix(a, copy=True)
    a.sum_duplicates()
    counts = np.diff(a.indptr)
    width = max(int(counts.max()) if counts.size else 0, 1)
    cols = np.zeros((a.shape[0], width), dtype=np.int64)
    vals = np.zeros((a.shape[0], width), dtype=np.float64)
    slot = np.arange(a.nnz) - np.repeat(a.indptr[:-1], counts)
    row = np.repeat(np.arange(a.shape[0]), counts)
    cols[row, slot] = a.indices
    vals[row, slot] = a.data
    return cols, vals


def ell_matvec(xp: Any, cols: np.ndarray, vals: np.ndarray) -> Product:
    """``y -> A @ y`` in namespace ``xp`` for ``A`` in ELLPACK form (see :func:`ell`):
    one ``take``, one product and a row sum."""
    shape = vals.shape
    c = xp.reshape(xp.asarray(cols), (-1,))
    v = xp.asarray(vals, dtype=xp.float64)
    return lambda y: xp.sum(v * xp.reshape(xp.take(y, c), shape), axis=1)


class SparseProducts:
    """``A @ y`` and ``A^T @ y`` for a scipy sparse ``A`` in the namespace of ``y``.

    Device copies (cupyx CSR for CuPy, ELLPACK arrays for other namespaces) are made once
    per namespace and device, on first use, and are not pickled.

    Parameters
    ----------
    matrix : (m, n) scipy.sparse matrix
        The operator (converted to float64 CSR).
    """

    def __init__(self, matrix: Any) -> None:
        self.matrix = sp.csr_matrix(matrix, dtype=np.float64)
        self.matrix_t = self.matrix.T.tocsr()
        self._on: dict[tuple[str, str], tuple[Product, Product]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_on"] = {}  # device copies are rebuilt where the products are used
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_on", {})

    def products(self, y: Any) -> tuple[Product, Product]:
        """``(A @ ., A^T @ .)`` in the namespace of ``y``."""
        if isinstance(y, np.ndarray):
            return self.matrix.__matmul__, self.matrix_t.__matmul__
        xp = array_namespace(y)
        key = (xp.__name__, str(getattr(y, "device", "")))
        ops = self._on.get(key)
        if ops is None:
            mats = (self.matrix, self.matrix_t)
            if is_cupy_namespace(xp):
                fwd, bwd = (to_cupy_csr(m).__matmul__ for m in mats)
            else:
                fwd, bwd = (ell_matvec(xp, *ell(m)) for m in mats)
            ops = self._on[key] = (fwd, bwd)
        return ops
