"""Run a Monte Carlo job with ompMC, in its own process.

``python -m rtplan.monte_carlo._runner JOB.npz OUT.npz HISTORIES SEED [SPECTRUM_FILE]``

ompMC (EGSnrc physics re-implemented in C; Doerner and Caprile, Med Phys 44:6672, 2017)
is GPL-3 licensed. rtplan (BSD-3) never imports it: :func:`rtplan.monte_carlo.monte_carlo_dose`
starts this module as a separate Python process, which reads the job's arrays
(:func:`rtplan.monte_carlo._job.monte_carlo_job`), runs the calibration and the plan, and
writes ``dose_gy`` (total, Gy; without the job's ``cal_*`` entries no calibration run is
made and the dose is per unit aperture weight) and ``uncertainty`` (relative, 1 σ) in the job's
(x, y, z) voxel order. The source spectrum is ``SPECTRUM_FILE`` (EGSnrc format,
:func:`rtplan.monte_carlo._spectrum.write_spectrum_file`), without it ompMC's shipped
``var_6MV.spectrum``; the calibration run uses the same. Exit status 3: ompMC is not
installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ._spectrum import OMPMC_SPECTRUM_FILE

#: Exit status when ompMC cannot be imported.
NO_OMPMC = 3
#: Statistical batches of each run (ompMC's uncertainty estimate).
BATCHES = 10


def _spectrum(ompmc, path: str | None):
    """The spectrum file ``path``, or ompMC's 6 MV Varian spectrum (Sheikh-Bagheri and
    Rogers 2002, as shipped) when it is None."""
    if path is None:
        path = str(Path(ompmc.__file__).parent / "spectra" / OMPMC_SPECTRUM_FILE)
    return ompmc.Spectrum.from_file(path)


def _calibration_dose_per_mu(ompmc, job, histories: int, physics, spectrum) -> float:
    """Monte Carlo dose of 1 MU (weight: the field's area in cm²) about the axis of the
    reference field at the reference depth (4 × 4 cm² laterally, where a 10 × 10 field is
    flat within 1 %; the two 5 mm voxels either side of the depth)."""
    box, depth = float(job["cal_box_cm"]), float(job["cal_depth_cm"])
    lateral = np.linspace(-box, box, int(round(2 * box)) + 1)  # 1 cm voxels
    dz = 0.5
    z = np.arange(0.0, 2 * box + dz / 2, dz)
    shape = (lateral.size - 1, lateral.size - 1, z.size - 1)
    geometry = ompmc.Geometry(
        lateral,
        lateral,
        z,
        ["H2O700ICRU"],
        np.ones(shape, order="F"),
        np.ones(shape, dtype=np.int32, order="F"),
    )
    f, ssd, sad = float(job["cal_field_cm"]), float(job["cal_ssd_cm"]), float(job["cal_sad_cm"])
    iso_z = sad - ssd
    source = ompmc.BeamletSource(
        np.array([0]),
        np.array([[0.0, 0.0, -ssd]]),
        np.array([[-f / 2, -f / 2, iso_z]]),
        np.array([[f, 0.0, 0.0]]),
        np.array([[0.0, f, 0.0]]),
    )
    dose, _ = ompmc.calc_forward(
        geometry,
        source,
        [f * f],
        spectrum,
        physics,
        n_histories=histories,
        n_batches=BATCHES,
    )
    c = shape[0] // 2
    k = int(round(depth / dz))
    return float(dose[c - 2 : c + 2, c - 2 : c + 2, k - 1 : k + 1].mean())


def run(
    job_path: str, out_path: str, histories: int, seed: int, spectrum_path: str | None = None
) -> int:
    """Calibration run (when the job has one), plan run, write ``OUT.npz``; the exit status."""
    try:
        import ompmc
    except ImportError:
        return NO_OMPMC
    job = np.load(job_path)
    physics = ompmc.Physics(seeds=(97, int(seed)))
    spectrum = _spectrum(ompmc, spectrum_path)
    scale = 1.0  # without calibration entries: the dose per unit aperture weight
    if "cal_gy_per_mu" in job.files:
        per_mu = _calibration_dose_per_mu(
            ompmc, job, max(histories // 2, 100_000), physics, spectrum
        )
        scale = float(job["cal_gy_per_mu"]) / per_mu
    geometry = ompmc.Geometry(
        job["x_bounds"],
        job["y_bounds"],
        job["z_bounds"],
        [str(m) for m in job["media"]],
        np.asfortranarray(job["density"]),
        np.asfortranarray(job["material"]),
    )
    source = ompmc.BeamletSource(
        job["i_beam"], job["source"], job["corner"], job["side1"], job["side2"]
    )
    dose, uncertainty = ompmc.calc_forward(
        geometry,
        source,
        job["weight"],
        spectrum,
        physics,
        n_histories=histories,
        n_batches=BATCHES,
    )
    np.savez(out_path, dose_gy=np.asarray(dose) * scale, uncertainty=np.asarray(uncertainty))
    return 0


if __name__ == "__main__":
    spectrum_file = sys.argv[5] if len(sys.argv) > 5 else None
    sys.exit(run(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), spectrum_file))
