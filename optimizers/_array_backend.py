"""Array back-ends of the first-order solver: where its vectors live and how the influence
matrix multiplies them.

The solver's vector code is written against the array API standard and takes its namespace
from an :class:`ArrayBackend`; only the two matrix products and the copies to and from the
host differ between back-ends, and they live here. ``"numpy"`` multiplies with the problem's
scipy CSR matrices; ``"cupy"`` moves them once per solve to the GPU as cupyx CSR matrices.
CuPy is imported only when ``"cupy"`` is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._problem import Problem
from .errors import InvalidProblemError, SolverError

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
        Supplies ``a_union`` (n_u, n_beamlets) and its transpose, scipy CSR, Gy per MU.
    backend : {"numpy", "cupy"} or ArrayBackend
        ``"cupy"`` copies both CSR matrices to the GPU (cupyx.scipy.sparse) once; an
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
    import array_api_compat.numpy as xp

    a_u, a_t = problem.a_union, problem.a_union_t
    return ArrayBackend(
        "numpy",
        xp,
        a_u.__matmul__,
        a_t.__matmul__,
        float32_products=a_u.dtype == np.float32,
        to_host=np.asarray,
    )


def _import_cupy() -> tuple[Any, Any, Any]:
    """``(array_api_compat.cupy, cupy, cupyx.scipy.sparse)``, or a clear error."""
    try:
        import array_api_compat.cupy as xp
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
    """A scipy sparse matrix copied to the GPU as a ``cupyx.scipy.sparse`` CSR matrix (the
    one place the optimisers import CuPy's sparse module)."""
    return _import_cupy()[2].csr_matrix(matrix)


def _cupy_backend(problem: Problem) -> ArrayBackend:
    xp, cupy, _ = _import_cupy()
    a_u = to_cupy_csr(problem.a_union)
    a_t = to_cupy_csr(problem.a_union_t)
    return ArrayBackend(
        "cupy",
        xp,
        a_u.__matmul__,
        a_t.__matmul__,
        float32_products=problem.a_union.dtype == np.float32,
        to_host=cupy.asnumpy,
    )
