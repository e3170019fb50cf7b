"""The counter-based random numbers behind dropout and sampling, on the backend of this session: the same 32-bit
values on every backend (PyTorch has no uint32; Keras gives it int64, where the hash once grew past 32 bits and
dropout dropped half of every tensor whatever its rate). CI runs this module on TensorFlow, JAX and PyTorch."""

import keras
import numpy as np
import pytest

from vanilla_transformer.layers import Dropout, random_bits, random_uniform

pytestmark = pytest.mark.backends


def murmur3_bits(count, seed):
    """The documented hash in NumPy's wrapping uint32: murmur3's finaliser of index * phi + seed_0 * c1 + seed_1 * c2."""
    with np.errstate(over="ignore"):
        s0, s1 = (np.uint32(int(s) & 0xFFFFFFFF) for s in seed)
        x = np.arange(count, dtype=np.uint32) * np.uint32(0x9E3779B1) + s0 * np.uint32(0x85EBCA77) \
            + s1 * np.uint32(0xC2B2AE3D)
        for shift, multiplier in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
            x = (x ^ (x >> np.uint32(shift))) * np.uint32(multiplier)
        return x ^ (x >> np.uint32(16))


@pytest.mark.parametrize("seed", [(0, 0), (1, 2), (123456789, 2_000_000_000), (-7, 3)])
def test_random_bits_are_the_32_bit_hash_on_this_backend(seed):
    bits = keras.ops.convert_to_numpy(random_bits((300, 7), seed)).astype(np.int64)
    np.testing.assert_array_equal(bits.reshape(-1), murmur3_bits(2100, seed).astype(np.int64))
    uniform = keras.ops.convert_to_numpy(random_uniform((300, 7), seed)).reshape(-1)
    np.testing.assert_allclose(uniform, ((murmur3_bits(2100, seed) >> 8) + 0.5) / 2 ** 24, rtol=1e-7)


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_dropout_drops_at_its_rate_on_this_backend(rate):
    layer = Dropout(rate, seed=0)
    out = keras.ops.convert_to_numpy(layer(np.ones((200_000,), "float32"), training=True))
    dropped = float((out == 0).mean())
    assert abs(dropped - rate) < 0.005, dropped
    np.testing.assert_allclose(out[out != 0], 1.0 / (1.0 - rate), rtol=1e-6)
