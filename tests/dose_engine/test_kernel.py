"""The dose-of-a-rectangle primitive: analytic limits, portability, bad input."""

import json

import array_api_strict as xps
import numpy as np
import pytest

from dose_engine import (
    Beam,
    BeamModel,
    BeamModelError,
    Grid,
    InvalidGeometryError,
    field_dose,
    load_beam_model,
    rectangle_dose,
)


@pytest.fixture(scope="module")
def model():
    return load_beam_model()


def test_broad_field_limit_is_the_depth_function(model):
    # For a rectangle much larger than every kernel, each Gaussian integral P -> 1, so the
    # dose is N (SAD/z)^2 A(d) (1 + r(d)) read straight from the model file (horn switched
    # off: far off axis, where the horn's central dip has vanished, the same holds).
    p = dict(model.parameters, horn={"dip": 0.0, "sigma_mm": 50.0})
    flat = BeamModel(p)
    d = np.array([0.0, 15.0, 100.0, 250.0])
    z = np.array([1000.0, 900.0, 1100.0, 1000.0])
    got = rectangle_dose(np.zeros(4), np.zeros(4), z, d, [[-5e3, 5e3, -5e3, 5e3]], [2.0], flat)
    far = rectangle_dose(
        np.full(4, 1500.0), np.zeros(4), z, d, [[-5e3, 5e3, -5e3, 5e3]], [2.0], model
    )
    np.testing.assert_allclose(far, got, rtol=1e-6)
    # on the axis the horn dip lowers the fluence by at most `dip`
    axis = rectangle_dose(np.zeros(4), np.zeros(4), z, d, [[-5e3, 5e3, -5e3, 5e3]], [2.0], model)
    a = model.horn[0]
    assert 0.0 < a < 0.1
    assert np.all(axis < got) and np.all(axis >= (1 - a) * got * (1 - 1e-6))
    a = np.interp(d, p["depth_mm"], p["primary_weight"])
    r = np.interp(d, p["depth_mm"], p["scatter_ratio"])
    exp = 2.0 * p["normalisation_gy_per_mu"] * (1000.0 / z) ** 2 * a * (1 + r)
    np.testing.assert_allclose(got, exp, rtol=1e-6)


def test_rectangles_add_and_mirror(model):
    u = np.linspace(-40, 40, 81)
    v = np.full_like(u, 3.0)
    z = np.full_like(u, 1000.0)
    d = np.full_like(u, 100.0)
    whole = rectangle_dose(u, v, z, d, [[-20, 20, -10, 10]], [1.0], model)
    halves = rectangle_dose(u, v, z, d, [[-20, 0, -10, 10], [0, 20, -10, 10]], [1.0, 1.0], model)
    np.testing.assert_allclose(halves, whole, rtol=1e-12)
    np.testing.assert_allclose(whole, whole[::-1], rtol=1e-12)  # symmetric in u


def test_kernel_array_api_strict_matches_numpy(model):
    rng = np.random.default_rng(3)
    u, v = rng.uniform(-60, 60, (2, 200))
    z = rng.uniform(850, 1200, 200)
    d = rng.uniform(0, 300, 200)
    rects = [[-20, 10, -15, 25], [10, 30, -5, 5]]
    ref = rectangle_dose(u, v, z, d, rects, [1.0, 0.5], model)
    got = rectangle_dose(*(xps.asarray(a) for a in (u, v, z, d)), rects, [1.0, 0.5], model)
    assert isinstance(got, type(xps.asarray(1.0)))
    # the strict namespace has no erf: the xp-only fallback (A&S 7.1.26, |err| < 1.5e-7)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-5, atol=1e-9)


def test_model_missing_keys_named(tmp_path, model):
    params = dict(model.parameters)
    del params["sigma_scatter_mm"], params["provenance"]
    p = tmp_path / "broken_model.json"
    p.write_text(json.dumps(params))
    with pytest.raises(
        BeamModelError,
        match=r"broken_model\.json lacks the key\(s\) "
        r"sigma_scatter_mm, provenance",
    ):
        load_beam_model(p)
    params = dict(model.parameters, calibration={"dose_gy_per_mu": 0.01})
    p.write_text(json.dumps(params))
    with pytest.raises(BeamModelError, match="calibration.field_size_mm"):
        load_beam_model(p)


