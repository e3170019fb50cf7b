"""Saving and loading in the Hugging Face Hub layout: ``save_pretrained`` / ``from_pretrained`` /
``load_tokenizer`` and :class:`AutoModel`.

A saved model is a directory (or Hub repo) holding ``config.json``, ``model.safetensors`` (or
``model.safetensors.index.json`` + ``model-0000k-of-0000n.safetensors``), ``generation_config.json``, the
tokenizer files when a tokenizer is saved with it, and ``README.md`` rendered from ``model_card.md``.
Every model class gets these methods from :class:`~vanilla_transformer.hub_mixin.HubMixin`. Files are fetched
by :mod:`.hub_files`, written atomically by :mod:`.atomic_directories`, read and assigned by
:mod:`.weight_files`; LoRA adapter folders are :mod:`.adapter_files`, uploads :mod:`.hub_push`, and
transformers checkpoints are converted by :mod:`.convert`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .adapter_files import ADAPTER_CONFIG_NAME, load_adapter, read_adapter, save_adapter
from .atomic_directories import atomic_directory
from .configuration import TransformerConfig
from .convert import SUPPORTED_MODEL_TYPES, export_to_transformers, load_transformers_checkpoint
from .hub_files import Checkpoint, CheckpointError
from .model_card import render_model_card
from .model_class_resolution import resolve_native_model_class
from .weight_files import (
    CONFIG_NAME,
    DEFAULT_MAX_SHARD_SIZE,
    assign_weights,
    finish_loading,
    load_config,
    read_weights,
    state_dict,
    write_weights,
)

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "vocab.txt", "vocab.json", "merges.txt", "source.spm", "target.spm",
                   "sentencepiece.bpe.model", "spiece.model")


# ------------------------------------------------------------------------------------------ saving
def save_pretrained(model, save_directory, tokenizer=None, max_shard_size: int | str | None = None,
                    model_card: dict[str, Any] | None = None, format: str = "vanilla_transformer") -> Path:
    """Write the model (and tokenizer) in the Hub layout; see the module docstring.

    The files are written to a temporary directory beside ``save_directory`` and swapped in, so an
    interruption leaves either the previous complete checkpoint or the new complete one (and no stale
    shards of an earlier save remain). ``max_shard_size`` shards the weights (see
    :func:`~vanilla_transformer.weight_files.write_weights`). ``format="transformers"`` writes a checkpoint
    of the matching transformers class instead.

    Args:
        model: a model of this package.
        save_directory: the directory to write (created, or replaced as a whole).
        tokenizer: a transformers tokenizer saved beside the model, or None.
        max_shard_size: shard the weights above this size (bytes or ``"5GB"``); None: one file.
        model_card: extra model card fields (``repo_id``, ``description``, ...; see
            :func:`~vanilla_transformer.model_card.render_model_card`).
        format: ``"vanilla_transformer"`` (this package) or ``"transformers"`` (e.g. a Marian checkpoint).

    Returns:
        ``save_directory`` as a ``pathlib.Path``.

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub import save_pretrained
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> folder = save_pretrained(model, os.path.join(tempfile.mkdtemp(), "tiny"))
        >>> sorted(os.listdir(folder))
        ['README.md', 'config.json', 'generation_config.json', 'model.safetensors']
        >>> folder = save_pretrained(model, folder, max_shard_size=4000)  # rewritten as a whole, in shards
        >>> sorted(os.listdir(folder))
        ['README.md', 'config.json', 'generation_config.json', 'model-00001-of-00002.safetensors',
         'model-00002-of-00002.safetensors', 'model.safetensors.index.json']
        >>> import json
        >>> exported = save_pretrained(model, os.path.join(tempfile.mkdtemp(), "hf"), format="transformers")
        >>> json.loads((exported / "config.json").read_text())["model_type"]
        'marian'
    """
    if format not in ("vanilla_transformer", "transformers"):
        raise ValueError(f"format must be 'vanilla_transformer' or 'transformers', got {format!r}")
    if getattr(model, "lora_config", None) is not None:
        if format == "transformers":
            raise ValueError("format='transformers': this model has LoRA adapters; save_pretrained writes them in "
                             "PEFT's format (for the transformers model), or merge_lora() first for a plain checkpoint")
        if max_shard_size is not None and max_shard_size != DEFAULT_MAX_SHARD_SIZE:
            raise ValueError("max_shard_size: an adapter is written as one adapter_model.safetensors")
        return save_adapter(model, save_directory, tokenizer=tokenizer, model_card=model_card)
    with atomic_directory(save_directory) as staging:
        if format == "transformers":
            export_to_transformers(model, staging, tokenizer=tokenizer)
        else:
            weights = state_dict(model)  # first: raises before anything is written if a weight has no name
            model.config.architectures = [type(model).__name__]
            model.config.save_pretrained(staging)
            model.generation_config.save_pretrained(staging)
            write_weights(weights, staging, max_shard_size)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            render_model_card(model, model_card).save(staging / "README.md")
    return Path(save_directory)


# ------------------------------------------------------------------------------------------ loading
def _load_adapter_checkpoint(cls, checkpoint: Checkpoint, hub_kwargs: dict, **config_overrides):
    """Base model (``base_model_name_or_path``) + the adapter of ``checkpoint``."""
    adapter_config, _ = read_adapter(checkpoint)
    base = adapter_config.get("base_model_name_or_path")
    if not base:
        raise CheckpointError(f"{checkpoint.describe()} is an adapter without base_model_name_or_path; load its "
                              f"base model and call load_adapter(model, {checkpoint.name!r})")
    model = from_pretrained(cls, base, **hub_kwargs, **config_overrides)
    return load_adapter(model, checkpoint)


def _load_native_checkpoint(cls, checkpoint: Checkpoint, raw: dict, strict: bool | None = None,
                           **config_overrides):
    """Build a model from a checkpoint of this package (``model_type`` ``"vanilla_transformer"``)."""
    raw = {**raw, **config_overrides}
    try:
        config = TransformerConfig.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{CONFIG_NAME} of {checkpoint.describe()} is not a valid TransformerConfig: "
                              f"{err}") from None
    saved_class = (raw.get("architectures") or [None])[0]
    model_class = resolve_native_model_class(cls, saved_class, raw, checkpoint.name)
    try:
        model = model_class(config)
    except ValueError as err:
        raise CheckpointError(f"{checkpoint.describe()} cannot be loaded as {model_class.__name__}: {err}") from None
    if strict is None:
        strict = saved_class in (None, model_class.__name__)
    report = assign_weights(model.build_weights(), read_weights(checkpoint), strict=strict,
                            source=checkpoint.describe())
    return finish_loading(model, checkpoint, report)


def from_pretrained(cls, pretrained_model_name_or_path, *, revision=None, cache_dir=None, force_download=False,
                    local_files_only=False, token=None, strict: bool | None = None, timeout: float | None = None,
                    max_retries: int = 3, **config_overrides):
    """Build ``cls`` from a directory or Hub repo written by :func:`save_pretrained`.

    ``pretrained_model_name_or_path``: a local directory or a Hub repo id (``"user/model"``), downloaded with
    ``huggingface_hub`` into its cache (``cache_dir``, ``HF_HOME``), at ``revision`` (branch, tag, ``refs/pr/N``
    or commit id), with ``token`` (default ``HF_TOKEN`` / the saved login) and only from the cache when
    ``local_files_only`` or ``HF_HUB_OFFLINE=1``. Only the files needed are fetched: ``config.json``, the
    weights (``model.safetensors``, or the index and its shards) and ``generation_config.json``.

    ``cls`` may be a concrete model class or :class:`AutoModel` (the class comes from ``architectures``).
    A LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``, see
    :func:`~vanilla_transformer.adapter_files.save_adapter`) loads its base (``base_model_name_or_path``, with
    the same download settings) and puts the adapter on it.
    A checkpoint of another head type loads the shared body; its report (``missing_keys`` and
    ``unexpected_keys``) is kept in ``model.loading_info``. transformers checkpoints (``marian``, ``bert``,
    ``openai-gpt``, ``gpt2``) are converted on the fly. Raises :class:`CheckpointError` on any problem.

    Args:
        cls: the model class to build (or :class:`AutoModel`).
        pretrained_model_name_or_path: a local directory or a Hub repo id.
        revision: Hub branch, tag, ``refs/pr/N`` or commit id.
        cache_dir: the Hugging Face cache to use.
        force_download: download again even when cached.
        local_files_only: use the local cache only (no network).
        token: Hub token (default ``HF_TOKEN`` / the saved login).
        strict: raise on missing or unexpected weights; None: strict unless the checkpoint is of another
            head type.
        timeout: seconds each file's download may take, retries included; then a :class:`CheckpointError`
            (None: no limit beyond huggingface_hub's own request timeouts).
        max_retries: retries of a transient Hub failure (5xx, 408, 429, network error, timeout), with
            exponential backoff from 0.5 s; then a :class:`CheckpointError` says what failed. Every file
            downloaded is checked against its checksum (sha256 or git blob sha1): a mismatch is deleted from the
            cache and raises.
        **config_overrides: config fields to change (e.g. ``dropout=0.0``).

    Returns:
        The model, weights loaded; ``model.name_or_path``, ``model.commit_hash`` (None for a directory) and
        ``model.loading_info`` record where they came from.

    Example:
        A local directory (a Hub repo id such as ``"user/model"`` is used the same way):

        >>> import tempfile
        >>> import numpy as np
        >>> from vanilla_transformer import AutoModel, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub import from_pretrained
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> folder = model.save_pretrained(tempfile.mkdtemp())
        >>> loaded = from_pretrained(TransformerForSeq2SeqLM, folder, dropout=0.0)
        >>> loaded.loading_info, loaded.config.dropout
        ({'missing_keys': [], 'unexpected_keys': []}, 0.0)
        >>> inputs = {"input_ids": np.array([[5, 6, 2]]), "decoder_input_ids": np.array([[1, 7]])}
        >>> bool(np.allclose(model(inputs), loaded(inputs)))
        True
        >>> type(from_pretrained(AutoModel, folder)).__name__  # the class named in config.architectures
        'TransformerForSeq2SeqLM'
        >>> hub_model = from_pretrained(AutoModel, "user/model", revision="main")  # doctest: +SKIP
    """
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    checkpoint = Checkpoint(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                            force_download=force_download, local_files_only=local_files_only, token=token,
                            timeout=timeout, max_retries=max_retries)
    try:
        if checkpoint.fetch(CONFIG_NAME) is None and checkpoint.fetch(ADAPTER_CONFIG_NAME) is not None:
            hub_kwargs = dict(cache_dir=cache_dir, local_files_only=local_files_only, token=token, timeout=timeout,
                              max_retries=max_retries)
            return _load_adapter_checkpoint(cls, checkpoint, hub_kwargs, **config_overrides)
        raw, _ = load_config(checkpoint)
        model_type = raw.get("model_type")
        if model_type == TransformerConfig.model_type:
            return _load_native_checkpoint(cls, checkpoint, raw, strict, **config_overrides)
        if model_type in SUPPORTED_MODEL_TYPES:
            return load_transformers_checkpoint(cls, checkpoint, raw, **config_overrides)
        raise CheckpointError(f"{checkpoint.name}: model_type {model_type!r} is not supported (expected "
                              f"{TransformerConfig.model_type!r} or one of {sorted(SUPPORTED_MODEL_TYPES)})")
    except (RepositoryNotFoundError, GatedRepoError) as err:  # from other code paths; fetch() translates its own
        raise CheckpointError(f"{checkpoint.name!r} is not a model repo you can read (missing, private or gated; "
                              f"pass token= for private repos): {type(err).__name__}") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{checkpoint.name!r} has no revision {revision!r}") from None


def load_tokenizer(name_or_path, revision=None, cache_dir=None, force_download=False, local_files_only=False,
                   token=None):
    """The tokenizer saved beside a model (a transformers ``AutoTokenizer``), or None when there is none.

    Works on a directory or a Hub repo id (same arguments as :func:`from_pretrained`); from the Hub only the
    tokenizer files (and ``config.json``) are downloaded. No code from the repo is run
    (``trust_remote_code=False``).

    Args:
        name_or_path: a local directory or a Hub repo id.
        revision, cache_dir, force_download, local_files_only, token: as for :func:`from_pretrained`.

    Returns:
        A ``transformers`` tokenizer, or None; raises :class:`CheckpointError` when the files cannot be read.

    Example:
        A local directory (a Hub repo id such as ``"user/model"`` is used the same way):

        >>> import tempfile
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub import load_tokenizer
        >>> from vanilla_transformer.tokenization import train_bpe_tokenizer
        >>> tokenizer = train_bpe_tokenizer(["one two three", "eins zwei drei"] * 5, vocab_size=30)
        >>> config = TransformerConfig(vocab_size=30, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...                            num_decoder_layers=1, max_position_embeddings=32)
        >>> model = TransformerForSeq2SeqLM(config)
        >>> folder = model.save_pretrained(tempfile.mkdtemp(), tokenizer=tokenizer)
        >>> loaded = load_tokenizer(folder)
        >>> loaded("one two")["input_ids"] == tokenizer("one two")["input_ids"]
        True
        >>> print(load_tokenizer(model.save_pretrained(tempfile.mkdtemp())))  # saved without a tokenizer
        None
        >>> hub_tokenizer = load_tokenizer("user/model")  # doctest: +SKIP
    """
    from transformers import AutoTokenizer

    checkpoint = Checkpoint(name_or_path, revision=revision, cache_dir=cache_dir, force_download=force_download,
                            local_files_only=local_files_only, token=token)
    directory = _tokenizer_directory(checkpoint)
    if directory is None:
        return None
    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"The tokenizer files of {checkpoint.describe()} cannot be loaded: {err}") from None


def _tokenizer_directory(checkpoint: Checkpoint) -> str | None:
    """The local folder holding the checkpoint's tokenizer files (downloaded at one commit), or None."""
    if checkpoint.is_local:
        directory = checkpoint.name
        return directory if any(os.path.isfile(os.path.join(directory, f)) for f in TOKENIZER_FILES) else None
    config_path = checkpoint.fetch(CONFIG_NAME)  # pins the commit; AutoTokenizer may read it
    found = [path for path in (checkpoint.fetch(f) for f in TOKENIZER_FILES) if path is not None]
    if not found:
        if checkpoint.offline and not all(checkpoint.cached(f) is False for f in TOKENIZER_FILES):
            raise CheckpointError(f"The tokenizer files of {checkpoint.describe()} are not in the local Hugging "
                                  f"Face cache (offline mode: HF_HUB_OFFLINE or local_files_only=True); load "
                                  f"them once online")
        return None
    directory = os.path.dirname(found[0])
    if config_path is not None and os.path.dirname(config_path) != directory:  # pragma: no cover
        raise CheckpointError(f"{checkpoint.describe()}: files of one commit landed in different snapshots")
    return directory


class AutoModel:
    """Loads any saved model of this package as the class named in its ``config.architectures``.

    >>> model = AutoModel.from_pretrained("path/to/dir")  # doctest: +SKIP
    """

    resolves_architecture = True  # read on this class only (not inherited): see resolves_architecture()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """See :func:`from_pretrained`."""
        return from_pretrained(cls, pretrained_model_name_or_path, **kwargs)
