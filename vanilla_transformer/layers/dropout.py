"""Section 5.4: dropout, with a counter-based random number generator.

The mask comes from :func:`~vanilla_transformer.padding_and_random.random_bits` (hashing each element's index
with the seed), which XLA fuses into the masking; Keras' own ``Dropout`` draws from the backend's Philox
generator, which cost about a tenth of a training step under XLA on a CPU (see that module).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..padding_and_random import random_bits


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class Dropout(keras.layers.Layer):
    """Inverted dropout: in training, each element is zeroed with probability ``rate`` and the rest are
    scaled by ``1 / (1 - rate)``; the identity at inference. Same contract as ``keras.layers.Dropout``
    (``seed`` for reproducibility; the draw advances a ``keras.random.SeedGenerator`` that is saved with the
    training state, so a resumed run continues the same random stream).

    Applied to the output of each sub-layer and to the embedding sums (section 5.4, P_drop = 0.1); any
    shape in, the same shape out.

    Args:
        rate: probability of zeroing an element, in [0, 1).
        seed: optional integer seed of the layer's ``keras.random.SeedGenerator``.

    Example:
        >>> from vanilla_transformer.layers import Dropout
        >>> layer = Dropout(0.5, seed=0)
        >>> out = np.asarray(layer(np.ones((1000,), "float32"), training=True))
        >>> sorted(set(out.tolist()))  # dropped, or kept and scaled by 1 / (1 - 0.5)
        [0.0, 2.0]
        >>> bool(np.all(np.asarray(layer(np.ones((4,), "float32"))) == 1.0))  # inference: identity
        True
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate={rate} must be in [0, 1)")
        self.rate = float(rate)
        self.seed = seed
        if self.rate > 0:
            self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        bits = ops.cast(ops.right_shift(random_bits(ops.shape(inputs), self.seed_generator.next()), 8), "int32")
        keep = bits >= int(round(self.rate * (1 << 24)))  # P(keep) = 1 - rate at 2^-24 resolution
        return ops.where(keep, inputs * ops.cast(1.0 / (1.0 - self.rate), inputs.dtype), ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
