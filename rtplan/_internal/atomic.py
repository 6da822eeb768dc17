"""Atomic output: write to a temporary sibling, then rename into place.

A failed run leaves nothing half-written: the temporary file or folder is removed
when the ``with`` block raises.  An existing output is refused unless
``overwrite=True`` (the CLI's ``--force``).  Files and folders are fsync'ed before they
are renamed into place, and the parent folder after, so a power cut cannot leave an
empty file under the final name.

Replacing a folder takes two renames (old → ``.<name>.old``, new → ``<name>``).  A crash
between them leaves only the backup; the next :func:`atomic_directory` on that path (any
rtplan run writing there) restores it before anything else, so either the old or the new
output is always in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError, OutputExistsError
from .arguments import path_argument

__all__ = [
    "atomic_directory",
    "backup_path",
    "recover_interrupted_replace",
    "atomic_file",
    "check_cache_dir",
    "check_output_path",
    "refuse_existing",
]


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


def _probe_writable(folder: Path, what: str, path: Path) -> None:
    """Create and remove a file in ``folder``: the only honest test of writability
    (permission bits say nothing about read-only mounts, quotas or root)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".rtplan-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise OutputError(
            f"{what} '{path}' cannot be written: '{folder}' is not writable "
            f"({exc.strerror or exc}); choose another place."
        ) from exc


def _existing_ancestor(path: Path) -> Path:
    parent = path.parent.absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_output_path(
    path: str | os.PathLike, *, overwrite: bool, kind: str = "folder", what: str = "Output"
) -> Path:
    """Check, before any work, that ``path`` can be written as a new ``kind``.

    Refuses an existing output unless ``overwrite`` (:class:`OutputExistsError`), an
    existing output of the other kind, a path under a regular file, and a place where a
    file cannot be created (read-only or full file system, no permission):
    :class:`OutputError`.  Nothing is created, except that a folder left as a backup by
    a crashed replacement is restored first (:func:`recover_interrupted_replace`).

    Parameters
    ----------
    path : path-like
    overwrite : bool
    kind : {"folder", "file"}
    what : str
        How the message names the output, e.g. ``"--out"``.
    """
    path = path_argument(path, "path")
    if kind == "folder":
        recover_interrupted_replace(path)  # a crashed replacement's old folder comes back
    path = refuse_existing(path, overwrite=overwrite)
    if path.exists():
        is_kind = path.is_dir() if kind == "folder" else path.is_file()
        if not is_kind:
            raise OutputError(
                f"{what} '{path}' exists and is not a {kind}; it cannot be replaced by one."
            )
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise OutputError(
            f"{what} '{path}' cannot be created: '{ancestor}' is a file, not a folder."
        )
    _probe_writable(ancestor, what, path)
    return path


def check_cache_dir(path: str | os.PathLike | None) -> Path | None:
    """Check an influence-matrix cache folder before any work (``--cache-dir``).

    It may not exist yet; it must not be a file or lie under one, and files must be
    creatable in it (or in its nearest existing ancestor): else :class:`OutputError`.
    """
    if path is None:
        return None
    path = path_argument(path, "cache_dir")
    if path.exists() and not path.is_dir():
        raise OutputError(f"--cache-dir '{path}' is a file; the cache needs a folder.")
    folder = path if path.is_dir() else _existing_ancestor(path / "x")
    if not folder.is_dir():
        raise OutputError(
            f"--cache-dir '{path}' cannot be created: '{folder}' is a file, not a folder."
        )
    _probe_writable(folder, "--cache-dir", path)
    return path


def _fsync_path(path: Path) -> None:
    """fsync one file or folder (folders: their entries; a no-op where unsupported)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # e.g. folders cannot be opened on Windows
    try:
        os.fsync(fd)
    except OSError:
        pass  # file systems without fsync on folders
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (bottom-up), then ``root``."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(folder) / name)
        _fsync_path(Path(folder))


def backup_path(path: Path) -> Path:
    """Where :func:`atomic_directory` keeps the old folder between its two renames."""
    return path.with_name(f".{path.name}.old")


def recover_interrupted_replace(path: str | os.PathLike) -> bool:
    """Finish a folder replacement a crash interrupted; True if the old folder was restored.

    Backup but no ``path``: the crash fell between the two renames, the backup is the
    only copy and is renamed back.  Both present: the new folder was in place and only
    the backup's removal was lost, so the backup is removed.
    """
    path = Path(path)
    backup = backup_path(path)
    if not backup.is_dir():
        return False
    if path.exists():
        shutil.rmtree(backup, ignore_errors=True)
        return False
    os.replace(backup, path)
    _fsync_path(path.parent)
    return True


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
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``.

    With ``overwrite=True`` an existing folder at ``path`` is replaced only after the
    new one is complete (and fsync'ed): old → backup, new → ``path``, backup removed.
    A backup left by a crashed replacement is restored first
    (:func:`recover_interrupted_replace`), never deleted.
    """
    path = Path(path)
    recover_interrupted_replace(path)
    path = refuse_existing(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    backup = backup_path(path)
    try:
        yield tmp
        _publish_mode(tmp, 0o777)
        _fsync_tree(tmp)
        if path.exists():
            os.replace(path, backup)
            _fsync_path(path.parent)
            os.replace(tmp, path)
            _fsync_path(path.parent)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, path)
            _fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        recover_interrupted_replace(path)  # put the old folder back if it was moved
        raise
