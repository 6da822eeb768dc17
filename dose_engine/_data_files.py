"""Reading the engine's JSON data files: shipped defaults or a user's own file."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import BeamModelError

__all__ = ["read_json_data"]


def read_json_data(path: str | Path | None, default_name: str, *, what: str) -> tuple[Any, str]:
    """Parse a JSON data file and return ``(data, name)``.

    Parameters
    ----------
    path : str or Path, optional
        The user's file; ``None`` reads ``dose_engine/data/<default_name>``.
    default_name : str
        File name of the shipped default.
    what : str
        What the file holds (``"HU table"``, ``"Beam model"``), for messages.

    Raises
    ------
    BeamModelError
        If the file cannot be read or is not valid JSON; the message names the file.
    """
    if path is None:
        ref = resources.files("dose_engine") / "data" / default_name
        name = str(ref)
        reader = ref.read_text
    else:
        name = str(path)
        reader = Path(path).read_text
    try:
        text = reader(encoding="utf-8")
    except OSError as exc:
        raise BeamModelError(f"{what} {name} cannot be read ({exc}).") from exc
    try:
        return json.loads(text), name
    except json.JSONDecodeError as exc:
        raise BeamModelError(f"{what} {name} is not valid JSON ({exc}).") from exc
