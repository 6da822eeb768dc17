"""What :func:`plan_and_write` and :func:`run_demo` return: :class:`WrittenPlan`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._plan import PlanResult

if TYPE_CHECKING:  # optimizers is imported on the first solve, not with rtplan.planning
    from optimizers import Status

__all__ = ["WrittenPlan"]

#: Statuses counted as success (those of :attr:`optimizers.OptimizationResult.success`;
#: ``optimizers.Status`` is a ``str`` enum).
_SUCCESS = ("optimal", "optimal_inaccurate")


@dataclass(frozen=True, eq=False)
class WrittenPlan:
    """A plan written to a folder: where, what it achieved and, in-process, the plan.

    Small, so that it travels cheaply back from a Dask worker: there (and after
    pickling) :attr:`result` is ``None``, since a :class:`PlanResult` holds the patient's
    CT, the dose and the optimiser's results.

    Attributes
    ----------
    out : pathlib.Path
        The plan folder.
    files : tuple of pathlib.Path
        The files written into it (RTPLAN.dcm, RTDOSE.dcm, plan.json, report.html and
        RS_derived.dcm when structures were derived), sorted.
    status : optimizers.Status
        Outcome of the optimisation, in the vocabulary of
        :class:`optimizers.OptimizationResult` (that of its most important level that did
        not succeed, else ``optimal`` / ``optimal_inaccurate``).
    message : str
        The optimisation's sentence about ``status``.
    all_goals_met : bool
    needs_attention : bool
        A goal failed or the safety layer warned (``rtplan plan`` exit status 1).
    n_failed : int
        Goals failed.
    warnings : tuple of str
        The safety layer's warnings (as printed by the CLI and written to plan.json).
    summary : str
        :meth:`PlanResult.summary`: goals met, MU, time, warnings, the goal table.
    timings : dict of str to float, s
        Wall time per planning stage.
    goals, reported : list of dict
        Goal records and reported-only readings, as in plan.json.
    input_dir : pathlib.Path or None
        The phantom's DICOM folder (:func:`run_demo`), else ``None``.
    result : PlanResult or None
        The whole plan, when it was made in this process; ``None`` after a Dask worker
        or pickling.
    """

    out: Path
    files: tuple[Path, ...]
    status: Status
    message: str
    all_goals_met: bool
    needs_attention: bool
    n_failed: int
    warnings: tuple[str, ...]
    summary: str
    timings: dict[str, float] = field(default_factory=dict)
    goals: list[dict[str, Any]] = field(default_factory=list)
    reported: list[dict[str, Any]] = field(default_factory=list)
    input_dir: Path | None = None
    result: PlanResult | None = None

    @classmethod
    def of(cls, result: PlanResult, out: Path, *, input_dir: Path | None = None) -> WrittenPlan:
        """The record of ``result`` written to ``out`` (which must exist)."""
        opt = result.optimization
        return cls(
            out=Path(out),
            files=tuple(sorted(p for p in Path(out).iterdir() if p.is_file())),
            status=opt.status,
            message=opt.message,
            all_goals_met=result.all_goals_met,
            needs_attention=result.needs_attention,
            n_failed=int(result.goal_table.n_failed),
            warnings=tuple(w.message for w in result.warnings),
            summary=result.summary(),
            timings=dict(result.timings),
            goals=result.goal_table.as_records(),
            reported=result.goal_table.reported_records(),
            input_dir=input_dir,
            result=result,
        )

    @property
    def success(self) -> bool:
        """The optimisation's status is ``optimal`` or ``optimal_inaccurate``."""
        return self.status in _SUCCESS

    def without_result(self) -> WrittenPlan:
        """A copy without :attr:`result` (what a Dask worker sends back)."""
        return replace(self, result=None)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "result": None}

    def __repr__(self) -> str:
        return (
            f"WrittenPlan(out={str(self.out)!r}, status={str(self.status)!r}, "
            f"all_goals_met={self.all_goals_met}, needs_attention={self.needs_attention}, "
            f"files={[p.name for p in self.files]})"
        )

    # ------------------------------------------------ the dict returned before 0.1
    def _old_value(self, key: str) -> Any:
        if key == "out":
            return str(self.out)
        if key == "input" and self.input_dir is not None:
            return str(self.input_dir)
        if key == "warnings":
            return list(self.warnings)
        if key in _OLD_KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def _deprecated(self, key: str) -> Any:
        value = self._old_value(key)
        attr = "input_dir" if key == "input" else key
        warnings.warn(
            f"plan_and_write() and run_demo() return a WrittenPlan; use .{attr} instead of "
            f"[{key!r}] (the dict access will be removed in the next release).",
            DeprecationWarning,
            stacklevel=3,
        )
        return value

    def __getitem__(self, key: str) -> Any:
        """Deprecated: the dict access of the record returned before (``rec["out"]``)."""
        return self._deprecated(key)

    def get(self, key: str, default: Any = None) -> Any:
        """Deprecated: ``dict.get`` of the record returned before."""
        try:
            return self._deprecated(key)
        except KeyError:
            return default


#: Keys of the dict that plan_and_write returned before (``input``: run_demo only).
_OLD_KEYS = (
    "all_goals_met",
    "needs_attention",
    "n_failed",
    "summary",
    "timings",
    "goals",
    "reported",
)
