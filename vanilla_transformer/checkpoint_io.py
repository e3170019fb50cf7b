"""Checkpoint I/O: where a checkpoint's files come from, reading and writing safetensors, assigning them to a
model with a report of missing / unexpected / mismatched tensors, and the end of loading shared by native
checkpoints (:mod:`.hub`) and transformers checkpoints (:mod:`.convert`).

Only safetensors are ever read: nothing from a checkpoint is executed. Checkpoints that offer only pickled
(``pytorch_model.bin``) or Keras/HDF5 (``tf_model.h5``, ``model.keras``) weights are refused, and file names
taken from a shard index must stay inside the checkpoint. Hub files are read through ``huggingface_hub``
only, so its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and ``HF_TOKEN`` apply. Every problem surfaces as one
:class:`CheckpointError` with a readable message.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
from huggingface_hub import constants, split_state_dict_into_shards_factory

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE  # model.safetensors
WEIGHTS_INDEX_NAME = constants.SAFETENSORS_INDEX_FILE  # model.safetensors.index.json
SHARD_PATTERN = "model{suffix}.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "vocab.txt", "vocab.json", "merges.txt", "source.spm", "target.spm",
                   "sentencepiece.bpe.model", "spiece.model")
UNSAFE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "tf_model.h5.index.json",
                  "model.keras", "flax_model.msgpack", "model.ckpt.index")
#: files of a repo that a new push replaces (stale shards of an earlier push would otherwise remain)
WEIGHT_FILE_PATTERN = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$")
DEFAULT_MAX_SHARD_SIZE = "5GB"
RETIRED_INFIX = ".old-"  # ".<name>.old-*": a directory being replaced, between the two renames of a swap
STAGING_INFIX = ".tmp-"  # ".<name>.tmp-<pid>-*": a directory being written by process <pid>
COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (full disk, read-only folder...); the previous one is intact.

    >>> issubclass(CheckpointWriteError, OSError)
    True
    """


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: missing, corrupt, unsafe or mismatched files.

    A ``ValueError``, so ``except ValueError`` catches it too; its message names the checkpoint and the problem.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer.checkpoint_io import CheckpointError, load_config
        >>> try:
        ...     load_config(tempfile.mkdtemp())
        ... except CheckpointError as err:
        ...     print(err)
        /... has no config.json
        >>> issubclass(CheckpointError, ValueError)
        True
    """


# ------------------------------------------------------------------------------------------ files
def check_filename(filename: str, source: str, what: str = "file") -> str:
    """Reject names that would leave the checkpoint directory (absolute, ``..``, backslashes, empty).

    >>> check_filename("model-00001-of-00002.safetensors", "index")
    'model-00001-of-00002.safetensors'
    >>> check_filename("../etc/passwd", "index")
    Traceback (most recent call last):
    ...
    vanilla_transformer.checkpoint_io.CheckpointError: index: refusing file name '../etc/passwd': it points outside ...
    """
    if (not isinstance(filename, str) or not filename or filename.startswith(("/", "~")) or "\\" in filename
            or re.match(r"^[A-Za-z]:", filename) or "\0" in filename
            or any(part in ("..", ".", "") for part in filename.split("/"))):
        raise CheckpointError(f"{source}: refusing {what} name {filename!r}: it points outside the checkpoint")
    return filename


class Checkpoint:
    """Where a checkpoint's files come from: a local directory, or a Hub repo read through ``huggingface_hub``.

    A Hub checkpoint is pinned to one commit by the first file fetched, so that a push happening while
    loading cannot mix files of two commits. ``fetch`` returns a local path (the HF cache for Hub repos)
    or None for an optional file that does not exist, and turns every Hub error into :class:`CheckpointError`.

    >>> Checkpoint("user/model", revision="v1").describe()
    "Hub repo 'user/model' (revision v1)"
    """

    def __init__(self, name_or_path, revision: str | None = None, cache_dir=None, force_download: bool = False,
                 local_files_only: bool = False, token: str | bool | None = None, timeout: float | None = None,
                 max_retries: int = 3):
        self.name = os.fspath(name_or_path)
        self.timeout = timeout  # seconds a file's download may take, retries included (None: no limit)
        self.max_retries = max_retries  # retries of a transient Hub failure (5xx, 408, 429, network, timeout)
        recover_interrupted_swap(self.name)  # a writer killed mid-swap: put the previous version back
        self.is_local = os.path.isdir(self.name)
        self.revision = revision
        self.cache_dir = cache_dir
        self.force_download = force_download
        self.local_files_only = local_files_only
        self.token = token
        self.commit_hash: str | None = revision if revision and COMMIT_HASH.match(revision) else None

    @classmethod
    def of(cls, name_or_path, hub_kwargs: dict | None = None) -> "Checkpoint":
        """``name_or_path`` itself when it is a :class:`Checkpoint`, else a new one with ``hub_kwargs``."""
        if isinstance(name_or_path, Checkpoint):
            return name_or_path
        return cls(name_or_path, **(hub_kwargs or {}))

    @property
    def offline(self) -> bool:
        return bool(self.local_files_only) or constants.HF_HUB_OFFLINE

    @property
    def hub_kwargs(self) -> dict:
        """Keyword arguments of ``hf_hub_download`` (revision pinned once known)."""
        return dict(revision=self.commit_hash or self.revision, cache_dir=self.cache_dir,
                    force_download=self.force_download, local_files_only=self.local_files_only, token=self.token)

    def describe(self) -> str:
        if self.is_local:
            return self.name
        revision = f" (revision {self.revision})" if self.revision else ""
        return f"Hub repo {self.name!r}{revision}"

    def offline_hint(self) -> str:
        return " (offline mode: only the local Hugging Face cache was searched)" if self.offline else ""

    def fetch(self, filename: str, required: bool = False) -> str | None:
        """Local path of ``filename`` (downloaded into the HF cache for a Hub repo); None when an optional
        file does not exist; :class:`CheckpointError` when a required one does not or the Hub refuses."""
        check_filename(filename, self.describe())
        if self.is_local:
            path = os.path.join(self.name, *filename.split("/"))
            if os.path.isfile(path):
                return path
            if required:
                raise CheckpointError(f"{self.name} has no {filename}")
            return None
        path = self.download(filename, required) if self.timeout is None else self.download_within(filename, required)
        if path is not None:
            verify_download(path, f"{filename} of {self.describe()}")
            self.pin_commit(path, filename)
        return path

    def download_within(self, filename: str, required: bool) -> str | None:
        """:meth:`download` in a worker thread, given up after ``timeout`` seconds with a clear error (the
        worker may still finish in the background; the cache only ever receives complete files)."""
        import threading

        outcome: dict = {}

        def work():
            try:
                outcome["path"] = self.download(filename, required)
            except BaseException as err:  # noqa: BLE001 - handed to the caller below
                outcome["error"] = err

        worker = threading.Thread(target=work, name=f"download {filename}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise CheckpointError(f"{filename} of {self.describe()} was not downloaded within timeout={self.timeout} "
                                  f"s (the Hub did not answer in time); retry, or raise the timeout")
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("path")

    def download(self, filename: str, required: bool) -> str | None:
        """``hf_hub_download`` with transient failures (5xx, 408, 429, network errors, timeouts) retried
        ``max_retries`` times with exponential backoff (0.5 s, 1 s, 2 s, ...); None for a missing optional file."""
        import time

        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        from .version import __version__

        timeout = {} if self.timeout is None else {"etag_timeout": min(self.timeout, 10.0)}
        for attempt in range(self.max_retries + 1):
            try:
                return hf_hub_download(self.name, filename, library_name="vanilla-transformer",
                                       library_version=__version__, **self.hub_kwargs, **timeout)
            except Exception as err:  # noqa: BLE001 - classified below, re-raised translated
                if isinstance(err, LocalEntryNotFoundError) and self.offline:
                    if not required:
                        return None
                    raise self.hub_error(filename, required) from None
                if not is_transient(err):
                    if isinstance(err, LocalEntryNotFoundError):  # (a subclass of EntryNotFoundError)
                        raise self.hub_error(filename, required) from None
                    if isinstance(err, EntryNotFoundError):
                        if required:
                            raise CheckpointError(f"The {self.describe()} has no {filename}") from None
                        return None
                    raise self.hub_error(filename, required, err) from None
                if attempt == self.max_retries:
                    raise CheckpointError(f"{filename} of {self.describe()} could not be downloaded after "
                                          f"{attempt + 1} attempts: {describe_transient(err)}") from err
                time.sleep(0.5 * 2 ** attempt)
        return None  # pragma: no cover - the loop returns or raises

    def hub_error(self, filename: str, required: bool, err: Exception | None = None) -> Exception:
        """The :class:`CheckpointError` saying why ``filename`` could not be fetched (``err`` from the Hub)."""
        from huggingface_hub.errors import (
            HfHubHTTPError,
            HFValidationError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if err is None:  # not in the local cache and not downloadable
            why = " (offline mode: HF_HUB_OFFLINE or local_files_only=True)" if self.offline else (
                " (is the Hub reachable?)")
            return CheckpointError(f"{filename} of {self.describe()} is not in the local Hugging Face cache and "
                                   f"cannot be downloaded{why}")
        if isinstance(err, HFValidationError):
            return CheckpointError(f"{self.name!r} is neither a local directory nor a valid Hub repo id ({err})")
        if isinstance(err, RevisionNotFoundError):
            return CheckpointError(f"The Hub repo {self.name!r} has no revision {self.revision!r}")
        status = http_status(err)
        if isinstance(err, RepositoryNotFoundError):
            hint = ("it does not exist, or it is private or gated and no token was sent (pass token= or set "
                    "HF_TOKEN)") if status == 401 else (
                "it does not exist, or it is private or gated and your token has no access to it")
            return CheckpointError(f"Cannot read the Hub repo {self.name!r}: {hint}")
        if isinstance(err, HfHubHTTPError):
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            return CheckpointError(f"The Hub refused {filename} of {self.describe()} (HTTP {status or '?'}): "
                                   f"{message}")
        if isinstance(err, ValueError):  # e.g. force_download together with offline mode
            return CheckpointError(f"Cannot fetch {filename} of {self.describe()}: {err}")
        return err

    def pin_commit(self, path: str, filename: str) -> None:
        """Pin later fetches to the commit whose snapshot ``path`` (of ``filename``) lies in."""
        if self.commit_hash is None:
            snapshot = Path(path).parents[len(PurePosixPath(filename).parts) - 1]
            if snapshot.parent.name == "snapshots" and COMMIT_HASH.match(snapshot.name):
                self.commit_hash = snapshot.name

    def cached(self, filename: str) -> bool | None:
        """True when ``filename`` exists (locally or in the HF cache), False when it is known not to exist
        (locally, or recorded absent by the HF cache at the pinned commit), None when the cache does not know."""
        if self.is_local:
            return os.path.isfile(os.path.join(self.name, filename))
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.name, filename, cache_dir=self.cache_dir,
                                       revision=self.commit_hash or self.revision)
        # huggingface_hub's documented returns: a path, None (not cached), or a marker of a known absence
        return True if isinstance(found, str) else (None if found is None else False)

    def list_files(self) -> list[str] | None:
        """The checkpoint's file names, or None when they cannot be listed (offline, Hub errors)."""
        if self.is_local:
            root = Path(self.name)
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        if self.offline:
            return None
        try:
            from huggingface_hub import HfApi

            return sorted(HfApi(token=self.token).list_repo_files(
                self.name, revision=self.commit_hash or self.revision))
        except Exception:  # noqa: BLE001 - only used to improve an error message
            return None