def test_model_provenance_documents_fit(model):
    prov = model.provenance()
    assert "06MV_10x10.mcc" in prov["data"] and "fit_6mv_model" in prov["fitted_by"]
    assert model.parameters["calibration"]["dose_gy_per_mu"] == 0.01


def _water():
    g = Grid((40, 40, 40), (-97.5, -97.5, -97.5), (5.0, 5.0, 5.0))
    return np.ones(g.shape, np.float32), g


@pytest.mark.parametrize("rect", [[10, 10, -5, 5], [10, 0, -5, 5], [-5, 5, 3, -3]])
def test_zero_or_negative_field_refused(rect):
    dens, g = _water()
    with pytest.raises(InvalidGeometryError, match="zero or negative size"):
        field_dose(dens, g, g, Beam(0), [rect], 1.0)


def test_isocentre_outside_ct_refused():
    dens, g = _water()
    with pytest.raises(
        InvalidGeometryError,
        match=r"isocentre \(0.0, 0.0, 500.0\) mm lies "
        r"outside the CT",
    ):
        field_dose(dens, g, g, Beam(0, isocenter_mm=(0, 0, 500)), [[-5, 5, -5, 5]], 1.0)


def test_density_shape_mismatch_refused():
    dens, g = _water()
    with pytest.raises(InvalidGeometryError, match="`density` has shape"):
        field_dose(dens[:-1], g, g, Beam(0), [[-5, 5, -5, 5]], 1.0)


def test_many_rectangles_equal_the_sum_of_single_rectangles(model):
    """The separable edge grouping (shared leaf edges and leaf-pair rows, zero-MU
    rectangles skipped) gives the same dose as one rectangle at a time."""
    rng = np.random.default_rng(7)
    u, v = rng.uniform(-60, 60, (2, 300))
    z = rng.uniform(850, 1200, 300)
    d = rng.uniform(0, 300, 300)
    edges = np.arange(-40.0, 42.5, 2.5)
    rects, mus = [], []
    for y1 in np.arange(-20.0, 20.0, 5.0):  # leaf-pair rows, several segments each
        for _ in range(3):
            i, j = np.sort(rng.choice(edges.size, 2, replace=False))
            rects.append([edges[i], edges[j], y1, y1 + 5.0])
            mus.append(float(rng.choice([0.0, 0.7, 2.0])))
    together = rectangle_dose(u, v, z, d, rects, mus, model)
    one_by_one = sum(
        rectangle_dose(u, v, z, d, [r], [m], model)
        for r, m in zip(rects, mus, strict=True)
        if m > 0
    )
    np.testing.assert_allclose(together, one_by_one, rtol=1e-10, atol=1e-15)


def test_points_beyond_the_edges_skipped(model, monkeypatch):
    # Points farther than 5 kernel widths beyond every edge get exactly 0 from a Gaussian
    # term without evaluating it (float32 erf is ±1 there): the dose equals evaluating
    # every point (whose edge-pair product leaves float32 rounding residues of the
    # meterset there, below 1e-6 of the maximum), and most points of a 20 x 20 mm field's
    # phantom are skipped for the narrow primary term.
    from dose_engine import _model
    from dose_engine._validation import water_phantom

    dens, ct = water_phantom(900.0, spacing_mm=4.0, half_width_mm=150, depth_mm=200)
    beam = Beam(0.0)
    rects = [[-10, 10, -10, 10], [10, 20, -5, 5]]
    shares = []
    integrate = _model._ApertureLayout._integrate

    def counting(self, cx, *args):
        shares.append(cx.shape[0])
        return integrate(self, cx, *args)

    monkeypatch.setattr(_model._ApertureLayout, "_integrate", counting)
    skipped = np.asarray(field_dose(dens, ct, ct, beam, rects, [1.0, 2.0], model))
    n_skipping = list(shares)
    monkeypatch.setattr(_model, "MIN_SATURATED_SHARE", 2.0)  # never skip
    every = np.asarray(field_dose(dens, ct, ct, beam, rects, [1.0, 2.0], model))
    assert skipped.dtype == np.float32
    np.testing.assert_allclose(skipped, every, rtol=0, atol=1e-6 * float(every.max()))
    n_every = shares[len(n_skipping) :]
    assert sum(n_every) == 6 * ct.voxel_count  # 4 Gaussian terms and 2 horn terms
    assert min(n_skipping) < 0.3 * max(n_every)  # the primary term: mostly skipped
    assert sum(n_skipping) < 0.8 * sum(n_every)


