"""Leaf-position refinement after sequencing (direct aperture optimisation).

On the small synthetic C-shape of ``tests/rtplan/_cshape_synth.py`` (analytic influence
matrix, independent of the dose engine): the analytic gradient against central finite
differences of the objective, the machine limits after refinement, and the objective
lowered from the least-squares segment weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _cshape_synth import WEIGHTS, optimal_fluence, synthetic_cshape

from dose_engine import MLCParameters, aperture_fluence, aperture_fluence_edges
from rtplan import load_machine
from rtplan.delivery import (
    dose_fit_objective,
    refine_leaf_positions,
    reoptimize_segment_weights,
    segment_beamlet_matrix,
)
from rtplan.delivery._leaf_refinement import _Model, _setup
from rtplan.delivery._segment_weights import fit_voxels
from rtplan.errors import InputError
from rtplan.sequencing import sequence_plan

UNDERDOSE = {"PTV": 3.0}


@pytest.fixture(scope="module")
def case():
    grid, beams, bl, D, structs = synthetic_cshape(n_beams=3)
    x = optimal_fluence(D, structs)
    return bl, D, structs, x, beams


def _fit(case, machine, n_levels=4):
    bl, D, structs, x, beams = case
    seq = sequence_plan(x, bl, beams, machine, n_levels=n_levels)
    ref = D @ x
    res = reoptimize_segment_weights(
        D,
        bl,
        seq.beams,
        ref,
        structs,
        structure_weights=WEIGHTS,
        underdose_weights=UNDERDOSE,
        beam_indices=seq.beam_indices,
    )
    rows, w, u = fit_voxels(structs, D.shape[0], WEIGHTS, UNDERDOSE)
    return seq, res, dose_fit_objective(ref[rows], w, u, rows)


@pytest.mark.parametrize("machine_name", ["VarianMLC120", "AgilityMLC160"])
def test_gradient_matches_finite_differences(case, machine_name):
    """d objective / d leaf and d objective / d MU, analytic against central differences
    (float64 matrix; leaves moved off the beamlet edges, where S is differentiable), with
    the machine's MLC physics: transmission, leaf gap, tongue-and-groove, jaws."""
    bl, D, structs, x, _ = case
    machine = load_machine(machine_name)
    seq, _, objective = _fit(case, machine)
    D64 = sp.csr_matrix(D, dtype=np.float64)
    segs = _setup(seq.beams, bl, seq.beam_indices)
    model = _Model(D64, bl, segs, seq.beam_indices, None, None)
    rng = np.random.default_rng(3)
    leaves, mu = [], []
    for k, (i, s) in enumerate(zip(segs.beam_of, segs.seg_of, strict=True)):
        seg = seq.beams[i].segments[s]
        pos = np.array(seg.leaf_positions_mm)
        leaves.append(pos + rng.uniform(0.3, 0.7, pos.shape) * segs.free[k])
        mu.append(seg.total_mu)
    mu = np.array(mu)
    _, g_dose, _, parts = model.value(leaves, mu, objective)
    g_leaves, g_mu = model.gradient(g_dose, mu, parts)
    analytic, numeric = [], []
    h = 1e-4
    for k in range(0, segs.n_segments, 2):
        for bank, pair in list(zip(*np.nonzero(segs.free[k]), strict=True))[:3]:
            up = [a.copy() for a in leaves]
            up[k][bank, pair] += h
            down = [a.copy() for a in leaves]
            down[k][bank, pair] -= h
            fd = (model.value(up, mu, objective)[0] - model.value(down, mu, objective)[0]) / (2 * h)
            analytic.append(g_leaves[k][bank, pair])
            numeric.append(fd)
    analytic, numeric = np.array(analytic), np.array(numeric)
    assert analytic.size >= 10 and np.abs(numeric).max() > 0
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6 * np.abs(numeric).max())
    for k in (0, segs.n_segments // 2, segs.n_segments - 1):
        step = np.zeros(mu.size)
        step[k] = 1e-3
        fd = (
            model.value(leaves, mu + step, objective)[0]
            - model.value(leaves, mu - step, objective)[0]
        ) / 2e-3
        assert g_mu[k] == pytest.approx(fd, rel=1e-6, abs=1e-9 * np.abs(g_mu).max())


def test_edge_leaves_move_the_rectangles():
    """Each edge that ``aperture_fluence_edges`` assigns to a leaf moves with that leaf at
    unit rate, every other edge stays; the rectangles are ``aperture_fluence``'s."""
    rng = np.random.default_rng(5)
    bounds = np.linspace(-50.0, 50.0, 21)
    p = MLCParameters(
        transmission=0.015,
        dosimetric_leaf_gap_mm=1.6,
        interleaf_leakage=0.022,
        tongue_and_groove_mm=0.5,
        jaw_transmission=0.003,
    )
    jaws = {"X": (-30.0, 25.0), "Y": (-40.0, 45.0)}
    for _ in range(20):
        a = rng.uniform(-40.0, 10.0, 20)
        leaves = np.stack([a, a + rng.uniform(0.0, 30.0, 20)])
        rects, w, edges = aperture_fluence_edges(leaves, bounds, jaws, p)
        r0, w0 = aperture_fluence(leaves, bounds, jaws, p)
        np.testing.assert_array_equal(rects, r0)
        np.testing.assert_array_equal(w, w0)
        for leaf in rng.choice(40, 6, replace=False):
            moved = leaves.copy()
            moved.flat[leaf] += 1e-3
            r1, w1, _ = aperture_fluence_edges(moved, bounds, jaws, p)
            if r1.shape != rects.shape:  # the move crossed a kink (a rectangle appeared)
                continue
            for col in (0, 1):
                expect = np.where(edges[:, col] == leaf, 1e-3, 0.0)
                np.testing.assert_allclose(r1[:, col] - rects[:, col], expect, atol=1e-12)


@pytest.mark.parametrize("machine_name", ["VarianMLC120", "AgilityMLC160"])
def test_refinement_lowers_the_fit_and_keeps_machine_limits(case, machine_name):
    bl, D, structs, x, _ = case
    machine = load_machine(machine_name)
    seq, res, objective = _fit(case, machine)
    out = refine_leaf_positions(
        D, bl, res.beams, objective, beam_indices=seq.beam_indices, max_iter=25
    )
    # the start is the least-squares optimum of the segment stage
    assert out.objective_before == pytest.approx(res.objective_after, rel=1e-5)
    assert out.objective_after < 0.9 * out.objective_before
    assert list(out.history) == sorted(out.history, reverse=True)  # monotone descent
    # recomputed independently: S of the refined segments, the fit on D S m
    mu = np.array([s.total_mu for b in out.beams for s in b.segments])
    S = segment_beamlet_matrix(out.beams, bl, beam_indices=seq.beam_indices)
    np.testing.assert_allclose(S @ mu, out.beamlet_fluence_mu, rtol=1e-10, atol=1e-9)
    assert objective(D @ (S @ mu))[0] == pytest.approx(out.objective_after, rel=1e-5)
    assert out.mu_after == pytest.approx(mu.sum())
    assert out.leaf_travel_mm["max"] > 0.1 and out.leaf_travel_mm["count"] > 0
    mlc = machine.mlc
    for before, after in zip(res.beams, out.beams, strict=True):
        after.validate()  # leaf range, gap, leaf travel, interdigitation, jaws
        for s0, s1 in zip(before.segments, after.segments, strict=True):
            a0, b0 = s0.leaf_positions_mm
            a1, b1 = s1.leaf_positions_mm
            closed = b0 - a0 <= mlc.min_leaf_gap_mm + 1e-6
            # closed pairs stay parked, open ones keep the minimum gap
            np.testing.assert_array_equal(a1[closed], a0[closed])
            np.testing.assert_array_equal(b1[closed], b0[closed])
            assert np.all(b1[~closed] - a1[~closed] >= mlc.min_leaf_gap_mm - 1e-9)
            if "X" in s1.jaws_mm:
                jx = s1.jaws_mm["X"]
                moved = ~closed & (a1 != a0)
                assert np.all(a1[moved] >= jx[0] - 1e-9)
                moved = ~closed & (b1 != b0)
                assert np.all(b1[moved] <= jx[1] + 1e-9)


def test_no_interdigitation_holds(case):
    """A machine that forbids interdigitation: every refined segment still passes."""
    from dataclasses import replace

    bl, D, structs, x, beams = case
    agility = load_machine("AgilityMLC160")
    machine = replace(agility, mlc=replace(agility.mlc, interdigitation=False))
    seq = sequence_plan(x, bl, beams, machine, n_levels=4)
    for b in seq.beams:
        b.validate()
    rows, w, u = fit_voxels(structs, D.shape[0], WEIGHTS, UNDERDOSE)
    objective = dose_fit_objective((D @ x)[rows], w, u, rows)
    out = refine_leaf_positions(
        D, bl, seq.beams, objective, beam_indices=seq.beam_indices, max_iter=10
    )
    assert out.objective_after < out.objective_before
    for b in out.beams:
        b.validate()


def test_bad_input(case):
    bl, D, structs, x, _ = case
    seq, res, objective = _fit(case, load_machine("AgilityMLC160"), n_levels=2)
    with pytest.raises(InputError, match="max_iter"):
        refine_leaf_positions(D, bl, res.beams, objective, max_iter=-1)
    with pytest.raises(InputError, match="columns"):
        refine_leaf_positions(D[:, :-1], bl, res.beams, objective)
    with pytest.raises(InputError, match="gradient of shape"):
        refine_leaf_positions(
            D, bl, res.beams, lambda d: (0.0, np.zeros(3)), beam_indices=seq.beam_indices
        )
    same = refine_leaf_positions(
        D, bl, res.beams, objective, beam_indices=seq.beam_indices, max_iter=0
    )
    assert same.objective_after == same.objective_before and same.n_iterations == 0
