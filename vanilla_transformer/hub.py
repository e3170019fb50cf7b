"""The Hugging Face Hub layout: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

A saved model is a directory (or Hub repo) holding ``config.json``, ``model.safetensors`` (or
``model.safetensors.index.json`` + ``model-0000k-of-0000n.safetensors``), ``generation_config.json``, the
tokenizer files when a tokenizer is saved with it, and ``README.md`` rendered from ``model_card.md``.
Every model class gets these methods from :class:`HubMixin`; files are read and written by
:mod:`.checkpoint_io`, transformers checkpoints are converted by :mod:`.convert`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import constants

from .checkpoint_io import (
    CONFIG_NAME,
    DEFAULT_MAX_SHARD_SIZE,
    TOKENIZER_FILES,
    WEIGHT_FILE_PATTERN,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    Checkpoint,
    CheckpointError,
    assign_weights,
    atomic_directory,
    finish_loading,
    http_status,
    load_config,
    read_weights,
    registered_model_class,
    resolves_architecture,
    state_dict,
    write_weights,
)
from .configuration import TransformerConfig
from .convert import SUPPORTED_MODEL_TYPES, export_to_transformers, load_transformers_checkpoint
from .convert.peft import apply_peft_adapter, to_peft
from .model_card import render_model_card

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ saving
def save_pretrained(model, save_directory, tokenizer=None, max_shard_size: int | str | None = None,
                    model_card: dict[str, Any] | None = None, format: str = "vanilla_transformer") -> Path:
    """Write the model (and tokenizer) in the Hub layout; see the module docstring.

    The files are written to a temporary directory beside ``save_directory`` and swapped in, so an
    interruption leaves either the previous complete checkpoint or the new complete one (and no stale
    shards of an earlier save remain). ``max_shard_size`` shards the weights (see
    :func:`~vanilla_transformer.checkpoint_io.write_weights`). ``format="transformers"`` writes a checkpoint
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
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub import save_pretrained
        >>> config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...                            num_decoder_layers=1, max_position_embeddings=32)
        >>> model = TransformerForSeq2SeqLM(config)
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


# ------------------------------------------------------------------------------------------ adapters
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"


