r"""MLC and jaw transmission, rounded leaf ends and tongue-and-groove as a fluence modifier.

The pencil-beam engine computes the dose of a fluence given as weighted rectangles in the
isocentre plane (:func:`dose_engine.field_dose`).  This module turns one static MLC + jaw
aperture into such rectangles, so the MLC physics stays in the one convolution path.  The
fluence (per MU) of an aperture is the product of a jaw factor and an MLC factor,
``F(x, y) = J(x, y) M(x, y)``:

* ``J = 1`` inside the jaw opening, ``t_jaw`` (jaw transmission) outside it.
* ``M`` within the MLC's reach: ``1`` in each leaf pair's opening, ``t`` (leaf
  transmission) under the leaves.  Each leaf tip is moved back by half the dosimetric
  leaf gap (rounded leaf ends: the opening of a pair is ``[A - DLG/2, B + DLG/2]``; a
  fully closed pair is then a slit of width DLG, as a sweeping-gap series measures it).
* In a band of width ``w`` (the tongue-and-groove width) centred on each boundary
  between adjacent leaf pairs, the tongue of one leaf and the groove of the other overlap:
  the band is open only where **both** pairs are open (the tongue-and-groove underdose of
  step-and-shoot), transmits ``t`` where one pair is closed and ``l`` (interleaf leakage,
  ``l ≥ t``) where both are.

Written with indicator functions ``1_R`` of rectangles (cores ``C_i`` of the pairs outside
the bands, band ``β_k`` between pairs ``k-1`` and ``k``, openings ``O_i``, the MLC's reach
``Φ``)

.. math::

   M = t\,1_Φ + (1-t)\sum_i 1_{C_i ∩ O_i}
       + \sum_k \left[(l-t)\,1_{β_k} - (l-t)(1_{β_k ∩ O_{k-1}} + 1_{β_k ∩ O_k})
       + (1 + l - 2t)\,1_{β_k ∩ O_{k-1} ∩ O_k}\right]

and ``F = M 1_{jaws} + t_jaw M' (1 - 1_{jaws})``: every term a rectangle with a weight (some
negative, the sum never), so the dose stays linear in the segment meterset.  ``M'`` is
``M`` with the interleaf leakage spread evenly over the leaves (``t' = t + (l - t) w /``
mean leaf width, no bands): through the jaws its pattern changes the fluence by less than
``t_jaw (l - t)`` (about 1e-5 of the open fluence), and without bands the pairs with equal
tips merge into one rectangle, which keeps the dose's cost near that of the open field.

References
----------
Boyer A et al. 2001, *Basic applications of multileaf collimators*, AAPM Report 72 (TG-50),
doi:10.37206/71 — leaf and interleaf transmission, tongue and groove, rounded leaf ends.
LoSasso T, Chui C-S, Ling CC 1998, Med Phys 25:1919, doi:10.1118/1.598381 — the dosimetric
leaf gap from sweeping gaps.
Deng J et al. 2001, Phys Med Biol 46:1039, doi:10.1088/0031-9155/46/4/310 — the
tongue-and-groove effect on step-and-shoot dose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from ._arguments import ARRAY, check_arguments
from .errors import BeamModelError, InvalidGeometryError

__all__ = ["MLCParameters", "aperture_fluence", "aperture_fluence_edges"]

#: Parameter name → (lowest, highest) plausible value.  The upper bounds catch per cent
#: given for a fraction and cm for mm (published ranges in docs/commissioning.md).
PARAMETER_RANGES: dict[str, tuple[float, float]] = {
    "transmission": (0.0, 0.1),
    "dosimetric_leaf_gap_mm": (0.0, 5.0),
    "interleaf_leakage": (0.0, 0.1),
    "tongue_and_groove_mm": (0.0, 3.0),
    "jaw_transmission": (0.0, 0.05),
    "source_to_mlc_mm": (100.0, 900.0),
    "source_to_x_jaws_mm": (100.0, 900.0),
    "source_to_y_jaws_mm": (100.0, 900.0),
}


@dataclass(frozen=True)
class MLCParameters:
    """Dosimetric parameters of an MLC and its jaws (see the module docstring).

    Attributes
    ----------
    transmission : float
        Leaf transmission, fraction of the open fluence (0.015 is 1.5 %).
    dosimetric_leaf_gap_mm : float, mm
        Dosimetric leaf gap: each leaf tip acts ``DLG / 2`` further back (isocentre plane).
    interleaf_leakage : float or None
        Transmission between two closed adjacent leaves (≥ ``transmission``); ``None``:
        equal to ``transmission``.
    tongue_and_groove_mm : float, mm
        Width of the band about each leaf-pair boundary shielded by either leaf.
    jaw_transmission : float
        Transmission of the jaws (fraction), outside the jaw opening.
    source_to_mlc_mm, source_to_x_jaws_mm, source_to_y_jaws_mm : float or None, mm
        Distance from the (focal) source to the middle of the leaves and of the X and Y
        jaws: how each collimator shields the extra-focal source
        (:func:`dose_engine.collimator_scatter_scale`); ``None``: unknown (all at one
        height).
    source : str
        Where the values come from (machine file, commissioned beam model).
    """

    transmission: float = 0.0
    dosimetric_leaf_gap_mm: float = 0.0
    interleaf_leakage: float | None = None
    tongue_and_groove_mm: float = 0.0
    jaw_transmission: float = 0.0
    source_to_mlc_mm: float | None = None
    source_to_x_jaws_mm: float | None = None
    source_to_y_jaws_mm: float | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for key, (lo, hi) in PARAMETER_RANGES.items():
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BeamModelError(
                    f"MLC parameters ({self.source or 'given'}): `{key}` must be a number; got "
                    f"{value!r}."
                )
            if not lo <= float(value) <= hi:
                unit = " mm" if key.endswith("_mm") else " (a fraction, not per cent)"
                raise BeamModelError(
                    f"MLC parameters ({self.source or 'given'}): `{key}` = {value!r} is outside "
                    f"{lo:g}-{hi:g}{unit}."
                )
            object.__setattr__(self, key, float(value))
        if self.interleaf_leakage is not None and self.interleaf_leakage < self.transmission:
            raise BeamModelError(
                f"MLC parameters ({self.source or 'given'}): `interleaf_leakage` "
                f"({self.interleaf_leakage:g}) is below `transmission` ({self.transmission:g}); "
                "leakage between leaves is the larger of the two."
            )
        if self.leakage > self.transmission and self.tongue_and_groove_mm == 0.0:
            raise BeamModelError(
                f"MLC parameters ({self.source or 'given'}): `interleaf_leakage` "
                f"({self.leakage:g}) above `transmission` acts in the band about each leaf "
                "boundary; give its width, `tongue_and_groove_mm` (> 0)."
            )

    @classmethod
    def from_mapping(cls, values: Mapping, *, source: str = "") -> MLCParameters:
        """Parameters from a table (``commissioning.toml``'s ``[mlc]``, a machine file's
        ``[dosimetry]``, a beam model's ``"mlc"``); other keys are refused.

        Raises
        ------
        BeamModelError
            An unknown key, a value that is not a number or outside its plausible range
            (:data:`PARAMETER_RANGES`), leakage below transmission; the message names
            ``source`` and the key.
        """
        unknown = sorted(set(values) - set(PARAMETER_RANGES))
        if unknown:
            raise BeamModelError(
                f"MLC parameters ({source or 'given'}): unknown entries {unknown}; expected "
                f"{', '.join(PARAMETER_RANGES)}."
            )
        return cls(**dict(values), source=source)

    def updated(self, values: Mapping, *, source: str) -> MLCParameters:
        """These parameters with the entries of ``values`` replaced (validated as in
        :meth:`from_mapping`); ``source`` describes the result."""
        mine = {k: v for k, v in asdict(self).items() if k in PARAMETER_RANGES}
        return MLCParameters.from_mapping({**mine, **dict(values)}, source=source)

    @property
    def leakage(self) -> float:
        """Interleaf leakage (``transmission`` when not given)."""
        return self.transmission if self.interleaf_leakage is None else self.interleaf_leakage


@check_arguments(leaf_positions_mm=ARRAY, leaf_boundaries_mm=ARRAY, jaws_mm=Mapping)
def aperture_fluence(
    leaf_positions_mm,
    leaf_boundaries_mm,
    jaws_mm: Mapping,
    parameters: MLCParameters,
    *,
    reach_x_mm: tuple[float, float] = (-200.0, 200.0),
) -> tuple[np.ndarray, np.ndarray]:
    """The fluence of one MLC + jaw aperture as weighted rectangles (per MU).

    Parameters
    ----------
    leaf_positions_mm : (2, n_pairs) array of float, mm
        Bank A (−x) and bank B (+x) leaf tips, IEC BLD x in the isocentre plane.
    leaf_boundaries_mm : (n_pairs + 1,) array of float, mm
        Leaf-pair boundaries along BLD y, increasing.
    jaws_mm : mapping of str to (float, float), mm
        ``{"X": (x1, x2), "Y": (y1, y2)}``; a missing jaw does not collimate.
    parameters : MLCParameters
    reach_x_mm : (float, float), mm, keyword-only
        Extent of the leaves along x (the fluence is 0 beyond; default the maximum field).

    Returns
    -------
    rectangles_mm : (n, 4) ndarray of float, mm
        ``[x1, x2, y1, y2]`` in the isocentre plane.
    weights : (n,) ndarray of float
        Fluence of each rectangle per MU of the segment (may be negative; their sum at any
        point is the fluence there, in ``[0, 1]``).

    Raises
    ------
    InvalidGeometryError
        Shapes disagree, or the tongue-and-groove band is wider than the narrowest leaf.

    See Also
    --------
    aperture_fluence_edges : The same rectangles with the leaf each x edge follows.
    """
    rects, weights, _ = _aperture_rectangles(
        leaf_positions_mm, leaf_boundaries_mm, jaws_mm, parameters, reach_x_mm
    )
    return rects, weights


@check_arguments(leaf_positions_mm=ARRAY, leaf_boundaries_mm=ARRAY, jaws_mm=Mapping)
def aperture_fluence_edges(
    leaf_positions_mm,
    leaf_boundaries_mm,
    jaws_mm: Mapping,
    parameters: MLCParameters,
    *,
    reach_x_mm: tuple[float, float] = (-200.0, 200.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`aperture_fluence` with the leaf that each rectangle's x edges follow.

    The rectangles' x edges are piecewise-linear functions of the leaf tips (a tip moved
    by the dosimetric leaf gap, the larger or smaller of two adjacent tips in a
    tongue-and-groove band, a jaw or the MLC's reach where they clip): where they are
    differentiable, each edge moves with exactly one leaf at unit rate, or with none.
    This is the Jacobian of the fluence's geometry that direct aperture optimisation needs
    (Shepard DM et al. 2002, Med Phys 29:1007, doi:10.1118/1.1477415).

    Parameters
    ----------
    leaf_positions_mm, leaf_boundaries_mm, jaws_mm, parameters, reach_x_mm
        As :func:`aperture_fluence`.

    Returns
    -------
    rectangles_mm : (n, 4) ndarray of float, mm
    weights : (n,) ndarray of float
        Exactly those of :func:`aperture_fluence`.
    edge_leaf : (n, 2) ndarray of int64
        For the ``x1`` and ``x2`` edge of each rectangle, the flat index of the leaf it
        follows (``pair`` for bank A, ``n_pairs + pair`` for bank B), or ``-1`` for an
        edge that no leaf moves (a jaw, the reach).  The fluence through the jaws (weight
        ``± jaw_transmission``) merges adjacent pairs with equal tips into one rectangle;
        there the tips are tied and its edges are ``-1`` (a share of the derivative of at
        most ``jaw_transmission`` of the open fluence's, where leaves lie beyond a jaw).

    Raises
    ------
    InvalidGeometryError
        As :func:`aperture_fluence`.

    Examples
    --------
    One open pair of an ideal MLC between two closed ones: its rectangle follows leaf A
    of pair 1 (index 1) and leaf B of pair 1 (index 3 + 1).

    >>> import numpy as np
    >>> from dose_engine import MLCParameters, aperture_fluence_edges
    >>> leaves = np.array([[0.0, -10.0, 0.0], [0.0, 10.0, 0.0]])
    >>> rects, w, edge = aperture_fluence_edges(leaves, [-15.0, -5.0, 5.0, 15.0], {},
    ...                                         MLCParameters())
    >>> rects.tolist(), w.tolist(), edge.tolist()
    ([[-10.0, 10.0, -5.0, 5.0]], [1.0], [[1, 4]])
    """
    return _aperture_rectangles(
        leaf_positions_mm, leaf_boundaries_mm, jaws_mm, parameters, reach_x_mm
    )


def _aperture_rectangles(
    leaf_positions_mm, leaf_boundaries_mm, jaws_mm: Mapping, parameters: MLCParameters, reach_x_mm
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rectangles, weights and edge leaves of :func:`aperture_fluence_edges`."""
    leaves = np.asarray(leaf_positions_mm, dtype=float)
    bounds = np.asarray(leaf_boundaries_mm, dtype=float).ravel()
    n = bounds.size - 1
    if leaves.shape != (2, n) or n < 1:
        raise InvalidGeometryError(
            f"`leaf_positions_mm` must have shape (2, {n}) for {bounds.size} leaf boundaries; "
            f"got {leaves.shape}."
        )
    p = parameters
    half_band = 0.5 * p.tongue_and_groove_mm
    if n > 1 and half_band >= 0.5 * float(np.min(np.diff(bounds))):
        raise InvalidGeometryError(
            f"tongue_and_groove_mm = {p.tongue_and_groove_mm:g} mm is not narrower than the "
            f"narrowest leaf ({float(np.min(np.diff(bounds))):g} mm)."
        )
    rx0, rx1 = (float(v) for v in reach_x_mm)
    a_tip = leaves[0] - 0.5 * p.dosimetric_leaf_gap_mm
    b_tip = leaves[1] + 0.5 * p.dosimetric_leaf_gap_mm
    a, b = np.clip(a_tip, rx0, rx1), np.clip(b_tip, rx0, rx1)
    # the leaf each tip follows (-1 where the reach clips it)
    ia = np.where(a == a_tip, np.arange(n), -1)
    ib = np.where(b == b_tip, n + np.arange(n), -1)
    jx = jaws_mm.get("X", (rx0, rx1))
    jy = jaws_mm.get("Y", (bounds[0], bounds[-1]))
    rects, weights, edges = _mlc_fluence(
        (a, ia), (b, ib), bounds, p.transmission, p.leakage, half_band, rx0, rx1
    )
    tj = p.jaw_transmission
    if tj > 0.0:
        # Through the jaws: the MLC fluence with the interleaf leakage spread evenly (its
        # pattern there changes the fluence by less than tj (l - t), ~1e-5), so that runs of
        # pairs with equal tips make one rectangle each (the dose's cost grows with rows).
        t_avg = p.transmission + (p.leakage - p.transmission) * 2 * half_band * n / np.ptp(bounds)
        run = np.concatenate([[0], np.flatnonzero((np.diff(a) != 0) | (np.diff(b) != 0)) + 1])
        merged = np.concatenate([bounds[run], [bounds[-1]]])
        # a run of one pair follows its leaves; in a longer run the tips are tied (moving
        # one leaf splits the run), and the edge is left to no leaf
        single = np.diff(np.concatenate([run, [n]])) == 1
        out, w_out, e_out = _mlc_fluence(
            (a[run], np.where(single, ia[run], -1)),
            (b[run], np.where(single, ib[run], -1)),
            merged,
            t_avg,
            t_avg,
            0.0,
            rx0,
            rx1,
        )
        # M 1_jaws + tj M' (1 - 1_jaws): the second term is M' less M' clipped to the jaws
        rects = np.concatenate([rects, out, out])
        weights = np.concatenate([weights, -tj * w_out, tj * w_out])
        edges = np.concatenate([edges, e_out, e_out])
        inside = slice(0, rects.shape[0] - out.shape[0])
    else:
        inside = slice(0, rects.shape[0])
    r_in, e_in = rects[inside], edges[inside]
    for col, jaw, pick in ((0, float(jx[0]), np.maximum), (1, float(jx[1]), np.minimum)):
        clipped = pick(r_in[:, col], jaw)
        e_in[clipped != r_in[:, col], col] = -1
        r_in[:, col] = clipped
    r_in[:, 2] = np.maximum(r_in[:, 2], float(jy[0]))
    r_in[:, 3] = np.minimum(r_in[:, 3], float(jy[1]))
    keep = (rects[:, 1] - rects[:, 0] > 1e-9) & (rects[:, 3] - rects[:, 2] > 1e-9) & (weights != 0)
    return rects[keep], weights[keep], edges[keep]


def _mlc_fluence(a_tips, b_tips, bounds, t: float, leak: float, half_band: float, rx0, rx1):
    """``M`` of the module docstring: rectangles ``(k, 4)``, weights ``(k,)`` and edge leaves
    ``(k, 2)`` for leaf openings ``[a_i, b_i]`` (tips already moved by DLG/2) of the pairs
    between ``bounds``; ``a_tips = (a, ia)`` with ``ia`` the leaf each tip follows."""
    (a, ia), (b, ib) = a_tips, b_tips
    n = bounds.size - 1
    inner = np.arange(n)
    core_lo = bounds[:-1] + half_band * (inner > 0)
    core_hi = bounds[1:] - half_band * (inner < n - 1)
    parts = [
        _rows(rx0, rx1, bounds[0], bounds[-1], t),  # everything under the MLC
        _rows(a, b, core_lo, core_hi, 1.0 - t, ia, ib),  # open cores
    ]
    if n > 1 and half_band > 0.0:
        yb = bounds[1:-1]
        lo, hi = yb - half_band, yb + half_band
        # the larger A tip and the smaller B tip of two adjacent pairs (ties: the lower pair)
        ia_max = np.where(a[:-1] >= a[1:], ia[:-1], ia[1:])
        ib_min = np.where(b[:-1] <= b[1:], ib[:-1], ib[1:])
        parts += [
            _rows(
                np.maximum(a[:-1], a[1:]),
                np.minimum(b[:-1], b[1:]),
                lo,
                hi,
                1.0 + leak - 2 * t,
                ia_max,
                ib_min,
            ),
            _rows(rx0, rx1, lo, hi, leak - t),
            _rows(a[:-1], b[:-1], lo, hi, t - leak, ia[:-1], ib[:-1]),
            _rows(a[1:], b[1:], lo, hi, t - leak, ia[1:], ib[1:]),
        ]
    return (
        np.concatenate([r for r, _, _ in parts]),
        np.concatenate([w for _, w, _ in parts]),
        np.concatenate([e for _, _, e in parts]),
    )


def _rows(x1, x2, y1, y2, weight: float, i1=-1, i2=-1):
    """Rectangles ``[x1, x2, y1, y2]`` (broadcast) with one weight, and the leaves ``i1``,
    ``i2`` their x edges follow (``-1``: none)."""
    arrays = np.broadcast_arrays(*(np.asarray(v, float) for v in (x1, x2, y1, y2)), i1, i2)
    r = np.stack(arrays[:4], axis=-1).reshape(-1, 4)
    e = np.stack(arrays[4:], axis=-1).reshape(-1, 2).astype(np.int64)
    return r, np.full(r.shape[0], float(weight)), e
