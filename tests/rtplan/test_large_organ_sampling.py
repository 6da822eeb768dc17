"""Large organs at risk are sampled on every second voxel along x for the optimiser's
rows, and along y as well beyond ``LARGE_NEAR_MM`` of the targets (issue 12 item 6),
unless a goal on them reads a point dose."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from rtplan import Grid
from rtplan.planning._plan import LARGE_NEAR_MM, LARGE_STRUCTURE_VOXELS, _problem_structures
from rtplan.protocols import parse_protocol

PROTOCOL = """\
name = "sampling"
[prescription]
total_dose_gy = 60.0
fractions = 30
target = "PTV"
[structures.Lung]
role = "oar"
[structures.Heart]
role = "oar"
[structures.Cord]
role = "oar"
[[goals]]
structure = "PTV"
metric = "D95%"
min = 57.0
[[goals]]
structure = "Lung"
metric = "V20Gy"
max = 35.0
[[goals]]
structure = "Lung"
metric = "Dmean"
max = 20.0
[[goals]]
structure = "Heart"
metric = "V30Gy"
max = 40.0
[[goals]]
structure = "Heart"
metric = "Dmax"
max = 60.0
[[goals]]
structure = "Cord"
metric = "V20Gy"
max = 35.0
"""


def _ctx():
    grid = Grid((40, 64, 64), (0.0, 0.0, 0.0), (3.0, 3.0, 3.0))
    occ = {}
    for name, (z, y, x) in {
        "PTV": ((10, 14), (30, 34), (30, 34)),
        "Lung": ((0, 40), (0, 60), (0, 61)),  # 146,400 voxels: sampled
        "Heart": ((0, 40), (0, 30), (0, 30)),  # 36,000 voxels, a Dmax goal: every voxel
        "Cord": ((0, 40), (0, 20), (0, 20)),  # 16,000 voxels: below the size
    }.items():
        a = np.zeros(grid.shape, dtype=np.float32)
        a[slice(*z), slice(*y), slice(*x)] = 1.0
        occ[name] = a
    protocol = parse_protocol(tomllib.loads(PROTOCOL))
    roles = {"PTV": "target", "Lung": "oar", "Heart": "oar", "Cord": "oar"}
    return SimpleNamespace(
        occupancy=occ,
        roles=roles,
        protocol=protocol,
        dose_grid=grid,
        helpers={},
        custom_terms={},
    )


#: The PTV of ``_ctx`` as voxel index ranges [lo, hi] along z, y, x (3 mm voxels).
PTV_BOX = ((10, 13), (30, 33), (30, 33))


def _ptv_distance_mm(shape) -> np.ndarray:
    """Analytic distance (mm) from each voxel centre to the nearest PTV voxel centre."""
    sq = np.zeros(shape)
    for axis, (lo, hi) in enumerate(PTV_BOX):
        i = np.arange(shape[axis])
        gap = 3.0 * np.maximum(0, np.maximum(lo - i, i - hi))
        sq += np.expand_dims(gap**2, [a for a in range(3) if a != axis])
    return np.sqrt(sq)


def _expected_sample(occ: np.ndarray) -> np.ndarray:
    """Voxels each voxel stands for: 2 near the PTV on even x, 4 far on even x and y."""
    _, iy, ix = np.indices(occ.shape)
    near = _ptv_distance_mm(occ.shape) <= LARGE_NEAR_MM
    factor = np.where(near, 2.0, 4.0) * (ix % 2 == 0) * (near | (iy % 2 == 0))
    return factor * (occ > 0)


def test_large_organ_rows_every_voxel_near_the_target_sampled_far():
    ctx = _ctx()
    idx, weights = _problem_structures(ctx)
    assert int(ctx.occupancy["Cord"].sum()) < LARGE_STRUCTURE_VOXELS
    expected = _expected_sample(ctx.occupancy["Lung"]).ravel()
    # near the PTV: every even-x voxel; far: the even-x, even-y voxels (a quarter)
    np.testing.assert_array_equal(idx["Lung"], np.flatnonzero(expected))
    np.testing.assert_array_equal(weights["Lung"], expected[idx["Lung"]])
    near = _ptv_distance_mm(ctx.dose_grid.shape).ravel()[idx["Lung"]] <= LARGE_NEAR_MM
    assert 0 < near.sum() < idx["Lung"].size
    for name, n in {"PTV": 4 * 4 * 4, "Heart": 40 * 30 * 30, "Cord": 40 * 20 * 20}.items():
        assert idx[name].size == n, name
        np.testing.assert_array_equal(idx[name], np.flatnonzero(ctx.occupancy[name].ravel() > 0))


def test_large_organ_sample_estimates_the_whole_organ():
    """A mean dose and a volume fraction of a dose falling off from the PTV, on the
    weighted sample against every voxel of the organ."""
    ctx = _ctx()
    idx, weights = _problem_structures(ctx)
    dose = (60.0 * np.exp(-_ptv_distance_mm(ctx.dose_grid.shape) / 30.0)).ravel()
    lung = np.flatnonzero(ctx.occupancy["Lung"].ravel() > 0)
    p = weights["Lung"] / weights["Lung"].sum()
    sampled = dose[idx["Lung"]]
    exact_mean, exact_v20 = dose[lung].mean(), np.mean(dose[lung] >= 20.0)
    # every voxel: 7.18 Gy and 6.45 %; every second x alone: 7.09 Gy and 6.35 %
    assert abs(p @ sampled - exact_mean) < 0.015 * exact_mean
    assert abs(p @ (sampled >= 20.0) - exact_v20) < 0.002
    _, _, ix = np.unravel_index(lung, ctx.dose_grid.shape)
    assert abs(p @ sampled - dose[lung[ix % 2 == 0]].mean()) < 0.002 * exact_mean
    # unweighted, the sample would overstate the mean (its near voxels are twice as dense)
    assert sampled.mean() > 1.05 * exact_mean


def test_every_large_organ_is_sampled_not_only_the_first():
    """Two large organs, each sampled (the second was kept whole when the first one's sample
    array replaced the set of sampled names: a 512 x 512 thorax's right lung held 131 M
    matrix entries instead of 66 M)."""
    ctx = _ctx()
    liver = np.zeros(ctx.dose_grid.shape, dtype=np.float32)
    liver[:, 30:60, 40:64] = 1.0  # 28,800 voxels, a mean goal only
    ctx.occupancy["Liver"] = liver
    ctx.roles["Liver"] = "oar"
    extra = '[structures.Liver]\nrole = "oar"\n[[goals]]\nstructure = "Liver"\n'
    extra += 'metric = "Dmean"\nmax = 30.0\n'
    ctx.protocol = parse_protocol(tomllib.loads(PROTOCOL + extra))
    idx, _ = _problem_structures(ctx)
    for name in ("Lung", "Liver"):
        expected = _expected_sample(ctx.occupancy[name]).ravel()
        np.testing.assert_array_equal(idx[name], np.flatnonzero(expected))


def test_sampled_organ_in_any_order_of_the_structures():
    """A sampled organ first among the structures gets the same sample (its branch once
    set no strides of its own and read those of the structure before it)."""
    ctx = _ctx()
    expected = np.flatnonzero(_expected_sample(ctx.occupancy["Lung"]).ravel())
    ctx.occupancy = {"Lung": ctx.occupancy.pop("Lung"), **ctx.occupancy}
    np.testing.assert_array_equal(_problem_structures(ctx)[0]["Lung"], expected)


def test_cvxpy_rings_sampled_at_the_protocols_stride():
    """``[optimization] cvxpy_helper_stride``: a ring's rows on every k-th voxel along y
    and x with ``solver = "cvxpy"`` (analytic counts), every voxel with first-order."""
    ctx = _ctx()
    ring = np.zeros(ctx.dose_grid.shape, dtype=np.float32)
    ring[5:15, 10:40, 10:40] = 1.0  # 10 x 30 x 30 voxels
    ctx.helpers = {"zRing": SimpleNamespace(name="zRing", kind="ring", occupancy=ring)}
    base = ctx.protocol
    for solver, stride, n in [
        ("first_order", 3, 10 * 30 * 30),
        ("cvxpy", 1, 10 * 30 * 30),
        ("cvxpy", 2, 10 * 15 * 15),
        ("cvxpy", 3, 10 * 10 * 10),
    ]:
        ctx.protocol = base.with_overrides(solver=solver, cvxpy_helper_stride=stride)
        idx, _ = _problem_structures(ctx)
        assert idx["zRing"].size == n, (solver, stride)
        _, iy, ix = np.unravel_index(idx["zRing"], ctx.dose_grid.shape)
        if solver == "cvxpy":
            assert np.all(iy % stride == 0) and np.all(ix % stride == 0)