def save_adapter(model, save_directory, tokenizer=None, model_card: dict[str, Any] | None = None,
                 base_model_name_or_path: str | None = None) -> Path:
    """Write ``model``'s LoRA adapters as PEFT does: ``adapter_config.json`` + ``adapter_model.safetensors``.

    The tensors carry the names of the transformers model ours exports to, so ``peft.PeftModel.from_pretrained``
    loads them onto that export (see :mod:`vanilla_transformer.convert.peft`); ``from_pretrained`` of the
    folder loads ``base_model_name_or_path`` and puts the adapter on it. The model card says it is an adapter
    and names its base. Written atomically, like :func:`save_pretrained` (which calls this for LoRA models).

    Args:
        model: one of our models with adapters.
        save_directory: the folder to write (replaced as a whole).
        tokenizer: saved beside the adapter when given.
        model_card: extra model card fields (see :func:`~vanilla_transformer.model_card.render_model_card`).
        base_model_name_or_path: the base recorded in the config; default: where the model was loaded from.

    Returns:
        ``save_directory`` as a ``pathlib.Path``.

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...                            num_decoder_layers=1, max_position_embeddings=32)
        >>> base = TransformerForSeq2SeqLM(config).save_pretrained(tempfile.mkdtemp())
        >>> model = TransformerForSeq2SeqLM.from_pretrained(base)
        >>> _ = model.enable_lora(4, verbose=False)
        >>> folder = model.save_pretrained(os.path.join(tempfile.mkdtemp(), "adapter"))
        >>> sorted(os.listdir(folder))
        ['README.md', 'adapter_config.json', 'adapter_model.safetensors']
        >>> reloaded = TransformerForSeq2SeqLM.from_pretrained(folder)  # the base, then the adapter
        >>> reloaded.lora_config.r, reloaded.lora_config.base_model_name_or_path == str(base)
        (4, True)
    """
    import json

    from safetensors.numpy import save_file

    adapter_config, tensors = to_peft(model, base_model_name_or_path)
    base = adapter_config["base_model_name_or_path"]
    card = {**(model_card or {}), "tags": ["lora", "peft", "adapter", *(model_card or {}).get("tags", [])]}
    card["description"] = (f"A LoRA adapter (rank {adapter_config['r']}, alpha {adapter_config['lora_alpha']:g}, "
                           f"on {', '.join(model.lora_config.target_modules)}) for the base model `{base}`, in "
                           f"PEFT's format; `from_pretrained` of this repo loads the base and the adapter. "
                           + card.get("description", ""))
    if base and "/" in base and not os.path.exists(base):
        card.setdefault("base_model", base)
    with atomic_directory(save_directory) as staging:
        (staging / ADAPTER_CONFIG_NAME).write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
        save_file(tensors, str(staging / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        render_model_card(model, card).save(staging / "README.md")
    return Path(save_directory)


def read_adapter(checkpoint: Checkpoint) -> tuple[dict, dict]:
    """``(adapter_config, tensors)`` of an adapter folder or Hub repo; :class:`CheckpointError` when unreadable.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer.checkpoint_io import Checkpoint
        >>> from vanilla_transformer.hub import read_adapter
        >>> read_adapter(Checkpoint(tempfile.mkdtemp()))
        Traceback (most recent call last):
        ...
        vanilla_transformer.checkpoint_io.CheckpointError: /tmp/... has no adapter_config.json
    """
    import json

    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    config_path = checkpoint.fetch(ADAPTER_CONFIG_NAME, required=True)
    try:
        adapter_config = json.loads(Path(config_path).read_text())
    except ValueError as err:
        raise CheckpointError(f"{ADAPTER_CONFIG_NAME} of {checkpoint.describe()} is not valid JSON: {err}") from None
    if not isinstance(adapter_config, dict):
        raise CheckpointError(f"{ADAPTER_CONFIG_NAME} of {checkpoint.describe()} is not a JSON object")
    weights_path = checkpoint.fetch(ADAPTER_WEIGHTS_NAME, required=True)
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{ADAPTER_WEIGHTS_NAME} of {checkpoint.describe()} is corrupt: {err}") from None
    return adapter_config, tensors


def load_adapter(model, name_or_path, check_base: bool = True, **hub_kwargs):
    """Put the PEFT LoRA adapter saved at ``name_or_path`` (a folder or Hub repo) on ``model``.

    Args:
        model: one of our models without adapters: the adapter's base (an adapter made by ``peft`` on a
            transformers checkpoint loads onto that checkpoint imported with ``from_pretrained``).
        name_or_path: a folder or Hub repo holding ``adapter_config.json`` and ``adapter_model.safetensors``.
        check_base: refuse an adapter whose ``base_model_name_or_path`` names another source than the one
            ``model`` was loaded from (when both are known).
        **hub_kwargs: ``revision``, ``cache_dir``, ``token``, ``local_files_only``, ... of :class:`Checkpoint`.

    Returns:
        ``model``, with the adapter (``model.lora_config``).

    Example:
        >>> import tempfile
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.hub import load_adapter
        >>> config = TransformerConfig(architecture="decoder", vocab_size=20, d_model=8, num_heads=2, d_ff=16,
        ...                            num_encoder_layers=1, num_decoder_layers=1, max_position_embeddings=32)
        >>> trained = TransformerForCausalLM(config)
        >>> _ = trained.enable_lora(2, target_modules="o,ffn", verbose=False)
        >>> folder = trained.save_adapter(tempfile.mkdtemp())
        >>> load_adapter(TransformerForCausalLM(config), folder).lora_config.target_modules
        ('o_proj', 'fc1', 'fc2')
    """
    checkpoint = Checkpoint.of(name_or_path, hub_kwargs)
    adapter_config, tensors = read_adapter(checkpoint)
    base, loaded_from = adapter_config.get("base_model_name_or_path"), getattr(model, "name_or_path", None)
    if check_base and base and loaded_from and not _same_source(base, loaded_from):
        raise CheckpointError(f"{checkpoint.describe()} is an adapter of {base!r}, but the model was loaded from "
                              f"{loaded_from!r} (another base?); pass check_base=False if they are the same model")
    apply_peft_adapter(model, adapter_config, tensors, checkpoint.describe())
    return model


def _same_source(first: str, second: str) -> bool:
    def norm(name):
        return os.path.realpath(name) if os.path.exists(name) else name.rstrip("/")
    return norm(first) == norm(second)


def _load_adapter_checkpoint(cls, checkpoint: Checkpoint, hub_kwargs: dict, **config_overrides):
    """Base model (``base_model_name_or_path``) + the adapter of ``checkpoint``."""
    adapter_config, _ = read_adapter(checkpoint)
    base = adapter_config.get("base_model_name_or_path")
    if not base:
        raise CheckpointError(f"{checkpoint.describe()} is an adapter without base_model_name_or_path; load its "
                              f"base model and call load_adapter(model, {checkpoint.name!r})")
    model = from_pretrained(cls, base, **hub_kwargs, **config_overrides)
    return load_adapter(model, checkpoint)


# ------------------------------------------------------------------------------------------ loading
def resolve_model_class(cls, saved_class: str | None, raw: dict, source: str):
    """The class to build: ``cls`` itself, or for ``AutoModel`` and the base class the one named in
    ``config.architectures``.

    Args:
        cls: the class ``from_pretrained`` was called on.
        saved_class: ``config.architectures[0]`` of the checkpoint (or None).
        raw: the checkpoint's config dict (for the error message).
        source: the checkpoint's name (for the error message).

    Returns:
        A model class; raises :class:`CheckpointError` when ``cls`` resolves the architecture and
        ``saved_class`` names no model class of this package.

    Example:
        >>> from vanilla_transformer import AutoModel, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub import resolve_model_class
        >>> resolve_model_class(AutoModel, "TransformerForCausalLM", {}, "dir").__name__
        'TransformerForCausalLM'
        >>> resolve_model_class(TransformerForSeq2SeqLM, "TransformerForCausalLM", {}, "dir").__name__
        'TransformerForSeq2SeqLM'
        >>> resolve_model_class(AutoModel, "BertModel", {"architectures": ["BertModel"]}, "dir")
        Traceback (most recent call last):
        ...
        vanilla_transformer.checkpoint_io.CheckpointError: dir: config.architectures=['BertModel'] names no class ...
    """
    if not resolves_architecture(cls):
        return cls
    model_class = registered_model_class(saved_class)
    if model_class is None:
        raise CheckpointError(f"{source}: config.architectures={raw.get('architectures')} names no class of "
                              f"this package; load it with a concrete model class")
    return model_class


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
    model_class = resolve_model_class(cls, saved_class, raw, checkpoint.name)
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
    A LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``, see :func:`save_adapter`) loads its
    base (``base_model_name_or_path``, with the same download settings) and puts the adapter on it.
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
        >>> from vanilla_transformer import AutoModel, TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub import from_pretrained
        >>> config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...                            num_decoder_layers=1, max_position_embeddings=32)
        >>> model = TransformerForSeq2SeqLM(config)
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

    resolves_architecture = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """See :func:`from_pretrained`."""
        return from_pretrained(cls, pretrained_model_name_or_path, **kwargs)


