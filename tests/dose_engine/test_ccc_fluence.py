"""The collapsed cone's aperture fluence (TERMA's Ψ) against its direct evaluation.

``aperture_fluence`` evaluates the wide extra-focal (head-scatter) Gaussian on a lattice
interpolated bilinearly and the focal part in chunks of points; the reference evaluates
every error function at every point (the formula of ``dose_engine._ccc_terma``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import array_namespace

from dose_engine import _ccc_terma as terma
from dose_engine import load_beam_model
from dose_engine._model import _ApertureLayout, _pair, horn_axis_terms

#: numpy as the engine sees it (array-API names such as ``astype`` on numpy < 2 too)
XP = array_namespace(np.zeros(1))


def _direct(u, v, rects, mus, model):
    """Ψ with every error function evaluated at every point (no lattice, no chunks)."""
    layout = _ApertureLayout(rects, mus)
    p = model.parameters
    wh = float(p["head_scatter_weight"])
    horn_a, horn_s = model.horn
    inv = 1.0 / math.sqrt(2.0)
    out = np.zeros_like(u)
    for weight, sigmas, focal in (
        (1.0 - wh, _pair(p["source_sigma_mm"]), True),
        (wh, _pair(p["head_scatter_sigma_mm"]), False),
    ):
        sx, sy = np.full_like(u, sigmas[0]), np.full_like(u, sigmas[1])
        acc = layout.integrate(u, inv / sx, v, inv / sy, XP, {})
        if focal:
            cx, ix, fx = horn_axis_terms(u, sx, horn_s, XP)
            cy, iy, fy = horn_axis_terms(v, sy, horn_s, XP)
            acc = acc - (horn_a * fx * fy) * layout.integrate(cx, ix, cy, iy, XP, {})
        out += weight * 0.25 * acc
    return out


@pytest.fixture(scope="module")
def aperture():
    """Ten step-and-shoot segments of 5 mm leaf pairs, points over a thorax-wide plane."""
    rng = np.random.default_rng(3)
    rects, mus = [], []
    for _ in range(10):
        for pair in range(14):
            y1 = -35.0 + 5.0 * pair
            a = rng.uniform(-35, 0)
            rects.append([a, rng.uniform(a + 1, 35), y1, y1 + 5.0])
            mus.append(rng.uniform(1, 20))
    u = rng.uniform(-250, 250, 60_000)
    v = rng.uniform(-200, 200, 60_000)
    return u, v, np.array(rects), np.array(mus)


def test_lattice_fluence_matches_the_direct_evaluation(aperture):
    model = load_beam_model()
    u, v, rects, mus = aperture
    got = terma.aperture_fluence(u, v, rects, mus, model, XP)
    ref = _direct(u, v, rects, mus, model)
    # the lattice's bound: 3e-5 of the MU per edge pair times the head-scatter weight;
    # against the fluence's maximum (sum of overlapping segments) it is below 1e-5
    assert np.abs(got - ref).max() <= 1e-5 * ref.max()
    inside = ref > 0.01 * ref.max()
    assert (np.abs(got - ref)[inside] / ref[inside]).max() <= 5e-4


def test_chunks_do_not_change_the_fluence(aperture, monkeypatch):
    model = load_beam_model()
    u, v, rects, mus = aperture
    whole = terma.aperture_fluence(u, v, rects, mus, model, XP)
    monkeypatch.setattr(terma, "FLUENCE_CHUNK_POINTS", 7_001)
    chunked = terma.aperture_fluence(u, v, rects, mus, model, XP)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-15 * whole.max())


def test_threaded_chunks_equal_serial(aperture, monkeypatch):
    """The focal part's chunks on the backend's thread pool give the serial result bit for
    bit (each chunk's points are independent).  Both runs go through ``Backend.map``, which
    holds BLAS to one thread: OpenBLAS 0.3.31 (numpy 2.4) gives other last bits to the
    chunks' products on two BLAS threads than on one."""
    import dose_engine._backend as backend

    model = load_beam_model()
    u, v, rects, mus = aperture
    monkeypatch.setattr(terma, "FLUENCE_CHUNK_POINTS", 7_001)
    pool = backend.get_backend("numpy").map
    with monkeypatch.context() as one_worker:
        one_worker.setattr(backend, "worker_count", lambda: 1)
        serial = terma.aperture_fluence(u, v, rects, mus, model, XP, pool)
    threaded = terma.aperture_fluence(u, v, rects, mus, model, XP, pool)
    np.testing.assert_array_equal(threaded, serial)
