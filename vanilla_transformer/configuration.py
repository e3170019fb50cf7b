"""`TransformerConfig`: the single source of truth for every model shape.

One config describes the paper's encoder-decoder (Vaswani et al., 2017), a BERT-style encoder and a
GPT-style decoder; the layers read their sizes and options from it and nowhere else.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from transformers import AutoConfig, PretrainedConfig

from .compat import default_generation_params

logger = logging.getLogger(__name__)


def token_ids(value) -> tuple:
    """A special-token field that may hold one id, a list of ids or None, as a tuple (``eos_token_id``).

    >>> token_ids(2), token_ids([2, 3]), token_ids(None)
    ((2,), (2, 3), ())
    """
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)

ARCHITECTURES = ("encoder-decoder", "encoder", "decoder")
POSITION_EMBEDDINGS = ("sinusoidal", "learned")
SINUSOIDAL_LAYOUTS = ("interleaved", "halves")
ACTIVATIONS = ("relu", "gelu", "gelu_new", "swish", "silu")

# Preset tables, one value per config field: alike in shape, different in content.
# Table 3 of the paper. "base" and "big" share everything not listed; vocab 37,000 is the shared
# byte-pair vocabulary of WMT 2014 English-German (section 5.1).
_PAPER = dict(
    architecture="encoder-decoder",
    vocab_size=37000,
    num_encoder_layers=6,
    num_decoder_layers=6,
    position_embedding="sinusoidal",
    activation="relu",
    norm_first=False,
    scale_embedding=True,
    tie_word_embeddings=True,
    label_smoothing=0.1,
    attention_dropout=0.0,
    max_position_embeddings=1024,
)
_BERT = dict(
    architecture="encoder",
    vocab_size=30522,
    d_model=768,
    num_heads=12,
    d_ff=3072,
    num_encoder_layers=12,
    num_decoder_layers=0,
    dropout=0.1,
    attention_dropout=0.1,
    activation="gelu",
    position_embedding="learned",
    max_position_embeddings=512,
    type_vocab_size=2,
    embedding_layer_norm=True,
    norm_first=False,
    layer_norm_eps=1e-12,
    scale_embedding=False,
    add_pooler=True,
    pad_token_id=0,
    bos_token_id=None,
    eos_token_id=None,
    decoder_start_token_id=None,
    mask_token_id=103,
)
_GPT = dict(
    architecture="decoder",
    vocab_size=40478,
    d_model=768,
    num_heads=12,
    d_ff=3072,
    num_encoder_layers=0,
    num_decoder_layers=12,
    dropout=0.1,
    attention_dropout=0.1,
    activation="gelu_new",
    position_embedding="learned",
    max_position_embeddings=512,
    norm_first=False,
    layer_norm_eps=1e-5,
    scale_embedding=False,
    pad_token_id=None,
    bos_token_id=None,
    eos_token_id=None,
    decoder_start_token_id=None,
)
PRESETS: dict[str, dict[str, Any]] = {
    "transformer-base": dict(_PAPER, d_model=512, d_ff=2048, num_heads=8, dropout=0.1),
    "transformer-big": dict(_PAPER, d_model=1024, d_ff=4096, num_heads=16, dropout=0.3),
    "bert-base": _BERT,
    "gpt": _GPT,
    "gpt2": dict(
        _GPT,
        vocab_size=50257,
        max_position_embeddings=1024,
        norm_first=True,
        final_layer_norm=True,
        bos_token_id=50256,
        eos_token_id=50256,
    ),
}


def _known_base_keys() -> set[str]:
    """Keys that transformers' base config (and the generation parameters it strips) understand."""
    import dataclasses

    keys = {field.name for field in dataclasses.fields(PretrainedConfig)}
    keys |= set(default_generation_params())
    keys |= {"name_or_path", "_name_or_path", "torch_dtype", "transformers_version", "model_type", "num_labels",
             "_commit_hash", "attn_implementation", "output_attentions", "experts_implementation",
             "decoder_start_token_id", "use_cache", "is_decoder", "add_cross_attention", "tie_encoder_decoder",
             "sep_token_id", "per_layer_config"}
    return keys


