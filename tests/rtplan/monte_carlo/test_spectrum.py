"""The Monte Carlo's source spectrum: the collapsed cone's commissioned beam by default.

- The spectrum file (EGSnrc format, read here by a parser of its own) holds the
  commissioning's energies and energy-fluence weights (``dose_engine/data/
  ccc_commissioning_6MV.json``) within float precision; bad values are refused, naming the
  argument.
- With ompMC installed, a Monte Carlo run in water (slow): the depth-dose ratio
  D(200-250 mm) / D(90-110 mm) with the commissioned spectrum lies closer to the
  commissioned collapsed cone's than with ompMC's shipped (softer) spectrum, and above it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dose_engine
from dose_engine import Beam, BeamModel, Grid, collapsed_cone_dose, load_beam_model
from rtplan.cli import main
from rtplan.errors import InputError
from rtplan.monte_carlo import monte_carlo_dose
from rtplan.monte_carlo._job import open_field_job
from rtplan.monte_carlo._run import run_monte_carlo_job
from rtplan.monte_carlo._spectrum import (
    LINE_HALF_WIDTH_MEV,
    commissioned_spectrum,
    spectrum_record,
    write_spectrum_file,
)


def _read_egs_spectrum(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower edges, upper edges and counts per bin of an EGSnrc spectrum file (mode 0)."""
    lines = path.read_text().splitlines()
    n, e_min, mode = lines[1].split()
    assert int(mode) == 0
    rows = np.array([[float(v) for v in line.split()] for line in lines[2:]])
    assert rows.shape == (int(n), 2)
    upper = rows[:, 0]
    lower = np.concatenate([[float(e_min)], upper[:-1]])
    return lower, upper, rows[:, 1]


def test_spectrum_file_holds_the_commissioning_spectrum(tmp_path):
    data = Path(dose_engine.__file__).parent / "data" / "ccc_commissioning_6MV.json"
    shipped = json.loads(data.read_text())
    energies, weights = commissioned_spectrum(load_beam_model())
    path = write_spectrum_file(tmp_path / "c.spectrum", energies, weights)
    lower, upper, counts = _read_egs_spectrum(path)
    assert np.all(np.diff(upper) > 0) and np.all(upper > lower)
    full = counts > 0
    assert counts.sum() == pytest.approx(1.0, abs=1e-9)
    centre = (lower + upper)[full] / 2.0  # uniform within a bin: its mean energy
    assert centre == pytest.approx(shipped["energies_mev"], rel=1e-12)
    assert (upper - lower)[full] == pytest.approx(2 * LINE_HALF_WIDTH_MEV, rel=1e-9)
    psi = counts[full] * centre  # energy fluence
    assert psi / psi.sum() == pytest.approx(
        np.asarray(shipped["weights"]) / np.sum(shipped["weights"]), rel=1e-9
    )
    record = spectrum_record("commissioned", load_beam_model())
    assert record["tilt_per_mev"] == shipped["provenance"]["tilt_per_mev"]
    assert record["energy_fluence_weights"] == pytest.approx(psi / psi.sum(), rel=1e-9)


@pytest.mark.parametrize(
    ("energies", "weights", "named"),
    [
        ([1.0, 2.0], [0.5, -0.1], "`weights`"),
        ([1.0, 2.0], [0.0, 0.0], "`weights`"),
        ([1.0, 2.0], [0.5, np.nan], "`weights`"),
        ([1.0, 2.0], [0.5], "`weights`"),
        ([2.0, 1.0], [0.5, 0.5], "`energies_mev`"),
        ([1.0, 1.01], [0.5, 0.5], "`energies_mev`"),  # the lines' bins would overlap
        ([0.0, 1.0], [0.5, 0.5], "`energies_mev`"),
        ([1.0, np.inf], [0.5, 0.5], "`energies_mev`"),
    ],
)
def test_spectrum_file_refuses_bad_values(tmp_path, energies, weights, named):
    path = tmp_path / "bad.spectrum"
    with pytest.raises(InputError, match=named):
        write_spectrum_file(path, energies, weights)
    assert not path.exists()


