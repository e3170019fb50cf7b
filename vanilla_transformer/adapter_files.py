"""LoRA adapter files: a model's adapters saved, read and loaded in PEFT's folder format.

An adapter folder (or Hub repo) holds ``adapter_config.json`` and ``adapter_model.safetensors`` with the tensor
names of the transformers model ours exports to, so ``peft.PeftModel.from_pretrained`` reads it too
(the conversion is :mod:`vanilla_transformer.convert.peft`), and a generative model's ``generation_config.json``.
:func:`save_adapter` writes one atomically, :func:`read_adapter` reads one, :func:`load_adapter` puts one on a
model; ``from_pretrained`` of an adapter folder loads its base and then the adapter (:mod:`.hub`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .atomic_directories import atomic_directory
from .convert.peft import apply_peft_adapter, to_peft
from .hub_files import Checkpoint, CheckpointError
from .model_card import render_model_card
from .weight_files import read_generation_config

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"


def save_adapter(model, save_directory, tokenizer=None, model_card: dict[str, Any] | None = None,
                 base_model_name_or_path: str | None = None) -> Path:
    """Write ``model``'s LoRA adapters as PEFT does: ``adapter_config.json`` + ``adapter_model.safetensors``.

    The tensors carry the names of the transformers model ours exports to, so ``peft.PeftModel.from_pretrained``
    loads them onto that export (see :mod:`vanilla_transformer.convert.peft`); ``from_pretrained`` of the
    folder loads ``base_model_name_or_path`` and puts the adapter on it. The model card says it is an adapter
    and names its base. A model that generates (seq2seq, causal LM) also writes its ``generation_config.json``,
    which peft does not write and ignores: loading the folder (``from_pretrained`` or :func:`load_adapter`)
    applies it, so base + adapter decode as the saved model did. Written atomically, like
    :func:`~vanilla_transformer.hub.save_pretrained` (which calls this for LoRA models).

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
        >>> config = TransformerConfig(**example_sizes)
        >>> base = TransformerForSeq2SeqLM(config).save_pretrained(tempfile.mkdtemp())
        >>> model = TransformerForSeq2SeqLM.from_pretrained(base)
        >>> _ = model.enable_lora(4, verbose=False)
        >>> folder = model.save_pretrained(os.path.join(tempfile.mkdtemp(), "adapter"))
        >>> sorted(os.listdir(folder))
        ['README.md', 'adapter_config.json', 'adapter_model.safetensors', 'generation_config.json']
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
        if callable(getattr(model, "generate", None)):  # peft writes none; ours keeps the decoding settings
            model.generation_config.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        render_model_card(model, card).save(staging / "README.md")
    return Path(save_directory)


def read_adapter(checkpoint: Checkpoint) -> tuple[dict, dict]:
    """``(adapter_config, tensors)`` of an adapter folder or Hub repo; :class:`CheckpointError` when unreadable.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer.hub_files import Checkpoint
        >>> from vanilla_transformer.adapter_files import read_adapter
        >>> read_adapter(Checkpoint(tempfile.mkdtemp()))
        Traceback (most recent call last):
        ...
        vanilla_transformer.hub_files.CheckpointError: /tmp/... has no adapter_config.json
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    adapter_config, _ = checkpoint.fetch_json(ADAPTER_CONFIG_NAME)
    weights_path = checkpoint.fetch(ADAPTER_WEIGHTS_NAME, required=True)
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{ADAPTER_WEIGHTS_NAME} of {checkpoint.describe()} is corrupt: {err}") from None
    return adapter_config, tensors


def load_adapter(model, name_or_path, check_base: bool = True, **hub_kwargs):
    """Put the PEFT LoRA adapter saved at ``name_or_path`` (a folder or Hub repo) on ``model``; a
    ``generation_config.json`` beside it (see :func:`save_adapter`) becomes ``model.generation_config``, else the
    model keeps its own (the base's).

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
        >>> from vanilla_transformer.adapter_files import load_adapter
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
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
    generation_config = read_generation_config(checkpoint)  # first: an invalid one refuses the whole adapter
    apply_peft_adapter(model, adapter_config, tensors, checkpoint.describe())
    if generation_config is not None:
        model.generation_config = generation_config
    return model


def _same_source(first: str, second: str) -> bool:
    def norm(name):
        return os.path.realpath(name) if os.path.exists(name) else name.rstrip("/")
    return norm(first) == norm(second)

