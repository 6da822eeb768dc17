"""A plan and a patient as a Monte Carlo job: voxel phantom, sources and weighted apertures.

The job is plain numpy arrays (written to an ``.npz`` file and run in a separate process by
:mod:`rtplan.monte_carlo._runner`), in the Monte Carlo code's units and frame: cm, patient
LPS, voxel boundaries along x, y and z.

* **Phantom.** The dose grid's voxels; each CT voxel's electron density relative to water
  from the clinic's CT-to-density table (:func:`dose_engine.hu_to_density`, averaged onto
  the dose grid), a medium by that density: air below 0.05, lung below 0.6, water below
  1.2, ICRP bone above (the PEGS4 media of the 700ICRU data set), and the medium's mass
  density that has this electron density (:func:`mass_density`: the Monte Carlo takes mass
  density, and ICRP bone carries 6 % fewer electrons per gram than water).
* **Sources.** One point source per beam (per gantry angle for an arc) at the beam's
  source position; the spectrum is chosen by :func:`rtplan.monte_carlo.monte_carlo_dose`
  (:mod:`rtplan.monte_carlo._spectrum`: the collapsed cone's commissioned one by default).
* **Apertures.** Every open leaf pair of every segment, clipped by the jaws, is one
  rectangle in the isocentre plane, weighted by the segment's meterset × (1 − leaf
  transmission); the jaw opening (the leaf bank's reach where the machine has no X jaws)
  carries meterset × transmission. Weights are particles (meterset × area in cm²), so a
  rectangle's fluence is its meterset. Leaf ends are square: no dosimetric leaf gap, no
  tongue-and-groove, no head scatter — the check is of the transport in the patient, not of
  the beam model's collimation.
* **Calibration.** Gy per MU from a 10 × 10 cm² field at SSD 1000 mm on a water box, run
  by the same process, at 100 mm depth (the reference depth of IAEA TRS-398), equal to the
  commissioned beam model's dose there (:func:`reference_gy_per_mu`). At the model's own
  calibration depth (dmax) the source spectrum shipped with ompMC (a Varian 6 MV spectrum)
  would put the dose at depth 3-4 % below the pymedphys measurements; at 100 mm it is
  within about 2 % from 50 to 200 mm (``tests/rtplan/monte_carlo``).
"""

from __future__ import annotations

import numpy as np

from ..dose._aperture import resolve_mlc_parameters, static_parts
from ..errors import InputError

__all__ = [
    "ELECTRONS_PER_MASS",
    "MEDIA",
    "MEDIUM_UPPER_DENSITY",
    "mass_density",
    "monte_carlo_job",
    "open_field_job",
    "reference_gy_per_mu",
]

#: PEGS4 media (ompmc's 700ICRU data), index 1.. in the job's ``material`` array.
MEDIA = ("AIR700ICRU", "LUNG700ICRU", "H2O700ICRU", "ICRPBONE700ICRU")
#: Upper electron density (relative to water) of each medium but the last.
MEDIUM_UPPER_DENSITY = (0.05, 0.6, 1.2)
#: Electrons per gram of each medium of :data:`MEDIA` relative to water: ``(Z/A) / (Z/A)_water``
#: with ``Z/A = Σ Z·PZ / Σ A·PZ`` over the element composition of the medium in ompMC 0.4.0's
#: ``pegs4/700icru.pegs4dat`` (water 0.55509, air 0.49918, lung 0.55049, ICRP cortical
#: bone 0.52130; NIST ESTAR lists the same compositions).
ELECTRONS_PER_MASS = (0.89929, 0.99171, 1.0, 0.93913)
#: Half-size (mm) of the water box of the calibration run, laterally and in depth.
CALIBRATION_BOX_MM = 150.0
#: Calibration field: side (mm) at the isocentre, SSD (mm) and depth (mm).
REFERENCE_FIELD_MM, REFERENCE_SSD_MM, REFERENCE_DEPTH_MM = 100.0, 1000.0, 100.0


