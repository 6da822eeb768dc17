"""Sequencing a whole plan (one fluence map per beam).

The fluence vector ``x`` (MU per beamlet, total over all fractions) lives on the columns
of the influence matrix; :class:`dose_engine.Beamlets` maps it to one 2-D map per beam
(rows = leaf pairs along BLD +y, columns along +x).  :func:`sequence_plan` turns each map
into step-and-shoot segments; :func:`rtplan.dose.aperture_dose` computes the dose of the
resulting apertures, independently of the beamlet matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._internal.arguments import ARRAY, INTEGER, check_arguments, sequence_of
from ..delivery._deliverable import DeliverableBeam
from ..delivery._machine import Machine
from ._sweep import SequencingError, SequencingResult, sequence_fluence

if TYPE_CHECKING:  # pragma: no cover
    from dose_engine import Beam

__all__ = [
    "PlanSequencing",
    "beam_map_edges_mm",
    "sequence_plan",
]

logger = logging.getLogger("rtplan.sequencing")


@check_arguments(beamlets="dose_engine._beamlets:Beamlets", beam=INTEGER)
def beam_map_edges_mm(beamlets, beam: int) -> tuple[np.ndarray, np.ndarray]:
    """Column (x) and row (y) edges of beam ``beam``'s fluence map, mm (BLD, iso plane).

    Parameters
    ----------
    beamlets : dose_engine.Beamlets
    beam : int
        Beam index in the table.

    Returns
    -------
    x_edges_mm : (n_cols + 1,) ndarray of float
    y_edges_mm : (n_rows + 1,) ndarray of float

    Raises
    ------
    SequencingError
        The beam's beamlets do not all have the same size (not a regular map).
    """
    sl = beamlets.beam_slice(beam)
    w = np.unique(np.asarray(beamlets.width_mm[sl]))
    h = np.unique(np.asarray(beamlets.height_mm[sl]))
    if w.size != 1 or h.size != 1:
        raise SequencingError(
            f"Beam {beam}: beamlets of several sizes (widths {w.tolist()}, heights "
            f"{h.tolist()} mm); a fluence map needs one size per beam."
        )
    n_rows, n_cols = beamlets.fluence_map_shape(beam)
    x0, y0 = (float(v) for v in beamlets.map_origin_mm[beam])
    xe = x0 - w[0] / 2 + w[0] * np.arange(n_cols + 1)
    ye = y0 - h[0] / 2 + h[0] * np.arange(n_rows + 1)
    return xe, ye


@dataclass(frozen=True, eq=False)
class PlanSequencing:
    """Sequenced beams of a plan.

    Attributes
    ----------
    beams : tuple of DeliverableBeam
        One per beam with a non-zero quantised map (numbered from 1 in input order).
    results : tuple of SequencingResult
        One per input beam (empty ``segments`` when the beam's map quantises to zero).
    beam_indices : tuple of int
        Input beam index of each entry of ``beams``.
    """

    beams: tuple[DeliverableBeam, ...]
    results: tuple[SequencingResult, ...]
    beam_indices: tuple[int, ...]

    def __repr__(self) -> str:
        return (
            f"PlanSequencing(n_beams={len(self.beams)}, n_segments={self.n_segments}, "
            f"total_mu={self.total_mu:.4g})"
        )

    @property
    def n_segments(self) -> int:
        """Total number of segments over all beams."""
        return sum(len(b.segments) for b in self.beams)

    @property
    def total_mu(self) -> float:
        """Total meterset of all beams, MU (over all fractions)."""
        return float(sum(b.total_mu for b in self.beams))

    def quantized_fluence_mu(self, beamlets) -> np.ndarray:
        """The quantised fluence as a beamlet vector (MU per beamlet), what the segments give."""
        return beamlets.from_fluence_maps([r.quantized_fluence_mu for r in self.results])


@check_arguments(
    fluence_mu=ARRAY,
    beamlets="dose_engine._beamlets:Beamlets",
    beams=sequence_of("dose_engine._beam:Beam"),
    machine="rtplan.delivery._machine:Machine",
)
def sequence_plan(
    fluence_mu,
    beamlets,
    beams: Sequence[Beam],
    machine: Machine,
    *,
    n_levels: int = 10,
    uniform_levels: bool = False,
    jaw_fitting: str = "segment",
    interdigitation: bool | None = None,
    method: str = "auto",
    beam_names: Sequence[str] | None = None,
) -> PlanSequencing:
    """Sequence every beam of a plan from its optimal fluence.

    Parameters
    ----------
    fluence_mu : (n_beamlets,) array of float, MU
        Fluence per beamlet (influence-matrix columns), total over all fractions.
    beamlets : dose_engine.Beamlets
        The beamlet table of the influence matrix (beam order = ``beams``).
    beams : sequence of dose_engine.Beam
    machine : Machine
    n_levels : int, keyword-only
        Intensity levels per beam maximum (default 10).
    uniform_levels : bool, keyword-only
        If true, one level size for all beams: ``max(fluence) / n_levels``.
    jaw_fitting, interdigitation, method
        See :func:`~rtplan.sequencing.sequence_fluence`.
    beam_names : sequence of str, optional
        Default ``"G<gantry>"``.

    Returns
    -------
    PlanSequencing
    """
    beams = list(beams)
    x = np.asarray(fluence_mu, dtype=float).ravel()
    if x.shape != (len(beamlets),):
        raise SequencingError(
            f"`fluence_mu` has {x.size} values but the beamlet table has {len(beamlets)}."
        )
    if beamlets.n_beams != len(beams):
        raise SequencingError(
            f"The beamlet table covers {beamlets.n_beams} beams but {len(beams)} beams were given."
        )
    if beam_names is not None and len(beam_names) != len(beams):
        raise SequencingError(f"`beam_names` has {len(beam_names)} names for {len(beams)} beams.")
    maps = beamlets.to_fluence_maps(x)
    level = float(x.max()) / n_levels if uniform_levels and x.max() > 0 else None
    out, results, idx = [], [], []
    for b, (beam, fmap) in enumerate(zip(beams, maps, strict=True)):
        xe, ye = beam_map_edges_mm(beamlets, b)
        res = sequence_fluence(
            fmap,
            machine,
            x_edges_mm=xe,
            y_edges_mm=ye,
            n_levels=n_levels,
            level_mu=level,
            jaw_fitting=jaw_fitting,
            interdigitation=interdigitation,
            method=method,
        )
        results.append(res)
        if res.n_segments:
            name = beam_names[b] if beam_names is not None else f"G{beam.gantry_angle_deg:g}"
            out.append(res.to_beam(len(out) + 1, name, beam, machine))
            idx.append(b)
    seq = PlanSequencing(tuple(out), tuple(results), tuple(idx))
    logger.info("sequenced plan: %s", seq)
    return seq
