"""The water / lung (0.25 g/cm³) / water slab of issue 16, shared by the collapsed-cone
tests and ``benches/bench_ccc.py``: central-axis correction factors D(slab) / D(water) of
the pencil beam and the collapsed cone over depth ranges."""

from __future__ import annotations

import numpy as np

from dose_engine import Beam, BeamModel, collapsed_cone_dose, field_dose
from dose_engine._ccc_commission import water_phantom


def slab_correction_factors(
    model: BeamModel, ranges_mm: dict
) -> dict[tuple[float, float, str], float]:
    """``{(side_mm, depth_from_mm, algorithm): CF}`` for ``ranges_mm`` (field side, mm ->
    iterable of (from, to) depth ranges, mm), algorithm ``"pb"`` (pencil beam) or
    ``"ccc"``: mean slab dose over mean water dose on the central axis (lung from 50 to
    150 mm depth, SSD 900 mm, 2.5 mm grid, 1 MU)."""
    density, grid, _, depth, axis = water_phantom(2.5, half_width_mm=100.0)
    beam = Beam(0.0, isocenter_mm=(0.0, 100.0, 0.0))  # SSD 900 mm
    lung = density.copy()
    lung[:, (depth > 50.0) & (depth < 150.0), :] = 0.25
    out = {}
    for side, rows in ranges_mm.items():
        f = [-side / 2, side / 2, -side / 2, side / 2]
        d = {}
        for name, rho in (("water", density), ("slab", lung)):
            d["ccc", name] = np.asarray(
                collapsed_cone_dose(rho, grid, grid, [beam], [f], [1.0], model)
            )[axis]
            d["pb", name] = np.asarray(field_dose(rho, grid, grid, beam, f, 1.0, model))[axis]
        for a, b in rows:
            sel = (depth >= a) & (depth <= b)
            for algo in ("ccc", "pb"):
                out[side, a, algo] = float(
                    d[algo, "slab"][sel].mean() / d[algo, "water"][sel].mean()
                )
    return out
