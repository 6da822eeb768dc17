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
    "rtplan.DVHCollection",
    "rtplan.structures.Margin",
    "rtplan.planning.BatchEntry",
    "dose_engine.Beam",
    "dose_engine.BeamModel",
    "dose_engine.HUTable",
    "optimizers.Problem",
    "optimizers.CvxpyFormulation",
    "optimizers.DVHOverdose",
    "optimizers.DVHUnderdose",
    "optimizers.GEUD",
    "optimizers.MaxDVH",
    "optimizers.MaxDose",
    "optimizers.MeanDose",
    "optimizers.MinDVH",
    "optimizers.MinDose",
    "optimizers.Overdose",
    "optimizers.Prescription",
    "optimizers.Smoothness",
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
    "rtplan.phantoms.WrittenPatient",
    "rtplan.planning.BatchOutcome",
    "rtplan.planning.PlanningLevel",
    "rtplan.protocols.BeamArrangement",
    "rtplan.protocols.DerivedSpec",
    "rtplan.protocols.GoalSpec",
    "rtplan.protocols.HelperSettings",
    "rtplan.protocols.OptimizationSettings",
    "rtplan.protocols.Prescription",
    "rtplan.protocols.StructureSpec",
    "rtplan.structures.DerivedStructure",
    "rtplan.structures.Expr",
    "dose_engine.Backend",
    "dose_engine.Beamlets",
    "dose_engine.InfluenceMatrix",
    "dose_engine.MeasuredData",
    "dose_engine.MeasuredScan",
    "dose_engine.ValidationReport",
    "optimizers.LevelResult",
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
