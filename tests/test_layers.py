"""The paper's sections against their formulas: positions (3.5), attention (3.2), layers' configs."""

import math

import keras
import numpy as np
import pytest

from vanilla_transformer.layers import (
    DecoderLayer,
    Dropout,
    EncoderLayer,
    LearnedPositionEmbedding,
    MultiHeadAttention,
    PositionwiseFeedForward,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    TransformerEmbedding,
    random_bits,
    random_uniform,
    scaled_dot_product_attention,
    sinusoidal_table,
)


@pytest.mark.backends
def test_sinusoid_equals_the_formula():
    length, d_model = 50, 16
    table = sinusoidal_table(length, d_model)
    for pos in range(length):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.backends
def test_sinusoid_halves_layout_is_a_permutation_of_the_same_values():
    interleaved = sinusoidal_table(20, 8)
    halves = sinusoidal_table(20, 8, layout="halves")
    np.testing.assert_allclose(halves[:, :4], interleaved[:, 0::2])
    np.testing.assert_allclose(halves[:, 4:], interleaved[:, 1::2])
    with pytest.raises(ValueError, match="layout"):
        sinusoidal_table(4, 8, layout="zigzag")


@pytest.mark.backends
def test_sinusoidal_layer_looks_up_positions():
    layer = SinusoidalPositionalEncoding(max_length=30, d_model=8)
    out = np.asarray(layer(np.array([[0, 5, 29]])))
    np.testing.assert_allclose(out[0], sinusoidal_table(30, 8)[[0, 5, 29]], atol=1e-6)
    assert layer.weights == []  # a constant, nothing in the checkpoint


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.backends
def test_scaled_dot_product_attention_matches_numpy(rng):
    q, k, v = (rng.normal(size=(2, 3, 4, 8)).astype("float32") for _ in range(3))
    mask = rng.random((2, 1, 4, 4)) > 0.3
    mask[..., 0] = True
    expected = _softmax(np.where(mask, q @ k.transpose(0, 1, 3, 2) / math.sqrt(8), -1e9)) @ v
    got = np.asarray(scaled_dot_product_attention(q, k, v, mask))
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.backends
def test_fully_masked_rows_give_no_nan(rng):
    q, k, v = (rng.normal(size=(1, 2, 3, 4)).astype("float32") for _ in range(3))
    out = np.asarray(scaled_dot_product_attention(q, k, v, np.zeros((1, 1, 3, 3), bool)))
    assert np.isfinite(out).all()


@pytest.mark.backends
def test_multi_head_attention_matches_a_per_head_computation(rng):
    mha = MultiHeadAttention(d_model=8, num_heads=2)
    x = rng.normal(size=(1, 5, 8)).astype("float32")
    out, _ = mha(x)
    wq, bq = (np.asarray(w) for w in mha.q_proj.weights)
    wk, bk = (np.asarray(w) for w in mha.k_proj.weights)
    wv, bv = (np.asarray(w) for w in mha.v_proj.weights)
    wo, bo = (np.asarray(w) for w in mha.o_proj.weights)
    q, k, v = x[0] @ wq + bq, x[0] @ wk + bk, x[0] @ wv + bv
    heads = [_softmax(q[:, h * 4:(h + 1) * 4] @ k[:, h * 4:(h + 1) * 4].T / 2.0) @ v[:, h * 4:(h + 1) * 4]
             for h in range(2)]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out)[0], np.concatenate(heads, -1) @ wo + bo, atol=1e-5)


@pytest.mark.backends
def test_attention_groups_queries_over_shared_keys(rng):
    """Beam search: 3 beams per source over the source's keys computed once give what each beam gets over
    its own copy of the keys (the grouped path joins the beams into the query axis)."""
    mha = MultiHeadAttention(d_model=8, num_heads=2)
    memory = rng.normal(size=(2, 5, 8)).astype("float32")
    beams = rng.normal(size=(6, 1, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)[:, None, None, :]
    mha(beams, key_value=np.repeat(memory, 3, axis=0))
    shared = mha.project_key_value(memory)
    copied = mha.project_key_value(np.repeat(memory, 3, axis=0))
    grouped, _ = mha(beams, attention_mask=mask, past_key_value=shared)
    expected, _ = mha(beams, attention_mask=np.repeat(mask, 3, axis=0), past_key_value=copied)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grouped), keras.ops.convert_to_numpy(expected), atol=1e-6)
    with pytest.raises(ValueError, match="cannot share"):
        mha(beams[:5], past_key_value=shared)


