"""Command-level workflows: load + plan + write (``rtplan plan``) and the demo."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dose_engine import BeamModel, HUTable

from .._internal.arguments import PATH, check_arguments, either
from .._internal.atomic import atomic_directory, check_cache_dir, check_output_path
from ..dose._plan_dose import resolve_beam_model, resolve_density_table
from ..errors import InputError
from ..io import read_patient
from ..phantoms import write_phantom
from ..protocols import Protocol, load_protocol, parse_mapping_overrides
from ._dask import dask_client
from ._plan import plan_patient

__all__ = ["plan_and_write", "run_demo"]

logger = logging.getLogger("rtplan.planning")

#: TG-119 protocol of each phantom (``rtplan demo --phantom``).
PHANTOM_PROTOCOLS = {
    "cshape": "tg119_cshape",
    "multitarget": "tg119_multitarget",
    "prostate": "tg119_prostate",
    "head_neck": "tg119_head_neck",
}


def _protocol(protocol, *, solver=None, dose_grid_mm=None, n_beams=None, max_iterations=None):
    p = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    extra = {} if max_iterations is None else {"max_iterations": int(max_iterations)}
    return p.with_overrides(solver=solver, dose_grid_mm=dose_grid_mm, n_beams=n_beams, **extra)


def _outcome(result, out: Path) -> dict[str, Any]:
    return {
        "out": str(out),
        "all_goals_met": result.all_goals_met,
        "needs_attention": result.needs_attention,
        "warnings": [w.message for w in result.warnings],
        "n_failed": int(result.goal_table.n_failed),
        "summary": result.summary(),
        "timings": dict(result.timings),
        "goals": result.goal_table.as_records(),
        "reported": result.goal_table.reported_records(),
    }


@check_arguments(
    ct_dir=PATH,
    rtstruct=PATH,
    protocol=either("rtplan.protocols._protocol:Protocol", PATH),
    out_dir=PATH,
)
def plan_and_write(
    ct_dir: str | os.PathLike,
    rtstruct: str | os.PathLike,
    protocol,
    out_dir: str | os.PathLike,
    *,
    structure_map: Mapping[str, str] | Iterable[str] | None = None,
    backend: str = "numpy",
    solver: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dose_grid_mm: float | None = None,
    n_beams: int | None = None,
    max_iterations: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    scheduler: str | None = None,
    beam_model: BeamModel | str | os.PathLike | None = None,
    density_table: HUTable | str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Load a patient, plan it with a protocol and write the four output files.

    Parameters
    ----------
    ct_dir, rtstruct : path-like
        CT series folder and RT Structure Set file.
    protocol : Protocol, str or path-like
        Protocol, shipped protocol name or TOML file.
    out_dir : path-like
        Output folder; must not exist unless ``overwrite``.
    structure_map : mapping or iterable of "A=B" strings, optional
        Protocol → patient structure overrides (``--map``).
    backend, solver, cache_dir, progress
        As for :func:`rtplan.planning.plan_patient`.
    dose_grid_mm, n_beams, max_iterations : optional
        Override the protocol's dose grid, beam count and solver iterations.
    overwrite : bool
    scheduler : str, optional
        Dask scheduler address: run the whole job on the cluster.
    beam_model : dose_engine.BeamModel or path-like, optional
        Beam model or its JSON file (``--beam-model``), read before anything else is
        done; ``None``: the shipped 6 MV model.  See :func:`rtplan.planning.plan_patient`.
    density_table : dose_engine.HUTable or path-like, optional
        The scanner's CT-to-density table (``--density-table``), read before anything else
        is done; default the protocol's, else the shipped one (as in ``plan_patient``).

    Returns
    -------
    dict
        ``out``, ``all_goals_met``, ``needs_attention`` (a goal failed or the safety
        layer warned), ``warnings`` (messages), ``n_failed``, ``summary`` (text, with the
        warnings), ``timings``, ``goals``.

    Raises
    ------
    rtplan.errors.InputError
        Bad input of any kind (missing structure, malformed protocol, existing output, a
        beam model of another SAD than the machine's...); nothing is written.
    rtplan.errors.OutputError
        ``out_dir`` or ``cache_dir`` cannot be written (under a regular file, read-only,
        a cache "folder" that is a file); checked before any work.
    dose_engine.BeamModelError
        ``beam_model`` cannot be read as a beam model (the message names the file);
        nothing is written.
    optimizers.InfeasibleError
        The protocol's hard constraints contradict each other; nothing is written.
    """
    if structure_map is not None and not isinstance(structure_map, Mapping):
        structure_map = parse_mapping_overrides(structure_map)
    out = check_output_path(out_dir, overwrite=overwrite, what="--out")
    check_cache_dir(cache_dir)
    model = resolve_beam_model(beam_model)
    prot = _protocol(
        protocol,
        solver=solver,
        dose_grid_mm=dose_grid_mm,
        n_beams=n_beams,
        max_iterations=max_iterations,
    )
    table = resolve_density_table(prot.density_table if density_table is None else density_table)
    if scheduler is not None:
        with dask_client(scheduler) as client:
            fut = client.submit(
                plan_and_write,
                ct_dir,
                rtstruct,
                prot,
                out_dir,
                structure_map=structure_map,
                backend=backend,
                cache_dir=cache_dir,
                overwrite=overwrite,
                progress=False,
                beam_model=model,
                density_table=table,
                pure=False,
            )
            return fut.result()

    patient = read_patient(ct_dir, rtstruct)
    result = plan_patient(
        patient,
        prot,
        backend=backend,
        cache_dir=cache_dir,
        progress=progress,
        structure_map=structure_map,
        beam_model=model,
        density_table=table,
    )
    result.write(out, overwrite=overwrite)
    return _outcome(result, out)


