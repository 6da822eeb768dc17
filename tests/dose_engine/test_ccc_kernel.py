"""Collapsed-cone point kernels and cones (dose_engine._ccc_kernel, _ccc_cones).

- Physics: the electron (primary) share of each mono-energetic kernel equals water's
  energy-absorption fraction ``μ_en/μ`` (NIST, Hubbell & Seltzer) at 0.5-4 MeV, where
  Compton dominates and bremsstrahlung is small.
- Conservation: every energy's kernel fractions add up to 1, and collapsing a beam's
  kernel onto 48 or 72 cones plus its own axis keeps each part's total; the forward cone
  travels along the beam's axis.
- The shipped file is what the generator makes.
- The reference spectrum's rebinning keeps its energy and mean energy; the TERMA's two
  parts add up to the spectrum, and the electron part's share rises with depth.
"""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine import load_beam_model
from dose_engine._ccc_commission import (
    REFERENCE_SPECTRUM_EDGES_MEV,
    REFERENCE_SPECTRUM_FLUENCE,
    load_ccc_commissioning,
    reference_spectrum,
)
from dose_engine._ccc_cones import cone_directions, cone_kernels, with_beam_axes
from dose_engine._ccc_kernel import load_kernel_table, make_kernel_table, mu_water_per_mm
from dose_engine.errors import InvalidGeometryError

# NIST water, cm^2/g (Hubbell & Seltzer NISTIR 5632): mu_en / mu at these energies.
NIST_MU_EN_OVER_MU = {0.5: 0.0330 / 0.0969, 1.0: 0.0311 / 0.0707, 2.0: 0.0260 / 0.0494,
                      3.0: 0.0227 / 0.0397, 4.0: 0.0206 / 0.0340}  # fmt: skip


@pytest.fixture(scope="module")
def table():
    return load_kernel_table()


def test_electron_share_is_the_energy_absorption_fraction(table):
    for e_mev, expected in NIST_MU_EN_OVER_MU.items():
        i = int(np.flatnonzero(np.isclose(table.energies_mev, e_mev))[0])
        assert table.primary_fraction[i].sum() == pytest.approx(expected, rel=0.015), e_mev


def test_kernel_fractions_add_up_to_one(table):
    total = table.primary_fraction.sum(axis=1) + table.scatter_fraction.sum(axis=1)
    np.testing.assert_allclose(total, 1.0, atol=2e-3)
    # the primary part is short and forward: most of it within 45° and a few mm
    fwd = np.radians(table.polar_edges_deg[1:]) <= np.pi / 4
    assert np.all(table.primary_fraction[:, fwd].sum(1) > 0.6 * table.primary_fraction.sum(1))
    assert np.all(table.primary_mean_mm.max(axis=1) < 20.0)


@pytest.mark.parametrize("n", [48, 72])
def test_cones_keep_the_kernel_energy(table, n):
    share = np.full(table.energies_mev.size, 1.0 / table.energies_mev.size)
    axes = np.array([[0.0, 1.0, 0.0], [np.sqrt(0.5), np.sqrt(0.5), 0.0], [0.3, -0.2, 0.93]])
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    lattice = cone_directions(n)
    d = with_beam_axes(lattice, axes)
    assert d.shape == (n + 6, 3)
    k = cone_kernels(table, share, axes, d, shared=n)
    # each part transports its own TERMA: its fractions add up to 1 for every beam
    np.testing.assert_allclose(k.fraction.sum(axis=2), 1.0, rtol=1e-9)
    for b, ax in enumerate(axes):
        own = n + 2 * b
        np.testing.assert_allclose(d[own], ax)
        # the beam's own axis carries its forward cone (the kernel's forward bins), another
        # beam's axis nothing of it
        assert k.fraction[0, b, own] > 10 * k.fraction[0, b, own + 1]
        assert k.fraction[0, b, own] > k.fraction[0, b, :n].max()
        others = [n + 2 * c + i for c in range(3) if c != b for i in (0, 1)]
        assert np.all(k.fraction[:, b, others] == 0.0)
    # opposed beams share one axis
    assert with_beam_axes(lattice, [[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]).shape == (n + 2, 3)


def test_shipped_kernel_is_the_generated_one(table):
    fresh = make_kernel_table()
    np.testing.assert_allclose(fresh.primary_fraction, table.primary_fraction, atol=2e-7)
    np.testing.assert_allclose(fresh.scatter_mean_mm, table.scatter_mean_mm, rtol=1e-6)


@pytest.mark.parametrize("n", [0, 23, 49, 2.5, True])
def test_bad_cone_count_is_refused(n):
    with pytest.raises(InvalidGeometryError, match="cones"):
        cone_directions(n)


def test_reference_spectrum_keeps_energy_and_mean_energy(table):
    # Sheikh-Bagheri & Rogers 2002 (Varian 6 MV): each 0.25 MeV bin's energy fluence shared
    # between the kernel's energies keeps the total and the mean energy of the spectrum
    mid = REFERENCE_SPECTRUM_EDGES_MEV - 0.125
    psi = REFERENCE_SPECTRUM_FLUENCE * mid
    w = reference_spectrum(table.energies_mev)
    assert w.sum() == pytest.approx(1.0)
    inside = mid >= table.energies_mev[0]  # bins below 0.5 MeV all go to 0.5 MeV
    mean = (psi * np.where(inside, mid, table.energies_mev[0])).sum() / psi.sum()
    assert w @ table.energies_mev == pytest.approx(mean, rel=1e-12)


def test_terma_parts_follow_the_spectrum(table):
    comm = load_ccc_commissioning(load_beam_model())
    parts = comm.part_weights()
    np.testing.assert_allclose(parts.sum(axis=0), comm.weights, rtol=1e-12)
    # the electron share of the TERMA rises with depth as the beam hardens
    mu = mu_water_per_mm(comm.energies_mev)
    share = [(parts[0] * mu * np.exp(-mu * d)).sum() / (comm.weights * mu * np.exp(-mu * d)).sum()
             for d in (0.0, 100.0, 300.0)]  # fmt: skip
    assert share[0] < share[1] < share[2]
    # the commissioned spectrum stays near the published one (the fit's prior)
    assert abs(comm.provenance["tilt_per_mev"]) < 0.3
