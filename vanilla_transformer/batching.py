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

from .data_collators import PackedSeq2SeqCollator, Seq2SeqCollator, bucket_length, id_rows, pack_pairs
from .input_pipeline import without_autotune


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
    # a fixed prefetch needs no tuning, and the tuning thread stalls each epoch's end (input_pipeline)
    return without_autotune(dataset.apply(tf.data.experimental.assert_cardinality(num_batches)).prefetch(2))


def seq2seq_batches(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], collator: Seq2SeqCollator,
                    max_tokens: int | None = None, batch_size: int | None = None, shuffle: bool = True,
                    seed: int = 0, static_shapes: bool = True) -> list[tuple[dict, np.ndarray]]:
    """Group pairs of similar length into batches, by a token budget or a fixed number of sentences.

    Pairs are bucketed by their longer side rounded up to ``collator.pad_to_multiple_of``; every batch
    of a bucket has the same shape ``(rows, L)`` for source and target alike, ``rows = max_tokens // L``
    (or ``batch_size``). With ``static_shapes`` the last batch of a bucket is filled up with empty rows
    (all padding, labels -100, so they add nothing to loss or metrics), so XLA compiles one program per
    bucket instead of one per odd batch size.

    Args:
        sources: source token ids, one list (or 1-D array) of ints per example.
        targets: target token ids, as many rows as ``sources``.
        collator: the :class:`~vanilla_transformer.data_collators.Seq2SeqCollator` that pads each batch.
        max_tokens: token budget per batch (``rows * L <= max_tokens``, at least one row).
        batch_size: a fixed number of rows per batch instead; give exactly one of the two.
        shuffle: shuffle the order of the batches (whole batches; rows stay grouped by length).
        seed: seed of that shuffle.
        static_shapes: pad the last batch of each bucket with empty rows up to the bucket's row count.

    Returns:
        A list of ``(inputs, labels)`` batches: ``inputs`` a dict of int32 arrays ``(rows, L)``
        (``input_ids``, ``attention_mask``, ``decoder_input_ids``, ``decoder_attention_mask``),
        ``labels`` int32 ``(rows, L)`` with -100 at padding.

    Raises:
        ValueError: no examples, or not exactly one of ``max_tokens`` / ``batch_size``.

    Example:
        >>> from vanilla_transformer.batching import seq2seq_batches
        >>> from vanilla_transformer.data_collators import Seq2SeqCollator
        >>> collator = Seq2SeqCollator(pad_token_id=0, decoder_start_token_id=1, vocab_size=20,
        ...                            pad_to_multiple_of=4)
        >>> sources = [[3, 4, 5], [6, 7], [8, 9, 10, 11, 12], [13, 14]]
        >>> targets = [[5, 4, 2], [7, 2], [12, 11, 10, 9, 8, 2], [14, 2]]
        >>> batches = seq2seq_batches(sources, targets, collator, max_tokens=16, shuffle=False)
        >>> [tuple(inputs["input_ids"].shape) for inputs, labels in batches]  # buckets of length 4 and 8
        [(4, 4), (2, 8)]
        >>> batches[1][1]  # the labels of the 8-token bucket: one real row, one empty filler row
        array([[  12,   11,   10,    9,    8,    2, -100, -100],
               [-100, -100, -100, -100, -100, -100, -100, -100]], dtype=int32)
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



def packed_seq2seq_batches(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                           collator: PackedSeq2SeqCollator, rows_per_batch: int, shuffle: bool = True,
                           seed: int = 0) -> list[tuple[dict, np.ndarray]]:
    """Pack pairs several to a row (:func:`~vanilla_transformer.data_collators.pack_pairs`) and group the rows
    into batches of one shape, ``(rows_per_batch, collator.source_length / target_length)``: one compiled
    program for the whole epoch, and almost every token real.

    Args:
        sources / targets: token ids of the pairs.
        collator: the :class:`~vanilla_transformer.data_collators.PackedSeq2SeqCollator` (row lengths).
        rows_per_batch: rows of every batch (the last one is filled with empty rows).
        shuffle / seed: shuffle which rows form a batch.

    Returns:
        A list of ``(inputs, labels)`` batches (see the collator for the keys).

    Example:
        >>> from vanilla_transformer.data_collators import PackedSeq2SeqCollator
        >>> collator = PackedSeq2SeqCollator(0, 1, source_length=8, target_length=8)
        >>> sources = [[3, 4, 5, 2], [6, 7, 2], [8, 9, 10, 11, 2], [12, 2]]
        >>> targets = [[5, 4, 3, 2], [7, 6, 2], [11, 10, 9, 8, 2], [12, 2]]
        >>> batches = packed_seq2seq_batches(sources, targets, collator, rows_per_batch=2, shuffle=False)
        >>> len(batches), batches[0][0]["segment_ids"].tolist()  # 4 pairs, 2 rows, 14 of 16 tokens real
        (1, [[1, 1, 1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 2, 2, 0, 0]])
    """
    if not sources:
        raise ValueError("no examples to batch")
    rows = pack_pairs([len(s) for s in sources], [len(t) for t in targets], collator.source_length,
                      collator.target_length)
    if shuffle:
        np.random.default_rng(seed).shuffle(rows)
    batches = []
    for start in range(0, len(rows), rows_per_batch):
        chunk = rows[start:start + rows_per_batch]
        members = sorted({i for row in chunk for i in row})
        index = {i: k for k, i in enumerate(members)}
        batches.append(collator([sources[i] for i in members], [targets[i] for i in members],
                                rows=[[index[i] for i in row] for row in chunk], num_rows=rows_per_batch))
    return batches


class EpochShuffledBatches:
    """Precomputed ``(inputs, labels)`` batches as a ``tf.data.Dataset`` whose order depends only on the epoch.

    The order of whole batches in epoch ``e`` is a permutation drawn from ``(seed, e)``, so a run resumed
    at epoch ``e`` (and ``skip`` batches into it) sees exactly the batches an uninterrupted run would.
    Keep the object and pass :meth:`callback` to ``fit`` so the dataset knows the epoch.

    Args:
        batches: ``(inputs, labels)`` batches (e.g. from :func:`seq2seq_batches`): ``inputs`` a dict of
            int32 arrays ``(rows, length)``, ``labels`` an int32 array; shapes may differ between batches.
        shuffle: permute the batches in every epoch (else keep their order).
        seed: seed of the permutations; ``order(epoch)`` depends only on ``(seed, epoch)``.
        count_passes: without the callback, count each pass over the dataset as a new epoch.

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer.batching import EpochShuffledBatches
        >>> batches = [({"input_ids": np.full((2, 4), i, "int32")}, np.full((2, 4), i, "int32"))
        ...            for i in range(5)]
        >>> data = EpochShuffledBatches(batches, seed=0)
        >>> len(data)
        5
        >>> sorted(data.order(epoch=1).tolist())  # a permutation of the batches ...
        [0, 1, 2, 3, 4]
        >>> bool((data.order(1) == EpochShuffledBatches(batches, seed=0).order(1)).all())  # ... that is reproducible
        True
        >>> data.epoch = 1  # what ``data.callback()`` does at the start of epoch 2 in ``fit``
        >>> [int(inputs["input_ids"][0, 0]) for inputs, _ in data.dataset(skip=3)] == data.order(1)[3:].tolist()
        True
    """

    def __init__(self, batches: Iterable[tuple[dict, np.ndarray]], shuffle: bool = True, seed: int = 0,
                 count_passes: bool = False):
        self.views = [list(batches)]
        if not self.views[0]:
            raise ValueError("no batches")
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.count_passes = count_passes  # without the callback: each pass over the data is an epoch

    @classmethod
    def from_views(cls, views: Sequence[Sequence[tuple[dict, np.ndarray]]], shuffle: bool = True, seed: int = 0):
        """Batches of the same examples in several views, e.g. segmented anew (:class:`~vanilla_transformer.
        tokenization.BPEDropoutEncoder`): epoch ``e`` serves view ``e % len(views)``, in its own order.

        Keras needs one epoch length, so every view is cut to the shortest view's number of batches; build
        each view from examples shuffled with its own seed, so that the few batches cut differ between views.

        >>> import numpy as np
        >>> views = [[({"input_ids": np.full((1, 2), 10 * v + i, "int32")}, np.zeros((1, 2), "int32"))
        ...           for i in range(3 + v)] for v in range(2)]  # 3 and 4 batches
        >>> data = EpochShuffledBatches.from_views(views, shuffle=False)
        >>> len(data), [[int(x["input_ids"][0, 0]) for x, _ in data.view(e)] for e in (0, 1, 2)]
        (3, [[0, 1, 2], [10, 11, 12], [0, 1, 2]])
        """
        views = [list(view) for view in views]
        if not views or not all(views):
            raise ValueError("no views, or a view without batches")
        shortest = min(len(view) for view in views)
        data = cls(views[0][:shortest], shuffle=shuffle, seed=seed)
        data.views = [view[:shortest] for view in views]  # the first view's batches become data.batches
        return data

    @property
    def batches(self) -> list[tuple[dict, np.ndarray]]:
        """The batches of the first view (all of them without views)."""
        return self.views[0]

    def view(self, epoch: int) -> list[tuple[dict, np.ndarray]]:
        """The batches epoch ``epoch`` draws from (in stored order; :meth:`order` permutes them)."""
        return self.views[epoch % len(self.views)]

    def __len__(self):
        return len(self.batches)

    def order(self, epoch: int) -> np.ndarray:
        order = np.arange(len(self.batches))
        if self.shuffle:
            np.random.default_rng([self.seed, epoch]).shuffle(order)
        return order

    def batches_of_epoch(self, skip: int = 0):
        """The batches of the current epoch in order, after the first ``skip``."""
        order, view = self.order(self.epoch)[skip:], self.view(self.epoch)
        if self.count_passes:
            self.epoch += 1
        for i in order:
            yield view[i]

    def dataset(self, skip: int = 0):
        """The dataset; ``skip`` drops the first batches of the (current) epoch, for a resumed epoch.

        A ``tf.data.Dataset`` on TensorFlow; on JAX and PyTorch a ``keras.utils.PyDataset`` (no TensorFlow
        needed) serving the same batches in the same order.
        """
        if keras.backend.backend() != "tensorflow":
            return _EpochSequence(self, skip)
        return _generator_dataset(lambda: self.batches_of_epoch(skip), self.batches[0], len(self.batches) - skip)

    def callback(self):
        """A Keras callback that tells the dataset which epoch is starting."""
        batches = self

        class _SetEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                batches.epoch = epoch

        return _SetEpoch()


class _EpochSequence(keras.utils.PyDataset):
    """The batches of :class:`EpochShuffledBatches` for ``fit`` as a ``keras.utils.PyDataset``: item ``i`` is
    batch ``skip + i`` of the current epoch's order."""

    def __init__(self, batches: EpochShuffledBatches, skip: int = 0):
        super().__init__()
        self.batches, self.skip = batches, skip

    def __len__(self) -> int:
        return len(self.batches.batches) - self.skip

    def __getitem__(self, index: int):
        epoch = self.batches.epoch
        return self.batches.view(epoch)[self.batches.order(epoch)[self.skip + index]]

    def on_epoch_end(self) -> None:
        if self.batches.count_passes:  # without the callback: each pass over the data is an epoch
            self.batches.epoch += 1


