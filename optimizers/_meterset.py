r"""A dose part that follows each beam's meterset: the MLC leaf transmission (issue 12).

Step-and-shoot segments deliver, under every beamlet of a beam, its open fluence plus a
fraction ``τ`` (leaf transmission, 1–2 %) of the time its leaves are closed, so that the
transmitted dose of beam ``b`` grows with the beam's meterset ``MU_b``, whatever its open
fluence. A unidirectional leaf sweep delivers a fluence map ``X`` (rows = leaf pairs) with
the least meterset of any unidirectional sequence (Bortfeld et al. 1994):

.. math:: MU_b(x) = \max_r \sum_j \max(X_{r,j} - X_{r,j-1}, 0), \qquad X_{r,0} = 0,

the largest sum of positive increments over the rows. :class:`MetersetDose` adds

.. math:: d(x) = \ldots + \sum_b U_{:,b}\, \kappa_b \tilde M_b(x)

to a problem's dose (:class:`optimizers.Problem` ``meterset_dose``), with ``M̃_b`` the
smooth surrogate of ``MU_b``: each positive part smoothed by
``(z + sqrt(z² + ε²) - ε) / 2`` and the maximum over rows by a log-sum-exp of
temperature ``t`` (``max ≤ M̃ ≤ max + t log n_rows`` up to the row sums' smoothing), both
convex, so the dose stays convex in the fluence. ``U[:, b]`` is the dose of beam ``b``'s
transmission per MU and ``κ_b`` calibrates the surrogate to the meterset the sequencer
and the segment-weight fit actually deliver. The optimiser then sees that modulation
costs transmitted dose in the organs the beam's jaws cover, and can trade one against
the other; a constant offset cannot follow the meterset.

Reference: T. Bortfeld, D. Kahler, T. Waldron, A. Boyer, "X-ray field compensation with
multileaf collimators", Int J Radiat Oncol Biol Phys 28:723–730 (1994),
doi:10.1016/0360-3016(94)90200-3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InvalidProblemError

__all__ = ["MetersetDose", "refuse_meterset_dose", "smooth_meterset"]


def _array(name: str, value: Any, ndim: int, dtype: Any) -> np.ndarray:
    """``value`` as a ``ndim``-D array of ``dtype`` (a copy), or InvalidProblemError naming
    the argument ``name``."""
    try:
        a = np.array(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidProblemError(f"`{name}` must be a {ndim}-D numeric array: {exc}") from None
    if a.ndim != ndim:
        raise InvalidProblemError(f"`{name}` has shape {a.shape}; expected a {ndim}-D array.")
    return a


def _positive(name: str, value: Any) -> float:
    """``value`` as a finite float > 0, or InvalidProblemError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidProblemError(f"`{name}` must be a number > 0 (MU), got {value!r}.")
    if not (np.isfinite(value) and value > 0):
        raise InvalidProblemError(f"`{name}` must be > 0 (MU), got {value!r}.")
    return float(value)


def _beam_maps(beam_maps: Any, n_beamlets: int) -> tuple[np.ndarray, ...]:
    """Each beam's map of beamlet indices as a read-only 2-D int64 array (-1: none), or
    InvalidProblemError naming the beam."""
    if not isinstance(beam_maps, Sequence) or isinstance(beam_maps, str | bytes):
        raise InvalidProblemError(
            f"`beam_maps` must be a sequence of 2-D index arrays, got {type(beam_maps).__name__}."
        )
    out = []
    seen = np.zeros(n_beamlets, dtype=bool)
    for b, m in enumerate(beam_maps):
        a = _array(f"beam_maps[{b}]", m, 2, np.int64)
        used = a[a >= 0]
        if (a < -1).any() or (used.size and used.max() >= n_beamlets):
            raise InvalidProblemError(
                f"`beam_maps[{b}]` holds indices outside -1..{n_beamlets - 1}."
            )
        if seen[used].any() or np.unique(used).size != used.size:
            raise InvalidProblemError(
                f"`beam_maps[{b}]` repeats a beamlet (each beamlet belongs to one map cell)."
            )
        seen[used] = True
        a.flags.writeable = False
        out.append(a)
    return tuple(out)


