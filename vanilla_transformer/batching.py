"""Batches for ``model.fit``: length bucketing, an epoch-reproducible order, and ``tf.data`` pipelines.

- :func:`seq2seq_batches`: translation pairs grouped by length under a token budget, with static shapes;
- :class:`EpochShuffledBatches`: precomputed batches whose order depends only on (seed, epoch), so a resumed
  run sees exactly the batches of an uninterrupted one (:func:`vanilla_transformer.training.fit_resumable`);
- :func:`make_tf_dataset`: examples grouped by length and collated again every epoch (dynamic MLM masks).

Both pipelines go through one ``tf.data`` builder, :func:`_generator_dataset`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import keras
import numpy as np

from .data_collators import Seq2SeqCollator, bucket_length, id_rows


def _generator_dataset(make_batches: Callable[[], Iterator[tuple[dict, np.ndarray]]], example: tuple[dict, np.ndarray],
                      num_batches: int):
    """A ``tf.data.Dataset`` over the ``(inputs, labels)`` batches ``make_batches()`` yields at each pass.

    ``example`` (one batch) gives the structure; every array is int32 with dynamic dimensions; the
    cardinality is ``num_batches``, so Keras knows the epoch length.
    """
    import tensorflow as tf

    inputs, labels = example
    signature = ({key: tf.TensorSpec((None, None), tf.int32) for key in inputs},
                 tf.TensorSpec((None,) * np.ndim(labels), tf.int32))
    dataset = tf.data.Dataset.from_generator(make_batches, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(num_batches)).prefetch(2)


def seq2seq_batches(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], collator: Seq2SeqCollator,
                    max_tokens: int | None = None, batch_size: int | None = None, shuffle: bool = True,
                    seed: int = 0, static_shapes: bool = True) -> list[tuple[dict, np.ndarray]]:
    """Group pairs of similar length into batches, by a token budget or a fixed number of sentences.

    Pairs are bucketed by their longer side rounded up to ``collator.pad_to_multiple_of``; every batch
    of a bucket has the same shape ``(rows, L)`` for source and target alike, ``rows = max_tokens // L``
    (or ``batch_size``). With ``static_shapes`` the last batch of a bucket is filled up with empty rows
    (all padding, labels -100, so they add nothing to loss or metrics), so XLA compiles one program per
    bucket instead of one per odd batch size.
    """
    if not sources:
        raise ValueError("no examples to batch")
    if (max_tokens is None) == (batch_size is None):
        raise ValueError("give exactly one of max_tokens or batch_size")
    buckets: dict[int, list[int]] = {}
    for i in range(len(sources)):
        length = bucket_length(max(len(sources[i]), len(targets[i]), 1), collator.pad_to_multiple_of)
        buckets.setdefault(length, []).append(i)
    batches = []
    for length, members in sorted(buckets.items()):
        members.sort(key=lambda i: (len(sources[i]) + len(targets[i]), i))
        rows = batch_size or max(1, max_tokens // length)
        for start in range(0, len(members), rows):
            chunk = members[start:start + rows]
            batches.append(collator([sources[i] for i in chunk], [targets[i] for i in chunk], length=length,
                                    num_rows=rows if static_shapes else None))
    if shuffle:
        np.random.default_rng(seed).shuffle(batches)
    return batches



class EpochShuffledBatches:
    """Precomputed ``(inputs, labels)`` batches as a ``tf.data.Dataset`` whose order depends only on the epoch.

    The order of whole batches in epoch ``e`` is a permutation drawn from ``(seed, e)``, so a run resumed
    at epoch ``e`` (and ``skip`` batches into it) sees exactly the batches an uninterrupted run would.
    Keep the object and pass :meth:`callback` to ``fit`` so the dataset knows the epoch.
    """

    def __init__(self, batches: Iterable[tuple[dict, np.ndarray]], shuffle: bool = True, seed: int = 0,
                 count_passes: bool = False):
        self.batches = list(batches)
        if not self.batches:
            raise ValueError("no batches")
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.count_passes = count_passes  # without the callback: each pass over the data is an epoch

    def __len__(self):
        return len(self.batches)

    def order(self, epoch: int) -> np.ndarray:
        order = np.arange(len(self.batches))
        if self.shuffle:
            np.random.default_rng([self.seed, epoch]).shuffle(order)
        return order

    def batches_of_epoch(self, skip: int = 0):
        """The batches of the current epoch in order, after the first ``skip``."""
        order = self.order(self.epoch)[skip:]
        if self.count_passes:
            self.epoch += 1
        for i in order:
            yield self.batches[i]

    def dataset(self, skip: int = 0):
        """The dataset; ``skip`` drops the first batches of the (current) epoch, for a resumed epoch."""
        return _generator_dataset(lambda: self.batches_of_epoch(skip), self.batches[0], len(self.batches) - skip)

    def callback(self):
        """A Keras callback that tells the dataset which epoch is starting."""
        batches = self

        class _SetEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                batches.epoch = epoch

        return _SetEpoch()


def batches_to_tf_dataset(batches: Iterable[tuple[dict, np.ndarray]], shuffle: bool = True, seed: int = 0):
    """A ``tf.data.Dataset`` of precomputed ``(inputs, labels)`` batches, reshuffled (as whole batches) at
    every pass. For exactly resumable runs use :class:`EpochShuffledBatches` with its callback."""
    return EpochShuffledBatches(batches, shuffle=shuffle, seed=seed, count_passes=True).dataset()


def length_grouped_batches(lengths: Sequence[int], batch_size: int, shuffle: bool = True,
                           rng: np.random.Generator | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding, few shapes), in shuffled order.

    With ``shuffle`` the examples are shuffled, sorted by length inside windows of 50 batches (transformers'
    ``group_by_length`` idea), cut into batches, and the batch order shuffled; otherwise batches follow
    the input order.
    """
    order = np.arange(len(lengths))
    if not shuffle:
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rng = rng or np.random.default_rng(0)
    order = rng.permutation(order)
    window = batch_size * 50
    grouped = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        grouped.extend(sorted(chunk.tolist(), key=lambda i: lengths[i]))
    batches = [grouped[i:i + batch_size] for i in range(0, len(grouped), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def make_tf_dataset(examples: Sequence[Sequence[int]], collator, batch_size: int, labels: Sequence[int] | None = None,
                    shuffle: bool = True, seed: int = 0):
    """A ``tf.data.Dataset`` of ``(inputs, labels)`` batches for ``model.fit`` / ``evaluate``.

    ``collator`` is called on every batch of every epoch (``collator(rows)``, or ``collator(rows, labels)``
    when ``labels`` are given), so :class:`DataCollatorForMaskedLM` draws new masks each epoch. Each epoch
    groups examples of similar length (see :func:`length_grouped_batches`) with a new order.
    """
    examples = id_rows(examples)
    if not examples:
        raise ValueError("no examples to batch")
    lengths = [len(row) for row in examples]
    rng = np.random.default_rng(seed)
    num_batches = -(-len(examples) // batch_size)

    def generate():
        for batch in length_grouped_batches(lengths, batch_size, shuffle, rng):
            rows = [examples[i] for i in batch]
            if labels is None:
                yield collator(rows)
            else:
                yield collator(rows, [labels[i] for i in batch])

    example = collator(examples[:1]) if labels is None else collator(examples[:1], labels[:1])
    return _generator_dataset(generate, example, num_batches)
