"""Section 5: loss with label smoothing, the schedule, teacher forcing, and fit on a tiny task."""

import keras
import numpy as np
import pytest

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
from vanilla_transformer.batching import batches_to_tf_dataset, seq2seq_batches
from vanilla_transformer.data_collators import Seq2SeqCollator, shift_tokens_right
from vanilla_transformer.losses import MaskedAccuracy, MaskedSparseCrossEntropy
from vanilla_transformer.optimization import TransformerSchedule


@pytest.mark.backends
def test_loss_matches_a_hand_computation_with_smoothing_and_ignores_minus_100(rng):
    logits = rng.normal(size=(2, 3, 5)).astype("float32")
    labels = np.array([[1, 4, -100], [0, -100, -100]])
    eps = 0.1
    total, count = 0.0, 0
    for b in range(2):
        for t in range(3):
            if labels[b, t] == -100:
                continue
            log_p = logits[b, t] - np.log(np.exp(logits[b, t]).sum())
            target = np.full(5, eps / 5)
            target[labels[b, t]] += 1 - eps
            total += -(target * log_p).sum()
            count += 1
    loss = float(MaskedSparseCrossEntropy(label_smoothing=eps)(labels, logits))
    assert loss == pytest.approx(total / count, rel=1e-5)
    # changing logits at ignored positions changes nothing
    logits2 = logits.copy()
    logits2[0, 2] += 100
    logits2[1, 1:] -= 50
    assert float(MaskedSparseCrossEntropy(label_smoothing=eps)(labels, logits2)) == pytest.approx(loss, rel=1e-6)


@pytest.mark.backends
def test_loss_agrees_with_keras_without_smoothing(rng):
    logits = rng.normal(size=(4, 6, 7)).astype("float32")
    labels = rng.integers(0, 7, size=(4, 6))
    reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert float(MaskedSparseCrossEntropy(label_smoothing=0.0)(labels, logits)) == pytest.approx(float(reference),
                                                                                                 rel=1e-5)


@pytest.mark.backends
def test_masked_accuracy_counts_only_labelled_tokens():
    metric = MaskedAccuracy()
    logits = np.eye(4, dtype="float32")[None, [0, 1, 2, 3]]  # predicts 0, 1, 2, 3
    metric.update_state(np.array([[0, 1, 3, -100]]), logits)
    assert float(metric.result()) == pytest.approx(2 / 3)


@pytest.mark.backends
def test_schedule_is_equation_3():
    schedule = TransformerSchedule(d_model=512, warmup_steps=4000)
    for step in (1, 100, 4000, 10000, 100000):
        expected = 512 ** -0.5 * min(step ** -0.5, step * 4000 ** -1.5)
        assert float(schedule(step - 1)) == pytest.approx(expected, rel=1e-5)
    assert TransformerSchedule.from_config(schedule.get_config()).warmup_steps == 4000


def test_shift_tokens_right_is_teacher_forcing():
    labels = np.array([[5, 6, 2, -100], [7, 2, -100, -100]])
    np.testing.assert_array_equal(shift_tokens_right(labels, 1, 0), [[1, 5, 6, 2], [1, 7, 2, 0]])


