"""Section 3.4 (embeddings and softmax) and section 3.5 (positional encoding)."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from .dropout import Dropout
from .lora import LoraEmbeddingMixin


def sinusoidal_table(length: int, d_model: int, layout: str = "interleaved") -> np.ndarray:
    """The paper's positional encoding as a ``(length, d_model)`` float32 array.

    PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).
    ``layout="interleaved"``: sines on even and cosines on odd dimensions, as the formula is written.
    ``layout="halves"``: the same frequencies, all sines first then all cosines (tensor2tensor, fairseq,
    Marian); a fixed permutation of the dimensions, equivalent for a model trained with it.

    Args:
        length: number of positions (rows).
        d_model: encoding width (columns).
        layout: ``"interleaved"`` or ``"halves"``.

    Returns:
        ``(length, d_model)`` float32 NumPy array; row ``pos`` encodes position ``pos``.

    Example:
        >>> from vanilla_transformer.layers import sinusoidal_table
        >>> table = sinusoidal_table(length=10, d_model=4)
        >>> table.shape, str(table.dtype)
        ((10, 4), 'float32')
        >>> table[0].tolist()  # sin(0) = 0, cos(0) = 1
        [0.0, 1.0, 0.0, 1.0]
        >>> [round(float(v), 3) for v in table[1]]  # sin(1), cos(1), sin(1/100), cos(1/100)
        [0.841, 0.54, 0.01, 1.0]
        >>> sinusoidal_table(10, 4, layout="halves")[0].tolist()  # sines first, then cosines
        [0.0, 0.0, 1.0, 1.0]
    """
    position = np.arange(length, dtype=np.float64)[:, None]
    two_i = np.arange(0, d_model, 2, dtype=np.float64)[None, :]
    angle = position / np.power(10000.0, two_i / d_model)
    table = np.zeros((length, d_model), dtype=np.float64)
    if layout == "interleaved":
        table[:, 0::2] = np.sin(angle)
        table[:, 1::2] = np.cos(angle[:, : d_model // 2])
    elif layout == "halves":
        half = (d_model + 1) // 2
        table[:, :half] = np.sin(angle)
        table[:, half:] = np.cos(angle[:, : d_model - half])
    else:
        raise ValueError(f"layout must be 'interleaved' or 'halves', got {layout!r}")
    return table.astype("float32")


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class TokenEmbedding(LoraEmbeddingMixin, keras.layers.Layer):
    """Token embedding shared by encoder input, decoder input and the pre-softmax projection.

    ``call(ids)`` looks tokens up, ``(batch, seq) -> (batch, seq, d_model)``; ``attend(hidden)`` is the
    tied output projection, ``(batch, seq, d_model) -> (batch, seq, vocab_size)`` (section 3.4). ``enable_lora``
    adds a low-rank adapter to the lookup (:class:`~vanilla_transformer.layers.lora.LoraEmbeddingMixin`).

    Args:
        vocab_size: number of tokens V; the table is ``(vocab_size, d_model)``.
        d_model: embedding width.
        embeddings_initializer: initializer of the table.

    Example:
        >>> from vanilla_transformer.layers import TokenEmbedding
        >>> emb = TokenEmbedding(vocab_size=20, d_model=8)
        >>> hidden = emb(np.array([[1, 2, 3]]))
        >>> tuple(hidden.shape)
        (1, 3, 8)
        >>> tuple(emb.attend(hidden).shape)  # logits over the vocabulary, with the same weights
        (1, 3, 20)
    """

    def __init__(self, vocab_size: int, d_model: int, embeddings_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.vocab_size, self.d_model), initializer=self.embeddings_initializer
        )
        self.built = True

    def call(self, token_ids):
        return self.lora_lookup(token_ids, ops.take(self.embeddings, ops.cast(token_ids, "int32"), axis=0))

    def attend(self, hidden_states):
        """Pre-softmax linear map with the embedding matrix: ``(batch, seq, d_model) -> (batch, seq, vocab)``."""
        return ops.matmul(hidden_states, ops.transpose(ops.cast(self.embeddings, hidden_states.dtype)))

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class SinusoidalPositionalEncoding(keras.layers.Layer):
    """Fixed sinusoids (section 3.5): ``position_ids (batch, seq) -> (batch, seq, d_model)``.

    The table is a constant, not a weight, so checkpoints carry nothing for it.

    Args:
        max_length: number of positions in the table.
        d_model: encoding width.
        layout: ``"interleaved"`` or ``"halves"``, see :func:`sinusoidal_table`.

    Example:
        >>> from vanilla_transformer.layers import SinusoidalPositionalEncoding, sinusoidal_table
        >>> pe = SinusoidalPositionalEncoding(max_length=16, d_model=8)
        >>> out = keras.ops.convert_to_numpy(pe(np.array([[0, 1, 2]])))
        >>> out.shape, len(pe.weights)
        ((1, 3, 8), 0)
        >>> bool(np.allclose(out[0], sinusoidal_table(16, 8)[:3]))
        True
    """

    def __init__(self, max_length: int, d_model: int, layout: str = "interleaved", **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length
        self.d_model = d_model
        self.layout = layout
        self._table = sinusoidal_table(max_length, d_model, layout)

    def build(self, input_shape=None):
        self.built = True

    def call(self, position_ids):
        return ops.take(ops.convert_to_tensor(self._table, dtype=self.compute_dtype), position_ids, axis=0)

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length, "d_model": self.d_model,
                "layout": self.layout}


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class LearnedPositionEmbedding(keras.layers.Layer):
    """Trained position vectors (BERT, GPT): ``position_ids (batch, seq) -> (batch, seq, d_model)``.

    The paper found them nearly identical to the sinusoids (section 3.5, table 3 row E). Also used for
    BERT's token-type (segment) embeddings.

    Args:
        max_length: number of positions; the table is ``(max_length, d_model)``.
        d_model: embedding width.
        initializer_range: standard deviation of the truncated-normal initializer.

    Example:
        >>> from vanilla_transformer.layers import LearnedPositionEmbedding
        >>> pos = LearnedPositionEmbedding(max_length=16, d_model=8)
        >>> tuple(pos(np.array([[0, 1, 2]])).shape)
        (1, 3, 8)
        >>> [tuple(w.shape) for w in pos.weights]
        [(16, 8)]
    """

    def __init__(self, max_length: int, d_model: int, initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length
        self.d_model = d_model
        self.initializer_range = initializer_range

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_length, self.d_model),
            initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_range),
        )
        self.built = True

    def call(self, position_ids):
        return ops.take(self.embeddings, position_ids, axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "max_length": self.max_length,
            "d_model": self.d_model,
            "initializer_range": self.initializer_range,
        }


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class TransformerEmbedding(keras.layers.Layer):
    """Input embedding of one stack: tokens x sqrt(d_model) + positions (+ token types), then dropout.

    ``call(input_ids, position_ids, token_type_ids=None) -> (batch, seq, d_model)``. The token table is
    passed in (``token_embedding``) because the paper shares it across both stacks and the output layer.

    Args:
        token_embedding: the shared :class:`TokenEmbedding`.
        d_model: model width.
        max_length: number of positions.
        position_embedding: ``"sinusoidal"`` (the paper) or ``"learned"``.
        scale_embedding: multiply the token embeddings by sqrt(d_model) (section 3.4).
        sinusoidal_layout: ``"interleaved"`` or ``"halves"``, see :func:`sinusoidal_table`.
        type_vocab_size: number of token types (BERT's segments); 0 for none.
        embedding_layer_norm: LayerNorm over the sum (BERT).
        layer_norm_eps: epsilon of that LayerNorm.
        dropout: dropout rate on the sum (P_drop = 0.1 in the paper).
        initializer_range: standard deviation of learned position and token-type tables.

    Example:
        >>> from vanilla_transformer.layers import TokenEmbedding, TransformerEmbedding, sinusoidal_table
        >>> tokens = TokenEmbedding(vocab_size=20, d_model=8)
        >>> embed = TransformerEmbedding(tokens, d_model=8, max_length=16)
        >>> ids, positions = np.array([[5, 6, 7]]), np.array([[0, 1, 2]])
        >>> out = keras.ops.convert_to_numpy(embed(ids, positions))
        >>> out.shape
        (1, 3, 8)
        >>> expected = keras.ops.convert_to_numpy(tokens(ids)) * 8 ** 0.5 + sinusoidal_table(16, 8)[:3]
        >>> bool(np.allclose(out, expected, atol=1e-6))
        True
    """

    def __init__(
        self,
        token_embedding: TokenEmbedding,
        d_model: int,
        max_length: int,
        position_embedding: str = "sinusoidal",
        scale_embedding: bool = True,
        sinusoidal_layout: str = "interleaved",
        type_vocab_size: int = 0,
        embedding_layer_norm: bool = False,
        layer_norm_eps: float = 1e-6,
        dropout: float = 0.0,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embed_tokens = token_embedding
        self.d_model = d_model
        self.max_length = max_length
        self.position_embedding = position_embedding
        self.sinusoidal_layout = sinusoidal_layout
        self.scale_embedding = scale_embedding
        self.type_vocab_size = type_vocab_size
        self.embedding_layer_norm = embedding_layer_norm
        self.layer_norm_eps = layer_norm_eps
        self.dropout_rate = dropout
        self.initializer_range = initializer_range
        self.embed_scale = math.sqrt(d_model) if scale_embedding else 1.0
        if position_embedding == "sinusoidal":
            self.embed_positions = SinusoidalPositionalEncoding(max_length, d_model, sinusoidal_layout,
                                                               name="embed_positions")
        else:
            self.embed_positions = LearnedPositionEmbedding(
                max_length, d_model, initializer_range, name="embed_positions"
            )
        self.token_type_embeddings = (
            LearnedPositionEmbedding(type_vocab_size, d_model, initializer_range, name="token_type_embeddings")
            if type_vocab_size
            else None
        )
        self.layer_norm = (
            keras.layers.LayerNormalization(epsilon=layer_norm_eps, name="layer_norm")
            if embedding_layer_norm
            else None
        )
        self.dropout = Dropout(dropout)

    def build(self, input_shape=None):
        for layer in (self.embed_positions, self.token_type_embeddings):
            if layer is not None:
                layer.build()
        if self.layer_norm is not None:
            self.layer_norm.build((None, None, self.d_model))
        self.built = True

    def call(self, input_ids, position_ids, token_type_ids=None, training=False):
        hidden = self.embed_tokens(input_ids) * ops.cast(self.embed_scale, self.compute_dtype)
        hidden = hidden + self.embed_positions(position_ids)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = ops.zeros_like(input_ids)
            hidden = hidden + self.token_type_embeddings(token_type_ids)
        if self.layer_norm is not None:
            hidden = self.layer_norm(hidden)
        return self.dropout(hidden, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            token_embedding=keras.saving.serialize_keras_object(self.embed_tokens),
            d_model=self.d_model,
            max_length=self.max_length,
            position_embedding=self.position_embedding,
            scale_embedding=self.scale_embedding,
            sinusoidal_layout=self.sinusoidal_layout,
            type_vocab_size=self.type_vocab_size,
            embedding_layer_norm=self.embedding_layer_norm,
            layer_norm_eps=self.layer_norm_eps,
            dropout=self.dropout_rate,
            initializer_range=self.initializer_range,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["token_embedding"] = keras.saving.deserialize_keras_object(config["token_embedding"])
        return cls(**config)
