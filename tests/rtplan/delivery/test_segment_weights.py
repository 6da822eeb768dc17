"""Segment-weight re-optimisation, dose comparisons and dose from apertures.

The plan case is the small synthetic TG-119-like C-shape of ``tests/rtplan/_cshape_synth.py``
(analytic pencil-beam influence matrix, independent of the dose engine), so the test runs
in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from _cshape_synth import WEIGHTS, optimal_fluence, synthetic_cshape
from scipy.optimize import lsq_linear, nnls

from dose_engine import Beam, Grid, MLCParameters, beamlets_for_target
from optimizers import Status
from rtplan import load_machine
from rtplan.delivery._segment_weights import (
    compare_doses,
    reoptimize_segment_weights,
    segment_beamlet_matrix,
)
from rtplan.dose import aperture_dose
from rtplan.errors import InputError
from rtplan.sequencing import beam_map_edges_mm, sequence_plan

#: No leaf or jaw transmission, leaf gap or tongue-and-groove.
IDEAL_MLC = MLCParameters()


@pytest.fixture(scope="module")
def case():
    grid, beams, bl, D, structs = synthetic_cshape()
    x = optimal_fluence(D, structs)
    return grid, beams, bl, D, structs, x


@pytest.mark.parametrize("machine_name", ["AgilityMLC160", "VarianMLC120"])
@pytest.mark.parametrize("n_levels", [5, 10])
def test_reoptimisation_restores_coverage(case, machine_name, n_levels):
    grid, beams, bl, D, structs, x = case
    machine = load_machine(machine_name)
    seq = sequence_plan(x, bl, beams, machine, n_levels=n_levels)
    ref = D @ x
    S = segment_beamlet_matrix(
        seq.beams, bl, beam_indices=seq.beam_indices, mlc_parameters=IDEAL_MLC
    )
    # segments open whole beamlets: with an ideal MLC, S @ MU is exactly the quantised fluence
    np.testing.assert_allclose(
        S @ np.array([s.total_mu for b in seq.beams for s in b.segments]),
        seq.quantized_fluence_mu(bl),
        rtol=1e-12,
        atol=1e-9,
    )
    assert set(np.unique(S.data).round(12)) <= {1.0}
    res = reoptimize_segment_weights(
        D,
        bl,
        seq.beams,
        ref,
        structs,
        structure_weights=WEIGHTS,
        beam_indices=seq.beam_indices,
        mlc_parameters=IDEAL_MLC,
    )
    # independent objective evaluation
    # (Core lies inside Body: a voxel in two structures takes the larger weight)
    w = np.zeros(D.shape[0])
    for k, idx in structs.items():
        w[idx] = np.maximum(w[idx], WEIGHTS[k])

    def err(mu):
        d = D @ (S @ mu)
        return float(np.sum(w * (d - ref) ** 2))

    assert res.objective_before == pytest.approx(err(res.mu_before), rel=1e-6)
    assert res.objective_after == pytest.approx(err(res.mu_after), rel=1e-6)
    assert res.objective_after <= res.objective_before
    assert res.objective_after < 0.5 * res.objective_before
    before = compare_doses(ref, D @ seq.quantized_fluence_mu(bl), structs, "PTV")
    after = compare_doses(ref, D @ (S @ res.mu_after), structs, "PTV")
    assert abs(after.coverage_loss_percent) <= 1.0
    assert abs(after.coverage_loss_percent) <= abs(before.coverage_loss_percent) + 1e-9
    # the re-weighted beams carry the new MU
    assert sum(b.total_mu for b in res.beams) == pytest.approx(res.mu_after.sum())
    for b in res.beams:
        b.validate()


@pytest.mark.parametrize("n_levels", [3, 5])
def test_underdose_weights_protect_coverage(case, n_levels):
    grid, beams, bl, D, structs, x = case
    seq = sequence_plan(x, bl, beams, load_machine("AgilityMLC160"), n_levels=n_levels)
    ref = D @ x
    S = segment_beamlet_matrix(seq.beams, bl, beam_indices=seq.beam_indices)
    plain = reoptimize_segment_weights(D, bl, seq.beams, ref, structs, structure_weights=WEIGHTS)
    cold = reoptimize_segment_weights(
        D, bl, seq.beams, ref, structs, structure_weights=WEIGHTS, underdose_weights={"PTV": 10.0}
    )
    # independent evaluation of the asymmetric objective
    w = np.zeros(D.shape[0])
    for k, idx in structs.items():
        w[idx] = np.maximum(w[idx], WEIGHTS[k])
    u = np.zeros(D.shape[0])
    u[structs["PTV"]] = 10.0

    def full(mu):
        r = D @ (S @ mu) - ref
        return float(np.sum(w * r * r) + np.sum(u * np.minimum(r, 0) ** 2))

    assert cold.objective_after == pytest.approx(full(cold.mu_after), rel=1e-6)
    assert cold.objective_before == pytest.approx(full(cold.mu_before), rel=1e-6)
    assert cold.objective_after <= full(plain.mu_after) * (1 + 1e-9)  # never worse than LSQ
    assert cold.objective_after <= cold.objective_before
    assert cold.extras["cold_set_iterations"] >= 1
    c_plain = compare_doses(ref, D @ (S @ plain.mu_after), structs, "PTV")
    c_cold = compare_doses(ref, D @ (S @ cold.mu_after), structs, "PTV")
    assert c_cold.d95_gy >= c_plain.d95_gy - 1e-9
    assert c_cold.coverage_loss_percent <= 1.0
    with pytest.raises(InputError, match="underdose_weights"):
        reoptimize_segment_weights(D, bl, seq.beams, ref, structs, underdose_weights={"X": 1.0})


def test_reoptimisation_matches_another_solver():
    rng = np.random.default_rng(11)
    grid, beams, bl, D, structs = synthetic_cshape(n_beams=3, spacing_mm=10.0, n_slices=1)
    x = rng.random(len(bl)) * 100
    seq = sequence_plan(x, bl, beams, load_machine("AgilityMLC160"), n_levels=3)
    ref = D @ (x * rng.uniform(0.8, 1.2, x.size))
    res = reoptimize_segment_weights(D, bl, seq.beams, ref, structs)
    S = segment_beamlet_matrix(seq.beams, bl).toarray()
    rows = np.unique(np.concatenate(list(structs.values())))
    A = D[rows] @ S
    other = lsq_linear(A, ref[rows], bounds=(0, np.inf), method="trf", tol=1e-12)
    obj_other = 2 * other.cost
    assert res.objective_after <= obj_other * (1 + 1e-6) + 1e-9
    assert res.objective_after == pytest.approx(obj_other, rel=1e-4)
    assert res.objective_after <= res.objective_before


def test_compare_doses_numbers():
    ref = np.arange(100, dtype=float)  # target doses 0..99
    new = ref * 0.9
    c = compare_doses(ref, new, {"T": np.arange(100), "O": np.array([1, 2, 3])}, "T")
    assert c.d95_reference_gy == pytest.approx(4.5)  # equal voxels 0..99 Gy: D_v = 99.5 - v
    assert c.coverage_loss_percent == pytest.approx(10.0)
    assert c.mean_gy["O"] == pytest.approx((2.0, 1.8)) and c.max_gy["T"] == (99.0, 99 * 0.9)
    with pytest.raises(InputError, match="not among"):
        compare_doses(ref, new, {"T": np.arange(3)}, "PTV")


def test_bad_structure_input(case):
    grid, beams, bl, D, structs, x = case
    seq = sequence_plan(x, bl, beams, load_machine("AgilityMLC160"), n_levels=3)
    with pytest.raises(InputError, match="voxel indices"):
        reoptimize_segment_weights(D, bl, seq.beams, D @ x, {"PTV": np.array([D.shape[0]])})
    with pytest.raises(InputError, match="structure_weights"):
        reoptimize_segment_weights(D, bl, seq.beams, D @ x, structs, structure_weights={"X": 1})
    with pytest.raises(InputError, match="reference_dose_gy"):
        reoptimize_segment_weights(D, bl, seq.beams, np.zeros(3), structs)


@pytest.mark.parametrize("machine_name", ["AgilityMLC160", "VarianMLC120"])
def test_mlc_physics_moves_segment_mu(case, machine_name):
    """The segment matrix follows the machine's [dosimetry] (the fluence of the final dose):
    leaf transmission, the leaf gap (also of closed pairs in the field) and interleaf
    leakage add fluence per MU, tongue-and-groove takes some away; the re-fitted meterset
    moves as the best single rescaling of the ideal one predicts."""
    grid, beams, bl, D, structs, x = case
    machine = load_machine(machine_name)
    p = machine.dosimetry
    seq = sequence_plan(x, bl, beams, machine, n_levels=1)
    kw = dict(beam_indices=seq.beam_indices)
    ideal = segment_beamlet_matrix(seq.beams, bl, mlc_parameters=IDEAL_MLC, **kw).toarray()
    real = segment_beamlet_matrix(seq.beams, bl, **kw).toarray()
    # a shut beamlet sees the leaf transmission (more in the interleaf-leakage bands and
    # beside a rounded leaf end) inside the jaws, the jaw transmission (times the leaves')
    # outside them
    shut = (ideal == 0) & (real > 0)
    in_jaws = real >= p.transmission * (1 - 1e-9)
    assert (shut & in_jaws).any() and (shut & ~in_jaws).any()
    assert np.all(real[shut & in_jaws] <= p.leakage + 0.5 * p.dosimetric_leaf_gap_mm / 5.0)
    under_jaws = real[shut & ~in_jaws]
    assert np.all(under_jaws >= p.jaw_transmission * p.transmission * (1 - 1e-9))
    assert np.all(under_jaws <= p.jaw_transmission * (1 + 1e-9))  # at most: leaves open there
    # open beamlets: at most 1 (the bands at leaf boundaries only take away)
    assert real[ideal == 1].max() <= 1 + 1e-9
    args = (D, bl, seq.beams, D @ x, structs)
    mu_ideal = reoptimize_segment_weights(*args, mlc_parameters=IDEAL_MLC, **kw).mu_after
    mu_real = reoptimize_segment_weights(*args, **kw).mu_after
    # expected: the one scale of the ideal meterset that best fits the reference with the
    # real fluence (least squares over the fitted voxels, all of weight 1)
    rows = np.unique(np.concatenate(list(structs.values())))
    ref = (D @ x)[rows]
    d_real = (D @ (real @ mu_ideal))[rows]
    scale = float(ref @ d_real / (d_real @ d_real))
    ratio = mu_real.sum() / mu_ideal.sum()
    assert np.sign(ratio - 1) == np.sign(scale - 1)
    assert ratio == pytest.approx(scale, abs=0.03)
    assert abs(ratio - 1) > 0.005  # and it does move


@pytest.mark.parametrize("machine_name", ["AgilityMLC160", "VarianMLC120"])
def test_aperture_dose_equals_beamlet_superposition(machine_name):
    """Dose from leaf-gap rectangles == dose from the beamlet cells weighted by the
    quantised fluence (two independent rectangle sets through dose_engine.field_dose), for
    an ideal MLC (no transmission, leaf gap or tongue-and-groove) and a beam model without
    head scatter (whose following the jaws scales each segment, tested in
    tests/rtplan/dose/test_mlc_aperture_dose.py)."""
    from dose_engine import BeamModel, MLCParameters, field_dose, load_beam_model

    model = BeamModel({**load_beam_model().parameters, "head_scatter_weight": 0.0})

    grid = Grid(shape=(8, 24, 24), origin_mm=(-57.5, -57.5, -35.0), spacing_mm=(5, 5, 10))
    density = np.ones(grid.shape, np.float32)
    beam = Beam(90.0)
    pts = np.array(
        [[x, y, z] for x in (-10, 0, 10) for y in (-15, 0, 15) for z in (-20, 0, 20)], float
    )
    bl = beamlets_for_target([beam], pts, margin_mm=0.0)
    rng = np.random.default_rng(5)
    fl = rng.random(len(bl)) * 20
    machine = load_machine(machine_name)
    seq = sequence_plan(fl, bl, [beam], machine, n_levels=4)
    d_ap = aperture_dose(seq.beams[0], density, grid, grid, model, mlc_parameters=MLCParameters())
    q = seq.quantized_fluence_mu(bl)
    keep = q > 0
    d_bl = field_dose(density, grid, grid, beam, bl.rectangles_mm(0)[keep], q[keep], model)
    assert d_ap.shape == grid.shape and d_ap.max() > 0
    np.testing.assert_allclose(d_ap, d_bl, atol=2e-5 * float(d_bl.max()))
    xe, ye = beam_map_edges_mm(bl, 0)
    assert np.allclose(np.diff(xe), 5.0) and np.allclose(np.diff(ye), 5.0)


def test_sequence_plan_options(case):
    from rtplan.sequencing import SequencingError

    grid, beams, bl, D, structs, x = case
    m = load_machine("AgilityMLC160")
    uni = sequence_plan(
        x,
        bl,
        beams,
        m,
        n_levels=8,
        uniform_levels=True,
        beam_names=[f"B{i}" for i in range(len(beams))],
    )
    np.testing.assert_allclose([r.level_mu for r in uni.results], x.max() / 8, rtol=1e-12)
    assert [b.name for b in uni.beams] == [f"B{i}" for i in uni.beam_indices]
    assert [b.number for b in uni.beams] == list(range(1, len(uni.beams) + 1))
    per_beam = sequence_plan(x, bl, beams, m, n_levels=8)
    for b, r in enumerate(per_beam.results):
        sl = bl.beam_slice(b)
        assert r.level_mu == pytest.approx(x[sl].max() / 8)
    with pytest.raises(SequencingError, match="beamlet table has"):
        sequence_plan(x[:-1], bl, beams, m)
    with pytest.raises(SequencingError, match="beams were given"):
        sequence_plan(x, bl, beams[:-1], m)


def test_normal_equations_reach_the_full_nnls_optimum(case):
    """Segment weights are solved on the n × n normal equations (issue 12 item 6: 117 s on
    the thorax's 244,305 voxels before); Lawson–Hanson NNLS on the whole voxels × segments
    system, the solver used before, reaches the same optimum.  Tolerance: the normal
    equations square the condition number of this fit (float64), far below 1e-7."""
    grid, beams, bl, D, structs, x = case
    seq = sequence_plan(x, bl, beams, load_machine("AgilityMLC160"), n_levels=5)
    ref = D @ x
    # ideal MLC: the leaf and jaw transmission's small entries of S raise the condition
    # number (the two solves then agree to 3e-7 on this case)
    res = reoptimize_segment_weights(
        D, bl, seq.beams, ref, structs, structure_weights=WEIGHTS, mlc_parameters=IDEAL_MLC
    )
    S = segment_beamlet_matrix(seq.beams, bl, mlc_parameters=IDEAL_MLC).toarray()
    w = np.zeros(D.shape[0])
    for name, idx in structs.items():  # a voxel in several structures takes the largest
        w[idx] = np.maximum(w[idx], WEIGHTS.get(name, 1.0))
    rows = np.flatnonzero(w > 0)
    sw = np.sqrt(w[rows])
    A = sw[:, None] * (D[rows] @ S)
    full = nnls(A, sw * ref[rows], maxiter=50 * S.shape[1])[0]
    obj_full = float(np.sum((A @ full - sw * ref[rows]) ** 2))
    assert res.n_voxels == rows.size and S.shape[1] > 10
    assert res.objective_after == pytest.approx(obj_full, rel=1e-7)
    np.testing.assert_allclose(res.mu_after, full, rtol=1e-5, atol=1e-6 * full.max())


def test_status_is_in_the_optimization_result_vocabulary(case, monkeypatch):
    grid, beams, bl, D, structs, x = case
    seq = sequence_plan(x, bl, beams, load_machine("AgilityMLC160"), n_levels=3)
    ref = D @ x
    args = (D, bl, seq.beams, ref, structs)
    plain = reoptimize_segment_weights(*args, structure_weights=WEIGHTS)
    assert (plain.status, plain.success) == (Status.OPTIMAL, True)
    assert repr(plain).startswith("SegmentWeightResult(status='optimal'")
    cold = {"structure_weights": WEIGHTS, "underdose_weights": {"PTV": 10.0}}
    settled = reoptimize_segment_weights(*args, **cold)
    n_iter = settled.extras["cold_set_iterations"]
    assert settled.status == Status.OPTIMAL and 2 <= n_iter < 20  # the cold set settled
    # one cold-set iteration is not enough here: the best iterate, flagged
    short = reoptimize_segment_weights(*args, **cold, max_underdose_iter=1)
    assert (short.status, short.success) == (Status.ITERATION_LIMIT, False)
    assert "did not settle" in short.message
    assert settled.objective_after <= short.objective_after <= short.objective_before
    # a solver answer worse than the sequenced meterset: the latter is kept, and said so
    monkeypatch.setattr(
        "rtplan.delivery._segment_weights._nnls_normal_equations",
        lambda M, w, y, **kw: np.zeros(M.shape[1]),
    )
    kept = reoptimize_segment_weights(*args, structure_weights=WEIGHTS)
    assert (kept.status, kept.success) == (Status.OPTIMAL_INACCURATE, True)
    np.testing.assert_array_equal(kept.mu_after, kept.mu_before)
    assert "kept the sequenced meterset" in kept.message


def test_cold_voxels_add_their_rows_to_the_normal_equations():
    """The cold-set solve on normal equations formed once plus the cold rows' terms is the
    solve with the weights ``w + u`` on the cold voxels (fit_weights' shortcut)."""
    from rtplan.delivery._segment_weights import _nnls_normal_equations, _normal_equations

    rng = np.random.default_rng(5)
    M = np.abs(rng.normal(size=(3000, 12))) * (rng.random((3000, 12)) < 0.5)
    y = M @ np.abs(rng.normal(size=12)) + rng.normal(scale=0.3, size=3000)
    w, u = rng.random(3000), np.where(rng.random(3000) < 0.2, 4.0, 0.0)
    cold = (u > 0) & (rng.random(3000) < 0.5)
    direct = _nnls_normal_equations(M, w + u * cold, y)
    gram, b = _normal_equations(M, w, y)
    gc, bc = _normal_equations(M[cold], u[cold], y[cold])
    shortcut = _nnls_normal_equations(M, w, y, normal=(gram + gc, b + bc))
    assert direct.max() > 0 and np.count_nonzero(direct) < direct.size  # some at the bound
    np.testing.assert_allclose(shortcut, direct, rtol=1e-9, atol=1e-12 * direct.max())
