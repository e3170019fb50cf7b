"""BERT (``BertModel``, ``BertForMaskedLM``, ``BertForSequenceClassification``) <-> our encoder classes.

BERT is a post-LN encoder with learned absolute positions, token-type embeddings, a LayerNorm on the
embedding sum, exact (erf) GELU, a configurable LayerNorm epsilon (1e-12), a pooler (dense + tanh on the
first token) and an MLM head (dense + activation + LayerNorm + the tied word embeddings + its own bias).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np

from .common import WeightMap, dense, fold_embedding_scale, layer_norm, linear, model_state, position_table, same
from .config_fields import check_choice, plain_token_id, require, unsupported

logger = logging.getLogger(__name__)

MODEL_TYPE = "bert"
ARCHITECTURES = {
    "BertModel": "TransformerEncoderModel",
    "BertForMaskedLM": "TransformerForMaskedLM",
    "BertForSequenceClassification": "TransformerForSequenceClassification",
}
DEFAULT_CLASS = "TransformerEncoderModel"
SUPPORTED_CLASSES = ("TransformerEncoderModel", "TransformerForMaskedLM", "TransformerForSequenceClassification")
EXPORT_ARCHITECTURES = {value: key for key, value in ARCHITECTURES.items()}

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu",
                "swish": "swish", "silu": "silu"}
_EXPORT_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu", "swish": "swish", "silu": "silu"}


def _has_pooler(tensors) -> bool:
    return any(name.endswith("pooler.dense.weight") for name in tensors)


# ------------------------------------------------------------------------------------------ config
# Field-by-field mapping of this family's config to ours; the other families' read alike in
# shape but map different fields, so each stays beside its weight map.
def config_from_transformers(hf, model_class, tensors) -> dict:
    """Our config fields from a ``BertConfig``; raises for what our encoder cannot represent.

    Args:
        hf: a ``transformers.BertConfig``.
        model_class: the class being loaded (``TransformerEncoderModel``, ``TransformerForMaskedLM`` or
            ``TransformerForSequenceClassification``); decides ``add_pooler`` and the label fields.
        tensors: the checkpoint's tensors by name (only their names are read: whether a pooler is stored).

    Returns:
        A dict of :class:`~vanilla_transformer.TransformerConfig` keyword arguments (``architecture="encoder"``,
        post-LN, learned positions, LayerNorm on the embeddings, ...), without ``architectures``.

    Raises:
        UnsupportedConfigError: a causal or cross-attending BERT, relative positions, or an unknown activation.

    Example:
        >>> from transformers import BertConfig
        >>> from vanilla_transformer import TransformerEncoderModel
        >>> from vanilla_transformer.convert import bert
        >>> hf = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                 intermediate_size=16, max_position_embeddings=32)
        >>> fields = bert.config_from_transformers(hf, TransformerEncoderModel, {"pooler.dense.weight": None})
        >>> fields["architecture"], fields["d_model"], fields["d_ff"], fields["num_encoder_layers"]
        ('encoder', 8, 16, 1)
        >>> fields["activation"], fields["layer_norm_eps"], fields["type_vocab_size"], fields["add_pooler"]
        ('gelu', 1e-12, 2, True)
    """
    require(not getattr(hf, "is_decoder", False), "is_decoder", True,
            "a causal BERT decoder is not an encoder model; only bidirectional BERT is supported")
    require(not getattr(hf, "add_cross_attention", False), "add_cross_attention", True,
            "BERT with cross-attention is not supported")
    position_type = getattr(hf, "position_embedding_type", "absolute") or "absolute"
    require(position_type == "absolute", "position_embedding_type", position_type,
            "only absolute (learned) positions are supported")
    activation = check_choice("hidden_act", hf.hidden_act, _ACTIVATIONS, "TransformerConfig")
    name = model_class.__name__
    # BertForMaskedLM has no pooler; BertForSequenceClassification always has one.
    add_pooler = name == "TransformerForSequenceClassification" or (
        name != "TransformerForMaskedLM" and _has_pooler(tensors))
    fields = dict(
        architecture="encoder",
        vocab_size=hf.vocab_size,
        d_model=hf.hidden_size,
        num_heads=hf.num_attention_heads,
        d_ff=hf.intermediate_size,
        num_encoder_layers=hf.num_hidden_layers,
        num_decoder_layers=0,
        dropout=float(hf.hidden_dropout_prob),
        attention_dropout=float(hf.attention_probs_dropout_prob),
        activation_dropout=0.0,
        max_position_embeddings=hf.max_position_embeddings,
        position_embedding="learned",
        norm_first=False,
        final_layer_norm=False,
        embedding_layer_norm=True,
        activation=activation,
        layer_norm_eps=float(hf.layer_norm_eps),
        scale_embedding=False,
        tie_word_embeddings=bool(hf.tie_word_embeddings),
        final_logits_bias=False,
        type_vocab_size=hf.type_vocab_size,
        add_pooler=add_pooler,
        initializer_range=float(hf.initializer_range),
        pad_token_id=hf.pad_token_id,
        bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id,
        decoder_start_token_id=None,
        mask_token_id=getattr(hf, "mask_token_id", None),
    )
    if name == "TransformerForSequenceClassification":
        fields.update(id2label=dict(hf.id2label), label2id=dict(hf.label2id))
        if getattr(hf, "problem_type", None):
            fields["problem_type"] = hf.problem_type
    return fields


# ------------------------------------------------------------------------------------------ weights
def weight_map(config, model_class, prefix: str | None = None) -> WeightMap:
    """The map between our encoder's weights and a BERT checkpoint's.

    Args:
        config: our config (or anything with ``num_encoder_layers``, ``add_pooler``, ``tie_word_embeddings``).
        model_class: our encoder class or its name; a masked LM adds the ``cls.predictions`` head (the
            decoder weight tied to the word embeddings unless ``tie_word_embeddings`` is False), a classifier
            adds ``classifier``.
        prefix: transformers' prefix for the body; by default ``""`` for ``TransformerEncoderModel``
            (``BertModel``) and ``"bert."`` for the heads.

    Returns:
        A :class:`~vanilla_transformer.convert.common.WeightMap`: embeddings, per layer 4 attention and 2
        feed-forward Dense layers (kernel ``(in, out)`` <-> ``nn.Linear`` weight ``(out, in)``) and 2
        LayerNorms, then the pooler and head entries.

    Example:
        >>> from vanilla_transformer import TransformerConfig
        >>> from vanilla_transformer.convert import bert
        >>> config = TransformerConfig(architecture="encoder", vocab_size=20, d_model=8, num_heads=2, d_ff=16,
        ...                            num_encoder_layers=1, num_decoder_layers=0, max_position_embeddings=32,
        ...                            embedding_layer_norm=True, add_pooler=True, type_vocab_size=2)
        >>> weights = bert.weight_map(config, "TransformerEncoderModel")
        >>> len(weights.entries), weights.prefix, weights.entries[0].source
        (23, '', 'embeddings.word_embeddings.weight')
        >>> weights = bert.weight_map(config, "TransformerForMaskedLM")
        >>> len(weights.entries), weights.prefix, weights.entries[0].aliases
        (26, 'bert.', ('cls.predictions.decoder.weight',))
    """
    name = model_class if isinstance(model_class, str) else model_class.__name__
    if prefix is None:
        prefix = "" if name == "TransformerEncoderModel" else "bert."
    entries = [same("shared.embeddings", "embeddings.word_embeddings.weight"),
               same("encoder.embed.embed_positions.embeddings", "embeddings.position_embeddings.weight"),
               same("encoder.embed.token_type_embeddings.embeddings", "embeddings.token_type_embeddings.weight"),
               *layer_norm("encoder.embed.layer_norm", "embeddings.LayerNorm")]
    for i in range(config.num_encoder_layers):
        ours, source = f"encoder.layers.{i}", f"encoder.layer.{i}"
        entries += [*dense(f"{ours}.self_attn.q_proj", f"{source}.attention.self.query"),
                    *dense(f"{ours}.self_attn.k_proj", f"{source}.attention.self.key"),
                    *dense(f"{ours}.self_attn.v_proj", f"{source}.attention.self.value"),
                    *dense(f"{ours}.self_attn.o_proj", f"{source}.attention.output.dense"),
                    *layer_norm(f"{ours}.self_attn_layer_norm", f"{source}.attention.output.LayerNorm"),
                    *dense(f"{ours}.feed_forward.fc1", f"{source}.intermediate.dense"),
                    *dense(f"{ours}.feed_forward.fc2", f"{source}.output.dense"),
                    *layer_norm(f"{ours}.feed_forward_layer_norm", f"{source}.output.LayerNorm")]
    if config.add_pooler and name != "TransformerForMaskedLM":
        entries += dense("pooler", "pooler.dense")
    if name == "TransformerForMaskedLM":
        tied = config.tie_word_embeddings
        entries += [*dense("mlm_dense", "cls.predictions.transform.dense"),
                    *layer_norm("mlm_layer_norm", "cls.predictions.transform.LayerNorm"),
                    same("mlm_bias", "cls.predictions.bias", aliases=("cls.predictions.decoder.bias",))]
        if tied:
            # the decoder weight is the word-embedding table itself: accept a stored copy, never write it
            entries[0] = same("shared.embeddings", "embeddings.word_embeddings.weight",
                              aliases=("cls.predictions.decoder.weight",))
        else:
            entries.append(linear("lm_head.kernel", "cls.predictions.decoder.weight"))
    if name == "TransformerForSequenceClassification":
        entries += dense("classifier", "classifier")
    return WeightMap(entries, prefix=prefix, strip_prefixes=("bert.",), top_level=("cls", "classifier"),
                     ignore=(r"embeddings\.position_ids", r"embeddings\.token_type_ids",
                             r"cls\.predictions\.decoder\.bias"))


# ------------------------------------------------------------------------------------------ export
def _check_exportable(config, name: str) -> str:
    """Reject what BERT cannot represent; returns transformers' name of the activation."""
    if name not in EXPORT_ARCHITECTURES:
        raise unsupported("model class", name, f"BERT export supports {sorted(EXPORT_ARCHITECTURES)}")
    require(not config.norm_first, "norm_first", config.norm_first, "BERT is post-LN only")
    require(not config.final_layer_norm, "final_layer_norm", config.final_layer_norm,
            "BERT has no LayerNorm after the last layer")
    require(config.embedding_layer_norm, "embedding_layer_norm", config.embedding_layer_norm,
            "BERT always normalises the embedding sum")
    if name == "TransformerForSequenceClassification":
        require(config.add_pooler, "add_pooler", config.add_pooler,
                "BertForSequenceClassification always classifies the pooler output (dense + tanh)")
    return check_choice("activation", config.activation, _EXPORT_ACTIVATIONS, "BERT")


