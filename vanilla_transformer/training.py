"""Section 5: teacher forcing, label-smoothed loss, the learning-rate schedule, and input pipelines.

Nothing here depends on the model classes; ``compile()`` of the models uses these as its defaults.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
import numpy as np
from keras import ops

IGNORE_INDEX = -100  # transformers' convention for label positions excluded from loss and metrics


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class MaskedSparseCrossEntropy(keras.losses.Loss):
    """Cross-entropy with label smoothing over token positions whose label is not ``ignore_index``.

    The smoothed target is (1 - eps) on the true class plus eps / V on every class (section 5.4, eps=0.1),
    the same definition as ``torch.nn.CrossEntropyLoss(label_smoothing=eps)``. The result is the mean over
    counted tokens: ``y_true (batch, seq)``, ``y_pred`` logits ``(batch, seq, vocab)`` -> scalar.
    """

    def __init__(self, label_smoothing: float = 0.1, ignore_index: int = IGNORE_INDEX,
                 name="masked_sparse_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        logits = ops.cast(y_pred, "float32")
        mask = ops.cast(ops.not_equal(y_true, self.ignore_index), "float32")
        safe_labels = ops.where(ops.equal(y_true, self.ignore_index), 0, y_true)
        log_probs = ops.log_softmax(logits, axis=-1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, safe_labels[..., None], axis=-1), -1)
        smooth = -ops.mean(log_probs, axis=-1)
        eps = self.label_smoothing
        per_token = (1.0 - eps) * nll + eps * smooth
        return ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "ignore_index": self.ignore_index}


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class MaskedAccuracy(keras.metrics.Metric):
    """Share of tokens whose argmax equals the label, counting only labels != ``ignore_index``."""

    def __init__(self, ignore_index: int = IGNORE_INDEX, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        mask = ops.cast(ops.not_equal(y_true, self.ignore_index), "float32")
        hits = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32")
        self.correct.assign_add(ops.sum(hits * mask))
        self.total.assign_add(ops.sum(mask))

    def result(self):
        return self.correct / ops.maximum(self.total, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index}


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)  (equation 3).

    ``step`` counts from 1 (Keras' optimizer iterations count from 0). ``scale`` = 1 is the paper.
    """

    def __init__(self, d_model: int, warmup_steps: int = 4000, scale: float = 1.0):
        self.d_model = d_model
        self.warmup_steps = warmup_steps
        self.scale = scale

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        return (self.scale * self.d_model ** -0.5
                * ops.minimum(ops.rsqrt(step), step * self.warmup_steps ** -1.5))

    def get_config(self):
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps, "scale": self.scale}


def shift_tokens_right(labels: np.ndarray, decoder_start_token_id: int, pad_token_id: int) -> np.ndarray:
    """Teacher forcing: ``decoder_input_ids`` = ``[start] + labels[:-1]``, with -100 replaced by pad.

    ``labels (batch, tgt) -> (batch, tgt)``.
    """
    labels = np.asarray(labels)
    shifted = np.empty_like(labels)
    shifted[:, 0] = decoder_start_token_id
    shifted[:, 1:] = labels[:, :-1]
    shifted[shifted == IGNORE_INDEX] = pad_token_id
    return shifted


def pad_batch(rows: Sequence[Sequence[int]], pad_value: int, length: int | None = None) -> np.ndarray:
    """Right-pad lists of ids into an int32 array ``(len(rows), length or longest row)``."""
    length = length or max((len(row) for row in rows), default=0)
    out = np.full((len(rows), length), pad_value, dtype="int32")
    for i, row in enumerate(rows):
        row = list(row)[:length]
        out[i, : len(row)] = row
    return out