def smooth_meterset(
    x: np.ndarray,
    beam_map: np.ndarray,
    *,
    epsilon_mu: float,
    temperature_mu: float,
    weight: float | None = None,
) -> tuple[float, np.ndarray | None]:
    """Smoothed sweep meterset of one beam and, with ``weight``, ``weight`` times its
    gradient.

    Parameters
    ----------
    x : (n_beamlets,) ndarray of float64, MU
        The fluence of every beamlet.
    beam_map : (n_rows, n_cols) ndarray of int
        The beam's beamlet indices (rows = leaf pairs, leaves moving along a row; -1: no
        beamlet, fluence 0).
    epsilon_mu, temperature_mu : float, MU
        Smoothing of each positive increment and of the maximum over rows (> 0).
    weight : float, optional
        Return ``weight · ∂M̃/∂x`` as well (``(n_beamlets,)``, zero off the beam).

    Returns
    -------
    meterset : float, MU
    gradient : (n_beamlets,) ndarray of float64 or None

    Raises
    ------
    InvalidProblemError
        ``x`` not 1-D, ``beam_map`` not 2-D or indexing outside ``x``, smoothing not > 0
        (each named).
    """
    x = _array("x", x, 1, np.float64)
    beam_map = _array("beam_map", beam_map, 2, np.int64)
    epsilon_mu = _positive("epsilon_mu", epsilon_mu)
    temperature_mu = _positive("temperature_mu", temperature_mu)
    if beam_map.size and (beam_map.min() < -1 or beam_map.max() >= x.size):
        raise InvalidProblemError(f"`beam_map` holds indices outside -1..{x.size - 1}.")
    valid = beam_map >= 0
    fmap = np.where(valid, x[np.where(valid, beam_map, 0)], 0.0)
    inc = np.diff(fmap, axis=1, prepend=0.0)
    root = np.sqrt(inc * inc + epsilon_mu * epsilon_mu)
    rows = 0.5 * (inc + root - epsilon_mu).sum(axis=1)
    top = float(rows.max())
    e = np.exp((rows - top) / temperature_mu)
    value = top + temperature_mu * float(np.log(e.sum()))
    if weight is None:
        return value, None
    p = e / e.sum()
    slope = 0.5 * (1.0 + inc / root)  # d(smoothed positive part)/d(increment)
    dmap = p[:, None] * (slope - np.pad(slope[:, 1:], ((0, 0), (0, 1))))
    g = np.zeros_like(x)
    g[beam_map[valid]] = weight * dmap[valid]
    return value, g


