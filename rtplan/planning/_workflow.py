"""Command-level workflows: load + plan + write (``rtplan plan``) and the demo."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from dose_engine import BeamModel

from .._internal.arguments import PATH, check_arguments, either
from .._internal.atomic import atomic_directory, check_cache_dir, check_output_path
from ..errors import InputError
from ..io import read_patient
from ..phantoms import write_phantom
from ..protocols import parse_mapping_overrides
from ._dask import dask_client
from ._options import PlanOptions, options_from_keywords
from ._plan import plan_patient
from ._written import WrittenPlan

__all__ = ["plan_and_write", "run_demo"]

logger = logging.getLogger("rtplan.planning")

#: TG-119 protocol of each phantom (``rtplan demo --phantom``).
PHANTOM_PROTOCOLS = {
    "cshape": "tg119_cshape",
    "multitarget": "tg119_multitarget",
    "prostate": "tg119_prostate",
    "head_neck": "tg119_head_neck",
    # lungs, bone and a tumour in lung: the final dose is the collapsed cone ("auto")
    "thorax": "lung_60gy_30fx",
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
    options: PlanOptions | None = None,
    backend: str | None = None,
    solver: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dose_grid_mm: float | None = None,
    n_beams: int | None = None,
    max_iterations: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    scheduler: str | None = None,
    beam_model: BeamModel | str | os.PathLike | None = None,
) -> WrittenPlan:
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
    options : PlanOptions, optional
        Back-end, solver, cache, dose grid, beams, iterations and beam model
        (:class:`rtplan.planning.PlanOptions`); a beam-model file is read before anything
        else is done.
    backend, solver, cache_dir, dose_grid_mm, n_beams, max_iterations, beam_model : optional
        Deprecated (one release, ``DeprecationWarning``): the fields of ``options``.
    overwrite : bool
    progress : bool
        Show a progress bar per stage.
    scheduler : str, optional
        Dask scheduler address: run the whole job on the cluster.

    Returns
    -------
    WrittenPlan
        The folder and its files, the optimisation's ``status``, the goals met,
        ``needs_attention`` (a goal failed or the safety layer warned), the warnings, the
        summary text, and (``result``) the :class:`PlanResult` itself, or ``None`` when
        the plan was made on a ``scheduler``.

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
    opts = options_from_keywords(
        "plan_and_write",
        options,
        stacklevel=4,
        backend=backend,
        solver=solver,
        cache_dir=cache_dir,
        dose_grid_mm=dose_grid_mm,
        n_beams=n_beams,
        max_iterations=max_iterations,
        beam_model=beam_model,
    )
    check_cache_dir(opts.cache_dir)
    opts = opts.with_files_read()
    prot = opts.apply_to(protocol)
    if scheduler is not None:
        with dask_client(scheduler) as client:
            fut = client.submit(
                _plan_and_write_on_worker,
                ct_dir,
                rtstruct,
                prot,
                out_dir,
                structure_map=structure_map,
                options=opts,
                overwrite=overwrite,
                pure=False,
            )
            return fut.result()

    patient = read_patient(ct_dir, rtstruct)
    result = plan_patient(
        patient,
        prot,
        options=opts,
        progress=progress,
        structure_map=structure_map,
    )
    result.write(out, overwrite=overwrite)
    return WrittenPlan.of(result, out)


def _plan_and_write_on_worker(*args: Any, **kwargs: Any) -> WrittenPlan:
    """:func:`plan_and_write` on a Dask worker: no progress bar, and the record without
    its :class:`PlanResult` (the patient's CT, the dose, the optimiser's results)."""
    return plan_and_write(*args, progress=False, **kwargs).without_result()


@check_arguments(out_dir=PATH)
def run_demo(
    out_dir: str | os.PathLike,
    *,
    phantom: str = "cshape",
    protocol=None,
    options: PlanOptions | None = None,
    backend: str | None = None,
    solver: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dose_grid_mm: float | None = None,
    n_beams: int | None = None,
    max_iterations: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    beam_model: BeamModel | str | os.PathLike | None = None,
) -> WrittenPlan:
    """The embedded demo: write a TG-119 phantom (or the thorax) as DICOM, load it back, plan it.

    ``out_dir/input`` receives the phantom (``CT/`` + ``RS.dcm``) and ``out_dir/plan``
    the plan (RTPLAN.dcm, RTDOSE.dcm, plan.json, report.html).  The whole ``out_dir`` is
    built atomically.  The protocol's own settings are used (for the C-shape: 9 beams, 3 mm
    grid) unless ``options`` (:class:`rtplan.planning.PlanOptions`) override them, with
    the shipped 6 MV beam model unless ``options.beam_model`` (a BeamModel or its JSON
    file) is given.  ``backend``, ``solver``, ``cache_dir``, ``dose_grid_mm``,
    ``n_beams``, ``max_iterations`` and ``beam_model`` are deprecated keywords (one
    release): the fields of ``options``.

    Returns
    -------
    WrittenPlan
        As :func:`plan_and_write`, with ``input_dir`` (the phantom folder).
    """
    if phantom not in PHANTOM_PROTOCOLS:
        raise InputError(
            f"Unknown demo phantom {phantom!r}; choose one of {sorted(PHANTOM_PROTOCOLS)}."
        )
    out = check_output_path(out_dir, overwrite=overwrite, what="OUT_DIR")
    opts = options_from_keywords(
        "run_demo",
        options,
        stacklevel=4,
        backend=backend,
        solver=solver,
        cache_dir=cache_dir,
        dose_grid_mm=dose_grid_mm,
        n_beams=n_beams,
        max_iterations=max_iterations,
        beam_model=beam_model,
    )
    check_cache_dir(opts.cache_dir)
    opts = opts.with_files_read()
    prot = opts.apply_to(protocol or PHANTOM_PROTOCOLS[phantom])
    with atomic_directory(out, overwrite=overwrite) as tmp:
        written = write_phantom(phantom, tmp / "input")
        patient = read_patient(written.ct_dir, written.rtstruct_path)
        result = plan_patient(patient, prot, options=opts, progress=progress)
        result.write(tmp / "plan")
    return WrittenPlan.of(result, out / "plan", input_dir=out / "input")
