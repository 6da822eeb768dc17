"""Many patients on a Dask distributed cluster: ``rtplan batch``.

Each patient is one Dask task running :func:`rtplan.planning.plan_and_write`; the task
returns a small record (goals met, timings) rather than arrays, so results travel cheaply.
Without a scheduler address a :class:`distributed.LocalCluster` is started (the embedded
default).  Dask is an optional extra: ``pip install "rtplan[dask]"``.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dose_engine import BeamModel

from .._internal.arguments import PATH, check_arguments, require_instance, sequence_of
from .._internal.atomic import check_cache_dir, check_output_path
from .._internal.exit_status import EXIT_GOAL_FAILED, EXIT_OK, exit_status_for, one_line_message
from .._internal.messages import quote
from .._internal.toml_files import parse_toml
from ..dose._plan_dose import resolve_beam_model
from ..errors import InputError
from ._dask import dask_client
from ._options import PlanOptions, options_from_keywords
from ._workflow import plan_and_write

__all__ = ["BatchEntry", "BatchOutcome", "plan_batch", "read_manifest"]

logger = logging.getLogger("rtplan.planning")

_FIELDS = ("ct_dir", "rtstruct", "protocol", "out")
#: Optional keys of a manifest entry; any other key is refused (a mistyped ``beam_model``
#: must not fall back to the default silently).
_OPTIONAL_FIELDS = ("map", "beam_model")


@check_arguments(ct_dir=PATH, rtstruct=PATH, protocol=PATH, out=PATH)
@dataclass(frozen=True)
class BatchEntry:
    """One patient of a batch manifest (paths resolved against the manifest's folder).

    ``beam_model`` is the patient's own beam-model JSON file, or ``None`` for the batch's
    (``plan_batch(beam_model=...)``).
    """

    ct_dir: str
    rtstruct: str
    protocol: str
    out: str
    structure_map: tuple[str, ...] = ()
    beam_model: str | None = None


@dataclass(frozen=True)
class BatchOutcome:
    """What happened to one patient of a batch.

    Attributes
    ----------
    out : str
        Output folder.
    all_goals_met : bool
    n_failed : int
        Goals failed (0 if the patient errored).
    goals : list of dict
        Goal records (as in plan.json).
    time_s : float
        Wall time of the task, s.
    error : str or None
        One-line error when the patient could not be planned (nothing was written).
    status : int
        The patient's exit status as ``rtplan plan`` would give it (0 every goal met and
        no safety warning, 1 written but a goal failed or the safety layer warned, 2 bad
        input, 3 internal error, 4 I/O error, 5 a limit; :mod:`rtplan._internal.exit_status`).
    warnings : tuple of str
        The safety layer's warnings of the written plan (as in its plan.json).
    """

    out: str
    all_goals_met: bool
    n_failed: int
    goals: list
    time_s: float
    error: str | None = None
    status: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def needs_attention(self) -> bool:
        """A plan was written, but a goal failed or the safety layer warned."""
        return self.error is None and (not self.all_goals_met or bool(self.warnings))


@check_arguments(path=PATH)
def read_manifest(path: str | os.PathLike) -> list[BatchEntry]:
    """Read a TOML (``[[patient]]`` tables) or CSV (header row) batch manifest.

    Each patient needs ``ct_dir``, ``rtstruct``, ``protocol`` (shipped name or TOML file)
    and ``out``; an optional ``map`` lists ``PROTOCOL=PATIENT`` overrides (a TOML array, or
    ``;``-separated in CSV), and an optional ``beam_model`` names a beam-model JSON file
    for that patient (instead of the batch's ``--beam-model``).  Relative paths are
    relative to the manifest's folder.

    Raises
    ------
    rtplan.errors.InputError
        Unreadable manifest, a missing column/key (named with the row), duplicate outputs,
        a ``beam_model`` file that cannot be read as a beam model (named with the row).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Batch manifest '{path}' does not exist.")
    base = path.parent
    rows: list[dict[str, Any]]
    if path.suffix.lower() == ".toml":
        data = parse_toml(
            path.read_bytes(), source=f"'{path}'", what="Batch manifest", error=InputError
        )
        rows = data.get("patient")
        if not isinstance(rows, list) or not rows:
            raise InputError(
                f"Batch manifest '{path}': expected one or more [[patient]] tables with "
                f"{', '.join(_FIELDS)}."
            )
    else:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [f for f in _FIELDS if f not in (reader.fieldnames or [])]
            if missing:
                raise InputError(
                    f"Batch manifest '{path}': the CSV header lacks column(s) {missing}; "
                    f"expected {', '.join(_FIELDS)} (and optionally map)."
                )
            rows = list(reader)
        for r in rows:
            if r.get("map"):
                r["map"] = [m for m in r["map"].split(";") if m.strip()]
    entries = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"Batch manifest '{path}': patient {i} is not a table.")
        unknown = [str(k) for k in row if k not in _FIELDS + _OPTIONAL_FIELDS]
        if unknown:
            raise InputError(
                f"Batch manifest '{path}': patient {i} has unknown key(s) "
                f"{', '.join(quote(k, 60) for k in unknown)}; allowed: "
                f"{', '.join(_FIELDS + _OPTIONAL_FIELDS)}."
            )
        missing = [f for f in _FIELDS if not row.get(f)]
        if missing:
            raise InputError(f"Batch manifest '{path}': patient {i} lacks {missing}.")
        maps = row.get("map") or []
        if isinstance(maps, str):
            maps = [maps]
        proto = str(row["protocol"])
        if proto.lower().endswith(".toml") and not Path(proto).is_absolute():
            proto = str(base / proto)
        entries.append(
            BatchEntry(
                ct_dir=str(base / row["ct_dir"]),
                rtstruct=str(base / row["rtstruct"]),
                protocol=proto,
                out=str(base / row["out"]),
                structure_map=tuple(maps),
                beam_model=_entry_beam_model(path, i, row.get("beam_model")),
            )
        )
    _refuse_shared_outputs(f"Batch manifest '{path}'", entries)
    return entries


