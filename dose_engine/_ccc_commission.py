"""Commissioning of the collapsed-cone engine from the pencil-beam model (its measured data).

The pencil-beam model has no spectrum, only fitted depth functions, so an effective
energy-fluence spectrum is derived here: the collapsed-cone central-axis dose of a
10 × 10 cm² field on water at SSD 1000 mm is a linear combination of the doses of the
spectrum's energy bins (for a fixed kernel), so non-negative least squares (with a light
smoothness penalty) fits the bins' weights to the pencil-beam model's depth dose from
:data:`FIT_FROM_MM` (past the build-up, which carries electron contamination the kernels
do not model) to :data:`FIT_TO_MM`; the kernel is re-mixed for the new spectrum and the fit
repeated.  Finally the scale is set so that both engines give the same Gy/MU at 100 mm
depth on that field.  ``python -m dose_engine._ccc_commission`` writes
``data/ccc_commissioning_6MV.json``; the file records the fingerprint of the beam model it
was made from and is refused for any other model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._ccc_kernel import KernelTable, load_kernel_table, mu_water_per_mm
from ._data_files import read_json_data
from ._model import BeamModel, load_beam_model
from .errors import BeamModelError

__all__ = ["CCCCommissioning", "commission_ccc", "load_ccc_commissioning"]

#: Shipped commissioning of each shipped beam model (by model name).
DEFAULT_FILES = {"rtplan generic 6 MV pencil beam": "ccc_commissioning_6MV.json"}
#: Depth range of the spectrum fit, mm.
FIT_FROM_MM, FIT_TO_MM = 20.0, 300.0
#: Depth at which both engines are made to agree, mm.
CALIBRATION_DEPTH_MM = 100.0
#: Weight of the second-difference penalty on the spectrum (relative to the data).
SMOOTHNESS = 0.01
#: Grid of the commissioning phantom, mm.
PHANTOM_SPACING_MM = 3.0


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
    kernel_share : (ne,) ndarray, optional
        See :meth:`released_share`.
    """

    energies_mev: np.ndarray
    weights: np.ndarray
    gy_per_unit: float
    kernel: KernelTable
    beam_model: str
    model_fingerprint: str
    provenance: dict[str, Any] = field(default_factory=dict)
    kernel_share: np.ndarray | None = None

    def released_share(self) -> np.ndarray:
        """Share of the released energy (TERMA at the surface) from each energy bin.

        The kernel is mixed with these shares; ``kernel_share``, when given, overrides them
        (the commissioning fit's one-bin TERMA with the kernel of the whole spectrum).
        """
        if self.kernel_share is not None:
            return self.kernel_share
        r = self.weights * mu_water_per_mm(self.energies_mev)
        return r / r.sum()

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


def water_phantom(spacing_mm: float = PHANTOM_SPACING_MM, half_width_mm: float = 120.0):
    """Water box with its surface at y = 0 and a central-axis dose grid (gantry 0, SSD 1000).

    Returns
    -------
    density, ct_grid, beam, depth_mm, axis_index
        ``axis_index`` picks the central-axis voxels (depths ``depth_mm``) of ``ct_grid``.
    """
    from ._beam import Beam
    from ._grid import Grid

    n_lat = int(round(2 * half_width_mm / spacing_mm)) | 1
    n_dep = int(round(330.0 / spacing_mm))
    h = spacing_mm
    origin = (-(n_lat // 2) * h, h / 2.0, -(n_lat // 2) * h)
    ct_grid = Grid((n_lat, n_dep, n_lat), origin, (h, h, h))
    density = np.ones(ct_grid.shape, np.float32)
    beam = Beam(0.0, isocenter_mm=(0.0, 0.0, 0.0))
    depth = ct_grid.zyx_axes_mm()[1]
    return density, ct_grid, beam, depth, (n_lat // 2, slice(None), n_lat // 2)


def commission_ccc(
    model: BeamModel | None = None, iterations: int = 3, kernel: KernelTable | None = None
) -> CCCCommissioning:
    """Fit the spectrum and scale of the collapsed-cone engine to ``model`` (module docstring)
    with ``kernel`` (default: the shipped kernel table)."""
    from scipy.optimize import nnls

    from ._ccc import collapsed_cone_dose
    from ._field_dose import field_dose

    model = load_beam_model() if model is None else model
    table = load_kernel_table() if kernel is None else kernel
    density, grid, beam, depth, axis = water_phantom()
    square = [-50.0, 50.0, -50.0, 50.0]
    target = np.asarray(field_dose(density, grid, grid, beam, square, 1.0, model))[axis]
    fit = (depth >= FIT_FROM_MM) & (depth <= FIT_TO_MM)
    ne = table.energies_mev.size
    weights = np.ones(ne) / ne
    for _ in range(iterations):
        mixed = CCCCommissioning(table.energies_mev, weights, 1.0, table, model.name, "")
        # one "beam" per energy bin, each with the kernel of the current mixture
        basis = np.stack(
            [
                np.asarray(
                    collapsed_cone_dose(
                        density,
                        grid,
                        grid,
                        [beam],
                        [square],
                        [1.0],
                        model,
                        commissioning=_single_bin(mixed, k),
                    )
                )[axis]
                for k in range(ne)
            ],
            axis=1,
        )
        a = basis[fit] / target[fit][:, None]  # relative residuals
        d2 = np.diff(np.eye(ne), 2, axis=0) * SMOOTHNESS * np.sqrt(fit.sum())
        scale = np.abs(a).max()
        coef, _ = nnls(
            np.vstack([a / scale, d2]), np.concatenate([np.ones(fit.sum()), 0 * d2[:, 0]])
        )
        coef = coef / scale
        weights = coef / coef.sum()
    dose = basis @ coef
    k_cal = int(np.argmin(np.abs(depth - CALIBRATION_DEPTH_MM)))
    gy = float(coef.sum() * target[k_cal] / dose[k_cal])
    rel = dose[fit] * target[k_cal] / dose[k_cal] / target[fit] - 1.0
    return CCCCommissioning(
        table.energies_mev,
        weights,
        gy,
        table,
        model.name,
        model.fingerprint(),
        {
            "method": "dose_engine._ccc_commission.commission_ccc: NNLS spectrum fit to the "
            "pencil-beam model's 10x10 cm2 SSD 1000 mm central-axis dose, "
            f"{FIT_FROM_MM:g}-{FIT_TO_MM:g} mm, {PHANTOM_SPACING_MM:g} mm grid; scaled to equal "
            f"Gy/MU at {CALIBRATION_DEPTH_MM:g} mm",
            "max_abs_relative_residual": round(float(np.abs(rel).max()), 5),
            "kernel": table.source,
        },
    )


def _single_bin(comm: CCCCommissioning, k: int) -> CCCCommissioning:
    """``comm`` with all the fluence in energy bin ``k`` but the kernel mixture of ``comm``."""
    w = np.zeros_like(comm.weights)
    w[k] = 1.0
    return replace(comm, weights=w, kernel_share=comm.released_share())


def main() -> None:
    """Commission the shipped model and write its file."""
    model = load_beam_model()
    comm = commission_ccc(model)
    out = Path(__file__).parent / "data" / DEFAULT_FILES[model.name]
    out.write_text(json.dumps(comm.to_json(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: weights {np.round(comm.weights, 4).tolist()}, {comm.provenance}")


if __name__ == "__main__":
    main()
