"""Check that .ci/constraints-oldest.txt pins every direct dependency at its declared floor.

Usage: python .ci/check_floors.py pyproject.toml .ci/constraints-oldest.txt

Direct dependencies are the runtime ones and the ``test`` extra.  Each must have a ``>=`` floor,
the constraints file must pin it (``name==floor``), and where its marker applies to this
Python, the installed version must be the floor: a floor that pip could not honour fails here.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def main(pyproject: str, constraints: str) -> int:
    """Print each floor problem on stderr; return 1 if there is one, else 0."""
    project = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))["project"]
    direct = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pins = {}
    for line in Path(constraints).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[canonicalize_name(name)] = Version(pinned)
    problems = []
    for text in direct:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        if len(floors) != 1:
            problems.append(f"{text!r} in {pyproject}: needs exactly one '>=' floor")
            continue
        if pins.get(name) != floors[0]:
            problems.append(
                f"{name}: {pyproject} declares >={floors[0]}, {constraints} pins "
                f"{pins.get(name, 'nothing')}"
            )
        if req.marker is None or req.marker.evaluate():
            try:
                installed = Version(version(name))
            except PackageNotFoundError:
                installed = None
            if installed != floors[0]:
                problems.append(f"{name}: installed {installed}, declared floor {floors[0]}")
    for problem in problems:
        print(f"ci: {problem}", file=sys.stderr)
    print(
        f"ci: {len(direct)} direct dependencies checked against their floors, "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
