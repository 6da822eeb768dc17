"""PortPy's own problem posed in rtplan's terms (for ``benches/bench_peers.py``).

``benches/_portpy_pipeline.py`` writes the problem PortPy 1.2.0 solved (protocol
``Lung_2Gy_30Fx``, doses per fraction) to an ``.npz``: each objective term's structure
voxels, weight and level, the two smoothness operators, the per-voxel maximum doses and the
mean-dose limits. :func:`portpy_problem` turns that into an :class:`optimizers.Problem` whose
objective is PortPy's term for term, so that both tools' solutions are evaluated on one
function (PortPy's own ``prob.value`` of its solution equals rtplan's reading of it):

- ``quadratic-overdose`` / ``-underdose`` ``(w / n) sum max(0, +-(d_i - L))**2``:
  :class:`~optimizers.Overdose` / :class:`~optimizers.Underdose` with uniform voxel weights;
- ``quadratic`` ``(w / n) sum d_i**2``: :class:`~optimizers.SquaredDeviation` at 0 Gy;
- ``smoothness-quadratic`` ``w (0.6 / n_cols ||Q_x x||**2 + 0.4 / n_rows ||Q_y x||**2)``:
  two :class:`~optimizers.Smoothness` terms (rtplan divides by the operator's rows, so the
  weights carry the ratio);
- maximum doses: one hard :class:`~optimizers.MaxDose` per distinct limit, on the voxels
  whose smallest limit it is;
- mean doses: hard :class:`~optimizers.MeanDose` with the voxels' volumes as weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

import optimizers as op

#: PortPy's split of the smoothness weight between the x and y neighbours
SMOOTH_X, SMOOTH_Y = 0.6, 0.4


def portpy_problem(definition: Any, influence_matrix: Any, **problem_options: Any) -> op.Problem:
    """The problem of ``definition`` (a loaded ``.npz`` of ``_portpy_pipeline.py``) on
    ``influence_matrix`` ((n_voxels, n_beamlets) CSR, PortPy's beamlets, dose per fraction).

    ``problem_options`` go to :class:`optimizers.Problem` (e.g. ``matrix_dtype``)."""
    structures: dict[str, np.ndarray] = {}
    weights: dict[str, np.ndarray] = {}
    terms: list[op.Term] = []
    kinds = {
        "quadratic-overdose": lambda s, lv, w: op.Overdose(s, lv, weight=w),
        "quadratic-underdose": lambda s, lv, w: op.Underdose(s, lv, weight=w),
        "quadratic": lambda s, lv, w: op.SquaredDeviation(s, 0.0, weight=w),
    }
    k = 0
    while f"term{k}_type" in definition:
        kind, name = str(definition[f"term{k}_type"]), str(definition[f"term{k}_name"])
        structures[name] = np.asarray(definition[f"term{k}_voxels"], dtype=np.int64)
        weight, level = float(definition[f"term{k}_weight"]), float(definition[f"term{k}_level"])
        terms.append(kinds[kind](name, level, weight))
        k += 1
    n = influence_matrix.shape[1]
    if "smooth_weight" in definition:
        for axis, share, count in (
            ("x", SMOOTH_X, definition["smooth_num_cols"]),
            ("y", SMOOTH_Y, definition["smooth_num_rows"]),
        ):
            q = sp.csr_matrix(
                (
                    definition[f"smooth_{axis}_vals"],
                    (definition[f"smooth_{axis}_rows"], definition[f"smooth_{axis}_cols"]),
                ),
                shape=tuple(definition[f"smooth_{axis}_shape"]),
            )[:, :n]
            q = q[np.diff(q.indptr) > 0]  # rows without a neighbour pair add nothing
            w = float(definition["smooth_weight"]) * share * q.shape[0] / float(count)
            terms.append(op.Smoothness(q, weight=w, label=f"smoothness {axis}"))
    d_max = np.asarray(definition["d_max"], dtype=np.float64)
    for limit in np.unique(d_max[np.isfinite(d_max)]):
        name = f"max {limit:.6g} Gy"
        structures[name] = np.flatnonzero(d_max == limit)
        terms.append(op.MaxDose(name, float(limit), hard=True))
    j = 0
    while f"mean{j}_name" in definition:
        name = f"mean {definition[f'mean{j}_name']}"
        structures[name] = np.asarray(definition[f"mean{j}_voxels"], dtype=np.int64)
        weights[name] = np.asarray(definition[f"mean{j}_cc"], dtype=np.float64)
        terms.append(op.MeanDose(name, float(definition[f"mean{j}_limit"]), hard=True))
        j += 1
    return op.Problem(influence_matrix, structures, terms, voxel_weights=weights, **problem_options)
