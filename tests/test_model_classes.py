"""Every model class on the backend of this session (KERAS_BACKEND): it builds with every weight named, trains
with ``fit`` (teacher forcing, label smoothing, the learning-rate schedule, masked metrics), evaluates and
predicts, and a save never drops a weight.

The oracles are independent of Keras: ``evaluate``'s loss and accuracy are recomputed in NumPy from
``predict``'s logits (label-smoothed cross-entropy over the labels that are not -100), the learning rate after
training from the schedule's formula, and the teacher-forced decoder inputs from the labels. CI runs this
module on TensorFlow, JAX and PyTorch (marker ``backends``).
"""

import keras
import numpy as np
import pytest

from vanilla_transformer import (CheckpointError, TransformerConfig, TransformerEncoderModel, TransformerForCausalLM,
                                 TransformerForMaskedLM, TransformerForSeq2SeqLM,
                                 TransformerForSequenceClassification)
from vanilla_transformer.data_collators import DataCollatorForCausalLM, Seq2SeqCollator
from vanilla_transformer.optimization import transformer_optimizer

pytestmark = pytest.mark.backends

IGNORE = -100
ROWS, BATCH, EPOCHS = 512, 64, 10
SIZES = dict(d_model=32, num_heads=4, d_ff=64, dropout=0.0, max_position_embeddings=16)


# ------------------------------------------------------------------------------------------ numpy oracles
def smoothed_cross_entropy(logits, labels, eps):
    """Mean over counted tokens of -sum_v target_v log softmax(logits)_v, target = (1 - eps) one-hot + eps / V."""
    logits = np.asarray(logits, np.float64)
    counted = labels != IGNORE
    logits, labels = logits[counted], labels[counted]
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    target = np.full(log_probs.shape, eps / logits.shape[-1])
    target[np.arange(len(labels)), labels] += 1.0 - eps
    return float(-(target * log_probs).sum(-1).mean())


def masked_accuracy(logits, labels):
    counted = labels != IGNORE
    return float((np.argmax(logits, -1)[counted] == labels[counted]).mean())


def inverse_sqrt_rate(iterations, d_model, warmup, scale):
    """Equation 3 at optimizer step ``iterations`` + 1."""
    step = iterations + 1.0
    return scale * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def linear_rate(iterations, peak, warmup, total):
    step = iterations + 1.0
    return peak * min(1.0, step / warmup) * min(1.0, max(0.0, (total - step) / (total - warmup)))


# ------------------------------------------------------------------------------------------ the five tasks
def reversal(rng):
    """Encoder-decoder: reverse 3-6 tokens; teacher forcing and label smoothing 0.1 (the paper's defaults)."""
    sources = [list(rng.integers(3, 16, size=rng.integers(3, 7))) + [2] for _ in range(ROWS)]
    targets = [s[-2::-1] + [2] for s in sources]
    inputs, labels = Seq2SeqCollator(0, 1, 16)(sources, targets)
    model = TransformerForSeq2SeqLM(TransformerConfig(vocab_size=16, num_encoder_layers=1, num_decoder_layers=1,
                                                      **SIZES))
    model.compile(optimizer=transformer_optimizer(32, warmup_steps=40, scale=0.25))
    oracle = dict(loss=lambda p, y: smoothed_cross_entropy(p, y, 0.1), accuracy=masked_accuracy,
                  rate=lambda it: inverse_sqrt_rate(it, 32, 40, 0.25))
    return model, inputs, labels, oracle


def counting(rng):
    """Decoder-only: runs of consecutive ids; the loss compares logits at t with the label at t + 1."""
    starts, lengths = rng.integers(3, 12, ROWS), rng.integers(4, 9, ROWS)
    inputs, labels = DataCollatorForCausalLM(0)([list(range(s, s + n)) for s, n in zip(starts, lengths)])
    model = TransformerForCausalLM(TransformerConfig(architecture="decoder", vocab_size=24, num_encoder_layers=0,
                                                     num_decoder_layers=1, **SIZES))
    model.compile(learning_rate=3e-3, warmup_steps=20, decay_steps=200)
    oracle = dict(loss=lambda p, y: smoothed_cross_entropy(p[:, :-1], y[:, 1:], 0.0),
                  accuracy=lambda p, y: masked_accuracy(p[:, :-1], y[:, 1:]),
                  rate=lambda it: linear_rate(it, 3e-3, 20, 200))
    return model, inputs, labels, oracle


def tagging(rng):
    """Encoder without a head, compiled with the defaults: its hidden units (d_model 32) as logits over the ids
    (< 24), tagging each token with its own id; padding labelled -100."""
    lengths = rng.integers(3, 9, ROWS)
    ids = np.zeros((ROWS, 8), "int32")
    for row, n in zip(ids, lengths):
        row[:n] = rng.integers(3, 24, n)
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).astype("int32")}
    labels = np.where(ids != 0, ids, IGNORE).astype("int32")
    model = TransformerEncoderModel(TransformerConfig(architecture="encoder", vocab_size=24, num_encoder_layers=1,
                                                      num_decoder_layers=0, **SIZES))
    model.compile(optimizer=transformer_optimizer(32, warmup_steps=40, scale=0.25))
    oracle = dict(loss=lambda p, y: smoothed_cross_entropy(p, y, 0.1), accuracy=masked_accuracy,
                  rate=lambda it: inverse_sqrt_rate(it, 32, 40, 0.25))
    return model, inputs, labels, oracle