class MetersetDose:
    """The dose of each beam's leaf transmission, which scales with its meterset.

    ``dose(x) = U κ ∘ M̃(x)``: column ``b`` of ``U`` times the calibrated smooth sweep
    meterset of beam ``b`` (:func:`smooth_meterset`; module docstring).

    Parameters
    ----------
    beam_maps : sequence of (n_rows_b, n_cols_b) int arrays
        For each beam, the beamlet index of every fluence-map cell (rows = leaf pairs;
        -1 where there is no beamlet).
    columns : (n_voxels, n_beams) array of float, Gy per MU
        ``U``: the dose of each beam's transmission per MU of its meterset, on the rows of
        the problem's matrix.
    n_beamlets : int
        Columns of the problem's matrix.
    epsilon_mu, temperature_mu : float, MU
        Smoothing of the increments and of the maximum over rows (> 0).
    calibration : (n_beams,) array of float, optional
        ``κ``, the delivered meterset per MU of the surrogate (default 1).

    Raises
    ------
    InvalidProblemError
        Shapes that do not match, indices out of range or repeated, non-finite or
        negative columns or calibration, smoothing not > 0 (each named).
    """

    def __init__(
        self,
        beam_maps: Sequence[Any],
        columns: Any,
        n_beamlets: int,
        *,
        epsilon_mu: float,
        temperature_mu: float,
        calibration: Any = None,
    ) -> None:
        if isinstance(n_beamlets, bool) or not isinstance(n_beamlets, int | np.integer):
            raise InvalidProblemError(f"`n_beamlets` must be an integer, got {n_beamlets!r}.")
        self.beam_maps = _beam_maps(beam_maps, int(n_beamlets))
        self.n_beamlets = int(n_beamlets)
        u = _array("columns", columns, 2, np.float64)
        n_beams = len(self.beam_maps)
        if u.shape[1] != n_beams:
            raise InvalidProblemError(
                f"`columns` has shape {u.shape}; expected (n_voxels, {n_beams}): one column "
                "per beam map."
            )
        if not np.all(np.isfinite(u)) or (u < 0).any():
            raise InvalidProblemError("`columns` must be finite and >= 0 (Gy per MU).")
        k = np.ones(n_beams)
        if calibration is not None:
            k = _array("calibration", calibration, 1, np.float64)
        if k.shape != (n_beams,) or not np.all(np.isfinite(k)) or (k < 0).any():
            raise InvalidProblemError(
                f"`calibration` must be {n_beams} finite values >= 0, got shape {k.shape}."
            )
        epsilon_mu = _positive("epsilon_mu", epsilon_mu)
        temperature_mu = _positive("temperature_mu", temperature_mu)
        u.flags.writeable = False
        k.flags.writeable = False
        self.columns = u
        self.calibration = k
        self.epsilon_mu = float(epsilon_mu)
        self.temperature_mu = float(temperature_mu)

    def __repr__(self) -> str:
        return (
            f"MetersetDose(n_beams={len(self.beam_maps)}, n_voxels={self.columns.shape[0]}, "
            f"epsilon_mu={self.epsilon_mu:.3g}, temperature_mu={self.temperature_mu:.3g})"
        )

    def surrogate(self, x: Any) -> np.ndarray:
        """``M̃_b(x)`` of every beam, uncalibrated, MU ``(n_beams,)``."""
        x = np.asarray(x, dtype=np.float64)
        return np.array(
            [
                smooth_meterset(
                    x, m, epsilon_mu=self.epsilon_mu, temperature_mu=self.temperature_mu
                )[0]
                for m in self.beam_maps
            ]
        )

    def meterset(self, x: Any) -> np.ndarray:
        """``κ_b M̃_b(x)``, MU ``(n_beams,)``."""
        return self.calibration * self.surrogate(x)

    def meterset_vjp(self, x: Any, w: Any) -> np.ndarray:
        """``Σ_b w_b κ_b ∂M̃_b/∂x``, ``(n_beamlets,)`` (``w``: ``(n_beams,)``)."""
        x = np.asarray(x, dtype=np.float64)
        w = np.asarray(w, dtype=np.float64) * self.calibration
        g = np.zeros_like(x)
        for b, m in enumerate(self.beam_maps):
            if w[b] != 0.0:
                g += smooth_meterset(
                    x,
                    m,
                    epsilon_mu=self.epsilon_mu,
                    temperature_mu=self.temperature_mu,
                    weight=float(w[b]),
                )[1]
        return g

    def dose(self, x: Any, rows: np.ndarray | None = None) -> np.ndarray:
        """``U κ∘M̃(x)`` on every row (or on ``rows``), Gy, float64."""
        u = self.columns if rows is None else self.columns[rows]
        return u @ self.meterset(x)


def refuse_meterset_dose(problem: Any, where: str) -> None:
    """InvalidProblemError when ``problem`` has a ``meterset_dose``: ``where`` (a solver or
    a certificate) models the dose as linear in the fluence."""
    if getattr(problem, "meterset_dose", None) is not None:
        raise InvalidProblemError(
            f"{where} takes a dose linear in the fluence and cannot use the problem's "
            "`meterset_dose` (a convex, non-linear part); solve with method='first_order', "
            "or leave it out."
        )
