"""Dose-volume histograms from a dose array and a fractional structure occupancy.

Partial voxels
--------------
A structure is given as a fractional *occupancy* on the dose grid (``(Z, Y, X)`` array in
``[0, 1]``, e.g. :meth:`rtplan.Structure.occupancy`).  Voxel ``k`` enters the DVH with the
weight ``w_k = occupancy_k × voxel_volume_cc`` and the dose ``d_k`` sampled at its centre:
a voxel half inside the structure contributes half its volume, at its centre dose.  Voxels
with zero occupancy are ignored.  The structure volume is ``V = Σ w_k``.

Interpolation convention (the "voxel-midpoint" rule)
---------------------------------------------------
The curve is :func:`optimizers.dose_volume_knots`, the one ``D_v`` of the project.
Pool the voxels of equal dose and sort the distinct doses in decreasing order,
``d_1 > d_2 > … > d_n``, with pooled volumes ``w_k`` and cumulative volume
``C_k = w_1 + … + w_k``.  Each voxel's volume is taken to be spread evenly around its
centre dose, so the dose-at-volume curve ``D(v)`` is the piecewise-linear curve through the
knots ``(C_{k-1} + w_k / 2, d_k)``, held at ``d_1`` below the first knot and at ``d_n``
beyond the last.  This makes Dx exact for a dose that is linear across equal voxels or
equal slabs of voxels (the classic analytic test), and equal to the dose itself for a uniform dose.

* ``Dx%`` ("minimum dose to the hottest x % of the volume") is ``D(x/100 · V)``;
  ``Dxcc`` is ``D(x)``.
* ``Vx`` (volume receiving *at least* ``x`` Gy) is the largest ``v`` with ``D(v) ≥ x``:
  the inverse of the same curve, ``0`` above the maximum, ``V`` at or below the minimum.
* ``mean = Σ w_k d_k / V`` (exact, no binning); ``max`` and ``min`` are the extreme voxel
  doses; the clinical "Dmax" is ``D0.03cc`` (ICRU 83 near-maximum by volume).

The binned arrays (:attr:`DVH.dose_bins_gy`, :attr:`DVH.volume_cc`,
:attr:`DVH.differential`) are sampled from the same curve, so a plot and the metrics agree;
the metrics themselves never depend on ``bin_width_gy``.

References
----------
.. [1] ICRU Report 83, "Prescribing, recording, and reporting photon-beam
   intensity-modulated radiation therapy (IMRT)", J ICRU 10(1), 2010.
   :doi:`10.1093/jicru/ndq002`
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from dose_engine._limits import check_limit
from optimizers import dose_at_knots, dose_volume_knots

from .._internal.arguments import ARRAY, NUMBER, check_arguments, optional
from ..errors import InputError, StructureError

__all__ = ["DVH", "DVHCollection", "check_dose_values", "dvh"]
#: Negative doses down to this (Gy) are interpolation noise; anything lower is refused.
NEGATIVE_DOSE_TOLERANCE_GY = -1e-6


def check_dose_values(dose: np.ndarray, what: str) -> None:
    """Refuse a dose array holding NaN, infinite or negative values (Gy).

    ``what`` names the array or file in the message, e.g. ``"`dose_gy`"``.
    """
    bad = ~np.isfinite(dose)
    if np.any(bad):
        idx = tuple(int(v[0]) for v in np.nonzero(bad))
        raise InputError(
            f"{what} holds {int(bad.sum())} NaN or infinite value(s) (first at voxel {idx}); "
            "a dose must be finite."
        )
    low = float(np.min(dose)) if dose.size else 0.0
    if low < NEGATIVE_DOSE_TOLERANCE_GY:
        idx = tuple(int(v) for v in np.unravel_index(int(np.argmin(dose)), dose.shape))
        raise InputError(
            f"{what} holds {int((dose < NEGATIVE_DOSE_TOLERANCE_GY).sum())} negative value(s) "
            f"(minimum {low:.4g} Gy at voxel {idx}); a dose cannot be negative."
        )


logger = logging.getLogger("rtplan.evaluation")

#: Volume used for the near-maximum "Dmax" (cm³).
DMAX_VOLUME_CC = 0.03


@dataclass(frozen=True, repr=False, eq=False)
class DVH:
    """A cumulative dose-volume histogram of one structure (frozen).

    Build one with :func:`dvh`.  See the module notes for how partial voxels count and
    for the interpolation convention shared by every metric.

    Attributes
    ----------
    dose_bins_gy : (n_bins + 1,) ndarray of float, Gy
        Bin edges ``0, b, 2b, …`` up to at least the maximum dose (``b`` = bin width).
    volume_cc : (n_bins + 1,) ndarray of float, cm³
        Cumulative DVH: volume receiving at least ``dose_bins_gy[i]``.  ``volume_cc[0]`` is
        the structure volume, the last entry is 0.
    differential : (n_bins,) ndarray of float, cm³
        Volume whose dose lies in ``[dose_bins_gy[i], dose_bins_gy[i + 1])``.
    total_volume_cc : float, cm³
        Structure volume ``Σ occupancy × voxel volume``.
    mean_gy, min_gy, true_max_gy : float, Gy
        Volume-weighted mean and the extreme voxel doses.
    name : str
        Structure name ("" if not given).
    color_rgb : tuple of int or None
        Display colour (RT-STRUCT (3006,002A) *ROIDisplayColor*), if known.
    """

    dose_bins_gy: np.ndarray
    volume_cc: np.ndarray
    differential: np.ndarray
    total_volume_cc: float
    mean_gy: float
    min_gy: float
    true_max_gy: float
    name: str = ""
    color_rgb: tuple[int, int, int] | None = None
    # knots of D(v): volume (increasing, cm³) and dose (non-increasing, Gy)
    _knot_volume_cc: np.ndarray = field(default=None, repr=False)
    _knot_dose_gy: np.ndarray = field(default=None, repr=False)
    _knot_cum_cc: np.ndarray = field(default=None, repr=False)

    # ------------------------------------------------------------ metrics
    @property
    def bin_width_gy(self) -> float:
        """Width of the dose bins in Gy."""
        return float(self.dose_bins_gy[1] - self.dose_bins_gy[0])

    @property
    def max_gy(self) -> float:
        """Near-maximum dose D0.03cc in Gy (the clinical "Dmax"); see :attr:`true_max_gy`."""
        return self.dose_at_volume_cc(DMAX_VOLUME_CC)

    def dose_at_volume(self, percent: float) -> float:
        """Dx%: the minimum dose received by the hottest ``percent`` % of the volume.

        Parameters
        ----------
        percent : float
            Volume in percent of the structure volume, ``0 ≤ percent ≤ 100``.

        Returns
        -------
        float, Gy
            ``D(percent / 100 × V)`` on the voxel-midpoint curve (module notes).
        """
        p = float(percent)
        if not 0.0 <= p <= 100.0:
            raise InputError(
                f"`percent` must lie in [0, 100] for a dose-at-volume metric; got {percent!r}."
            )
        return self._dose_at(p / 100.0 * self.total_volume_cc)

    def dose_at_volume_cc(self, cc: float) -> float:
        """Dxcc: the minimum dose received by the hottest ``cc`` cm³ of the structure.

        A volume larger than the structure gives the minimum dose (and a log message).
        """
        v = float(cc)
        if not v >= 0.0:
            raise InputError(f"`cc` must be a non-negative volume in cm³; got {cc!r}.")
        if v > self.total_volume_cc:
            logger.info(
                "D%gcc asked of %r whose volume is only %.4g cc; returning its minimum dose.",
                v,
                self.name,
                self.total_volume_cc,
            )
        return self._dose_at(v)

    def volume_at_dose(self, gy: float, *, percent: bool = False) -> float:
        """Vx: volume receiving at least ``gy`` Gy, in cm³ (or % with ``percent=True``)."""
        d = float(gy)
        k_dose = self._knot_dose_gy
        k_vol = self._knot_volume_cc
        n = k_dose.size
        # number of knots with dose >= d (knot doses are non-increasing)
        j = int(np.searchsorted(-k_dose, -d, side="right"))
        if j == 0:
            v = 0.0
        elif j == n:
            v = self.total_volume_cc
        else:
            d_hi, d_lo = k_dose[j - 1], k_dose[j]
            v_hi, v_lo = k_vol[j - 1], k_vol[j]
            v = float(v_hi + (v_lo - v_hi) * (d_hi - d) / (d_hi - d_lo))
        if percent:
            return 100.0 * v / self.total_volume_cc
        return float(v)

    def volume_at_or_above(self, gy: float) -> float:
        """Volume (cm³) of the voxels whose centre dose is at least ``gy``, without interpolation.

        Voxel counting as in Paddick's CI: a voxel is in or out as a whole (weighted by its
        occupancy).  :meth:`volume_at_dose` interpolates instead.
        """
        j = int(np.searchsorted(-self._knot_dose_gy, -float(gy), side="right"))
        return 0.0 if j == 0 else float(self._knot_cum_cc[j - 1])

    def _dose_at(self, v: float) -> float:
        return dose_at_knots(self._knot_volume_cc, self._knot_dose_gy, v)

    @property
    def d98_gy(self) -> float:
        """D98% (ICRU 83 near-minimum) in Gy."""
        return self.dose_at_volume(98.0)

    @property
    def d95_gy(self) -> float:
        """D95% in Gy."""
        return self.dose_at_volume(95.0)

    @property
    def d50_gy(self) -> float:
        """D50% (median dose) in Gy."""
        return self.dose_at_volume(50.0)

    @property
    def d2_gy(self) -> float:
        """D2% (ICRU 83 near-maximum) in Gy."""
        return self.dose_at_volume(2.0)

    def summary(self) -> dict[str, float]:
        """The standard metric row: volume (cc), mean, min, D0.03cc max, D98, D95, D50, D2 (Gy)."""
        return {
            "volume_cc": self.total_volume_cc,
            "mean_gy": self.mean_gy,
            "min_gy": self.min_gy,
            "max_gy": self.max_gy,
            "d98_gy": self.d98_gy,
            "d95_gy": self.d95_gy,
            "d50_gy": self.d50_gy,
            "d2_gy": self.d2_gy,
        }

    # ------------------------------------------------------------ display
    def plot(self, ax=None, *, relative: bool = True, **kwargs):
        """Plot the cumulative DVH with matplotlib (imported here, not at ``import rtplan``).

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Axes to draw in; a new figure is made when omitted.
        relative : bool, default True
            Volume axis in % of the structure volume (else cm³).
        **kwargs
            Passed to :meth:`matplotlib.axes.Axes.plot`.

        Returns
        -------
        matplotlib.axes.Axes
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        vol = self.volume_cc
        if relative:
            vol = 100.0 * vol / self.total_volume_cc
        kwargs.setdefault("label", self.name or None)
        if self.color_rgb is not None and "color" not in kwargs:
            kwargs["color"] = tuple(c / 255.0 for c in self.color_rgb)
        ax.plot(self.dose_bins_gy, vol, **kwargs)
        ax.set_xlabel("Dose (Gy)")
        ax.set_ylabel("Volume (%)" if relative else "Volume (cm³)")
        ax.grid(True, alpha=0.3)
        return ax

    def __repr__(self) -> str:
        return (
            f"DVH({self.name!r}: volume {self.total_volume_cc:.4g} cc, mean {self.mean_gy:.4g} Gy, "
            f"D98 {self.d98_gy:.4g} Gy, D2 {self.d2_gy:.4g} Gy, max(0.03cc) {self.max_gy:.4g} Gy, "
            f"{self.dose_bins_gy.size - 1} bins of {self.bin_width_gy:g} Gy)"
        )