def check_batch_outputs(entries: Sequence[BatchEntry], *, overwrite: bool) -> None:
    """Check every patient's ``out`` before anything is computed or a cluster started.

    Outputs are compared resolved (no two patients share a folder, none lies inside
    another) and each is checked as ``rtplan plan --out`` is: an existing folder without
    ``overwrite``, a path under a regular file, a place where no file can be created.
    One bad output refuses the whole batch, naming the patient: nothing is planned.

    Raises
    ------
    rtplan.errors.InputError
        Shared outputs; :class:`rtplan.errors.OutputExistsError` for an existing output.
    rtplan.errors.OutputError
        An output that cannot be written.
    """
    _refuse_shared_outputs("Batch", entries)
    for i, e in enumerate(entries):
        check_output_path(e.out, overwrite=overwrite, what=f"Batch patient {i}: out")


def _refuse_shared_outputs(source: str, entries: Sequence[BatchEntry]) -> None:
    """Refuse two patients writing to one folder, or one inside the other.

    Paths are compared resolved (``plans/x`` and ``plans/../plans/x`` are one folder,
    symbolic links followed), whatever ``--force`` says: the second plan would replace
    the first, and both would be reported written.  ``source`` names the batch in the
    message (``"Batch manifest 'm.toml'"``).
    """
    resolved = [Path(e.out).resolve() for e in entries]
    for j, b in enumerate(resolved):
        for i, a in enumerate(resolved[:j]):
            if a == b:
                how = f"the same folder: '{entries[i].out}' and '{entries[j].out}' are '{a}'"
            elif a in b.parents or b in a.parents:
                outer, inner = (a, b) if a in b.parents else (b, a)
                how = f"nested folders: '{inner}' lies inside '{outer}'"
            else:
                continue
            raise InputError(
                f"{source}: patients {i} and {j} write to {how}; give "
                "every patient its own output folder (outputs used more than once)."
            )


def _entry_beam_model(manifest: Path, i: int, value: Any) -> str | None:
    """A patient's ``beam_model`` file, resolved against the manifest's folder and read
    once here so that a bad file is a bad manifest (nothing planned)."""
    if not value:
        return None
    from dose_engine.errors import BeamModelError

    model_path = str(manifest.parent / str(value))
    try:
        resolve_beam_model(model_path)
    except BeamModelError as exc:
        raise InputError(f"Batch manifest '{manifest}': patient {i}: {exc}") from exc
    return model_path


