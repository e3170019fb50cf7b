"""Marian (``MarianMTModel``, e.g. Helsinki-NLP/opus-mt-*) <-> :class:`TransformerForSeq2SeqLM`.

Marian is the paper's post-LN encoder-decoder: sinusoidal positions laid out as [sin | cos] halves
(``MarianSinusoidalPositionalEmbedding``, position ids from 0, no padding offset, never stored in the
checkpoint), token embeddings shared by both stacks and the output projection, optionally scaled by
sqrt(d_model), a non-trained ``final_logits_bias``, LayerNorm epsilon fixed at torch's default 1e-5, and
``swish`` feed-forward activations in the opus-mt models.
"""

from __future__ import annotations

import logging

import numpy as np

from .common import Entry, WeightMap, dense, layer_norm, linear, model_state, same
from .config_fields import check_choice, plain_token_id, require, unsupported

logger = logging.getLogger(__name__)

MODEL_TYPE = "marian"
#: transformers architecture -> our class name
ARCHITECTURES = {"MarianMTModel": "TransformerForSeq2SeqLM", "MarianModel": "TransformerForSeq2SeqLM"}
DEFAULT_CLASS = "TransformerForSeq2SeqLM"
SUPPORTED_CLASSES = ("TransformerForSeq2SeqLM",)
EXPORT_ARCHITECTURE = "MarianMTModel"
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default; Marian has no config field for it

# transformers' ACT2FN names -> ours (and back)
_ACTIVATIONS = {"swish": "swish", "silu": "silu", "relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new",
                "gelu_pytorch_tanh": "gelu_new"}
_EXPORT_ACTIVATIONS = {"swish": "swish", "silu": "silu", "relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new"}


# ------------------------------------------------------------------------------------------ config
# Field-by-field mapping of this family's config to ours; the other families' read alike in
# shape but map different fields, so each stays beside its weight map.
def config_from_transformers(hf, model_class, tensors) -> dict:
    """Our config fields from a ``MarianConfig``; raises for what our model cannot represent.

    Args:
        hf: a ``transformers.MarianConfig``.
        model_class: the class being loaded (always ``TransformerForSeq2SeqLM``); unused.
        tensors: the checkpoint's tensors by name; unused (accepted for a common signature).

    Returns:
        A dict of :class:`~vanilla_transformer.TransformerConfig` keyword arguments: post-LN encoder-decoder,
        sinusoidal positions in ``"halves"`` layout, LayerNorm epsilon 1e-5, ``final_logits_bias=True``,
        ``decoder_start_token_id`` falling back to ``pad_token_id``.

    Raises:
        UnsupportedConfigError: encoder and decoder differing in heads, widths or vocabularies, or an unknown
            activation.

    Example:
        >>> from transformers import MarianConfig
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.convert import marian
        >>> hf = MarianConfig(vocab_size=20, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        ...                   decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
        ...                   max_position_embeddings=32, pad_token_id=19, eos_token_id=0, decoder_start_token_id=19)
        >>> fields = marian.config_from_transformers(hf, TransformerForSeq2SeqLM, {})
        >>> fields["architecture"], fields["d_model"], fields["num_heads"], fields["d_ff"]
        ('encoder-decoder', 8, 2, 16)
        >>> fields["sinusoidal_layout"], fields["layer_norm_eps"], fields["decoder_start_token_id"]
        ('halves', 1e-05, 19)
    """
    require(hf.encoder_attention_heads == hf.decoder_attention_heads, "decoder_attention_heads",
            hf.decoder_attention_heads, f"differs from encoder_attention_heads={hf.encoder_attention_heads}; "
            "TransformerConfig has one num_heads")
    require(hf.encoder_ffn_dim == hf.decoder_ffn_dim, "decoder_ffn_dim", hf.decoder_ffn_dim,
            f"differs from encoder_ffn_dim={hf.encoder_ffn_dim}; TransformerConfig has one d_ff")
    require(bool(getattr(hf, "share_encoder_decoder_embeddings", True)), "share_encoder_decoder_embeddings", False,
            "separate encoder and decoder vocabularies are not supported (TransformerConfig shares one table)")
    decoder_vocab = getattr(hf, "decoder_vocab_size", None) or hf.vocab_size
    require(decoder_vocab == hf.vocab_size, "decoder_vocab_size", decoder_vocab,
            f"differs from vocab_size={hf.vocab_size}")
    activation = check_choice("activation_function", hf.activation_function, _ACTIVATIONS, "TransformerConfig")
    decoder_start = hf.decoder_start_token_id
    if decoder_start is None:
        decoder_start = hf.pad_token_id
    return dict(
        architecture="encoder-decoder",
        vocab_size=hf.vocab_size,
        d_model=hf.d_model,
        num_heads=hf.encoder_attention_heads,
        d_ff=hf.encoder_ffn_dim,
        num_encoder_layers=hf.encoder_layers,
        num_decoder_layers=hf.decoder_layers,
        dropout=float(hf.dropout),
        attention_dropout=float(hf.attention_dropout),
        activation_dropout=float(hf.activation_dropout),
        max_position_embeddings=hf.max_position_embeddings,
        position_embedding="sinusoidal",
        sinusoidal_layout="halves",
        norm_first=False,
        final_layer_norm=False,
        embedding_layer_norm=False,
        activation=activation,
        layer_norm_eps=LAYER_NORM_EPS,
        scale_embedding=bool(hf.scale_embedding),
        tie_word_embeddings=bool(hf.tie_word_embeddings),
        final_logits_bias=True,
        type_vocab_size=0,
        add_pooler=False,
        initializer_range=float(getattr(hf, "init_std", 0.02)),
        pad_token_id=hf.pad_token_id,
        bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id,
        decoder_start_token_id=decoder_start,
    )


