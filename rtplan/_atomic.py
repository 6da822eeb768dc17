"""Atomic output: write to a temporary sibling, then rename into place.

A failed run leaves nothing half-written: the temporary file or folder is removed
when the ``with`` block raises.  An existing output is refused unless
``overwrite=True`` (the CLI's ``--force``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputExistsError

__all__ = ["atomic_directory", "atomic_file", "refuse_existing"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, mode: int) -> None:
    """Give a temporary file or folder the permissions a plain ``open``/``mkdir`` would.

    :func:`tempfile.mkstemp` and :func:`tempfile.mkdtemp` create private (0600/0700)
    entries; outputs are meant to be read by other tools and users.
    """
    os.chmod(path, mode & ~_umask())


def refuse_existing(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is false."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"Output '{path}' already exists; choose another path or pass --force "
            "(overwrite=True) to replace it."
        )
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    Examples
    --------
    >>> with atomic_file("plan.json") as tmp:          # doctest: +SKIP
    ...     tmp.write_text("{}")
    """
    path = refuse_existing(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _publish_mode(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``.

    With ``overwrite=True`` an existing folder at ``path`` is replaced only after the
    new one is complete.
    """
    path = refuse_existing(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, 0o777)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