def bucket_length(length: int, multiple: int = 8) -> int:
    """Round a length up to a multiple, so XLA sees few distinct shapes."""
    return max(multiple, -(-length // multiple) * multiple)


class Seq2SeqCollator:
    """Turns (source ids, target ids) pairs into one teacher-forced batch ``(inputs, labels)``.

    ``inputs`` holds ``input_ids``, ``attention_mask``, ``decoder_input_ids`` and
    ``decoder_attention_mask``; ``labels`` are the target ids padded with -100. Lengths are rounded up
    to ``pad_to_multiple_of``. Ids are checked against ``vocab_size`` here, where they are concrete.
    """

    def __init__(self, pad_token_id: int, decoder_start_token_id: int, vocab_size: int | None = None,
                 pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.decoder_start_token_id = decoder_start_token_id
        self.vocab_size = vocab_size
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]):
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        if self.vocab_size is not None:
            for name, rows in (("source", sources), ("target", targets)):
                for row in rows:
                    if len(row) and (min(row) < 0 or max(row) >= self.vocab_size):
                        raise ValueError(f"{name} ids outside [0, vocab_size={self.vocab_size}): {list(row)}")
        src_len = bucket_length(max(len(s) for s in sources), self.pad_to_multiple_of)
        tgt_len = bucket_length(max(len(t) for t in targets), self.pad_to_multiple_of)
        input_ids = pad_batch(sources, self.pad_token_id, src_len)
        labels = pad_batch(targets, IGNORE_INDEX, tgt_len)
        decoder_input_ids = shift_tokens_right(labels, self.decoder_start_token_id, self.pad_token_id)
        lengths = np.array([len(t) for t in targets])
        decoder_attention_mask = (np.arange(tgt_len)[None, :] < lengths[:, None]).astype("int32")
        inputs = {
            "input_ids": input_ids,
            "attention_mask": (np.arange(src_len)[None, :] < np.array([len(s) for s in sources])[:, None])
            .astype("int32"),
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": decoder_attention_mask,
        }
        return inputs, labels


def seq2seq_batches(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], collator: Seq2SeqCollator,
                    max_tokens: int | None = None, batch_size: int | None = None, shuffle: bool = True,
                    seed: int = 0) -> list[tuple[dict, np.ndarray]]:
    """Group pairs of similar length into batches (by a token budget or a fixed batch size).

    Sorting by length keeps padding small and, with lengths bucketed by the collator, few shapes.
    """
    if not sources:
        raise ValueError("no examples to batch")
    order = sorted(range(len(sources)), key=lambda i: (len(sources[i]) + len(targets[i]), i))
    batches, current, longest = [], [], 0
    for i in order:
        longest_next = max(longest, len(sources[i]), len(targets[i]))
        too_many = (max_tokens and current and (len(current) + 1) * longest_next > max_tokens) or (
            batch_size and len(current) >= batch_size)
        if too_many:
            batches.append(current)
            current, longest_next = [], max(len(sources[i]), len(targets[i]))
        current.append(i)
        longest = longest_next
    if current:
        batches.append(current)
    if shuffle:
        np.random.default_rng(seed).shuffle(batches)
    return [collator([sources[i] for i in b], [targets[i] for i in b]) for b in batches]


def batches_to_tf_dataset(batches: Iterable[tuple[dict, np.ndarray]], shuffle: bool = True, seed: int = 0):
    """A ``tf.data.Dataset`` of precomputed ``(inputs, labels)`` batches of varying shapes.

    With ``shuffle`` the order of whole batches changes every epoch (reproducibly from ``seed``); the
    dataset has a known length, so Keras progress bars show it.
    """
    import tensorflow as tf

    batches = list(batches)
    if not batches:
        raise ValueError("no batches")
    signature = (
        {key: tf.TensorSpec((None, None), tf.int32) for key in batches[0][0]},
        tf.TensorSpec((None, None), tf.int32),
    )
    epoch = [0]

    def generate():
        order = np.arange(len(batches))
        if shuffle:
            np.random.default_rng([seed, epoch[0]]).shuffle(order)
        epoch[0] += 1
        for i in order:
            yield batches[i]

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(2)
