"""Large organs at risk are sampled on every second voxel along x for the optimiser's
rows (issue 12 item 6), unless a goal on them reads a point dose."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from rtplan import Grid
from rtplan.planning._plan import LARGE_STRUCTURE_VOXELS, _problem_structures
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


def test_large_organ_rows_every_second_voxel_along_x():
    ctx = _ctx()
    idx, weights = _problem_structures(ctx)
    assert int(ctx.occupancy["Cord"].sum()) < LARGE_STRUCTURE_VOXELS
    # Lung: 40 slices x 60 rows x ceil(61 / 2) columns, the even x indices
    assert idx["Lung"].size == 40 * 60 * 31
    _, iy, ix = np.unravel_index(idx["Lung"], ctx.dose_grid.shape)
    assert np.all(ix % 2 == 0) and np.unique(iy).size == 60
    for name, n in {"PTV": 4 * 4 * 4, "Heart": 40 * 30 * 30, "Cord": 40 * 20 * 20}.items():
        assert idx[name].size == n, name
        np.testing.assert_array_equal(idx[name], np.flatnonzero(ctx.occupancy[name].ravel() > 0))
    # a volume fraction on the sample: the share of the lung in x < 30 (30 of 61 columns)
    # is 15 of 31 sampled columns, 48.4 % against 49.2 % on every voxel
    _, _, ix = np.unravel_index(idx["Lung"], ctx.dose_grid.shape)
    share = float(weights["Lung"][ix < 30].sum() / weights["Lung"].sum())
    assert abs(share - 30 / 61) < 0.01


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
    assert idx["Lung"].size == 40 * 60 * 31
    assert idx["Liver"].size == 40 * 30 * 12  # the even x of columns 40..63
    _, _, ix = np.unravel_index(idx["Liver"], ctx.dose_grid.shape)
    assert np.all(ix % 2 == 0)


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
