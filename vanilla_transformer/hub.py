"""The Hugging Face Hub layout: save_pretrained / from_pretrained / push_to_hub and the model card.

A saved model is a directory (or Hub repo) holding ``config.json``, ``model.safetensors`` (or
``model.safetensors.index.json`` + ``model-0000k-of-0000n.safetensors``), ``generation_config.json``, the
tokenizer files when a tokenizer is saved with it, and ``README.md`` rendered from ``model_card.md``.

Only safetensors are ever read: nothing from a checkpoint is executed. Checkpoints that offer only pickled
(``pytorch_model.bin``) or Keras/HDF5 (``tf_model.h5``, ``model.keras``) weights are refused, and file names
taken from a shard index must stay inside the checkpoint.

Hub access goes through ``huggingface_hub`` only (``hf_hub_download`` and ``HfApi``), so its cache
(``HF_HOME``/``HF_HUB_CACHE`` or ``cache_dir=``), ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and ``HF_TOKEN`` apply
as everywhere in the Hugging Face ecosystem. Every problem surfaces as one :class:`CheckpointError` with a
readable message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from huggingface_hub import ModelCard, ModelCardData, constants, split_state_dict_into_shards_factory

from .configuration import TransformerConfig
from .modeling import MODEL_CLASSES, TransformerPreTrainedModel

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
TEMPLATE_PATH = Path(__file__).with_name("model_card.md")
_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: missing, corrupt, unsafe or mismatched files."""


# ------------------------------------------------------------------------------------------ saving
def _state_dict(model: TransformerPreTrainedModel) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(np.asarray(variable.numpy()))
            for name, variable in model.named_variables().items()}


def write_weights(state_dict: dict[str, np.ndarray], directory: str | os.PathLike,
                  max_shard_size: int | str | None = None) -> list[str]:
    """Write safetensors (one file, or shards + index as transformers does); return the file names.

    ``max_shard_size`` (bytes, or a string such as ``"200MB"``): split into ``model-0000k-of-0000n.safetensors``
    files of at most that size (a single tensor larger than it gets a shard of its own) and write
    ``model.safetensors.index.json`` mapping every tensor to its shard. ``None``: one ``model.safetensors``.
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


def _hub_origin(model) -> str | None:
    """The Hub repo id the model was loaded from (None for local directories and new models)."""
    origin = getattr(model, "name_or_path", None)
    if not isinstance(origin, str) or not origin or os.path.exists(origin):
        return None
    return origin if re.fullmatch(r"[\w.-]+/[\w.-]+", origin) else None


def render_model_card(model: TransformerPreTrainedModel, info: dict[str, Any] | None = None) -> ModelCard:
    """The repo's README.md: YAML metadata (``ModelCardData``) and the ``model_card.md`` template.

    ``info`` (merged over ``model.model_card_info``) may hold ``license``, ``datasets``, ``base_model``,
    ``language``, ``hyperparameters`` (dict), ``results`` (dict metric -> value), ``dataset_name``,
    ``repo_id``, ``description``, ``tags``. ``base_model`` defaults to the Hub repo the model was loaded
    from (a fine-tune), unless that is ``repo_id`` itself.
    """
    # json round trip: plain dicts/lists (Keras wraps attributes of a model in tracked containers)
    info = json.loads(json.dumps({**getattr(model, "model_card_info", {}), **(info or {})}))
    config = model.config
    if "base_model" not in info:
        origin = _hub_origin(model)
        if origin is not None and origin != info.get("repo_id"):
            info["base_model"] = origin
    results = info.get("results") or {}
    task = model.pipeline_tag
    eval_results = None
    if results:
        from huggingface_hub import EvalResult

        eval_results = [
            EvalResult(task_type=task, dataset_type=info.get("dataset_type", info.get("dataset_name", "custom")),
                       dataset_name=info.get("dataset_name", "custom"), metric_type=metric.lower(),
                       metric_value=float(value))
            for metric, value in results.items()
        ]
    tags = ["keras", "vanilla-transformer", "transformer", config.architecture, task]
    tags += [tag for tag in info.get("tags") or [] if tag not in tags]
    card_data = ModelCardData(
        library_name="vanilla-transformer", license=info.get("license", "apache-2.0"),
        tags=tags, pipeline_tag=task,
        datasets=info.get("datasets"), metrics=sorted({m.lower() for m in results}) or None,
        base_model=info.get("base_model"), language=info.get("language"),
        model_name=info.get("repo_id", type(model).__name__), eval_results=eval_results)
    architecture = {
        "variant": config.architecture, "class": type(model).__name__,
        "encoder layers": config.num_encoder_layers if config.has_encoder else 0,
        "decoder layers": config.num_decoder_layers if config.has_decoder else 0,
        "d_model": config.d_model, "heads": config.num_heads, "d_ff": config.d_ff,
        "vocabulary": config.vocab_size, "positions": f"{config.position_embedding} ({config.max_position_embeddings})",
        "normalisation": "pre-LN" if config.norm_first else "post-LN (paper)",
        "parameters": f"{model.num_parameters():,}",
    }
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATE_PATH), model_class=type(model).__name__,
        repo_id=info.get("repo_id", "path/to/model"), description=info.get("description", ""),
        architecture=architecture, hyperparameters=info.get("hyperparameters") or {}, results=results,
        dataset_name=info.get("dataset_name"), base_model=info.get("base_model"))


def save_pretrained(model: TransformerPreTrainedModel, save_directory, tokenizer=None,
                    max_shard_size: int | str | None = None, model_card: dict[str, Any] | None = None,
                    format: str = "vanilla_transformer") -> Path:
    """Write the model (and tokenizer) in the Hub layout; see the module docstring.

    The files are written to a temporary directory beside ``save_directory`` and swapped in, so an
    interruption leaves either the previous complete checkpoint or the new complete one (and no stale
    shards of an earlier save remain). ``max_shard_size`` shards the weights (see :func:`write_weights`).
    ``format="transformers"`` writes a checkpoint of the matching transformers class instead.
    """
    if format not in ("vanilla_transformer", "transformers"):
        raise ValueError(f"format must be 'vanilla_transformer' or 'transformers', got {format!r}")
    target = Path(save_directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        if format == "transformers":
            from .convert import export_to_transformers

            export_to_transformers(model, staging, tokenizer=tokenizer)
        else:
            config = model.config
            config.architectures = [type(model).__name__]
            config.save_pretrained(staging)
            model.generation_config.save_pretrained(staging)
            write_weights(_state_dict(model), staging, max_shard_size)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            render_model_card(model, model_card).save(staging / "README.md")
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with renames only (each one atomic on POSIX)."""
    if not target.exists():
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(retired)
    os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


