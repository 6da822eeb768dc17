r"""The MLC leaf transmission in the optimiser's dose, following each beam's meterset.

With ``[optimization] transmission_model = true`` (first-order solver, static beams) each
pass of the final-dose correction loop optimises with

.. math:: d(x) = D x + \sum_b U_{:,b}\, \kappa_b \tilde M_b(x) + c

(:class:`optimizers.MetersetDose`): ``M̃_b`` is the smoothed sweep meterset of beam
``b``'s fluence map (the largest sum of positive increments over its leaf rows, which
the sequencer delivers), ``U_{:,b}`` the dose of its leaf transmission per MU and
``κ_b`` the meterset delivered per MU of ``M̃_b``, all from the last plan's segments
(meterset ``m_s`` after the weight fit, jaws ``J_s``): the transmission fluence over each
beamlet ``τ = Σ_s t m_s |cell ∩ J_s| / |cell|`` (``t`` inside each segment's jaws,
whatever its leaves), ``U_{:,b} = D τ_b / MU_b`` and ``κ_b = MU_b / M̃_b(x*)`` with
``x*`` the fluence that was sequenced. The offset becomes
``c = d_final(x0) − D x̂0 − Σ_b U_{:,b} κ_b M̃_b(x̂0)`` with ``x̂0 = x0 − τ`` the open
fluence the segments deliver, so the model still equals the final dose at the last plan,
and its transmission follows the meterset a new fluence needs instead of staying at the
last plan's (the constant ``c = d_final(x0) − D x0`` alone leaves the transmission inside
the beamlet grid out of the optimiser's dose altogether: it is in ``D x0``, not in ``c``).
The first pass has no segments to calibrate on and optimises without it (docs/protocols.md,
"The MLC transmission in the optimiser", issue 12).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..delivery._segment_weights import cell_overlaps

__all__ = ["beam_maps", "meterset_dose", "transmission_fluence"]

#: Smoothing of the sweep-meterset surrogate, as fractions of the plan's MU scale (the
#: mean fluence per beamlet that gives the target its prescription): each positive
#: increment (``epsilon``) and the maximum over leaf rows (``temperature``).
EPSILON_FRACTION = 0.01
TEMPERATURE_FRACTION = 0.05


def beam_maps(beamlets: Any) -> list[np.ndarray]:
    """Each beam's fluence map of beamlet indices (rows = leaf pairs; -1: no beamlet).

    Parameters
    ----------
    beamlets : dose_engine.Beamlets

    Returns
    -------
    list of (n_rows, n_cols) ndarray of int64
    """
    # each cell's beamlet index + 1 scattered by the beamlet table's own map layout (0 where
    # there is no beamlet), exact in float64
    index_maps = beamlets.to_fluence_maps(np.arange(1, len(beamlets) + 1))
    return [m.astype(np.int64) - 1 for m in index_maps]


def transmission_fluence(
    beamlets: Any, beams: Any, beam_indices: Any, machine: Any, transmission: float
) -> tuple[np.ndarray, np.ndarray]:
    """The leaf-transmission fluence of sequenced beams over every beamlet, and each
    beam's meterset.

    Parameters
    ----------
    beamlets : dose_engine.Beamlets
    beams : sequence of rtplan.DeliverableBeam
        The sequenced (and re-weighted) beams.
    beam_indices : sequence of int
        The beamlet-table beam of each of ``beams``.
    machine : rtplan.Machine
        Its MLC's leaf range bounds the transmission along the leaves.
    transmission : float
        Leaf transmission, fraction of the open fluence.

    Returns
    -------
    tau_mu : (n_beamlets,) ndarray of float64, MU
        ``Σ_s t m_s |cell ∩ jaws_s| / |cell|`` per beamlet.
    beam_mu : (n_beams,) ndarray of float64, MU
        Meterset of each beamlet-table beam (0 for a beam not sequenced).
    """
    tau = np.zeros(len(beamlets))
    beam_mu = np.zeros(beamlets.n_beams)
    rx0, rx1 = machine.mlc.leaf_position_range_mm
    for dbeam, b in zip(beams, beam_indices, strict=True):
        cells = beamlets.rectangles_mm(int(b))
        area = (cells[:, 1] - cells[:, 0]) * (cells[:, 3] - cells[:, 2])
        sl = beamlets.beam_slice(int(b))
        for seg in dbeam.segments:
            bounds = seg.leaf_boundaries_mm
            jx = seg.jaws_mm.get("X", (rx0, rx1))
            jy = seg.jaws_mm.get("Y", (bounds[0], bounds[-1]))
            jaw_rect = np.array(
                [[max(rx0, jx[0]), min(rx1, jx[1]), max(bounds[0], jy[0]), min(bounds[-1], jy[1])]]
            )
            ox, oy = cell_overlaps(cells, jaw_rect)
            tau[sl] += transmission * seg.total_mu * ox[:, 0] * oy[:, 0] / area
            beam_mu[b] += seg.total_mu
    return tau, beam_mu


def meterset_dose(
    matrix: Any,
    beamlets: Any,
    transmission: float,
    mu_scale: float,
    last_plan: tuple[Any, Any, Any, np.ndarray, np.ndarray],
) -> tuple[Any, np.ndarray]:
    """The optimiser's transmission dose ``U κ∘M̃(x)`` and the offset's change.

    Parameters
    ----------
    matrix : scipy.sparse CSR matrix, (n_rows, n_beamlets), Gy per MU
        The optimiser's influence rows.
    beamlets : dose_engine.Beamlets
    transmission : float
        Leaf transmission ``t`` (fraction).
    mu_scale : float, MU
        The mean fluence per beamlet that gives the target its prescription: the unit of
        the surrogate's smoothing (:data:`EPSILON_FRACTION`, :data:`TEMPERATURE_FRACTION`).
    last_plan : tuple
        ``(beams, beam_indices, machine, x_star, x0)`` of the last plan: its sequenced and
        re-weighted beams, their beamlet-table beams, the machine, the fluence that was
        sequenced and the segments' delivered fluence over each beamlet
        (:attr:`rtplan.delivery.SegmentWeightResult.beamlet_fluence_mu`).

    Returns
    -------
    model : optimizers.MetersetDose
    offset_change : (n_rows,) ndarray of float64, Gy
        What to add to the correction ``d_final(x0) − D x0`` so that the model equals the
        final dose at the last plan (module docstring).
    """
    import optimizers as opt

    maps = beam_maps(beamlets)
    n_beams = len(maps)
    smoothing = {
        "epsilon_mu": EPSILON_FRACTION * mu_scale,
        "temperature_mu": TEMPERATURE_FRACTION * mu_scale,
    }
    beams, beam_indices, machine, x_star, x0 = last_plan
    tau, beam_mu = transmission_fluence(beamlets, beams, beam_indices, machine, transmission)
    per_mu = np.divide(tau, beam_mu[beamlets.beam_index], out=np.zeros_like(tau), where=tau > 0)
    indicator = np.zeros((matrix.shape[1], n_beams), dtype=matrix.dtype)
    indicator[np.arange(matrix.shape[1]), beamlets.beam_index] = per_mu
    columns = np.asarray(matrix @ indicator, dtype=np.float64)
    uncalibrated = opt.MetersetDose(maps, columns, matrix.shape[1], **smoothing)
    surrogate = uncalibrated.surrogate(x_star)
    kappa = np.divide(beam_mu, surrogate, out=np.zeros(n_beams), where=surrogate > 0)
    model = opt.MetersetDose(maps, columns, matrix.shape[1], calibration=kappa, **smoothing)
    x_open = np.clip(np.asarray(x0, dtype=np.float64) - tau, 0.0, None)
    # d_final − D x̂0 − U κ M̃(x̂0) = (d_final − D x0) + D τ − U κ M̃(x̂0), D τ = U MU
    change = columns @ beam_mu - model.dose(x_open)
    change += np.asarray(matrix @ (x0 - tau - x_open).astype(matrix.dtype), dtype=np.float64)
    return model, change
