"""Dose accuracy of the shipped 6 MV model against measured water-tank data.

Measured: pymedphys 0.41 wheel, tests/experimental/mephysto/data/measurements (PTW 60008
diode, SSD 900 mm; 5 x 5 and 10 x 10 cm^2 PDDs and in/cross-plane profiles at 15, 50, 100 and
200 mm; OutputFactors.csv; AbsoluteDose.csv).  Calculated: the full engine path (water
density array -> Siddon ray tracing -> field_dose) on 0.5-1 mm line grids.

Pass/fail thresholds (the same as tests/dose_engine/test_measured_6mv.py, which runs a
reduced set by default):

- depth dose beyond dmax: 2 % local
- dmax: 2 mm
- 50 % field width and 80-20 % penumbra: 2 mm at every measured depth
- output factor 5 x 5 (100 mm depth, SSD 900 mm): 2 %
- absolute dose at 100 mm depth, SSD 900 mm, 10 x 10: 2 % of 0.812 cGy/MU
- gamma 2 %/2 mm (global, 10 % cut-off): >= 95 % on every one of the 18 curves.

Run: ``python -m pytest benches/bench_dose_accuracy.py -p no:cacheprovider -s``
"""

from __future__ import annotations

import json

from dose_engine._validation import compare_to_measured_6mv


def test_dose_accuracy_6mv(benchmark):
    report = benchmark.pedantic(
        compare_to_measured_6mv, kwargs={"step_mm": 1.0}, rounds=1, iterations=1
    )
    worst = report.worst()
    info = {
        "worst": worst,
        "pdd_local_max_pct": {str(k): v for k, v in report.pdd_local_max_pct.items()},
        "dmax_diff_mm": {str(k): v for k, v in report.dmax_diff_mm.items()},
        "width_diff_mm": {" ".join(map(str, k)): v for k, v in report.width_diff_mm.items()},
        "penumbra_diff_mm": {" ".join(map(str, k)): v for k, v in report.penumbra_diff_mm.items()},
        "output_factor_5x5": report.output_factor_5x5,
        "d10_ssd900_cgy_per_mu": report.d10_ssd900_cgy_per_mu,
        "gamma_pass_pct": report.gamma_pass_pct,
    }
    benchmark.extra_info.update(info)
    print("\n" + json.dumps(info, indent=1))
    assert worst["pdd_local_max_pct"] <= 2.0
    assert worst["dmax_diff_mm"] <= 2.0
    assert worst["width_diff_mm"] <= 2.0
    assert worst["penumbra_diff_mm"] <= 2.0
    assert worst["output_factor_5x5_pct"] <= 2.0
    assert worst["d10_ssd900_pct"] <= 2.0
    assert len(report.gamma_pass_pct) == 18
    for name, rate in report.gamma_pass_pct.items():
        assert rate >= 95.0, name
