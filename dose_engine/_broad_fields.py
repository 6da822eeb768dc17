r"""Depth doses of broad 6 MV fields (20 × 20 and 40 × 40 cm²) for the shipped model's fit.

The measured 6 MV data in the pymedphys wheel hold PDDs of 5 × 5 and 10 × 10 cm² only,
which cannot show how phantom scatter grows beyond 10 × 10 cm² (a fit on them put PDD(10
cm) at 67.3 % for every field from 10 × 10 to 40 × 40 cm², issue 15).  The broad fields
are added as **Monte Carlo field-size ratios applied to the measured reference PDD**:

.. math::

   \mathrm{PDD}_F(d) = \mathrm{PDD}_{10}^{meas}(d)\; \exp q_F(d), \qquad
   q_F \approx \ln \frac{D_F^{MC}(d)}{D_{10}^{MC}(d)}

where ``D^{MC}`` are ompMC (EGSnrc physics, its Varian 6 MV spectrum, a point source, no
head) central-axis depth doses in water at SSD 900 mm (5 mm bins, averaged over the central
5 × 5 to 9 × 9 voxels of 5 mm) and ``q_F`` is a weighted quadratic in depth fitted to
their logarithmic ratio from 20 to 280 mm (the ratio is smooth; one bin's noise is 1-2 %).
The spectrum's errors mostly cancel in the ratio; the head (electron contamination,
extra-focal photons) is absent from both, so only depths beyond 20 mm are used.  The
same recipe applied to 5 × 5 cm², where a measurement exists, reproduces the measured
5 × 5 / 10 × 10 PDD ratio within :data:`METHOD_CHECK_PCT` from 20 to 280 mm
(``tests/dose_engine/test_broad_fields.py``).

Data file ``data/broad_field_monte_carlo_6MV.json`` (written by
``python benches/bench_broad_fields.py --write``): per field side, the pooled mean depth
dose per history, its relative 1 σ per bin, the runs (seeds, histories) and the scoring
region.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ._data_files import read_json_data
from ._measured import MeasuredData
from ._scan import MeasuredScan
from .errors import BeamModelError

__all__ = ["BROAD_FIELDS_MM", "broad_field_pdds", "field_size_ratio", "monte_carlo_depth_doses"]

DATA_FILE = "broad_field_monte_carlo_6MV.json"
#: The broad fields added to the shipped model's fit (side, mm).
BROAD_FIELDS_MM = (200.0, 400.0)
#: Depth range of the field-size ratios, mm (beyond the build-up; the deepest bins are the
#: noisiest).
RATIO_DEPTHS_MM = (20.0, 280.0)
#: The side of the Monte Carlo reference field (the measured reference PDD's), mm.
REFERENCE_SIDE_MM = 100.0
#: The recipe reproduces the measured 5 x 5 / 10 x 10 PDD ratio within this (%), 20-280 mm.
METHOD_CHECK_PCT = 1.5


def monte_carlo_depth_doses() -> dict:
    """The data file's content: ``{"ssd_mm", "depth_mm", "fields": {side: {"mean",
    "sigma", ...}}, "provenance"}`` with numpy arrays for ``depth_mm``, ``mean``, ``sigma``."""
    content, name = read_json_data(None, DATA_FILE, what="Broad-field depth doses")
    try:
        fields = {
            float(side): dict(
                entry,
                mean=np.asarray(entry["mean"], float),
                sigma=np.asarray(entry["sigma"], float),
            )
            for side, entry in content["fields"].items()
        }
        depth = np.asarray(content["depth_mm"], float)
    except (KeyError, TypeError, ValueError) as exc:
        raise BeamModelError(f"Broad-field depth doses {name}: malformed ({exc}).") from None
    return dict(content, depth_mm=depth, fields=fields)


def field_size_ratio(side_mm: float, depth_mm, data: dict | None = None) -> np.ndarray:
    """``exp q_F(d)``: the smoothed Monte Carlo depth-dose ratio of a ``side_mm`` square
    field to 10 × 10 cm² at ``depth_mm`` (SSD 900 mm; any common factor, as only its
    depth dependence is used).

    Raises
    ------
    BeamModelError
        If the data file holds no run of that side.
    """
    data = monte_carlo_depth_doses() if data is None else data
    fields = data["fields"]
    if float(side_mm) not in fields or REFERENCE_SIDE_MM not in fields:
        raise BeamModelError(
            f"The broad-field depth doses hold sides {sorted(fields)} mm, not {side_mm:g} mm."
        )
    z = data["depth_mm"]
    num, ref = fields[float(side_mm)], fields[REFERENCE_SIDE_MM]
    use = (z >= RATIO_DEPTHS_MM[0]) & (z <= RATIO_DEPTHS_MM[1])
    log_ratio = np.log(num["mean"][use] / ref["mean"][use])
    sigma = np.hypot(num["sigma"][use], ref["sigma"][use])
    coeff = np.polyfit(z[use], log_ratio, 2, w=1.0 / sigma)
    return np.exp(np.polyval(coeff, np.asarray(depth_mm, float)))


def broad_field_pdds(measured: MeasuredData, sides_mm=BROAD_FIELDS_MM) -> list[MeasuredScan]:
    """PDDs of broad square fields: the measured reference PDD times the Monte Carlo
    field-size ratio (module docstring), at the reference PDD's depths in
    :data:`RATIO_DEPTHS_MM`, at its SSD.

    Raises
    ------
    BeamModelError
        If the reference field is not 10 × 10 cm² at SSD 900 mm (the Monte Carlo geometry).
    """
    ref = measured.reference_pdd()
    if ref.field != (REFERENCE_SIDE_MM, REFERENCE_SIDE_MM) or ref.ssd_mm != 900.0:
        raise BeamModelError(
            f"{measured.source}: the broad-field ratios are for a 100x100 mm reference PDD at "
            f"SSD 900 mm; the reference is {ref.field} at SSD {ref.ssd_mm:g} mm."
        )
    data = monte_carlo_depth_doses()
    inside = (ref.position_mm >= RATIO_DEPTHS_MM[0]) & (ref.position_mm <= RATIO_DEPTHS_MM[1])
    depth = ref.position_mm[inside]
    return [
        replace(
            ref,
            field_mm=side,
            field_inplane_mm=side,
            position_mm=depth,
            value=ref.value[inside] * field_size_ratio(side, depth, data),
            source=f"{ref.source} x Monte Carlo ratio {side:g}x{side:g} / 100x100 ({DATA_FILE})",
        )
        for side in sides_mm
    ]


def with_broad_fields(measured: MeasuredData) -> MeasuredData:
    """``measured`` with :func:`broad_field_pdds` added to its scans (the shipped 6 MV
    model's data set)."""
    return replace(
        measured,
        scans=(*measured.scans, *broad_field_pdds(measured, BROAD_FIELDS_MM)),
        source=f"{measured.source} + Monte Carlo broad-field ratios ({DATA_FILE})",
    )
