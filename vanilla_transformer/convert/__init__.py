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

from ..compat import mark_generation_config_explicit
from ..configuration import TransformerConfig
from ..hub_files import Checkpoint, CheckpointError
from ..model_class_resolution import registered_model_class, resolves_architecture
from ..weight_files import WEIGHTS_NAME, assign_weights, finish_loading, read_weights
from . import bert, marian
from .common import WeightMap
from .config_fields import UnsupportedConfigError
from .gpt import GPT, GPT2

logger = logging.getLogger(__name__)

FAMILIES = {"marian": marian, "bert": bert, "openai-gpt": GPT, "gpt2": GPT2}
SUPPORTED_MODEL_TYPES = frozenset(FAMILIES)

__all__ = ["SUPPORTED_MODEL_TYPES", "UnsupportedConfigError", "export_to_transformers", "load_transformers_checkpoint",
           "transformers_config", "weight_map"]


def transformers_config(raw_config: dict):
    """The transformers config object (``MarianConfig``, ``BertConfig``, ...) of a ``config.json`` dict.

    Args:
        raw_config: the parsed ``config.json``; ``raw_config["model_type"]`` picks the config class (any
            ``model_type`` transformers knows, not only the supported ones). Not modified.

    Returns:
        A ``transformers.PretrainedConfig`` subclass instance, with transformers' defaults for absent fields.

    Example:
        >>> from vanilla_transformer.convert import transformers_config
        >>> raw_config = {"model_type": "bert", "vocab_size": 20, "hidden_size": 8, "num_attention_heads": 2}
        >>> hf = transformers_config(raw_config)
        >>> type(hf).__name__, hf.hidden_size, hf.num_hidden_layers
        ('BertConfig', 8, 12)
    """
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[raw_config["model_type"]].from_dict(dict(raw_config))


