"""The bound a lexicographic level puts on the objective of an earlier one."""

from __future__ import annotations

from ._base import Term

__all__ = ["_LevelBound"]


class _LevelBound(Term):
    """Internal: ``sum_k w_k f_k(d) <= bound`` for the soft terms of an earlier priority level."""

    hard_allowed = True
    soft_allowed = False
    _needs_structure = False

    def __init__(self, terms: list[Term], bound: float, level: int) -> None:
        self.terms = list(terms)
        self.level = level
        self.bound = float(bound)
        Term.__init__(self, None, None, hard=True, label=f"level {level} objective <= {bound:.6g}")
        self.dose_gy = self.bound

    @property
    def smooth(self) -> bool:  # type: ignore[override]
        return all(t.smooth for t in self.terms)