# ------------------------------------------------------------------------------------------ pushing
def push_to_hub(model, repo_id: str, *, private: bool = False, token=None,
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

    Example:
        The push needs the Hub and a write token; what it uploads is what :func:`save_pretrained` writes
        (with ``repo_id`` in the model card), which can be checked offline:

        >>> import os, tempfile
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub import push_to_hub
        >>> config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...                            num_decoder_layers=1, max_position_embeddings=32)
        >>> model = TransformerForSeq2SeqLM(config)
        >>> folder = model.save_pretrained(tempfile.mkdtemp(), model_card={"repo_id": "user/tiny-model"})
        >>> sorted(os.listdir(folder))
        ['README.md', 'config.json', 'generation_config.json', 'model.safetensors']
        >>> "user/tiny-model" in (folder / "README.md").read_text()
        True
        >>> info = push_to_hub(model, "user/tiny-model", private=True)  # doctest: +SKIP
        >>> info.oid  # doctest: +SKIP
        '...'
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
    """Upload an already saved model directory in one commit (the ``vanilla-transformer push`` command).

    ``folder`` must hold ``config.json`` and safetensors weights, or be a LoRA adapter (``adapter_config.json``
    and ``adapter_model.safetensors``, see :func:`save_adapter`) (checked before anything is sent, raising
    :class:`CheckpointError`); every file in it is uploaded, and weight files of an earlier push that
    ``folder`` lacks are deleted. The other arguments are those of :func:`push_to_hub`. Returns
    huggingface_hub's ``CommitInfo``.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer.hub import push_folder_to_hub
        >>> try:  # refused locally, before any network access
        ...     push_folder_to_hub(tempfile.mkdtemp(), "user/tiny-model")
        ... except ValueError as err:
        ...     print(type(err).__name__, str(err).endswith("is not a saved model directory (no config.json)"))
        CheckpointError True
        >>> info = push_folder_to_hub("outputs/number-words", "user/number-words")  # doctest: +SKIP
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    is_adapter = (folder / ADAPTER_CONFIG_NAME).is_file()
    if is_adapter and not (folder / ADAPTER_WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{folder} has {ADAPTER_CONFIG_NAME} but no {ADAPTER_WEIGHTS_NAME}")
    if not is_adapter and not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{folder} is not a saved model directory (no {CONFIG_NAME})")
    if not is_adapter and not ((folder / WEIGHTS_NAME).is_file() or (folder / WEIGHTS_INDEX_NAME).is_file()):
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
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return api.create_commit(repo_id, operations, commit_message=commit_message,
                                 commit_description=commit_description, revision=revision, create_pr=create_pr)
    except HfHubHTTPError as err:
        status = http_status(err) or "?"
        stage = "the upload check" if "preupload" in str(err) else "the commit"
        raise CheckpointError(f"push to {repo_id} failed during {stage} (HTTP {status}: "
                              f"{str(err).strip().splitlines()[0]}); a commit is all or nothing, so the repo is "
                              f"unchanged and the local files are untouched: push again") from err


class HubMixin:
    """``save_pretrained``, ``from_pretrained`` and ``push_to_hub`` for the model classes.

    The methods call :func:`save_pretrained`, :func:`from_pretrained` and :func:`push_to_hub` of this
    module with the model (or class) as first argument; see those for the arguments.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub import HubMixin
        >>> issubclass(TransformerForSeq2SeqLM, HubMixin)
        True
        >>> config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
        ...                            num_decoder_layers=1, max_position_embeddings=32)
        >>> folder = TransformerForSeq2SeqLM(config).save_pretrained(tempfile.mkdtemp())
        >>> model = TransformerForSeq2SeqLM.from_pretrained(folder)
        >>> model.name_or_path == str(folder), model.num_parameters() > 0
        (True, True)
        >>> model.push_to_hub("user/tiny-model")  # doctest: +SKIP
    """

    def save_pretrained(self, save_directory, tokenizer=None, **kwargs) -> Path:
        """Write the Hugging Face layout: config.json, model.safetensors, generation_config.json, README.md
        (and the tokenizer when given). See :func:`vanilla_transformer.hub.save_pretrained`."""
        return save_pretrained(self, save_directory, tokenizer=tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a model saved by :meth:`save_pretrained` (or a transformers checkpoint) from a directory or a
        Hub repo id. See :func:`vanilla_transformer.hub.from_pretrained`."""
        return from_pretrained(cls, pretrained_model_name_or_path, **kwargs)

    def save_adapter(self, save_directory, tokenizer=None, **kwargs) -> Path:
        """Write the LoRA adapters in PEFT's format. See :func:`vanilla_transformer.hub.save_adapter`."""
        return save_adapter(self, save_directory, tokenizer=tokenizer, **kwargs)

    def load_adapter(self, name_or_path, **kwargs):
        """Put a PEFT LoRA adapter on this model. See :func:`vanilla_transformer.hub.load_adapter`."""
        return load_adapter(self, name_or_path, **kwargs)

    def push_to_hub(self, repo_id, **kwargs):
        """Upload everything :meth:`save_pretrained` writes to the Hub in one commit. See
        :func:`vanilla_transformer.hub.push_to_hub`."""
        return push_to_hub(self, repo_id, **kwargs)
