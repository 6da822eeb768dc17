"""The report's slice viewer: every axial, coronal and sagittal slice of the dose grid.

Each slice is pre-rendered as a small palette PNG (CT in grey, isodose lines, structure
contours, the global-maximum marker) and embedded as base64; one ``<input type=range>``
per view and a few lines of inline script swap the shown image.  No server, no network.

Rendering is plain numpy (no matplotlib): the dose, the CT and each structure's
occupancy are resampled once (trilinear) to a *display grid*, the dose grid refined by
an integer factor per axis, so that every dose-grid voxel centre is a display-grid node:
slice ``k`` of a view is exactly dose-grid slice ``k``.  Lines are the 1-pixel boundary
of ``dose >= level`` (isodoses) and 2-pixel boundaries of ``occupancy >= 0.5``
(structures) on that grid.

Display conventions (DICOM LPS, radiological view): axial slices have patient right on
the viewer's left and anterior at the top; coronal slices superior at the top and patient
right on the left; sagittal slices superior at the top and anterior on the left.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dose_engine import Grid

from ._colours import MAX_MARKER_COLOUR, hex_colour

__all__ = [
    "VIEWS",
    "SliceStack",
    "display_grid",
    "legend_html",
    "render_slices",
    "slice_viewer_html",
]

#: View name → (fixed array axis, axis letter, what the image shows).
VIEWS = {
    "axial": (0, "z", "patient right on the left, anterior at the top"),
    "coronal": (1, "y", "superior at the top, patient right on the left"),
    "sagittal": (2, "x", "superior at the top, anterior on the left"),
}
#: Target size of a display pixel, mm (the dose grid is refined by round(spacing / this)).
DISPLAY_MM = 1.5
#: Upper bound on display-grid voxels (memory: 4 bytes each per volume resampled).
MAX_DISPLAY_VOXELS = 12_000_000
#: CT grey window, HU (lung to bone).
CT_WINDOW_HU = (-1000.0, 1000.0)
#: Largest displayed image side, CSS pixels (all views share one mm-to-pixel scale).
VIEW_SIZE_PX = 420
#: Half-length of the global-maximum cross, display pixels.
MARKER_ARM_PX = 6


@dataclass(frozen=True)
class SliceStack:
    """The rendered slices of one view.

    Attributes
    ----------
    view : {"axial", "coronal", "sagittal"}
    png_base64 : list of str
        One PNG per dose-grid slice along the view's fixed axis, in index order.
    positions_mm : (n,) ndarray of float, mm
        Patient coordinate of each slice (z, y or x, DICOM LPS).
    width_px, height_px : int
        CSS size at which the images are shown (true mm proportions).
    """

    view: str
    png_base64: list
    positions_mm: np.ndarray
    width_px: int
    height_px: int


def display_grid(
    dose_grid: Grid, *, display_mm: float = DISPLAY_MM
) -> tuple[Grid, tuple[int, int, int]]:
    """The dose grid refined by an integer factor per axis (centre to centre).

    Returns
    -------
    grid : dose_engine.Grid
        Node ``k * m`` along an axis is dose-grid voxel centre ``k``.
    refine_zyx : (3,) tuple of int
        The factors ``(mz, my, mx)``; lowered together when the grid would exceed
        :data:`MAX_DISPLAY_VOXELS`.
    """
    dx, dy, dz = dose_grid.spacing_mm
    shape = dose_grid.shape
    m = [max(1, round(d / display_mm)) for d in (dz, dy, dx)]
    while True:
        n = [(s - 1) * k + 1 for s, k in zip(shape, m, strict=True)]
        if int(np.prod(n)) <= MAX_DISPLAY_VOXELS or max(m) == 1:
            break
        m = [max(1, k - 1) for k in m]
    mz, my, mx = m
    grid = Grid(tuple(n), dose_grid.origin_mm, (dx / mx, dy / my, dz / mz))
    return grid, (mz, my, mx)


def _resample_linear(
    volume: np.ndarray, grid: Grid, axes_zyx_mm: Sequence[np.ndarray], *, fill: float
) -> np.ndarray:
    """Trilinear interpolation of ``volume`` (on ``grid``) at the nodes ``axes_zyx_mm``,
    as three 1-D passes (numpy, float32; for display).

    Nodes outside ``grid``'s voxel centres (beyond 1e-6 voxel) get ``fill``.  Separable
    and so several times faster than :func:`dose_engine._resample.resample`, which the
    patient-sized CT and every structure of a report would otherwise spend seconds in.
    """
    out = np.asarray(volume, dtype=np.float32)
    origin_zyx = grid.origin_mm[::-1]
    spacing_zyx = grid.spacing_mm[::-1]
    order = np.argsort([len(a) / n for a, n in zip(axes_zyx_mm, out.shape, strict=True)])
    for axis in order:  # shrink first
        n = out.shape[axis]
        f = (np.asarray(axes_zyx_mm[axis], float) - origin_zyx[axis]) / spacing_zyx[axis]
        outside = (f < -1e-6) | (f > n - 1 + 1e-6)
        f = np.clip(f, 0.0, n - 1)
        i0 = np.minimum(np.floor(f).astype(np.intp), max(n - 2, 0))
        w = (f - i0).astype(np.float32)
        i1 = np.minimum(i0 + 1, n - 1)
        shape = [1, 1, 1]
        shape[axis] = len(f)
        w = w.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i1, axis=axis) * w
        if outside.any():
            idx = [slice(None)] * 3
            idx[axis] = outside
            out[tuple(idx)] = fill
    return out


def _mask_on(occupancy: np.ndarray, grid: Grid, display: Grid) -> np.ndarray:
    """``occupancy >= 0.5`` on the display grid, interpolated in the structure's box only."""
    mask = np.zeros(display.shape, dtype=bool)
    occ = np.asarray(occupancy)
    nz = [np.flatnonzero(occ.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
    if any(len(i) == 0 for i in nz):
        return mask
    lo = [int(i[0]) for i in nz]
    hi = [int(i[-1]) + 1 for i in nz]
    box = occ[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    sub = Grid(box.shape, grid.index_to_point(np.array(lo, float)), grid.spacing_mm)
    axes = display.zyx_axes_mm()
    src = sub.zyx_axes_mm()
    keep = []
    for k in range(3):  # display nodes within one source voxel of the box
        d = grid.spacing_mm[::-1][k]
        keep.append(np.flatnonzero((axes[k] >= src[k][0] - d) & (axes[k] <= src[k][-1] + d)))
    if any(len(i) == 0 for i in keep):
        return mask
    padded = np.pad(box.astype(np.float32), 1)  # zero just outside the box
    pgrid = Grid(padded.shape, sub.index_to_point(np.array([-1.0, -1.0, -1.0])), grid.spacing_mm)
    vals = _resample_linear(padded, pgrid, [axes[k][keep[k]] for k in range(3)], fill=0.0)
    mask[np.ix_(*keep)] = vals >= 0.5
    return mask


def _plane(volume: np.ndarray, view: str, node: int) -> np.ndarray:
    """2-D display plane of ``volume`` at ``node`` along the view's axis, image row order."""
    axis = VIEWS[view][0]
    img = np.take(volume, node, axis=axis)
    return img if view == "axial" else img[::-1]  # superior at the top


def _edges(mask: np.ndarray, width: int) -> np.ndarray:
    """Boundary pixels of a 2-D mask (inside it), ``width`` pixels thick."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def _marker(shape: tuple[int, int], row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
    """``(cross, outline)`` masks of the global-maximum marker at ``(row, col)``."""
    cross = np.zeros(shape, bool)
    a = MARKER_ARM_PX
    cross[max(row - a, 0) : row + a + 1, col] = True
    cross[row, max(col - a, 0) : col + a + 1] = True
    outline = cross.copy()
    outline[1:] |= cross[:-1]
    outline[:-1] |= cross[1:]
    outline[:, 1:] |= cross[:, :-1]
    outline[:, :-1] |= cross[:, 1:]
    return cross, outline & ~cross


def _png_base64(index_image: np.ndarray, palette: np.ndarray) -> str:
    from PIL import Image  # matplotlib's own dependency

    rows, cols = index_image.shape
    img = Image.frombytes("P", (cols, rows), np.ascontiguousarray(index_image).tobytes())
    img.putpalette(palette.astype(np.uint8).ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=9)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_slices(
    dose_gy: np.ndarray,
    dose_grid: Grid,
    *,
    ct=None,
    structures: Mapping[str, tuple[np.ndarray, Grid]] | None = None,
    colours: Mapping[str, Sequence[int]] | None = None,
    isodoses: Sequence[tuple[float, Sequence[int]]] = (),
    max_index_zyx: Sequence[int] | None = None,
    display_mm: float = DISPLAY_MM,
) -> tuple[dict[str, SliceStack], dict[str, np.ndarray]]:
    """Render every slice of the three views.

    Parameters
    ----------
    dose_gy : (Z, Y, X) ndarray of float, Gy
        Dose on ``dose_grid``.
    dose_grid : dose_engine.Grid
    ct : rtplan.Image, optional
        Drawn in grey (window :data:`CT_WINDOW_HU`); without it the dose is the grey
        background (black 0 Gy, white at the maximum).
    structures : mapping of str to (occupancy, grid), optional
        Fractional occupancy ``(Z', Y', X')`` on its own grid; drawn as the 0.5 boundary.
    colours : mapping of str to (3,) sequence of int
        0–255 RGB of each structure (:func:`rtplan.report._colours.roi_colours`).
    isodoses : sequence of (level_gy, rgb)
        Isodose lines, drawn in this order (later lines on top).
    max_index_zyx : (3,) sequence of int, optional
        Dose-grid voxel of the global maximum; marked with a cross on its three slices.
    display_mm : float, default :data:`DISPLAY_MM`
        Target display pixel size, mm.

    Returns
    -------
    stacks : dict of str to SliceStack
        One per view, in :data:`VIEWS` order.
    inside : dict of str to bool
        Whether each structure's displayed contour contains the global maximum (its
        resampled occupancy ≥ 0.5 there); empty without ``max_index_zyx``.
    """
    dose = np.asarray(dose_gy, dtype=np.float32)
    grid, refine = display_grid(dose_grid, display_mm=display_mm)
    axes_mm = grid.zyx_axes_mm()
    d = _resample_linear(dose, dose_grid, axes_mm, fill=0.0)
    if ct is not None:
        lo, hi = CT_WINDOW_HU
        bg = _resample_linear(ct.array, ct.grid, axes_mm, fill=lo)
        bg = np.clip((bg - lo) / (hi - lo), 0.0, 1.0)
    else:
        bg = d / max(float(d.max()), 1e-6)
    masks = {n: _mask_on(occ, g, grid) for n, (occ, g) in (structures or {}).items()}
    colours = dict(colours or {})
    line_colours: list[tuple[int, int, int]] = []
    for rgb in [*(colours[n] for n in masks), *(c for _, c in isodoses), MAX_MARKER_COLOUR]:
        t = tuple(int(v) for v in rgb)
        if t not in line_colours:
            line_colours.append(t)  # type: ignore[arg-type]
    n_grey = 256 - len(line_colours)
    greys = np.linspace(0, 255, n_grey)
    palette = np.vstack([np.repeat(greys[:, None], 3, axis=1), np.array(line_colours)])
    index_of = {c: n_grey + i for i, c in enumerate(line_colours)}

    max_node = (
        None
        if max_index_zyx is None
        else [int(k) * m for k, m in zip(max_index_zyx, refine, strict=True)]
    )
    inside = {} if max_node is None else {n: bool(m[tuple(max_node)]) for n, m in masks.items()}
    axes = dose_grid.zyx_axes_mm()
    sp_zyx = grid.spacing_mm[::-1]
    extent_mm = [(s - 1) * sp for s, sp in zip(grid.shape, sp_zyx, strict=True)]
    px_per_mm = VIEW_SIZE_PX / max(max(extent_mm), 1e-6)
    stacks: dict[str, SliceStack] = {}
    for view, (axis, _, _) in VIEWS.items():
        rows_axis, cols_axis = [a for a in (0, 1, 2) if a != axis]
        pngs = []
        for k in range(dose_grid.shape[axis]):
            node = k * refine[axis]
            grey = _plane(bg, view, node)
            img = np.rint(grey * (n_grey - 1)).astype(np.uint8)
            for name, m in masks.items():
                img[_edges(_plane(m, view, node), 2)] = index_of[tuple(colours[name])]
            plane = _plane(d, view, node)
            for level, rgb in isodoses:
                img[_edges(plane >= level, 1)] = index_of[tuple(int(v) for v in rgb)]
            if max_node is not None and max_node[axis] == node:
                r = max_node[rows_axis]
                if view != "axial":
                    r = grid.shape[rows_axis] - 1 - r
                cross, outline = _marker(img.shape, r, max_node[cols_axis])
                img[outline] = 0
                img[cross] = index_of[MAX_MARKER_COLOUR]
            pngs.append(_png_base64(img, palette))
        stacks[view] = SliceStack(
            view,
            pngs,
            np.asarray(axes[axis], float),
            max(1, round(extent_mm[cols_axis] * px_per_mm)),
            max(1, round(extent_mm[rows_axis] * px_per_mm)),
        )
    return stacks, inside


_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById('slice-data').textContent);
  function show(view, k) {
    var d = data[view];
    k = Math.max(0, Math.min(d.png.length - 1, parseInt(k, 10) || 0));
    var fig = document.getElementById('view-' + view);
    var img = document.getElementById('img-' + view);
    document.getElementById('slider-' + view).value = k;
    fig.dataset.slice = k;
    fig.dataset.decoded = '';
    img.src = 'data:image/png;base64,' + d.png[k];
    img.decode().then(function () {
      fig.dataset.decoded = img.naturalWidth + 'x' + img.naturalHeight;
    }, function () { fig.dataset.decoded = 'error'; });
    document.getElementById('pos-' + view).textContent = d.label[k];
  }
  function toMax() { for (var v in data) { show(v, data[v].max); } }
  for (var v in data) {
    (function (view) {
      document.getElementById('slider-' + view).addEventListener('input', function (e) {
        show(view, e.target.value);
      });
    })(v);
  }
  var btn = document.getElementById('goto-max');
  if (btn) { btn.addEventListener('click', toMax); }
  function fromHash() {
    var h = window.location.hash.replace(/^#/, '');
    if (h === 'max') { toMax(); return; }
    h.split('&').forEach(function (kv) {
      var p = kv.split('=');
      if (p.length === 2 && data[p[0]]) { show(p[0], p[1]); }
    });
  }
  for (var w in data) { show(w, document.getElementById('slider-' + w).value); }
  fromHash();
  window.addEventListener('hashchange', fromHash);
})();
"""


def _label(axis_letter: str, pos_mm: float, k: int, n: int) -> str:
    return f"{axis_letter} = {pos_mm + 0.0:.1f} mm (slice {k + 1} of {n})"


def slice_viewer_html(
    stacks: Mapping[str, SliceStack],
    *,
    initial_zyx: Sequence[int],
    max_index_zyx: Sequence[int] | None = None,
) -> str:
    """The viewer as an HTML fragment (figures, sliders, slice data and the script).

    Parameters
    ----------
    stacks : mapping of str to SliceStack
        From :func:`render_slices`.
    initial_zyx : (3,) sequence of int
        Dose-grid voxel whose slices are shown first.
    max_index_zyx : (3,) sequence of int, optional
        The global maximum's voxel: a "show the global maximum" button, and the page
        opened with ``#max`` shows its slices (``#axial=K&coronal=J`` any slices).
    """
    figs, data = [], {}
    for view, st in stacks.items():
        axis, letter, how = VIEWS[view]
        n = len(st.png_base64)
        k0 = int(np.clip(initial_zyx[axis], 0, n - 1))
        labels = [_label(letter, float(p), k, n) for k, p in enumerate(st.positions_mm)]
        kmax = None if max_index_zyx is None else int(max_index_zyx[axis])
        data[view] = {"png": st.png_base64, "label": labels, "max": kmax}
        figs.append(
            f"<figure class='slice-view' id='view-{view}' data-view='{view}' "
            f"data-slice='{k0}' data-slices='{n}'>"
            f"<figcaption><b>{view.capitalize()}</b> <span id='pos-{view}'>"
            f"{html.escape(labels[k0])}</span></figcaption>"
            f"<img id='img-{view}' alt='{view} slice' width='{st.width_px}' "
            f"height='{st.height_px}' src='data:image/png;base64,{st.png_base64[k0]}'/>"
            f"<input type='range' id='slider-{view}' min='0' max='{n - 1}' step='1' "
            f"value='{k0}' aria-label='{view} slice'/>"
            f"<div class='muted'>{html.escape(how)}</div></figure>"
        )
    button = (
        "<p><button type='button' id='goto-max'>Show the global maximum</button></p>"
        if max_index_zyx is not None
        else ""
    )
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (
        "<div class='viewer'>"
        + "".join(figs)
        + "</div>"
        + button
        + f"<script type='application/json' id='slice-data'>{payload}</script>"
        + f"<script>{_SCRIPT}</script>"
    )


def legend_html(
    colours: Mapping[str, Sequence[int]],
    isodoses: Sequence[tuple[str, Sequence[int]]],
    *,
    marker: bool,
) -> str:
    """Legend of the viewer: structure contours, isodose lines (labels given), marker."""
    items = [
        f"<span class='key'><span class='swatch roi' style='border-color:{hex_colour(c)}'>"
        f"</span>{html.escape(n)}</span>"
        for n, c in colours.items()
    ]
    items += [
        f"<span class='key'><span class='swatch iso' style='border-color:{hex_colour(c)}'>"
        f"</span>{html.escape(label)}</span>"
        for label, c in isodoses
    ]
    if marker:
        items.append(
            f"<span class='key'><b style='color:{hex_colour(MAX_MARKER_COLOUR)}'>+</b> "
            "global maximum</span>"
        )
    return "<div class='legend'>" + " ".join(items) + "</div>"
