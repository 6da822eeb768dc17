"""The Monte Carlo job's phantom: electron density (rtplan's) turned into mass density.

ompMC takes mass density and a medium; rtplan's CT table and engines give electron density
relative to water.  Independent numbers: NIST ESTAR's compositions, ICRP cortical bone
(1.85 g/cm³, Z/A 0.52130) and dry air (1.20479e-3 g/cm³, Z/A 0.49919), against water's
Z/A 0.55508: their electron densities 1.7374 and 1.0835e-3 must come back as those mass
densities, and water as itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine import Beam, Grid, load_beam_model
from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine
from rtplan.monte_carlo._job import MEDIA, _media, mass_density, monte_carlo_job

WATER_Z_OVER_A = 0.55508
NIST = {  # medium: (mass density g/cm³, Z/A)
    "ICRPBONE700ICRU": (1.85, 0.52130),
    "AIR700ICRU": (1.20479e-3, 0.49919),
    "H2O700ICRU": (1.0, WATER_Z_OVER_A),
}


@pytest.mark.parametrize("medium", sorted(NIST))
def test_mass_density_of_nist_media(medium):
    rho, z_over_a = NIST[medium]
    electron = np.array([rho * z_over_a / WATER_Z_OVER_A])
    material = _media(electron)
    assert MEDIA[int(material[0]) - 1] == medium
    assert mass_density(electron, material)[0] == pytest.approx(rho, rel=2e-4)


def test_job_holds_mass_density_of_a_bone_slab():
    machine = load_machine("VarianMLC120")
    c = machine.mlc.leaf_centers_mm
    inside = np.abs(c) < 20.0
    leaves = np.stack([np.where(inside, -20.0, 0.0), np.where(inside, 20.0, 0.0)])
    seg = Segment(leaves, {"X": (-20.0, 20.0), "Y": (-20.0, 20.0)}, 10.0,
                  machine.mlc.leaf_boundaries_mm)  # fmt: skip
    beam = DeliverableBeam(1, "b", Beam(0.0, isocenter_mm=(0.0, 0.0, 0.0)), machine, (seg,))
    plan = DeliverablePlan([beam], 1, 0.8, "Body")
    grid = Grid((4, 6, 4), (-15.0, -25.0, -15.0), (10.0, 10.0, 10.0))
    electron = np.ones(grid.shape)
    electron[:, 2:4, :] = 1.85 * NIST["ICRPBONE700ICRU"][1] / WATER_Z_OVER_A
    job = monte_carlo_job(plan, electron, grid, load_beam_model())
    density = job["density"].T  # back to (z, y, x)
    np.testing.assert_allclose(density[:, 2:4, :], 1.85, rtol=2e-4)
    np.testing.assert_allclose(density[:, [0, 1, 4, 5], :], 1.0)
    assert {MEDIA[m - 1] for m in np.unique(job["material"])} == {"H2O700ICRU", "ICRPBONE700ICRU"}