# ------------------------------------------------------------------------------------------ weights
def _attention(ours: str, source: str) -> list[Entry]:
    return [*dense(f"{ours}.q_proj", f"{source}.q_proj"), *dense(f"{ours}.k_proj", f"{source}.k_proj"),
            *dense(f"{ours}.v_proj", f"{source}.v_proj"), *dense(f"{ours}.o_proj", f"{source}.out_proj")]


def weight_map(config, model_class=None, prefix: str = "model.") -> WeightMap:
    """The map between our encoder-decoder's weights and a ``MarianMTModel`` checkpoint's.

    Args:
        config: our config (or anything with ``num_encoder_layers``, ``num_decoder_layers`` and
            ``tie_word_embeddings``).
        model_class: unused (Marian has one head class); accepted for a common signature.
        prefix: transformers' prefix for the body (``"model."`` in ``MarianMTModel``).

    Returns:
        A :class:`~vanilla_transformer.convert.common.WeightMap`: the shared table ``(vocab, d_model)``, per
        layer the attention and feed-forward Dense layers (kernel ``(in, out)`` <-> ``nn.Linear`` weight
        ``(out, in)``) and LayerNorms, an untied ``lm_head`` when ``tie_word_embeddings`` is False, and
        ``final_logits_bias`` (ours ``(vocab,)`` <-> ``(1, vocab)``, zeros when the checkpoint lacks it).

    Example:
        >>> from vanilla_transformer.convert import marian
        >>> weights = marian.weight_map(example_config)
        >>> len(weights.entries), weights.prefix, weights.entries[0].source, weights.entries[-1].source
        (44, 'model.', 'shared.weight', 'final_logits_bias')
        >>> weights.entries[-1].to_source((np.zeros(20, np.float32),)).shape
        (1, 20)
    """
    tied = config.tie_word_embeddings
    # transformers 5 ties the encoder and decoder tables to ``shared`` only when tie_word_embeddings is set;
    # otherwise all three are separate parameters, so an untied export writes the same table three times.
    copies = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
    entries = [same("shared.embeddings", "shared.weight", aliases=copies + (("lm_head.weight",) if tied else ()),
                    copies=() if tied else copies)]
    for stack, count in (("encoder", config.num_encoder_layers), ("decoder", config.num_decoder_layers)):
        for i in range(count):
            ours, source = f"{stack}.layers.{i}", f"{stack}.layers.{i}"
            entries += _attention(f"{ours}.self_attn", f"{source}.self_attn")
            entries += layer_norm(f"{ours}.self_attn_layer_norm", f"{source}.self_attn_layer_norm")
            if stack == "decoder":
                entries += _attention(f"{ours}.cross_attn", f"{source}.encoder_attn")
                entries += layer_norm(f"{ours}.cross_attn_layer_norm", f"{source}.encoder_attn_layer_norm")
            entries += dense(f"{ours}.feed_forward.fc1", f"{source}.fc1")
            entries += dense(f"{ours}.feed_forward.fc2", f"{source}.fc2")
            entries += layer_norm(f"{ours}.feed_forward_layer_norm", f"{source}.final_layer_norm")
    if not tied:
        entries.append(linear("lm_head.kernel", "lm_head.weight"))
    entries.append(Entry(("final_logits_bias",), "final_logits_bias", lambda t: (t.reshape(-1),),
                         lambda arrays: arrays[0].reshape(1, -1),
                         default=lambda shapes: (np.zeros(shapes[0], np.float32),)))
    return WeightMap(entries, prefix=prefix, strip_prefixes=("model.",),
                     top_level=("lm_head", "final_logits_bias"),
                     ignore=(r"(encoder|decoder)\.embed_positions\.weight",))