# ------------------------------------------------------------------------------------------ loading
def _check_filename(filename: str, source: str, what: str = "file") -> str:
    """Reject names that would leave the checkpoint directory (absolute, ``..``, backslashes, empty)."""
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
    """

    def __init__(self, name_or_path, revision: str | None = None, cache_dir=None, force_download: bool = False,
                 local_files_only: bool = False, token: str | bool | None = None, **_ignored):
        self.name = os.fspath(name_or_path)
        self.is_local = os.path.isdir(self.name)
        self.revision = revision
        self.cache_dir = cache_dir
        self.force_download = force_download
        self.local_files_only = local_files_only
        self.token = token
        self.commit_hash: str | None = revision if revision and _COMMIT_HASH.match(revision) else None

    # --------------------------------------------------------------------------------------------
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

    def _offline_hint(self) -> str:
        return " (offline mode: only the local Hugging Face cache was searched)" if self.offline else ""

    def fetch(self, filename: str, required: bool = False) -> str | None:
        _check_filename(filename, self.describe())
        if self.is_local:
            path = os.path.join(self.name, *filename.split("/"))
            if os.path.isfile(path):
                return path
            if required:
                raise CheckpointError(f"{self.name} has no {filename}")
            return None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        from . import __version__

        try:
            path = hf_hub_download(self.name, filename, library_name="vanilla-transformer",
                                   library_version=__version__, **self.hub_kwargs)
        except HFValidationError as err:
            raise CheckpointError(f"{self.name!r} is neither a local directory nor a valid Hub repo id "
                                  f"({err})") from None
        except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError: test it first)
            if not required and self.offline:
                return None
            why = " (offline mode: HF_HUB_OFFLINE or local_files_only=True)" if self.offline else (
                " (is the Hub reachable?)")
            raise CheckpointError(f"{filename} of {self.describe()} is not in the local Hugging Face cache and "
                                  f"cannot be downloaded{why}") from None
        except EntryNotFoundError:
            if required:
                raise CheckpointError(f"The {self.describe()} has no {filename}") from None
            return None
        except RevisionNotFoundError:
            raise CheckpointError(f"The Hub repo {self.name!r} has no revision {self.revision!r}") from None
        except RepositoryNotFoundError as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            hint = ("it does not exist, or it is private or gated and no token was sent (pass token= or set "
                    "HF_TOKEN)") if status == 401 else (
                "it does not exist, or it is private or gated and your token has no access to it")
            raise CheckpointError(f"Cannot read the Hub repo {self.name!r}: {hint}") from None
        except HfHubHTTPError as err:
            status = getattr(getattr(err, "response", None), "status_code", "?")
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"The Hub refused {filename} of {self.describe()} (HTTP {status}): "
                                  f"{message}") from None
        except ValueError as err:  # e.g. force_download together with offline mode
            raise CheckpointError(f"Cannot fetch {filename} of {self.describe()}: {err}") from None
        if self.commit_hash is None:
            snapshot = Path(path).parents[len(PurePosixPath(filename).parts) - 1]
            if snapshot.parent.name == "snapshots" and _COMMIT_HASH.match(snapshot.name):
                self.commit_hash = snapshot.name
        return path

    def known_absent(self, filename: str) -> bool:
        """Whether the HF cache records that ``filename`` does not exist (at the pinned commit)."""
        if self.is_local:
            return not os.path.isfile(os.path.join(self.name, filename))
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.file_download import _CACHED_NO_EXIST

        cached = try_to_load_from_cache(self.name, filename, cache_dir=self.cache_dir,
                                        revision=self.commit_hash or self.revision)
        return cached is _CACHED_NO_EXIST

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


def _resolve(name_or_path, filename, *, required: bool, hub_kwargs: dict) -> str | None:
    """Local path of ``filename`` from a directory or a Hub repo (downloaded into the HF cache)."""
    return Checkpoint(name_or_path, **(hub_kwargs or {})).fetch(filename, required=required)


def _as_checkpoint(name_or_path, hub_kwargs: dict | None) -> Checkpoint:
    if isinstance(name_or_path, Checkpoint):
        return name_or_path
    return Checkpoint(name_or_path, **(hub_kwargs or {}))


def _no_weights_error(checkpoint: Checkpoint) -> CheckpointError:
    files = checkpoint.list_files()
    if files is None:  # offline or unlistable: look for the unsafe formats one name at a time
        files = [name for name in UNSAFE_WEIGHTS if _exists(checkpoint, name)]
    unsafe = [name for name in UNSAFE_WEIGHTS if name in files]
    if unsafe:
        return CheckpointError(
            f"{checkpoint.describe()} offers only {', '.join(unsafe)}, which is refused: only safetensors are "
            f"loaded, because these formats can execute code when read (pickle in PyTorch .bin files, Keras "
            f"Lambda layers and custom objects in .h5/.keras files). Convert the checkpoint to safetensors "
            f"({WEIGHTS_NAME}).")
    listing = f"; it has: {', '.join(files)}" if files else ""
    return CheckpointError(f"{checkpoint.describe()} has no weights ({WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME})"
                           f"{listing}{checkpoint._offline_hint()}")


def _exists(checkpoint: Checkpoint, filename: str) -> bool:
    if checkpoint.is_local:
        return os.path.isfile(os.path.join(checkpoint.name, filename))
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(checkpoint.name, filename, cache_dir=checkpoint.cache_dir,
                                    revision=checkpoint.commit_hash or checkpoint.revision)
    return isinstance(cached, str)


def read_weights(name_or_path, hub_kwargs: dict | None = None) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint (single file or shards), from safetensors only.

    ``name_or_path``: a directory, a Hub repo id (with ``hub_kwargs`` of ``hf_hub_download``) or a
    :class:`Checkpoint`. As transformers does, ``model.safetensors`` is used when present, else the
    shard index and the shards it names (which must be ``.safetensors`` files inside the checkpoint).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    checkpoint = _as_checkpoint(name_or_path, hub_kwargs)
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
            _check_filename(filename, f"{WEIGHTS_INDEX_NAME} of {source}", "shard")
            if not filename.endswith(".safetensors"):
                raise CheckpointError(f"{WEIGHTS_INDEX_NAME} of {source} names the shard {filename!r}: only "
                                      f".safetensors files are read")
        paths = {}
        for filename in files:
            path = checkpoint.fetch(filename)
            if path is None:
                raise CheckpointError(f"{WEIGHTS_INDEX_NAME} of {source} lists the shard {filename}, which is "
                                      f"missing from the checkpoint{checkpoint._offline_hint()}")
            paths[filename] = path
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


def _is_float(dtype) -> bool:
    """float16/32/64, and bfloat16 (an ``ml_dtypes`` type numpy does not count as floating)."""
    return np.issubdtype(dtype, np.floating) or "float" in np.dtype(dtype).name


def raise_if_mismatched(source: str, target: str, sections: list[tuple[str, list[str]]], missing: list[str],
                        unexpected: list[str], strict: bool, described_as: str | None = None) -> None:
    """Raise one :class:`CheckpointError` listing every problem of a checkpoint against ``target``.

    ``sections`` are (label, items) pairs that are always errors (shape or dtype mismatches); missing and
    unexpected tensors are errors only when ``strict``. Used by native loading and by conversion.
    """
    problems = [f"{label}: " + "; ".join(items) for label, items in sections if items]
    if strict and missing:
        problems.append(f"missing from the checkpoint: {missing}")
    if strict and unexpected:
        problems.append(f"not used by {target}: {unexpected}")
    if problems:
        raise CheckpointError(f"{source} does not match {described_as or target}:\n  " + "\n  ".join(problems))


def assign_weights(model: TransformerPreTrainedModel, tensors: dict[str, np.ndarray], strict: bool = True,
                   source: str = "checkpoint") -> dict[str, list[str]]:
    """Copy named tensors into the model; report missing / unexpected / mismatched names.

    With ``strict`` any discrepancy raises :class:`CheckpointError` listing them; otherwise matching
    weights load, shape/dtype mismatches still raise, and the report is returned (as transformers logs it).
    """
    variables = model.named_variables()
    missing = sorted(set(variables) - set(tensors))
    unexpected = sorted(set(tensors) - set(variables))
    mismatched = [f"{name}: checkpoint {tuple(tensors[name].shape)} vs model {tuple(variables[name].shape)}"
                  for name in sorted(set(variables) & set(tensors))
                  if tuple(tensors[name].shape) != tuple(variables[name].shape)]
    bad_dtype = [f"{name}: {tensors[name].dtype}" for name in sorted(set(variables) & set(tensors))
                 if not _is_float(tensors[name].dtype)]
    target = type(model).__name__
    raise_if_mismatched(source, target, [("shape mismatch", mismatched), ("non-float tensors", bad_dtype)], missing,
                        unexpected, strict, described_as=f"{target}'s config")
    for name, variable in variables.items():
        if name in tensors:
            variable.assign(tensors[name].astype(variable.dtype))
    return {"missing_keys": missing, "unexpected_keys": unexpected}


def load_config(name_or_path, hub_kwargs: dict | None = None) -> tuple[dict, str]:
    checkpoint = _as_checkpoint(name_or_path, hub_kwargs)
    path = checkpoint.fetch(CONFIG_NAME, required=True)
    try:
        raw = json.loads(Path(path).read_text())
    except ValueError as err:
        raise CheckpointError(f"{CONFIG_NAME} of {checkpoint.describe()} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{CONFIG_NAME} of {checkpoint.describe()} is not a JSON object")
    return raw, path


def from_pretrained(cls, pretrained_model_name_or_path, *, revision=None, cache_dir=None, force_download=False,
                    local_files_only=False, token=None, strict: bool | None = None, **config_overrides):
    """Build ``cls`` from a directory or Hub repo written by :func:`save_pretrained`.

    ``pretrained_model_name_or_path``: a local directory or a Hub repo id (``"user/model"``), downloaded with
    ``huggingface_hub`` into its cache (``cache_dir``, ``HF_HOME``), at ``revision`` (branch, tag, ``refs/pr/N``
    or commit id), with ``token`` (default ``HF_TOKEN`` / the saved login) and only from the cache when
    ``local_files_only`` or ``HF_HUB_OFFLINE=1``. Only the files needed are fetched: ``config.json``, the
    weights (``model.safetensors``, or the index and its shards) and ``generation_config.json``.

    ``cls`` may be a concrete model class or :class:`AutoModel` (the class comes from ``architectures``).
    A checkpoint of another head type loads the shared body; its report (``missing_keys`` and
    ``unexpected_keys``) is kept in ``model.loading_info``. transformers checkpoints (``marian``, ``bert``,
    ``openai-gpt``, ``gpt2``) are converted on the fly. Raises :class:`CheckpointError` on any problem.
    """
    checkpoint = Checkpoint(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                            force_download=force_download, local_files_only=local_files_only, token=token)
    name = checkpoint.name
    not_found, bad_revision, gated = _hub_errors()
    try:
        raw, _ = load_config(checkpoint)
        model_type = raw.get("model_type")
        if model_type != TransformerConfig.model_type:
            from .convert import SUPPORTED_MODEL_TYPES, load_transformers_checkpoint

            if model_type in SUPPORTED_MODEL_TYPES:
                hub_kwargs = {**checkpoint.hub_kwargs, "library_name": "vanilla-transformer"}
                return load_transformers_checkpoint(cls, name, raw, hub_kwargs, **config_overrides)
            raise CheckpointError(f"{name}: model_type {model_type!r} is not supported (expected "
                                  f"{TransformerConfig.model_type!r} or one of {sorted(SUPPORTED_MODEL_TYPES)})")
        raw.update(config_overrides)
        try:
            config = TransformerConfig.from_dict(raw)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{CONFIG_NAME} of {checkpoint.describe()} is not a valid TransformerConfig: "
                                  f"{err}") from None
        saved_class = (raw.get("architectures") or [None])[0]
        model_class = cls
        if cls is AutoModel or cls is TransformerPreTrainedModel:
            if saved_class not in MODEL_CLASSES:
                raise CheckpointError(f"{name}: config.architectures={raw.get('architectures')} names no class of "
                                      f"this package; load it with a concrete model class")
            model_class = MODEL_CLASSES[saved_class]
        try:
            model = model_class(config)
        except ValueError as err:
            raise CheckpointError(f"{checkpoint.describe()} cannot be loaded as {model_class.__name__}: "
                                  f"{err}") from None
        if strict is None:
            strict = saved_class in (None, model_class.__name__)
        model.loading_info = assign_weights(model.build_weights(), read_weights(checkpoint), strict=strict,
                                            source=checkpoint.describe())
        if model.loading_info["missing_keys"]:
            logger.warning("Some weights of %s were not initialized from the checkpoint at %s and are newly "
                           "initialized: %s", model_class.__name__, checkpoint.describe(),
                           model.loading_info["missing_keys"])
        if model.loading_info["unexpected_keys"]:
            logger.warning("Some weights of the checkpoint at %s were not used when initializing %s: %s",
                           checkpoint.describe(), model_class.__name__, model.loading_info["unexpected_keys"])
        gen_path = checkpoint.fetch(GENERATION_CONFIG_NAME)
        if gen_path is not None:
            from transformers import GenerationConfig

            try:
                model.generation_config = GenerationConfig.from_pretrained(os.path.dirname(gen_path))
            except (OSError, ValueError) as err:
                raise CheckpointError(f"{GENERATION_CONFIG_NAME} of {checkpoint.describe()} is invalid: "
                                      f"{err}") from None
    except (not_found, gated) as err:  # raised by other code paths (conversion); fetch() translates its own
        raise CheckpointError(f"{name!r} is not a model repo you can read (missing, private or gated; "
                              f"pass token= for private repos): {type(err).__name__}") from None
    except bad_revision:
        raise CheckpointError(f"{name!r} has no revision {revision!r}") from None
    model.name_or_path = name
    model.commit_hash = checkpoint.commit_hash
    return model


def _hub_errors():
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    return RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError


def load_tokenizer(name_or_path, revision=None, cache_dir=None, force_download=False, local_files_only=False,
                   token=None):
    """The tokenizer saved beside a model (a transformers ``AutoTokenizer``), or None when there is none.

    Works on a directory or a Hub repo id (same arguments as :func:`from_pretrained`); from the Hub only the
    tokenizer files (and ``config.json``) are downloaded. No code from the repo is run
    (``trust_remote_code=False``).
    """
    from transformers import AutoTokenizer

    checkpoint = _as_checkpoint(name_or_path, dict(revision=revision, cache_dir=cache_dir,
                                                   force_download=force_download,
                                                   local_files_only=local_files_only, token=token))
    if checkpoint.is_local:
        directory = checkpoint.name
        if not any(os.path.isfile(os.path.join(directory, f)) for f in TOKENIZER_FILES):
            return None
    else:
        config_path = checkpoint.fetch(CONFIG_NAME)  # pins the commit; AutoTokenizer may read it
        found = [path for path in (checkpoint.fetch(f) for f in TOKENIZER_FILES) if path is not None]
        if not found:
            if checkpoint.offline and not all(checkpoint.known_absent(f) for f in TOKENIZER_FILES):
                raise CheckpointError(f"The tokenizer files of {checkpoint.describe()} are not in the local Hugging "
                                      f"Face cache (offline mode: HF_HUB_OFFLINE or local_files_only=True); load "
                                      f"them once online")
            return None
        directory = os.path.dirname(found[0])
        if config_path is not None and os.path.dirname(config_path) != directory:  # pragma: no cover
            raise CheckpointError(f"{checkpoint.describe()}: files of one commit landed in different snapshots")
    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"The tokenizer files of {checkpoint.describe()} cannot be loaded: {err}") from None


class AutoModel:
    """Loads any saved model of this package as the class named in its ``config.architectures``.

    >>> model = AutoModel.from_pretrained("path/to/dir")  # doctest: +SKIP
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        return from_pretrained(cls, pretrained_model_name_or_path, **kwargs)


