"""Per-beamlet collapsed-cone influence matrices (dose_engine.compute_ccc_influence_matrix).

- Superposition: the beamlet columns × a fluence equal :func:`collapsed_cone_dose` of the
  same apertures (open field: the field's rectangle; modulated: every beamlet's rectangle
  at its own MU) to float32 round-off without a threshold, and within 1 % of the maximum
  with the default threshold.
- Water: the collapsed-cone matrix's open-field dose matches the pencil-beam matrix's
  (commissioned on measured data) within the engines' agreement in water (pymedphys gamma
  3 %/3 mm on the central plane, docs/dose_algorithms.md); in a lung slab the two part, the
  collapsed cone lower in the lung, as the Monte Carlo of issue 16 says.
- Bad input is refused naming the argument.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from dose_engine import (
    Beam,
    Beamlets,
    Grid,
    collapsed_cone_dose,
    compute_ccc_influence_matrix,
    compute_influence_matrix,
    load_beam_model,
)
from dose_engine.errors import InvalidGeometryError

SPACING_MM = 4.0
CONES = 48


@pytest.fixture(scope="module")
def model():
    return load_beam_model()


def _phantom(lung: bool = False):
    """Water cube 124 mm wide and 160 mm deep (4 mm voxels), surface at y = 0, isocentre
    60 mm deep; with ``lung`` a 0.25 g/cm³ slab from 20 to 80 mm depth."""
    n_lat, n_dep = 31, 40
    o = -(n_lat // 2) * SPACING_MM
    grid = Grid((n_lat, n_dep, n_lat), (o, SPACING_MM / 2, o), (SPACING_MM,) * 3)
    rho = np.ones(grid.shape, np.float32)
    depth = grid.zyx_axes_mm()[1]
    if lung:
        rho[:, (depth > 20.0) & (depth < 80.0), :] = 0.25
    return rho, grid, Beam(0.0, isocenter_mm=(0.0, 60.0, 0.0)), depth


def _beamlets(side_mm: float = 40.0, size_mm: float = 10.0) -> Beamlets:
    """One beam's square lattice of ``size_mm`` beamlets covering ``side_mm``."""
    n = int(round(side_mm / size_mm))
    c = (np.arange(n) - (n - 1) / 2) * size_mm
    yy, xx = np.meshgrid(c, c, indexing="ij")
    rr, cc = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ones = np.ones(n * n)
    return Beamlets(
        np.zeros(n * n, int),
        xx.ravel(),
        yy.ravel(),
        size_mm * ones,
        size_mm * ones,
        rr.ravel(),
        cc.ravel(),
        np.array([[c[0], c[0]]]),
        ((n, n),),
    )


@pytest.fixture(scope="module")
def water_matrices(model):
    rho, grid, beam, _ = _phantom()
    bl = _beamlets()
    exact = compute_ccc_influence_matrix(
        rho, grid, grid, [beam], bl, model, cones=CONES, relative_threshold=0.0, progress=False
    )
    default = compute_ccc_influence_matrix(
        rho, grid, grid, [beam], bl, model, cones=CONES, progress=False
    )
    return exact, default


def test_format_matches_the_pencil_beam_matrix(water_matrices):
    exact, default = water_matrices
    assert exact.shape == (exact.dose_grid.voxel_count, 16)
    assert exact.matrix.dtype == np.float32 and exact.matrix.indices.dtype == np.int32
    assert exact.settings["algorithm"] == "ccc" and exact.settings["cones"] == CONES
    assert 0 < default.nnz < exact.nnz


def test_open_field_columns_sum_to_the_field_dose(water_matrices, model):
    rho, grid, beam, _ = _phantom()
    field = np.asarray(
        collapsed_cone_dose(
            rho, grid, grid, [beam], [[-20, 20, -20, 20]], [1.0], model, cones=CONES
        )
    )
    exact, default = water_matrices
    ones = np.ones(16)
    np.testing.assert_allclose(exact.dose(ones), field, rtol=0, atol=1e-4 * field.max())
    assert np.max(np.abs(default.dose(ones) - field)) <= 0.01 * field.max()
    assert np.all(default.dose(ones) <= field + 1e-4 * field.max())  # entries only dropped


