"""Atomic directory swaps: a checkpoint folder is replaced as a whole or not at all.

:func:`atomic_directory` stages the new files beside the target and swaps them in with renames only, under a
lock file so that concurrent writers take turns; :func:`recover_interrupted_swap` and
:func:`remove_abandoned_staging` clean up after a writer killed mid-write, so a reader only ever sees a
complete directory. A write that fails (full disk, read-only folder) raises :class:`CheckpointWriteError`.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)

RETIRED_INFIX = ".old-"  # ".<name>.old-*": a directory being replaced, between the two renames of a swap
STAGING_INFIX = ".tmp-"  # ".<name>.tmp-<pid>-*": a directory being written by process <pid>


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (full disk, read-only folder...); the previous one is intact.

    >>> issubclass(CheckpointWriteError, OSError)
    True
    """


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Write a directory atomically: yields an empty staging folder beside ``target`` and, when the block
    ends without an exception, swaps it in with renames only (each one atomic on POSIX). An interruption
    leaves either the previous complete ``target`` or the new complete one, and no stale files remain.

    ``target``: the directory to (re)write; its parent is created if needed. Yields the staging folder (a
    ``pathlib.Path``) to write into; on an exception the staging folder is deleted and ``target`` is left as
    it was. Concurrent writers of one ``target`` (threads or processes) take turns at the swap (a lock file
    ``.<name>.lock`` beside it), so the result is always one writer's complete directory. The swap is one
    atomic exchange on Linux; elsewhere it is two renames, and a kill between them is undone by
    :func:`recover_interrupted_swap`, which loading and the next write call; the next write also deletes the
    staging folders of killed writers (:func:`remove_abandoned_staging`). A failing write (a full disk, a
    read-only folder) raises :class:`CheckpointWriteError` naming the folder and the cause.

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer.atomic_directories import atomic_directory
        >>> target = os.path.join(tempfile.mkdtemp(), "model")
        >>> with atomic_directory(target) as staging:
        ...     _ = (staging / "old.txt").write_text("1")
        >>> with atomic_directory(target) as staging:
        ...     _ = (staging / "new.txt").write_text("2")
        >>> os.listdir(target)  # the whole directory was replaced: no stale old.txt
        ['new.txt']
        >>> with atomic_directory(target) as staging:
        ...     _ = (staging / "broken.txt").write_text("3")
        ...     raise RuntimeError("killed while writing")
        Traceback (most recent call last):
        ...
        RuntimeError: killed while writing
        >>> os.listdir(target), sorted(os.listdir(os.path.dirname(target)))  # untouched, no staging folder left
        (['new.txt'], ['.model.lock', 'model'])
    """
    target = Path(target)
    recover_interrupted_swap(target)
    remove_abandoned_staging(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_INFIX}{os.getpid()}-", dir=target.parent))
    except OSError as err:
        raise CheckpointWriteError(err.errno, f"cannot write to {target.parent}: {err.strerror}") from err
    try:
        yield staging
        with _directory_lock(target):
            _swap_in(staging, target)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, CheckpointWriteError):
            raise
        where = f" ({err.filename})" if err.filename else ""
        raise CheckpointWriteError(err.errno, f"could not write {target}: {err.strerror or err}{where}; "
                                              f"{target} is as it was before") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def _directory_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.<name>.lock`` beside ``target`` (POSIX ``flock``; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: renames alone
        yield
        return
    with open(target.parent / f".{target.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging``: one atomic exchange where the system has it, else two renames (a
    process killed between them leaves the old directory as ``.<name>.old-*``, which
    :func:`recover_interrupted_swap` puts back)."""
    if not target.exists():
        os.replace(staging, target)
        return
    if exchange_paths(staging, target):  # target is the new directory now, staging the old one
        shutil.rmtree(staging, ignore_errors=True)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}{RETIRED_INFIX}", dir=target.parent))
    os.rmdir(retired)
    os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def exchange_paths(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2`` with ``RENAME_EXCHANGE``).

    Args:
        first, second: paths on one filesystem, e.g. a staging directory and the directory it replaces.

    Returns:
        True when swapped; False, with nothing changed, where the system or filesystem cannot exchange
        (not Linux, an old kernel or C library, a filesystem without the flag). Other failures raise ``OSError``.

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer.atomic_directories import exchange_paths
        >>> root = tempfile.mkdtemp()
        >>> for name in ("old", "new"):
        ...     os.mkdir(os.path.join(root, name))
        ...     _ = open(os.path.join(root, name, name + ".txt"), "w").close()
        >>> if exchange_paths(os.path.join(root, "new"), os.path.join(root, "old")):
        ...     assert os.listdir(os.path.join(root, "old")) == ["new.txt"]
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_current_directory, rename_exchange = -100, 2
    if renameat2(at_current_directory, os.fsencode(first), at_current_directory, os.fsencode(second),
                 rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), os.fspath(second))