def fill_in(rng):
    """Masked LM: one masked position (id 4) inside a run of consecutive ids; only it is labelled."""
    starts = rng.integers(5, 14, ROWS)
    ids = (starts[:, None] + np.arange(8)).astype("int32")
    where = rng.integers(1, 7, ROWS)
    labels = np.full(ids.shape, IGNORE, "int32")
    labels[np.arange(ROWS), where] = ids[np.arange(ROWS), where]
    ids[np.arange(ROWS), where] = 4
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    model = TransformerForMaskedLM(TransformerConfig(architecture="encoder", vocab_size=24, num_encoder_layers=1,
                                                     num_decoder_layers=0, mask_token_id=4, **SIZES))
    model.compile(learning_rate=3e-3, warmup_steps=20, decay_steps=200)
    oracle = dict(loss=lambda p, y: smoothed_cross_entropy(p, y, 0.0), accuracy=masked_accuracy,
                  rate=lambda it: linear_rate(it, 3e-3, 20, 200))
    return model, inputs, labels, oracle


def classes(rng):
    """Sequence classification: the class is the first token's id modulo 3 (pooled first position)."""
    lengths = rng.integers(3, 9, ROWS)
    ids = np.zeros((ROWS, 8), "int32")
    for row, n in zip(ids, lengths):
        row[:n] = rng.integers(5, 24, n)
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).astype("int32")}
    labels = (ids[:, 0] % 3).astype("int32")
    model = TransformerForSequenceClassification(TransformerConfig(
        architecture="encoder", vocab_size=24, num_encoder_layers=1, num_decoder_layers=0, num_labels=3,
        add_pooler=True, **SIZES))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    oracle = dict(loss=lambda p, y: smoothed_cross_entropy(p, y, 0.0), accuracy=masked_accuracy,
                  rate=lambda it: 3e-3)
    return model, inputs, labels, oracle


TASKS = {TransformerForSeq2SeqLM: reversal, TransformerForCausalLM: counting, TransformerEncoderModel: tagging,
         TransformerForMaskedLM: fill_in, TransformerForSequenceClassification: classes}


@pytest.mark.parametrize("cls", list(TASKS), ids=[cls.__name__ for cls in TASKS])
def test_every_model_class_builds_trains_evaluates_and_predicts(cls):
    keras.utils.set_random_seed(0)
    model, inputs, labels, oracle = TASKS[cls](np.random.default_rng(0))
    assert type(model) is cls
    model.build_weights()
    named = model.named_variables()
    assert len(named) == len(model.weights) > 0 and {id(v) for v in named.values()} == {id(w) for w in model.weights}

    history = model.fit(inputs, labels, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0).history
    assert history["loss"][-1] < 0.6 * history["loss"][0], history["loss"]
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert iterations == EPOCHS * ROWS // BATCH
    rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    np.testing.assert_allclose(rate, oracle["rate"](iterations), rtol=1e-5)

    evaluated = model.evaluate(inputs, labels, batch_size=ROWS, verbose=0, return_dict=True)
    logits = model.predict(inputs, batch_size=ROWS, verbose=0)
    assert isinstance(logits, np.ndarray) and logits.shape[:labels.ndim] == labels.shape
    np.testing.assert_allclose(evaluated["loss"], oracle["loss"](logits, labels), rtol=1e-4)
    np.testing.assert_allclose(evaluated["accuracy"], oracle["accuracy"](logits, labels), rtol=1e-6)
    assert evaluated["accuracy"] > 0.6, evaluated  # chance is 1/3 for the classes, below 0.1 for the rest

    eager = keras.ops.convert_to_numpy(model(inputs))  # the model's own call, outside predict's compiled step
    np.testing.assert_allclose(eager, logits, atol=1e-4)


def test_teacher_forcing_feeds_the_labels_shifted_right():
    """The decoder input at t is the label at t - 1 (the start token first), padding where the labels end, and a
    logit at t depends only on decoder inputs up to t."""
    rng = np.random.default_rng(1)
    model, inputs, labels, _ = reversal(rng)
    decoder_ids = inputs["decoder_input_ids"]
    np.testing.assert_array_equal(decoder_ids[:, 0], 1)
    np.testing.assert_array_equal(decoder_ids[:, 1:], np.where(labels[:, :-1] == IGNORE, 0, labels[:, :-1]))
    changed = {**inputs, "decoder_input_ids": decoder_ids.copy()}
    changed["decoder_input_ids"][:, 4:] = 3
    before = keras.ops.convert_to_numpy(model(inputs))
    after = keras.ops.convert_to_numpy(model(changed))
    np.testing.assert_allclose(after[:, :4], before[:, :4], atol=1e-5)
    assert np.abs(after[:, 4:] - before[:, 4:]).max() > 1e-3


@pytest.mark.parametrize("cls", list(TASKS), ids=[cls.__name__ for cls in TASKS])
def test_a_save_that_would_drop_a_weight_raises_and_writes_nothing(cls, tmp_path):
    """If the weight names ever missed a weight (as the attribute walk once did on PyTorch), save_pretrained
    refuses instead of writing a checkpoint without it."""
    model = TASKS[cls](np.random.default_rng(0))[0].build_weights()
    complete = model.named_variables()
    model.named_variables = lambda: dict(list(complete.items())[1:])  # a walk that misses the first weight
    with pytest.raises(CheckpointError, match=f"1 of its {len(model.weights)} weights have no name"):
        model.save_pretrained(tmp_path / "model")
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").iterdir())
