"""Hostile input, class "wrong argument types in the Python API" (issue 13).

Every public function of ``rtplan``, its subpackages, ``dose_engine`` and ``optimizers``
(their ``__all__``), and the constructor of every public class a user builds as an input,
is called with ``None`` and with a bare ``object()`` for its required arguments.  It must
refuse with a TypeError or ValueError whose one-line message names one of those
arguments, never an AttributeError from deep inside or a silent success.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest
from _hostile import one_line

MODULES = (
    "rtplan",
    "rtplan.evaluation",
    "rtplan.io",
    "rtplan.phantoms",
    "rtplan.planning",
    "rtplan.protocols",
    "rtplan.report",
    "rtplan.sequencing",
    "rtplan.structures",
    "dose_engine",
    "optimizers",
)

#: Public classes a user constructs as inputs: their constructors are checked.
INPUT_CLASSES = {
    "rtplan.Grid",
    "rtplan.Image",
    "rtplan.Segment",
    "rtplan.DeliverableBeam",
    "rtplan.DeliverablePlan",
    "rtplan.Goal",
    "rtplan.Machine",
    "rtplan.MLCModel",
    "rtplan.JawModel",
    "dose_engine.MLCParameters",
    "rtplan.DVHCollection",
    "rtplan.structures.Margin",
    "rtplan.planning.BatchEntry",
    "rtplan.planning.PlanOptions",
    "dose_engine.Beam",
    "dose_engine.BeamModel",
    "dose_engine.HUTable",
    "optimizers.Problem",
    "optimizers.MetersetDose",
    "optimizers.CvxpyFormulation",
    "optimizers.CvxpyTerm",
    "optimizers.Compression",
    "optimizers.DVHOverdose",
    "optimizers.DVHUnderdose",
    "optimizers.GEUD",
    "optimizers.MaxDVH",
    "optimizers.MaxDose",
    "optimizers.MeanDose",
    "optimizers.MinDVH",
    "optimizers.MinDose",
    "optimizers.Overdose",
    "optimizers.Smoothness",
    "optimizers.SquaredDeviation",
    "optimizers.Surrogate",
    "optimizers.TotalMU",
    "optimizers.Underdose",
}

#: Public classes that are results or records rtplan builds (a plan, a DVH, a table, a
#: solver result, a protocol part parsed from TOML): not an input path, not checked here.
RECORD_CLASSES = {
    "rtplan.DoseComparison",
    "rtplan.DVH",
    "rtplan.GoalTable",
    "rtplan.Patient",
    "rtplan.PlanDose",
    "rtplan.PlanResult",
    "rtplan.PlanSequencing",
    "rtplan.Protocol",
    "rtplan.SegmentWeightResult",
    "rtplan.SequencingResult",
    "rtplan.Structure",
    "rtplan.evaluation.GoalResult",
    "rtplan.evaluation.Metric",
    "rtplan.io.CtSeries",
    "rtplan.io.RtDoseReferences",
    "rtplan.io.RtPlanBeams",
    "rtplan.io.StructureSet",
    "rtplan.io.PortPyBeam",
    "rtplan.io.PortPyPatient",
    "rtplan.io.WrittenPatient",
    "rtplan.planning.BatchOutcome",
    "rtplan.planning.FinalAlgorithmChoice",
    "rtplan.sequencing.ArcSequencingResult",
    "rtplan.planning.PlanningLevel",
    "rtplan.planning.WrittenPlan",
    "rtplan.protocols.ArcSpec",
    "rtplan.protocols.BeamArrangement",
    "rtplan.protocols.DerivedSpec",
    "rtplan.protocols.GoalSpec",
    "rtplan.protocols.HelperSettings",
    "rtplan.protocols.OptimizationSettings",
    "rtplan.protocols.Prescription",
    "rtplan.protocols.StructureSpec",
    "rtplan.structures.DerivedStructure",
    "rtplan.structures.Expr",
    "optimizers.CompressedMatrix",
    "optimizers.StructureDoses",
    "dose_engine.Backend",
    "dose_engine.Beamlets",
    "dose_engine.InfluenceMatrix",
    "dose_engine.MeasuredData",
    "dose_engine.MeasuredScan",
    "dose_engine.ValidationReport",
    "optimizers.CvxpyContext",
    "optimizers.LevelResult",
    "optimizers.FeasibilityCertificate",
    "optimizers.LexicographicResult",
    "optimizers.OptimizationResult",
    "optimizers.Status",
    "optimizers.Term",
}


def _public() -> tuple[dict[str, object], set[str]]:
    """Public callables by their first exported name; names of the classes."""
    found: dict[str, object] = {}
    classes: set[str] = set()
    seen: set[int] = set()
    for mod_name in MODULES:
        mod = importlib.import_module(mod_name)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not callable(obj) or id(obj) in seen:
                continue
            if inspect.isclass(obj) and issubclass(obj, BaseException | Warning):
                continue
            seen.add(id(obj))
            if inspect.isclass(obj):
                classes.add(f"{mod_name}.{name}")
            found[f"{mod_name}.{name}"] = obj
    return found, classes


PUBLIC, CLASSES = _public()
CHECKED = {k: v for k, v in PUBLIC.items() if k not in CLASSES or k in INPUT_CLASSES}


def _hostile_call(fn, value):
    """Arguments that put ``value`` in every required parameter (or, with none, the
    first one), and the names of those for which it is wrong; ``None`` if there are none
    (``None`` is valid where the annotation allows it)."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    required = [p for p in params if p.default is p.empty] or params[:1]
    wrong = [
        p.name
        for p in required
        if value is not None or (p.default is p.empty and "None" not in str(p.annotation))
    ]
    if not wrong:
        return None
    args = [value for p in required if p.kind is not p.KEYWORD_ONLY]
    kwargs = {p.name: value for p in required if p.kind is p.KEYWORD_ONLY}
    return args, kwargs, wrong


