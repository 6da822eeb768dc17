"""Automatic protocol-driven planning, end to end: :func:`plan_patient`.

Each stage is a small function; :func:`plan_patient` runs them in order and records the
wall time of each:

1. ``structures`` – resolve protocol names to the patient's structures, build the dose
   grid (the CT grid resampled to the protocol's ``dose_grid_mm``, cropped to the body),
   rasterise occupancies on it and derive the helper structures;
2. ``beams`` – isocentre at the prescription target's centroid, the protocol's gantry
   angles, beamlets covering the targets;
3. ``dose`` – the beamlet influence matrix (Gy per MU, HDF5-cached) of the chosen beam
   model (the shipped 6 MV model unless ``beam_model`` names a commissioned one);
4. ``optimise`` – lexicographic optimisation of the levels built from the goals
   (:func:`rtplan.planning.build_levels`);
5. ``sequence`` – step-and-shoot leaf sequencing of each beam's fluence map;
6. ``segments`` – segment-weight re-optimisation and the final dose from the apertures;
7. ``correct`` – optimisation that ends on the final dose: re-optimise with
   ``d = D x + (d_final(x0) - D x0)``, sequence and re-compute the final dose, up to the
   protocol's ``final_dose_corrections`` times (:mod:`rtplan.planning._final_dose`);
8. ``evaluate`` – normalisation (optional), the goal table and the plan's
   deliverability (:func:`rtplan.delivery.check_deliverability`: delivery time, MU,
   complexity and machine limits of the beams as written).

:meth:`PlanResult.write` then writes ``RTPLAN.dcm``, ``RTDOSE.dcm``, ``plan.json`` and
``report.html`` into a folder atomically.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dose_engine import BeamModel, Grid, HUTable

from .._internal.arguments import require_instance
from .._internal.atomic import atomic_directory, check_cache_dir, refuse_existing
from ..delivery._arc import ArcBeam
from ..delivery._deliverability import Deliverability, check_deliverability
from ..delivery._deliverable import DeliverablePlan
from ..delivery._leaf_refinement import dose_fit_objective, refine_leaf_positions
from ..delivery._machine import load_machine
from ..delivery._segment_weights import fit_voxels, reoptimize_segment_weights
from ..dose._aperture import resolve_mlc_parameters
from ..dose._models import beam_model_key, key_label, shipped_beam_models
from ..dose._plan_dose import (
    ALGORITHM_LABELS,
    DOSE_QUANTITY,
    compute_plan_dose,
    require_ct_volume,
    require_model_sad,
    resolve_beam_model,
    resolve_density_table,
)
from ..errors import InputError, ProtocolError, StructureError
from ..evaluation import evaluate_goals
from ..io import has_generated_structures, write_rtdose, write_rtplan, write_structure_set
from ..patient._patient import Patient
from ..protocols import Protocol, apply_derived
from ..report import software_versions, write_plan_json, write_report
from ..safety import (
    IMPLICIT_LABEL,
    SafetyWarning,
    convergence_warning,
    ct_calibration_warnings,
    implicit_goals,
    normalization_warning,
    plan_warnings,
    synthetic_model_warnings,
)
from ..sequencing import sequence_plan
from ..structures import BODY_OUTLINE_NAME, DerivedStructure, body_grid, body_structure
from ._custom_check import custom_term_warnings
from ._dask import dask_client
from ._final_algorithm import (
    FinalAlgorithmChoice,
    choose_final_algorithm,
    heterogeneity_volumes_cc,
    require_ccc_commissioning,
)
from ._final_dose import correction_record, dose_correction, goals_settled
from ._helper_structures import (
    HelperStructure,
    build_helper_structures,
    distance_outside_mm,
    nto_helpers,
)
from ._levels import build_levels, hotspot_cap_gy, smoothness_pairs, volume_pct
from ._options import PlanOptions, options_from_keywords
from ._transmission import meterset_dose
from ._vmat import arc_layouts, refine_arc_mu, sequence_arcs

__all__ = ["DERIVED_RTSTRUCT_FILE", "PlanResult", "plan_patient", "PLAN_FILES"]

logger = logging.getLogger("rtplan.planning")

#: Files written by :meth:`PlanResult.write`.
PLAN_FILES = ("RTPLAN.dcm", "RTDOSE.dcm", "plan.json", "report.html")
#: Also written when the plan has derived structures or a body outline made by rtplan: the
#: patient's ROIs plus those, as a new RT Structure Set.
DERIVED_RTSTRUCT_FILE = "RS_derived.dcm"

#: Short machine names accepted in protocols, mapped to the shipped machine models.
MACHINE_ALIASES = {
    "varian_120": "VarianMLC120",
    "varian": "VarianMLC120",
    "agility": "AgilityMLC160",
    "elekta_agility": "AgilityMLC160",
}

#: Helper structure of the body (the external contour, else the voxels above -500 HU):
#: the global hot-spot term reads it, and the hot-spot goal without an external contour.
BODY_HELPER = "zBody"

#: Helper structure of the correction loop (:func:`stage_correct`): the voxels outside the
#: targets whose final dose exceeded the optimiser's global hot-spot level
#: (:func:`rtplan.planning._levels.hotspot_cap_gy`) in a pass, each an optimiser row with
#: that overdose term, so the next loop sees and pushes down hot spots the sampled rows
#: miss (a chest wall 122 mm from a lung tumour, under the collapsed cone).
HOTSPOT_HELPER = "zHotSpot"

#: At most this many voxels join :data:`HOTSPOT_HELPER` over all loops, the hottest first
#: (a bound on the rows added: 10,000 rows of a few hundred entries each, tens of MB).
HOTSPOT_MAX_VOXELS = 10_000

STAGES = (
    "structures",
    "beams",
    "dose",
    "optimise",
    "sequence",
    "segments",
    "correct",
    "evaluate",
)


# --------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class PlanResult:
    """Everything :func:`plan_patient` produced.

    Attributes
    ----------
    patient : rtplan.Patient
    protocol : rtplan.protocols.Protocol
    mapping : dict of str to str
        Protocol structure name → patient structure name.
    dose_grid : dose_engine.Grid
    dose_gy : (nz, ny, nx) ndarray of float32, Gy
        Final total dose from the deliverable apertures (after normalisation).
    goal_table : rtplan.evaluation.GoalTable
        Goals on the final dose, on patient structure names.
    plan : rtplan.DeliverablePlan
        Beams, segments and MU; its ``total_mu`` and segment ``total_mu`` are summed over
        all fractions (see :attr:`mu_per_fraction` and :attr:`total_mu_all_fractions`).
    fluence_mu : (n_beamlets,) ndarray of float64, MU
        Optimised fluence (total over all fractions).
    optimization : optimizers.LexicographicResult
    normalization : float
        Factor applied to the segment MU and the dose (1 when normalisation is off).
    timings : dict of str to float, s
        Wall time per stage, in run order.
    helper_volumes_cc : dict of str to float, cm³
    beam_summaries : list of dict
        Per beam: name, gantry/collimator/couch angles, MU per fraction, segments.
    beam_model : dose_engine.BeamModel or None
        The beam model every dose of the plan was computed with (recorded in plan.json).
    warnings : tuple of rtplan.safety.SafetyWarning
        The safety layer's warnings (capped normalisation, beam balance, failed implicit
        goals), in the words printed by the CLI and written to plan.json and the report.
    normalization_record : dict or None
        ``factor``, ``needed``, ``cap_pct``, ``goal`` and the goal's ``value_before`` and
        ``value_after`` normalisation.
    density_table : dose_engine.HUTable or None
        The CT-to-density table of every dose (recorded in plan.json and the report);
        ``None``: the shipped one.
    corrections : tuple of dict
        The final-dose correction loops (protocol ``final_dose_corrections``): loop 0 is
        the uncorrected plan, then one entry per re-optimisation, each with the goals'
        values on the final dose before normalisation (``goals``, ``goals_met``), the
        final dose's change in the targets (``target_max_abs_change_gy``,
        ``target_mean_abs_change_gy``) and the correction there
        (``target_max_abs_correction_gy``, ``target_mean_abs_correction_gy``) and, for
        the loops, the hot-spot voxels optimised as rows of their own
        (``hotspot_voxels``, :data:`HOTSPOT_HELPER`); empty when the corrections are off.

        .. versionadded:: 0.1.0
    final_algorithm : rtplan.planning.FinalAlgorithmChoice or None
        The engine of :attr:`dose_gy` (``"ccc"`` or ``"pencil_beam"``), what was asked for
        (protocol ``[dose] final_algorithm``, ``PlanOptions.final_dose``) and why
        (recorded in plan.json, the report and the RT-DOSE).

        .. versionadded:: 0.1.0
    deliverability : rtplan.delivery.Deliverability or None
        :func:`rtplan.delivery.check_deliverability` of :attr:`plan` (per fraction: MU,
        delivery-time estimate, maximum leaf speed, modulation complexity score, mean
        aperture area per beam, and the machine limits it breaks, each also a
        ``deliverability`` warning); written to plan.json and the report.

        .. versionadded:: 0.1.0
    arc_refinement : dict or None
        VMAT plans: the record of the arcs' MU refinement (``mu_before`` and ``mu_after``
        per fraction, ``objective_before`` and ``objective_after`` of the fit, Gy², the
        intervals fitted and those on a bound; docs/vmat.md); ``None`` for static beams.

        .. versionadded:: 0.1.0
    leaf_refinement : dict or None
        Static beams with ``[optimization] leaf_refinement``: the record of the kept
        pass's leaf-position refinement (:meth:`rtplan.delivery.LeafRefinementResult.as_record`:
        ``objective_before`` / ``objective_after`` of the segment stage's dose fit, Gy²,
        ``mu_before`` / ``mu_after`` per fraction, ``leaf_travel_mm`` mean and max,
        iterations); ``None`` when it is off.

        .. versionadded:: 0.1.0
    """

    patient: Any
    protocol: Any
    mapping: dict
    dose_grid: Grid
    dose_gy: np.ndarray
    goal_table: Any
    plan: Any
    fluence_mu: np.ndarray
    optimization: Any
    normalization: float
    timings: dict = field(default_factory=dict)
    helper_volumes_cc: dict = field(default_factory=dict)
    beam_summaries: list = field(default_factory=list)
    beam_model: BeamModel | None = None
    warnings: tuple = ()
    normalization_record: dict | None = None
    density_table: HUTable | None = None
    corrections: tuple = ()
    final_algorithm: FinalAlgorithmChoice | None = None
    deliverability: Deliverability | None = None
    arc_refinement: dict | None = None
    leaf_refinement: dict | None = None

    @property
    def dose_algorithm(self) -> str:
        """``"ccc"`` or ``"pencil_beam"``: the engine of :attr:`dose_gy`."""
        return "pencil_beam" if self.final_algorithm is None else self.final_algorithm.algorithm

    # ------------------------------------------------------------ summaries
    @property
    def all_goals_met(self) -> bool:
        """True when every goal passed (or met its acceptable level)."""
        return bool(self.goal_table.all_passed)

    @property
    def optimizer_converged(self) -> bool:
        """Every optimisation level converged (status ``optimal``). A solve that ran out of
        work is not an error: when it left a hard goal violated, :attr:`warnings` holds a
        ``solver_not_converged`` warning; contradictory hard goals raise instead."""
        return bool(self.optimization.success)

    @property
    def needs_attention(self) -> bool:
        """True when a goal failed or the safety layer warned (``rtplan plan`` exit 1)."""
        return not self.all_goals_met or bool(self.warnings)

    @property
    def dvhs(self):
        """DVHs of the goal structures (:class:`rtplan.evaluation.DVHCollection`)."""
        return self.goal_table.dvhs

    @property
    def mu_per_fraction(self) -> float:
        """Monitor units of one fraction, all beams (the sum of the RT-PLAN's
        (300A,0086) *BeamMeterset*), MU: the figure ``repr``, :meth:`summary`, the CLI,
        plan.json and the report show."""
        return self.plan.total_mu / self.plan.fractions

    @property
    def total_mu_all_fractions(self) -> float:
        """Monitor units summed over all fractions (``plan.total_mu``), MU."""
        return float(self.plan.total_mu)

    @property
    def total_time_s(self) -> float:
        """Sum of the stage timings, s."""
        return float(sum(self.timings.values()))

    def summary(self) -> str:
        """A few lines: goals met, total MU, time, then the goal table."""
        head = (
            f"{self.protocol.name}: {self.goal_table.summary_line()}; "
            f"{self.mu_per_fraction:.0f} MU per fraction in {_delivery_units(self.plan)}, "
            f"planned in {self.total_time_s:.1f} s"
        )
        lines = [f"WARNING: {w.message}" for w in self.warnings]
        if self.deliverability is not None:
            lines.append(_deliverability_line(self.deliverability))
        rec = self.normalization_record
        if rec is not None:
            lines.append(
                f"normalisation x {rec['factor']:.4f} (cap +/-{rec['cap_pct']:g} %): "
                f"{rec['goal']} {rec['value_before']:.4g} before, {rec['value_after']:.4g} after"
            )
        return "\n".join([head, *lines, repr(self.goal_table)])

    def __repr__(self) -> str:
        return (
            f"PlanResult(protocol={self.protocol.name!r}, goals_met="
            f"{len(self.goal_table) - self.goal_table.n_failed}/{len(self.goal_table)}, "
            f"mu_per_fraction={self.mu_per_fraction:.4g}, time_s={self.total_time_s:.1f})"
        )

    def _repr_html_(self) -> str:
        timing_rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.2f} s</td></tr>" for k, v in self.timings.items()
        )
        beam_rows = "".join(
            f"<tr><td>{html.escape(b['name'])}</td><td>{b['gantry_angle_deg']:g}°</td>"
            f"<td>{b['mu']:.1f}</td><td>{b['segments']}</td></tr>"
            for b in self.beam_summaries
        )
        rx = self.protocol.prescription
        return (
            f"<div class='rtplan-plan'><h4>{html.escape(self.protocol.name)}</h4>"
            f"<p>{rx.total_dose_gy:g} Gy in {rx.fractions} fractions to "
            f"{html.escape(self.mapping.get(rx.target, rx.target))}; normalisation "
            f"{self.normalization:.3f}; {self.mu_per_fraction:.1f} MU per fraction; "
            f"{self.total_time_s:.1f} s</p>"
            + "".join(
                f"<p style='color:#b00000'><b>WARNING: {html.escape(w.message)}</b></p>"
                for w in self.warnings
            )
            + f"{self.goal_table._repr_html_()}"
            "<table><thead><tr><th>Beam</th><th>Gantry</th><th>MU per fraction</th>"
            f"<th>Segments</th></tr></thead><tbody>{beam_rows}</tbody></table>"
            "<table><thead><tr><th>Stage</th><th>Time</th></tr></thead>"
            f"<tbody>{timing_rows}</tbody></table></div>"
        )

    # ---------------------------------------------------------------- output
    def plan_summary(self) -> dict[str, Any]:
        """The ``plan_summary`` mapping given to the report and plan.json writers."""
        rx = self.protocol.prescription
        opt = self.optimization
        return {
            "label": _plan_label(self.protocol),
            "protocol": self.protocol.name,
            "prescription_gy": rx.total_dose_gy,
            "fractions": rx.fractions,
            "target": self.mapping.get(rx.target, rx.target),
            "machine": self.plan.beams[0].machine.name,
            "beam_model": _beam_model_record(self.beam_model),
            "dose_algorithm": _dose_algorithm_record(self.final_algorithm),
            "influence_algorithm": self.protocol.influence_algorithm,
            "hu_table": _hu_table_record(resolve_density_table(self.density_table)),
            "mlc_parameters": _mlc_record(self.plan.beams[0].machine, self.beam_model),
            "beams": self.beam_summaries,
            "solver": self.protocol.optimization.solver,
            "normalization": self.normalization,
            "normalization_detail": self.normalization_record,
            "warnings": [w.as_dict() for w in self.warnings],
            "deliverability": (
                None if self.deliverability is None else self.deliverability.to_dict()
            ),
            "technique": self.protocol.beams.technique,
            "arc_refinement": self.arc_refinement,
            "leaf_refinement": self.leaf_refinement,
            "target_levels_gy": {
                self.mapping.get(t, t): lv for t, lv in self.protocol.target_levels_gy.items()
            },
            "structure_mapping": dict(self.mapping),
            "helper_structures_cc": dict(self.helper_volumes_cc),
            "optimization_levels": _level_records(opt),
            "optimization_status": _status_record(opt),
            "corrections": list(self.corrections),
            "dose_grid": {
                "shape_zyx": list(self.dose_grid.shape),
                "origin_mm": list(self.dose_grid.origin_mm),
                "spacing_mm": list(self.dose_grid.spacing_mm),
            },
        }

    def write(
        self,
        out_dir: str | os.PathLike,
        *,
        overwrite: bool = False,
        progress: bool = False,
        isodose_pct: Sequence[float] | None = None,
    ) -> Path:
        """Write RTPLAN.dcm, RTDOSE.dcm, plan.json and report.html into ``out_dir``.

        ``isodose_pct`` sets the report's isodose lines (% of the highest prescription
        level; default :data:`rtplan.report.DEFAULT_ISODOSE_PCT`, 50/80/95/100/107).

        When the plan derived structures (protocol ``[[structures.derived]]``,
        :meth:`rtplan.Patient.derive`) or found the body outline in the CT, ``RS_derived.dcm``
        is written too (:func:`rtplan.io.write_structure_set`: the original ROIs
        unchanged plus the new ones, a new SOP instance on the same frame of reference).

        The folder is built beside ``out_dir`` and renamed into place only when all
        files are complete; an existing ``out_dir`` is refused unless ``overwrite``.

        Raises
        ------
        rtplan.errors.OutputExistsError
            ``out_dir`` exists and ``overwrite`` is false.
        """
        t0 = time.perf_counter()
        summary = self.plan_summary()
        patient = self.patient
        rs_uid = None
        if has_generated_structures(patient):  # the plan refers to the new structure set
            from pydicom.uid import generate_uid

            rs_uid = generate_uid()
            patient = replace(patient, structure_set_uid=rs_uid)
        with atomic_directory(out_dir, overwrite=overwrite) as tmp:
            if rs_uid is not None:
                write_structure_set(tmp / DERIVED_RTSTRUCT_FILE, patient, sop_instance_uid=rs_uid)
            ds = write_rtplan(
                tmp / "RTPLAN.dcm",
                self.plan,
                patient,
                label=summary["label"],
                plan_name=self.protocol.name[:64],
            )
            label = ALGORITHM_LABELS[self.dose_algorithm]
            write_rtdose(
                tmp / "RTDOSE.dcm",
                self.dose_gy,
                self.dose_grid,
                patient,
                plan_sop_instance_uid=str(ds.SOPInstanceUID),
                series_description=f"rtplan plan dose ({label})",
                # the algorithm first: LO holds 64 characters, a long protocol name is cut
                comment=f"{label}, {DOSE_QUANTITY}; rtplan {self.protocol.name}",
                tissue_heterogeneity_correction="IMAGE",  # both engines use the CT densities
            )
            summary["uids"] = {"rt_plan_sop_instance_uid": str(ds.SOPInstanceUID)}
            if rs_uid is not None:
                summary["uids"]["rt_struct_sop_instance_uid"] = rs_uid
                summary["derived_structures"] = _derived_records(patient)
            timings = dict(self.timings)
            timings["export"] = time.perf_counter() - t0
            write_plan_json(
                tmp / "plan.json",
                goal_table=self.goal_table,
                timings=timings,
                plan_summary=summary,
                patient=patient,
            )
            write_report(
                tmp / "report.html",
                patient=patient,
                dose_gy=self.dose_gy,
                dose_grid=self.dose_grid,
                goal_table=self.goal_table,
                timings=timings,
                plan_summary=summary,
                **({} if isodose_pct is None else {"isodose_pct": isodose_pct}),
            )
        logger.info("plan written to %s", out_dir)
        return Path(out_dir)


def _delivery_units(plan) -> str:
    """``"27 segments"`` (static beams) or ``"2 arcs (362 control points)"``."""
    arcs = [b for b in plan.beams if isinstance(b, ArcBeam)]
    if arcs:
        n_cp = sum(len(b.control_points) for b in arcs)
        return f"{len(arcs)} arc(s) ({n_cp} control points)"
    return f"{sum(len(b.segments) for b in plan.beams)} segments"


def _beam_summary(b, fractions: int) -> dict[str, Any]:
    """One beam of :attr:`PlanResult.beam_summaries` (arcs: also their direction, last
    gantry angle and control points)."""
    out = {
        "name": b.name,
        "number": b.number,
        "gantry_angle_deg": float(b.beam.gantry_angle_deg),
        "collimator_angle_deg": float(b.beam.collimator_angle_deg),
        "couch_angle_deg": float(b.beam.couch_angle_deg),
        "mu": b.total_mu / fractions,
        "segments": len(b.segments),
    }
    if isinstance(b, ArcBeam):
        out["rotation_direction"] = b.rotation_direction
        out["stop_gantry_angle_deg"] = float(b.control_points[-1].gantry_angle_deg)
        out["control_points"] = len(b.control_points)
    return out


def _deliverability_line(d: Deliverability) -> str:
    """One line of :meth:`PlanResult.summary`: MU, delivery time, MCS, limits."""
    time_s = "not estimated" if d.delivery_time_s is None else f"~{d.delivery_time_s:.0f} s"
    limits = (
        "every machine limit holds" if d.ok else f"{len(d.violations)} machine-limit violation(s)"
    )
    return (
        f"deliverability: {d.total_mu:.1f} MU per fraction, delivery {time_s} (beam on "
        f"and leaf travel, beam changes excluded), MCS {d.mcs:.3f}; {limits}"
    )


def _derived_records(patient) -> dict[str, str]:
    """Name → definition of the structures rtplan made (for plan.json)."""
    out = {}
    for name, s in patient.structures.items():
        if isinstance(s, DerivedStructure):
            out[name] = repr(s.expression)
        elif name == BODY_OUTLINE_NAME:
            out[name] = "body outline from the CT (rtplan.structures.body_outline)"
    return out


def _plan_label(protocol) -> str:
    label = "".join(c for c in protocol.name if c.isalnum() or c in " -_")
    return (label.strip() or "rtplan")[:16]


def _beam_model_record(model: BeamModel | None) -> dict[str, Any] | None:
    """Name, file, SAD (mm), fingerprint (sha256 of its parameters) and the beam it is for
    (``"6X"``, nominal energy in MV and fluence mode) of the beam model every beam used."""
    if model is None:
        return None
    energy, mode = beam_model_key(model)
    return {
        "name": model.name,
        "file": Path(model.path).name,  # the name only: no folder of the machine it ran on
        "sad_mm": model.sad_mm,
        "fingerprint": model.fingerprint(),
        "beam": key_label((energy, mode)),
        "energy_mv": energy,
        "fluence_mode": mode,
    }


#: What computes the final dose of a plan, by algorithm (the influence matrix of the
#: optimisation is always the pencil beam's).
DOSE_ALGORITHM_DESCRIPTIONS = {
    "pencil_beam": (
        "analytically integrated two-Gaussian photon pencil-beam kernel on ray-traced "
        "radiological depth (Bortfeld et al. 1993, doi:10.1118/1.597070; Ahnesjo et al. "
        "1992, doi:10.1118/1.596856); final dose from the MLC and jaw apertures"
    ),
    "ccc": (
        "collapsed-cone convolution/superposition (Ahnesjo 1989, doi:10.1118/1.596360): "
        "polyenergetic TERMA of the MLC and jaw apertures, density-scaled point kernels "
        "along 72 cones (docs/dose_algorithms.md); optimised on pencil-beam influence "
        "matrices corrected to this dose"
    ),
}


def _dose_algorithm_record(choice: FinalAlgorithmChoice | None) -> dict[str, Any]:
    """The final dose's algorithm for plan.json: ``name``, ``algorithm`` (``"ccc"`` or
    ``"pencil_beam"``), ``engine``, ``version``, ``description``, ``dose_quantity`` (dose
    to water), ``tissue_heterogeneity_correction`` (as in the RT-DOSE) and ``selection``
    (:meth:`FinalAlgorithmChoice.as_dict`)."""
    algorithm = "pencil_beam" if choice is None else choice.algorithm
    return {
        "name": ALGORITHM_LABELS[algorithm],
        "algorithm": algorithm,
        "engine": "dose_engine",
        "version": software_versions()["rtplan"],
        "description": DOSE_ALGORITHM_DESCRIPTIONS[algorithm],
        "dose_quantity": DOSE_QUANTITY,
        "tissue_heterogeneity_correction": "IMAGE",
        "selection": None if choice is None else choice.as_dict(),
    }


def _mlc_record(machine, model: BeamModel | None) -> dict[str, Any]:
    """The MLC and jaw parameters of every aperture dose of the plan: the machine's
    ``[dosimetry]`` and the keys the commissioned beam model replaced (no file paths)."""
    p = resolve_mlc_parameters(machine, model)
    commissioned = {} if model is None else dict(model.parameters.get("mlc") or {})
    commissioned.pop("applied_to_dose", None)
    return {
        "transmission": p.transmission,
        "dosimetric_leaf_gap_mm": p.dosimetric_leaf_gap_mm,
        "interleaf_leakage": p.leakage,
        "tongue_and_groove_mm": p.tongue_and_groove_mm,
        "jaw_transmission": p.jaw_transmission,
        "source_to_mlc_mm": p.source_to_mlc_mm,
        "source_to_x_jaws_mm": p.source_to_x_jaws_mm,
        "source_to_y_jaws_mm": p.source_to_y_jaws_mm,
        "machine": machine.name,
        "from_beam_model": sorted(commissioned),
    }


def _hu_table_record(table: HUTable) -> dict[str, Any]:
    """The CT-to-density table every dose of a plan used (its file name: no folder of the
    machine is written)."""
    return {
        "file": Path(table.path).name,
        "source": table.source,
        "quantity": table.quantity,
        "hu": [float(v) for v in table.hu],
        "relative_electron_density": [float(v) for v in table.density],
    }


def _level_records(opt) -> list[dict[str, Any]]:
    out = []
    for lv in getattr(opt, "levels", ()) or ():
        out.append(
            {
                "level": int(lv.level),
                "terms": list(lv.labels),
                "achieved": float(lv.achieved),
                "bound": float(lv.bound),
                "final": float(lv.final),
                "status": str(lv.result.status),
                "message": lv.result.message,
                "solve_time_s": float(lv.result.solve_time_s),
            }
        )
    return out


def _status_record(opt) -> dict[str, Any] | None:
    """The optimiser's outcome for plan.json: ``converged`` (every level optimal),
    ``status`` and ``message`` of the last level, its ``max_violation`` (relative, of every
    hard constraint and level bound) and the feasibility ``certificate`` when hard
    constraints were left violated."""
    final = getattr(opt, "final", None)
    if final is None:
        return None
    return {
        "converged": bool(opt.success),
        "status": str(final.status),
        "message": final.message,
        "max_violation": final.extras.get("max_violation"),
        "certificate": final.extras.get("certificate"),
    }


# --------------------------------------------------------------------------- stages
@dataclass
class _Context:
    """Mutable state passed from stage to stage (internal)."""

    patient: Any
    protocol: Any
    backend: str
    cache_dir: Path | None
    progress: bool
    overrides: dict
    beam_model: BeamModel
    density_table: HUTable | None = None  # None: the shipped table
    mapping: dict = field(default_factory=dict)
    roles: dict = field(default_factory=dict)
    dose_grid: Grid | None = None
    occupancy: dict = field(default_factory=dict)
    helpers: dict = field(default_factory=dict)
    effective: dict = field(default_factory=dict)
    beams: list = field(default_factory=list)
    machine: Any = None
    beamlets: Any = None
    matrix: Any = None  # influence rows of the problem's voxels only (``matrix_rows``)
    # their flat dose-grid indices: ascending, then the correction loop's hot-spot rows
    matrix_rows: np.ndarray | None = None
    levels: list = field(default_factory=list)
    optimization: Any = None
    fluence: np.ndarray | None = None
    plan: Any = None
    dose: np.ndarray | None = None
    normalization: float = 1.0
    goal_table: Any = None
    body_occupancy: np.ndarray | None = None
    normalization_record: dict | None = None
    normalization_warning: Any = None
    solver_warning: Any = None
    beam_indices: list = field(default_factory=list)
    segment_weights: Any = None
    custom_terms: dict = field(default_factory=dict)  # priority -> optimizers terms
    # the plan's final dose (Gy, on the dose grid) from ctx.plan: see aperture_dose
    final_dose: Callable[[_Context], np.ndarray] | None = None
    dose_offset: np.ndarray | None = None  # Gy per row of ``matrix``: the correction c
    # each beam's ray-traced final-dose voxels, shared by the passes of the correction loop
    points_cache: dict = field(default_factory=dict)
    corrections: list = field(default_factory=list)  # records of the correction loops
    calibration_warnings: list = field(default_factory=list)  # CT vs the HU table
    final_algorithm: str = "pencil_beam"  # engine of aperture_dose: "ccc" or "pencil_beam"
    algorithm_choice: FinalAlgorithmChoice | None = None
    algorithm_warnings: list = field(default_factory=list)  # ccc fallback, pencil beam in lung
    deliverability: Deliverability | None = None  # of ctx.plan as written (stage_evaluate)
    arcs: list = field(default_factory=list)  # VMAT: ArcLayout of each arc (_vmat.py)
    arc_record: dict | None = None  # VMAT: the MU refinement's record
    leaf_refinement: dict | None = None  # static beams: the leaf refinement's record
    meterset_dose: Any = None  # transmission_model: the last optimisation's MetersetDose
    optimiser_offset: np.ndarray | None = None  # the offset c the last optimisation saw
    scheduler: str | None = None  # VMAT: Dask scheduler of the per-angle work (PlanOptions)


def _occupancy_fn(structure) -> Callable[[Grid], np.ndarray]:
    return lambda grid: structure.occupancy(grid)


def _with_body(patient):
    """``(patient, body)``: the patient's EXTERNAL ROI, else the body outline found in the
    CT (:func:`rtplan.structures.body_outline`), which is then added to the patient (and
    so written with the derived structures and usable by them)."""
    body = body_structure(patient)
    if any(s is body for s in patient.structures.values()):
        return patient, body
    logger.info("no EXTERNAL structure: using the body outline %r from the CT", body.name)
    return replace(patient, structures={**patient.structures, body.name: body}), body


def stage_structures(ctx: _Context) -> None:
    """Resolve names, build the dose grid, rasterise, derive helper structures."""
    ctx.patient, body_struct = _with_body(ctx.patient)
    ctx.patient = apply_derived(ctx.patient, ctx.protocol, overrides=ctx.overrides)
    patient, protocol = ctx.patient, ctx.protocol
    ctx.mapping = protocol.resolve_structures(list(patient.structures), overrides=ctx.overrides)
    ctx.roles = {name: protocol.structure(name).role for name in ctx.mapping}
    ext = protocol.external
    if ext is not None and ext in ctx.mapping:
        body_struct = patient.structures[ctx.mapping[ext]]
    elif ext is not None:  # an optional external the names did not find: the body
        ctx.mapping[ext] = body_struct.name
        ctx.roles[ext] = "external"
    grid = body_grid(patient.ct.grid, body_struct, protocol.dose_grid_mm)
    ctx.dose_grid = grid
    for name, patient_name in ctx.mapping.items():
        occ = patient.structures[patient_name].occupancy(grid)
        if ctx.roles[name] != "external" and not np.any(occ >= 0.5) and not np.any(occ > 0):
            raise StructureError(
                f"Structure '{patient_name}' (protocol '{name}') covers no voxel of the "
                f"{protocol.dose_grid_mm} mm dose grid; check its contours or use a finer grid."
            )
        ctx.occupancy[name] = occ.astype(np.float32)
    targets = [t for t in protocol.targets if t in ctx.mapping]
    if protocol.prescription.target not in ctx.mapping:  # pragma: no cover - resolve raises
        raise ProtocolError(f"Prescription target '{protocol.prescription.target}' not found.")
    oars = [n for n, r in ctx.roles.items() if r == "oar"]
    body_occ = body_struct.occupancy(grid)
    ctx.body_occupancy = body_occ
    hs = protocol.helpers
    fns = {n: _occupancy_fn(patient.structures[ctx.mapping[n]]) for n in (*targets, *oars)}
    helpers = build_helper_structures(
        fns,
        grid,
        targets=targets,
        oars=oars,
        body_occupancy=body_occ,
        ring=hs.ring,
        ring_inner_mm=hs.ring_inner_mm,
        ring_outer_mm=hs.ring_outer_mm,
        overlap=hs.overlap,
        normal_tissue=hs.normal_tissue,
        normal_tissue_margin_mm=hs.normal_tissue_margin_mm,
        normal_tissue_outer_mm=hs.normal_tissue_outer_mm or None,
        levels_gy=protocol.target_levels_gy,
        transition_margin_mm=(
            protocol.safety.transition_margin_mm if protocol.safety.implicit_target_limits else None
        ),
    )
    helpers.update(nto_helpers([fns[t] for t in targets], grid, body_occ, protocol.safety))
    if protocol.safety.hotspot_pct > 0 and body_occ is not None:
        occ = np.asarray(body_occ, dtype=np.float32)
        helpers[BODY_HELPER] = HelperStructure(BODY_HELPER, "body", occ, ("body",))
    ctx.helpers = helpers
    # Organs at risk are spared outside the targets; targets keep their full volume for
    # coverage (a cold overlap would otherwise lower D95 and the normalisation would make
    # the rest of the plan hot).
    for h in helpers.values():
        if h.kind == "oar_minus_target":
            src = h.sources[0]
            # several overlaps: keep the smallest remaining part (most voxels removed)
            prev = ctx.effective.get(src)
            if prev is None or helpers[prev].occupancy.sum() > h.occupancy.sum():
                ctx.effective[src] = h.name


def machine_and_beam_model(protocol, beam_model) -> tuple[Any, BeamModel]:
    """The protocol's machine and the beam model of its beams.

    Without ``beam_model`` the shipped model for the machine's nominal energy and fluence
    mode (:func:`rtplan.dose.shipped_beam_models`; a machine file with an energy no shipped
    model is for is refused).  With one, the beams take the model's energy and fluence mode
    (so the RT-PLAN states what the dose was computed for).

    Raises
    ------
    rtplan.errors.InputError
        The machine is unknown, or no shipped model is for its energy and fluence mode.
    """
    arr = protocol.beams
    machine = load_machine(MACHINE_ALIASES.get(arr.machine.lower(), arr.machine))
    if beam_model is None:
        what = f"machine {machine.name!r} ({machine.source or 'protocol'})"
        return machine, shipped_beam_models().select(
            machine.nominal_energy_mv, machine.fluence_mode, what=what
        )
    model = resolve_beam_model(beam_model)
    energy, mode = beam_model_key(model)
    return replace(machine, nominal_energy_mv=energy, fluence_mode=mode), model


def stage_beams(ctx: _Context) -> None:
    """Isocentre at the prescription target's centroid; beams and beamlets (for VMAT: a
    static beam at the centre of each sector of each arc, :func:`arc_layouts`).

    Refuses (:class:`rtplan.errors.InputError`) a beam model whose SAD differs from the
    protocol machine's.
    """
    from dose_engine import Beam, beamlets_for_target, isocenter_at_centroid

    protocol, grid = ctx.protocol, ctx.dose_grid
    arr = protocol.beams
    target_occ = ctx.occupancy[protocol.prescription.target]
    iso = isocenter_at_centroid(target_occ, grid)
    if ctx.machine is None:  # plan_patient chose it with the beam model
        ctx.machine = load_machine(MACHINE_ALIASES.get(arr.machine.lower(), arr.machine))
    require_model_sad(ctx.beam_model, ctx.machine.sad_mm, what=f"machine {ctx.machine.name!r}")
    if arr.technique == "vmat":  # static beams at the arcs' sector centres
        ctx.beams, ctx.arcs = arc_layouts(arr, ctx.machine, iso, ctx.patient.position)
    else:
        ctx.beams = [
            Beam(
                g,
                collimator_angle_deg=arr.collimator_angle_deg,
                couch_angle_deg=arr.couch_angle_deg,
                isocenter_mm=iso,
                sad_mm=ctx.machine.sad_mm,
                patient_position=ctx.patient.position,
            )
            for g in arr.gantry_angles_deg
        ]
    union = np.zeros(grid.shape, dtype=bool)
    for t in protocol.targets:
        if t in ctx.occupancy:
            union |= ctx.occupancy[t] > 0
    points = grid.index_to_point(np.argwhere(union))
    ctx.beamlets = beamlets_for_target(
        ctx.beams,
        points,
        beamlet_width_mm=arr.beamlet_width_mm,
        beamlet_height_mm=arr.beamlet_height_mm,
        margin_mm=arr.margin_mm,
    )


#: Influence-matrix settings for the rows of targets and organs at risk: a wide lateral
#: cut-off and a low threshold keep the scatter tails, so that the dose the optimiser sees
#: in a low-dose organ surrounded by target (the TG-119 C-shape core) matches the final
#: aperture dose.  Helper rows (ring, normal tissue) use the dose engine's defaults.
ACCURATE_CUTOFF_MM = 100.0
ACCURATE_THRESHOLD = 1e-4


def stage_dose(ctx: _Context) -> None:
    """The influence matrix (Gy per MU, of ``ctx.beam_model``) of every beamlet on the dose grid.

    Rows only where the optimisation looks (targets, organs, helpers), and only those rows
    are kept: ``ctx.matrix`` row ``k`` is dose-grid voxel ``ctx.matrix_rows[k]``
    (:func:`_matrix_rows` maps voxel indices), so the optimiser can use it without a copy
    of its rows.  The final dose is computed from the apertures on the body.  Target and
    organ rows are computed with :data:`ACCURATE_CUTOFF_MM` / :data:`ACCURATE_THRESHOLD`,
    in the same pass as the helper rows (one ray trace per beam, one matrix).  With the
    protocol's ``[dose] influence_algorithm = "ccc"`` every beamlet's column is its
    collapsed-cone dose instead (:func:`dose_engine.compute_ccc_influence_matrix`, not
    cached).
    """
    from dose_engine import hu_to_density

    ct = ctx.patient.ct
    density = hu_to_density(ct.array, ctx.density_table)
    ctx.calibration_warnings = ct_calibration_warnings(
        ct.array,
        ct.grid,
        resolve_density_table(ctx.density_table),
        ctx.dose_grid,
        ctx.body_occupancy,
        {n: o for n, o in ctx.occupancy.items() if ctx.roles.get(n) != "external"},
    )
    _choose_final_algorithm(ctx, density)
    n = ctx.dose_grid.voxel_count
    idx, _ = _problem_structures(ctx)
    helper_rows = np.zeros(n, dtype=bool)
    organ_rows = np.zeros(n, dtype=bool)
    for name, rows in idx.items():
        (helper_rows if name in ctx.helpers else organ_rows)[rows] = True
    helper_rows &= ~organ_rows
    ctx.matrix_rows = np.flatnonzero(organ_rows | helper_rows)
    ctx.matrix = _nonempty_rows(
        _influence_matrix(ctx, density, helper_rows, organ_rows), ctx.matrix_rows
    )


def _influence_matrix(ctx: _Context, density, helper_rows: np.ndarray, organ_rows: np.ndarray):
    """The influence matrix (Gy per MU, CSR, one row per dose-grid voxel, rows outside the
    two sets empty) of ``ctx``'s beamlets: ``organ_rows`` with :data:`ACCURATE_CUTOFF_MM` /
    :data:`ACCURATE_THRESHOLD`, ``helper_rows`` with the dose engine's defaults (flat
    ``(n_voxels,)`` bool); the protocol's ``influence_algorithm`` and the HDF5 cache as
    :func:`stage_dose` describes."""
    from dose_engine import compute_influence_matrix

    ct = ctx.patient.ct
    shape = ctx.dose_grid.shape
    common = dict(model=ctx.beam_model, backend=ctx.backend, progress=ctx.progress)
    if ctx.protocol.influence_algorithm == "ccc":  # per-beamlet collapsed cone, not cached
        from dose_engine import compute_ccc_influence_matrix

        return compute_ccc_influence_matrix(
            density,
            ct.grid,
            ctx.dose_grid,
            ctx.beams,
            ctx.beamlets,
            voxel_mask=(organ_rows | helper_rows).reshape(shape),
            **common,
        ).matrix
    if ctx.cache_dir is not None:  # HDF5 cache keyed by a content hash (dose_engine)
        from dose_engine import cached_influence_matrix

        ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        compute_influence_matrix = partial(cached_influence_matrix, cache_dir=ctx.cache_dir)
    return compute_influence_matrix(
        density,
        ct.grid,
        ctx.dose_grid,
        ctx.beams,
        ctx.beamlets,
        voxel_mask=helper_rows.reshape(shape),
        wide_mask=organ_rows.reshape(shape),
        wide_lateral_cutoff_mm=ACCURATE_CUTOFF_MM,
        wide_relative_threshold=ACCURATE_THRESHOLD,
        **common,
    ).matrix


def _choose_final_algorithm(ctx: _Context, density) -> None:
    """The final dose's engine from the protocol's ``final_algorithm`` and the body's lung
    and bone (:mod:`rtplan.planning._final_algorithm`), into ``ctx``."""
    low_cc, high_cc = heterogeneity_volumes_cc(
        density, ctx.patient.ct.grid, ctx.dose_grid, ctx.body_occupancy
    )
    ctx.algorithm_choice, ctx.algorithm_warnings = choose_final_algorithm(
        ctx.protocol.final_algorithm, low_cc, high_cc, ctx.beam_model
    )
    ctx.final_algorithm = ctx.algorithm_choice.algorithm
    logger.info("final dose: %s (%s)", ctx.final_algorithm, ctx.algorithm_choice.reason)


def _nonempty_rows(matrix, rows: np.ndarray):
    """``matrix[rows]`` for a CSR matrix whose other rows are empty, sharing its entries.

    Only the row pointers change (the entries of the kept rows are already contiguous and
    in order), so a 1.2 GB matrix is not copied; any entry outside ``rows`` falls back to
    the copying ``matrix[rows]``.
    """
    import scipy.sparse as sp

    indptr = matrix.indptr
    if int(np.diff(indptr)[rows].sum()) != matrix.nnz:
        return matrix[rows]
    new_indptr = np.append(indptr[rows], indptr[-1]).astype(indptr.dtype, copy=False)
    return sp.csr_matrix(
        (matrix.data, matrix.indices, new_indptr), shape=(rows.size, matrix.shape[1]), copy=False
    )


def _matrix_rows(ctx: _Context, idx: dict) -> dict:
    """Flat dose-grid voxel indices per structure -> rows of ``ctx.matrix`` (ascending
    voxel indices, then the hot-spot rows the correction loop appended)."""
    rows_all = ctx.matrix_rows
    if rows_all.size > 1 and not bool(np.all(rows_all[1:] > rows_all[:-1])):
        order = np.argsort(rows_all, kind="stable")
        ordered = rows_all[order]
        return {name: order[np.searchsorted(ordered, rows)] for name, rows in idx.items()}
    return {name: np.searchsorted(rows_all, rows) for name, rows in idx.items()}


#: The body helper of the global hot-spot term is sampled on voxels at most
#: ``BODY_SAMPLE_MM`` apart along each axis: hot spots outside the targets (a dominant
#: beam's entrance) span centimetres, and the body is the largest structure of all.
BODY_SAMPLE_MM = 9.0

#: The normal-tissue helper is sampled on every ``NT_STRIDE``-th voxel along each axis:
#: its dose is smooth, and it is the largest structure, so this keeps the optimisation
#: small (its terms are weighted means, so the sampling does not change their scale).
NT_STRIDE = 2

#: Organs at risk of more than this many dose-grid voxels are sampled on every
#: ``LARGE_STRIDE``-th voxel along x (every row and slice), when every goal on the organ is
#: a mean dose or a dose-volume point between :data:`LARGE_MIN_VOLUME_PCT` and 100 % minus
#: it: their terms are weighted means and volume fractions, which half the voxels estimate
#: closely, while the rows cost the dose stage, the optimiser and memory in proportion.  A
#: thorax's lungs (243,000 voxels at 3 mm) held 97 % of the influence matrix's entries
#: (155 M, 100 mm cut-off in lung).  Sampling y as well everywhere (a quarter of the voxels)
#: moved the thorax bench plan's PTV D2 from 63.9 to 64.3 Gy, over its 64.2 Gy goal; along
#: x alone its goals moved by at most 0.3 Gy; y is sampled only far from the targets
#: (:data:`LARGE_NEAR_MM`).  Point goals (Dmax, Dmin, D0.03cc) keep every voxel, and
#: so do the rings: sampled, the TG-119 C-shape's ring (24,876 voxels) let PTV D10 rise
#: 55.43 -> 55.52 Gy and core D10 11.13 -> 11.20 Gy.  Plan evaluation always uses every
#: voxel.
LARGE_STRUCTURE_VOXELS = 20_000
LARGE_STRIDE = 2
LARGE_MIN_VOLUME_PCT = 2.0

#: Voxels of a sampled organ farther than ``LARGE_NEAR_MM`` from every target voxel are
#: sampled on every :data:`LARGE_STRIDE`-th voxel along y as well (a quarter of them),
#: each weighted as the four voxels it stands for (a near one as two), so the weighted
#: means and volume fractions still estimate the whole organ.  Far from the targets the
#: dose varies only across the beams' edges, centimetres wide; within ``LARGE_NEAR_MM``
#: (the dose fall-off the target goals trade against) the x sampling alone applies.  A
#: 512 x 512 x 131 thorax with ``lung_60gy_30fx`` (PTV = GTV + 10 mm): the dose stage
#: peaked at 2.1 instead of 2.9 GiB and the plan took 96 instead of 128 CPU s, every goal
#: within 0.5 Gy (Body Dmax 108.0 -> 108.5 %, lungs V20 7.62 -> 7.64 %, mean 4.59 -> 4.61 Gy).
LARGE_NEAR_MM = 20.0


def _sampled_structures(ctx: _Context) -> set[str]:
    """Names of the organs at risk (and their parts outside the targets) sampled on every
    :data:`LARGE_STRIDE`-th voxel along x (see :data:`LARGE_STRUCTURE_VOXELS`)."""
    names = set()
    custom = {n for terms in ctx.custom_terms.values() for t in terms for n in _term_names(t)}
    for name, occ in ctx.occupancy.items():
        if ctx.roles.get(name) != "oar" or np.count_nonzero(occ) <= LARGE_STRUCTURE_VOXELS:
            continue
        if name in custom:  # a custom term's maths is unknown: every voxel
            continue
        volume_cc = float(occ.sum()) * ctx.dose_grid.voxel_volume_cc
        pcts = [
            volume_pct(spec.goal, volume_cc)
            for spec in ctx.protocol.goals
            if spec.structure == name and spec.goal.metric.kind != "mean"
        ]
        lo, hi = LARGE_MIN_VOLUME_PCT, 100.0 - LARGE_MIN_VOLUME_PCT
        if all(v is not None and lo <= v <= hi for v in pcts):
            names.add(name)
    for h in ctx.helpers.values():
        if h.kind == "oar_minus_target" and h.sources[0] in names:
            names.add(h.name)
    return names


def _large_organ_sample(ctx: _Context) -> np.ndarray:
    """How many voxels each voxel of a sampled organ stands for in the optimiser's rows.

    Returns
    -------
    (nz, ny, nx) ndarray of float32
        :data:`LARGE_STRIDE` on the kept voxels within :data:`LARGE_NEAR_MM` of a target,
        ``LARGE_STRIDE ** 2`` on the kept voxels farther away, 0 on the voxels left out.
    """
    grid = ctx.dose_grid
    targets = np.zeros(grid.shape, dtype=bool)
    for t in ctx.protocol.targets:
        if t in ctx.occupancy:
            targets |= ctx.occupancy[t] > 0
    far = distance_outside_mm(targets, grid.spacing_mm) > LARGE_NEAR_MM
    k = LARGE_STRIDE
    factor = np.zeros(grid.shape, dtype=np.float32)
    factor[:, :, ::k] = np.where(far[:, :, ::k], 0.0, k)
    factor[:, ::k, ::k][far[:, ::k, ::k]] = k * k
    return factor


#: With ``solver = "cvxpy"`` the helper structures that only shape the low-dose region
#: (rings, normal-tissue shells) are sampled on every ``k``-th voxel along y and x as well
#: (``[optimization] cvxpy_helper_stride``, default 2: a quarter of their rows): an
#: interior-point solver's work grows with the rows, and their terms are weighted means over
#: smooth doses. Targets, organs and point goals keep the first-order path's sampling; the
#: plan is evaluated on every voxel.
CVXPY_SAMPLED_KINDS = ("ring", "nto")


def _problem_structures(ctx: _Context) -> tuple[dict, dict]:
    idx, weights = {}, {}
    sampled = _sampled_structures(ctx)
    sample = _large_organ_sample(ctx) if sampled else None
    cvxpy = ctx.protocol.optimization.solver == "cvxpy"
    occs = dict(ctx.occupancy)
    occs.update({h.name: h.occupancy for h in ctx.helpers.values()})
    for name, occ in occs.items():
        if ctx.roles.get(name) == "external":
            continue
        kind = ctx.helpers[name].kind if name in ctx.helpers else None
        if kind == "normal_tissue":
            strides = (NT_STRIDE,) * 3
        elif cvxpy and kind in CVXPY_SAMPLED_KINDS:
            k = ctx.protocol.optimization.cvxpy_helper_stride
            strides = (1, k, k)
        elif name in sampled:
            occ = occ * sample  # weights: occupancy x the voxels each sample stands for
            strides = (1, 1, 1)
        elif kind == "body":
            dx, dy, dz = ctx.dose_grid.spacing_mm
            strides = tuple(max(1, int(BODY_SAMPLE_MM // d)) for d in (dz, dy, dx))
        else:
            strides = (1, 1, 1)
        if max(strides) > 1:
            keep = tuple(slice(None, None, k) for k in strides)
            kept = np.zeros_like(occ)
            kept[keep] = occ[keep]
            occ = kept
        flat = occ.ravel()
        rows = np.flatnonzero(flat > 0.0)
        if rows.size == 0:
            continue
        idx[name] = rows.astype(np.int64)
        weights[name] = flat[rows].astype(np.float64)
    return idx, weights


#: Relative objective decrease below which the first-order solver stops (three iterations
#: in a row). Measured on the TG-119 C-shape: the DVH no longer changes (±0.03 Gy) past this
#: point, while the solver's default (1e-8) doubles the iterations.
FIRST_ORDER_TOL = 1e-6

#: The same for the re-optimisations of the final-dose correction loop, which start from
#: the last pass's fluence. Their corrected dose model is itself off by 0.2 Gy on average
#: (1 Gy at most) in the targets at the new plan, while stopping here instead of at
#: :data:`FIRST_ORDER_TOL` moved no DVH point of the TG-119 C-shape by more than 0.01 Gy and
#: its objective by 0.02 %, and needed 58 instead of 108 L-BFGS iterations (a cold start at
#: :data:`FIRST_ORDER_TOL` stopped 0.6 % higher after 84).
CORRECTION_TOL = 1e-5


#: The CVXPY solve sees the influence matrix compressed to sparse plus low rank
#: (:class:`optimizers.Compression`; ``[optimization] cvxpy_compression_threshold`` and
#: ``cvxpy_compression_rank``, default: entries below 1 % of their beamlet's maximum move
#: to a rank-32 part); the result records the bound of the dose error this allows and the
#: error measured at the solution, and the plan is judged on the full matrix and the final
#: aperture dose.  Matrices of fewer than ``CVXPY_COMPRESS_MIN_NONZEROS`` entries are
#: solved exactly: small enough for the solver as they are, and a hard custom term then
#: holds on the exact dose.
CVXPY_COMPRESS_MIN_NONZEROS = 5_000_000


def stage_optimise(ctx: _Context) -> None:
    """Lexicographic optimisation of the levels built from the protocol goals."""
    import optimizers as opt

    protocol = ctx.protocol
    settings = protocol.optimization
    idx, weights = _problem_structures(ctx)
    idx = _matrix_rows(ctx, idx)
    volumes = {n: float(o.sum()) * ctx.dose_grid.voxel_volume_cc for n, o in ctx.occupancy.items()}
    target_rows = idx[protocol.prescription.target]
    # row sums of the whole matrix (one product) read at the target rows: the same values
    # as summing a copy of those rows, without copying them
    row_sums = ctx.matrix @ np.ones(ctx.matrix.shape[1], dtype=np.float32)
    per_mu = float(np.mean(row_sums[target_rows]))
    if not per_mu > 0:
        raise InputError(
            f"The beams deliver no dose to the target '{ctx.mapping[protocol.prescription.target]}'"
            "; check the isocentre and beam arrangement."
        )
    mu_scale = protocol.prescription.total_dose_gy / per_mu
    ctx.levels = build_levels(
        protocol,
        roles={n: r for n, r in ctx.roles.items()},
        volumes_cc=volumes,
        effective=ctx.effective,
        helpers=tuple(ctx.helpers),
        solver=settings.solver,
        n_beamlets=ctx.matrix.shape[1],
        pairs=smoothness_pairs(ctx.beamlets),
        mu_scale=mu_scale,
        ring_levels_gy={
            h.name: protocol.target_levels_gy[h.sources[0]]
            for h in ctx.helpers.values()
            if h.kind == "ring"
        },
        gradient_levels_gy={
            h.name: h.level_gy for h in ctx.helpers.values() if h.kind == "target_gradient_band"
        },
    )
    # float32 rows: the solvers' copy of the matrix is shared with ctx.matrix, not doubled
    options: dict[str, Any] = {"matrix_dtype": np.float32}
    if settings.solver == "cvxpy":
        options["solver"] = settings.cvxpy_solver
        options["active_set"] = settings.cvxpy_active_set
        if ctx.matrix.nnz >= CVXPY_COMPRESS_MIN_NONZEROS:
            options["compression"] = opt.Compression(
                rel_threshold=settings.cvxpy_compression_threshold,
                rank=settings.cvxpy_compression_rank,
            )
    else:
        options["max_iter"] = settings.max_iterations
        options["tol"] = FIRST_ORDER_TOL
        options["backend"] = ctx.backend  # the same array backend as the dose engine
    ctx.levels = _with_custom_terms(ctx.levels, ctx.custom_terms)
    hard = [t for lv in ctx.levels for t in lv.terms if t.hard]
    soft_levels = [[t for t in lv.terms if not t.hard] for lv in ctx.levels]
    soft_levels = [lv for lv in soft_levels if lv]
    if ctx.dose_offset is not None:  # a final-dose correction: d = D x + c
        options["dose_offset"] = ctx.dose_offset
        if settings.solver == "first_order":  # warm start (CVXPY's solvers have none)
            options["x0"] = ctx.fluence
            options["tol"] = CORRECTION_TOL
    if settings.transmission_model and settings.solver == "first_order" and not ctx.arcs:
        options.update(_transmission_options(ctx, mu_scale, options.get("dose_offset")))
    ctx.optimiser_offset = options.get("dose_offset")
    ctx.optimization = opt.solve_lexicographic(
        ctx.matrix,
        idx,
        soft_levels,
        constraints=hard,
        voxel_weights=weights,
        method=settings.solver,
        slip_rel=settings.slip,
        slip_abs=settings.slip_abs,
        **options,
    )
    ctx.fluence = np.asarray(ctx.optimization.x, dtype=np.float64)
    _check_hard_constraints(ctx, hard)


def _transmission_options(ctx: _Context, mu_scale: float, offset: np.ndarray | None) -> dict:
    """The solver options of ``[optimization] transmission_model`` in a pass of the
    correction loop (``offset`` its correction ``c``): the leaf transmission as a dose that
    follows each beam's meterset, calibrated on the last plan's segments, and ``c``
    changed so that the model still equals the final dose there
    (:mod:`rtplan.planning._transmission`). None in the first pass (no segments yet)."""
    ctx.meterset_dose = None
    if offset is None or ctx.segment_weights is None:
        return {}
    last = (
        ctx.plan.beams,
        ctx.beam_indices,
        ctx.machine,
        ctx.fluence,
        ctx.segment_weights.beamlet_fluence_mu,
    )
    transmission = resolve_mlc_parameters(ctx.machine, ctx.beam_model).transmission
    model, change = meterset_dose(ctx.matrix, ctx.beamlets, transmission, mu_scale, last)
    ctx.meterset_dose = model
    return {"meterset_dose": model, "dose_offset": offset + change}


def _with_custom_terms(levels: list, custom: Mapping[int, Sequence[Any]]) -> list:
    """``levels`` with each priority's custom terms appended to the level of that priority.

    Raises
    ------
    rtplan.errors.InputError
        A priority with custom terms has no optimisation level (its goals are on optional
        structures the patient lacks); the message lists the levels.
    """
    by_priority = {lv.priority: i for i, lv in enumerate(levels)}
    out = list(levels)
    for priority, terms in custom.items():
        if priority not in by_priority:
            raise InputError(
                f"`custom_terms`: priority {priority} ({', '.join(t.label for t in terms)}) has no "
                "optimisation level in this plan (its goals are on structures the patient "
                f"lacks); use one of the priorities {sorted(by_priority)}."
            )
        i = by_priority[priority]
        out[i] = replace(out[i], terms=out[i].terms + tuple(terms))
    return out


#: Relative violation of a hard constraint (of its bound, at least 1 Gy) above which a
#: plan whose optimiser stopped without meeting it gets the ``solver_not_converged``
#: safety warning (a proven contradiction raises in the optimiser instead).
HARD_VIOLATION_TOL = 0.02


def _check_hard_constraints(ctx: _Context, hard: list) -> None:
    """Warn about protocol hard constraints the optimiser left violated.

    Contradictory hard goals never get here: the optimiser raises
    :class:`optimizers.InfeasibleError` only with evidence (Clarabel's infeasibility
    status, or the certificate of :func:`optimizers.certify_hard_constraints`). What is
    left is a solve that ran out of work: the plan is written with a
    ``solver_not_converged`` warning (exit status 1), never reported as bad input.
    """
    ctx.solver_warning = convergence_warning(
        ctx.optimization.final, [t.label for t in hard], tol=HARD_VIOLATION_TOL
    )


def stage_sequence(ctx: _Context) -> None:
    """Step-and-shoot sequencing of each beam's fluence map (total MU); for VMAT, arc
    sequencing of each arc's sector maps (:func:`sequence_arcs`)."""
    protocol = ctx.protocol
    rx = protocol.prescription
    if ctx.arcs:
        arcs = sequence_arcs(ctx.fluence, ctx.beamlets, ctx.arcs, ctx.machine, rx.fractions)
        if not arcs:
            raise InputError("The optimised plan has no fluence in any arc; nothing to deliver.")
        ctx.plan = DeliverablePlan(
            tuple(arcs),
            rx.fractions,
            rx.total_dose_gy,
            ctx.mapping[rx.target],
            label=_plan_label(protocol),
        )
        return
    names = [f"G{b.gantry_angle_deg:03.0f}" for b in ctx.beams]
    seq = sequence_plan(
        ctx.fluence,
        ctx.beamlets,
        ctx.beams,
        ctx.machine,
        n_levels=protocol.optimization.sequencing_levels,
        beam_names=names,
    )
    if not seq.beams:
        raise InputError("The optimised plan has no fluence in any beam; nothing to deliver.")
    ctx.beam_indices = list(seq.beam_indices)
    ctx.plan = DeliverablePlan(
        tuple(seq.beams),
        rx.fractions,
        rx.total_dose_gy,
        ctx.mapping[rx.target],
        label=_plan_label(protocol),
    )