def test_points_cache_reuses_the_ray_trace_bit_for_bit(model, traced_beams):
    # A second dose of the same beam through `points_cache` skips the ray tracing and is
    # bit-identical to a dose computed from scratch; another beam is traced anew.
    from dose_engine._validation import water_phantom

    dens, ct = water_phantom(900.0, spacing_mm=4.0, half_width_mm=100, depth_mm=150)
    mask = np.zeros(ct.shape, dtype=bool)
    mask[:, ::2, :] = True
    cache: dict = {}
    rects, mus = [[-10, 10, -10, 10], [10, 20, -5, 5]], [1.0, 2.0]
    fresh = field_dose(dens, ct, ct, Beam(0.0), rects, mus, model, voxel_mask=mask)
    first = field_dose(
        dens, ct, ct, Beam(0.0), rects, mus, model, voxel_mask=mask, points_cache=cache
    )
    again = field_dose(
        dens,
        ct,
        ct,
        Beam(0.0),
        [[-5, 5, -5, 5]],
        [3.0],
        model,
        voxel_mask=mask,
        points_cache=cache,
    )
    other = field_dose(
        dens, ct, ct, Beam(90.0), rects, mus, model, voxel_mask=mask, points_cache=cache
    )
    assert traced_beams == [Beam(0.0), Beam(0.0), Beam(90.0)]  # `again` was not traced
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(
        again, field_dose(dens, ct, ct, Beam(0.0), [[-5, 5, -5, 5]], [3.0], model, voxel_mask=mask)
    )
    np.testing.assert_array_equal(
        other, field_dose(dens, ct, ct, Beam(90.0), rects, mus, model, voxel_mask=mask)
    )
    assert float(again.max()) > 0 and np.all(again[~mask] == 0)


def test_beams_differing_in_collimator_share_one_ray_trace(model, traced_beams, monkeypatch):
    # Rays are traced in the beam's frame at collimator 0 and the points turned to the
    # collimator: two beams that differ only in collimator angle (VMAT's two arcs) are
    # traced once through a shared `points_cache`, each dose bit-identical to a fresh one.
    # Independent checks: the turned fan coordinates are `Beam.to_fan_coordinates` of the
    # voxel centres, and in a water box (depth smooth across rays) the dose equals the one
    # traced on the collimated beam's own ray lattice (the previous path).
    from dose_engine import _field_dose
    from dose_engine._validation import water_phantom

    dens, ct = water_phantom(900.0, spacing_mm=4.0, half_width_mm=100, depth_mm=150)
    mask = np.zeros(ct.shape, dtype=bool)
    # from 8 mm deep and 12 mm inside the sides: no point next to where rays enter the box
    mask[3:-3, 2::2, 3:-3] = True
    rects, mus = [[-30, 10, -20, 5], [10, 25, -10, 15]], [2.0, 1.0]  # asymmetric
    cache: dict = {}
    beams = [Beam(20.0, collimator_angle_deg=c) for c in (30.0, 330.0)]
    shared = [
        field_dose(dens, ct, ct, b, rects, mus, model, voxel_mask=mask, points_cache=cache)
        for b in beams
    ]
    assert traced_beams == [Beam(20.0)]
    for b, dose in zip(beams, shared, strict=True):
        np.testing.assert_array_equal(
            dose, field_dose(dens, ct, ct, b, rects, mus, model, voxel_mask=mask)
        )
    ((_, frame_points),) = cache.items()
    for b in beams:
        turned = _field_dose.in_collimator_frame(frame_points, b)
        idx = np.stack(np.unravel_index(turned.flat_index, ct.shape), axis=-1)
        u, v, _ = b.to_fan_coordinates(ct.index_to_point(idx))
        np.testing.assert_allclose(turned.u_mm, u, atol=1e-4)
        np.testing.assert_allclose(turned.v_mm, v, atol=1e-4)
    assert not np.allclose(shared[0], shared[1], rtol=0.05)  # the collimator matters
    monkeypatch.setattr(_field_dose, "ray_frame", lambda beam: beam)  # the beam's own lattice
    for b, dose in zip(beams, shared, strict=True):
        own = field_dose(dens, ct, ct, b, rects, mus, model, voxel_mask=mask)
        np.testing.assert_allclose(dose, own, rtol=0, atol=2e-5 * float(own.max()))
