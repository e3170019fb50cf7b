"""Section 3.2: scaled dot-product attention and multi-head attention, with a decoding cache."""

from __future__ import annotations

import keras
from keras import ops

from .dropout import Dropout
from .lora import LoraDense

# Added to masked scores before the softmax. Finite (not -inf) so a row with no visible key, such as an
# all-padding row, gives a uniform distribution instead of NaN; far below any real score in float32.
MASK_VALUE = -1e9


def scaled_dot_product_attention(query, key, value, attention_mask=None, dropout=None, training=False):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V  (equation 1).

    Args:
        query: ``(batch, heads, q_len, d_k)``, or ``(batch * g, heads, q_len, d_k)`` when each key row serves
            the g consecutive query rows ``b * g .. b * g + g - 1`` (beam search: the beams of a source
            share its cross-attention keys). The g rows then join the query axis, so each key is read once
            per source instead of once per beam.
        key, value: ``(batch, heads, kv_len, d_k)``.
        attention_mask: boolean, broadcastable to ``(batch, heads, q_len, kv_len)``; True = may attend.
            With shared keys: ``(batch or 1, ., 1, kv_len)``.
        dropout: optional dropout layer applied to the attention probabilities.
        training: whether ``dropout`` is active.

    Returns:
        ``query``'s shape. Scores and softmax are computed in float32 so that mixed precision cannot
        overflow the mask value or lose the normalisation.

    Example:
        Equal scores give a uniform softmax, so each output row is the mean of the value rows; a mask
        that hides keys 1 and 2 leaves only value row 0:

        >>> from vanilla_transformer.layers import scaled_dot_product_attention
        >>> query = np.zeros((1, 1, 2, 4), "float32")  # (batch, heads, q_len, d_k)
        >>> key = np.ones((1, 1, 3, 4), "float32")  # (batch, heads, kv_len, d_k)
        >>> value = np.arange(12, dtype="float32").reshape(1, 1, 3, 4)
        >>> out = scaled_dot_product_attention(query, key, value)
        >>> tuple(out.shape)
        (1, 1, 2, 4)
        >>> keras.ops.convert_to_numpy(out)[0, 0, 0].tolist()
        [4.0, 5.0, 6.0, 7.0]
        >>> mask = np.array([True, False, False])[None, None, None, :]  # (1, 1, 1, kv_len)
        >>> keras.ops.convert_to_numpy(scaled_dot_product_attention(query, key, value, mask))[0, 0, 0].tolist()
        [0.0, 1.0, 2.0, 3.0]

        Three beams per source share the source's keys (query rows = 3 x key rows):

        >>> tuple(scaled_dot_product_attention(np.zeros((3, 1, 2, 4), "float32"), key, value).shape)
        (3, 1, 2, 4)
    """
    groups = _query_groups(query, key)
    if groups == 1:
        return _attention(query, key, value, attention_mask, dropout, training)
    rows, heads, length, d_k = query.shape
    batch = rows // groups
    if attention_mask is not None and (attention_mask.shape[0] not in (1, batch) or attention_mask.shape[2] != 1):
        raise ValueError(f"grouped attention needs a mask of shape ({batch} or 1, ., 1, keys), "
                         f"got {tuple(attention_mask.shape)}")
    query = ops.reshape(ops.transpose(ops.reshape(query, (batch, groups, heads, length, d_k)), (0, 2, 1, 3, 4)),
                        (batch, heads, groups * length, d_k))
    out = _attention(query, key, value, attention_mask, dropout, training)
    out = ops.transpose(ops.reshape(out, (batch, heads, groups, length, d_k)), (0, 2, 1, 3, 4))
    return ops.reshape(out, (rows, heads, length, d_k))


def _attention(query, key, value, attention_mask, dropout, training):
    d_k = query.shape[-1]
    scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
    scores = ops.cast(scores, "float32") * (1.0 / float(d_k) ** 0.5)
    if attention_mask is not None:
        scores = ops.where(attention_mask, scores, MASK_VALUE)
    weights = ops.cast(ops.softmax(scores, axis=-1), value.dtype)
    if dropout is not None:
        weights = dropout(weights, training=training)
    return ops.matmul(weights, value)


def _query_groups(query, key) -> int:
    """How many query rows share one key row: 1 normally; ``num_beams`` when cross-attention keys were
    computed once per source and the queries are ``batch * num_beams`` beams (static shapes only)."""
    rows, batch = query.shape[0], key.shape[0]
    if not isinstance(rows, int) or not isinstance(batch, int) or rows == batch:
        return 1
    if rows % batch:
        raise ValueError(f"{rows} query rows cannot share {batch} key/value rows")
    return rows // batch


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class MultiHeadAttention(keras.layers.Layer):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(Q W^Q_i, K W^K_i, V W^V_i)  (3.2.2).

    ``call(query, key_value=None, attention_mask=None, past_key_value=None, cache_index=None)``, with
    ``query (batch, q_len, d_model)``:

    - self-attention when ``key_value`` is None, cross-attention over ``key_value (batch, kv_len, d_model)``
      otherwise;
    - ``past_key_value=(k, v)`` with ``cache_index=None``: precomputed keys/values (cross-attention
      during decoding, computed once from the encoder output by :meth:`project_key_value`);
    - ``past_key_value=(k, v)`` with ``cache_index=i``: a fixed-size self-attention cache
      ``(batch, heads, max_len, d_k)``; the new keys/values are written at positions ``i, i+1, ...``.

    Returns ``(output (batch, q_len, d_model), (k, v))`` with ``k``, ``v`` of ``(batch, heads, kv_len, d_k)``.

    Args:
        d_model: model width; must be divisible by ``num_heads``.
        num_heads: number of heads h; each has width d_k = d_v = d_model / h.
        attention_dropout: dropout rate on the attention probabilities (0 in the paper).
        kernel_initializer: initializer of the four projections W^Q, W^K, W^V, W^O.

    Example:
        >>> from vanilla_transformer.layers import MultiHeadAttention
        >>> mha = MultiHeadAttention(d_model=8, num_heads=2)
        >>> out, (k, v) = mha(np.zeros((1, 3, 8), "float32"))
        >>> tuple(out.shape), tuple(k.shape)
        ((1, 3, 8), (1, 2, 3, 4))
        >>> out, _ = mha(np.zeros((1, 3, 8), "float32"), key_value=np.zeros((1, 5, 8), "float32"))
        >>> tuple(out.shape)  # cross-attention: q_len from the query, 5 keys from key_value
        (1, 3, 8)
    """

    def __init__(self, d_model: int, num_heads: int, attention_dropout: float = 0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.attention_dropout = attention_dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        dense = dict(kernel_initializer=self.kernel_initializer)
        self.q_proj = LoraDense(d_model, name="q_proj", **dense)
        self.k_proj = LoraDense(d_model, name="k_proj", **dense)
        self.v_proj = LoraDense(d_model, name="v_proj", **dense)
        self.o_proj = LoraDense(d_model, name="o_proj", **dense)
        self.dropout = Dropout(attention_dropout)

    def build(self, query_shape=None, key_value_shape=None):
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            proj.build((None, None, self.d_model))
        self.built = True

    def _split_heads(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def project_key_value(self, key_value):
        """Keys and values of ``key_value (batch, kv_len, d_model)``, each ``(batch, heads, kv_len, d_k)``."""
        return self._split_heads(self.k_proj(key_value)), self._split_heads(self.v_proj(key_value))

    def call(self, query, key_value=None, attention_mask=None, past_key_value=None, cache_index=None,
             training=False):
        q = self._split_heads(self.q_proj(query))
        if past_key_value is not None and cache_index is None:
            k, v = past_key_value
        else:
            k, v = self.project_key_value(query if key_value is None else key_value)
            if past_key_value is not None:
                start = (0, 0, cache_index, 0)
                k = ops.slice_update(past_key_value[0], start, ops.cast(k, past_key_value[0].dtype))
                v = ops.slice_update(past_key_value[1], start, ops.cast(v, past_key_value[1].dtype))
        heads = scaled_dot_product_attention(q, k, v, attention_mask, self.dropout, training)
        batch, length = ops.shape(query)[0], ops.shape(query)[1]
        concat = ops.reshape(ops.transpose(heads, (0, 2, 1, 3)), (batch, length, self.d_model))
        return self.o_proj(concat), (k, v)

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "attention_dropout": self.attention_dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
