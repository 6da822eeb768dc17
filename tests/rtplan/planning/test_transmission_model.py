"""The MLC leaf transmission in the optimiser's dose, following each beam's meterset
(``[optimization] transmission_model``, issue 12).

The transmission fluence of sequenced segments is checked against the segment stage's
own fluence with the MLC physics (``segment_beamlet_matrix``: a segment's fluence with
leaf transmission ``t`` is ``(1 − t)`` times its open fluence plus ``t`` inside its jaws);
the offset change against its defining identity (the model equals the segments' dose at
their open fluence); and a coarse C-shape plan end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
from _cshape_synth import optimal_fluence, synthetic_cshape

import rtplan
from dose_engine import MLCParameters
from rtplan import load_machine
from rtplan.delivery import segment_beamlet_matrix
from rtplan.planning import _plan
from rtplan.planning._transmission import beam_maps, meterset_dose, transmission_fluence
from rtplan.protocols import load_protocol
from rtplan.sequencing import sequence_plan

T = 0.015


@pytest.fixture(scope="module")
def sequenced():
    grid, beams, bl, D, structs = synthetic_cshape()
    x = optimal_fluence(D, structs)
    machine = load_machine("VarianMLC120")
    seq = sequence_plan(x, bl, beams, machine, n_levels=7)
    return bl, D, x, machine, seq


def test_beam_maps_hold_every_beamlet_once(sequenced):
    bl = sequenced[0]
    maps = beam_maps(bl)
    used = np.concatenate([m[m >= 0] for m in maps])
    np.testing.assert_array_equal(np.sort(used), np.arange(len(bl)))
    x = np.arange(len(bl), dtype=float)
    for m, f in zip(maps, bl.to_fluence_maps(x), strict=True):
        np.testing.assert_array_equal(np.where(m >= 0, m, 0), f)


def test_transmission_fluence_is_the_segments_transmission(sequenced):
    bl, D, x, machine, seq = sequenced
    mu = np.array([s.total_mu for b in seq.beams for s in b.segments])
    kw = {"beam_indices": seq.beam_indices}
    leaky = MLCParameters(transmission=T, interleaf_leakage=T)
    with_t = segment_beamlet_matrix(seq.beams, bl, mlc_parameters=leaky, **kw) @ mu
    ideal = segment_beamlet_matrix(seq.beams, bl, mlc_parameters=MLCParameters(), **kw) @ mu
    tau, beam_mu = transmission_fluence(bl, seq.beams, seq.beam_indices, machine, T)
    np.testing.assert_allclose(tau, with_t - (1 - T) * ideal, rtol=1e-9, atol=1e-9)
    assert tau.max() > 0
    for dbeam, b in zip(seq.beams, seq.beam_indices, strict=True):
        assert beam_mu[b] == pytest.approx(dbeam.total_mu)


def test_the_model_equals_the_segments_dose_at_their_open_fluence(sequenced):
    """``D x̂0 + U κ M̃(x̂0) + (c + change) = d_final`` with ``c = d_final − D x0``:
    i.e. ``D x̂0 + U κ M̃(x̂0) + change = D x0``; and κ makes the model's meterset at the
    sequenced fluence the segments' meterset."""
    bl, D, x, machine, seq = sequenced
    mu = np.array([s.total_mu for b in seq.beams for s in b.segments])
    leaky = MLCParameters(transmission=T, interleaf_leakage=T)
    x0 = (
        segment_beamlet_matrix(seq.beams, bl, beam_indices=seq.beam_indices, mlc_parameters=leaky)
        @ mu
    )
    last = (seq.beams, seq.beam_indices, machine, x, x0)
    model, change = meterset_dose(D, bl, T, float(x.mean()), last)
    tau, beam_mu = transmission_fluence(bl, seq.beams, seq.beam_indices, machine, T)
    x_open = np.clip(x0 - tau, 0.0, None)
    d0 = np.asarray(D @ x0.astype(np.float32), dtype=np.float64)
    model_dose = np.asarray(D @ x_open.astype(np.float32), dtype=np.float64) + model.dose(x_open)
    np.testing.assert_allclose(model_dose + change, d0, rtol=1e-5, atol=1e-5 * d0.max())
    np.testing.assert_allclose(model.meterset(x), beam_mu, rtol=1e-9)


def test_coarse_cshape_plan_with_the_model():
    """The coarse C-shape planned with and without the model: the model's plan needs less
    MU and its optimiser's dose (beamlets, meterset part and correction) predicts the
    delivered core dose of the corrected pass better."""
    patient = rtplan.phantoms.make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    errors, mu = {}, {}
    for on in (False, True):
        protocol = load_protocol("tg119_cshape").with_overrides(
            dose_grid_mm=8.0, n_beams=5, max_iterations=60, transmission_model=on
        )
        ctx = _plan._Context(
            patient, protocol, "numpy", None, False, {}, _plan.resolve_beam_model(None)
        )
        for stage in ("structures", "beams", "dose", "optimise", "sequence", "segments"):
            getattr(_plan, f"stage_{stage}")(ctx)
        ctx.dose_offset = _plan.dose_correction(
            ctx.matrix, ctx.matrix_rows, ctx.segment_weights.beamlet_fluence_mu, ctx.dose
        )
        _plan.stage_optimise(ctx)
        offset = ctx.optimiser_offset  # with the model: the correction changed to fit it
        predicted = np.asarray(ctx.matrix @ ctx.fluence.astype(np.float32), np.float64) + offset
        if on:
            predicted += ctx.meterset_dose.dose(ctx.fluence)
        _plan.stage_sequence(ctx)
        _plan.stage_segments(ctx)
        core = np.flatnonzero(ctx.occupancy["Core"].ravel()[ctx.matrix_rows] > 0)
        delivered = np.asarray(ctx.dose, np.float64).ravel()[ctx.matrix_rows[core]]
        errors[on] = abs(float(predicted[core].mean() - delivered.mean()))
        mu[on] = ctx.plan.total_mu
    assert errors[True] < errors[False]
    assert mu[True] < mu[False]
