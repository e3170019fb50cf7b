"""The Hugging Face Hub layout: save_pretrained / from_pretrained / push_to_hub and the model card.

A saved model is a directory (or Hub repo) holding ``config.json``, ``model.safetensors`` (or
``model.safetensors.index.json`` + ``model-0000k-of-0000n.safetensors``), ``generation_config.json``, the
tokenizer files when a tokenizer is saved with it, and ``README.md`` rendered from ``model_card.md``.
Only safetensors are ever read: nothing from a checkpoint is executed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub import ModelCard, ModelCardData, constants, split_state_dict_into_shards_factory

from .configuration import TransformerConfig
from .modeling import MODEL_CLASSES, TransformerPreTrainedModel

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE  # model.safetensors
WEIGHTS_INDEX_NAME = constants.SAFETENSORS_INDEX_FILE  # model.safetensors.index.json
SHARD_PATTERN = "model{suffix}.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "source.spm", "target.spm", "sentencepiece.bpe.model",
                   "spiece.model")
UNSAFE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "model.keras", "flax_model.msgpack", "model.ckpt.index")
TEMPLATE_PATH = Path(__file__).with_name("model_card.md")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: missing, corrupt, unsafe or mismatched files."""


# ------------------------------------------------------------------------------------------ saving
def _state_dict(model: TransformerPreTrainedModel) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(np.asarray(variable.numpy()))
            for name, variable in model.named_variables().items()}


def write_weights(state_dict: dict[str, np.ndarray], directory: str | os.PathLike,
                  max_shard_size: int | str | None = None) -> list[str]:
    """Write safetensors (one file, or shards + index as transformers does); return the file names."""
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


def render_model_card(model: TransformerPreTrainedModel, info: dict[str, Any] | None = None) -> ModelCard:
    """The repo's README.md: YAML metadata (``ModelCardData``) and the ``model_card.md`` template.

    ``info`` (merged over ``model.model_card_info``) may hold ``license``, ``datasets``, ``base_model``,
    ``language``, ``hyperparameters`` (dict), ``results`` (dict metric -> value), ``dataset_name``,
    ``repo_id``, ``description``.
    """
    # json round trip: plain dicts/lists (Keras wraps attributes of a model in tracked containers)
    info = json.loads(json.dumps({**getattr(model, "model_card_info", {}), **(info or {})}))
    config = model.config
    results = info.get("results") or {}
    task = model.pipeline_tag
    eval_results = None
    if results:
        from huggingface_hub import EvalResult

        eval_results = [
            EvalResult(task_type=task, dataset_type=info.get("dataset_name", "custom"),
                       dataset_name=info.get("dataset_name", "custom"), metric_type=metric.lower(),
                       metric_value=float(value))
            for metric, value in results.items()
        ]
    card_data = ModelCardData(
        library_name="vanilla-transformer", license=info.get("license", "apache-2.0"),
        tags=["keras", "vanilla-transformer", config.architecture, task], pipeline_tag=task,
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
        dataset_name=info.get("dataset_name"))


def save_pretrained(model: TransformerPreTrainedModel, save_directory, tokenizer=None,
                    max_shard_size: int | str | None = None, model_card: dict[str, Any] | None = None,
                    format: str = "vanilla_transformer") -> Path:
    """Write the model (and tokenizer) in the Hub layout; see the module docstring.

    The files are written to a temporary directory beside ``save_directory`` and swapped in, so an
    interruption leaves either the previous complete checkpoint or the new complete one.
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
def _resolve(name_or_path, filename, *, required: bool, hub_kwargs: dict) -> str | None:
    """Local path of ``filename`` from a directory or a Hub repo (downloaded into the HF cache)."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise CheckpointError(f"{name_or_path} has no {filename}")
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(name_or_path, filename, **hub_kwargs)
    except EntryNotFoundError:
        if required:
            raise CheckpointError(f"The Hub repo {name_or_path!r} has no {filename}") from None
        return None
    except LocalEntryNotFoundError as err:
        if not required and _is_offline(hub_kwargs):
            return None
        raise CheckpointError(
            f"{filename} of {name_or_path!r} is not in the local cache and cannot be downloaded "
            f"(offline or unreachable Hub): {err}") from None


def _is_offline(hub_kwargs) -> bool:
    return bool(hub_kwargs.get("local_files_only")) or constants.HF_HUB_OFFLINE


def _hub_errors():
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    return RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError


