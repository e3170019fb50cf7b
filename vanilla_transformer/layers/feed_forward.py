"""Section 3.3: the position-wise feed-forward network FFN(x) = max(0, x W1 + b1) W2 + b2."""

from __future__ import annotations

import keras
from keras import ops

from .dropout import Dropout
from .lora import LoraDense


def activation_fn(name: str):
    """The feed-forward non-linearity by config name (``relu`` in the paper: max(0, x) in equation 2).

    Args:
        name: ``"relu"``, ``"gelu"`` (exact erf form, BERT), ``"gelu_new"`` (tanh approximation, GPT-2),
            ``"swish"`` or ``"silu"`` (Marian).

    Returns:
        An elementwise function of a tensor, shape-preserving.

    Example:
        >>> from vanilla_transformer.layers.feed_forward import activation_fn
        >>> x = np.array([-1.0, 0.0, 1.0], "float32")
        >>> keras.ops.convert_to_numpy(activation_fn("relu")(x)).tolist()
        [0.0, 0.0, 1.0]
        >>> [round(float(v), 3) for v in keras.ops.convert_to_numpy(activation_fn("gelu")(x))]  # x * Phi(x)
        [-0.159, 0.0, 0.841]
        >>> activation_fn("tanh")
        Traceback (most recent call last):
        ...
        ValueError: activation='tanh' is not one of ['gelu', 'gelu_new', 'relu', 'silu', 'swish']
    """
    table = {
        "relu": ops.relu,
        "gelu": lambda x: ops.gelu(x, approximate=False),  # BERT: the exact erf form
        "gelu_new": lambda x: ops.gelu(x, approximate=True),  # GPT / GPT-2: the tanh approximation
        "swish": ops.silu,  # Marian
        "silu": ops.silu,
    }
    if name not in table:
        raise ValueError(f"activation={name!r} is not one of {sorted(table)}")
    return table[name]


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class PositionwiseFeedForward(keras.layers.Layer):
    """Two linear maps with an activation between, applied to each position alike (equation 2).

    FFN(x) = max(0, x W1 + b1) W2 + b2: ``(batch, seq, d_model) -> (batch, seq, d_model)``, inner width ``d_ff``
    (2048 for d_model 512 in the paper).

    Args:
        d_model: input and output width.
        d_ff: inner width.
        activation: non-linearity name, see :func:`activation_fn`.
        activation_dropout: dropout rate after the activation (0 in the paper).
        kernel_initializer: initializer of W1 and W2.

    Example:
        >>> from vanilla_transformer.layers import PositionwiseFeedForward
        >>> ffn = PositionwiseFeedForward(d_model=8, d_ff=32)
        >>> tuple(ffn(np.zeros((2, 5, 8), "float32")).shape)
        (2, 5, 8)
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu", activation_dropout: float = 0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.d_model = d_model
        self.d_ff = d_ff
        self.activation = activation
        self.activation_dropout = activation_dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._activation = activation_fn(activation)
        self.fc1 = LoraDense(d_ff, name="fc1", kernel_initializer=self.kernel_initializer)
        self.fc2 = LoraDense(d_model, name="fc2", kernel_initializer=self.kernel_initializer)
        self.dropout = Dropout(activation_dropout)

    def build(self, input_shape=None):
        self.fc1.build((None, None, self.d_model))
        self.fc2.build((None, None, self.d_ff))
        self.built = True

    def call(self, hidden_states, training=False):
        inner = self.dropout(self._activation(self.fc1(hidden_states)), training=training)
        return self.fc2(inner)

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "d_ff": self.d_ff,
            "activation": self.activation,
            "activation_dropout": self.activation_dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