def resolve_model_class(cls, family, architectures, name):
    """(our model class, whether the checkpoint was saved by exactly that head).

    Args:
        cls: the class ``from_pretrained`` was called on: ``AutoModel`` (or the common base class), which picks
            our counterpart of the saved architecture, or a concrete model class, which must be one of the
            family's ``SUPPORTED_CLASSES``.
        family: the converter of the checkpoint's ``model_type`` (a value of ``FAMILIES``: the ``bert`` or
            ``marian`` module, ``GPT`` or ``GPT2``).
        architectures: the checkpoint config's ``architectures`` (a list of transformers class names; may be
            empty).
        name: how messages name the checkpoint.

    Returns:
        ``(model_class, strict)``: the class to build, and True when the checkpoint was saved by that very head
        (its weights must then match exactly), False when only the shared body is expected to.

    Raises:
        CheckpointError: ``cls`` is a concrete class that this family cannot load into.

    Example:
        >>> from vanilla_transformer import AutoModel, TransformerEncoderModel, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.convert import bert, resolve_model_class
        >>> model_class, strict = resolve_model_class(AutoModel, bert, ["BertForMaskedLM"], "tiny-bert")
        >>> model_class.__name__, strict
        ('TransformerForMaskedLM', True)
        >>> model_class, strict = resolve_model_class(TransformerEncoderModel, bert, ["BertForMaskedLM"], "tiny")
        >>> model_class.__name__, strict  # the body of a masked-LM checkpoint: the head's weights are left over
        ('TransformerEncoderModel', False)
        >>> resolve_model_class(TransformerForSeq2SeqLM, bert, ["BertModel"], "tiny-bert")
        Traceback (most recent call last):
        ...
        vanilla_transformer.hub_files.CheckpointError: tiny-bert is a 'bert' checkpoint (BertModel); it loads into
        TransformerEncoderModel, TransformerForMaskedLM, TransformerForSequenceClassification,
        not TransformerForSeq2SeqLM
    """
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

    Args:
        cls: our model class to load into, or ``AutoModel`` (see :func:`resolve_model_class`).
        name_or_checkpoint: a local directory, a Hub repo id, or a
            :class:`~vanilla_transformer.hub_files.Checkpoint`; weights are read from safetensors only.
        raw_config: the checkpoint's parsed ``config.json`` (its ``model_type`` must be in
            ``SUPPORTED_MODEL_TYPES``).
        **config_overrides: fields of our config to set after conversion.

    Returns:
        The built model (an instance of the resolved class) holding the converted weights, with
        ``model.loading_info`` and ``model.generation_config`` set.

    Raises:
        UnsupportedConfigError: the checkpoint's config has a setting our model cannot represent.
        CheckpointError: missing, unexpected (when strict) or mismatched weights, or unreadable files.

    Example:
        >>> import json, tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM, export_to_transformers
        >>> from vanilla_transformer.convert import load_transformers_checkpoint
        >>> directory = export_to_transformers(TransformerForSeq2SeqLM(example_config), tempfile.mkdtemp())
        >>> raw_config = json.loads((directory / "config.json").read_text())
        >>> raw_config["model_type"], raw_config["architectures"]
        ('marian', ['MarianMTModel'])
        >>> model = load_transformers_checkpoint(TransformerForSeq2SeqLM, directory, raw_config, dropout=0.0)
        >>> type(model).__name__, model.config.sinusoidal_layout, model.config.dropout
        ('TransformerForSeq2SeqLM', 'halves', 0.0)
        >>> model.loading_info
        {'missing_keys': [], 'unexpected_keys': []}
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
    """The map between ``model``'s weights and those of the transformers class it exports to.

    Args:
        model: one of our models: ``TransformerForSeq2SeqLM`` (Marian), ``TransformerForCausalLM`` (GPT-2 when
            ``norm_first``, else GPT) or one of the encoder classes (BERT).

    Returns:
        A :class:`~vanilla_transformer.convert.common.WeightMap` for ``model``'s config and class, one entry
        per transformers tensor (``to_ours``: torch layout -> Keras layout, ``to_source``: back).

    Raises:
        UnsupportedConfigError: ``model``'s class has no transformers counterpart.

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.convert import weight_map
        >>> weights = weight_map(TransformerForSeq2SeqLM(example_config))
        >>> len(weights.entries), weights.prefix
        (44, 'model.')
        >>> entry = weights.entries[1]
        >>> entry.ours, entry.source  # a Keras Dense kernel (in, out) <-> a torch nn.Linear weight (out, in)
        (('encoder.layers.0.self_attn.q_proj.kernel',), 'encoder.layers.0.self_attn.q_proj.weight')
    """
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

    Args:
        model: one of our models (built here if needed); see :func:`weight_map` for the target classes.
        directory: where to write (created if needed; existing files of the same names are replaced).
        tokenizer: optional; anything with ``save_pretrained(directory)``.
        allow_inexact: accept Marian's fixed LayerNorm epsilon for a model built with another one.

    Returns:
        ``directory`` as a :class:`pathlib.Path`.

    Raises:
        UnsupportedConfigError: the target class cannot represent the model exactly.

    Example:
        >>> import json, os, tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM, export_to_transformers
        >>> directory = export_to_transformers(TransformerForSeq2SeqLM(example_config), tempfile.mkdtemp())
        >>> sorted(os.listdir(directory))
        ['config.json', 'generation_config.json', 'model.safetensors']
        >>> hf_config = json.loads((directory / "config.json").read_text())
        >>> hf_config["architectures"], hf_config["d_model"], hf_config["encoder_layers"]
        (['MarianMTModel'], 8, 1)
        >>> from safetensors.numpy import load_file
        >>> tensors = load_file(str(directory / "model.safetensors"))
        >>> len(tensors), tensors["model.encoder.layers.0.fc1.weight"].shape  # nn.Linear weight (d_ff, d_model)
        (44, (16, 8))
    """
    from safetensors.numpy import save_file

    model.build_weights()
    family = _family_of(model)
    hf_config, tensors, architecture = family.to_transformers_checkpoint(model, allow_inexact=allow_inexact)
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
