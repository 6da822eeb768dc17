"""A plan's dose by Monte Carlo (ompMC in a separate process), on rtplan's dose grid."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dose_engine import Grid

from ..dose._plan_dose import require_ct_volume, resolve_beam_model, resolve_density_table
from ..errors import InputError
from ..structures import body_grid, body_structure
from ._job import monte_carlo_job
from ._runner import NO_OMPMC
from ._spectrum import (
    DEFAULT_MC_SPECTRUM,
    require_mc_spectrum,
    spectrum_record,
    write_spectrum_file,
)

__all__ = ["MonteCarloDose", "monte_carlo_dose", "run_monte_carlo_job"]

#: Default number of histories of a plan run (the calibration run takes a quarter).
DEFAULT_HISTORIES = 1_000_000


@dataclass(frozen=True, eq=False)
class MonteCarloDose:
    """A plan's total dose by Monte Carlo.

    Attributes
    ----------
    dose_gy : (nz, ny, nx) ndarray of float64, Gy
        Total over all fractions, dose to the voxel's medium, on ``grid``.
    uncertainty : (nz, ny, nx) ndarray of float64
        Relative statistical uncertainty (1 σ) of each voxel (about 1 where nothing was
        deposited).
    grid : dose_engine.Grid
    histories : int
    spectrum : dict
        The source spectrum (:func:`rtplan.monte_carlo._spectrum.spectrum_record`): its
        ``name`` (``"commissioned"`` or ``"ompmc"``) and what it is.
    """

    dose_gy: np.ndarray
    uncertainty: np.ndarray
    grid: Grid
    histories: int
    spectrum: dict

    def __repr__(self) -> str:
        return (
            f"MonteCarloDose(max={float(self.dose_gy.max()):.4g} Gy, grid={self.grid!r}, "
            f"histories={self.histories}, spectrum={self.spectrum['name']!r})"
        )


def monte_carlo_dose(
    plan,
    patient,
    *,
    dose_grid_mm: float = 5.0,
    dose_grid: Grid | None = None,
    model=None,
    density_table=None,
    histories: int = DEFAULT_HISTORIES,
    seed: int = 33,
    spectrum: str = DEFAULT_MC_SPECTRUM,
) -> MonteCarloDose:
    """Total dose of ``plan`` on ``patient``'s CT by Monte Carlo (ompMC), for a second check.

    ompMC (GPL-3) runs in a separate Python process (:mod:`rtplan.monte_carlo._runner`):
    rtplan never imports it. Install it with ``pip install "rtplan[mc]"``. The phantom,
    sources, apertures and calibration are described in :mod:`rtplan.monte_carlo._job`.

    Parameters
    ----------
    plan : rtplan.DeliverablePlan
    patient : rtplan.Patient
    dose_grid_mm : float, keyword-only
        Spacing (mm) of a grid over the body plus one voxel (as :func:`rtplan.compute_plan_dose`);
        ignored when ``dose_grid`` is given.
    dose_grid : dose_engine.Grid, optional
    model : dose_engine.BeamModel or path-like, optional
        Gives the calibration (Gy/MU at its reference conditions) and the leaf transmission.
    density_table : dose_engine.HUTable or path-like, optional
    histories : int, keyword-only
        Histories of the plan run (run time about 0.2 CPU s per 1,000 on this project's
        2-core machine with 5 mm voxels).
    seed : int, keyword-only
        Second seed of the random number generator.
    spectrum : {"commissioned", "ompmc"}, keyword-only
        Source spectrum (:mod:`rtplan.monte_carlo._spectrum`): the collapsed-cone
        commissioning's of ``model`` (default: the beam our collapsed cone computes), or
        ompMC's shipped Varian 6 MV spectrum.

    Returns
    -------
    MonteCarloDose

    Raises
    ------
    rtplan.errors.InputError
        ompMC is not installed (the message says how to install it), the plan has no
        meterset, ``histories`` is below 10,000, ``spectrum`` is not one of the two, the
        model has no collapsed-cone commissioning for ``"commissioned"``, or the run failed
        (its last output lines).
    """
    from dose_engine import hu_to_density
    from dose_engine._resample import resample

    if isinstance(histories, bool) or not isinstance(histories, int) or histories < 10_000:
        raise InputError(f"`histories` must be an integer ≥ 10000; got {histories!r}.")
    require_mc_spectrum(spectrum)
    require_ct_volume(patient, "a Monte Carlo dose")
    if dose_grid is None:
        dose_grid = body_grid(patient.ct.grid, body_structure(patient), float(dose_grid_mm))
    model = resolve_beam_model(model)
    record = spectrum_record(spectrum, model)
    lines = None
    if spectrum == "commissioned":  # the record's lines: the commissioning is read once
        lines = (np.asarray(record["energies_mev"]), np.asarray(record["energy_fluence_weights"]))
    table = resolve_density_table(density_table)
    density = hu_to_density(np.asarray(patient.ct.array, dtype=np.float32), table)
    on_grid = np.asarray(resample(density, patient.ct.grid, dose_grid, order=1), dtype=np.float64)
    job = monte_carlo_job(plan, np.clip(on_grid, 0.0, None), dose_grid, model)
    dose, unc = run_monte_carlo_job(job, histories=histories, seed=seed, spectrum=lines)
    return MonteCarloDose(dose, unc, dose_grid, histories, record)


def run_monte_carlo_job(
    job: dict,
    *,
    histories: int,
    seed: int,
    spectrum: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a Monte Carlo job (:func:`rtplan.monte_carlo._job.monte_carlo_job`'s arrays) in a
    separate process (:mod:`rtplan.monte_carlo._runner`; ompMC is never imported here).

    Parameters
    ----------
    job : dict of str to ndarray
        Without the ``cal_*`` entries no calibration run is made and the dose is in the
        Monte Carlo code's unit (per unit aperture weight): enough for dose ratios.
    histories, seed : int, keyword-only
    spectrum : ((n,) ndarray, (n,) ndarray), keyword-only, optional
        Line energies (MeV) and energy-fluence weights of the source spectrum
        (:func:`rtplan.monte_carlo._spectrum.commissioned_spectrum`), written to a spectrum
        file for the process; None: ompMC's shipped ``var_6MV.spectrum``.

    Returns
    -------
    dose, uncertainty : (nz, ny, nx) ndarray of float64
        Dose (Gy with calibration) and its relative 1 σ, on the job's grid, [z, y, x].

    Raises
    ------
    rtplan.errors.InputError
        ompMC is not installed, ``spectrum`` is not a valid spectrum, or the run failed (its
        last output lines).
    """
    with tempfile.TemporaryDirectory(prefix="rtplan-mc-") as tmp:
        job_path, out_path = Path(tmp) / "job.npz", Path(tmp) / "dose.npz"
        extra = []
        if spectrum is not None:
            extra = [str(write_spectrum_file(Path(tmp) / "source.spectrum", *spectrum))]
        np.savez(job_path, **job)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "rtplan.monte_carlo._runner",
                str(job_path),
                str(out_path),
                str(int(histories)),
                str(int(seed)),
                *extra,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode == NO_OMPMC:
            raise InputError(
                "The Monte Carlo check needs ompMC (GPL-3, run in its own process): "
                "pip install 'rtplan[mc]'."
            )
        if done.returncode != 0 or not out_path.is_file():
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise InputError(f"The Monte Carlo run failed (exit {done.returncode}): {tail}")
        with np.load(out_path) as out:
            dose = np.ascontiguousarray(out["dose_gy"].T)  # (x, y, z) -> (z, y, x)
            unc = np.ascontiguousarray(out["uncertainty"].T)
    return dose, unc