# ------------------------------------------------------------------------------------------ export
def _interleaved_to_halves(d_model: int) -> np.ndarray:
    """The permutation p of model dimensions with ``halves_table == interleaved_table[:, p]``."""
    return np.concatenate([np.arange(0, d_model, 2), np.arange(1, d_model, 2)])


def _permute_residual(state: dict[str, np.ndarray], perm: np.ndarray) -> dict[str, np.ndarray]:
    """Re-express the model in a permuted basis of the d_model (residual-stream) dimensions.

    Every weight that reads the stream has its input rows permuted, every weight that writes it has its
    output columns permuted, LayerNorm parameters follow (mean and variance do not depend on the order).
    The function computed is unchanged; only the names of the dimensions move. This maps a model with
    interleaved sinusoids exactly onto Marian's [sin | cos] layout.
    """
    out = {}
    for name, value in state.items():
        reads, writes = residual_axes(name)
        if reads:
            value = value[perm]
        if writes:
            value = value[..., perm]
        out[name] = np.ascontiguousarray(value)
    return out


def residual_axes(name: str) -> tuple[bool, bool]:
    """Which axes of our weight ``name`` index the d_model (residual-stream) dimensions.

    Args:
        name: one of our weight names, e.g. ``"encoder.layers.0.self_attn.q_proj.kernel"``.

    Returns:
        ``(first, last)``: whether the first axis (a kernel's input rows) and the last axis (its output columns;
        a vector's only axis counts as last) are model dimensions, which an interleaved-to-halves export
        permutes. A LoRA adapter ``A (in, r)``, ``B (r, out)`` of that kernel follows: A's rows when ``first``,
        B's columns when ``last``.

    Example:
        >>> from vanilla_transformer.convert.marian import residual_axes
        >>> residual_axes("encoder.layers.0.self_attn.q_proj.kernel"), residual_axes("shared.embeddings")
        ((True, False), (False, True))
        >>> residual_axes("decoder.layers.0.feed_forward.fc2.bias"), residual_axes("final_logits_bias")
        ((False, True), (False, False))
    """
    tail = ".".join(name.split(".")[-2:])  # e.g. "q_proj.kernel"
    if name == "lm_head.kernel" or tail in ("q_proj.kernel", "k_proj.kernel", "v_proj.kernel", "fc1.kernel"):
        return True, False
    writes = name == "shared.embeddings" or tail in ("o_proj.kernel", "fc2.kernel", "o_proj.bias", "fc2.bias")
    return False, writes or name.endswith((".gamma", ".beta"))


def residual_permutation(config) -> np.ndarray | None:
    """The permutation of model dimensions an export applies (interleaved sinusoids), or None.

    Example:
        >>> from types import SimpleNamespace
        >>> from vanilla_transformer.convert.marian import residual_permutation
        >>> residual_permutation(SimpleNamespace(sinusoidal_layout="interleaved", d_model=4)).tolist()
        [0, 2, 1, 3]
        >>> print(residual_permutation(SimpleNamespace(sinusoidal_layout="halves", d_model=4)))
        None
    """
    return _interleaved_to_halves(config.d_model) if config.sinusoidal_layout == "interleaved" else None


