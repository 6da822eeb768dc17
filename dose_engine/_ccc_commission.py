"""Commissioning of the collapsed-cone engine on measured water data.

The pencil-beam model has no spectrum, only fitted depth functions, so the collapsed cone
gets its own: a published 6 MV spectrum (:data:`REFERENCE_SPECTRUM_SOURCE`), rebinned onto
the kernel's energies and tilted by ``exp(t (E - 3 MeV))``, with the one parameter ``t``
fitted by least squares to the measured depth doses of every square field (relative to
:data:`CALIBRATION_DEPTH_MM`, from :data:`FIT_FROM_MM`, past the build-up, which carries
electron contamination the kernels do not model, to :data:`FIT_TO_MM`) and to the measured
output factors, with a Gaussian prior that keeps ``t`` near 0 (the published spectrum):
:data:`TILT_PRIOR_PER_MEV`.  A free spectrum (non-negative weights per bin, the method
until session 13) fitted to one field's depth dose drifted to whatever made up for the
kernel's missing physics (46 % of the energy fluence at 4-6 MeV against the published
spectrum's 26 %, or a bimodal spectrum with the multiple-scatter kernels), which the small
fields' and the lung's doses then showed.  The central-axis dose of a field is linear in
the bins' fluence for a fixed kernel mixture, so each field is transported once per fit
(every bin as one "beam"), the kernel re-mixed for the fitted spectrum and the fit
repeated.  Finally the scale is set so that the collapsed cone gives the pencil-beam
model's Gy/MU at 100 mm depth, 10 × 10 cm², SSD 1000 mm.  ``python -m
dose_engine._ccc_commission`` writes ``data/ccc_commissioning_6MV.json``; the file records
the fingerprint of the beam model it was made from and is refused for any other model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._ccc_kernel import KernelTable, load_kernel_table, mu_water_per_mm
from ._data_files import read_json_data
from ._measured import MeasuredData, field_label
from ._model import BeamModel, load_beam_model
from .errors import BeamModelError

__all__ = ["CCCCommissioning", "commission_ccc", "load_ccc_commissioning", "reference_spectrum"]

#: Shipped commissioning of each shipped beam model (by model name).
DEFAULT_FILES = {"rtplan generic 6 MV pencil beam": "ccc_commissioning_6MV.json"}
#: Depth range of the spectrum fit, mm.
FIT_FROM_MM, FIT_TO_MM = 20.0, 300.0
#: Depth at which depth doses are normalised and both engines made to agree, mm.
CALIBRATION_DEPTH_MM = 100.0
#: Tolerances weighting the residuals: depth dose (root mean square over a curve) and
#: output factor, relative.
PDD_TOLERANCE, OUTPUT_TOLERANCE = 0.01, 0.005
#: Standard deviation of the prior on the spectrum's tilt, 1/MeV (0.1: a factor 1.7
#: between the weights of 0.5 and 6 MeV).
TILT_PRIOR_PER_MEV = 0.1
#: Grid of the commissioning phantom, mm, and its half width (the fields' scatter).
PHANTOM_SPACING_MM, FIT_HALF_WIDTH_MM = 3.0, 150.0

#: The reference spectrum: Sheikh-Bagheri D and Rogers D W O 2002, "Monte Carlo
#: calculation of nine megavoltage photon beam spectra using the BEAM code", Med Phys
#: 29:391, doi:10.1118/1.1445413 (Varian Clinac 2100 6 MV, photons within 10 cm of the
#: axis), as distributed with EGSnrc and ompMC (``var_6MV.spectrum``): number fluence per
#: 0.25 MeV bin, by upper bin edge.
REFERENCE_SPECTRUM_SOURCE = "Sheikh-Bagheri and Rogers 2002, Varian Clinac 2100 6 MV"
REFERENCE_SPECTRUM_EDGES_MEV = 0.25 * np.arange(1, 25)
REFERENCE_SPECTRUM_FLUENCE = np.array(
    [9.4485e-06, 9.5786e-06, 8.0766e-06, 6.8650e-06, 5.8836e-06, 5.0212e-06, 4.2913e-06]
    + [3.7020e-06, 3.2493e-06, 2.7831e-06, 2.4103e-06, 2.1283e-06, 1.8404e-06, 1.5743e-06]
    + [1.4005e-06, 1.2077e-06, 1.0442e-06, 8.6051e-07, 7.4537e-07, 5.7857e-07, 4.3973e-07]
    + [2.8741e-07, 1.2629e-07, 7.6060e-09]
)


@dataclass(frozen=True)
class CCCCommissioning:
    """Spectrum and scale tying the collapsed-cone engine to one beam model.

    Attributes
    ----------
    energies_mev, weights : (ne,) ndarray
        Spectrum bins (those of the kernel) and their energy-fluence weights (sum 1).
    gy_per_unit : float
        Dose in Gy of unit TERMA-transport output for 1 MU of unit fluence.
    kernel : KernelTable
    beam_model : str
        Name of the beam model.
    model_fingerprint : str
        SHA-256 of the beam model's parameters (:meth:`BeamModel.fingerprint`).
    provenance : dict
    """

    energies_mev: np.ndarray
    weights: np.ndarray
    gy_per_unit: float
    kernel: KernelTable
    beam_model: str
    model_fingerprint: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def released_share(self) -> np.ndarray:
        """Share of the released energy (TERMA at the surface) from each energy bin: the
        kernel is mixed with these shares."""
        return _released_share(self.kernel, self.weights)

    def part_weights(self) -> np.ndarray:
        """(2, ne) energy-fluence weights of the TERMA of the kernel's primary (electron)
        and scatter (photon) part.

        Each energy's weight times the share of its released energy that its own kernel
        gives the part (the electron share is Klein-Nishina's ``σ_tr / σ``: 0.34 at
        0.5 MeV, 0.64 at 6 MeV), so that the split of the TERMA follows the spectrum at
        every depth: as the beam hardens the electron part's share rises (Ahnesjö 1989's
        separate primary and scatter release; Ahnesjö and Aspradakis 1999, Phys Med Biol
        44:R99).  The two rows add up to :attr:`weights`.
        """
        share = self.kernel.primary_fraction.sum(axis=1)
        return np.stack([self.weights * share, self.weights * (1.0 - share)])

    def to_json(self) -> dict:
        return {
            "beam_model": self.beam_model,
            "model_fingerprint": self.model_fingerprint,
            "energies_mev": self.energies_mev.tolist(),
            "weights": np.round(self.weights, 6).tolist(),
            "gy_per_unit": self.gy_per_unit,
            "provenance": self.provenance,
        }


def load_ccc_commissioning(
    model: BeamModel, path: str | Path | None = None, kernel: KernelTable | None = None
) -> CCCCommissioning:
    """The collapsed-cone commissioning of ``model`` (default: the shipped file for it).

    Raises
    ------
    BeamModelError
        No commissioning exists for the model, or the file was made from other model
        parameters (the message says how to commission it).
    """
    if path is None and model.name not in DEFAULT_FILES:
        raise BeamModelError(
            f"Beam model {model.name!r} ({model.path}) has no collapsed-cone commissioning; "
            "commission it with `python -m dose_engine._ccc_commission` or use the pencil beam."
        )
    data, name = read_json_data(path, DEFAULT_FILES.get(model.name, ""), what="CCC commissioning")
    keys = ("beam_model", "model_fingerprint", "energies_mev", "weights", "gy_per_unit")
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise BeamModelError(f"CCC commissioning {name} lacks {', '.join(missing)}.")
    if data["model_fingerprint"] != model.fingerprint():
        raise BeamModelError(
            f"CCC commissioning {name} was made for other parameters of beam model "
            f"{data['beam_model']!r} than {model.path} holds; recommission with "
            "`python -m dose_engine._ccc_commission`."
        )
    table = load_kernel_table() if kernel is None else kernel
    energies = np.asarray(data["energies_mev"], float)
    if energies.shape != table.energies_mev.shape or not np.allclose(energies, table.energies_mev):
        raise BeamModelError(f"CCC commissioning {name}: its energies differ from the kernel's.")
    weights = np.asarray(data["weights"], float)
    return CCCCommissioning(
        energies,
        weights / weights.sum(),
        float(data["gy_per_unit"]),
        table,
        str(data["beam_model"]),
        str(data["model_fingerprint"]),
        dict(data.get("provenance", {})),
    )


def water_phantom(
    spacing_mm: float = PHANTOM_SPACING_MM,
    half_width_mm: float = 120.0,
    ssd_mm: float = 1000.0,
):
    """Water box with its surface at y = 0 and a central-axis dose grid (gantry 0).

    Returns
    -------
    density, ct_grid, beam, depth_mm, axis_index
        ``axis_index`` picks the central-axis voxels (depths ``depth_mm``) of ``ct_grid``;
        the beam's isocentre lies ``1000 - ssd_mm`` deep.
    """
    from ._beam import Beam
    from ._grid import Grid

    n_lat = int(round(2 * half_width_mm / spacing_mm)) | 1
    n_dep = int(round(330.0 / spacing_mm))
    h = spacing_mm
    origin = (-(n_lat // 2) * h, h / 2.0, -(n_lat // 2) * h)
    ct_grid = Grid((n_lat, n_dep, n_lat), origin, (h, h, h))
    density = np.ones(ct_grid.shape, np.float32)
    beam = Beam(0.0, isocenter_mm=(0.0, 1000.0 - ssd_mm, 0.0))
    depth = ct_grid.zyx_axes_mm()[1]
    return density, ct_grid, beam, depth, (n_lat // 2, slice(None), n_lat // 2)


def reference_spectrum(energies_mev=None) -> np.ndarray:
    """The reference spectrum as energy-fluence weights (sum 1) on ``energies_mev``
    (default: the kernel's energies).

    Each 0.25 MeV bin's energy fluence (its number fluence × its mid energy) is shared
    between the two nearest energies, linearly in energy (so the total and the mean energy
    are kept); bins below the lowest energy go to it.
    """
    e = np.asarray(load_kernel_table().energies_mev if energies_mev is None else energies_mev)
    mid = REFERENCE_SPECTRUM_EDGES_MEV - 0.125
    psi = REFERENCE_SPECTRUM_FLUENCE * mid
    out = np.zeros(e.size)
    k = np.clip(np.searchsorted(e, mid) - 1, 0, e.size - 2)
    t = np.clip((mid - e[k]) / (e[k + 1] - e[k]), 0.0, 1.0)
    np.add.at(out, k, psi * (1.0 - t))
    np.add.at(out, k + 1, psi * t)
    return out / out.sum()


def tilted_spectrum(reference: np.ndarray, energies_mev, tilt_per_mev: float) -> np.ndarray:
    """``reference × exp(tilt (E - 3 MeV))``, normalised: harder for a positive tilt."""
    w = reference * np.exp(tilt_per_mev * (np.asarray(energies_mev, float) - 3.0))
    return w / w.sum()


def _axis_bin_doses(
    model: BeamModel, table: KernelTable, share: np.ndarray, side_mm: float, ssd_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Central-axis collapsed-cone dose of a square field on water per unit energy
    fluence in each energy bin, every bin with the kernel mixed by ``share``.

    Returns
    -------
    depth_mm : (nd,) ndarray
    dose : (nd, ne) ndarray
        In the engine's unit (TERMA-transport output per MU of unit fluence).
    """
    from array_api_compat import array_namespace

    from ._backend import get_backend
    from ._ccc import FINAL_CONES
    from ._ccc_cones import cone_directions, cone_kernels, with_beam_axes
    from ._ccc_terma import beam_terma, terma_points
    from ._ccc_transport import collapsed_cone_transport

    density, grid, beam, depth, axis = water_phantom(half_width_mm=FIT_HALF_WIDTH_MM, ssd_mm=ssd_mm)
    be = get_backend("numpy")
    xp = array_namespace(be.xp.zeros(1))
    ne = table.energies_mev.size
    primary = table.primary_fraction.sum(axis=1)
    # rows: the primary part of each unit bin, then the scatter part of each
    weights = np.concatenate([np.diag(primary), np.diag(1.0 - primary)])
    points = terma_points(
        density, grid, grid, beam, table.energies_mev, weights, xp=xp, map_fn=be.map
    )
    h = side_mm / 2.0
    terma = beam_terma(points, grid, np.array([[-h, h, -h, h]]), np.ones(1), model, xp=xp)
    terma = xp.reshape(terma, (2, ne, *grid.shape))  # beam_terma's two parts are our 2 ne
    directions = with_beam_axes(cone_directions(FINAL_CONES), [beam.beam_axis])
    kernels = cone_kernels(table, share, [beam.beam_axis] * ne, directions)
    dose = collapsed_cone_transport(terma, density, grid.spacing_mm, directions, kernels, be)
    return depth, np.asarray(dose)[(slice(None), *axis)].T


def _released_share(table: KernelTable, weights: np.ndarray) -> np.ndarray:
    r = weights * mu_water_per_mm(table.energies_mev)
    return r / r.sum()


def commission_ccc(
    model: BeamModel | None = None,
    measured: MeasuredData | None = None,
    iterations: int = 2,
    kernel: KernelTable | None = None,
) -> CCCCommissioning:
    """Fit the spectrum of the collapsed-cone engine to ``measured`` water data and its
    scale to ``model`` (module docstring), with ``kernel`` (default: the shipped table).

    Parameters
    ----------
    model : BeamModel, optional
        Its fluence and Gy/MU (default: the shipped 6 MV model).
    measured : MeasuredData, optional
        Its PDDs (every field) and output factors (default: the pymedphys 6 MV data the
        shipped model was fitted to).
    iterations : int
        Fits, each with the kernel mixed for the previous fit's spectrum.
    """
    from scipy.optimize import least_squares

    from ._field_dose import field_dose
    from ._measured import pymedphys_6mv_data

    model = load_beam_model() if model is None else model
    measured = pymedphys_6mv_data() if measured is None else measured
    table = load_kernel_table() if kernel is None else kernel
    energies = table.energies_mev
    reference = reference_spectrum(energies)
    pdds = [s for s in measured.pdds() if s.field[0] == s.field[1]]
    if not pdds:
        raise BeamModelError(f"{measured.source}: no PDD of a square field to commission on.")
    ref_field = measured.reference_field_mm
    tilt = 0.0
    for _ in range(iterations):
        share = _released_share(table, tilted_spectrum(reference, energies, tilt))
        bins: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = {}

        def bin_doses(side_mm, ssd_mm, bins=bins, share=share):
            key = (float(side_mm), float(ssd_mm))
            if key not in bins:
                bins[key] = _axis_bin_doses(model, table, share, *key)
            return bins[key]

        cases = []
        for scan in pdds:
            depth, basis = bin_doses(scan.field[0], scan.ssd_mm)
            sel = (depth >= FIT_FROM_MM) & (depth <= FIT_TO_MM)
            meas = np.interp(depth, scan.position_mm, scan.value)
            k = int(np.argmin(np.abs(depth - CALIBRATION_DEPTH_MM)))
            cases.append((scan, basis, sel, meas / meas[k], k))
        outputs = {}
        for field_mm, of in measured.output_factors.items():
            if field_mm[0] != field_mm[1] or field_mm == ref_field:
                continue
            pair = [bin_doses(f[0], measured.of_ssd_mm) for f in (field_mm, ref_field)]
            k = int(np.argmin(np.abs(pair[0][0] - measured.of_depth_mm)))
            outputs[field_mm] = (pair[0][1][k], pair[1][1][k], float(of))

        def residuals(x, cases=cases, outputs=outputs):
            w = tilted_spectrum(reference, energies, x[0])
            res = []
            for _, basis, sel, rel, k in cases:
                d = basis @ w
                res.append((d[sel] / d[k] / rel[sel] - 1.0) / PDD_TOLERANCE / np.sqrt(sel.sum()))
            for a, b, of in outputs.values():
                res.append(np.atleast_1d((a @ w) / (b @ w) / of - 1.0) / OUTPUT_TOLERANCE)
            res.append(np.atleast_1d(x[0] / TILT_PRIOR_PER_MEV))
            return np.concatenate(res)

        tilt = float(least_squares(residuals, [tilt]).x[0])
    weights = tilted_spectrum(reference, energies, tilt)
    pdd_dev = {}
    for scan, basis, sel, rel, k in cases:
        d = basis @ weights
        pdd_dev[field_label(scan.field)] = round(
            float(np.abs(d[sel] / d[k] / rel[sel] - 1.0).max()), 5
        )
    of_dev = {
        field_label(f): round(float((a @ weights) / (b @ weights) / of - 1.0), 5)
        for f, (a, b, of) in outputs.items()
    }
    # the scale: equal Gy/MU with the pencil-beam model at 100 mm, 10 x 10 cm2, SSD 1000 mm
    density, grid, beam, depth, axis = water_phantom(half_width_mm=FIT_HALF_WIDTH_MM)
    square = [-50.0, 50.0, -50.0, 50.0]
    target = np.asarray(field_dose(density, grid, grid, beam, square, 1.0, model))[axis]
    depth, basis = _axis_bin_doses(model, table, _released_share(table, weights), 100.0, 1000.0)
    k = int(np.argmin(np.abs(depth - CALIBRATION_DEPTH_MM)))
    gy = float(target[k] / (basis[k] @ weights))
    return CCCCommissioning(
        energies,
        weights,
        gy,
        table,
        model.name,
        model.fingerprint(),
        {
            "method": "dose_engine._ccc_commission.commission_ccc: the reference spectrum "
            f"({REFERENCE_SPECTRUM_SOURCE}) tilted by exp(t (E - 3 MeV)), t fitted to the "
            f"measured PDDs ({', '.join(sorted(pdd_dev))}, {FIT_FROM_MM:g}-{FIT_TO_MM:g} mm, "
            f"relative to {CALIBRATION_DEPTH_MM:g} mm) and output factors of "
            f"{'/'.join(Path(measured.source).parts[-4:])}"
            f" with a prior t ~ 0 ± {TILT_PRIOR_PER_MEV:g}/MeV, {PHANTOM_SPACING_MM:g} mm grid;"
            f" scaled to the pencil-beam model's Gy/MU at {CALIBRATION_DEPTH_MM:g} mm "
            "(10x10 cm2, SSD 1000 mm)",
            "tilt_per_mev": round(tilt, 5),
            "max_abs_relative_pdd_residual": pdd_dev,
            "output_factor_relative_residual": of_dev,
            "kernel": table.source,
        },
    )


def main() -> None:
    """Commission the shipped model and write its file."""
    model = load_beam_model()
    comm = commission_ccc(model)
    out = Path(__file__).parent / "data" / DEFAULT_FILES[model.name]
    out.write_text(json.dumps(comm.to_json(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: weights {np.round(comm.weights, 4).tolist()}, {comm.provenance}")


if __name__ == "__main__":
    main()