#: Extra weight on cold target voxels when segment weights are re-fitted (protects D95).
TARGET_UNDERDOSE_WEIGHT = 3.0


def stage_segments(ctx: _Context) -> None:
    """Segment-weight re-optimisation and the final dose from the apertures (for VMAT:
    the arcs' interval meterset, :func:`stage_arc_mu`)."""
    if ctx.arcs:
        stage_arc_mu(ctx)
        return
    fit, reference, targets = _segment_fit(ctx)
    res = reoptimize_segment_weights(
        ctx.matrix,
        ctx.beamlets,
        ctx.plan.beams,
        reference,
        fit,
        beam_indices=ctx.beam_indices,
        underdose_weights={t: TARGET_UNDERDOSE_WEIGHT for t in targets},
        mlc_parameters=resolve_mlc_parameters(ctx.machine, ctx.beam_model),
        model=ctx.beam_model,
    )
    if ctx.protocol.optimization.leaf_refinement:
        res = _refine_leaves(ctx, res, fit, reference, targets)
    ctx.segment_weights = res
    beams = tuple(
        replace(b, number=i + 1) if b.number != i + 1 else b for i, b in enumerate(res.beams)
    )
    ctx.plan = replace(ctx.plan, beams=beams)
    final_dose = aperture_dose if ctx.final_dose is None else ctx.final_dose
    ctx.dose = np.asarray(final_dose(ctx), dtype=np.float32)


