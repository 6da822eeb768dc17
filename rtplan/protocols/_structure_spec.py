"""How a protocol structure name finds a patient structure: :class:`StructureSpec`
(read by the protocol parser and by the derived-structure entries)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["StructureRole", "StructureSpec"]

#: Roles a protocol structure can play.
StructureRole = Literal["target", "oar", "external"]


@dataclass(frozen=True)
class StructureSpec:
    """How a protocol structure name finds a patient structure.

    Parameters
    ----------
    name : str
        Protocol name, used by goals and helper structures.
    role : {"target", "oar", "external"}
        What the structure is for the planner.
    aliases : tuple of str
        Names accepted verbatim (case-insensitive); ``name`` itself is always tried first.
    patterns : tuple of str
        Regular expressions matched (``re.fullmatch``, case-insensitive) against the
        patient's structure names when no alias matched.
    required : bool
        If false, a missing structure is skipped (with its goals) instead of an error.
    """

    name: str
    role: StructureRole = "oar"
    aliases: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    required: bool = True

    def candidates(self) -> tuple[str, ...]:
        """The names tried in order: the protocol name, then the aliases."""
        out: list[str] = []
        for n in (self.name, *self.aliases):
            if n.casefold() not in (o.casefold() for o in out):
                out.append(n)
        return tuple(out)