class TransformerConfig(PretrainedConfig):
    r"""Configuration of a vanilla Transformer (encoder-decoder, encoder-only or decoder-only).

    Args:
        architecture: ``"encoder-decoder"`` (the paper), ``"encoder"`` (BERT-style) or ``"decoder"``
            (GPT-style, no cross-attention).
        vocab_size: size of the (shared) vocabulary.
        d_model: width of every sub-layer output (the paper's d_model).
        num_heads: attention heads h; ``d_model`` must be divisible by it (d_k = d_v = d_model / h).
        d_ff: inner width of the position-wise feed-forward network.
        num_encoder_layers / num_decoder_layers: N for each stack.
        dropout: P_drop on sub-layer outputs and on the embedding sums (section 5.4).
        attention_dropout: dropout on attention probabilities.
        activation_dropout: dropout after the feed-forward activation.
        max_position_embeddings: longest sequence the model accepts.
        position_embedding: ``"sinusoidal"`` (section 3.5) or ``"learned"``.
        sinusoidal_layout: ``"interleaved"`` (sin on even, cos on odd dimensions, as the formula is
            written) or ``"halves"`` (all sines then all cosines, as tensor2tensor, fairseq and Marian do).
        norm_first: ``False`` = post-LN, LayerNorm(x + Sublayer(x)) as in the paper; ``True`` = pre-LN.
        final_layer_norm: LayerNorm after the last layer of each stack (pre-LN models need it).
        embedding_layer_norm: LayerNorm on the embedding sum (BERT).
        activation: feed-forward activation, ``"relu"`` in the paper.
        layer_norm_eps: epsilon of every LayerNorm.
        scale_embedding: multiply token embeddings by sqrt(d_model) (section 3.4).
        tie_word_embeddings: share the token embedding with the pre-softmax projection (section 3.4).
        final_logits_bias: add a (non-trained) bias to the output logits (Marian checkpoints).
        type_vocab_size: number of token-type (segment) embeddings; 0 = none.
        add_pooler: BERT's pooler (dense + tanh on the first token) in encoder models.
        label_smoothing: epsilon_ls used by ``compile()``'s default loss (section 5.4).
        pad_token_id / bos_token_id / eos_token_id / decoder_start_token_id / mask_token_id: special ids.

    Example:
        >>> from vanilla_transformer import TransformerConfig
        >>> config = TransformerConfig.from_preset("transformer-base")
        >>> (config.d_model, config.num_heads, config.d_ff)
        (512, 8, 2048)
    """

    model_type = "vanilla_transformer"
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "num_heads"}

    def __init__(
        self,
        architecture: str = "encoder-decoder",
        vocab_size: int = 8000,
        d_model: int = 512,
        num_heads: int = 8,
        d_ff: int = 2048,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        max_position_embeddings: int = 1024,
        position_embedding: str = "sinusoidal",
        sinusoidal_layout: str = "interleaved",
        norm_first: bool = False,
        final_layer_norm: bool = False,
        embedding_layer_norm: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        scale_embedding: bool = True,
        tie_word_embeddings: bool = True,
        final_logits_bias: bool = False,
        type_vocab_size: int = 0,
        add_pooler: bool = False,
        label_smoothing: float = 0.1,
        initializer_range: float = 0.02,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        decoder_start_token_id: int | None = 1,
        mask_token_id: int | None = None,
        **kwargs: Any,
    ):
        self.architecture = architecture
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.max_position_embeddings = max_position_embeddings
        self.position_embedding = position_embedding
        self.sinusoidal_layout = sinusoidal_layout
        self.norm_first = norm_first
        self.final_layer_norm = final_layer_norm
        self.embedding_layer_norm = embedding_layer_norm
        self.activation = activation
        self.layer_norm_eps = layer_norm_eps
        self.scale_embedding = scale_embedding
        self.final_logits_bias = final_logits_bias
        self.type_vocab_size = type_vocab_size
        self.add_pooler = add_pooler
        self.label_smoothing = label_smoothing
        self.initializer_range = initializer_range
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.decoder_start_token_id = decoder_start_token_id
        self.mask_token_id = mask_token_id
        self.tie_word_embeddings = tie_word_embeddings
        self._check()  # before the base class, whose own checks would trip over bad values
        kwargs.setdefault("is_encoder_decoder", architecture == "encoder-decoder")
        unknown = sorted(set(kwargs) - _known_base_keys())
        if unknown:
            # A config from a newer version of this package: keep the values, but say they are unused.
            logger.warning("TransformerConfig: unknown keys %s are kept as attributes but not used by this "
                           "version of vanilla_transformer", unknown)
        super().__init__(**kwargs)

    # ----------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        """d_k = d_v = d_model / h."""
        return self.d_model // self.num_heads

    @property
    def has_encoder(self) -> bool:
        return self.architecture in ("encoder-decoder", "encoder")

    @property
    def has_decoder(self) -> bool:
        return self.architecture in ("encoder-decoder", "decoder")

    def _check(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""

        def fail(field: str, message: str) -> None:
            raise ValueError(f"TransformerConfig.{field}={getattr(self, field)!r}: {message}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if self.architecture not in ARCHITECTURES:
            fail("architecture", f"must be one of {ARCHITECTURES}")
        for field in ("vocab_size", "d_model", "num_heads", "d_ff", "max_position_embeddings"):
            if not is_int(getattr(self, field)) or getattr(self, field) <= 0:
                fail(field, "must be a positive integer")
        for field in ("num_encoder_layers", "num_decoder_layers", "type_vocab_size"):
            if not is_int(getattr(self, field)) or getattr(self, field) < 0:
                fail(field, "must be a non-negative integer")
        if self.has_encoder and self.num_encoder_layers == 0:
            fail("num_encoder_layers", f"must be positive for architecture {self.architecture!r}")
        if self.has_decoder and self.num_decoder_layers == 0:
            fail("num_decoder_layers", f"must be positive for architecture {self.architecture!r}")
        if self.d_model % self.num_heads:
            fail("d_model", f"must be divisible by num_heads={self.num_heads}")
        for field in ("dropout", "attention_dropout", "activation_dropout", "label_smoothing"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                fail(field, "must be a number in [0, 1)")
        if not isinstance(self.layer_norm_eps, (int, float)) or not self.layer_norm_eps > 0:
            fail("layer_norm_eps", "must be a positive number")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            fail("position_embedding", f"must be one of {POSITION_EMBEDDINGS}")
        if self.sinusoidal_layout not in SINUSOIDAL_LAYOUTS:
            fail("sinusoidal_layout", f"must be one of {SINUSOIDAL_LAYOUTS}")
        if self.activation not in ACTIVATIONS:
            fail("activation", f"must be one of {ACTIVATIONS}")
        for field in ("norm_first", "final_layer_norm", "embedding_layer_norm", "scale_embedding",
                      "tie_word_embeddings", "final_logits_bias", "add_pooler"):
            if not isinstance(getattr(self, field), bool):
                fail(field, "must be a bool")
        for field in ("pad_token_id", "bos_token_id", "decoder_start_token_id", "mask_token_id"):
            value = getattr(self, field)
            if value is not None and (not is_int(value) or not 0 <= value < self.vocab_size):
                fail(field, f"must be None or an id in [0, vocab_size={self.vocab_size})")
        for value in token_ids(self.eos_token_id):
            if value is not None and (not is_int(value) or not 0 <= value < self.vocab_size):
                fail("eos_token_id", f"must be None, an id or a list of ids in [0, {self.vocab_size})")
        if self.architecture == "encoder-decoder" and self.decoder_start_token_id is None:
            fail("decoder_start_token_id", "is required by an encoder-decoder model")

    def validate(self) -> None:  # pragma: no cover - called by transformers' own machinery
        self._check()

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def presets(cls) -> list[str]:
        """Names accepted by :meth:`from_preset`."""
        return sorted(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "TransformerConfig":
        """Build a config from a named preset (see :data:`PRESETS`), with fields overridden.

        >>> TransformerConfig.from_preset("transformer-big", vocab_size=32000).num_heads
        16
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; available presets: {', '.join(sorted(PRESETS))}")
        values = copy.deepcopy(PRESETS[name])
        values.update(overrides)
        return cls(**values)


AutoConfig.register(TransformerConfig.model_type, TransformerConfig)
