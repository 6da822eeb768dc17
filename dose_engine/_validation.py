"""Compare the engine with the measured 6 MV water-tank data (commissioning report).

Everything goes through the public path a plan takes: a water phantom built as a density
array, exact ray tracing and :func:`field_dose` on one-row dose grids along the measured
PDD and profile lines.  Geometry of the measurements: gantry 0, SSD 900 mm (isocentre at
100 mm depth), square fields defined at the isocentre.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np

from ._beam import Beam
from ._field_dose import field_dose
from ._grid import Grid
from ._measured import read_measured_6mv
from ._model import BeamModel, load_beam_model

__all__ = [
    "ValidationReport",
    "compare_to_measured_6mv",
    "dmax_mm",
    "profile_metrics",
    "water_phantom",
]

SURFACE_Y_MM = -100.0  # HFS gantry 0: source at y = -1000, surface at SSD 900 mm


def water_phantom(
    ssd_mm: float = 900.0,
    *,
    spacing_mm: float = 5.0,
    half_width_mm: float = 200.0,
    depth_mm: float = 400.0,
):
    """A water box for a gantry-0 HFS beam with its isocentre at (0, 0, 0).

    Returns
    -------
    density : (nz, ny, nx) ndarray of float32
        1.0 in water; the surface plane ``y = ssd_mm - 1000`` lies on voxel boundaries.
    grid : Grid
    """
    y_surface = ssd_mm - 1000.0
    n_lat = int(round(2 * half_width_mm / spacing_mm))
    n_depth = int(round(depth_mm / spacing_mm))
    grid = Grid(
        (n_lat, n_depth, n_lat),
        (
            -half_width_mm + spacing_mm / 2,
            y_surface + spacing_mm / 2,
            -half_width_mm + spacing_mm / 2,
        ),
        (spacing_mm,) * 3,
    )
    return np.ones(grid.shape, np.float32), grid


def line_grid(
    axis: str,
    depth_mm: float,
    start_mm: float,
    stop_mm: float,
    step_mm: float,
    ssd_mm: float = 900.0,
) -> Grid:
    """A one-row dose grid: along ``"x"`` (crossplane), ``"z"`` (inplane) at ``depth_mm``,
    or ``"depth"`` (PDD, on the central axis) from ``start_mm`` to ``stop_mm``."""
    n = int(round((stop_mm - start_mm) / step_mm)) + 1
    y_surface = ssd_mm - 1000.0
    if axis == "x":
        return Grid((1, 1, n), (start_mm, y_surface + depth_mm, 0.0), (step_mm, 1.0, 1.0))
    if axis == "z":
        return Grid((n, 1, 1), (0.0, y_surface + depth_mm, start_mm), (1.0, 1.0, step_mm))
    return Grid((1, n, 1), (0.0, y_surface + start_mm, 0.0), (1.0, step_mm, 1.0))


def profile_metrics(x_mm, dose) -> tuple[float, float]:
    """50 % field width and mean 80–20 % penumbra of a profile normalised at ``x = 0``."""
    x = np.asarray(x_mm, float)
    y = np.asarray(dose, float) / np.interp(0.0, x, dose)
    res = {}
    for lev in (0.2, 0.5, 0.8):
        sides = []
        for sgn in (1.0, -1.0):
            sel = (sgn * x) >= 0
            xs, ys = sgn * x[sel], y[sel]
            order = np.argsort(xs)
            xs, ys = xs[order], ys[order]
            i = int(np.argmax(ys < lev))
            sides.append(float(np.interp(lev, [ys[i], ys[i - 1]], [xs[i], xs[i - 1]])))
        res[lev] = np.array(sides)
    return float(res[0.5].sum()), float(np.mean(res[0.2] - res[0.8]))


def dmax_mm(depth_mm, dose) -> float:
    """Depth of maximum dose: vertex of a parabola fitted to the points within 1 % of the
    maximum (the build-up peak is flat, so the arg-max alone jumps by whole samples)."""
    d = np.asarray(depth_mm, float)
    y = np.asarray(dose, float)
    near = y >= 0.99 * y.max()
    a, b, _ = np.polyfit(d[near], y[near], 2)
    return float(-b / (2 * a)) if a < 0 else float(d[np.argmax(y)])


@dataclass(frozen=True)
class ValidationReport:
    """Worst deviations of the engine from the measurements (see :func:`compare_to_measured_6mv`).

    Attributes
    ----------
    pdd_local_max_pct : dict field_mm → float
        Largest |calc/meas − 1| beyond dmax (both normalised at their maximum), %.
    dmax_diff_mm : dict field_mm → float
    width_diff_mm, penumbra_diff_mm : dict (field_mm, curve, depth_mm) → float
        Calculated minus measured 50 % width and 80–20 % penumbra.
    output_factor_5x5 : (calc, meas)
    d10_ssd900_cgy_per_mu : (calc, meas)
    gamma_pass_pct : dict curve name → float
        pymedphys gamma 2 %/2 mm (global, 10 % low-dose cut-off) pass rate of each curve.
    """

    pdd_local_max_pct: dict
    dmax_diff_mm: dict
    width_diff_mm: dict
    penumbra_diff_mm: dict
    output_factor_5x5: tuple
    d10_ssd900_cgy_per_mu: tuple
    gamma_pass_pct: dict = field(default_factory=dict)

    def worst(self) -> dict:
        """One number per criterion (largest magnitude)."""
        return {
            "pdd_local_max_pct": max(self.pdd_local_max_pct.values()),
            "dmax_diff_mm": max(abs(v) for v in self.dmax_diff_mm.values()),
            "width_diff_mm": max(abs(v) for v in self.width_diff_mm.values()),
            "penumbra_diff_mm": max(abs(v) for v in self.penumbra_diff_mm.values()),
            "output_factor_5x5_pct": 100
            * abs(self.output_factor_5x5[0] / self.output_factor_5x5[1] - 1),
            "d10_ssd900_pct": 100
            * abs(self.d10_ssd900_cgy_per_mu[0] / self.d10_ssd900_cgy_per_mu[1] - 1),
            "gamma_min_pass_pct": min(self.gamma_pass_pct.values())
            if self.gamma_pass_pct
            else float("nan"),
        }


def _gamma_pass(x_ref, d_ref, x_eval, d_eval) -> float:
    import pymedphys

    ref = np.asarray(d_ref, float) / np.max(d_ref)
    ev = np.asarray(d_eval, float) / np.max(d_ref)
    with contextlib.redirect_stdout(io.StringIO()):  # pymedphys prints progress
        g = pymedphys.gamma(
            (np.asarray(x_ref, float),),
            ref,
            (np.asarray(x_eval, float),),
            ev,
            dose_percent_threshold=2,
            distance_mm_threshold=2,
            lower_percent_dose_cutoff=10,
            interp_algo="scipy",
        )
    valid = np.isfinite(g)
    return float(100.0 * np.mean(g[valid] <= 1.0))


def compare_to_measured_6mv(
    model: BeamModel | None = None,
    *,
    fields_mm=(50.0, 100.0),
    depths_mm=(15.0, 50.0, 100.0, 200.0),
    step_mm: float = 1.0,
    gamma: bool = True,
    backend: str = "numpy",
) -> ValidationReport:
    """Compute the measured curves with :func:`field_dose` and compare.

    Parameters
    ----------
    model : BeamModel, optional
        Default: the shipped 6 MV model.
    fields_mm : sequence of {50, 100}
        Square field sides (at the isocentre).
    depths_mm : sequence of {15, 50, 100, 200}
        Profile depths to check.
    step_mm : float
        Dose-grid step along each line, mm.
    gamma : bool
        Also compute pymedphys gamma pass rates (2 %/2 mm).
    """
    model = load_beam_model() if model is None else model
    meas = read_measured_6mv()
    beam = Beam(0.0, isocenter_mm=(0.0, 0.0, 0.0), sad_mm=model.sad_mm)
    dens, ct = water_phantom(900.0)
    pdd_dev, dmax_diff, wdiff, pdiff, gam = {}, {}, {}, {}, {}
    for f in fields_mm:
        rect = np.array([[-f / 2, f / 2, -f / 2, f / 2]])
        for s in meas["scans"][f]:
            if s.curve == "PDD":
                g = line_grid("depth", 0.0, 0.0, 350.0, step_mm / 2)
                calc = field_dose(dens, ct, g, beam, rect, 1.0, model, backend=backend).ravel()
                dep = g.zyx_axes_mm()[1] - SURFACE_Y_MM
                c = calc / calc.max()
                mv = s.value / s.value.max()
                dmax_m = dmax_mm(s.position_mm, s.value)
                dmax_c = dmax_mm(dep, calc)
                dmax_diff[f] = dmax_c - dmax_m
                beyond = s.position_mm >= float(s.position_mm[np.argmax(s.value)])
                ci = np.interp(s.position_mm[beyond], dep, c)
                pdd_dev[f] = float(100 * np.max(np.abs(ci / mv[beyond] - 1)))
                if gamma:
                    gam[f"{f:g}mm PDD"] = _gamma_pass(
                        s.position_mm, s.value, dep, calc / calc.max() * s.value.max()
                    )
                continue
            if s.depth_mm not in depths_mm:
                continue
            axis = "x" if s.curve == "CROSSPLANE_PROFILE" else "z"
            lim = float(np.max(np.abs(s.position_mm)))
            g = line_grid(axis, s.depth_mm, -lim, lim, step_mm)
            calc = field_dose(dens, ct, g, beam, rect, 1.0, model, backend=backend).ravel()
            x = g.zyx_axes_mm()[2] if axis == "x" else g.zyx_axes_mm()[0]
            wm, pm = profile_metrics(s.position_mm, s.value)
            wc, pc = profile_metrics(x, calc)
            key = (f, s.curve, s.depth_mm)
            wdiff[key] = wc - wm
            pdiff[key] = pc - pm
            if gamma:
                scale = np.interp(0.0, s.position_mm, s.value) / np.interp(0.0, x, calc)
                gam[f"{f:g}mm {s.curve} {s.depth_mm:g}mm"] = _gamma_pass(
                    s.position_mm, s.value, x, calc * scale
                )
    # Output factor and absolute dose: isocentre (100 mm depth) at SSD 900 mm.
    iso = Grid((1, 1, 1), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    d = {
        f: float(
            field_dose(
                dens, ct, iso, beam, [[-f / 2, f / 2, -f / 2, f / 2]], 1.0, model, backend=backend
            ).ravel()[0]
        )
        for f in (50.0, 100.0)
    }
    of = (d[50.0] / d[100.0], meas["output_factor"][50.0] / meas["output_factor"][100.0])
    absolute = (100.0 * d[100.0], meas["absolute"]["d10_ssd900"])
    return ValidationReport(pdd_dev, dmax_diff, wdiff, pdiff, of, absolute, gam)