@check_arguments(out_dir=PATH)
def run_demo(
    out_dir: str | os.PathLike,
    *,
    phantom: str = "cshape",
    protocol=None,
    backend: str = "numpy",
    solver: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dose_grid_mm: float | None = None,
    n_beams: int | None = None,
    max_iterations: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    beam_model: BeamModel | str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The embedded demo: write a TG-119 phantom as DICOM, load it back, plan it.

    ``out_dir/input`` receives the phantom (``CT/`` + ``RS.dcm``) and ``out_dir/plan``
    the plan (RTPLAN.dcm, RTDOSE.dcm, plan.json, report.html).  The whole ``out_dir`` is
    built atomically.  The protocol's own settings are used (for the C-shape: 9 beams, 3 mm
    grid) unless ``dose_grid_mm``, ``n_beams`` or ``max_iterations`` override them, with
    the shipped 6 MV beam model unless ``beam_model`` (a BeamModel or its JSON file) is
    given.

    Returns
    -------
    dict
        As :func:`plan_and_write`, plus ``input`` (the phantom folder).
    """
    if phantom not in PHANTOM_PROTOCOLS:
        raise InputError(
            f"Unknown demo phantom {phantom!r}; choose one of {sorted(PHANTOM_PROTOCOLS)}."
        )
    out = check_output_path(out_dir, overwrite=overwrite, what="OUT_DIR")
    check_cache_dir(cache_dir)
    model = resolve_beam_model(beam_model)
    prot = _protocol(
        protocol or PHANTOM_PROTOCOLS[phantom],
        solver=solver,
        dose_grid_mm=dose_grid_mm,
        n_beams=n_beams,
        max_iterations=max_iterations,
    )
    with atomic_directory(out, overwrite=overwrite) as tmp:
        written = write_phantom(phantom, tmp / "input")
        patient = read_patient(written.ct_dir, written.rtstruct_path)
        result = plan_patient(
            patient,
            prot,
            backend=backend,
            cache_dir=cache_dir,
            progress=progress,
            beam_model=model,
        )
        result.write(tmp / "plan")
    outcome = _outcome(result, out / "plan")
    outcome["input"] = str(out / "input")
    return outcome