@functools.lru_cache(maxsize=1)
def _renameat2():
    """The C library's ``renameat2`` (glibc >= 2.28, Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def recover_interrupted_swap(target: str | os.PathLike) -> bool:
    """Put the previous complete ``target`` back if a writer was killed between the two renames of
    :func:`atomic_directory`'s fallback swap (``target`` missing, ``.<name>.old-*`` beside it).

    Loading (:class:`~vanilla_transformer.hub_files.Checkpoint` on a local directory) and writing call it
    first, so such a kill loses nothing: the directory reads as it was before the interrupted write.

    Args:
        target: the directory :func:`atomic_directory` writes.

    Returns:
        True when a retired directory was moved back to ``target``; False when there was nothing to do.

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer.atomic_directories import recover_interrupted_swap
        >>> root = tempfile.mkdtemp()
        >>> os.mkdir(os.path.join(root, ".model.old-x1y2"))  # killed after retiring "model"
        >>> recover_interrupted_swap(os.path.join(root, "model")), sorted(os.listdir(root))
        (True, ['.model.lock', 'model'])
        >>> recover_interrupted_swap(os.path.join(root, "model"))
        False
    """
    target = Path(target)
    if target.exists() or not _retired_copies(target):
        return False
    with _directory_lock(target):
        retired = _retired_copies(target)
        if target.exists() or not retired:  # another process recovered or wrote it meanwhile
            return False
        newest = max(retired, key=lambda path: path.stat().st_mtime)
        os.replace(newest, target)
        logger.warning("%s was missing after an interrupted write; restored the previous version from %s",
                       target, newest.name)
        return True


def remove_abandoned_staging(target: str | os.PathLike) -> list[str]:
    """Delete the staging folders that killed writers of ``target`` left beside it.

    :func:`atomic_directory` stages into ``.<name>.tmp-<pid>-*``; a writer killed before its swap leaves that
    folder behind. Each write first removes those whose process no longer exists, so repeated kills do not
    pile up copies of the model; a live writer's folder (another process or thread) is never touched.

    Args:
        target: the directory :func:`atomic_directory` writes.

    Returns:
        The names of the folders removed.

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer.atomic_directories import remove_abandoned_staging
        >>> root = tempfile.mkdtemp()
        >>> os.mkdir(os.path.join(root, f".model.tmp-{os.getpid()}-a1"))  # this process: alive, kept
        >>> os.mkdir(os.path.join(root, ".model.tmp-999999999-b2"))  # no such process: abandoned
        >>> remove_abandoned_staging(os.path.join(root, "model")), len(os.listdir(root))
        (['.model.tmp-999999999-b2'], 1)
    """
    target = Path(target)
    prefix_length, removed = len(f".{target.name}{STAGING_INFIX}"), []
    for path in _siblings_named(target, STAGING_INFIX):
        pid = path.name[prefix_length:].split("-", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def _process_exists(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: keep every folder
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _retired_copies(target: Path) -> list[Path]:
    return _siblings_named(target, RETIRED_INFIX)


def _siblings_named(target: Path, infix: str) -> list[Path]:
    """The folders ``.<name><infix>*`` beside ``target``, sorted by name."""
    prefix = f".{target.name}{infix}"
    try:
        names = sorted(os.listdir(target.parent))
    except OSError:  # no such folder (e.g. the "user" of a Hub repo id "user/model")
        return []
    return [target.parent / name for name in names if name.startswith(prefix) and (target.parent / name).is_dir()]