@pytest.mark.backends
def test_feed_forward_is_relu_mlp(rng):
    ffn = PositionwiseFeedForward(d_model=4, d_ff=8)
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    out = keras.ops.convert_to_numpy(ffn(x))
    w1, b1, w2, b2 = (np.asarray(w) for w in ffn.weights)
    np.testing.assert_allclose(out, np.maximum(0, x @ w1 + b1) @ w2 + b2, atol=1e-5)


@pytest.mark.backends
def test_bad_activation_and_head_count_are_rejected():
    with pytest.raises(ValueError, match="activation"):
        PositionwiseFeedForward(d_model=4, d_ff=8, activation="tanh-ish")
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(d_model=10, num_heads=3)


@pytest.mark.backends
def test_dropout_drops_at_its_rate_and_rescales_the_rest():
    rate, n = 0.1, 200_000
    layer = Dropout(rate, seed=3)
    first = np.asarray(layer(np.ones((n,), "float32"), training=True))
    second = np.asarray(layer(np.ones((n,), "float32"), training=True))
    for out in (first, second):
        dropped = np.mean(out == 0.0)
        assert abs(dropped - rate) < 4 * math.sqrt(rate * (1 - rate) / n)  # within 4 standard errors
        np.testing.assert_allclose(out[out != 0.0], 1.0 / (1.0 - rate), rtol=1e-6)
    assert np.mean((first == 0) & (second == 0)) == pytest.approx(rate * rate, abs=0.003)  # independent draws
    np.testing.assert_array_equal(np.asarray(layer(np.ones((5,), "float32"))), np.ones(5))  # inference: identity
    again = Dropout(rate, seed=3)
    np.testing.assert_array_equal(np.asarray(again(np.ones((n,), "float32"), training=True)), first)
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.0)


def test_counter_based_random_numbers_are_uniform_and_seeded():
    u = np.asarray(random_uniform((400, 500), (1, 2)))
    assert u.shape == (400, 500) and u.min() > 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.002 and abs(u.var() - 1 / 12) < 0.002
    counts, _ = np.histogram(u, bins=10, range=(0, 1))
    assert counts.min() > 0.97 * u.size / 10  # flat
    np.testing.assert_array_equal(u, np.asarray(random_uniform((400, 500), (1, 2))))
    other = np.asarray(random_uniform((400, 500), (1, 3)))
    assert abs(np.corrcoef(u.ravel(), other.ravel())[0, 1]) < 0.01
    bits = np.asarray(random_bits((1000,), (5, 6))).astype(np.uint64)
    assert np.asarray(random_bits((1000,), (5, 6))).dtype == np.uint32
    assert abs(np.mean([(bits >> b) & 1 for b in range(32)]) - 0.5) < 0.01  # every bit balanced


@pytest.mark.backends
@pytest.mark.parametrize("layer", [
    lambda: TokenEmbedding(10, 4),
    lambda: Dropout(0.3, seed=7),
    lambda: SinusoidalPositionalEncoding(16, 4, layout="halves"),
    lambda: LearnedPositionEmbedding(16, 4),
    lambda: MultiHeadAttention(8, 2, attention_dropout=0.1),
    lambda: PositionwiseFeedForward(8, 16, activation="gelu"),
    lambda: EncoderLayer(d_model=8, num_heads=2, d_ff=16, norm_first=True),
    lambda: DecoderLayer(d_model=8, num_heads=2, d_ff=16, cross_attention=False),
    lambda: TransformerEmbedding(TokenEmbedding(10, 4), 4, 16, position_embedding="learned", type_vocab_size=2),
])
def test_every_layer_round_trips_through_get_config(layer):
    original = layer()
    config = original.get_config()
    clone = type(original).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(original))
    assert type(restored) is type(original)