@pytest.mark.parametrize("value", ["mohan6", "", None, 1])
def test_monte_carlo_dose_refuses_an_unknown_spectrum_before_any_work(value):
    with pytest.raises(InputError, match="`spectrum` must be one of 'commissioned', 'ompmc'"):
        monte_carlo_dose(None, None, spectrum=value)


def test_commissioned_spectrum_needs_a_commissioned_model():
    model = load_beam_model()
    other = BeamModel({**model.parameters, "name": "another 6 MV"}, "other.json")
    with pytest.raises(InputError, match="ompmc"):
        commissioned_spectrum(other)
    assert spectrum_record("ompmc", other)["name"] == "ompmc"  # needs no commissioning


def test_check_mc_refuses_an_unknown_spectrum(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["check-mc", "ct", "rs.dcm", "rp.dcm", "--mc-spectrum", "mohan6"])
    assert exc.value.code == 2
    assert "--mc-spectrum" in capsys.readouterr().err


#: Water box of the run: surface at y = 0, depth along +y, 5 mm voxels.
HALF_MM, DEPTH_MM, VOXEL_MM, FIELD_MM, SSD_MM = 120.0, 300.0, 5.0, 100.0, 900.0
#: Depth-dose ratio D(deep) / D(norm) over these depth ranges (mm), central 50 × 50 mm².
DEEP_MM, NORM_MM, CENTRAL_MM = (200.0, 250.0), (90.0, 110.0), 25.0
#: Histories of each Monte Carlo run (about 1 % on the ratio).
HISTORIES = 150_000


def _ratio(dose: np.ndarray, grid: Grid) -> float:
    z, y, x = grid.zyx_axes_mm()
    lat = (np.abs(z)[:, None] < CENTRAL_MM) & (np.abs(x)[None, :] < CENTRAL_MM)
    depth = dose.transpose(1, 0, 2)[:, lat].mean(axis=1)
    deep = (y > DEEP_MM[0]) & (y < DEEP_MM[1])
    norm = (y > NORM_MM[0]) & (y < NORM_MM[1])
    return float(depth[deep].mean() / depth[norm].mean())


@pytest.mark.slow
def test_commissioned_spectrum_brings_the_monte_carlo_depth_dose_to_the_collapsed_cone():
    pytest.importorskip("ompmc")  # the optional extra rtplan[mc]
    n_lat = int(2 * HALF_MM / VOXEL_MM) | 1
    o = -(n_lat // 2) * VOXEL_MM
    grid = Grid((n_lat, int(DEPTH_MM / VOXEL_MM), n_lat), (o, VOXEL_MM / 2, o), (VOXEL_MM,) * 3)
    beam = Beam(0.0, isocenter_mm=(0.0, 1000.0 - SSD_MM, 0.0))
    model = load_beam_model()
    rho = np.ones(grid.shape, np.float32)
    h = FIELD_MM / 2.0
    ccc = collapsed_cone_dose(rho, grid, grid, [beam], [[-h, h, -h, h]], [1.0], model)
    job = open_field_job(rho, grid, beam, FIELD_MM)
    ratios = {}
    for name, lines in (("ompmc", None), ("commissioned", commissioned_spectrum(model))):
        dose, _ = run_monte_carlo_job(job, histories=HISTORIES, seed=7, spectrum=lines)
        ratios[name] = _ratio(dose, grid)
    target = _ratio(np.asarray(ccc), grid)
    # ompMC's spectrum is softer: its deep dose lies 4-6 % below the commissioned beam's
    assert ratios["commissioned"] > ratios["ompmc"] * 1.02, (ratios, target)
    assert abs(ratios["commissioned"] / target - 1) < abs(ratios["ompmc"] / target - 1)
    assert ratios["commissioned"] == pytest.approx(target, rel=0.025)