def _refine_leaves(ctx: _Context, res, fit: dict, reference: np.ndarray, targets: list):
    """The segment-weight result ``res`` with its leaves and meterset refined
    (:func:`refine_leaf_positions`) against the same objective as the weight fit (its
    voxels, ``reference`` and the targets' underdose weight); the record goes to
    ``ctx.leaf_refinement`` (MU per fraction)."""
    settings = ctx.protocol.optimization
    rows, w, u = fit_voxels(
        fit, ctx.matrix.shape[0], None, {t: TARGET_UNDERDOSE_WEIGHT for t in targets}
    )
    objective = dose_fit_objective(reference[rows], w, u, rows)
    if settings.leaf_refinement_goal_weight > 0:
        objective = _with_goal_terms(ctx, objective, settings.leaf_refinement_goal_weight)
    # beams the weight fit dropped (every segment at 0 MU) leave the beamlet table's order
    index_of = {b.name: i for b, i in zip(ctx.plan.beams, ctx.beam_indices, strict=True)}
    refined = refine_leaf_positions(
        ctx.matrix,
        ctx.beamlets,
        res.beams,
        objective,
        beam_indices=[index_of[b.name] for b in res.beams],
        mlc_parameters=resolve_mlc_parameters(ctx.machine, ctx.beam_model),
        model=ctx.beam_model,
        max_iter=ctx.protocol.optimization.leaf_refinement_iterations,
    )
    record = refined.as_record()
    fractions = ctx.protocol.prescription.fractions
    record["mu_before"] /= fractions
    record["mu_after"] /= fractions
    record["mu_unit"] = "MU per fraction"
    ctx.leaf_refinement = record
    return replace(
        res,
        beams=refined.beams,
        message=f"{res.message}; leaves refined ({refined.message})",
        beamlet_fluence_mu=refined.beamlet_fluence_mu,
    )