def _plan_one(entry: BatchEntry, options: PlanOptions, overwrite: bool) -> BatchOutcome:
    t0 = time.perf_counter()
    if entry.beam_model is not None:
        options = options.with_changes(beam_model=entry.beam_model)
    try:
        rec = plan_and_write(
            entry.ct_dir,
            entry.rtstruct,
            entry.protocol,
            entry.out,
            structure_map=list(entry.structure_map),
            options=options,
            overwrite=overwrite,
            progress=False,
        )
    except Exception as exc:  # reported per patient, with its own exit status
        logger.debug("%s: %s", entry.out, exc, exc_info=True)
        return BatchOutcome(
            entry.out,
            False,
            0,
            [],
            time.perf_counter() - t0,
            error=f"{type(exc).__name__}: {one_line_message(exc)}",
            status=exit_status_for(exc),
        )
    return BatchOutcome(
        entry.out,
        rec.all_goals_met,
        rec.n_failed,
        rec.goals,
        time.perf_counter() - t0,
        status=EXIT_GOAL_FAILED if rec.needs_attention else EXIT_OK,
        warnings=rec.warnings,
    )


@check_arguments(entries=sequence_of("rtplan.planning._batch:BatchEntry"))
def plan_batch(
    entries: Sequence[BatchEntry],
    *,
    scheduler: str | None = None,
    n_workers: int = 2,
    processes: bool = False,
    options: PlanOptions | None = None,
    backend: str | None = None,
    solver: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dose_grid_mm: float | None = None,
    n_beams: int | None = None,
    max_iterations: int | None = None,
    overwrite: bool = False,
    beam_model: BeamModel | str | os.PathLike | None = None,
) -> list[BatchOutcome]:
    """Plan every entry as a Dask task; return the outcomes in manifest order.

    Parameters
    ----------
    entries : sequence of BatchEntry
        From :func:`read_manifest`.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); default: start a
        LocalCluster with ``n_workers`` workers (threads unless ``processes``).
    n_workers : int
    processes : bool
    options : PlanOptions, optional
        As for :func:`rtplan.planning.plan_and_write`, applied to every patient; its beam
        model (or JSON file, read once before any task starts) is that of every patient
        whose manifest entry names none (default: the shipped 6 MV model).
    overwrite : bool
        Replace existing output folders.
    backend, solver, cache_dir, dose_grid_mm, n_beams, max_iterations, beam_model : optional
        Deprecated (one release, ``DeprecationWarning``): the fields of ``options``.

    Returns
    -------
    list of BatchOutcome
        One per entry; a patient that could not be planned has ``error`` set and nothing
        written.

    Raises
    ------
    rtplan.errors.RtplanError
        Dask distributed is not installed.
    rtplan.errors.InputError
        Two patients share an output folder, or one exists without ``overwrite``
        (:func:`check_batch_outputs`, before the cluster starts; nothing is planned).
    rtplan.errors.OutputError
        A patient's ``out`` or ``cache_dir`` cannot be written (before the cluster
        starts; nothing is planned).
    rtplan.errors.ClusterError
        ``scheduler`` cannot be reached.
    dose_engine.BeamModelError
        ``beam_model`` cannot be read as a beam model (the message names the file).
    """
    opts = options_from_keywords(
        "plan_batch",
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
    for i, e in enumerate(entries):
        require_instance(e, f"entries[{i}]", BatchEntry, "a BatchEntry (from read_manifest)")
    # every output and the shared cache are checked before the cluster starts
    check_batch_outputs(entries, overwrite=overwrite)
    check_cache_dir(opts.cache_dir)
    opts = opts.with_files_read()
    with dask_client(scheduler, n_workers=n_workers, processes=processes) as client:
        futures = [
            client.submit(_plan_one, e, opts, overwrite, pure=False, key=f"rtplan-plan-{i}")
            for i, e in enumerate(entries)
        ]
        outcomes = client.gather(futures)
    for o in outcomes:
        logger.info(
            "%s: %s",
            o.out,
            o.error or f"{o.n_failed} goal(s) failed, {len(o.warnings)} safety warning(s)",
        )
    return list(outcomes)
