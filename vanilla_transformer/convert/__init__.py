"""Interoperability with ``transformers`` checkpoints: load them into our Keras models and export ours back.

Supported ``model_type`` values and classes:

========== ================================================= =========================================
model_type transformers class                                 ours
========== ================================================= =========================================
marian     MarianMTModel (Helsinki-NLP/opus-mt-*)             TransformerForSeq2SeqLM
bert       BertModel / BertForMaskedLM /                      TransformerEncoderModel /
           BertForSequenceClassification                      TransformerForMaskedLM /
                                                              TransformerForSequenceClassification
openai-gpt OpenAIGPTLMHeadModel                               TransformerForCausalLM (post-LN)
gpt2       GPT2LMHeadModel                                    TransformerForCausalLM (pre-LN)
========== ================================================= =========================================

Loading happens through ``from_pretrained`` (``vanilla_transformer.hub`` dispatches here when ``config.json`` names another
``model_type``); weights are read from safetensors only. Exporting happens through
``model.save_pretrained(directory, format="transformers")`` or :func:`export_to_transformers`. Whatever the
target class cannot represent exactly raises :class:`UnsupportedConfigError` (a ``ValueError``) naming the
field; several differences are re-expressed exactly instead (interleaved sinusoids as a permutation of the
model dimensions for Marian, sinusoidal positions as a learned table and ``scale_embedding`` folded into the
embedding table for BERT/GPT, a missing token-type table as a single zero row for BERT).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

from ..checkpoint_io import (
    WEIGHTS_NAME,
    Checkpoint,
    CheckpointError,
    assign_weights,
    finish_loading,
    read_weights,
    registered_model_class,
    resolves_architecture,
)
from ..compat import mark_generation_config_explicit
from ..configuration import TransformerConfig
from . import bert, marian
from .common import UnsupportedConfigError, WeightMap
from .gpt import GPT, GPT2

logger = logging.getLogger(__name__)

FAMILIES = {"marian": marian, "bert": bert, "openai-gpt": GPT, "gpt2": GPT2}
SUPPORTED_MODEL_TYPES = frozenset(FAMILIES)

__all__ = ["SUPPORTED_MODEL_TYPES", "UnsupportedConfigError", "export_to_transformers", "load_transformers_checkpoint",
           "transformers_config", "weight_map"]


def transformers_config(raw_config: dict):
    """The transformers config object (``MarianConfig``, ``BertConfig``, ...) of a ``config.json`` dict."""
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[raw_config["model_type"]].from_dict(dict(raw_config))


def resolve_model_class(cls, family, architectures, name):
    """(our model class, whether the checkpoint was saved by exactly that head)."""
    saved = architectures[0] if architectures else None
    saved_class = family.ARCHITECTURES.get(saved)
    if resolves_architecture(cls):
        chosen = saved_class or family.DEFAULT_CLASS
        if saved is not None and saved_class is None:
            logger.warning("%s: architecture %s has no counterpart here; loading its body into %s", name, saved,
                           chosen)
        model_class = registered_model_class(chosen)
    else:
        model_class = cls
        if cls.__name__ not in family.SUPPORTED_CLASSES:
            raise CheckpointError(f"{name} is a {family.MODEL_TYPE!r} checkpoint ({saved}); it loads into "
                                  f"{', '.join(family.SUPPORTED_CLASSES)}, not {cls.__name__}")
    return model_class, saved_class == model_class.__name__


def load_transformers_checkpoint(cls, name_or_checkpoint, raw_config: dict, **config_overrides):
    """Build one of our models from a transformers checkpoint (directory, Hub repo or ``Checkpoint``).

    ``cls``: a concrete model class, or ``AutoModel`` to pick the class from ``architectures``. The
    weights must match the config exactly when ``cls`` is the class the checkpoint was saved as; loading
    another head (e.g. ``BertForMaskedLM`` into ``TransformerEncoderModel``) takes the shared body and
    records ``missing_keys``/``unexpected_keys`` (transformers' names) in ``model.loading_info``.
    ``config_overrides`` set fields of the converted :class:`TransformerConfig` (``dropout=0.0``, ...).
    """
    from transformers import GenerationConfig

    # one Checkpoint for every file, so that a Hub repo is read at a single commit
    checkpoint = Checkpoint.of(name_or_checkpoint)
    family = FAMILIES[raw_config["model_type"]]
    model_class, strict = resolve_model_class(cls, family, raw_config.get("architectures") or [], checkpoint.name)
    hf_config = transformers_config(raw_config)
    tensors = read_weights(checkpoint)
    fields = family.config_from_transformers(hf_config, model_class, tensors)
    fields.update(config_overrides)
    config = TransformerConfig(**fields, architectures=[model_class.__name__])
    model = model_class(config).build_weights()
    shapes = {key: tuple(variable.shape) for key, variable in model.named_variables().items()}
    saved = (raw_config.get("architectures") or [family.MODEL_TYPE])[0]
    converted, report = family.weight_map(config, model_class).to_ours(
        tensors, shapes, strict=strict, source=checkpoint.describe(), target=f"{model_class.__name__} (from {saved})")
    assign_weights(model, converted, strict=strict, source=checkpoint.describe())
    # without generation_config.json, what transformers itself falls back to
    finish_loading(model, checkpoint, report, default_generation_config=GenerationConfig.from_model_config(hf_config))
    ignored = {key: getattr(model.generation_config, key) for key in UNSUPPORTED_GENERATION_SETTINGS
               if getattr(model.generation_config, key, None) is not None}
    if ignored:
        logger.warning("%s: generation settings %s are not implemented by vanilla_transformer.generation and are "
                       "ignored by model.generate (transformers applies them)", checkpoint.name, ignored)
    return model


# GenerationConfig fields that transformers' generate applies but vanilla_transformer.generation does not read
# (bad_words_ids, suppress_tokens, begin_suppress_tokens, forced_bos/eos_token_id are applied.)
UNSUPPORTED_GENERATION_SETTINGS = ("sequence_bias", "exponential_decay_length_penalty")


def _family_of(model):
    name = type(model).__name__
    if name == "TransformerForSeq2SeqLM":
        return marian
    if name == "TransformerForCausalLM":
        return GPT2 if model.config.norm_first else GPT
    if name in bert.SUPPORTED_CLASSES:
        return bert
    raise UnsupportedConfigError(f"{name} has no transformers counterpart to export to")


def weight_map(model) -> WeightMap:
    """The map between ``model``'s weights and those of the transformers class it exports to."""
    family = _family_of(model)
    return family.weight_map(model.config, type(model))


def export_to_transformers(model, directory, tokenizer=None, *, allow_inexact: bool = False) -> Path:
    """Write ``model`` as a transformers checkpoint of the matching class into ``directory``.

    Writes ``config.json``, ``model.safetensors`` (torch layout, transformers' names),
    ``generation_config.json`` and, when given, the tokenizer. ``transformers.AutoModelFor*.from_pretrained``
    then loads it with no missing or unexpected weights and computes the same outputs. Raises
    :class:`UnsupportedConfigError` naming the field when the target class cannot represent the model
    exactly; ``allow_inexact=True`` accepts the one near-exact case (Marian's fixed LayerNorm epsilon 1e-5
    for a model built with another epsilon) with a warning.
    """
    from safetensors.numpy import save_file

    model.build_weights()
    family = _family_of(model)
    hf_config, tensors, architecture = family.export(model, allow_inexact=allow_inexact)
    hf_config.architectures = [architecture]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(directory)
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    _generation_config(model, hf_config).save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def _generation_config(model, hf_config):
    """The model's generation settings, with the special ids of the exported config where unset."""
    generation_config = copy.deepcopy(model.generation_config)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
        if getattr(generation_config, key, None) is None and getattr(hf_config, key, None) is not None:
            setattr(generation_config, key, getattr(hf_config, key))
    mark_generation_config_explicit(generation_config)
    return generation_config
