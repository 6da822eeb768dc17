"""Speed of plan evaluation: DVH of a large structure, goal tables, and the HTML report.

Run: ``python -m pytest benches/bench_evaluation.py -p no:cacheprovider``.
Sizes: a 4.2 M-voxel body (256 × 256 × 64) with fractional edges, a 0.3 M-voxel target.
"""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine import Grid
from rtplan.evaluation import Goal, dvh, evaluate_goals

SHAPE = (64, 256, 256)
GRID = Grid(SHAPE, origin_mm=(-255.0, -255.0, -80.0), spacing_mm=(2.0, 2.0, 2.5))


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    z, y, x = GRID.zyx_axes_mm()
    r2 = x[None, None, :] ** 2 + y[None, :, None] ** 2 + z[:, None, None] ** 2
    dose = (70.0 * np.exp(-r2 / (2 * 60.0**2)) + rng.normal(0, 0.2, SHAPE)).clip(0)
    body = np.clip((230.0 - np.sqrt(x[None, None, :] ** 2 + y[None, :, None] ** 2)) / 2.0, 0, 1)
    body = np.broadcast_to(body, SHAPE).astype(np.float32)
    ptv = np.clip((40.0 - np.sqrt(r2)) / 2.0, 0, 1).astype(np.float32)
    return dose, {"Body": body, "PTV": ptv}


def test_dvh_body_4m_voxels(benchmark, case):
    dose, occ = case
    d = benchmark(dvh, dose, occ["Body"], voxel_volume_cc=GRID.voxel_volume_cc)
    print(f"body {d.total_volume_cc:.0f} cc, mean {d.mean_gy:.2f} Gy")


def test_goal_table(benchmark, case):
    dose, occ = case
    goals = [
        Goal("PTV", "D95%", ">=", 60),
        Goal("PTV", "Dmax", "<=", 75),
        Goal("PTV", "CI", ">=", 0.8),
        Goal("Body", "V20Gy", "<=", 10, unit="cc"),
    ]
    t = benchmark(evaluate_goals, dose, occ, goals, GRID, prescription_gy=60.0, body="Body")
    print(repr(t))
