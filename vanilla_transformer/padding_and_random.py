"""Small array operations shared by the collators, the layers, decoding and serving: padding ragged id rows,
rounding lengths up to buckets, and stateless counter-based random numbers.

- :func:`pad_batch`, :func:`padding_mask`, :func:`bucket_length`: lists of ids -> padded int32 numpy arrays of
  a few distinct shapes (the data collators, ``generate``'s input preparation, the exported translators);
- :func:`fill_rows`: a batch filled to a fixed number of rows with copies of its last row (``generate`` and
  the exported SavedModel run their decoding programs at a few batch sizes);
- :func:`random_bits`, :func:`random_uniform`: uniform bits / floats from hashing each element's index with a
  seed (dropout masks in :mod:`vanilla_transformer.layers.dropout`, sampling noise in decoding).

Keras' own ``Dropout`` draws its mask from the backend's Philox generator, which under XLA on a CPU is a
sizeable share of a training step (docs/benchmarks.md, "Where the training step's time goes").
The bits here come from hashing each element's index with the seed (murmur3's 32-bit finaliser): a few
integer multiply / xor-shift operations that XLA fuses into their use, with the statistics that dropout and
sampling need (independent, uniform).

This module imports nothing from the package, so every layer of it may import this one.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops


def pad_batch(rows: Sequence[Sequence[int]], pad_value: int, length: int | None = None) -> np.ndarray:
    """Right-pad lists of ids into an int32 array ``(len(rows), length or longest row)``; longer rows are cut.

    >>> pad_batch([[5, 6, 7], [8]], pad_value=0)
    array([[5, 6, 7],
           [8, 0, 0]], dtype=int32)
    """
    length = length or max((len(row) for row in rows), default=0)
    out = np.full((len(rows), length), pad_value, dtype="int32")
    for i, row in enumerate(rows):
        row = list(row)[:length]
        out[i, : len(row)] = row
    return out


def padding_mask(lengths: Sequence[int], length: int) -> np.ndarray:
    """int32 ``(len(lengths), length)``: 1 at the first ``lengths[i]`` positions of row i, 0 after (padding).

    >>> padding_mask([3, 1], 4)
    array([[1, 1, 1, 0],
           [1, 0, 0, 0]], dtype=int32)
    """
    return (np.arange(length)[None, :] < np.asarray(lengths, dtype="int64").reshape(-1, 1)).astype("int32")


def bucket_length(length: int, multiple: int = 8) -> int:
    """Round a length up to a multiple (at least one multiple), so XLA sees few distinct shapes.

    >>> bucket_length(13), bucket_length(0), bucket_length(5, multiple=4)
    (16, 8, 8)
    """
    return max(multiple, -(-length // multiple) * multiple)


def fill_rows(x, rows: int):
    """``x (batch, ...)`` with copies of its last row appended up to ``rows`` rows (``rows >= batch``): a batch
    filled to the fixed size a compiled decoding program runs at (the copies are then marked inactive).

    Numpy in, numpy out; a tensor (also a traced one, of unknown batch) in, a backend tensor out whose leading
    dimension is the static ``rows``.

    >>> fill_rows(np.array([[5, 6], [7, 8]]), 4).tolist()
    [[5, 6], [7, 8], [7, 8], [7, 8]]
    """
    if isinstance(x, np.ndarray):
        return x[np.minimum(np.arange(rows), x.shape[0] - 1)]
    return ops.take(x, ops.minimum(ops.arange(rows, dtype="int32"), ops.cast(ops.shape(x)[0], "int32") - 1), axis=0)


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
        >>> from vanilla_transformer.padding_and_random import random_bits
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
        >>> from vanilla_transformer.padding_and_random import random_uniform
        >>> u = keras.ops.convert_to_numpy(random_uniform((10000,), seed=(0, 0)))
        >>> u.shape, str(u.dtype)
        ((10000,), 'float32')
        >>> bool(u.min() > 0.0 and u.max() < 1.0), round(float(u.mean()), 1)
        (True, 0.5)
    """
    return (ops.cast(ops.right_shift(random_bits(shape, seed), 8), "float32") + 0.5) * (1.0 / (1 << 24))


def _is_static(shape):
    return all(isinstance(dim, (int, np.integer)) for dim in shape)