def batches_to_tf_dataset(batches: Iterable[tuple[dict, np.ndarray]], shuffle: bool = True, seed: int = 0):
    """A dataset of precomputed ``(inputs, labels)`` batches for ``model.fit``, reshuffled (as whole batches) at
    every pass. For exactly resumable runs use :class:`EpochShuffledBatches` with its callback.

    Args:
        batches: ``(inputs, labels)`` batches, ``inputs`` a dict of int32 arrays ``(rows, length)``.
        shuffle: a new order of the batches at every pass over the dataset.
        seed: seed of the orders.

    Returns:
        A ``tf.data.Dataset`` of ``(inputs, labels)`` int32 tensors, with cardinality ``len(batches)``; on
        JAX and PyTorch a ``keras.utils.PyDataset`` of the same batches (see :meth:`EpochShuffledBatches.dataset`).

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer.batching import batches_to_tf_dataset
        >>> batches = [({"input_ids": np.ones((2, 4), "int32")}, np.zeros((2, 4), "int32")),
        ...            ({"input_ids": np.ones((3, 8), "int32")}, np.zeros((3, 8), "int32"))]
        >>> dataset = batches_to_tf_dataset(batches, seed=0)
        >>> int(dataset.cardinality())
        2
        >>> sorted(tuple(inputs["input_ids"].shape) for inputs, labels in dataset)
        [(2, 4), (3, 8)]
    """
    return EpochShuffledBatches(batches, shuffle=shuffle, seed=seed, count_passes=True).dataset()