def test_every_public_class_is_classified():
    assert CLASSES - INPUT_CLASSES - RECORD_CLASSES == set()
    assert (INPUT_CLASSES | RECORD_CLASSES) - CLASSES == set()


#: (public name, hostile value): functions without arguments have no case, and those
#: without required ones only the object() case (None is their arguments' default).
CASES = [
    pytest.param(name, value, id=f"{name}-{label}")
    for name in sorted(CHECKED)
    for label, value in (("None", None), ("object", object()))
    if _hostile_call(CHECKED[name], value) is not None
]


@pytest.mark.parametrize(("name", "value"), CASES)
def test_wrong_argument_type_is_named(name, value):
    args, kwargs, names = _hostile_call(CHECKED[name], value)
    with pytest.raises((TypeError, ValueError)) as exc:
        CHECKED[name](*args, **kwargs)
    text = one_line(str(exc.value))
    assert any(re.search(rf"`{re.escape(n)}(\[\d+\])?`", text) for n in names), (
        f"{name}: none of {names} named in {type(exc.value).__name__}: {text}"
    )


# ---------------------------------------------------------------------------------------
# One wrong argument after valid ones: the check names that one, not the first


@pytest.fixture(scope="module")
def valid():
    import numpy as np

    import dose_engine as de
    import optimizers as op
    import rtplan

    grid = rtplan.Grid((4, 5, 6), (0.0, 0.0, 0.0), (2.0, 2.0, 2.0))
    return {
        "np": np,
        "de": de,
        "op": op,
        "rtplan": rtplan,
        "grid": grid,
        "density": np.ones(grid.shape),
        "beam": de.Beam(0.0),
        "machine": rtplan.load_machine("VarianMLC120"),
        "u": np.zeros(3),
    }


LATER_ARGUMENT = {
    "beams[1]": lambda v, tmp: v["de"].compute_influence_matrix(
        v["density"], v["grid"], v["grid"], [v["beam"], None], None
    ),
    "rectangles_mm": lambda v, tmp: v["de"].field_dose(
        v["density"], v["grid"], v["grid"], v["beam"], "open", 1.0
    ),
    "source_mm": lambda v, tmp: v["de"].trace_rays(
        v["density"], v["grid"], None, v["u"][None], v["u"]
    ),
    "model": lambda v, tmp: v["de"].rectangle_dose(
        v["u"], v["u"], v["u"], v["u"], [[-5, 5, -5, 5]], [1.0], "6MV"
    ),
    "table": lambda v, tmp: v["de"].hu_to_density(v["density"], "water"),
    "n": lambda v, tmp: v["de"].equispaced_coplanar_beams(True),
    "spacing_mm[1]": lambda v, tmp: v["rtplan"].Grid((4, 5, 6), (0, 0, 0), (2, "2", 2)),
    "voxel_volume_cc": lambda v, tmp: v["rtplan"].dvh(
        v["density"], v["density"] > 0, voxel_volume_cc="0.008"
    ),
    "fractions": lambda v, tmp: v["rtplan"].DeliverablePlan((), 2.5, 50.0, "PTV"),
    "machine": lambda v, tmp: v["rtplan"].sequence_fluence(
        v["np"].ones((2, 2)), "VarianMLC120", x_edges_mm=[0, 5, 10], y_edges_mm=[0, 5, 10]
    ),
    "dose_grid": lambda v, tmp: v["rtplan"].write_report(
        tmp / "report.html", dose_gy=v["density"], dose_grid=(4, 5, 6)
    ),
    "timings": lambda v, tmp: v["rtplan"].write_plan_json(tmp / "plan.json", timings=[1.0]),
    "dose_gy": lambda v, tmp: v["op"].MinDose("PTV", "60"),
    "volume_pct": lambda v, tmp: v["op"].MaxDVH("PTV", 60.0, None),
    "levels": lambda v, tmp: v["op"].solve_lexicographic(None, {}, [[None]]),
}


@pytest.mark.parametrize("name", sorted(LATER_ARGUMENT))
def test_a_later_wrong_argument_is_the_one_named(name, valid, tmp_path):
    with pytest.raises((TypeError, ValueError)) as exc:
        LATER_ARGUMENT[name](valid, tmp_path)
    text = one_line(str(exc.value))
    assert f"`{name}`" in text, text
    assert list(tmp_path.iterdir()) == []  # nothing written