def http_status(err: BaseException) -> int | None:
    """The HTTP status of a Hub error's response, None when it has none.

    >>> http_status(ValueError("no response"))
    """
    return getattr(getattr(err, "response", None), "status_code", None)


def exception_chain(err: BaseException | None):
    """``err``, then its cause (or context), then that one's, ... each once.

    >>> try:
    ...     try:
    ...         raise TimeoutError("read")
    ...     except TimeoutError as inner:
    ...         raise ValueError("wrapped") from inner
    ... except ValueError as outer:
    ...     [type(e).__name__ for e in exception_chain(outer)]
    ['ValueError', 'TimeoutError']
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_transient(err: BaseException) -> bool:
    """Whether a Hub failure is worth retrying: a 5xx, 408 or 429 answer, a network error or a timeout,
    anywhere in the exception's chain (huggingface_hub wraps them).

    >>> is_transient(TimeoutError("read timed out")), is_transient(ValueError("bad repo id"))
    (True, False)
    """
    from huggingface_hub.errors import HfHubHTTPError

    transport = ()
    try:
        import httpx

        transport = (httpx.TransportError,)
    except ImportError:  # pragma: no cover - huggingface_hub installs httpx
        pass
    for link in exception_chain(err):
        if isinstance(link, (TimeoutError, ConnectionError, *transport)):
            return True
        if isinstance(link, HfHubHTTPError):
            status = http_status(link)
            return status is not None and (status >= 500 or status in (408, 429))
    return False


def describe_transient(err: BaseException) -> str:
    """The innermost cause of a transient failure in one line (``HTTP 503``, ``ReadTimeout: ...``).

    >>> describe_transient(TimeoutError("read timed out"))
    'TimeoutError: read timed out'
    """
    for link in exception_chain(err):
        if http_status(link) is not None:
            return f"HTTP {http_status(link)}"
    return f"{type(link).__name__}: {link}"


def verify_download(path: str, what: str) -> None:
    """Check a file of the Hugging Face cache against the checksum its blob is named by (sha256 for LFS files,
    the git blob sha1 otherwise); on a mismatch delete it from the cache and raise :class:`CheckpointError`.

    Files not stored under a checksum name (local folders, caches without symlinks) are left alone.

    >>> verify_download(__file__, "this module")  # not a cache blob: nothing to check
    """
    import hashlib

    blob = Path(os.path.realpath(path))
    expected = blob.name
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", expected) or blob.parent.name != "blobs":
        return
    digest = hashlib.sha256() if len(expected) == 64 else hashlib.sha1(b"blob %d\0" % blob.stat().st_size)
    with open(blob, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        for stale in {blob, Path(path)}:
            stale.unlink(missing_ok=True)
        raise CheckpointError(f"{what}: the downloaded content does not match its checksum ({expected}); it was "
                              f"deleted from the cache. Retry, or report the repo if it happens again.")


def _no_weights_error(checkpoint: Checkpoint) -> CheckpointError:
    """The error for a checkpoint without safetensors weights, naming the unsafe formats it offers instead."""
    files = checkpoint.list_files()
    if files is None:  # offline or unlistable: look for the unsafe formats one name at a time
        files = [name for name in UNSAFE_WEIGHTS if checkpoint.cached(name)]
    unsafe = [name for name in UNSAFE_WEIGHTS if name in files]
    if unsafe:
        return CheckpointError(
            f"{checkpoint.describe()} offers only {', '.join(unsafe)}, which is refused: only safetensors are "
            f"loaded, because these formats can execute code when read (pickle in PyTorch .bin files, Keras "
            f"Lambda layers and custom objects in .h5/.keras files). Convert the checkpoint to safetensors "
            f"({WEIGHTS_NAME}).")
    listing = f"; it has: {', '.join(files)}" if files else ""
    return CheckpointError(f"{checkpoint.describe()} has no weights ({WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME})"
                           f"{listing}{checkpoint.offline_hint()}")


# ------------------------------------------------------------------------------------------ weights
def state_dict(model) -> dict[str, np.ndarray]:
    """The model's weights as numpy arrays by stable name (what ``model.safetensors`` holds).

    Raises :class:`CheckpointError` when the names do not cover every weight of the model, so that a save
    can never silently drop a tensor.

    ``model``: a model of this package (it has ``named_variables()``; it is built if needed) -> a dict of
    stable name (``encoder.layers.0.feed_forward.fc1.kernel``) -> C-contiguous numpy array in the weight's dtype.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.checkpoint_io import state_dict
        >>> config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...                            num_decoder_layers=1, max_position_embeddings=32)
        >>> tensors = state_dict(TransformerForSeq2SeqLM(config))
        >>> len(tensors)
        43
        >>> tensors["shared.embeddings"].shape, tensors["shared.embeddings"].dtype
        ((20, 8), dtype('float32'))
        >>> tensors["encoder.layers.0.feed_forward.fc1.kernel"].shape
        (8, 16)
    """
    named = model.named_variables()
    weights = {id(weight) for weight in model.weights}
    unnamed = len(weights - {id(variable) for variable in named.values()})
    if unnamed:
        raise CheckpointError(f"{type(model).__name__}: {unnamed} of its {len(weights)} weights have no name; "
                              f"saving would lose them")
    return {name: np.ascontiguousarray(np.asarray(variable.numpy())) for name, variable in named.items()}


def write_weights(state_dict: dict[str, np.ndarray], directory: str | os.PathLike,
                  max_shard_size: int | str | None = None) -> list[str]:
    """Write safetensors (one file, or shards + index as transformers does); return the file names.

    ``max_shard_size`` (bytes, or a string such as ``"200MB"``): split into ``model-0000k-of-0000n.safetensors``
    files of at most that size (a single tensor larger than it gets a shard of its own) and write
    ``model.safetensors.index.json`` mapping every tensor to its shard. ``None``: one ``model.safetensors``.

    Args:
        state_dict: tensor name -> numpy array (e.g. from :func:`state_dict`).
        directory: an existing folder; files of the same names are overwritten.
        max_shard_size: the largest shard, in bytes or as a string (``"5GB"``); None: no sharding.

    Returns:
        The names of the files written, the index first when sharded.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from vanilla_transformer.checkpoint_io import write_weights
        >>> tensors = {"a": np.zeros((4, 4), "float32"), "b": np.ones(16, "float32")}  # 64 bytes each
        >>> write_weights(tensors, tempfile.mkdtemp())
        ['model.safetensors']
        >>> write_weights(tensors, tempfile.mkdtemp(), max_shard_size=100)
        ['model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    if max_shard_size is None:
        save_file(state_dict, str(directory / WEIGHTS_NAME), metadata={"format": "np"})
        return [WEIGHTS_NAME]
    split = split_state_dict_into_shards_factory(
        state_dict, get_storage_size=lambda array: array.nbytes, filename_pattern=SHARD_PATTERN,
        max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        save_file({name: state_dict[name] for name in names}, str(directory / filename), metadata={"format": "np"})
    if not split.is_sharded:
        return list(split.filename_to_tensors)
    total = int(sum(array.nbytes for array in state_dict.values()))
    index = {"metadata": {"total_size": total}, "weight_map": split.tensor_to_filename}
    (directory / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return [WEIGHTS_INDEX_NAME, *split.filename_to_tensors]


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
        >>> from vanilla_transformer.checkpoint_io import atomic_directory
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
        >>> from vanilla_transformer.checkpoint_io import exchange_paths
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

    Loading (:class:`Checkpoint` on a local directory) and writing call it first, so such a kill loses
    nothing: the directory reads as it was before the interrupted write.

    Args:
        target: the directory :func:`atomic_directory` writes.

    Returns:
        True when a retired directory was moved back to ``target``; False when there was nothing to do.

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer.checkpoint_io import recover_interrupted_swap
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
        >>> from vanilla_transformer.checkpoint_io import remove_abandoned_staging
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


def _weight_files(checkpoint: Checkpoint) -> tuple[dict[str, str], dict[str, str] | None]:
    """Local paths of a checkpoint's weight files by name, and the shard index's tensor -> file map (None
    for a single ``model.safetensors``). Shard names are checked to stay inside the checkpoint."""
    source = checkpoint.describe()
    single = checkpoint.fetch(WEIGHTS_NAME)
    weight_map = None
    if single is not None:
        paths = {WEIGHTS_NAME: single}
    else:
        index_path = checkpoint.fetch(WEIGHTS_INDEX_NAME)
        if index_path is None:
            raise _no_weights_error(checkpoint)
        try:
            weight_map = json.loads(Path(index_path).read_text())["weight_map"]
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError("weight_map must be a non-empty mapping of tensor name -> shard file")
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{WEIGHTS_INDEX_NAME} of {source} is not a valid index: {err}") from None
        files = sorted(set(weight_map.values()), key=str)
        for filename in files:
            check_filename(filename, f"{WEIGHTS_INDEX_NAME} of {source}", "shard")
            if not filename.endswith(".safetensors"):
                raise CheckpointError(f"{WEIGHTS_INDEX_NAME} of {source} names the shard {filename!r}: only "
                                      f".safetensors files are read")
        paths = {}
        for filename in files:
            path = checkpoint.fetch(filename)
            if path is None:
                raise CheckpointError(f"{WEIGHTS_INDEX_NAME} of {source} lists the shard {filename}, which is "
                                      f"missing from the checkpoint{checkpoint.offline_hint()}")
            paths[filename] = path
    return paths, weight_map


def read_weights(name_or_path, hub_kwargs: dict | None = None) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint (single file or shards), from safetensors only.

    ``name_or_path``: a directory, a Hub repo id (with ``hub_kwargs`` of ``hf_hub_download``) or a
    :class:`Checkpoint`. As transformers does, ``model.safetensors`` is used when present, else the
    shard index and the shards it names (which must be ``.safetensors`` files inside the checkpoint).

    Args:
        name_or_path: the checkpoint (directory, Hub repo id or :class:`Checkpoint`).
        hub_kwargs: keyword arguments of :class:`Checkpoint` (``revision``, ``token``, ...) for a repo id.

    Returns:
        Tensor name -> numpy array, as stored. Raises :class:`CheckpointError` when there are no safetensors
        weights or a file is corrupt or inconsistent with the index.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from vanilla_transformer.checkpoint_io import read_weights, write_weights
        >>> folder = tempfile.mkdtemp()
        >>> files = write_weights({"a": np.zeros((4, 4), "float32"), "b": np.ones(16, "float32")}, folder,
        ...                       max_shard_size=100)
        >>> {name: array.shape for name, array in sorted(read_weights(folder).items())}  # shards joined
        {'a': (4, 4), 'b': (16,)}
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    checkpoint = Checkpoint.of(name_or_path, hub_kwargs)
    source = checkpoint.describe()
    paths, weight_map = _weight_files(checkpoint)
    tensors: dict[str, np.ndarray] = {}
    for filename, path in paths.items():
        try:
            shard = load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{filename} of {source} is corrupt or truncated: {err}") from None
        if weight_map is not None:
            stray = sorted(name for name in shard if weight_map.get(name) != filename)
            if stray:
                raise CheckpointError(f"{filename} of {source} holds tensors that {WEIGHTS_INDEX_NAME} places "
                                      f"elsewhere or not at all: {stray}")
        tensors.update(shard)
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise CheckpointError(f"tensors listed in {WEIGHTS_INDEX_NAME} of {source} are missing from the "
                                  f"shards: {missing}")
    return tensors


def is_float_dtype(dtype) -> bool:
    """float16/32/64, and bfloat16 (an ``ml_dtypes`` type numpy does not count as floating).

    ``dtype``: a numpy dtype or anything ``np.dtype`` accepts -> bool.

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer.checkpoint_io import is_float_dtype
        >>> is_float_dtype(np.float16), is_float_dtype("float32"), is_float_dtype(np.int64)
        (True, True, False)
        >>> import ml_dtypes
        >>> is_float_dtype(ml_dtypes.bfloat16)
        True
    """
    return np.issubdtype(dtype, np.floating) or "float" in np.dtype(dtype).name


def raise_if_mismatched(source: str, target: str, sections: list[tuple[str, list[str]]], missing: list[str],
                        unexpected: list[str], strict: bool, described_as: str | None = None) -> None:
    """Raise one :class:`CheckpointError` listing every problem of a checkpoint against ``target``.

    ``sections`` are (label, items) pairs that are always errors (shape or dtype mismatches); missing and
    unexpected tensors are errors only when ``strict``. Used by native loading and by conversion.

    Args:
        source: what was read (a directory or repo), for the message.
        target: what it was loaded into (a class name), named for unexpected tensors.
        sections: ``(label, problems)`` pairs; a non-empty list of problem strings is always an error.
        missing: names the model has and the checkpoint lacks.
        unexpected: names the checkpoint has and the model does not use.
        strict: whether missing or unexpected names are errors.
        described_as: how to name ``target`` in the first line (default ``target``).

    Returns:
        None when there is nothing to report; else raises :class:`CheckpointError`, one line per problem.

    Example:
        >>> from vanilla_transformer.checkpoint_io import raise_if_mismatched
        >>> raise_if_mismatched("ckpt", "MyModel", [("shape mismatch", [])], missing=["b"], unexpected=[],
        ...                     strict=False)  # missing names are fine when not strict
        >>> raise_if_mismatched("ckpt", "MyModel", [("shape mismatch", ["a: (2,) vs (3,)"])], missing=["b"],
        ...                     unexpected=["c"], strict=True)
        Traceback (most recent call last):
        ...
        vanilla_transformer.checkpoint_io.CheckpointError: ckpt does not match MyModel:
          shape mismatch: a: (2,) vs (3,)
          missing from the checkpoint: ['b']
          not used by MyModel: ['c']
    """
    problems = [f"{label}: " + "; ".join(items) for label, items in sections if items]
    if strict and missing:
        problems.append(f"missing from the checkpoint: {missing}")
    if strict and unexpected:
        problems.append(f"not used by {target}: {unexpected}")
    if problems:
        raise CheckpointError(f"{source} does not match {described_as or target}:\n  " + "\n  ".join(problems))


def assign_weights(model, tensors: dict[str, np.ndarray], strict: bool = True,
                   source: str = "checkpoint") -> dict[str, list[str]]:
    """Copy named tensors into the model; report missing / unexpected / mismatched names.

    With ``strict`` any discrepancy raises :class:`CheckpointError` listing them; otherwise matching
    weights load, shape/dtype mismatches still raise, and the report is returned (as transformers logs it).

    Args:
        model: a model of this package (built if needed); its variables are assigned in place.
        tensors: name -> numpy array (float dtypes only), e.g. from :func:`read_weights`.
        strict: raise on missing or unexpected names too.
        source: the checkpoint's name in error messages.

    Returns:
        ``{"missing_keys": [...], "unexpected_keys": [...]}``, sorted names.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.checkpoint_io import assign_weights, state_dict
        >>> config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...                            num_decoder_layers=1, max_position_embeddings=32)
        >>> tensors = state_dict(TransformerForSeq2SeqLM(config))
        >>> model = TransformerForSeq2SeqLM(config)
        >>> assign_weights(model, tensors)
        {'missing_keys': [], 'unexpected_keys': []}
        >>> bool((model.named_variables()["shared.embeddings"].numpy() == tensors["shared.embeddings"]).all())
        True
        >>> del tensors["decoder.layers.0.feed_forward.fc2.bias"]
        >>> assign_weights(model, tensors, strict=False)
        {'missing_keys': ['decoder.layers.0.feed_forward.fc2.bias'], 'unexpected_keys': []}
    """
    variables = model.named_variables()
    missing = sorted(set(variables) - set(tensors))
    unexpected = sorted(set(tensors) - set(variables))
    mismatched = [f"{name}: checkpoint {tuple(tensors[name].shape)} vs model {tuple(variables[name].shape)}"
                  for name in sorted(set(variables) & set(tensors))
                  if tuple(tensors[name].shape) != tuple(variables[name].shape)]
    bad_dtype = [f"{name}: {tensors[name].dtype}" for name in sorted(set(variables) & set(tensors))
                 if not is_float_dtype(tensors[name].dtype)]
    target = type(model).__name__
    raise_if_mismatched(source, target, [("shape mismatch", mismatched), ("non-float tensors", bad_dtype)], missing,
                        unexpected, strict, described_as=f"{target}'s config")
    for name, variable in variables.items():
        if name in tensors:
            variable.assign(tensors[name].astype(variable.dtype))
    return {"missing_keys": missing, "unexpected_keys": unexpected}




# ------------------------------------------------------------------------------------------ loading
def load_config(name_or_path, hub_kwargs: dict | None = None) -> tuple[dict, str]:
    """``config.json`` of a checkpoint as a dict, and its local path.

    ``name_or_path``: a directory, a Hub repo id (with ``hub_kwargs`` of :class:`Checkpoint`) or a
    :class:`Checkpoint` -> ``(config dict, local path of config.json)``. Raises :class:`CheckpointError`
    when the file is missing or is not a JSON object.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer import TransformerConfig
        >>> from vanilla_transformer.checkpoint_io import load_config
        >>> folder = tempfile.mkdtemp()
        >>> TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16).save_pretrained(folder)
        >>> raw, path = load_config(folder)
        >>> raw["model_type"], raw["d_model"], path.endswith("config.json")
        ('vanilla_transformer', 8, True)
    """
    checkpoint = Checkpoint.of(name_or_path, hub_kwargs)
    path = checkpoint.fetch(CONFIG_NAME, required=True)
    try:
        raw = json.loads(Path(path).read_text())
    except ValueError as err:
        raise CheckpointError(f"{CONFIG_NAME} of {checkpoint.describe()} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{CONFIG_NAME} of {checkpoint.describe()} is not a JSON object")
    return raw, path


def finish_loading(model, checkpoint: Checkpoint, loading_info: dict[str, list[str]],
                   default_generation_config=None):
    """The end of every load: report missing / unexpected weights (once, as transformers logs them), read
    ``generation_config.json`` (else keep ``default_generation_config``, else the model's own) and record
    where the model came from (``model.name_or_path``, ``model.commit_hash``, ``model.loading_info``).

    Args:
        model: the model just filled by :func:`assign_weights`.
        checkpoint: the :class:`Checkpoint` it was read from.
        loading_info: the report of :func:`assign_weights`.
        default_generation_config: a ``transformers.GenerationConfig`` used when the checkpoint has none.

    Returns:
        ``model`` itself.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.checkpoint_io import Checkpoint, finish_loading
        >>> config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...                            num_decoder_layers=1, max_position_embeddings=32)
        >>> folder = str(TransformerForSeq2SeqLM(config).save_pretrained(tempfile.mkdtemp()))
        >>> model = TransformerForSeq2SeqLM(config)
        >>> report = {"missing_keys": [], "unexpected_keys": []}
        >>> finish_loading(model, Checkpoint(folder), report) is model
        True
        >>> model.name_or_path == folder, model.loading_info, model.commit_hash
        (True, {'missing_keys': [], 'unexpected_keys': []}, None)
    """
    target = type(model).__name__
    if loading_info.get("missing_keys"):
        logger.warning("Some weights of %s were not initialized from the checkpoint at %s and are newly "
                       "initialized: %s", target, checkpoint.describe(), loading_info["missing_keys"])
    if loading_info.get("unexpected_keys"):
        logger.warning("Some weights of the checkpoint at %s were not used when initializing %s: %s",
                       checkpoint.describe(), target, loading_info["unexpected_keys"])
    path = checkpoint.fetch(GENERATION_CONFIG_NAME)
    if path is not None:
        from transformers import GenerationConfig

        try:
            model.generation_config = GenerationConfig.from_pretrained(os.path.dirname(path))
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{GENERATION_CONFIG_NAME} of {checkpoint.describe()} is invalid: {err}") from None
    elif default_generation_config is not None:
        model.generation_config = default_generation_config
    model.record_origin(checkpoint.name, checkpoint.commit_hash, loading_info)
    return model


def registered_model_class(name: str | None):
    """The model class of this package called ``name`` (found in Keras' serialization registry), or None.

    >>> registered_model_class("TransformerForSeq2SeqLM").__name__
    'TransformerForSeq2SeqLM'
    >>> registered_model_class("MaskedAccuracy") is None  # registered too, but not a model
    True
    """
    import keras

    found = keras.saving.get_registered_object(f"vanilla_transformer>{name}") if name else None
    return found if isinstance(found, type) and issubclass(found, keras.Model) else None


def resolves_architecture(cls) -> bool:
    """Whether ``cls.from_pretrained`` picks the class from the checkpoint's ``architectures`` (``AutoModel``
    and the common base class do; concrete classes and their subclasses load as themselves).

    Only the class's own ``resolves_architecture`` attribute counts, not an inherited one.

    Example:
        >>> from vanilla_transformer import AutoModel, TransformerForSeq2SeqLM, TransformerPreTrainedModel
        >>> from vanilla_transformer.checkpoint_io import resolves_architecture
        >>> resolves_architecture(AutoModel), resolves_architecture(TransformerPreTrainedModel)
        (True, True)
        >>> resolves_architecture(TransformerForSeq2SeqLM)
        False
    """
    return bool(cls.__dict__.get("resolves_architecture", False))