def length_grouped_batches(lengths: Sequence[int], batch_size: int, shuffle: bool = True,
                           rng: np.random.Generator | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding, few shapes), in shuffled order.

    With ``shuffle`` the examples are shuffled, sorted by length inside windows of 50 batches (transformers'
    ``group_by_length`` idea), cut into batches, and the batch order shuffled; otherwise batches follow
    the input order.

    Args:
        lengths: the length of every example.
        batch_size: examples per batch (the last batch may be smaller).
        shuffle: group by length and shuffle, as above; False keeps the input order.
        rng: the random generator (default ``np.random.default_rng(0)``); pass the same one to get a new
            order at each call.

    Returns:
        A list of batches, each a list of indices into ``lengths``; every index appears exactly once.

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer.batching import length_grouped_batches
        >>> lengths = [3, 9, 2, 8, 3, 9]
        >>> length_grouped_batches(lengths, batch_size=2, shuffle=False)
        [[0, 1], [2, 3], [4, 5]]
        >>> batches = length_grouped_batches(lengths, batch_size=2, rng=np.random.default_rng(0))
        >>> sorted(sorted(lengths[i] for i in batch) for batch in batches)  # similar lengths together
        [[2, 3], [3, 8], [9, 9]]
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
    """A ``tf.data.Dataset`` (on JAX and PyTorch a ``keras.utils.PyDataset``) of ``(inputs, labels)`` batches
    for ``model.fit`` / ``evaluate``.

    ``collator`` is called on every batch of every epoch (``collator(rows)``, or ``collator(rows, labels)``
    when ``labels`` are given), so :class:`DataCollatorForMaskedLM` draws new masks each epoch. Each epoch
    groups examples of similar length (see :func:`length_grouped_batches`) with a new order.

    Args:
        examples: token ids, one list (or array, or dict with ``input_ids``) per example.
        collator: called on each batch; returns ``(inputs, labels)`` of int32 arrays, e.g.
            :class:`~vanilla_transformer.data_collators.DataCollatorForCausalLM`.
        batch_size: examples per batch.
        labels: one label per example, passed to the collator (sequence classification), or None.
        shuffle: group by length with a new order every epoch; False keeps the input order.
        seed: seed of the orders.

    Returns:
        A ``tf.data.Dataset`` of ``(inputs, labels)`` int32 tensors as the collator returns them (inputs
        ``(batch, length)``; labels ``(batch, length)``, or ``(batch,)`` for classification), with cardinality
        ``ceil(len(examples) / batch_size)``.

    Example:
        >>> from vanilla_transformer.batching import make_tf_dataset
        >>> from vanilla_transformer.data_collators import DataCollatorForCausalLM
        >>> examples = [[5, 6, 7], [8, 9], [5, 6, 7, 8, 9, 10, 11, 12, 13], [10]]
        >>> dataset = make_tf_dataset(examples, DataCollatorForCausalLM(pad_token_id=0), batch_size=2)
        >>> int(dataset.cardinality())
        2
        >>> sorted(tuple(labels.shape) for inputs, labels in dataset)  # padded to multiples of 8
        [(2, 8), (2, 16)]
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

    if keras.backend.backend() != "tensorflow":  # JAX, PyTorch: a PyDataset, no TensorFlow needed
        return _RegroupedSequence(generate, num_batches)
    example = collator(examples[:1]) if labels is None else collator(examples[:1], labels[:1])
    return _generator_dataset(generate, example, num_batches)


class _RegroupedSequence(keras.utils.PyDataset):
    """``make_tf_dataset``'s batches as a ``keras.utils.PyDataset``: one pass of ``generate()`` per epoch, read
    in order (Keras asks for items 0, 1, ... of an epoch)."""

    def __init__(self, generate: Callable[[], Iterator], num_batches: int):
        super().__init__()
        self.generate, self.batch_count = generate, num_batches
        self.epoch_batches: list | None = None

    def __len__(self) -> int:
        return self.batch_count

    def __getitem__(self, index: int):
        if self.epoch_batches is None:
            self.epoch_batches = list(self.generate())
        return self.epoch_batches[index]

    def on_epoch_end(self) -> None:
        self.epoch_batches = None  # the next epoch groups and collates (masks) anew