def reference_gy_per_mu(model) -> float:
    """The beam model's dose (Gy/MU) on the axis of the calibration field at 100 mm depth."""
    from dose_engine import field_dose
    from dose_engine._ccc_commission import water_phantom

    density, grid, beam, depth, axis = water_phantom()
    half = REFERENCE_FIELD_MM / 2.0
    dose = np.asarray(field_dose(density, grid, grid, beam, [-half, half, -half, half], 1.0, model))
    return float(np.interp(REFERENCE_DEPTH_MM, depth, dose[axis]))


def _bounds_cm(grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel boundaries along x, y, z (cm) of an axis-aligned ``grid``."""
    nz, ny, nx = grid.shape
    out = []
    for o, s, n in zip(grid.origin_mm, grid.spacing_mm, (nx, ny, nz), strict=True):
        out.append((o - s / 2.0 + s * np.arange(n + 1)) / 10.0)
    return tuple(out)


def _media(density: np.ndarray) -> np.ndarray:
    """Medium index (1-based into :data:`MEDIA`) of each voxel, by density."""
    return (np.searchsorted(np.asarray(MEDIUM_UPPER_DENSITY), density, side="right") + 1).astype(
        np.int32
    )


def mass_density(electron_density: np.ndarray, material: np.ndarray) -> np.ndarray:
    """Mass density (g/cm³) of each voxel's medium at its electron density.

    Parameters
    ----------
    electron_density : ndarray
        Electron density relative to water (what rtplan's engines and CT table use).
    material : ndarray of int, same shape
        Medium index, 1-based into :data:`MEDIA` (:func:`_media`).

    Returns
    -------
    ndarray of float64
        ``electron_density / ELECTRONS_PER_MASS[medium]`` (water: unchanged).
    """
    per_mass = np.asarray(ELECTRONS_PER_MASS)[np.asarray(material) - 1]
    return np.asarray(electron_density, dtype=np.float64) / per_mass


def _beam_apertures(part, model) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Corners, two sides (cm, LPS) and weights (MU·cm²) of one static beam's rectangles."""
    geom = part.beam
    t = float(resolve_mlc_parameters(part.machine, model).transmission)
    iso = np.asarray(geom.isocenter_mm, dtype=float)
    ex, ey = geom.bld_x_axis, geom.bld_y_axis
    rects, weights = [], []
    for seg in part.segments:
        if seg.total_mu <= 0:
            continue
        open_rects = seg.open_rectangles_mm(closed_gap_mm=part.machine.mlc.min_leaf_gap_mm)
        rects.append(open_rects)
        area = (open_rects[:, 1] - open_rects[:, 0]) * (open_rects[:, 3] - open_rects[:, 2])
        weights.append(seg.total_mu * (1.0 - t) * area / 100.0)
        if t > 0:
            x1, x2 = seg.jaws_mm.get("X", part.machine.mlc.leaf_position_range_mm)
            y1, y2 = seg.jaws_mm.get("Y", (seg.leaf_boundaries_mm[0], seg.leaf_boundaries_mm[-1]))
            rects.append(np.array([[x1, x2, y1, y2]], dtype=float))
            weights.append(np.array([seg.total_mu * t * (x2 - x1) * (y2 - y1) / 100.0]))
    if not rects:
        return (np.zeros((0, 3)),) * 3 + (np.zeros(0),)
    r = np.concatenate(rects)
    w = np.concatenate(weights)
    keep = w > 0
    r, w = r[keep], w[keep]
    corner = iso + r[:, [0]] * ex + r[:, [2]] * ey
    side1 = (r[:, [1]] - r[:, [0]]) * ex
    side2 = (r[:, [3]] - r[:, [2]]) * ey
    return corner / 10.0, side1 / 10.0, side2 / 10.0, w


def open_field_job(mass_density_g_cm3: np.ndarray, grid, beam, side_mm: float) -> dict:
    """The arrays of a Monte Carlo run of one square open field (slab phantoms, checks).

    Parameters
    ----------
    mass_density_g_cm3 : (nz, ny, nx) ndarray
        Mass density of each voxel of ``grid`` (its medium chosen by :func:`_media`).
    grid : dose_engine.Grid
        Axis-aligned grid (LPS, mm).
    beam : dose_engine.Beam
        The field's geometry; the square lies in the isocentre plane.
    side_mm : float
        Side of the square at the isocentre (mm); its weight is its area in cm².

    Returns
    -------
    dict of str to ndarray
        The geometry and source entries of :func:`monte_carlo_job`, without calibration.
    """
    rho = np.asarray(mass_density_g_cm3, dtype=np.float64)
    h = side_mm / 2.0
    corner = np.asarray(beam.isocenter_mm, dtype=float) - h * beam.bld_x_axis - h * beam.bld_y_axis
    x_b, y_b, z_b = _bounds_cm(grid)
    return {
        "x_bounds": x_b,
        "y_bounds": y_b,
        "z_bounds": z_b,
        "density": rho.T,  # (nx, ny, nz), Fortran order
        "material": _media(rho).T,
        "media": np.array(MEDIA),
        "i_beam": np.array([0]),
        "source": np.asarray(beam.source_position_mm, float)[None] / 10.0,
        "corner": corner[None] / 10.0,
        "side1": (side_mm * beam.bld_x_axis)[None] / 10.0,
        "side2": (side_mm * beam.bld_y_axis)[None] / 10.0,
        "weight": np.array([(side_mm / 10.0) ** 2]),
    }


def monte_carlo_job(plan, density_on_dose_grid: np.ndarray, dose_grid, model) -> dict:
    """The arrays of a Monte Carlo run of ``plan`` on the dose grid.

    Parameters
    ----------
    plan : rtplan.DeliverablePlan
        Segments hold the meterset summed over all fractions (MU); arcs are taken per
        gantry angle (:func:`rtplan.dose._aperture.static_parts`).
    density_on_dose_grid : (nz, ny, nx) ndarray
        Electron density relative to water of each dose-grid voxel (the phantom).
    dose_grid : dose_engine.Grid
        Axis-aligned dose grid (LPS, mm).
    model : dose_engine.BeamModel
        Gives Gy/MU at the reference depth (:func:`reference_gy_per_mu`) and the leaf
        transmission.

    Returns
    -------
    dict of str to ndarray
        ``x_bounds``, ``y_bounds``, ``z_bounds`` (cm), ``density`` (Fortran order, x
        fastest), ``material``, ``media``, ``i_beam``, ``source`` (n_beams, 3) cm,
        ``corner``/``side1``/``side2`` (n, 3) cm, ``weight`` (n,) MU·cm², and the
        calibration run's ``cal_*`` entries.

    Raises
    ------
    rtplan.errors.InputError
        The plan has no segment with meterset.
    """
    density = np.asarray(density_on_dose_grid, dtype=np.float64)
    sources, i_beam, corners, sides1, sides2, weights = [], [], [], [], [], []
    for dbeam in plan.beams:
        for part in static_parts(dbeam):
            c, s1, s2, w = _beam_apertures(part, model)
            if not w.size:
                continue
            i_beam.append(np.full(w.size, len(sources)))
            sources.append(np.asarray(part.beam.source_position_mm, dtype=float) / 10.0)
            corners.append(c)
            sides1.append(s1)
            sides2.append(s2)
            weights.append(w)
    if not sources:
        raise InputError("The plan has no segment with meterset: nothing to compute.")
    x_b, y_b, z_b = _bounds_cm(dose_grid)
    material = _media(density)
    return {
        "x_bounds": x_b,
        "y_bounds": y_b,
        "z_bounds": z_b,
        "density": mass_density(density, material).T,  # (nx, ny, nz), Fortran order
        "material": material.T,
        "media": np.array(MEDIA),
        "i_beam": np.concatenate(i_beam),
        "source": np.array(sources),
        "corner": np.concatenate(corners),
        "side1": np.concatenate(sides1),
        "side2": np.concatenate(sides2),
        "weight": np.concatenate(weights),
        "cal_gy_per_mu": np.float64(reference_gy_per_mu(model)),
        "cal_field_cm": np.float64(REFERENCE_FIELD_MM / 10.0),
        "cal_ssd_cm": np.float64(REFERENCE_SSD_MM / 10.0),
        "cal_depth_cm": np.float64(REFERENCE_DEPTH_MM / 10.0),
        "cal_sad_cm": np.float64(model.sad_mm / 10.0),
        "cal_box_cm": np.float64(CALIBRATION_BOX_MM / 10.0),
    }