@check_arguments(dose_gy=ARRAY, occupancy=ARRAY, voxel_volume_cc=NUMBER)
def dvh(
    dose_gy,
    occupancy,
    *,
    voxel_volume_cc: float,
    bin_width_gy: float = 0.01,
    name: str = "",
    color_rgb: tuple[int, int, int] | None = None,
) -> DVH:
    """Compute the DVH of one structure.

    Parameters
    ----------
    dose_gy : (Z, Y, X) array_like of float, Gy
        Dose at voxel centres.
    occupancy : (Z, Y, X) array_like of float in [0, 1], or of bool
        Fraction of each voxel inside the structure (a boolean mask counts whole voxels).
    voxel_volume_cc : float, cm³
        Volume of one voxel (``grid.voxel_volume_cc``).
    bin_width_gy : float, default 0.01
        Width of the dose bins of the histogram arrays.  Metrics do not depend on it.
    name : str, optional
        Structure name, used in messages, plots and reprs.
    color_rgb : (3,) tuple of int, optional
        Display colour 0–255.

    Returns
    -------
    DVH

    Raises
    ------
    InputError
        Shapes differ, the bin width or voxel volume is not positive, or the dose is not finite.
    StructureError
        The structure has no volume on this grid.

    Notes
    -----
    A voxel counts with weight ``occupancy × voxel_volume_cc`` at its centre dose; see the
    module notes for the interpolation convention.

    Examples
    --------
    >>> import numpy as np
    >>> d = dvh(np.full((2, 2, 2), 2.0), np.ones((2, 2, 2)), voxel_volume_cc=0.5)
    >>> d.total_volume_cc, d.dose_at_volume(95), d.volume_at_dose(2.0, percent=True)
    (4.0, 2.0, 100.0)
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    occ = np.asarray(occupancy)
    label = f" of structure '{name}'" if name else ""
    if dose.shape != occ.shape:
        raise InputError(
            f"`dose_gy` has shape {dose.shape} but `occupancy`{label} has shape {occ.shape}; "
            "rasterise the structure on the dose grid (structure.occupancy(dose_grid))."
        )
    bw = float(bin_width_gy)
    if not (np.isfinite(bw) and bw > 0):
        raise InputError(f"`bin_width_gy` must be a positive number of Gy; got {bin_width_gy!r}.")
    vv = float(voxel_volume_cc)
    if not (np.isfinite(vv) and vv > 0):
        raise InputError(f"`voxel_volume_cc` must be positive; got {voxel_volume_cc!r}.")
    occ = occ.astype(np.float64, copy=False).ravel()
    sel = occ > 0
    if not np.any(sel):
        who = f"Structure '{name}'" if name else "The structure"
        raise StructureError(
            f"{who} has no voxel on the dose grid (occupancy is all zero); check that it "
            "lies inside the dose grid and that its contours match the grid's frame."
        )
    d = dose.ravel()[sel]
    if not np.all(np.isfinite(d)):
        raise InputError(f"`dose_gy` holds non-finite values inside the structure{label}.")
    w = np.clip(occ[sel], 0.0, 1.0) * vv
    total = float(np.sum(w))
    mean = float(np.dot(w, d) / total)
    # one knot per distinct dose (voxels of equal dose pool their volume), hottest first
    knot_v, d, cum = dose_volume_knots(d, w)

    n_bins_estimate = d[0] / bw + 1 if d[0] > 0 else 1
    check_limit(
        "dvh_bins",
        n_bins_estimate,
        f"`bin_width_gy` {bw:g} Gy over doses up to {d[0]:.4g} Gy{label} "
        f"({n_bins_estimate * 24 / 2**20:.3g} MiB per DVH)",
        hint="Use a wider bin (e.g. 0.01 Gy).",
    )
    n_bins = int(np.floor(d[0] / bw + 1e-9)) + 1 if d[0] > 0 else 1
    edges = np.arange(n_bins + 1, dtype=np.float64) * bw
    out = DVH(
        dose_bins_gy=edges,
        volume_cc=np.zeros_like(edges),
        differential=np.zeros(n_bins),
        total_volume_cc=total,
        mean_gy=mean,
        min_gy=float(d[-1]),
        true_max_gy=float(d[0]),
        name=str(name),
        color_rgb=None if color_rgb is None else tuple(int(c) for c in color_rgb),
        _knot_volume_cc=knot_v,
        _knot_dose_gy=d,
        _knot_cum_cc=cum,
    )
    cumulative = _volume_curve(d, knot_v, total, edges)
    differential = -np.diff(cumulative)
    for arr in (cumulative, differential):
        arr.setflags(write=False)
    for arr in (d, knot_v, cum):
        arr.setflags(write=False)
    object.__setattr__(out, "volume_cc", cumulative)
    object.__setattr__(out, "differential", differential)
    return out


def _volume_curve(k_dose: np.ndarray, k_vol: np.ndarray, total: float, doses: np.ndarray):
    """Vectorised :meth:`DVH.volume_at_dose` (cm³) for many doses."""
    n = k_dose.size
    j = np.searchsorted(-k_dose, -doses, side="right")
    out = np.empty(doses.shape, dtype=np.float64)
    out[j == 0] = 0.0
    out[j == n] = total
    mid = (j > 0) & (j < n)
    jm = j[mid]
    d_hi, d_lo = k_dose[jm - 1], k_dose[jm]
    v_hi, v_lo = k_vol[jm - 1], k_vol[jm]
    out[mid] = v_hi + (v_lo - v_hi) * (d_hi - doses[mid]) / (d_hi - d_lo)
    return out


@check_arguments(dvhs=optional("collections.abc:Mapping"))
class DVHCollection(Mapping):
    """DVHs of several structures, by name, in insertion order (read-only mapping).

    Renders as a metric table in Jupyter (``_repr_html_``) and plots all curves together.
    """

    def __init__(self, dvhs: Mapping[str, DVH] | None = None):
        self._d: dict[str, DVH] = dict(dvhs or {})

    def __getitem__(self, name: str) -> DVH:
        try:
            return self._d[name]
        except KeyError:
            raise StructureError(
                f"No DVH for structure '{name}'; available: {', '.join(self._d) or 'none'}."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def plot(self, ax=None, *, relative: bool = True):
        """Plot every DVH on one axes, with a legend; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 5))
        for d in self._d.values():
            d.plot(ax, relative=relative)
        if self._d:
            ax.legend(fontsize="small", loc="best")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        return ax

    def table(self) -> list[dict[str, float | str]]:
        """One :meth:`DVH.summary` row per structure, with its name under ``"structure"``."""
        return [{"structure": n, **d.summary()} for n, d in self._d.items()]

    def __repr__(self) -> str:
        head = (
            f"{'structure':<20}{'vol cc':>10}{'mean':>9}{'min':>9}{'max':>9}"
            f"{'D98':>9}{'D95':>9}{'D50':>9}{'D2':>9}"
        )
        lines = [f"DVHCollection of {len(self)} structures (doses in Gy)", head]
        for row in self.table():
            lines.append(
                f"{row['structure'][:19]:<20}{row['volume_cc']:>10.2f}"
                + "".join(
                    f"{row[k]:>9.2f}"
                    for k in ("mean_gy", "min_gy", "max_gy", "d98_gy", "d95_gy", "d50_gy", "d2_gy")
                )
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cols = ["volume_cc", "mean_gy", "min_gy", "max_gy", "d98_gy", "d95_gy", "d50_gy", "d2_gy"]
        heads = [
            "Volume (cc)",
            "Mean (Gy)",
            "Min (Gy)",
            "Max D0.03cc (Gy)",
            "D98 (Gy)",
            "D95 (Gy)",
            "D50 (Gy)",
            "D2 (Gy)",
        ]
        rows = []
        for n, d in self._d.items():
            s = d.summary()
            swatch = ""
            if d.color_rgb is not None:
                r, g, b = d.color_rgb
                swatch = (
                    f'<span style="display:inline-block;width:0.8em;height:0.8em;'
                    f'background:rgb({r},{g},{b});margin-right:0.4em"></span>'
                )
            cells = "".join(f"<td>{s[c]:.2f}</td>" for c in cols)
            name = f"<td style='text-align:left'>{swatch}{html.escape(n)}</td>"
            rows.append(f"<tr>{name}{cells}</tr>")
        th = "".join(f"<th>{h}</th>" for h in ["Structure", *heads])
        return (
            '<table class="rtplan-dvh" style="text-align:right">'
            f"<thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