def test_collator_pads_masks_and_validates():
    collator = Seq2SeqCollator(pad_token_id=0, decoder_start_token_id=1, vocab_size=20, pad_to_multiple_of=4)
    inputs, labels = collator([[5, 6, 2], [7, 2]], [[8, 9, 10, 2], [11, 2]])
    assert inputs["input_ids"].shape == (2, 4) and labels.shape == (2, 4)
    np.testing.assert_array_equal(inputs["attention_mask"], [[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(labels, [[8, 9, 10, 2], [11, 2, -100, -100]])
    np.testing.assert_array_equal(inputs["decoder_input_ids"], [[1, 8, 9, 10], [1, 11, 2, 0]])
    with pytest.raises(ValueError, match="outside"):
        collator([[5, 25]], [[2]])


def test_length_batching_respects_the_token_budget_with_few_shapes():
    collator = Seq2SeqCollator(0, 1, pad_to_multiple_of=8)
    rng = np.random.default_rng(0)
    sources = [[3] * int(n) for n in rng.integers(1, 30, size=300)]
    targets = [[4] * int(n) for n in rng.integers(1, 30, size=300)]
    batches = seq2seq_batches(sources, targets, collator, max_tokens=256)
    real_rows = sum(int((labels != -100).any(axis=1).sum()) for _, labels in batches)
    assert real_rows == 300
    shapes = {inputs["input_ids"].shape for inputs, _ in batches}
    assert shapes == {(32, 8), (16, 16), (10, 24), (8, 32)}  # one shape per length bucket
    for inputs, labels in batches:
        assert inputs["input_ids"].size <= 256
        assert inputs["decoder_input_ids"].shape == labels.shape == inputs["input_ids"].shape
        empty = (labels == -100).all(axis=1)
        assert (inputs["attention_mask"][empty] == 0).all()


def test_compile_defaults_are_the_papers(tiny_config):
    model = TransformerForSeq2SeqLM(tiny_config)
    model.compile()
    assert isinstance(model.loss, MaskedSparseCrossEntropy) and model.loss.label_smoothing == 0.1
    optimizer = model.optimizer
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.98, 1e-9)
    assert isinstance(optimizer._learning_rate, TransformerSchedule)
    assert model.jit_compile


def test_mixed_bfloat16_on_cpu_trains_without_xla_and_matches_float32(tiny_config):
    """compile("auto") turns XLA off for bfloat16 on a CPU with bfloat16 units (AVX512-BF16, AMX: XLA's CPU dots
    would compute it in float32) and keeps it on where bfloat16 is emulated (avx2 + fma: XLA's float32 dots are
    the faster path); the bfloat16 model gives the float32 model's logits within bfloat16 rounding, and a train
    step runs."""
    from vanilla_transformer import precision
    from vanilla_transformer.modeling import default_jit_compile

    xla = not precision.cpu_bfloat16_units()  # this machine's CPU decides
    reference = TransformerForSeq2SeqLM(tiny_config).build_weights()
    rng = np.random.default_rng(0)
    inputs = {"input_ids": rng.integers(3, tiny_config.vocab_size, (2, 7)).astype("int32"),
              "decoder_input_ids": rng.integers(3, tiny_config.vocab_size, (2, 5)).astype("int32")}
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = TransformerForSeq2SeqLM(tiny_config).build_weights()
        model.set_weights(reference.get_weights())
        assert model.dtype_policy.compute_dtype == "bfloat16" and model.weights[0].dtype == "float32"
        assert default_jit_compile(model) is xla
        model.compile()
        assert bool(model.jit_compile) is xla
        logits = np.asarray(model(inputs))
        assert logits.dtype == np.float32
        expected = np.asarray(reference(inputs))
        assert np.abs(logits - expected).max() < 0.05 * np.abs(expected).max()
        labels = np.roll(inputs["decoder_input_ids"], -1, axis=1)
        before = [w.copy() for w in model.get_weights()]
        loss = float(model.train_on_batch(inputs, labels, return_dict=True)["loss"])
        assert np.isfinite(loss)
        assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert default_jit_compile(reference)


def test_fit_learns_to_reverse_and_greedy_then_solves_it():
    """Reversal needs attention to the right source position: a real test of training + decoding."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    config = TransformerConfig(vocab_size=12, d_model=64, num_heads=4, d_ff=128, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.0, max_position_embeddings=16)
    sources = [list(rng.integers(3, 12, size=4)) + [2] for _ in range(2000)]
    targets = [list(reversed(s[:-1])) + [2] for s in sources]
    collator = Seq2SeqCollator(0, 1, config.vocab_size)
    data = batches_to_tf_dataset(seq2seq_batches(sources, targets, collator, batch_size=50))
    model = TransformerForSeq2SeqLM(config)
    model.compile(optimizer=keras.optimizers.Adam(TransformerSchedule(64, warmup_steps=200, scale=0.5), 0.9, 0.98,
                                                  1e-9))
    history = model.fit(data, epochs=12, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    test = np.array([list(rng.integers(3, 12, size=4)) + [2] for _ in range(50)], dtype="int32")
    out = model.generate(test, max_new_tokens=6)
    expected = np.concatenate([np.ones((50, 1), "int32"), test[:, 3::-1], np.full((50, 1), 2, "int32")], axis=1)
    accuracy = np.mean([(row[: len(e)] == e).all() for row, e in zip(out, expected)])
    assert accuracy >= 0.9, accuracy


@pytest.mark.backends
def test_epochs_cycle_through_the_views_of_the_batches():
    """Epoch e serves view e % N in its own order (resumed epochs too, ``skip``), every view cut to the
    shortest's length, on the backend's dataset (tf.data on TensorFlow, a PyDataset elsewhere)."""
    from vanilla_transformer.batching import EpochShuffledBatches

    def batch(value):
        return {"input_ids": np.full((2, 3), value, "int32")}, np.full((2, 3), value, "int32")

    views = [[batch(100 * v + i) for i in range(6 + v)] for v in range(3)]  # 6, 7 and 8 batches
    data = EpochShuffledBatches.from_views(views, seed=1)
    assert len(data) == 6
    for epoch in range(4):
        data.epoch = epoch
        served = [int(np.asarray(x["input_ids"])[0, 0]) for x, _ in data.dataset(skip=2)]
        assert served == [100 * (epoch % 3) + i for i in data.order(epoch)[2:]]
    with pytest.raises(ValueError, match="a view without batches"):
        EpochShuffledBatches.from_views([views[0], []])
