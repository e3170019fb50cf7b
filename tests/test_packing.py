"""Packed rows (several sentence pairs per row, attention kept within each pair) compute what the pairs compute
padded one per row: same logits at every real position, same loss, same gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
from vanilla_transformer.batching import packed_seq2seq_batches
from vanilla_transformer.data_collators import PackedSeq2SeqCollator, Seq2SeqCollator, pack_pairs
from vanilla_transformer.losses import MaskedSparseCrossEntropy

VOCAB = 40


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(11)
    config = TransformerConfig(vocab_size=VOCAB, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=2,
                               num_decoder_layers=2, dropout=0.0, max_position_embeddings=64)
    return TransformerForSeq2SeqLM(config).build_weights()


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(5)
    sources = [list(rng.integers(3, VOCAB, size=rng.integers(2, 12))) + [2] for _ in range(14)]
    targets = [list(rng.integers(3, VOCAB, size=rng.integers(2, 12))) + [2] for _ in range(14)]
    return sources, targets


def loss_and_gradients(model, inputs, labels):
    loss_fn = MaskedSparseCrossEntropy(label_smoothing=0.1)
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, model(inputs))
    gradients = tape.gradient(loss, model.trainable_variables)
    return float(loss), [np.asarray(tf.convert_to_tensor(g)) for g in gradients]


def test_packed_rows_compute_what_unpacked_rows_compute(model, pairs):
    sources, targets = pairs
    unpacked_inputs, unpacked_labels = Seq2SeqCollator(0, 1, VOCAB)(sources, targets)
    collator = PackedSeq2SeqCollator(0, 1, source_length=32, target_length=32, vocab_size=VOCAB)
    rows = pack_pairs([len(s) for s in sources], [len(t) for t in targets], 32, 32)
    packed_inputs, packed_labels = collator(sources, targets, rows=rows)
    assert len(rows) < len(sources) / 2, rows  # several pairs per row

    unpacked_logits, packed_logits = np.asarray(model(unpacked_inputs)), np.asarray(model(packed_inputs))
    for r, row in enumerate(rows):  # every pair's logits, found at its place in its packed row
        start = 0
        for i in row:
            length = len(targets[i])
            np.testing.assert_allclose(packed_logits[r, start:start + length], unpacked_logits[i, :length],
                                       atol=2e-5, rtol=1e-5)
            start += length

    unpacked_loss, unpacked_gradients = loss_and_gradients(model, unpacked_inputs, unpacked_labels)
    packed_loss, packed_gradients = loss_and_gradients(model, packed_inputs, packed_labels)
    assert packed_loss == pytest.approx(unpacked_loss, rel=1e-6)
    for variable, a, b in zip(model.trainable_variables, unpacked_gradients, packed_gradients):
        assert np.abs(a).max() > 0, variable.path
        np.testing.assert_allclose(b, a, atol=2e-6, rtol=1e-4, err_msg=variable.path)


def test_packed_batches_train_with_fit(model, pairs):
    sources, targets = pairs
    collator = PackedSeq2SeqCollator(0, 1, source_length=24, target_length=24)
    batches = packed_seq2seq_batches(sources * 4, targets * 4, collator, rows_per_batch=4, seed=1)
    assert {tuple(inputs["input_ids"].shape) for inputs, _ in batches} == {(4, 24)}
    trained = TransformerForSeq2SeqLM.from_config(model.get_config())
    trained.compile()
    inputs = {key: np.concatenate([b[0][key] for b in batches]) for key in batches[0][0]}
    labels = np.concatenate([b[1] for b in batches])
    history = trained.fit(inputs, labels, batch_size=4, epochs=2, verbose=0, shuffle=False).history
    assert np.isfinite(history["loss"]).all() and 0 < history["accuracy"][-1] <= 1


def test_packed_inputs_must_come_in_pairs(model):
    with pytest.raises(ValueError, match="both segment_ids and decoder_segment_ids"):
        model({"input_ids": np.array([[5, 6, 2]]), "segment_ids": np.array([[1, 1, 1]]),
               "decoder_input_ids": np.array([[1, 7]])})


def test_pairs_longer_than_a_row_are_refused():
    with pytest.raises(ValueError, match="pair 1 .9 source, 3 target tokens. exceeds a row of 8 / 8"):
        pack_pairs([3, 9], [3, 3], 8, 8)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 16), st.integers(1, 16)), min_size=1, max_size=60))
def test_every_pair_is_packed_once_within_the_rows(lengths):
    sources, targets = zip(*lengths)
    rows = pack_pairs(sources, targets, 16, 16)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    for row in rows:
        assert sum(sources[i] for i in row) <= 16 and sum(targets[i] for i in row) <= 16
    # a row is opened only for a pair no earlier row had room for (rooms only shrink, so not even at the end)
    left = [(16 - sum(sources[i] for i in row), 16 - sum(targets[i] for i in row)) for row in rows]
    for later, row in enumerate(rows):
        first = row[0]
        assert not any(s >= sources[first] and t >= targets[first] for s, t in left[:later]), (rows, later)
