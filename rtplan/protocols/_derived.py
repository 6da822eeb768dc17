"""``[[structures.derived]]`` entries of a protocol: structures built from others.

Example (docs/protocols.md has the full grammar)::

    [[structures.derived]]
    name = "PTV"
    from = "GTV"
    margin_mm = 5            # or {anterior = 5, posterior = 5, ..., superior = 7}

    [[structures.derived]]
    name = "Lungs-PTV"
    union = ["Lung_L", "Lung_R"]
    minus = ["PTV"]

The operations of one entry apply in this order: ``from`` / ``union`` (the union of the
listed structures) → ``intersect`` → ``margin_mm`` (grow) or ``shrink_mm`` → ``ring`` →
``minus``.  Entries may use each other in any order (they are evaluated in dependency
order; a cycle is refused).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .._internal.arguments import check_arguments, either
from ..errors import ProtocolError, StructureError
from ..structures import (
    Margin,
    derive_structure,
    difference,
    expand,
    intersection,
    ring,
    shrink,
    union,
)
from ..structures._derived import roi_name_problem
from ._structure_spec import StructureSpec

__all__ = ["DerivedSpec", "apply_derived", "parse_derived"]

logger = logging.getLogger("rtplan.protocols")

_KEYS = (
    "name",
    "from",
    "union",
    "intersect",
    "margin_mm",
    "shrink_mm",
    "ring",
    "minus",
    "role",
    "type",
)
_DEFAULT_TYPE = {"target": "PTV", "oar": "ORGAN", "external": "EXTERNAL"}


@dataclass(frozen=True)
class DerivedSpec:
    """One ``[[structures.derived]]`` entry.

    Parameters
    ----------
    index : int
        Position in the file (0-based), used in messages.
    name : str
        Protocol (and patient) name of the new structure.
    union : tuple of str
        Protocol structure names whose union is the base (``from`` or ``union``).
    intersect, minus : tuple of str
    margin : dict of str to float or float or None, mm
        Grow (``margin_mm``); a number or per-direction table.
    shrink : dict of str to float or float or None, mm
    ring_mm : (inner_mm, outer_mm) or None
    role : {"target", "oar", "external"}
    roi_type : str
        (3006,00A4) *RTROIInterpretedType* written to the RT-STRUCT.
    """

    index: int
    name: str
    union: tuple[str, ...]
    intersect: tuple[str, ...] = ()
    minus: tuple[str, ...] = ()
    margin: Any = None
    shrink: Any = None
    ring_mm: tuple[float, float] | None = None
    role: str = "oar"
    roi_type: str = "ORGAN"

    @property
    def sources(self) -> tuple[str, ...]:
        """Every structure name the entry reads, in order."""
        out: list[str] = []
        for n in (*self.union, *self.intersect, *self.minus):
            if n not in out:
                out.append(n)
        return tuple(out)

    def expression(self, names: Mapping[str, str]):
        """The :class:`rtplan.structures.Expr` on patient names (``names``: protocol →
        patient name; names absent from it are used as they are)."""

        def n(x: str) -> str:
            return names.get(x, x)

        expr = union(*(n(x) for x in self.union))
        if self.intersect:
            expr = intersection(expr, *(n(x) for x in self.intersect))
        if self.margin is not None:
            expr = expand(expr, self.margin)
        if self.shrink is not None:
            expr = shrink(expr, self.shrink)
        if self.ring_mm is not None:
            expr = ring(expr, inner_mm=self.ring_mm[0], outer_mm=self.ring_mm[1])
        if self.minus:
            expr = difference(expr, *(n(x) for x in self.minus))
        return expr

    def __str__(self) -> str:
        return f"{self.name} = {self.expression({})!r}"


def _err(source: str, where: str, msg: str) -> ProtocolError:
    return ProtocolError(f"Protocol {source}: {where}: {msg}")


def _names(source: str, where: str, value: Any, *, single_ok: bool) -> tuple[str, ...]:
    if single_ok and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _err(source, where, f"expected a non-empty list of structure names, found {value!r}.")
    return tuple(value)


def _margin(source: str, where: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, Mapping)):
        raise _err(
            source,
            where,
            "expected mm as a number or a table {anterior, posterior, left, right, superior, "
            f"inferior}}, found {value!r}.",
        )
    try:
        Margin.coerce(value)
    except StructureError as exc:
        raise _err(source, where, str(exc)) from None
    return dict(value) if isinstance(value, Mapping) else float(value)


def _parse_entry(source: str, i: int, entry: Any, target: str) -> DerivedSpec:
    where = f"[[structures.derived]] entry {i}"
    if not isinstance(entry, Mapping):
        raise _err(source, where, f"expected a table, found {entry!r}.")

    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _err(source, f"{where} name", f"expected a structure name, found {name!r}.")
    if roi_name_problem(name):
        raise _err(source, f"{where} name", f"{name!r}: {roi_name_problem(name)}")
    where = f"{where} ({name!r})"
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
        raise _err(source, where, f"unknown key(s) {unknown}; accepted: {sorted(_KEYS)}.")
    if ("from" in entry) == ("union" in entry):
        raise _err(source, where, "give exactly one of `from` (a name) or `union` (a list).")
    base = _names(
        source, f"{where} from/union", entry.get("from", entry.get("union")), single_ok=True
    )
    intersect = (
        _names(source, f"{where} intersect", entry["intersect"], single_ok=True)
        if "intersect" in entry
        else ()
    )
    minus = (
        _names(source, f"{where} minus", entry["minus"], single_ok=True) if "minus" in entry else ()
    )
    if "margin_mm" in entry and "shrink_mm" in entry:
        raise _err(source, where, "give `margin_mm` (grow) or `shrink_mm`, not both.")
    margin = (
        _margin(source, f"{where} margin_mm", entry["margin_mm"]) if "margin_mm" in entry else None
    )
    shrink = (
        _margin(source, f"{where} shrink_mm", entry["shrink_mm"]) if "shrink_mm" in entry else None
    )
    ring_mm = None
    if "ring" in entry:
        r = entry["ring"]
        ok = isinstance(r, Mapping) and set(r) == {"inner_mm", "outer_mm"}
        vals = [r.get("inner_mm"), r.get("outer_mm")] if ok else []
        ok = ok and all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            for v in vals
        )
        if not ok or not 0 <= vals[0] < vals[1]:
            raise _err(
                source,
                f"{where} ring",
                f"expected {{inner_mm = a, outer_mm = b}} with 0 <= a < b, found {r!r}.",
            )
        ring_mm = (float(vals[0]), float(vals[1]))
    role = entry.get("role", "target" if name == target else "oar")
    if role not in _DEFAULT_TYPE:
        raise _err(
            source, f"{where} role", f"expected one of {list(_DEFAULT_TYPE)}, found {role!r}."
        )
    roi_type = entry.get("type", "CONTROL" if ring_mm else _DEFAULT_TYPE[role])
    if not isinstance(roi_type, str) or not roi_type:
        raise _err(
            source, f"{where} type", f"expected an RTROIInterpretedType, found {roi_type!r}."
        )
    if name in (*base, *intersect, *minus):
        raise _err(source, where, f"{name!r} is derived from itself.")
    return DerivedSpec(
        i, name, base, intersect, minus, margin, shrink, ring_mm, role, roi_type.upper()
    )


def _ordered(source: str, specs: list[DerivedSpec]) -> tuple[DerivedSpec, ...]:
    """Dependency order (a derived entry after the derived entries it reads); cycles refused."""
    by_name = {s.name: s for s in specs}
    done: dict[str, DerivedSpec] = {}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(s: DerivedSpec, path: list[str]) -> None:
        if state.get(s.name) == 2:
            return
        if state.get(s.name) == 1:
            cycle = path[path.index(s.name) :] + [s.name]
            raise _err(
                source,
                "[[structures.derived]]",
                f"derived structures form a cycle: {' -> '.join(cycle)}.",
            )
        state[s.name] = 1
        for dep in s.sources:
            if dep in by_name:
                visit(by_name[dep], [*path, s.name])
        state[s.name] = 2
        done[s.name] = s

    for s in specs:
        visit(s, [])
    return tuple(done.values())


def parse_derived(
    source: str, entries: Any, *, declared: Mapping[str, Any], target: str
) -> tuple[DerivedSpec, ...]:
    """Parse ``[[structures.derived]]`` (a list of tables) into specs in dependency order.

    Raises
    ------
    ProtocolError
        Naming the file, the entry (index and name) and the key: malformed values, unknown
        keys, a name used twice or also declared as ``[structures.NAME]``, a cycle.
    """
    if not isinstance(entries, list):
        raise _err(
            source,
            "[[structures.derived]]",
            f"expected an array of tables, found {type(entries).__name__}.",
        )
    specs: list[DerivedSpec] = []
    for i, entry in enumerate(entries):
        spec = _parse_entry(source, i, entry, target)
        if spec.name in declared:
            raise _err(
                source,
                f"[[structures.derived]] entry {i} ({spec.name!r})",
                f"{spec.name!r} is also declared as [structures.{spec.name}]; a derived "
                "structure is defined only by its entry.",
            )
        if any(s.name.casefold() == spec.name.casefold() for s in specs):
            raise _err(
                source,
                f"[[structures.derived]] entry {i} ({spec.name!r})",
                "this name is already used by an earlier derived entry.",
            )
        specs.append(spec)
    return _ordered(source, specs)


@check_arguments(
    patient=either("rtplan.patient._patient:Patient", "collections.abc:Mapping"),
    protocol="rtplan.protocols._protocol:Protocol",
)
def apply_derived(
    patient, protocol, *, overrides: Mapping[str, str] | None = None, existing: str = "refuse"
):
    """``patient`` with the protocol's derived structures added (lazily evaluated).

    Each source name is found in the patient like any protocol structure: through its
    ``[structures.NAME]`` aliases and patterns when declared, else by its own name
    (case-insensitive), or through ``overrides`` (the CLI's ``--map``).

    Parameters
    ----------
    patient : rtplan.Patient or dict of str to Structure
        A patient, or just its structures (then a dict is returned).
    protocol : Protocol
    overrides : mapping of str to str, optional
    existing : {"refuse", "keep"}
        What to do when the patient already has a structure with a derived name (compared
        case-insensitively): refuse (planning: a clinical ROI is never shadowed silently)
        or keep the patient's (evaluating a dose with the ``RS_derived.dcm`` a plan wrote).

    Returns
    -------
    rtplan.Patient or dict
        Unchanged when the protocol derives nothing.

    Raises
    ------
    ProtocolError
        A required source structure is missing, or the prescription target would be built
        from an absent optional one (the message names the protocol file, the entry, the
        missing structure and the patient's structures) or, with ``existing="refuse"``, the
        patient already has a structure with a derived name.

    Notes
    -----
    A source declared ``required = false`` that the patient lacks leaves out an entry
    whose ``from`` / ``union`` / ``intersect`` names it (and every entry built on that
    one; their goals are "not evaluated"), and subtracts nothing as a ``minus`` operand.
    """
    if existing not in ("refuse", "keep"):
        raise ValueError(f"`existing` must be 'refuse' or 'keep'; got {existing!r}.")
    if not protocol.derived:
        return patient
    structures = dict(patient if isinstance(patient, Mapping) else patient.structures)
    declared = {s.name: s for s in protocol.structures}
    derived_names = {d.name for d in protocol.derived}
    overrides = dict(overrides or {})
    for d in protocol.derived:
        where = f"[[structures.derived]] entry {d.index} ({d.name!r})"
        clash = [n for n in structures if n.casefold() == d.name.casefold()]
        if d.name in overrides or (clash and existing == "keep"):
            continue  # the user's (or the structure set's) ROI stands for it
        if clash:
            raise _err(
                protocol.source,
                where,
                f"the patient already has a structure {clash[0]!r}; the protocol would derive "
                f"another one of that name. Rename the derived structure in the protocol or "
                f"map it to the patient's with --map {d.name}={clash[0]}.",
            )
        try:
            names, absent = {}, []
            for n in d.sources:
                if n in derived_names:
                    if n not in structures and not protocol.structure(n).required:
                        absent.append(n)  # an optional derived structure left out
                    continue
                try:
                    names[n] = _find_source(protocol, declared, n, structures, overrides)
                except ProtocolError:
                    if n in declared and not declared[n].required:
                        absent.append(n)
                        continue
                    raise
            if any(n in absent for n in (*d.union, *d.intersect)):
                if protocol.structure(d.name).required:  # the prescription target
                    raise ProtocolError(
                        f"it is built from {', '.join(repr(n) for n in absent)}, which the "
                        f"patient lacks; the patient's structures are {list(structures)}."
                    )
                logger.info("derived structure %s not built: %s absent", d.name, absent)
                continue
            spec = replace(d, minus=tuple(n for n in d.minus if n not in absent))
            structures[d.name] = derive_structure(
                structures, d.name, spec.expression(names), roi_type=d.roi_type
            )
        except (ProtocolError, StructureError) as exc:
            raise _err(protocol.source, where, str(exc)) from None
    if isinstance(patient, Mapping):
        return structures
    return replace(patient, structures=structures)


def _find_source(protocol, declared, name: str, structures, overrides) -> str:
    """The patient structure a derived entry's source ``name`` stands for.

    Found like any protocol structure (``--map``, aliases, patterns, own name); a source
    whose ``[structures.NAME]`` has role "external" and matches nothing is the patient's
    EXTERNAL ROI (e.g. the body outline rtplan found in the CT).
    """
    spec = replace(declared[name], required=True) if name in declared else StructureSpec(name)
    sub = replace(protocol, structures=(spec,))
    try:
        found = sub.resolve_structures(
            list(structures), overrides={name: overrides[name]} if name in overrides else None
        )
    except ProtocolError:
        external = [
            n
            for n, s in structures.items()
            if str(s.roi_type).upper() == "EXTERNAL" and not s.is_empty
        ]
        if spec.role == "external" and external:
            return external[0]
        raise
    return found[name]
