"""The dose-volume curve ``D(v)`` of weighted voxel doses: the project's one ``D_v``.

rtplan's DVH metrics (``Dx%``, ``Dxcc``), the ``D95`` of its segment-weight comparison and
the exact ``D_v`` this package reports beside a DVH goal's CVaR all read this curve.

Voxel-midpoint rule: pool the voxels of equal dose and sort the distinct doses in
decreasing order, ``d_1 > d_2 > … > d_n``, with pooled volumes ``w_k`` and cumulative
volume ``C_k = w_1 + … + w_k``. Each voxel's volume is spread evenly around its centre
dose, so ``D(v)`` is the piecewise-linear curve through the knots ``(C_{k-1} + w_k / 2,
d_k)``, held at ``d_1`` below the first knot and at ``d_n`` beyond the last. It is exact
for a dose that is linear across equal voxels (a ramp of ``n`` voxels of doses ``1 … n``
Gy has ``D_v = n + 1/2 - n v / 100``) and equal to the dose itself for a uniform dose.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_cupy_namespace, is_numpy_namespace

from .errors import InvalidProblemError

__all__ = ["dose_at_knots", "dose_at_volume", "dose_volume_knots"]


def stable_order(keys: Any) -> Any:
    """``argsort(keys, stable=True)``: the order of increasing ``keys``, equal keys in
    index order, (n,) int array.

    On numpy the order comes from the (about twice as fast) unstable sort, then each run of
    equal keys is put back in index order, so the result is the stable order itself; ties
    are rare in doses (a float sum of many beamlets), and a run of them costs a sort of
    that run only.  Arrays holding NaN, and other namespaces, take the stable sort.
    """
    xp = array_namespace(keys)
    if not is_numpy_namespace(xp) or keys.shape[0] < 2:
        return xp.argsort(keys, stable=True)
    order = np.argsort(keys)
    s = keys[order]
    if np.isnan(s[-1]):  # NaN sorts last; `==` would not pool it
        return np.argsort(keys, kind="stable")
    tie = s[1:] == s[:-1]
    if tie.any():
        in_run = np.zeros(s.shape[0], dtype=bool)
        in_run[1:] |= tie
        in_run[:-1] |= tie
        pos = np.flatnonzero(in_run)
        # runs stay where they are (their keys are sorted); inside each, index order
        sub = order[pos]
        order[pos] = sub[np.lexsort((sub, s[pos]))]
    return order


def unsort(sorted_values: Any, order: Any) -> Any:
    """The values of ``sorted_values`` (in the order ``order``) back in index order:
    ``out[order[k]] = sorted_values[k]``, (n,) array.

    A scatter on numpy and CuPy; the array API has none, so other namespaces gather
    through the inverse permutation (``argsort(order)``).
    """
    xp = array_namespace(sorted_values)
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        out = xp.empty_like(sorted_values)
        out[order] = sorted_values
        return out
    return xp.take(sorted_values, xp.argsort(order, stable=True))


def sorted_cumulative(dose_gy: Any, p: Any, descending: bool) -> tuple[Any, Any, Any]:
    """Doses sorted (hottest first if ``descending``), their weights and the running sum."""
    xp = array_namespace(dose_gy)
    order = stable_order(-dose_gy if descending else dose_gy)
    d = xp.take(dose_gy, order)
    w = xp.take(p, order)
    return d, w, xp.cumulative_sum(w)


def _knots(dose_gy: Any, weights: Any) -> tuple[Any, Any, Any]:
    xp = array_namespace(dose_gy)
    d, _, c = sorted_cumulative(dose_gy, weights, descending=True)
    last = xp.concat([d[1:] != d[:-1], xp.ones((1,), dtype=xp.bool)])  # end of each dose
    dose, cumulative = d[last], c[last]
    pooled = xp.concat([cumulative[:1], cumulative[1:] - cumulative[:-1]])
    return cumulative - pooled / 2.0, dose, cumulative


def _at_knots(volume: Any, dose: Any, v: float) -> float:
    xp = array_namespace(volume)
    n = volume.shape[0]
    at = xp.asarray([v], dtype=volume.dtype)
    j = int(xp.searchsorted(volume, at, side="right")[0]) - 1
    if j < 0:
        return float(dose[0])
    if j >= n - 1:
        return float(dose[n - 1])
    v0 = float(volume[j])
    if v == v0:
        return float(dose[j])
    slope = (float(dose[j + 1]) - float(dose[j])) / (float(volume[j + 1]) - v0)
    return slope * (v - v0) + float(dose[j])


def dose_at_volume_unchecked(dose_gy: Any, weights: Any, volume_pct: float) -> float:
    """:func:`dose_at_volume` without the argument checks (the solvers' inner loops)."""
    volume, dose, cumulative = _knots(dose_gy, weights)
    return _at_knots(volume, dose, volume_pct / 100.0 * float(cumulative[-1]))


def _check_pair(a: Any, a_name: str, b: Any, b_name: str) -> None:
    """Two 1-D arrays of one length >= 1 (``TypeError`` / ``ValueError`` naming them)."""
    for x, name in ((a, a_name), (b, b_name)):
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise TypeError(
                f"`{name}` must be a 1-D array (numpy, CuPy or array-API); got {type(x).__name__}."
            )
        if len(x.shape) != 1 or x.shape[0] < 1:
            raise InvalidProblemError(
                f"`{name}` must be a non-empty 1-D array; got shape {tuple(x.shape)}."
            )
    if a.shape != b.shape:
        raise InvalidProblemError(
            f"`{a_name}` has shape {a.shape} but `{b_name}` has shape {b.shape}; give one "
            "value per voxel."
        )


def _check_number(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {type(v).__name__}.")
    return float(v)


def dose_volume_knots(dose_gy: Any, weights: Any) -> tuple[Any, Any, Any]:
    """Knots of the dose-volume curve ``D(v)`` (module notes: voxel-midpoint rule).

    Parameters
    ----------
    dose_gy : (n,) array of float, Gy
        Voxel doses (numpy, CuPy or any array-API array); ``n >= 1``.
    weights : (n,) array of float
        Each voxel's volume, >= 0, in any unit (cm³, or fractions summing to 1).

    Returns
    -------
    volume : (k,) array
        Knot volumes ``C_{j-1} + w_j / 2``, increasing, in the unit of ``weights``.
    dose : (k,) array, Gy
        The distinct doses, decreasing.
    cumulative : (k,) array
        ``C_j``: the volume receiving at least ``dose[j]``.
    """
    _check_pair(dose_gy, "dose_gy", weights, "weights")
    return _knots(dose_gy, weights)


def dose_at_knots(volume: Any, dose: Any, v: float) -> float:
    """``D(v)`` on the knots of :func:`dose_volume_knots`: linear between knots, held at
    the ends (``numpy.interp(v, volume, dose)``, for any array namespace).

    Parameters
    ----------
    volume, dose : (k,) arrays
        Knot volumes (increasing) and doses (Gy).
    v : float
        Volume, in the unit of ``volume``.

    Returns
    -------
    float, Gy
    """
    _check_pair(volume, "volume", dose, "dose")
    return _at_knots(volume, dose, _check_number(v, "v"))


def dose_at_volume(dose_gy: Any, weights: Any, volume_pct: float) -> float:
    """``D_v``: the dose received by the hottest ``volume_pct`` % of the volume, Gy.

    Parameters
    ----------
    dose_gy : (n,) array of float, Gy
        Voxel doses; ``n >= 1``.
    weights : (n,) array of float
        Each voxel's volume, >= 0 (any unit; ``D_v`` is relative to their sum).
    volume_pct : float
        ``v`` in percent, 0 … 100.

    Returns
    -------
    float, Gy
        ``D(v / 100 · V)`` on the voxel-midpoint curve (module notes).

    Examples
    --------
    A ramp of 100 equal voxels, 1 … 100 Gy: ``D_v = 100.5 - v``.

    >>> import numpy as np
    >>> from optimizers import dose_at_volume
    >>> dose_at_volume(np.arange(1.0, 101.0), np.full(100, 0.01), 95.0)
    5.5
    """
    _check_pair(dose_gy, "dose_gy", weights, "weights")
    pct = _check_number(volume_pct, "volume_pct")
    if not 0.0 <= pct <= 100.0:
        raise InvalidProblemError(f"`volume_pct` must lie in [0, 100]; got {volume_pct!r}.")
    return dose_at_volume_unchecked(dose_gy, weights, pct)
