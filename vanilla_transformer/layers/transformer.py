"""Section 3.1: encoder and decoder layers, and the stacks of N of them.

Every sub-layer is wrapped as LayerNorm(x + Dropout(Sublayer(x))) (post-LN, the paper) or
x + Dropout(Sublayer(LayerNorm(x))) (pre-LN, ``norm_first=True``, as in GPT-2).
"""

from __future__ import annotations

import keras
from keras import ops

from ..configuration import TransformerConfig
from .attention import MultiHeadAttention
from .embeddings import TokenEmbedding, TransformerEmbedding
from .dropout import Dropout
from .feed_forward import PositionwiseFeedForward


class _ResidualBlocks(keras.layers.Layer):
    """Shared residual wiring of encoder and decoder layers."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.1, attention_dropout=0.0, activation_dropout=0.0,
                 activation="relu", norm_first=False, layer_norm_eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.dropout_rate = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.activation = activation
        self.norm_first = norm_first
        self.layer_norm_eps = layer_norm_eps
        self.dropout = Dropout(dropout)

    def _attention(self, name):
        return MultiHeadAttention(self.d_model, self.num_heads, self.attention_dropout, name=name)

    def _layer_norm(self, name):
        return keras.layers.LayerNormalization(epsilon=self.layer_norm_eps, name=name)

    def _feed_forward(self):
        return PositionwiseFeedForward(self.d_model, self.d_ff, self.activation, self.activation_dropout,
                                       name="feed_forward")

    def _residual(self, hidden, layer_norm, sublayer, training):
        """Apply one sub-layer with its residual connection; returns (hidden, sublayer's extra output)."""
        inputs = layer_norm(hidden) if self.norm_first else hidden
        output, extra = sublayer(inputs)
        hidden = hidden + self.dropout(output, training=training)
        return (hidden if self.norm_first else layer_norm(hidden)), extra

    def build(self, input_shape=None):
        for layer in self._sublayers():
            layer.build((None, None, self.d_model))
        self.built = True

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "d_ff": self.d_ff,
            "dropout": self.dropout_rate,
            "attention_dropout": self.attention_dropout,
            "activation_dropout": self.activation_dropout,
            "activation": self.activation,
            "norm_first": self.norm_first,
            "layer_norm_eps": self.layer_norm_eps,
        }


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class EncoderLayer(_ResidualBlocks):
    """Self-attention then feed-forward: ``(batch, seq, d_model) -> (batch, seq, d_model)``.

    ``attention_mask``: boolean ``(batch, 1, seq, seq)`` (or broadcastable), True = may attend.

    Args:
        d_model: model width.
        num_heads: attention heads h.
        d_ff: inner width of the feed-forward network.
        dropout: residual dropout rate on each sub-layer's output (P_drop = 0.1 in the paper).
        attention_dropout: dropout rate on the attention probabilities.
        activation_dropout: dropout rate inside the feed-forward network.
        activation: feed-forward non-linearity, see :func:`~.feed_forward.activation_fn`.
        norm_first: pre-LN instead of the paper's post-LN.
        layer_norm_eps: LayerNorm epsilon.

    Example:
        >>> from vanilla_transformer.layers import EncoderLayer
        >>> from vanilla_transformer.layers.transformer import key_padding_mask
        >>> layer = EncoderLayer(d_model=8, num_heads=2, d_ff=16)
        >>> tuple(layer(np.zeros((1, 4, 8), "float32")).shape)
        (1, 4, 8)
        >>> mask = key_padding_mask(np.array([[1, 1, 1, 0]]))  # the last position is padding
        >>> tuple(layer(np.zeros((1, 4, 8), "float32"), attention_mask=mask).shape)
        (1, 4, 8)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.self_attn = self._attention("self_attn")
        self.self_attn_layer_norm = self._layer_norm("self_attn_layer_norm")
        self.feed_forward = self._feed_forward()
        self.feed_forward_layer_norm = self._layer_norm("feed_forward_layer_norm")

    def _sublayers(self):
        return [self.self_attn, self.self_attn_layer_norm, self.feed_forward, self.feed_forward_layer_norm]

    def call(self, hidden_states, attention_mask=None, training=False):
        hidden, _ = self._residual(
            hidden_states, self.self_attn_layer_norm,
            lambda x: self.self_attn(x, attention_mask=attention_mask, training=training), training)
        hidden, _ = self._residual(
            hidden, self.feed_forward_layer_norm,
            lambda x: (self.feed_forward(x, training=training), None), training)
        return hidden


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class DecoderLayer(_ResidualBlocks):
    """Masked self-attention, cross-attention over the encoder output (if any), then feed-forward.

    ``call(hidden_states (batch, tgt, d_model), self_attention_mask, encoder_hidden_states=None,
    cross_attention_mask=None, self_attn_cache=None, cache_index=None, cross_attn_cache=None)``
    returns ``(hidden_states, (k, v))`` with the self-attention keys/values (the updated cache), each
    ``(batch, heads, keys, d_k)``. ``encoder_hidden_states`` is ``(batch, src, d_model)``; the masks are
    boolean, broadcastable to ``(batch, heads, tgt, keys)``, True = may attend.

    Args:
        cross_attention: include the encoder-decoder attention sub-layer (False for decoder-only, GPT).
        *args, **kwargs: as for :class:`EncoderLayer` (``d_model, num_heads, d_ff, dropout, ...``).

    Example:
        >>> from vanilla_transformer.layers import DecoderLayer
        >>> from vanilla_transformer.layers.transformer import causal_mask
        >>> layer = DecoderLayer(d_model=8, num_heads=2, d_ff=16)
        >>> target, memory = np.zeros((1, 3, 8), "float32"), np.zeros((1, 5, 8), "float32")
        >>> mask = causal_mask(keras.ops.arange(3), 3)[None, None]  # (1, 1, tgt, tgt)
        >>> hidden, (k, v) = layer(target, self_attention_mask=mask, encoder_hidden_states=memory)
        >>> tuple(hidden.shape), tuple(k.shape)
        ((1, 3, 8), (1, 2, 3, 4))

        One decoding step at position 2, writing into a 6-slot self-attention cache:

        >>> cache = (np.zeros((1, 2, 6, 4), "float32"), np.zeros((1, 2, 6, 4), "float32"))
        >>> step_mask = causal_mask(keras.ops.arange(2, 3), 6)[None, None]  # (1, 1, 1, 6)
        >>> hidden, (k, v) = layer(target[:, :1], self_attention_mask=step_mask, encoder_hidden_states=memory,
        ...                        self_attn_cache=cache, cache_index=2)
        >>> tuple(hidden.shape), tuple(k.shape)
        ((1, 1, 8), (1, 2, 6, 4))
    """

    def __init__(self, *args, cross_attention: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.cross_attention = cross_attention
        self.self_attn = self._attention("self_attn")
        self.self_attn_layer_norm = self._layer_norm("self_attn_layer_norm")
        if cross_attention:
            self.cross_attn = self._attention("cross_attn")
            self.cross_attn_layer_norm = self._layer_norm("cross_attn_layer_norm")
        self.feed_forward = self._feed_forward()
        self.feed_forward_layer_norm = self._layer_norm("feed_forward_layer_norm")

    def _sublayers(self):
        cross = [self.cross_attn, self.cross_attn_layer_norm] if self.cross_attention else []
        return [self.self_attn, self.self_attn_layer_norm, *cross, self.feed_forward,
                self.feed_forward_layer_norm]

    def call(self, hidden_states, self_attention_mask=None, encoder_hidden_states=None,
             cross_attention_mask=None, self_attn_cache=None, cache_index=None, cross_attn_cache=None,
             training=False):
        hidden, present = self._residual(
            hidden_states, self.self_attn_layer_norm,
            lambda x: self.self_attn(x, attention_mask=self_attention_mask, past_key_value=self_attn_cache,
                                     cache_index=cache_index, training=training),
            training)
        if self.cross_attention:
            hidden, _ = self._residual(
                hidden, self.cross_attn_layer_norm,
                lambda x: self.cross_attn(x, key_value=encoder_hidden_states, attention_mask=cross_attention_mask,
                                          past_key_value=cross_attn_cache, training=training),
                training)
        hidden, _ = self._residual(
            hidden, self.feed_forward_layer_norm,
            lambda x: (self.feed_forward(x, training=training), None), training)
        return hidden, present

    def get_config(self):
        return {**super().get_config(), "cross_attention": self.cross_attention}


def key_padding_mask(attention_mask):
    """``(batch, kv_len)`` 1/0 mask -> boolean ``(batch, 1, 1, kv_len)`` for every query and head.

    Padding positions (0) are never attended to; the result broadcasts against ``(batch, heads, q_len, kv_len)``.

    Example:
        >>> from vanilla_transformer.layers.transformer import key_padding_mask
        >>> mask = keras.ops.convert_to_numpy(key_padding_mask(np.array([[1, 1, 0]])))
        >>> mask.shape, mask.tolist()
        ((1, 1, 1, 3), [[[[True, True, False]]]])
    """
    return ops.cast(attention_mask, "bool")[:, None, None, :]


def segment_mask(query_segments, key_segments):
    """Boolean ``(batch, 1, q_len, kv_len)``: a query sees the keys of its own segment (packed rows).

    Several sentences packed into one row (see :class:`~vanilla_transformer.data_collators.
    PackedSeq2SeqCollator`) are numbered 1, 2, ... along the row, padding 0; attention stays within a
    sentence, so a packed row computes what the sentences would compute in rows of their own.

    Args:
        query_segments: int ``(batch, q_len)`` segment number of each query (0: padding).
        key_segments: int ``(batch, kv_len)`` segment number of each key (0: padding, never attended).

    Example:
        >>> from vanilla_transformer.layers.transformer import segment_mask
        >>> mask = keras.ops.convert_to_numpy(segment_mask(np.array([[1, 1, 2, 0]]), np.array([[1, 1, 2, 0]])))
        >>> mask.shape, mask[0, 0].astype(int).tolist()
        ((1, 1, 4, 4), [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    """
    same = ops.equal(query_segments[:, :, None], key_segments[:, None, :])
    return ops.logical_and(same, ops.greater(key_segments, 0)[:, None, :])[:, None, :, :]


def causal_mask(query_positions, key_length):
    """Boolean ``(q_len, key_length)``: query at absolute position p sees keys 0..p (section 3.2.3).

    Masks out the illegal connections to later positions so decoding stays auto-regressive.

    Args:
        query_positions: integer ``(q_len,)`` absolute positions of the queries.
        key_length: number of keys (positions 0 .. key_length - 1).

    Example:
        >>> from vanilla_transformer.layers.transformer import causal_mask
        >>> keras.ops.convert_to_numpy(causal_mask(keras.ops.arange(3), 3)).astype(int).tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
        >>> keras.ops.convert_to_numpy(causal_mask(keras.ops.arange(2, 3), 4)).tolist()  # one step, cached
        [[True, True, True, False]]
    """
    return ops.arange(key_length)[None, :] <= query_positions[:, None]


def _layer_kwargs(config):
    return dict(d_model=config.d_model, num_heads=config.num_heads, d_ff=config.d_ff, dropout=config.dropout,
                attention_dropout=config.attention_dropout, activation_dropout=config.activation_dropout,
                activation=config.activation, norm_first=config.norm_first, layer_norm_eps=config.layer_norm_eps)


def _embedding(config, token_embedding):
    return TransformerEmbedding(
        token_embedding, config.d_model, config.max_position_embeddings, config.position_embedding,
        config.scale_embedding, config.sinusoidal_layout, config.type_vocab_size, config.embedding_layer_norm, config.layer_norm_eps,
        config.dropout, config.initializer_range, name="embed")


class _Stack(keras.layers.Layer):
    """N identical layers over an input embedding, with an optional final LayerNorm."""

    def __init__(self, config, token_embedding: TokenEmbedding, num_layers: int, layer_factory, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embed = _embedding(config, token_embedding)
        self.layers = [layer_factory(name=f"layers_{i}") for i in range(num_layers)]
        self.layer_norm = (keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, name="layer_norm")
                           if config.final_layer_norm else None)

    def build(self, input_shape=None):
        self.embed.build()
        for layer in self.layers:
            layer.build()
        if self.layer_norm is not None:
            self.layer_norm.build((None, None, self.config.d_model))
        self.built = True

    def _final(self, hidden):
        return hidden if self.layer_norm is None else self.layer_norm(hidden)

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict(),
                "token_embedding": keras.saving.serialize_keras_object(self.embed.embed_tokens)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        model_config = TransformerConfig.from_dict(config.pop("config"))
        token_embedding = keras.saving.deserialize_keras_object(config.pop("token_embedding"))
        return cls(model_config, token_embedding, **config)


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class TransformerEncoder(_Stack):
    """The encoder stack: ``input_ids (batch, src) -> hidden states (batch, src, d_model)``.

    ``attention_mask (batch, src)``: 1 for real tokens, 0 for padding (never attended to).
    ``call(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, segment_ids=None)``;
    positions default to ``0 .. src - 1``; ``segment_ids (batch, src)`` (packed rows, see :func:`segment_mask`)
    replace the attention mask.

    Args:
        config: a :class:`~vanilla_transformer.configuration.TransformerConfig`; ``num_encoder_layers``
            layers N (6 in the paper) of its width.
        token_embedding: the shared :class:`TokenEmbedding`.

    Example:
        >>> from vanilla_transformer.layers import TokenEmbedding, TransformerEncoder
        >>> encoder = TransformerEncoder(example_config, TokenEmbedding(20, 8))
        >>> hidden = encoder(np.array([[5, 6, 7, 0]]), attention_mask=np.array([[1, 1, 1, 0]]))
        >>> tuple(hidden.shape)
        (1, 4, 8)
    """

    def __init__(self, config, token_embedding, **kwargs):
        super().__init__(config, token_embedding, config.num_encoder_layers,
                         lambda name: EncoderLayer(**_layer_kwargs(config), name=name), **kwargs)

    def call(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, segment_ids=None,
             training=False):
        if position_ids is None:
            position_ids = ops.arange(ops.shape(input_ids)[1])[None, :]
        hidden = self.embed(input_ids, position_ids, token_type_ids, training=training)
        if segment_ids is not None:  # packed rows: attend within each sentence
            mask = segment_mask(segment_ids, segment_ids)
        else:
            mask = None if attention_mask is None else key_padding_mask(attention_mask)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=mask, training=training)
        return self._final(hidden)


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class TransformerDecoder(_Stack):
    """The decoder stack, causal, with cross-attention when ``cross_attention`` (encoder-decoder).

    ``call(input_ids (batch, tgt), attention_mask=None (batch, keys), encoder_hidden_states=None,
    encoder_attention_mask=None, position_ids=None, cache=None, cache_index=None, segment_ids=None,
    encoder_segment_ids=None)``. ``segment_ids (batch, tgt)`` / ``encoder_segment_ids (batch, src)`` describe
    packed rows (see :func:`segment_mask`) and replace both attention masks.

    Without ``cache`` the keys are the ``tgt`` inputs themselves. With ``cache`` (from
    :meth:`init_cache`), the inputs are the tokens at positions ``cache_index ...`` and keys are the
    cache's ``max_len`` slots; ``attention_mask`` then covers those slots. Returns
    ``(hidden (batch, tgt, d_model), cache)``.

    Args:
        config: a :class:`~vanilla_transformer.configuration.TransformerConfig`; ``num_decoder_layers``
            layers N (6 in the paper) of its width.
        token_embedding: the shared :class:`TokenEmbedding`.
        cross_attention: attend over an encoder output (encoder-decoder); False for decoder-only models.

    Example:
        >>> from vanilla_transformer.layers import TokenEmbedding, TransformerDecoder
        >>> decoder = TransformerDecoder(example_config, TokenEmbedding(20, 8))
        >>> memory = np.zeros((1, 5, 8), "float32")  # encoder output (batch, src, d_model)
        >>> hidden, cache = decoder(np.array([[1, 5, 6]]), encoder_hidden_states=memory)
        >>> tuple(hidden.shape), cache
        ((1, 3, 8), None)

        Incremental decoding: one token at position 0 against a 4-slot cache.

        >>> cache = decoder.init_cache(batch_size=1, max_length=4, encoder_hidden_states=memory)
        >>> hidden, cache = decoder(np.array([[1]]), encoder_hidden_states=memory, cache=cache, cache_index=0)
        >>> tuple(hidden.shape), tuple(cache["self"][0][0].shape)
        ((1, 1, 8), (1, 2, 4, 4))
    """

    def __init__(self, config, token_embedding, cross_attention=True, **kwargs):
        self.cross_attention = cross_attention
        super().__init__(
            config, token_embedding, config.num_decoder_layers,
            lambda name: DecoderLayer(**_layer_kwargs(config), cross_attention=cross_attention, name=name),
            **kwargs)

    def init_cache(self, batch_size, max_length, encoder_hidden_states=None, dtype=None):
        """Empty self-attention cache of ``max_length`` slots and, for encoder-decoder models, the
        cross-attention keys/values computed once from ``encoder_hidden_states``.

        Returns ``{"self": [(k, v)] * layers, "cross": [(k, v)] * layers}`` with self-attention entries
        ``(batch_size, heads, max_length, d_k)`` (zeros) and cross-attention entries ``(batch, heads, src, d_k)``.
        """
        dtype = dtype or self.compute_dtype
        shape = (batch_size, self.config.num_heads, max_length, self.config.head_dim)
        cache = {"self": [(ops.zeros(shape, dtype), ops.zeros(shape, dtype)) for _ in self.layers]}
        if self.cross_attention:
            cache["cross"] = [layer.cross_attn.project_key_value(encoder_hidden_states) for layer in self.layers]
        return cache

    def get_config(self):
        return {**super().get_config(), "cross_attention": self.cross_attention}

    def call(self, input_ids, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
             position_ids=None, cache=None, cache_index=None, segment_ids=None, encoder_segment_ids=None,
             training=False):
        length = ops.shape(input_ids)[1]
        offset = 0 if cache is None else cache_index
        query_positions = ops.arange(length) + offset
        if position_ids is None:
            position_ids = query_positions[None, :]
        hidden = self.embed(input_ids, position_ids, training=training)
        key_length = length if cache is None else ops.shape(cache["self"][0][0])[2]
        self_mask = causal_mask(query_positions, key_length)[None, None, :, :]
        if segment_ids is not None:  # packed rows: each sentence attends to itself and its own source
            self_mask = ops.logical_and(self_mask, segment_mask(segment_ids, segment_ids))
            cross_mask = segment_mask(segment_ids, encoder_segment_ids)
        else:
            if attention_mask is not None:
                self_mask = ops.logical_and(self_mask, key_padding_mask(attention_mask))
            cross_mask = None if encoder_attention_mask is None else key_padding_mask(encoder_attention_mask)
        new_self = []
        for i, layer in enumerate(self.layers):
            hidden, present = layer(
                hidden, self_attention_mask=self_mask, encoder_hidden_states=encoder_hidden_states,
                cross_attention_mask=cross_mask,
                self_attn_cache=None if cache is None else cache["self"][i],
                cache_index=None if cache is None else cache_index,
                cross_attn_cache=None if cache is None or not self.cross_attention else cache["cross"][i],
                training=training)
            new_self.append(present)
        if cache is not None:
            cache = dict(cache, self=new_self)
        return self._final(hidden), cache
