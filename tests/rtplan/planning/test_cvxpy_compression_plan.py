"""The planner's CVXPY compression on a pencil-beam matrix (TG-119 C-shape, coarse): the
compressed solve against the exact one, the dose-error bound against the measured error;
and a CVXPY solver that is not available refused before any work."""

from __future__ import annotations

import numpy as np
import pytest

import dose_engine as de
import optimizers as op
from optimizers._solvers import MosekSolver
from rtplan.phantoms import make_phantom
from rtplan.planning import _plan, plan_patient
from rtplan.protocols import OptimizationSettings, load_protocol


@pytest.fixture(scope="module")
def cshape_matrix():
    """5 beams, 8 mm grid, target and core rows with the planner's wide scatter tails."""
    pat = make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    dg = pat.ct.grid.with_spacing(8.0)
    masks = {k: pat.structure(n).mask(dg) for k, n in (("PTV", "PTV"), ("CORE", "Core"))}
    iso = de.isocenter_at_centroid(masks["PTV"], dg)
    beams = de.equispaced_coplanar_beams(5, isocenter_mm=iso)
    pts = dg.voxel_centres_mm().reshape(-1, 3)[masks["PTV"].ravel()]
    bl = de.beamlets_for_target(beams, pts)
    im = de.compute_influence_matrix(
        de.hu_to_density(pat.ct.array),
        pat.ct.grid,
        dg,
        beams,
        bl,
        progress=False,
        voxel_mask=masks["PTV"] | masks["CORE"],
        wide_mask=masks["PTV"] | masks["CORE"],
        wide_lateral_cutoff_mm=_plan.ACCURATE_CUTOFF_MM,
        wide_relative_threshold=_plan.ACCURATE_THRESHOLD,
    )
    return im.matrix.tocsr(), {k: np.flatnonzero(m) for k, m in masks.items()}


TERMS = [  # the planner's CVXPY translation of the TG-119 goals, in units of Rx = 50 Gy
    op.MinDVH("PTV", 51.5, 95.0, weight=2 / 50**2),
    op.MaxDVH("PTV", 53.35, 10.0, weight=2 / 50**2),
    op.MaxDVH("CORE", 7.0, 10.0, weight=1 / 50**2),
    op.Underdose("PTV", 46.35, weight=0.2 / 50**2),
    op.MeanDose("CORE", weight=0.01 / 50),
]


# older CVXPY releases (the declared floor) hint that a problem with this many parameter
# entries compiles faster without DPP; a performance hint, not an error
@pytest.mark.filterwarnings("ignore:Your problem has too many parameters:UserWarning")
def test_compressed_plan_solve_against_exact(cshape_matrix):
    """The planner's compression (1 %, rank 32) on a pencil-beam matrix: the measured dose
    error within its bound; two dose corrections bring the error under 0.1 Gy and the
    objective within 5 % of the exact optimum (measured: 0.60 -> 0.04 Gy, +16.8 % -> +3.4 %)."""
    a, s = cshape_matrix
    prob = op.Problem(a, s, TERMS, matrix_dtype=np.float32)
    exact = op.solve_cvxpy(prob)
    defaults = OptimizationSettings()  # the planner's compression settings
    settings = op.Compression(
        rel_threshold=defaults.cvxpy_compression_threshold, rank=defaults.cvxpy_compression_rank
    )
    plain = op.solve_cvxpy(prob, compression=settings)
    rec = plain.extras["compression"]
    assert rec["nnz_sparse"] < 0.5 * rec["nnz_full"]
    assert 0 < rec["max_dose_error_gy"] <= rec["max_dose_error_bound_gy"]
    corrected = op.solve_cvxpy(prob, compression=settings, corrections=2)
    rec2 = corrected.extras["compression"]
    assert rec2["corrections"] == 2
    assert rec2["max_dose_error_gy"] < min(0.1, 0.2 * rec["max_dose_error_gy"])
    # objectives on the exact matrix; the exact optimum is the lowest
    assert exact.objective * (1 - 1e-6) <= corrected.objective <= exact.objective * 1.05
    assert corrected.objective < plain.objective


def test_unavailable_cvxpy_solver_is_refused_before_any_work(cshape_patient, monkeypatch):
    monkeypatch.setattr(MosekSolver, "module", "mosek_is_not_installed_here")
    calls = []
    monkeypatch.setattr(_plan, "stage_structures", lambda ctx: calls.append(ctx))
    protocol = load_protocol("tg119_cshape").with_overrides(solver="cvxpy")
    protocol = protocol.with_overrides(cvxpy_solver="MOSEK")
    with pytest.raises(op.SolverError, match="CVXPY solver `MOSEK`.*not available"):
        plan_patient(cshape_patient, protocol, progress=False)
    assert calls == []