def _check_exportable(config, allow_inexact: bool) -> str:
    """Reject what MarianMTModel cannot represent; returns transformers' name of the activation."""
    require(not config.norm_first, "norm_first", config.norm_first, "MarianMTModel is post-LN only")
    require(not config.final_layer_norm, "final_layer_norm", config.final_layer_norm,
            "MarianMTModel has no LayerNorm after the last layer")
    require(not config.embedding_layer_norm, "embedding_layer_norm", config.embedding_layer_norm,
            "MarianMTModel has no LayerNorm on the embeddings")
    require(config.position_embedding == "sinusoidal", "position_embedding", config.position_embedding,
            "MarianMTModel only has (recomputed, never stored) sinusoidal positions")
    require(config.type_vocab_size == 0, "type_vocab_size", config.type_vocab_size,
            "MarianMTModel has no token-type embeddings")
    activation = check_choice("activation", config.activation, _EXPORT_ACTIVATIONS, "MarianMTModel")
    if abs(config.layer_norm_eps - LAYER_NORM_EPS) > 1e-12:
        reason = (f"MarianMTModel's LayerNorms use a fixed epsilon of {LAYER_NORM_EPS}; build the model with "
                  f"layer_norm_eps={LAYER_NORM_EPS} for an exact export")
        if not allow_inexact:
            raise unsupported("layer_norm_eps", config.layer_norm_eps,
                              f"{reason}, or pass allow_inexact=True to export_to_transformers to accept the "
                              "(small) difference")
        logger.warning("layer_norm_eps=%r: %s; exporting anyway (allow_inexact=True), outputs will differ slightly",
                       config.layer_norm_eps, reason)
    return activation


def to_transformers_checkpoint(model, allow_inexact: bool = False):
    """``(MarianConfig, state dict, architecture)`` for our encoder-decoder; raises for what Marian lacks.

    A model with interleaved sinusoids is re-expressed exactly in Marian's [sin | cos] layout by permuting the
    model dimensions; a model without ``final_logits_bias`` gets a zero one.

    Args:
        model: a built ``TransformerForSeq2SeqLM``.
        allow_inexact: export a model whose ``layer_norm_eps`` differs from Marian's fixed 1e-5 (warning).

    Returns:
        ``(hf_config, tensors, architecture)``: a ``transformers.MarianConfig``, float32 numpy arrays in torch
        layout by transformers name (``nn.Linear`` weights ``(out, in)``), and ``"MarianMTModel"``.

    Raises:
        UnsupportedConfigError: pre-LN, extra LayerNorms, learned positions, token types, an activation
            Marian lacks, or (unless ``allow_inexact``) another LayerNorm epsilon.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.convert import marian
        >>> model = TransformerForSeq2SeqLM(example_config).build_weights()
        >>> hf, tensors, architecture = marian.to_transformers_checkpoint(model)
        >>> type(hf).__name__, architecture, hf.d_model, hf.scale_embedding, len(tensors)
        ('MarianConfig', 'MarianMTModel', 8, True, 44)
        >>> tensors["model.shared.weight"].shape, tensors["final_logits_bias"].shape
        ((20, 8), (1, 20))
        >>> other_eps = TransformerConfig(**example_sizes, layer_norm_eps=1e-6)
        >>> marian.to_transformers_checkpoint(TransformerForSeq2SeqLM(other_eps).build_weights())
        Traceback (most recent call last):
        ...
        vanilla_transformer.convert.config_fields.UnsupportedConfigError: layer_norm_eps=1e-06: MarianMTModel's ...
    """
    from transformers import MarianConfig

    config = model.config
    activation = _check_exportable(config, allow_inexact)
    state = model_state(model)
    if config.sinusoidal_layout == "interleaved":
        state = _permute_residual(state, _interleaved_to_halves(config.d_model))
    if not config.final_logits_bias:
        state["final_logits_bias"] = np.zeros((config.vocab_size,), np.float32)
    hf = MarianConfig(
        vocab_size=config.vocab_size, decoder_vocab_size=config.vocab_size, d_model=config.d_model,
        encoder_layers=config.num_encoder_layers, decoder_layers=config.num_decoder_layers,
        encoder_attention_heads=config.num_heads, decoder_attention_heads=config.num_heads,
        encoder_ffn_dim=config.d_ff, decoder_ffn_dim=config.d_ff, activation_function=activation,
        dropout=config.dropout, attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout, max_position_embeddings=config.max_position_embeddings,
        init_std=config.initializer_range, scale_embedding=config.scale_embedding,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=plain_token_id(config.eos_token_id), decoder_start_token_id=config.decoder_start_token_id,
        forced_eos_token_id=None,
    )
    return hf, weight_map(config).to_source(state), EXPORT_ARCHITECTURE