def read_weights(name_or_path, hub_kwargs: dict | None = None) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint (single file or shards), from safetensors only."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    hub_kwargs = hub_kwargs or {}
    index_path = _resolve(name_or_path, WEIGHTS_INDEX_NAME, required=False, hub_kwargs=hub_kwargs)
    if index_path is not None:
        try:
            weight_map = json.loads(Path(index_path).read_text())["weight_map"]
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{WEIGHTS_INDEX_NAME} of {name_or_path} is not a valid index: {err}") from None
        files = sorted(set(weight_map.values()))
        for filename in files:
            if os.path.isabs(filename) or ".." in Path(filename).parts:
                raise CheckpointError(f"{WEIGHTS_INDEX_NAME} names {filename!r}, outside the checkpoint")
    else:
        files, weight_map = [WEIGHTS_NAME], None
        if _resolve(name_or_path, WEIGHTS_NAME, required=False, hub_kwargs=hub_kwargs) is None:
            unsafe = [f for f in UNSAFE_WEIGHTS
                      if _resolve(name_or_path, f, required=False, hub_kwargs=hub_kwargs) is not None]
            if unsafe:
                raise CheckpointError(
                    f"{name_or_path} offers only {', '.join(unsafe)}: these formats can execute code when loaded "
                    f"(pickle, Keras Lambda layers), so they are refused. Convert the checkpoint to safetensors.")
            raise CheckpointError(f"{name_or_path} has no weights ({WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME})")
    tensors: dict[str, np.ndarray] = {}
    for filename in files:
        path = _resolve(name_or_path, filename, required=False, hub_kwargs=hub_kwargs)
        if path is None:
            raise CheckpointError(f"{WEIGHTS_INDEX_NAME} of {name_or_path} lists {filename}, which is missing")
        try:
            shard = load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{filename} of {name_or_path} is corrupt or truncated: {err}") from None
        tensors.update(shard)
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise CheckpointError(f"tensors listed in {WEIGHTS_INDEX_NAME} are missing from the shards: {missing}")
    return tensors


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
                 if not np.issubdtype(tensors[name].dtype, np.floating)]
    problems = []
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched))
    if bad_dtype:
        problems.append("non-float tensors: " + "; ".join(bad_dtype))
    if strict and missing:
        problems.append(f"missing from the checkpoint: {missing}")
    if strict and unexpected:
        problems.append(f"not used by {type(model).__name__}: {unexpected}")
    if problems:
        raise CheckpointError(f"{source} does not match {type(model).__name__}'s config:\n  " + "\n  ".join(problems))
    for name, variable in variables.items():
        if name in tensors:
            variable.assign(tensors[name].astype(variable.dtype))
    return {"missing_keys": missing, "unexpected_keys": unexpected}


def load_config(name_or_path, hub_kwargs: dict | None = None) -> tuple[dict, str]:
    path = _resolve(name_or_path, CONFIG_NAME, required=True, hub_kwargs=hub_kwargs or {})
    try:
        return json.loads(Path(path).read_text()), path
    except ValueError as err:
        raise CheckpointError(f"{CONFIG_NAME} of {name_or_path} is not valid JSON: {err}") from None


def from_pretrained(cls, pretrained_model_name_or_path, *, revision=None, cache_dir=None, force_download=False,
                    local_files_only=False, token=None, strict: bool | None = None, **config_overrides):
    """Build ``cls`` from a directory or Hub repo written by :func:`save_pretrained`.

    ``cls`` may be a concrete model class or :class:`AutoModel` (the class comes from ``architectures``).
    A checkpoint of another head type loads the shared body; its report (``missing_keys`` and
    ``unexpected_keys``) is kept in ``model.loading_info``. transformers checkpoints (``marian``, ``bert``,
    ``openai-gpt``, ``gpt2``) are converted on the fly.
    """
    name = os.fspath(pretrained_model_name_or_path)
    hub_kwargs = dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
                      local_files_only=local_files_only, token=token, library_name="vanilla-transformer")
    not_found, bad_revision, gated = _hub_errors()
    try:
        raw, _ = load_config(name, hub_kwargs)
        model_type = raw.get("model_type")
        if model_type != TransformerConfig.model_type:
            from .convert import SUPPORTED_MODEL_TYPES, load_transformers_checkpoint

            if model_type in SUPPORTED_MODEL_TYPES:
                return load_transformers_checkpoint(cls, name, raw, hub_kwargs, **config_overrides)
            raise CheckpointError(f"{name}: model_type {model_type!r} is not supported (expected "
                                  f"{TransformerConfig.model_type!r} or one of {sorted(SUPPORTED_MODEL_TYPES)})")
        raw.update(config_overrides)
        config = TransformerConfig.from_dict(raw)
        saved_class = (raw.get("architectures") or [None])[0]
        model_class = cls
        if cls is AutoModel or cls is TransformerPreTrainedModel:
            if saved_class not in MODEL_CLASSES:
                raise CheckpointError(f"{name}: config.architectures={raw.get('architectures')} names no class of "
                                      f"this package; load it with a concrete model class")
            model_class = MODEL_CLASSES[saved_class]
        model = model_class(config)
        if strict is None:
            strict = saved_class in (None, model_class.__name__)
        model.loading_info = assign_weights(model.build_weights(), read_weights(name, hub_kwargs), strict=strict,
                                            source=name)
        gen_path = _resolve(name, GENERATION_CONFIG_NAME, required=False, hub_kwargs=hub_kwargs)
        if gen_path is not None:
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(os.path.dirname(gen_path))
    except (not_found, gated) as err:
        raise CheckpointError(f"{name!r} is not a model repo you can read (missing, private or gated; "
                              f"pass token= for private repos): {type(err).__name__}") from None
    except bad_revision:
        raise CheckpointError(f"{name!r} has no revision {revision!r}") from None
    model.name_or_path = name
    return model


def load_tokenizer(name_or_path, **hub_kwargs):
    """The tokenizer saved beside a model (``AutoTokenizer``), or None when there is none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(os.fspath(name_or_path), **hub_kwargs)
    except (OSError, ValueError):
        return None


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
                max_shard_size: int | str | None = None, tokenizer=None, model_card: dict | None = None):
    """Create ``repo_id`` if needed and upload what :func:`save_pretrained` writes, in one commit.

    Uses ``huggingface_hub.HfApi`` (honouring ``HF_ENDPOINT`` and ``HF_TOKEN``). Returns the ``CommitInfo``.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        save_pretrained(model, folder, tokenizer=tokenizer, max_shard_size=max_shard_size,
                        model_card={"repo_id": repo_id, **(model_card or {})})
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message or f"Upload {type(model).__name__}")


def push_folder_to_hub(folder, repo_id: str, *, private: bool = False, token=None, commit_message=None,
                       revision=None, create_pr: bool = False):
    """Upload an already saved model directory (the ``vanilla-transformer push`` command)."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{folder} is not a saved model directory (no {CONFIG_NAME})")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                             commit_message=commit_message or f"Upload {folder.name}")
