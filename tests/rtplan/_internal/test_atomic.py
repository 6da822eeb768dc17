"""Atomic outputs: complete or absent, never overwritten unasked, readable like plain files."""

import os
import stat

import pytest

from rtplan._internal.atomic import atomic_directory, atomic_file
from rtplan.errors import OutputExistsError


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _expected(mode):
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def test_file_appears_only_on_success_with_plain_permissions(tmp_path):
    target = tmp_path / "plan.json"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    with atomic_file(target) as tmp:
        tmp.write_text("{}")
    assert target.read_text() == "{}"
    assert _mode(target) == _expected(0o666)


def test_existing_file_needs_overwrite(tmp_path):
    target = tmp_path / "RTPLAN.dcm"
    target.write_text("old")
    with pytest.raises(OutputExistsError, match="--force"):
        with atomic_file(target):
            pass
    with atomic_file(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_directory_replaced_only_when_complete(tmp_path):
    out = tmp_path / "plan"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert _mode(out) == _expected(0o777)
    with pytest.raises(OutputExistsError):
        with atomic_directory(out):
            pass
    with pytest.raises(ValueError):
        with atomic_directory(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise ValueError("failed run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
