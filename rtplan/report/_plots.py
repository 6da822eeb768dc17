"""Report figures: DVH curves and orthogonal dose washes, rendered to PNG with Agg.

matplotlib is imported inside the functions (``import rtplan`` never loads it), and the
figures are built with :class:`matplotlib.figure.Figure` directly, so no pyplot state or
interactive backend is touched.

Display conventions (DICOM LPS, radiological view): axial slices have patient right on
the viewer's left and anterior at the top; coronal slices have superior at the top and
patient right on the left; sagittal slices have superior at the top and anterior on the
left.  Axes are labelled in patient millimetres.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["dose_wash_figure", "dvh_figure", "figure_to_png_base64"]

#: Fallback colours for structures without a (3006,002A) ROIDisplayColor.
_FALLBACK = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def _colour(rgb, i: int):
    if rgb is None:
        return _FALLBACK[i % len(_FALLBACK)]
    r, g, b = (int(c) for c in rgb)
    # very light colours (e.g. white skin contours) are unreadable on white paper
    if r + g + b > 720:
        return (0.5, 0.5, 0.5)
    return (r / 255.0, g / 255.0, b / 255.0)


def figure_to_png_base64(fig, *, dpi: int = 100) -> str:
    """Render a matplotlib figure to a PNG and return it base64-encoded (ASCII)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def dvh_figure(dvhs: Mapping[str, Any], *, prescription_gy: float | None = None):
    """Cumulative DVHs of all structures on one axes.

    Parameters
    ----------
    dvhs : mapping of str to DVH
        Curves to draw, in legend order; each drawn in its ``color_rgb``.
    prescription_gy : float, optional, Gy
        Draws a dashed vertical line at the prescription.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.8))
    ax = fig.add_subplot()
    for i, (name, d) in enumerate(dvhs.items()):
        ax.plot(
            d.dose_bins_gy,
            100.0 * d.volume_cc / d.total_volume_cc,
            color=_colour(d.color_rgb, i),
            lw=1.6,
            label=name,
        )
    if prescription_gy:
        ax.axvline(prescription_gy, color="k", ls="--", lw=0.8, label=f"Rx {prescription_gy:g} Gy")
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (% of structure)")
    ax.set_title("Cumulative dose-volume histograms")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 102)
    ax.grid(True, alpha=0.3)
    if dvhs:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def _edges(axis_mm: np.ndarray, spacing: float) -> tuple[float, float]:
    return float(axis_mm[0] - spacing / 2), float(axis_mm[-1] + spacing / 2)


_VIEWS = {
    # name: (fixed array axis, (horizontal xyz index, vertical xyz index), title)
    "axial": (0, (0, 1), "Axial"),
    "coronal": (1, (0, 2), "Coronal"),
    "sagittal": (2, (1, 2), "Sagittal"),
}
_AXIS_NAMES = ("x (mm, +left)", "y (mm, +posterior)", "z (mm, +superior)")


def _slice(volume: np.ndarray, grid, view: str, centre_mm: Sequence[float]):
    """2-D slice through ``centre_mm`` with rows = vertical axis, plus its extent (mm)."""
    fixed, (h, v), _ = _VIEWS[view]
    idx = grid.point_to_index(np.asarray(centre_mm, float))  # (z, y, x) fractional
    k = int(np.clip(np.rint(idx[fixed]), 0, grid.shape[fixed] - 1))
    img = np.take(volume, k, axis=fixed)  # axial: (y, x); coronal: (z, x); sagittal: (z, y)
    zyx = grid.zyx_axes_mm()
    axes_xyz = (zyx[2], zyx[1], zyx[0])
    sp = grid.spacing_mm
    hx = _edges(axes_xyz[h], sp[h])
    vx = _edges(axes_xyz[v], sp[v])
    return img, axes_xyz[h], axes_xyz[v], hx, vx


def _slice_axes(grid, view: str):
    """Horizontal and vertical voxel-centre axes (mm) of a view, and their outer edges."""
    _, (h, v), _ = _VIEWS[view]
    zyx = grid.zyx_axes_mm()
    axes_xyz = (zyx[2], zyx[1], zyx[0])
    sp = grid.spacing_mm
    return axes_xyz[h], axes_xyz[v], _edges(axes_xyz[h], sp[h]), _edges(axes_xyz[v], sp[v])


def dose_wash_figure(
    dose_gy: np.ndarray,
    dose_grid,
    view: str,
    *,
    centre_mm: Sequence[float],
    ct=None,
    structures: Mapping[str, tuple[np.ndarray, Any]] | None = None,
    prescription_gy: float | None = None,
    threshold_fraction: float = 0.1,
    structure_grid=None,
):
    """One orthogonal slice of the dose as a colour wash, with contours and a Gy colourbar.

    Parameters
    ----------
    dose_gy : (Z, Y, X) ndarray of float, Gy
        Dose on ``dose_grid``.
    dose_grid : dose_engine.Grid
    view : {"axial", "coronal", "sagittal"}
    centre_mm : (3,) sequence of float, mm
        Patient point ``(x, y, z)`` the slice goes through (e.g. the target centroid).
    ct : rtplan.Image, optional
        CT drawn in grey underneath (window −1000…1000 HU), on its own grid.
    structures : mapping of str to (occupancy, color_rgb), optional
        Occupancy ``(Z, Y, X)`` on ``structure_grid`` and a colour; drawn as the 0.5 contour.
    structure_grid : dose_engine.Grid, optional
        Grid of the occupancies (default ``dose_grid``; the CT grid shows whole contours).
    prescription_gy : float, optional, Gy
        Sets the top of the colour scale to max(dose max, Rx).
    threshold_fraction : float, default 0.1
        Dose below this fraction of the maximum is not coloured.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if view not in _VIEWS:
        raise ValueError(f"`view` must be one of {', '.join(_VIEWS)}; got {view!r}.")
    fixed, (h, v), title = _VIEWS[view]
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    img, hc, vc, hx, vx = _slice(np.asarray(dose_gy, float), dose_grid, view, centre_mm)
    origin = "upper" if view == "axial" else "lower"
    extent = (hx[0], hx[1], vx[1], vx[0]) if origin == "upper" else (hx[0], hx[1], vx[0], vx[1])
    if ct is not None:
        cimg, _, _, chx, cvx = _slice(np.asarray(ct.array), ct.grid, view, centre_mm)
        cext = (
            (chx[0], chx[1], cvx[1], cvx[0])
            if origin == "upper"
            else (chx[0], chx[1], cvx[0], cvx[1])
        )
        ax.imshow(
            cimg,
            cmap="gray",
            vmin=-1000,
            vmax=1000,
            extent=cext,
            origin=origin,
            interpolation="nearest",
        )
    dmax = float(np.max(dose_gy)) if np.size(dose_gy) else 0.0
    vmax = max(dmax, float(prescription_gy or 0.0), 1e-6)
    wash = np.ma.masked_less(img, threshold_fraction * vmax)
    im = ax.imshow(
        wash,
        cmap="jet",
        vmin=0.0,
        vmax=vmax,
        alpha=0.45 if ct is not None else 0.8,
        extent=extent,
        origin=origin,
        interpolation="bilinear",
    )
    sgrid = dose_grid if structure_grid is None else structure_grid
    shc, svc, _, _ = _slice_axes(sgrid, view)
    handles = []
    for i, (name, (occ, rgb)) in enumerate((structures or {}).items()):
        occ_img = _slice(np.asarray(occ, float), sgrid, view, centre_mm)[0]
        if occ_img.max() < 0.5 or occ_img.min() >= 0.5:
            continue
        col = _colour(rgb, i)
        ax.contour(shc, svc, occ_img, levels=[0.5], colors=[col], linewidths=1.3)
        handles.append(Line2D([], [], color=col, lw=1.3, label=name))
    if ct is not None:  # show the whole CT field of view
        _, _, chx, cvx = _slice_axes(ct.grid, view)
        hx = (min(hx[0], chx[0]), max(hx[1], chx[1]))
        vx = (min(vx[0], cvx[0]), max(vx[1], cvx[1]))
    ax.set_xlim(hx)
    ax.set_ylim((vx[1], vx[0]) if origin == "upper" else vx)
    ax.set_aspect("equal")
    ax.set_xlabel(_AXIS_NAMES[h])
    ax.set_ylabel(_AXIS_NAMES[v])
    pos = ("x", "y", "z")[2 - fixed]
    idx = dose_grid.point_to_index(np.asarray(centre_mm, float))
    k = int(np.clip(np.rint(idx[fixed]), 0, dose_grid.shape[fixed] - 1))
    at_mm = float(dose_grid.zyx_axes_mm()[fixed][k]) + 0.0  # the dose slice actually shown
    ax.set_title(f"{title} dose slice at {pos} = {at_mm:.1f} mm")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("Dose (Gy)")
    if handles:
        ax.legend(handles=handles, fontsize="x-small", loc="upper right", framealpha=0.7)
    fig.tight_layout()
    return fig
