"""Hub file access: where a checkpoint's files come from, fetched one at a time.

:class:`Checkpoint` reads a local directory, or a Hub repo through ``huggingface_hub`` only (so its cache,
``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and ``HF_TOKEN`` apply), pinned to one commit; downloads are retried on
transient failures (:func:`is_transient`) and checked against their checksums (:func:`verify_download`), and
file names taken from a checkpoint must stay inside it (:func:`check_filename`). Every problem surfaces as one
:class:`CheckpointError` with a readable message; :func:`describe_http_error` words a Hub HTTP refusal.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from huggingface_hub import constants

from .atomic_directories import recover_interrupted_swap

COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: missing, corrupt, unsafe or mismatched files.

    A ``ValueError``, so ``except ValueError`` catches it too; its message names the checkpoint and the problem.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer.hub_files import Checkpoint, CheckpointError
        >>> try:
        ...     Checkpoint(tempfile.mkdtemp()).fetch("config.json", required=True)
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
    vanilla_transformer.hub_files.CheckpointError: index: refusing file name '../etc/passwd': it points outside ...
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

    def fetch_json(self, filename: str) -> tuple[dict, str]:
        """A required JSON-object file, parsed, and its local path; :class:`CheckpointError` naming the file
        when it is missing, not valid JSON, or not a JSON object."""
        import json

        path = self.fetch(filename, required=True)
        try:
            value = json.loads(Path(path).read_text())
        except ValueError as err:
            raise CheckpointError(f"{filename} of {self.describe()} is not valid JSON: {err}") from None
        if not isinstance(value, dict):
            raise CheckpointError(f"{filename} of {self.describe()} is not a JSON object")
        return value, path

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
        if isinstance(err, RepositoryNotFoundError):
            hint = ("it does not exist, or it is private or gated and no token was sent (pass token= or set "
                    "HF_TOKEN)") if http_status(err) == 401 else (
                "it does not exist, or it is private or gated and your token has no access to it")
            return CheckpointError(f"Cannot read the Hub repo {self.name!r}: {hint}")
        if isinstance(err, HfHubHTTPError):
            return CheckpointError(f"The Hub refused {filename} of {self.describe()} {describe_http_error(err)}")
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


def describe_http_error(err: BaseException) -> str:
    """A Hub HTTP refusal in the words every message of this package uses: ``(HTTP <status>): <first line>``.

    ``err``: a Hub error (``HfHubHTTPError``; anything with ``.response.status_code``) -> its status (``?``
    when it has none) and the first line of its message (the exception's type name when the message is empty).

    Example:
        >>> from vanilla_transformer.hub_files import describe_http_error
        >>> class Refusal(Exception):
        ...     response = type("Response", (), {"status_code": 403})()
        >>> describe_http_error(Refusal("403 Forbidden: no write access\\nrequest id: abc"))
        '(HTTP 403): 403 Forbidden: no write access'
        >>> describe_http_error(ValueError(""))
        '(HTTP ?): ValueError'
    """
    message = str(err).strip()
    return f"(HTTP {http_status(err) or '?'}): {message.splitlines()[0] if message else type(err).__name__}"


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
