"""The report's DVH figure, rendered to PNG with Agg.

matplotlib is imported inside the functions (``import rtplan`` never loads it), and the
figure is built with :class:`matplotlib.figure.Figure` directly, so no pyplot state or
interactive backend is touched.  The dose slices are drawn without matplotlib
(:mod:`rtplan.report._slices`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from ._colours import roi_colours

__all__ = ["dvh_figure", "figure_to_png_base64"]


def figure_to_png_base64(fig, *, dpi: int = 100) -> str:
    """Render a matplotlib figure to a PNG and return it base64-encoded (ASCII)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def dvh_figure(
    dvhs: Mapping[str, Any],
    *,
    prescription_gy: float | None = None,
    colours: Mapping[str, Sequence[int]] | None = None,
):
    """Cumulative DVHs of all structures on one axes.

    Parameters
    ----------
    dvhs : mapping of str to DVH
        Curves to draw, in legend order.
    prescription_gy : float, optional, Gy
        Draws a dashed vertical line at the prescription.
    colours : mapping of str to (3,) sequence of int, optional
        0–255 RGB per structure; default :func:`rtplan.report._colours.roi_colours` of
        the curves' ``color_rgb`` (their (3006,002A) *ROIDisplayColor*).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    if colours is None:
        colours = roi_colours({n: d.color_rgb for n, d in dvhs.items()})
    fig = Figure(figsize=(8.0, 4.8))
    ax = fig.add_subplot()
    for name, d in dvhs.items():
        ax.plot(
            d.dose_bins_gy,
            100.0 * d.volume_cc / d.total_volume_cc,
            color=tuple(c / 255.0 for c in colours[name]),
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