def _with_goal_terms(ctx: _Context, fit_objective, weight: float):
    """``fit / fit₀ + weight · G / G₀``: the dose fit beside the protocol's levels' soft
    dose terms ``G`` (:func:`optimizers.soft_dose_objective`, on the dose plus the
    correction ``ctx.dose_offset`` when a final-dose correction is running), each divided
    by its value at the first dose it is given (the sequenced segments')."""
    import scipy.sparse as sp

    import optimizers as opt

    idx, voxel_weights = _problem_structures(ctx)
    idx = _matrix_rows(ctx, idx)
    terms = [
        t
        for lv in ctx.levels
        for t in lv.terms
        if not t.hard and t.acts_on != "fluence" and not isinstance(t, opt.CvxpyTerm)
    ]
    names = {t.structure for t in terms}
    n_rows = ctx.matrix.shape[0]
    problem = opt.Problem(
        sp.csr_matrix((n_rows, 1), dtype=np.float32),  # the terms read a given dose only
        {n: idx[n] for n in names},
        terms,
        voxel_weights={n: voxel_weights[n] for n in names},
    )
    offset = 0.0 if ctx.dose_offset is None else np.asarray(ctx.dose_offset, dtype=np.float64)
    scale: list[float] = []

    def objective(dose: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = fit_objective(dose)
        v, gv = opt.soft_dose_objective(problem, dose + offset)
        if not scale:
            scale.extend([max(f, 1e-300), max(v, 1e-300)])
        return f / scale[0] + weight * v / scale[1], g / scale[0] + (weight / scale[1]) * gv

    return objective


def _segment_fit(ctx: _Context):
    """``(structures, reference, targets)`` of the segment-weight fit: matrix rows of the
    protocol's structures (and of the correction loop's hot spots, :data:`HOTSPOT_HELPER`),
    the optimal fluence's dose on the matrix rows (with ``transmission_model``, its
    transmission dose as well: the segments' fluence holds theirs), the targets."""
    idx = _matrix_rows(ctx, _problem_structures(ctx)[0])
    fit = {n: i for n, i in idx.items() if n in ctx.occupancy or n == HOTSPOT_HELPER}
    reference = np.asarray(ctx.matrix @ ctx.fluence.astype(np.float32), dtype=np.float64)
    if ctx.meterset_dose is not None:
        reference += ctx.meterset_dose.dose(ctx.fluence)
    targets = [t for t in ctx.protocol.targets if t in fit]
    return fit, reference, targets


def stage_arc_mu(ctx: _Context) -> None:
    """VMAT: the meterset of every interval of every arc re-fitted on the intervals'
    aperture doses with the segment-weight stage's objective, within the machine limits
    (:func:`refine_arc_mu`); then the final dose of the arcs."""
    from dose_engine import hu_to_density

    fit, reference, targets = _segment_fit(ctx)
    rows, w, u = fit_voxels(
        fit,
        ctx.matrix.shape[0],
        underdose_weights={t: TARGET_UNDERDOSE_WEIGHT for t in targets},
    )
    with _arc_client(ctx.scheduler) as client:
        arcs, ctx.arc_record = refine_arc_mu(
            ctx.plan.beams,
            reference[rows],
            ctx.matrix_rows[rows],
            w,
            u,
            density=hu_to_density(ctx.patient.ct.array, ctx.density_table),
            ct_grid=ctx.patient.ct.grid,
            dose_grid=ctx.dose_grid,
            model=ctx.beam_model,
            backend=ctx.backend,
            mlc_parameters=resolve_mlc_parameters(ctx.machine, ctx.beam_model),
            fractions=ctx.plan.fractions,
            cap_pct=ctx.protocol.safety.normalization_cap_pct
            if ctx.protocol.optimization.normalize
            else 0.0,
            client=client,
        )
        ctx.plan = replace(ctx.plan, beams=tuple(arcs))
        # the pencil beam's angles on the same cluster (the collapsed cone ignores it)
        dose = aperture_dose(ctx, client=client) if ctx.final_dose is None else ctx.final_dose(ctx)
    ctx.dose = np.asarray(dose, dtype=np.float32)


def _arc_client(scheduler: str | None) -> contextlib.AbstractContextManager:
    """The Dask client of ``PlanOptions.scheduler`` (none without it)."""
    if scheduler is None:
        return contextlib.nullcontext()
    return dask_client(None if scheduler == "local" else scheduler)


def final_dose_mask(ctx: _Context) -> np.ndarray:
    """The voxels a final dose must cover, (nz, ny, nx) bool: the body, every planning
    structure (each voxel a goal reads) and the optimiser's rows (the correction loop
    reads the final dose there)."""
    voxel_mask = np.asarray(ctx.body_occupancy) > 0
    for occ in ctx.occupancy.values():
        voxel_mask |= occ > 0
    voxel_mask.ravel()[ctx.matrix_rows] = True
    return voxel_mask


def aperture_dose(ctx: _Context, *, client: Any = None) -> np.ndarray:
    """The final dose of ``ctx.plan`` from its apertures (the beam model's MLC and jaw
    model; :func:`rtplan.dose.compute_plan_dose`) with the plan's final-dose engine
    (``ctx.final_algorithm``: the pencil beam or the collapsed cone) on
    :func:`final_dose_mask`, Gy, (nz, ny, nx).  The default final-dose function of the plan
    and of the correction loop (``_Context.final_dose``: another engine's dose plugs in
    there).  ``client``: the pencil beam's beams and arc angles as tasks on this Dask
    cluster (:func:`rtplan.dose.compute_plan_dose`; the same dose)."""
    return compute_plan_dose(
        ctx.plan,
        ctx.patient,
        dose_grid=ctx.dose_grid,
        model=ctx.beam_model,
        backend=ctx.backend,
        voxel_mask=final_dose_mask(ctx),
        density_table=ctx.density_table,
        algorithm=ctx.final_algorithm,
        # kept only while a correction loop will compute the same beams' doses again (not
        # for arcs, which it skips: their ~340 angles' points would take GBs for nothing)
        points_cache=ctx.points_cache
        if ctx.protocol.optimization.final_dose_corrections and not ctx.arcs
        else None,
        client=client,
    ).dose_gy


def stage_correct(ctx: _Context) -> None:
    """Optimisation that ends on the final dose (protocol ``final_dose_corrections``).

    Each loop takes the last plan's segments and final dose and re-optimises with
    ``d = D x + c``, ``c = d_final(x0) - D x0`` on every row of the optimiser (sampled
    structures read ``c`` of their own voxels), where ``x0`` is the fluence the segments
    deliver over each beamlet (:attr:`SegmentWeightResult.beamlet_fluence_mu`), so that
    ``c`` holds what the matrix misses of the apertures' dose (leaf and jaw transmission
    outside the beamlets, scatter beyond the matrix's cut-off, the final engine's
    physics) and not the sequencing residual of those particular segments, which the
    next segments do not repeat.  The solve is warm-started from the last optimised
    fluence (first-order solver); then the plan is sequenced, its segment weights re-fitted
    to ``D x`` (the segments' model dose ``D S m`` plus the same ``c`` is then their final
    dose) and the final dose re-computed with the same final-dose function
    (``ctx.final_dose``).  Before each re-optimisation, the voxels outside the targets
    whose last final dose exceeds the global hot-spot level join the helper
    :data:`HOTSPOT_HELPER` (:func:`_with_hotspot_rows`): rows with that overdose term and
    their own ``c``, kept for the later loops.  Stops early after a corrected pass
    that meets every goal once normalised within the cap (no later pass can score higher),
    or when no goal moved by more than ``final_dose_tolerance_pct`` % of its level; the last
    record's ``stopped`` says which.  Each loop's record goes to ``ctx.corrections``.

    The plan kept is the pass (the uncorrected one or a corrected one) whose final dose
    needs the least normalisation beyond the cap to reach the prescription target's coverage
    (none, within the cap), then, normalised as :func:`stage_evaluate` normalises it, meets
    the most goals; on a tie the one whose failed goals miss by least (summed relative to
    their levels), then the later pass, whose optimiser saw the more accurate dose.  (A pass
    that needs more than the cap is under- or overdosed as delivered: counting goals alone
    would prefer an underdosed pass, whose organ goals are easier.)  A re-optimisation moves the
    plan by more than its correction (another sequencing of another fluence), so a loop
    can lose a goal the pass before met; its record says so (``kept``).
    """
    settings = ctx.protocol.optimization
    if settings.final_dose_corrections == 0:
        return
    if ctx.arcs:  # not built for arcs yet (docs/vmat.md)
        logger.info("final-dose corrections are not applied to arcs (VMAT)")
        return
    goals, structures, body = _evaluation_goals(ctx)
    rx = ctx.protocol.prescription.total_dose_gy

    def goal_results(dose):
        return evaluate_goals(
            dose, structures, goals, ctx.dose_grid, prescription_gy=rx, body=body
        ).results

    targets = np.zeros(ctx.dose_grid.shape, dtype=bool)
    for t in ctx.protocol.targets:
        if t in ctx.occupancy:
            targets |= ctx.occupancy[t] > 0
    before = goal_results(ctx.dose)
    ctx.corrections = [correction_record(0, before, target_mask=targets, dose_gy=ctx.dose)]
    passes = [_plan_state(ctx)]
    scores = [_goals_met_normalised(ctx, goals, structures, body, rx)]

    def correction():  # c at the last plan's delivered fluence and final dose
        delivered = ctx.segment_weights.beamlet_fluence_mu
        return dose_correction(ctx.matrix, ctx.matrix_rows, delivered, ctx.dose)

    offset = correction()
    for loop in range(1, settings.final_dose_corrections + 1):
        previous = ctx.dose
        ctx.dose_offset = _with_hotspot_rows(ctx, offset, targets)
        stage_optimise(ctx)
        stage_sequence(ctx)
        stage_segments(ctx)
        offset = correction()
        after = goal_results(ctx.dose)
        ctx.corrections.append(
            correction_record(
                loop,
                after,
                target_mask=targets,
                dose_gy=ctx.dose,
                previous_dose_gy=previous,
                offset_gy=ctx.dose_offset,
                offset_rows_in_targets=targets.ravel()[ctx.matrix_rows],
                model_error_gy=offset - ctx.dose_offset,
            )
        )
        hot = ctx.helpers.get(HOTSPOT_HELPER)
        ctx.corrections[-1]["hotspot_voxels"] = (
            0 if hot is None else int(np.count_nonzero(hot.occupancy))
        )
        passes.append(_plan_state(ctx))
        scores.append(_goals_met_normalised(ctx, goals, structures, body, rx))
        logger.info(
            "final-dose correction %d: %d/%d goals met before normalisation, %d after; "
            "target dose moved by up to %.3g Gy",
            loop,
            ctx.corrections[-1]["goals_met"],
            len(after),
            scores[-1][1],
            ctx.corrections[-1]["target_max_abs_change_gy"],
        )
        if scores[-1][:2] == (0.0, len(after)):  # nothing left for a later pass to win
            ctx.corrections[-1]["stopped"] = "all goals met within the normalisation cap"
            break
        if goals_settled(before, after, tolerance_pct=settings.final_dose_tolerance_pct):
            ctx.corrections[-1]["stopped"] = "goals settled"
            break
        before = after
    best = max(range(len(passes)), key=lambda k: (-scores[k][0], scores[k][1], -scores[k][2], k))
    for k, record in enumerate(ctx.corrections):
        (
            record["normalization_beyond_cap"],
            record["goals_met_normalized"],
            record["shortfall_normalized"],
        ) = scores[k]
        record["kept"] = k == best
    for name, value in passes[best].items():
        setattr(ctx, name, value)
    ctx.points_cache.clear()


def _with_hotspot_rows(ctx: _Context, offset: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Make the hot spots of the last final dose optimiser rows; the offset on all rows.

    The voxels of the body outside every target whose final dose ``ctx.dose`` exceeds
    :func:`~rtplan.planning._levels.hotspot_cap_gy` join :data:`HOTSPOT_HELPER` (those of
    earlier loops stay; at most :data:`HOTSPOT_MAX_VOXELS` in all, the hottest first),
    which :func:`~rtplan.planning._levels.build_levels` gives the global hot-spot
    overdose at full organ weight (the body's sampled rows dilute a hot spot among the
    whole body's).  Voxels without a row get one, computed like an organ's
    (:func:`_influence_matrix`) and appended to ``ctx.matrix`` and ``ctx.matrix_rows``,
    with their correction ``c`` at the delivered fluence (:func:`dose_correction`).

    Parameters
    ----------
    offset : (n_rows,) ndarray of float64, Gy
        The correction ``c`` on the rows of ``ctx.matrix``.
    targets : (nz, ny, nx) bool ndarray
        Voxels of any target.

    Returns
    -------
    (n_rows',) ndarray of float64, Gy
        ``offset`` followed by ``c`` on the rows appended.
    """
    import scipy.sparse as sp

    from dose_engine import hu_to_density

    cap = hotspot_cap_gy(ctx.protocol)
    if cap <= 0 or ctx.body_occupancy is None:
        return offset
    dose = np.asarray(ctx.dose).ravel()
    outside = (np.asarray(ctx.body_occupancy) > 0).ravel() & ~targets.ravel()
    hot = np.flatnonzero(outside & (dose > cap))
    previous = ctx.helpers.get(HOTSPOT_HELPER)
    kept = np.empty(0, np.int64) if previous is None else np.flatnonzero(previous.occupancy)
    new = np.setdiff1d(hot, kept)
    room = max(0, HOTSPOT_MAX_VOXELS - kept.size)
    if new.size > room:
        new = np.sort(new[np.argsort(dose[new])[::-1][:room]])
    if new.size == 0:
        return offset
    occupancy = np.zeros(ctx.dose_grid.shape, dtype=np.float32)
    occupancy.ravel()[np.concatenate([kept, new])] = 1.0
    ctx.helpers[HOTSPOT_HELPER] = HelperStructure(HOTSPOT_HELPER, "hotspot", occupancy, ("body",))
    missing = np.setdiff1d(new, ctx.matrix_rows)
    logger.info(
        "final-dose correction: %d voxels outside the targets above %.4g Gy join %s (%d new rows)",
        new.size,
        cap,
        HOTSPOT_HELPER,
        missing.size,
    )
    if missing.size == 0:
        return offset
    rows = np.zeros(dose.size, dtype=bool)
    rows[missing] = True
    density = hu_to_density(ctx.patient.ct.array, ctx.density_table)
    extra = _nonempty_rows(
        _influence_matrix(ctx, density, np.zeros_like(rows), rows), missing
    ).astype(ctx.matrix.dtype, copy=False)
    ctx.matrix = sp.vstack([ctx.matrix, extra], format="csr")
    ctx.matrix_rows = np.concatenate([ctx.matrix_rows, missing])
    delivered = ctx.segment_weights.beamlet_fluence_mu
    return np.concatenate([offset, dose_correction(extra, missing, delivered, ctx.dose)])


#: What a pass of the correction loop changes in the context (restored for the pass kept).
_PASS_FIELDS = (
    "fluence",
    "optimization",
    "plan",
    "beam_indices",
    "segment_weights",
    "dose",
    "leaf_refinement",
)


def _plan_state(ctx: _Context) -> dict[str, Any]:
    return {name: getattr(ctx, name) for name in _PASS_FIELDS}


def _goals_met_normalised(
    ctx: _Context, goals, structures, body, rx: float
) -> tuple[float, int, float]:
    """How far the normalisation ``ctx.dose`` needs for coverage lies beyond the cap (0
    within it, without normalisation or without a coverage goal; a fraction: 0.03 for a
    factor 1.08 under a 5 % cap), the goals it meets normalised as :func:`stage_evaluate`
    would, and the sum of the failed goals' shortfalls relative to their levels."""
    factor, beyond_cap = 1.0, 0.0
    if ctx.protocol.optimization.normalize:
        cap = ctx.protocol.safety.normalization_cap_pct
        factor, record, _ = capped_normalization(ctx, goals, structures, rx, cap)
        if record is not None:
            beyond_cap = max(0.0, abs(record["needed"] - 1.0) - cap / 100.0)
    table = evaluate_goals(
        ctx.dose * factor, structures, goals, ctx.dose_grid, prescription_gy=rx, body=body
    )
    shortfall = sum(
        abs(r.value - r.goal.level) / (abs(r.goal.level) or 1.0) for r in table if not r.passed
    )
    return beyond_cap, len(table) - table.n_failed, float(shortfall)


def stage_evaluate(ctx: _Context) -> None:
    """Normalise to the prescription target's first coverage goal (within the cap);
    evaluate the protocol's and the implicit goals; list the goals not evaluated; check
    the deliverability of the normalised plan."""
    protocol = ctx.protocol
    rx = protocol.prescription.total_dose_gy
    goals, structures, body = _evaluation_goals(ctx)
    ctx.normalization = 1.0
    if protocol.optimization.normalize:
        ctx.normalization, ctx.normalization_record, ctx.normalization_warning = (
            capped_normalization(ctx, goals, structures, rx, protocol.safety.normalization_cap_pct)
        )
        if ctx.normalization != 1.0:
            ctx.dose = (ctx.dose * ctx.normalization).astype(np.float32)
            ctx.plan = _scale_plan(ctx.plan, ctx.normalization)
    colors = {
        p: getattr(ctx.patient.structures[p], "color_rgb", None) for p in ctx.mapping.values()
    }
    table = evaluate_goals(
        ctx.dose, structures, goals, ctx.dose_grid, prescription_gy=rx, body=body, colors=colors
    )
    reported = evaluate_goals(
        ctx.dose,
        structures,
        protocol.reported_goals(ctx.mapping),
        ctx.dose_grid,
        prescription_gy=rx,
    )
    ctx.goal_table = replace(
        table,
        not_evaluated=tuple(protocol.goals_not_evaluated(ctx.mapping)),
        reported=reported.results,
    )
    ctx.deliverability = check_deliverability(ctx.plan)


def _evaluation_goals(ctx: _Context) -> tuple[list, dict, str | None]:
    """``(goals, structures, body)``: the protocol's and the implicit goals on patient
    structure names, the occupancies they read and the body's name."""
    protocol = ctx.protocol
    structures = {ctx.mapping[n]: occ for n, occ in ctx.occupancy.items()}
    ext = protocol.external
    body = ctx.mapping.get(ext) if ext else None
    if body is None and BODY_HELPER in ctx.helpers:
        body = BODY_HELPER
        structures[body] = ctx.helpers[body].occupancy
    for h in ctx.helpers.values():
        if h.kind in ("target_low", "target_gradient"):
            structures[h.name] = h.occupancy
    bands = {h.name: h.level_gy for h in ctx.helpers.values() if h.kind == "target_gradient_band"}
    implicit = [
        replace(g, structure=ctx.mapping.get(g.structure, g.structure))
        for g in implicit_goals(
            protocol,
            list(ctx.mapping),
            helpers=tuple(ctx.helpers),
            body=body,
            gradient_levels_gy=bands,
        )
    ]
    goals = protocol.evaluation_goals(ctx.mapping) + implicit
    return goals, structures, body


def capped_normalization(ctx, goals, structures, rx: float, cap_pct: float):
    """The normalisation factor within ``1 ± cap_pct/100``, its record and warning.

    Exact coverage of the prescription target's first minimum-dose goal, raised by up to
    :data:`NORMALIZATION_WINDOW` when that meets more goals, never beyond the cap.  A plan
    whose coverage needs more than the cap is scaled to the cap only (the optimised plan
    is not blown up or down past what its organ limits were optimised for) and gets a
    ``normalization_cap`` :class:`~rtplan.safety.SafetyWarning`.

    Returns
    -------
    factor : float
    record : dict or None
        ``factor``, ``needed``, ``cap_pct``, ``goal`` (text), ``value_before``,
        ``value_after`` (the goal's value before and after); None without a coverage goal.
    warning : SafetyWarning or None
    """
    needed, goal, before = _normalization_factor(ctx, goals, structures, rx)
    if goal is None:
        return 1.0, None, None
    cap = cap_pct / 100.0
    capped = factor = float(np.clip(needed, 1.0 - cap, 1.0 + cap))
    if capped == needed:
        factor = min(_most_goals_met(ctx, goals, structures, rx, needed), 1.0 + cap)
    after = _goal_value(ctx, goal, structures, rx, factor)
    record = {
        "factor": factor,
        "needed": needed,
        "cap_pct": cap_pct,
        "goal": goal.text,
        "value_before": before,
        "value_after": after,
    }
    return factor, record, normalization_warning(needed, capped, cap_pct, goal.text, before, after)


def _goal_value(ctx, goal, structures, rx, factor: float) -> float:
    """Value of one goal on the dose scaled by ``factor``."""
    occ = {goal.structure: structures[goal.structure]}
    return evaluate_goals(ctx.dose * factor, occ, [goal], ctx.dose_grid, prescription_gy=rx)[
        0
    ].value


def _normalization_factor(ctx, goals, structures, rx):
    """Scale so the prescription target's first minimum-dose goal is met (just) exactly.

    The goal value of the scaled dose is re-evaluated (DVH interpolation is not exactly
    linear in a scale factor) and the factor nudged up until the goal passes.

    Returns
    -------
    factor : float
    goal : rtplan.evaluation.Goal or None
        The coverage goal (None: there is none, factor 1).
    value_before : float or None
        The goal's value before normalisation.
    """
    target = ctx.mapping[ctx.protocol.prescription.target]
    cover = [
        g
        for g in goals
        if g.structure == target
        and g.comparison == ">="
        and g.metric.quantity == "dose"
        and not g.label.startswith(IMPLICIT_LABEL)
    ]
    if not cover:
        return 1.0, None, None
    g = cover[0]
    v0 = _goal_value(ctx, g, structures, rx, 1.0)
    if not v0 > 0:
        return 1.0, g, v0
    factor = float(g.level / v0)
    for _ in range(5):
        v = _goal_value(ctx, g, structures, rx, factor)
        if v >= g.level:
            break
        factor *= (g.level / v) * (1.0 + 1e-6)
    return factor, g, v0


#: Normalisation may raise the dose above the exact-coverage scale by up to this fraction
#: (in NORMALIZATION_STEPS equal steps) when that meets more goals, e.g. a secondary target's
#: coverage in the TG-119 multitarget case. It never lowers the dose below coverage.
NORMALIZATION_WINDOW = 0.02
NORMALIZATION_STEPS = 4


def _most_goals_met(ctx, goals, structures, rx, coverage: float) -> float:
    """The scale in ``[coverage, coverage·(1 + window)]`` that meets the most goals (the
    lowest such scale on a tie).

    Tried: :data:`NORMALIZATION_STEPS` equal steps, and the scale at which each failed
    minimum-dose goal would just pass (a dose metric scales with the dose, so that scale is
    ``level / value``; a step grid alone can miss a narrow window between a coverage goal
    reached and an upper limit broken)."""

    def table_at(factor: float):
        return evaluate_goals(
            ctx.dose * factor, structures, goals, ctx.dose_grid, prescription_gy=rx
        )

    top = coverage * (1.0 + NORMALIZATION_WINDOW)
    candidates = {
        coverage * (1.0 + NORMALIZATION_WINDOW * k / NORMALIZATION_STEPS)
        for k in range(NORMALIZATION_STEPS + 1)
    }
    for r in table_at(coverage):
        g = r.goal
        if not r.passed and g.comparison == ">=" and g.metric.quantity == "dose" and r.value > 0:
            candidates.add(coverage * (g.level / r.value) * (1.0 + 1e-4))
    best, best_met = coverage, -1
    for factor in sorted(f for f in candidates if f <= top):
        table = table_at(factor)
        met = len(table) - table.n_failed
        if met > best_met:
            best, best_met = factor, met
    return best


def _scale_plan(plan, factor: float):
    return replace(plan, beams=tuple(b.scaled(factor) for b in plan.beams))


# ----------------------------------------------------------------------- driver
@contextmanager
def _timed(timings: dict, name: str, bar):
    t0 = time.perf_counter()
    if bar is not None:
        bar.set_description(name)
    logger.info("stage %s ...", name)
    yield
    timings[name] = time.perf_counter() - t0
    logger.info("stage %s done in %.2f s", name, timings[name])
    if bar is not None:
        bar.update(1)


def _check_plan_arguments(patient, protocol, cache_dir, structure_map) -> None:
    """Wrong types and impossible inputs of :func:`plan_patient`, before any work."""
    require_instance(
        patient,
        "patient",
        Patient,
        "an rtplan.Patient (from rtplan.read_patient or rtplan.phantoms.make_phantom)",
    )
    require_instance(
        protocol,
        "protocol",
        (Protocol, str, os.PathLike),
        "a Protocol, a shipped protocol name or a protocol TOML file",
    )
    if structure_map is not None:
        require_instance(structure_map, "structure_map", Mapping, "a mapping of names")
    require_ct_volume(patient, "planning")
    check_cache_dir(cache_dir)


def _require_cvxpy_solver(protocol) -> None:
    """Refuse, before any work, a CVXPY solver that is not available here (unknown, not
    installed or, for MOSEK, not licensed): one :class:`optimizers.SolverError` naming it."""
    if protocol.optimization.solver != "cvxpy":
        return
    import optimizers as opt

    name = protocol.optimization.cvxpy_solver
    available = opt.available_solvers()
    if str(name).upper() not in available:
        raise opt.SolverError(
            f"CVXPY solver `{name}` (protocol {protocol.source}, [optimization] cvxpy_solver) "
            f"is not available here (not "
            f"installed, not licensed or unknown); installed: {', '.join(available) or 'none'}."
        )


def plan_patient(
    patient,
    protocol,
    *,
    options: PlanOptions | None = None,
    backend: str | None = None,
    solver: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    structure_map: Mapping[str, str] | None = None,
    beam_model: BeamModel | str | os.PathLike | None = None,
    custom_terms: Mapping[int, Sequence[Any]] | None = None,
) -> PlanResult:
    """Plan a patient automatically from a protocol.

    Parameters
    ----------
    patient : rtplan.Patient
        CT and structures (``rtplan.read_patient`` or ``rtplan.phantoms.make_phantom``).
    protocol : rtplan.protocols.Protocol or str or path-like
        A protocol, a shipped protocol name (``"tg119_cshape"``) or a TOML file.
    options : PlanOptions, optional
        Back-end, solver, cache, dose grid, beams, iterations and beam model
        (:class:`rtplan.planning.PlanOptions`; default: the protocol's settings, numpy,
        no cache, the shipped 6 MV model).  The beam model is recorded in plan.json
        (name, file, SAD, fingerprint).
    backend, solver, cache_dir, beam_model : optional
        Deprecated (one release, ``DeprecationWarning``): the fields of ``options``.
    progress : bool
        Show a progress bar per stage (tqdm, on stderr).
    structure_map : mapping of str to str, optional
        Protocol structure name → patient structure name overrides (the CLI's ``--map``).
    custom_terms : mapping of int to sequence of optimizers.Term, optional
        The physicist's own terms, by protocol priority: e.g. ``{2: [term]}`` adds ``term``
        to the optimisation level of the priority-2 goals (a soft term joins that level's
        objective with its own ``weight``, against goal weights of ``1 / Rx**2``; a hard
        term constrains every level, like a ``hard = true`` goal). Typically
        :class:`optimizers.CvxpyTerm`: a CVXPY expression of the doses of protocol
        structures (targets, organs at risk) or helper structures (``zRing``, ...), read on
        every voxel. A term the protocol's solver cannot use makes the plan use the other
        solver, with a ``solver_switched`` warning in :attr:`PlanResult.warnings` (and so
        in plan.json, the report and the CLI). See docs/protocols.md, "Your own CVXPY
        terms".

        .. versionadded:: 0.1.0

    Returns
    -------
    PlanResult

    Raises
    ------
    rtplan.errors.ProtocolError
        The protocol names a structure the patient lacks, or is malformed.
    rtplan.errors.InputError
        The beam model's SAD differs from the protocol machine's (both named); the CT
        has fewer than :data:`rtplan.dose._plan_dose.MIN_CT_SLICES` (3) slices.
    rtplan.errors.OutputError
        ``cache_dir`` is a file or cannot be written (checked before any work).
    rtplan.errors.InputError
        ``custom_terms``: a priority the protocol has no goals for, a term on a structure
        the plan does not have, or a term neither solver can use (each named); the
        protocol's CVXPY solver is not installed (named). Refused before any dose is
        computed.
    optimizers.InvalidProblemError
        A custom term that is not convex by CVXPY's DCP rules, returns the wrong type or
        raises (named after the term, with CVXPY's explanation).
    TypeError
        ``patient``, ``protocol``, ``structure_map`` or ``custom_terms`` of the wrong type
        (named).
    dose_engine.BeamModelError
        ``beam_model`` is a file that cannot be read as a beam model (named); the
        protocol's ``final_algorithm`` (or ``options.final_dose``) is ``"ccc"`` and the
        beam model has no collapsed-cone commissioning (before any work; ``"auto"``
        falls back to the pencil beam with a ``ccc_not_commissioned`` warning).
    optimizers.SolverError
        ``solver="cvxpy"`` with a CVXPY solver that is not installed (named, before any
        work).
    optimizers.InfeasibleError
        Hard constraints of the protocol are proven to contradict each other (a solver's
        infeasibility status or a certificate; an optimiser that only ran out of
        iterations gives a ``solver_not_converged`` warning instead).

    Examples
    --------
    The TG-119 C-shape on a coarse grid with five beams (about 10 s; the protocol's own
    settings, ``plan_patient(patient, "tg119_cshape")``, take about 30 s):

    >>> import rtplan
    >>> from rtplan.planning import plan_patient
    >>> from rtplan.protocols import load_protocol
    >>> patient = rtplan.phantoms.make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    >>> protocol = load_protocol("tg119_cshape").with_overrides(
    ...     dose_grid_mm=8.0, n_beams=5, max_iterations=60
    ... )
    >>> result = plan_patient(patient, protocol, progress=False)
    >>> len(result.plan.beams), result.dose_grid.spacing_mm
    (5, (8.0, 8.0, 8.0))
    >>> result.needs_attention  # so coarse a plan misses goals: result.summary() says which
    True
    """
    opts = options_from_keywords(
        "plan_patient",
        options,
        backend=backend,
        solver=solver,
        cache_dir=cache_dir,
        beam_model=beam_model,
    )
    _check_plan_arguments(patient, protocol, opts.cache_dir, structure_map)
    custom = _check_custom_terms(custom_terms)
    protocol = opts.apply_to(protocol)
    machine, model = machine_and_beam_model(protocol, opts.beam_model)
    protocol, switch_warning = _solver_for_custom_terms(protocol, custom)
    _require_cvxpy_solver(protocol)
    if "ccc" in (protocol.final_algorithm, protocol.influence_algorithm):  # before any work
        require_ccc_commissioning(model)
    ctx = _Context(
        patient=patient,
        protocol=protocol,
        backend=opts.backend,
        cache_dir=None if opts.cache_dir is None else Path(opts.cache_dir),
        progress=progress,
        overrides=dict(structure_map or {}),
        beam_model=model,
        custom_terms=custom,
        density_table=opts.density_table_for(protocol),
        machine=machine,
        scheduler=opts.scheduler,
    )
    timings: dict[str, float] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(STAGES), desc="plan", unit="stage", leave=False)
    try:
        for name, fn in (
            ("structures", stage_structures),
            ("beams", stage_beams),
            ("dose", stage_dose),
            ("optimise", stage_optimise),
            ("sequence", stage_sequence),
            ("segments", stage_segments),
            ("correct", stage_correct),
            ("evaluate", stage_evaluate),
        ):
            with _timed(timings, name, bar):
                fn(ctx)
            if name == "structures":  # before the dose: refuse names the plan lacks
                _check_custom_structures(ctx)
    finally:
        if bar is not None:
            bar.close()
    beam_summaries = [_beam_summary(b, ctx.plan.fractions) for b in ctx.plan.beams]

    warnings = plan_warnings(
        ctx.goal_table,
        beam_mu={b["name"]: b["mu"] for b in beam_summaries},
        settings=protocol.safety,
        normalization=ctx.normalization_warning,
        solver=ctx.solver_warning,
        deliverability=ctx.deliverability,
    )
    if switch_warning is not None:
        warnings.insert(0, switch_warning)
    if ctx.custom_terms:
        rows, weights = _problem_structures(ctx)
        warnings += custom_term_warnings(
            ctx.custom_terms,
            ctx.dose,
            rows,
            weights,
            ctx.fluence * ctx.normalization,
            protocol.prescription.total_dose_gy,
        )
    warnings.extend(ctx.calibration_warnings)
    warnings.extend(ctx.algorithm_warnings)
    warnings.extend(synthetic_model_warnings({b.number: model for b in ctx.plan.beams}))
    for w in warnings:
        logger.info("safety: %s", w.message)
    return PlanResult(
        patient=ctx.patient,
        protocol=protocol,
        mapping=dict(ctx.mapping),
        dose_grid=ctx.dose_grid,
        dose_gy=np.asarray(ctx.dose, dtype=np.float32),
        goal_table=ctx.goal_table,
        plan=ctx.plan,
        fluence_mu=ctx.fluence,
        optimization=ctx.optimization,
        normalization=ctx.normalization,
        timings=timings,
        helper_volumes_cc={n: h.volume_cc(ctx.dose_grid) for n, h in ctx.helpers.items()},
        beam_summaries=beam_summaries,
        beam_model=model,
        warnings=tuple(warnings),
        normalization_record=ctx.normalization_record,
        density_table=ctx.density_table,
        corrections=tuple(ctx.corrections),
        final_algorithm=ctx.algorithm_choice,
        deliverability=ctx.deliverability,
        arc_refinement=ctx.arc_record,
        leaf_refinement=ctx.leaf_refinement,
    )


def _term_names(term) -> tuple[str, ...]:
    """Structures a term reads (a :class:`optimizers.CvxpyTerm` may read several)."""
    names = getattr(term, "structures", None)
    if names is not None:
        return tuple(names)
    return () if term.structure is None else (term.structure,)


def _check_custom_terms(custom_terms) -> dict[int, tuple]:
    """``custom_terms`` as ``{priority: (term, ...)}``, or TypeError / InputError naming it."""
    import optimizers as opt

    if custom_terms is None:
        return {}
    require_instance(custom_terms, "custom_terms", Mapping, "a mapping of priority -> terms")
    out = {}
    for priority, terms in custom_terms.items():
        if isinstance(priority, bool) or not isinstance(priority, int) or priority < 1:
            raise InputError(
                f"`custom_terms`: priority {priority!r} must be an integer >= 1 (a protocol "
                "goal priority, 1 = most important)."
            )
        if isinstance(terms, opt.Term):
            terms = (terms,)
        if not isinstance(terms, Sequence) or not all(isinstance(t, opt.Term) for t in terms):
            raise TypeError(
                f"`custom_terms[{priority}]` must be a sequence of optimizers terms (e.g. "
                f"optimizers.CvxpyTerm), got {repr(terms)[:80]}."
            )
        if terms:
            out[priority] = tuple(terms)
    return out


def _solver_for_custom_terms(protocol, custom: Mapping[int, Sequence[Any]]):
    """``(protocol, warning)``: the protocol with a solver every custom term can use (the
    protocol's own when it can), and the ``solver_switched`` warning when it changed."""
    import optimizers as opt

    terms = [t for ts in custom.values() for t in ts]
    solver = protocol.optimization.solver
    refused = [t for t in terms if solver not in opt.supported_methods(t)]
    if not refused:
        return protocol, None
    other = "cvxpy" if solver == "first_order" else "first_order"
    unusable = [t for t in terms if other not in opt.supported_methods(t)]
    if unusable:
        both = ", ".join(f"`{t.label}`" for t in refused + unusable)
        raise InputError(
            f"`custom_terms`: no solver can use all of them: {both} (the first-order solver "
            "needs a registered surrogate, CVXPY a convex term; see optimizers.register_term)."
        )
    names = ", ".join(f"`{t.label}`" for t in refused)
    how = f"CVXPY ({protocol.optimization.cvxpy_solver})" if other == "cvxpy" else "first-order"
    warning = SafetyWarning(
        "solver_switched",
        f"SOLVER SWITCHED: the {solver.replace('_', '-')} solver cannot use the custom "
        f"term(s) {names}; this plan was optimised with the {how} solver.",
    )
    logger.warning("%s", warning.message)
    return protocol.with_overrides(solver=other), warning


def _check_custom_structures(ctx: _Context) -> None:
    """Refuse a custom term on a structure the optimisation does not have, or at a priority
    without goals (named; :func:`_with_custom_terms` checks the levels built)."""
    have = {n for n, r in ctx.roles.items() if r != "external" and n in ctx.occupancy}
    have |= set(ctx.helpers)
    present = [s for s in ctx.protocol.goals if s.structure in ctx.roles]
    priorities = {s.priority for s in present} or {1}
    for priority, terms in ctx.custom_terms.items():
        if priority not in priorities:
            raise InputError(
                f"`custom_terms`: priority {priority} ({', '.join(t.label for t in terms)}) "
                f"has no goals in protocol {ctx.protocol.name!r}; use one of the priorities "
                f"{sorted(priorities)}."
            )
        for t in terms:
            missing = [n for n in _term_names(t) if n not in have]
            if missing:
                raise StructureError(
                    f"`custom_terms[{priority}]`: {t.label} reads structure "
                    f"'{missing[0]}', which this plan does not have; use a protocol "
                    f"structure name or a helper: {', '.join(sorted(have))}."
                )


def check_output_dir(out_dir: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse an existing output folder early (before any computation)."""
    return refuse_existing(out_dir, overwrite=overwrite)
