"""Section 5.4: dropout, with a counter-based random number generator.

Keras' own ``Dropout`` draws its mask from the backend's Philox generator. Under XLA on a CPU that generator
cost about a tenth of a d_model-256 training step (17 masks of 64 x 24 x 256; profile in docs/benchmarks.md).
The mask here comes from hashing each element's index with the seed (murmur3's 32-bit finaliser): a few
integer multiply / xor-shift operations that XLA fuses into the masking, with the same statistics that
dropout needs (each element dropped independently with probability ``rate``).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def random_bits(shape, seed):
    """Uniform 32-bit integers, stateless: the same ``shape`` and ``seed`` give the same bits on every backend.

    Args:
        shape: the output shape (static or dynamic dimensions).
        seed: two integers (a tuple or a tensor of shape ``(2,)``), e.g. a ``keras.random.SeedGenerator`` draw.

    Returns:
        ``uint32`` tensor of ``shape``: murmur3's finaliser applied to ``index * phi + seed_0 * c1 + seed_1 * c2``
        (wrapping arithmetic). Streams of different seeds are offsets of one another in a 2^32 counter space,
        which is plenty for dropout masks and sampling noise (not for cryptography).

    Example:
        >>> from vanilla_transformer.layers import random_bits
        >>> bits = keras.ops.convert_to_numpy(random_bits((2, 3), seed=(0, 1)))
        >>> bits.shape, str(bits.dtype)
        ((2, 3), 'uint32')
        >>> bool(np.all(bits == keras.ops.convert_to_numpy(random_bits((2, 3), seed=(0, 1)))))  # stateless
        True
        >>> bool(np.any(bits != keras.ops.convert_to_numpy(random_bits((2, 3), seed=(0, 2)))))  # new seed
        True
    """
    count = ops.prod(ops.convert_to_tensor(shape, "int32")) if not _is_static(shape) else int(np.prod(shape))
    seed = _low_32_bits(ops.cast(ops.convert_to_tensor(seed), "uint32"))
    x = _low_32_bits(ops.cast(ops.arange(count), "uint32") * np.uint32(0x9E3779B1))
    x = _low_32_bits(x + _low_32_bits(seed[0] * np.uint32(0x85EBCA77)) + _low_32_bits(seed[1] * np.uint32(0xC2B2AE3D)))
    for shift, multiplier in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        x = _low_32_bits(ops.bitwise_xor(x, ops.right_shift(x, shift)) * np.uint32(multiplier))
    x = ops.bitwise_xor(x, ops.right_shift(x, 16))
    return ops.reshape(x, shape)


def _low_32_bits(x):
    """``x`` wrapped to 32 bits. A no-op for a real ``uint32`` (TensorFlow, JAX); PyTorch has no uint32 and Keras
    gives it int64, where sums and products would grow past 32 bits (dropout then dropped half of everything)."""
    if keras.backend.standardize_dtype(x.dtype) == "uint32":
        return x
    return ops.bitwise_and(x, 0xFFFFFFFF)


def random_uniform(shape, seed):
    """Uniform floats in the open interval (0, 1) (24-bit resolution) from :func:`random_bits`.

    Args:
        shape: the output shape.
        seed: two integers, as for :func:`random_bits`.

    Returns:
        ``float32`` tensor of ``shape``: the top 24 bits of each draw, ``(bits + 0.5) / 2^24``.

    Example:
        >>> from vanilla_transformer.layers import random_uniform
        >>> u = keras.ops.convert_to_numpy(random_uniform((10000,), seed=(0, 0)))
        >>> u.shape, str(u.dtype)
        ((10000,), 'float32')
        >>> bool(u.min() > 0.0 and u.max() < 1.0), round(float(u.mean()), 1)
        (True, 0.5)
    """
    return (ops.cast(ops.right_shift(random_bits(shape, seed), 8), "float32") + 0.5) * (1.0 / (1 << 24))


def _is_static(shape):
    return all(isinstance(dim, (int, np.integer)) for dim in shape)


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
