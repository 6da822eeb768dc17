"""One record of planning options, shared by :func:`plan_patient`, :func:`plan_and_write`,
:func:`run_demo`, :func:`plan_batch` and the CLI: :class:`PlanOptions`."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, replace
from typing import Any

from dose_engine import BeamModel, HUTable

from .._internal.arguments import INTEGER, NUMBER, PATH, TEXT, check_arguments, either, optional
from ..dose._plan_dose import resolve_beam_model, resolve_density_table
from ..errors import InputError
from ..protocols import Protocol, load_protocol
from ..protocols._protocol import FINAL_ALGORITHMS, TECHNIQUES

__all__ = ["PlanOptions"]

BACKENDS = ("numpy", "cupy")
SOLVERS = ("first_order", "cvxpy")


@check_arguments(
    backend=TEXT,
    solver=optional(TEXT),
    cache_dir=optional(PATH),
    dose_grid_mm=optional(NUMBER),
    n_beams=optional(INTEGER),
    max_iterations=optional(INTEGER),
    beam_model=optional(either(BeamModel, PATH)),
    density_table=optional(either(HUTable, PATH)),
    final_dose=optional(TEXT),
    technique=optional(TEXT),
    leaf_refinement=optional(bool),
    scheduler=optional(TEXT),
)
@dataclass(frozen=True)
class PlanOptions:
    """How to plan, whatever the entry point (checked once, when made).

    Parameters
    ----------
    backend : {"numpy", "cupy"}
        Array back-end of the dose engine and the first-order solver.
    solver : {"first_order", "cvxpy"}, optional
        Fluence optimiser; ``None``: the protocol's.
    cache_dir : path-like, optional
        Folder of the HDF5 influence-matrix cache; ``None`` disables caching.
    dose_grid_mm : float, mm, optional
        Dose-grid spacing instead of the protocol's (> 0).
    n_beams : int, optional
        That many equispaced coplanar beams instead of the protocol's (>= 1).
    max_iterations : int, optional
        Iterations per level of the first-order solver instead of the protocol's (>= 1).
    beam_model : dose_engine.BeamModel or path-like, optional
        Beam model of every dose, or its JSON file (``python -m dose_engine.fit``);
        ``None``: the shipped 6 MV model.  Its SAD must equal the machine's.
    density_table : dose_engine.HUTable or path-like, optional
        The scanner's CT-to-density calibration, or its file (CSV, TOML or JSON, two
        columns; :func:`dose_engine.load_hu_table`); ``None``: the protocol's
        ``[dose] density_table``, else the shipped generic table.
    final_dose : {"auto", "ccc", "pencil_beam"}, optional
        Engine of the final dose and the RT-DOSE written (the CLI's ``--final-dose``);
        ``None``: the protocol's ``[dose] final_algorithm`` (default ``"auto"``: the
        collapsed cone when the body holds lung or bone; docs/dose_algorithms.md).

        .. versionadded:: 0.1.0
    leaf_refinement : bool, optional
        Refine the leaf positions and segment meterset after sequencing (direct aperture
        optimisation, :func:`rtplan.delivery.refine_leaf_positions`) or not, instead of
        the protocol's ``[optimization] leaf_refinement``.

        .. versionadded:: 0.1.0
    technique : {"imrt", "vmat"}, optional
        Static beams or arcs instead of the protocol's ``[beams] technique`` (the CLI's
        ``--technique``); ``"vmat"`` plans the protocol's arcs (default two full arcs;
        docs/vmat.md).

        .. versionadded:: 0.1.0
    scheduler : str, optional
        Arcs (VMAT): compute the aperture dose of every interval of the MU refinement as a
        task on this Dask scheduler (``tcp://host:8786``), or ``"local"`` for a
        LocalCluster of two workers (the CLI's ``--arc-scheduler``; needs
        ``rtplan[dask]``); ``None``: in this process.  The same plan either way.

        .. versionadded:: 0.1.0

    Raises
    ------
    TypeError
        An option of the wrong type (named).
    rtplan.errors.InputError
        An option out of range (named, with the accepted values).

    Examples
    --------
    >>> from rtplan.planning import PlanOptions
    >>> options = PlanOptions(dose_grid_mm=5.0, n_beams=7)
    >>> options.with_changes(solver="cvxpy").solver
    'cvxpy'
    >>> PlanOptions(n_beams=0)
    Traceback (most recent call last):
    ...
    rtplan.errors.InputError: `n_beams` must be at least 1; got 0.
    """

    backend: str = "numpy"
    solver: str | None = None
    cache_dir: str | os.PathLike | None = None
    dose_grid_mm: float | None = None
    n_beams: int | None = None
    max_iterations: int | None = None
    beam_model: BeamModel | str | os.PathLike | None = None
    density_table: HUTable | str | os.PathLike | None = None
    final_dose: str | None = None
    technique: str | None = None
    leaf_refinement: bool | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"`backend` must be one of {BACKENDS}; got {self.backend!r}.")
        if self.solver is not None and self.solver not in SOLVERS:
            raise InputError(f"`solver` must be one of {SOLVERS} or None; got {self.solver!r}.")
        if self.final_dose is not None and self.final_dose not in FINAL_ALGORITHMS:
            raise InputError(
                f"`final_dose` must be one of {FINAL_ALGORITHMS} or None; got {self.final_dose!r}."
            )
        if self.technique is not None and self.technique not in TECHNIQUES:
            raise InputError(
                f"`technique` must be one of {TECHNIQUES} or None; got {self.technique!r}."
            )
        grid = self.dose_grid_mm
        if grid is not None and not (math.isfinite(float(grid)) and float(grid) > 0):
            raise InputError(f"`dose_grid_mm` must be a finite spacing > 0 mm; got {grid!r}.")
        for name in ("n_beams", "max_iterations"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"`{name}` must be at least 1; got {value!r}.")

    def with_changes(self, **changes: Any) -> PlanOptions:
        """A copy with some options replaced (checked like a new record)."""
        return replace(self, **changes)

    def with_files_read(self) -> PlanOptions:
        """A copy whose ``beam_model`` is a :class:`dose_engine.BeamModel` (the file read,
        or the shipped model) and whose ``density_table``, if given, is a
        :class:`dose_engine.HUTable`, so that a bad file is refused before any work.

        Raises
        ------
        dose_engine.BeamModelError
            ``beam_model`` cannot be read as a beam model, or ``density_table`` as a
            CT-to-density table (the message names the file, and the line).
        """
        table = None if self.density_table is None else resolve_density_table(self.density_table)
        return replace(self, beam_model=resolve_beam_model(self.beam_model), density_table=table)

    def density_table_for(self, protocol: Protocol) -> HUTable:
        """The CT-to-density table of a plan: this record's, else ``protocol``'s
        ``[dose] density_table``, else the shipped generic table."""
        chosen = self.density_table if self.density_table is not None else protocol.density_table
        return resolve_density_table(chosen)

    def apply_to(self, protocol: Protocol | str | os.PathLike) -> Protocol:
        """The protocol (loaded if a name or file) with this record's overrides:
        ``solver``, ``dose_grid_mm``, ``n_beams``, ``max_iterations``, ``final_dose``
        (its ``final_algorithm``), ``technique`` and ``leaf_refinement``."""
        p = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
        extra: dict[str, Any] = {}
        if self.max_iterations is not None:
            extra["max_iterations"] = self.max_iterations
        if self.leaf_refinement is not None:
            extra["leaf_refinement"] = self.leaf_refinement
        return p.with_overrides(
            solver=self.solver,
            dose_grid_mm=self.dose_grid_mm,
            n_beams=self.n_beams,
            final_algorithm=self.final_dose,
            technique=self.technique,
            **extra,
        )


def options_from_keywords(
    where: str, options: PlanOptions | None, *, stacklevel: int = 3, **keywords: Any
) -> PlanOptions:
    """``options``, or a record made of the deprecated keywords of ``where``.

    A keyword other than ``None`` warns (``DeprecationWarning`` naming the record; the
    warning points ``stacklevel`` frames up); giving both ``options`` and such a keyword
    is a ``TypeError`` (which would win is unclear).
    """
    given = {k: v for k, v in keywords.items() if v is not None}
    if options is not None and not isinstance(options, PlanOptions):
        raise TypeError(
            f"`options` must be an rtplan.planning.PlanOptions or None; "
            f"got {type(options).__name__}."
        )
    if not given:
        return PlanOptions() if options is None else options
    if options is not None:
        raise TypeError(
            f"{where}() got `options` and the keyword(s) {', '.join(sorted(given))}; "
            "put them into the PlanOptions."
        )
    names = ", ".join(f"{k}=..." for k in given)
    warnings.warn(
        f"{where}({names}) is deprecated and will be removed in the next release; "
        f"pass options=rtplan.planning.PlanOptions({names}).",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return PlanOptions(**given)