def test_modulated_fluence_equals_the_dose_of_its_beamlets(water_matrices, model):
    rho, grid, beam, _ = _phantom()
    bl = _beamlets()
    mu = np.random.default_rng(16).uniform(0.2, 3.0, 16)
    ref = np.asarray(
        collapsed_cone_dose(
            rho, grid, grid, [beam], [bl.rectangles_mm(0)], [mu], model, cones=CONES
        )
    )
    exact, default = water_matrices
    np.testing.assert_allclose(exact.dose(mu), ref, rtol=0, atol=1e-4 * ref.max())
    assert np.max(np.abs(default.dose(mu) - ref)) <= 0.01 * ref.max()


def _pencil_beam_matrix(rho, grid, beam, model):
    return compute_influence_matrix(
        rho,
        grid,
        grid,
        [beam],
        _beamlets(),
        model,
        lateral_cutoff_mm=200.0,
        relative_threshold=0.0,
        progress=False,
    )


def _gamma_3_3_pct(ref, ev, axes):
    """pymedphys gamma pass rate, 3 % (global) / 3 mm, above 10 % of the maximum."""
    import pymedphys

    with contextlib.redirect_stdout(io.StringIO()):
        g = pymedphys.gamma(
            axes, ref, axes, ev, dose_percent_threshold=3, distance_mm_threshold=3,
            lower_percent_dose_cutoff=10, interp_algo="scipy",
        )  # fmt: skip
    ok = np.isfinite(g)
    return 100.0 * float(np.mean(g[ok] <= 1.0))


@pytest.mark.parametrize(("fluence", "min_pass_pct"), [("open", 99.0), ("modulated", 90.0)])
def test_water_matches_the_pencil_beam_matrix(water_matrices, model, fluence, min_pass_pct):
    # measured (central plane, 4 mm voxels): open 99.8 %, random 0.2-3 MU beamlets 93.3 %
    # (their 10 mm steps are steeper than the engines' penumbrae agree on)
    rho, grid, beam, _ = _phantom()
    pb = _pencil_beam_matrix(rho, grid, beam, model)
    exact, _ = water_matrices
    mu = np.ones(16) if fluence == "open" else np.random.default_rng(3).uniform(0.2, 3.0, 16)
    _, y, x = grid.zyx_axes_mm()
    mid = grid.shape[0] // 2
    assert _gamma_3_3_pct(pb.dose(mu)[mid], exact.dose(mu)[mid], (y, x)) >= min_pass_pct


def test_lung_slab_columns_are_lower_than_the_pencil_beam_in_lung(model):
    rho, grid, beam, depth = _phantom(lung=True)
    pb = _pencil_beam_matrix(rho, grid, beam, model)
    cc = compute_ccc_influence_matrix(
        rho, grid, grid, [beam], _beamlets(), model, cones=CONES, progress=False
    )
    c = grid.shape[0] // 2
    in_lung = (depth > 40.0) & (depth < 75.0)
    ratio = cc.dose(np.ones(16))[c, in_lung, c] / pb.dose(np.ones(16))[c, in_lung, c]
    # a 4 x 4 cm2 field in lung: lateral electron disequilibrium, which the pencil beam
    # misses (issue 16: +10-12 % for 5 x 5 cm2 against Monte Carlo)
    assert np.all(ratio < 0.97)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch": 0}, "`batch`"),
        ({"relative_threshold": 1.0}, "`relative_threshold`"),
        ({"cones": 47}, "`cones`"),
        ({"voxel_mask": np.ones((2, 2, 2), bool)}, "`voxel_mask`"),
    ],
)
def test_bad_arguments_are_refused(model, kwargs, match):
    rho, grid, beam, _ = _phantom()
    with pytest.raises(InvalidGeometryError, match=match):
        compute_ccc_influence_matrix(rho, grid, grid, [beam], _beamlets(), model, **kwargs)


def test_beamlets_of_another_number_of_beams_are_refused(model):
    rho, grid, beam, _ = _phantom()
    with pytest.raises(InvalidGeometryError, match="covers 1 beams but 2 beams"):
        compute_ccc_influence_matrix(rho, grid, grid, [beam, beam], _beamlets(), model)