def _bert_state(model, name: str) -> tuple[dict[str, np.ndarray], int, bool]:
    """Our weights re-expressed for BERT: (state, type_vocab_size, tie_word_embeddings)."""
    config = model.config
    state = model_state(model)
    position_table(state, config, "encoder.embed.embed_positions.embeddings")
    type_vocab_size = config.type_vocab_size
    if type_vocab_size == 0:
        # BERT always adds token-type embedding 0: a single zero row adds nothing.
        type_vocab_size = 1
        state["encoder.embed.token_type_embeddings.embeddings"] = np.zeros((1, config.d_model), np.float32)
    tied = fold_embedding_scale(state, config, "lm_head.kernel" if name == "TransformerForMaskedLM" else None)
    if name == "TransformerEncoderModel" and not config.add_pooler:
        # BertModel always has a pooler; the source had none, so pooler_output is left at zero.
        logger.warning("%s has no pooler (add_pooler=False) but BertModel always has one: writing a zero pooler, "
                       "so the exported model's pooler_output is all zeros (last_hidden_state is exact)", name)
        state["pooler.kernel"] = np.zeros((config.d_model, config.d_model), np.float32)
        state["pooler.bias"] = np.zeros((config.d_model,), np.float32)
    if name == "TransformerForMaskedLM" and config.add_pooler:
        logger.info("BertForMaskedLM has no pooler: the (unused) pooler weights are not exported")
    return state, type_vocab_size, tied