# ------------------------------------------------------------------------------------------ pushing
def push_to_hub(model: TransformerPreTrainedModel, repo_id: str, *, private: bool = False, token=None,
                commit_message: str | None = None, revision: str | None = None, create_pr: bool = False,
                max_shard_size: int | str | None = DEFAULT_MAX_SHARD_SIZE, tokenizer=None,
                model_card: dict | None = None, commit_description: str | None = None):
    """Create ``repo_id`` if needed and upload what :func:`save_pretrained` writes, in one commit.

    - ``private``: visibility of a repo created here (an existing repo keeps its own);
    - ``token``: defaults to ``HF_TOKEN`` / the saved login; the Hub is ``HF_ENDPOINT``;
    - ``revision``: the branch to commit to (created from ``main`` when missing);
    - ``create_pr``: open a pull request (``refs/pr/N``) instead of committing to the branch;
    - ``max_shard_size``: shard the weights above this size, as transformers does;
    - ``tokenizer``: saved and pushed beside the model (``load_tokenizer(repo_id)`` gets it back);
    - ``model_card``: extra model card information (see :func:`render_model_card`).

    Weight files of an earlier push that the new one does not write (old shards) are deleted in the same
    commit. Files that did not change are not uploaded again; when nothing changed no commit is made.
    Returns huggingface_hub's ``CommitInfo`` (``.oid`` is the commit id, ``.pr_url`` the pull request).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token, library_name="vanilla-transformer")
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        save_pretrained(model, folder, tokenizer=tokenizer, max_shard_size=max_shard_size,
                        model_card={"repo_id": repo_id, **(model_card or {})})
        return _commit_folder(api, folder, repo_id, revision=revision, create_pr=create_pr,
                              commit_message=commit_message or f"Upload {type(model).__name__}",
                              commit_description=commit_description)


def push_folder_to_hub(folder, repo_id: str, *, private: bool = False, token=None, commit_message=None,
                       revision=None, create_pr: bool = False, commit_description: str | None = None):
    """Upload an already saved model directory in one commit (the ``vanilla-transformer push`` command)."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{folder} is not a saved model directory (no {CONFIG_NAME})")
    if not ((folder / WEIGHTS_NAME).is_file() or (folder / WEIGHTS_INDEX_NAME).is_file()):
        raise CheckpointError(f"{folder} has no safetensors weights ({WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME})")
    api = HfApi(token=token, library_name="vanilla-transformer")
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    return _commit_folder(api, folder, repo_id, revision=revision, create_pr=create_pr,
                          commit_message=commit_message or f"Upload {folder.resolve().name}",
                          commit_description=commit_description)


def _commit_folder(api, folder: Path, repo_id: str, *, revision, create_pr, commit_message, commit_description):
    """One ``create_commit``: every file of ``folder``, and deletions of stale weight files."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    if revision is not None and not create_pr and revision != constants.DEFAULT_REVISION:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
    remote = api.list_repo_files(repo_id, revision=revision)
    operations += [CommitOperationDelete(path_in_repo=name) for name in remote
                   if WEIGHT_FILE_PATTERN.match(name) and name not in files]
    return api.create_commit(repo_id, operations, commit_message=commit_message,
                             commit_description=commit_description, revision=revision, create_pr=create_pr)
