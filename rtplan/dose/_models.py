"""A machine's beam models: one per nominal energy and fluence mode, chosen for each beam.

A beam's energy and fluence mode are its machine's (:attr:`rtplan.Machine.nominal_energy_mv`,
:attr:`rtplan.Machine.fluence_mode`): the protocol machine's for a plan rtplan makes, the
RT-PLAN's (300A,0114) *NominalBeamEnergy* and (3002,0050) *PrimaryFluenceModeSequence* for
a plan read from DICOM.  :class:`BeamModels` holds the models that can compute them;
a beam that none is for is refused, never computed with another energy's model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from dose_engine import BeamModel, load_beam_model

from ..errors import InputError

__all__ = [
    "DEFAULT_ENERGY_MV",
    "BeamModels",
    "beam_model_key",
    "fitted_to_synthetic_data",
    "resolve_beam_models",
    "shipped_beam_models",
]

#: Energy assumed for a beam model file that does not state its ``energy_mv``, MV (a
#: clinic's model fitted from W2CAD files, which carry no energy).
DEFAULT_ENERGY_MV = 6.0


def beam_model_key(model: BeamModel) -> tuple[float, str]:
    """``(nominal energy MV, fluence mode)`` a model is for (:data:`DEFAULT_ENERGY_MV` when
    its file states no energy)."""
    energy = model.energy_mv
    return (DEFAULT_ENERGY_MV if energy is None else energy, model.fluence_mode)


def fitted_to_synthetic_data(model: BeamModel) -> bool:
    """Whether ``model`` was fitted to a synthetic clinic rather than to measurements of a
    linac: the shipped 10X and 6FFF models (``dose_engine._energy_models`` writes their
    provenance ``data`` as ``"synthetic ... clinic ..."``; docs/commissioning.md)."""
    return str(model.provenance().get("data", "")).startswith("synthetic")


def key_label(key: tuple[float, str]) -> str:
    """``"6X"``, ``"10X"``, ``"6FFF"``: the usual name of an energy and fluence mode."""
    energy, mode = key
    return f"{energy:g}{'X' if mode == 'STANDARD' else mode}"


class BeamModels:
    """The beam models a dose can be computed with, at most one per (energy, fluence mode).

    Parameters
    ----------
    models : iterable of dose_engine.BeamModel
    source : str
        Where they come from, for messages (``"shipped"``, ``"--beam-model"``).

    Raises
    ------
    rtplan.errors.InputError
        No model, or two models for one energy and fluence mode (both files named).
    """

    def __init__(self, models: Iterable[BeamModel], source: str = "") -> None:
        by_key: dict[tuple[float, str], BeamModel] = {}
        for m in models:
            if not isinstance(m, BeamModel):
                raise TypeError(f"BeamModels holds dose_engine.BeamModel; got {type(m).__name__}.")
            key = beam_model_key(m)
            if key in by_key:
                raise InputError(
                    f"Beam models {by_key[key].path} and {m.path} are both for {key_label(key)}; "
                    "give one model per energy and fluence mode."
                )
            by_key[key] = m
        if not by_key:
            raise InputError("No beam model given; a dose needs at least one.")
        self._by_key = dict(sorted(by_key.items()))
        self.source = source

    def __iter__(self) -> Iterator[BeamModel]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def __repr__(self) -> str:
        return f"BeamModels({', '.join(key_label(k) for k in self._by_key)})"

    @property
    def keys(self) -> tuple[tuple[float, str], ...]:
        """``(energy MV, fluence mode)`` of every model, sorted."""
        return tuple(self._by_key)

    def describe(self) -> str:
        """One phrase per model: ``6X 'name' (file)``, for messages."""
        return ", ".join(
            f"{key_label(k)} {m.name!r} ({Path(m.path).name})" for k, m in self._by_key.items()
        )

    def select(self, energy_mv: float, fluence_mode: str, *, what: str) -> BeamModel:
        """The model for a beam of ``energy_mv`` and ``fluence_mode``.

        Parameters
        ----------
        energy_mv : float, MV
        fluence_mode : {"STANDARD", "FFF"}
        what : str
            The beam, for the message (``"beam 2 ('Arc 1') of RP.dcm"``).

        Raises
        ------
        rtplan.errors.InputError
            No model is for that energy and mode; the message names the beam and lists
            the models available.
        """
        for (energy, mode), model in self._by_key.items():
            if mode == fluence_mode and abs(energy - float(energy_mv)) <= 1e-6:
                return model
        raise InputError(
            f"{what}: no beam model is for {key_label((float(energy_mv), fluence_mode))} "
            f"(nominal energy {float(energy_mv):g} MV, fluence mode {fluence_mode}); beam "
            f"models available: {self.describe()}. Commission one (python -m dose_engine.fit) "
            "and pass it with --beam-model."
        )

    def for_beam(self, dbeam: Any) -> BeamModel:
        """The model for a :class:`rtplan.DeliverableBeam` (its machine's energy and mode)."""
        machine = dbeam.machine
        return self.select(
            machine.nominal_energy_mv,
            machine.fluence_mode,
            what=f"beam {dbeam.number} ({dbeam.name!r})",
        )


def shipped_beam_models() -> BeamModels:
    """Every shipped beam model (``dose_engine/data/beam_model_*.json``): 6X, 10X, 6FFF."""
    folder = resources.files("dose_engine").joinpath("data")
    files = sorted(
        f for f in folder.iterdir() if f.name.startswith("beam_model_") and f.name.endswith(".json")
    )
    return BeamModels([load_beam_model(str(f)) for f in files], source="shipped")


def resolve_beam_models(
    beam_model: BeamModels | BeamModel | str | os.PathLike | Iterable | None,
) -> BeamModels:
    """The models a dose is computed with.

    Parameters
    ----------
    beam_model : BeamModels, dose_engine.BeamModel, path-like, a list of these, or None
        ``None``: the shipped models (:func:`shipped_beam_models`), each beam computed with
        the one for its energy and fluence mode.  A model or model file (or several):
        only those, so a beam of another energy or mode is refused.

    Raises
    ------
    dose_engine.BeamModelError
        A file that cannot be read as a beam model (named).
    rtplan.errors.InputError
        Two models for one energy and fluence mode.
    """
    if beam_model is None:
        return shipped_beam_models()
    if isinstance(beam_model, BeamModels):
        return beam_model
    items = (
        [beam_model] if isinstance(beam_model, BeamModel | str | os.PathLike) else list(beam_model)
    )
    models = [m if isinstance(m, BeamModel) else load_beam_model(os.fspath(m)) for m in items]
    return BeamModels(models, source="given")
