"""Fluence terms: smoothness between neighbouring beamlets and total MU."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from array_api_compat import array_namespace

from .._sparse_ops import SparseProducts
from ..errors import InvalidProblemError
from ._base import Term

__all__ = ["Smoothness", "TotalMU"]


class Smoothness(Term):
    """Fluence smoothness: mean squared difference between neighbouring beamlets (MU²).

    ``value = (1/m) * ||D x||**2`` where ``D`` is an ``(m, n_beamlets)`` sparse difference
    operator. The caller, who knows the beamlet lattice, supplies either ``D`` or a list of
    neighbour pairs ``(j, k)`` (each row of ``D`` is then ``x_j - x_k``).

    Parameters
    ----------
    operator : (m, n_beamlets) sparse matrix, optional
        Difference operator.
    pairs : (m, 2) array of int, optional
        Neighbouring beamlet index pairs (alternative to ``operator``).
    n_beamlets : int, optional
        Number of beamlets (needed with ``pairs``; defaults to ``max(pairs) + 1``).
    weight : float, optional
        Weight (default 1).

    Notes
    -----
    :meth:`value` and :meth:`gradient` work in the namespace of ``x``
    (:class:`~optimizers._sparse_ops.SparseProducts`: scipy CSR for numpy, cupyx CSR for
    CuPy, ELLPACK gathers for any other array-API namespace).
    """

    acts_on = "fluence"

    def __init__(
        self,
        operator: Any = None,
        *,
        pairs: Any = None,
        n_beamlets: int | None = None,
        weight: float = 1.0,
        label: str | None = None,
    ) -> None:
        if (operator is None) == (pairs is None):
            raise InvalidProblemError("Smoothness needs exactly one of `operator` or `pairs`.")
        if pairs is not None:
            pairs = np.asarray(pairs)
            if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
                raise InvalidProblemError(
                    f"`pairs` must be an (m, 2) integer array, got shape {pairs.shape} "
                    f"dtype {pairs.dtype}."
                )
            if pairs.size and pairs.min() < 0:
                raise InvalidProblemError("`pairs` holds negative beamlet indices.")
            m = pairs.shape[0]
            n = int(n_beamlets) if n_beamlets is not None else int(pairs.max()) + 1
            rows = np.repeat(np.arange(m), 2)
            cols = pairs.ravel()
            vals = np.tile([1.0, -1.0], m)
            if m and cols.max() >= n:
                raise InvalidProblemError(
                    f"`pairs` refers to beamlet {int(cols.max())} but `n_beamlets` is {n}."
                )
            operator = sp.csr_matrix((vals, (rows, cols)), shape=(m, n))
        if not sp.issparse(operator) or operator.ndim != 2 or operator.shape[0] == 0:
            raise InvalidProblemError(
                "`operator` must be a non-empty 2-D scipy.sparse matrix (rows = differences)."
            )
        self.operator = sp.csr_matrix(operator, dtype=np.float64)
        self._products = SparseProducts(self.operator)
        super().__init__(None, None, weight=weight, label=label)

    def _describe(self) -> str:
        return f"Smoothness({self.operator.shape[0]} pairs)"

    def value(self, x, p=None):
        fwd, _ = self._products.products(x)
        r = fwd(x)
        # a sum, not ``r @ r``: a BLAS dot of this length wakes BLAS's threads (ms under load)
        return float(array_namespace(r).sum(r * r)) / self.operator.shape[0]

    def gradient(self, x, p=None):
        fwd, bwd = self._products.products(x)
        return (2.0 / self.operator.shape[0]) * bwd(fwd(x))


class TotalMU(Term):
    """Total fluence ``sum_j x_j`` (MU), an L1 regulariser (``x >= 0``).

    Parameters
    ----------
    weight : float, optional
        Weight (default 1).
    """

    acts_on = "fluence"

    def __init__(self, *, weight: float = 1.0, label: str | None = None) -> None:
        super().__init__(None, None, weight=weight, label=label)

    def _describe(self) -> str:
        return "TotalMU"

    def value(self, x, p=None):
        return float(array_namespace(x).sum(x))

    def gradient(self, x, p=None):
        return 1.0 + 0.0 * x