def _bert_config(config, name: str, activation: str, type_vocab_size: int, tied: bool):
    from transformers import BertConfig

    kwargs = dict(
        vocab_size=config.vocab_size, hidden_size=config.d_model, num_hidden_layers=config.num_encoder_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.d_ff, hidden_act=activation,
        hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.attention_dropout,
        max_position_embeddings=config.max_position_embeddings, type_vocab_size=type_vocab_size,
        initializer_range=config.initializer_range, layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=plain_token_id(config.eos_token_id), tie_word_embeddings=tied,
    )
    if config.mask_token_id is not None:
        kwargs["mask_token_id"] = config.mask_token_id
    if name == "TransformerForSequenceClassification":
        kwargs.update(id2label={int(k): v for k, v in config.id2label.items()},
                      label2id={k: int(v) for k, v in config.label2id.items()})
        if getattr(config, "problem_type", None):
            kwargs["problem_type"] = config.problem_type
    return BertConfig(**kwargs)


def to_transformers_checkpoint(model, allow_inexact: bool = False):
    """``(BertConfig, torch-layout tensors, architecture name)`` of ``model``.

    Sinusoidal positions become a learned table, ``scale_embedding`` is folded into the word embeddings
    (untying a masked LM's decoder), a missing token-type table becomes one zero row, and a
    ``TransformerEncoderModel`` without pooler gets a zero one (with a warning: ``BertModel`` always has one).

    Args:
        model: a built ``TransformerEncoderModel``, ``TransformerForMaskedLM`` or
            ``TransformerForSequenceClassification``.
        allow_inexact: unused (BERT exports are exact or refused); accepted for a common signature.

    Returns:
        ``(hf_config, tensors, architecture)``: a ``transformers.BertConfig``, float32 numpy arrays in torch
        layout by transformers name (``nn.Linear`` weights ``(out, in)``), and ``"BertModel"``,
        ``"BertForMaskedLM"`` or ``"BertForSequenceClassification"``.

    Raises:
        UnsupportedConfigError: pre-LN, a final LayerNorm, no embedding LayerNorm, a classifier without
            pooler, or an activation BERT lacks.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerEncoderModel
        >>> from vanilla_transformer.convert import bert
        >>> config = TransformerConfig(architecture="encoder", vocab_size=20, d_model=8, num_heads=2, d_ff=16,
        ...                            num_encoder_layers=1, num_decoder_layers=0, max_position_embeddings=32,
        ...                            embedding_layer_norm=True, add_pooler=True, type_vocab_size=2)
        >>> hf, tensors, architecture = bert.to_transformers_checkpoint(TransformerEncoderModel(config).build_weights())
        >>> type(hf).__name__, architecture, hf.hidden_size, hf.type_vocab_size, len(tensors)
        ('BertConfig', 'BertModel', 8, 2, 23)
        >>> tensors["embeddings.position_embeddings.weight"].shape  # the sinusoids as a learned table
        (32, 8)
        >>> tensors["encoder.layer.0.intermediate.dense.weight"].shape  # nn.Linear weight (d_ff, d_model)
        (16, 8)
    """
    config = model.config
    name = type(model).__name__
    activation = _check_exportable(config, name)
    state, type_vocab_size, tied = _bert_state(model, name)
    layout = SimpleNamespace(num_encoder_layers=config.num_encoder_layers, tie_word_embeddings=tied,
                             add_pooler=name != "TransformerForMaskedLM")
    tensors = weight_map(layout, name).to_source(state)
    if name == "TransformerForMaskedLM" and not tied:
        # transformers writes the (tied) decoder bias beside the head's own bias when untied
        tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"].copy()
    return _bert_config(config, name, activation, type_vocab_size, tied), tensors, EXPORT_ARCHITECTURES[name]
