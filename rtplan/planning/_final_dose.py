r"""Optimisation that ends on the final dose: the pieces of the correction loop.

The influence matrix ``D`` the optimiser sees is a model of the final dose: it misses what
the apertures add (MLC leaf transmission, dosimetric leaf gap, tongue-and-groove, jaw
transmission and head scatter, scatter beyond the matrix's lateral cut-off) and what
leaf sequencing changes. After a plan with fluence ``x0`` and final dose ``d_final(x0)``,
the re-optimisation sees the corrected dose

.. math:: d(x) = D x + c, \qquad c = d_{final}(x_0) - D x_0

per voxel of the optimiser's rows (:func:`dose_correction`): exact at ``x0``, and as good
as ``D`` for the change from ``x0``. The loop itself (``stage_correct`` in
:mod:`rtplan.planning._plan`) re-optimises, sequences and re-computes the final dose with
any final-dose function (the pencil-beam aperture dose today, a collapsed-cone dose
later); this module computes the offset and the record of each loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["correction_record", "dose_correction", "goals_settled"]


def dose_correction(
    matrix: Any, rows: np.ndarray, fluence_mu: np.ndarray, final_dose_gy: np.ndarray
) -> np.ndarray:
    """``c = d_final(x0) - D x0`` on the optimiser's rows, Gy.

    Parameters
    ----------
    matrix : scipy.sparse CSR matrix, shape (n_rows, n_beamlets), Gy per MU
        The influence rows the optimiser uses (row ``k`` is dose-grid voxel ``rows[k]``).
    rows : (n_rows,) ndarray of int
        Flat (C-order) dose-grid indices of the matrix rows.
    fluence_mu : (n_beamlets,) ndarray, MU
        The fluence ``x0`` the final dose was delivered from.
    final_dose_gy : (nz, ny, nx) ndarray, Gy
        The final dose of ``x0``'s plan (apertures), on the dose grid.

    Returns
    -------
    (n_rows,) ndarray of float64, Gy
        The offset; ``matrix @ x0 + c`` equals the final dose at every row.
    """
    x = np.asarray(fluence_mu, dtype=matrix.dtype)
    model = np.asarray(matrix @ x, dtype=np.float64)
    final = np.asarray(final_dose_gy, dtype=np.float64).ravel()[rows]
    return final - model


def correction_record(
    loop: int,
    goal_results: Sequence[Any],
    *,
    target_mask: np.ndarray,
    dose_gy: np.ndarray,
    previous_dose_gy: np.ndarray | None = None,
    offset_gy: np.ndarray | None = None,
    offset_rows_in_targets: np.ndarray | None = None,
    model_error_gy: np.ndarray | None = None,
) -> dict[str, Any]:
    """One entry of ``PlanResult.corrections`` (and plan.json's ``"corrections"``).

    Parameters
    ----------
    loop : int
        0 for the uncorrected plan, then 1, 2, ...
    goal_results : sequence of rtplan.evaluation.GoalResult
        The goals on ``dose_gy`` (before normalisation).
    target_mask : (nz, ny, nx) bool ndarray
        Voxels of the targets.
    dose_gy, previous_dose_gy : (nz, ny, nx) ndarray, Gy
        The final dose of this loop and of the one before (none for loop 0).
    offset_gy : (n_rows,) ndarray, Gy, optional
        The correction this loop optimised with.
    offset_rows_in_targets : (n_rows,) bool ndarray, optional
        Which of its rows lie in the targets.
    model_error_gy : (n_rows,) ndarray, Gy, optional
        The corrected model's error at this loop's plan: its final dose minus
        ``D x + offset_gy`` at the fluence its segments deliver.

    Returns
    -------
    dict
        ``loop``; ``goals`` (goal text -> value) and ``goals_met``; for loops >= 1
        ``target_max_abs_change_gy`` / ``target_mean_abs_change_gy`` (the final dose's
        change in the targets from the loop before), ``target_max_abs_correction_gy`` /
        ``target_mean_abs_correction_gy`` (the offset ``c`` in the targets: the
        uncorrected model's error at the plan before) and ``target_max_abs_model_error_gy``
        / ``target_mean_abs_model_error_gy`` (the corrected model's error at this plan).
    """
    record: dict[str, Any] = {
        "loop": int(loop),
        "goals": {r.goal.text: float(r.value) for r in goal_results},
        "goals_met": int(sum(bool(r.passed) for r in goal_results)),
        "n_goals": len(goal_results),
    }
    if previous_dose_gy is not None:
        change = np.abs(
            np.asarray(dose_gy, dtype=np.float64) - np.asarray(previous_dose_gy, dtype=np.float64)
        )[target_mask]
        record["target_max_abs_change_gy"] = float(change.max(initial=0.0))
        record["target_mean_abs_change_gy"] = float(change.mean()) if change.size else 0.0
    if offset_rows_in_targets is not None:
        for key, value in (("correction", offset_gy), ("model_error", model_error_gy)):
            if value is not None:
                v = np.abs(value[offset_rows_in_targets])
                record[f"target_max_abs_{key}_gy"] = float(v.max(initial=0.0))
                record[f"target_mean_abs_{key}_gy"] = float(v.mean()) if v.size else 0.0
    return record


def goals_settled(before: Sequence[Any], after: Sequence[Any], *, tolerance_pct: float) -> bool:
    """Whether no goal's value moved by more than ``tolerance_pct`` % of its level.

    Parameters
    ----------
    before, after : sequence of rtplan.evaluation.GoalResult
        The same goals on two doses, in the same order.
    tolerance_pct : float
        Largest move, % of each goal's level (of 1 for a level of 0).
    """
    for b, a in zip(before, after, strict=True):
        scale = abs(float(b.goal.level)) or 1.0
        if abs(float(a.value) - float(b.value)) > tolerance_pct / 100.0 * scale:
            return False
    return True
