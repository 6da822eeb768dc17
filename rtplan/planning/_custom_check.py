"""The physicist's hard custom terms checked on the delivered dose.

The optimiser keeps a hard :class:`optimizers.CvxpyTerm` on its own dose model (the
beamlet influence matrix); the delivered dose is computed from the sequenced apertures
with the MLC's transmission, leaf gap and tongue-and-groove, and normalised. What the
optimiser held can be exceeded there, so each hard custom term is evaluated again on the
final dose, on the same voxels and weights the optimiser read, and a violation is a
safety warning in the CLI, plan.json and the report: never silent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..safety import SafetyWarning

__all__ = ["CUSTOM_FINAL_TOL_PCT", "custom_term_warnings"]

#: A hard custom term whose constraints are violated on the delivered dose by more than
#: this percentage of the prescription dose (in the constraints' own units: Gy for a dose
#: limit) gets the ``custom_term_final_dose`` warning.
CUSTOM_FINAL_TOL_PCT = 1.0


def custom_term_warnings(
    custom_terms: Mapping[int, Sequence[Any]],
    dose_gy: np.ndarray,
    rows: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray],
    fluence_mu: np.ndarray,
    prescription_gy: float,
) -> list[SafetyWarning]:
    """A warning per hard custom term its constraints miss on the delivered dose.

    Parameters
    ----------
    custom_terms : mapping of int to sequence of optimizers terms
        By priority, as given to :func:`rtplan.planning.plan_patient`; the hard
        :class:`optimizers.CvxpyTerm` among them are checked.
    dose_gy : (nz, ny, nx) array, Gy
        The delivered (final, normalised) dose on the dose grid.
    rows, weights : mapping of str to (n,) arrays
        The flat dose-grid voxels each structure's terms read, and their weights (the
        optimiser's: occupancy times the voxels a sample stands for).
    fluence_mu : (n_beamlets,) array, MU
        The fluence the plan delivers (terms may read it).
    prescription_gy : float, Gy
        Scale of the tolerance (:data:`CUSTOM_FINAL_TOL_PCT`).
    """
    hard = [
        t
        for terms in custom_terms.values()
        for t in terms
        if getattr(t, "hard", False) and hasattr(t, "structures_quantity")
    ]
    flat = np.asarray(dose_gy, dtype=np.float64).ravel()
    out = []
    for term in hard:
        names = tuple(term.structures)
        doses = {n: flat[rows[n]] for n in names}
        norm = {n: weights[n] / weights[n].sum() for n in names}
        violation = term.structures_quantity(doses, norm, np.asarray(fluence_mu, np.float64))
        if violation > CUSTOM_FINAL_TOL_PCT / 100.0 * prescription_gy:
            out.append(
                SafetyWarning(
                    "custom_term_final_dose",
                    f"CUSTOM LIMIT EXCEEDED ON THE DELIVERED DOSE: `{term.label}` held on the "
                    f"optimiser's dose but is violated by {violation:.3g} (its own units) on "
                    "the final dose from the apertures (MLC transmission, leaf gap and "
                    "normalisation); review the plan before use.",
                )
            )
    return out
