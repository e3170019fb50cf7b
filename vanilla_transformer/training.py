"""Section 5: teacher forcing, label-smoothed loss, the learning-rate schedule, and input pipelines.

Nothing here depends on the model classes; ``compile()`` of the models uses these as its defaults.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
import numpy as np
from keras import ops

IGNORE_INDEX = -100  # transformers' convention for label positions excluded from loss and metrics


def _per_replica(loss):
    """Divide a replica's mean loss by the number of replicas in sync.

    Keras scales losses it reduces itself; a loss that returns its own scalar must do it, or gradients
    summed across ``tf.distribute`` replicas come out ``num_replicas`` times too large. The global loss is
    then the mean of the replicas' token means (equal to the token mean when replicas count equal tokens).
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss / replicas
    return loss


def _in_multi_worker_mode(strategy) -> bool:
    """Keras' own test for MultiWorkerMirroredStrategy across more than one worker (TensorFlow backend)."""
    if strategy is None or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def _multi_worker_strategy(model):
    """The strategy Keras reduces ``model``'s steps with (its own, or the one in scope) when it spans several
    workers; None otherwise."""
    strategy = model.distribute_strategy if keras.backend.backend() == "tensorflow" else None
    return strategy if _in_multi_worker_mode(strategy) else None


class MultiWorkerTrainerFixes:
    """Make Keras 3's TensorFlow trainer run under ``MultiWorkerMirroredStrategy`` with several workers.

    Keras 3.15 fails there twice (tensorflow/tensorflow#72388): before the first step it MEAN-reduces the first
    distributed input batch across workers with ``strategy.reduce``, which rejects a dict of inputs; after every
    step it reduces each scalar log with ``strategy.reduce("MEAN", value, axis=0)``, which rejects a scalar. In
    that mode only, this mixin builds from one replica's batch (the build needs shapes, not values) and gives the
    logs a leading axis of length 1, so Keras' reduction averages the replicas' values back into their shape. In
    every other mode (one device, ``MirroredStrategy``, other backends) Keras' code runs unchanged.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is None or not _in_multi_worker_mode(strategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        import tensorflow as tf

        for _, _, batches in iterator:  # what Keras does: the first batch of the epoch iterator
            data_batch = next(batches)
            break
        data_batch = keras.tree.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v, data_batch)
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def train_step(self, *args):
        return self._logs_reducible_across_workers(super().train_step(*args))

    def test_step(self, *args):
        return self._logs_reducible_across_workers(super().test_step(*args))

    def _logs_reducible_across_workers(self, logs):
        if _multi_worker_strategy(self) is None:
            return logs
        # Every value, not only scalars: the reduction averages axis 0, which must be the new one.
        return keras.tree.map_structure(lambda v: ops.expand_dims(v, 0), logs)


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
        ignored = ops.equal(y_true, self.ignore_index)
        mask = ops.cast(ops.logical_not(ignored), "float32")
        eps = self.label_smoothing
        # -sum_v target_v log p_v with target = (1 - eps) one_hot + eps / V, and sum_v target_v = 1:
        # logsumexp(logits) - sum_v target_v logits_v. Written with a one-hot product rather than a gather
        # because the gradient of a gather is a scatter-add (slow on CPU without XLA); the gradient here is
        # softmax - target, elementwise.
        target = (1.0 - eps) * ops.one_hot(ops.where(ignored, 0, y_true), logits.shape[-1]) + eps / logits.shape[-1]
        per_token = ops.logsumexp(logits, axis=-1) - ops.sum(logits * target, axis=-1)
        return _per_replica(ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0))

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

    def __call__(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], length: int | None = None,
                 num_rows: int | None = None):
        """Collate pairs; ``length`` fixes both padded lengths, ``num_rows`` adds empty rows up to that many."""
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        if self.vocab_size is not None:
            for name, rows in (("source", sources), ("target", targets)):
                for row in rows:
                    if len(row) and (min(row) < 0 or max(row) >= self.vocab_size):
                        raise ValueError(f"{name} ids outside [0, vocab_size={self.vocab_size}): {list(row)}")
        if num_rows is not None and num_rows > len(sources):
            extra = num_rows - len(sources)
            sources, targets = list(sources) + [[]] * extra, list(targets) + [[]] * extra
        src_len = length or bucket_length(max(len(s) for s in sources), self.pad_to_multiple_of)
        tgt_len = length or bucket_length(max(len(t) for t in targets), self.pad_to_multiple_of)
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

    def _generate(self, skip=0):
        order = self.order(self.epoch)[skip:]
        if self.count_passes:
            self.epoch += 1
        for i in order:
            yield self.batches[i]

    def dataset(self, skip: int = 0):
        """The dataset; ``skip`` drops the first batches of the (current) epoch, for a resumed epoch."""
        import tensorflow as tf

        inputs, labels = self.batches[0]
        signature = ({key: tf.TensorSpec((None, None), tf.int32) for key in inputs},
                     tf.TensorSpec((None,) * np.ndim(labels), tf.int32))
        dataset = tf.data.Dataset.from_generator(lambda: self._generate(skip), output_signature=signature)
        return dataset.apply(tf.data.experimental.assert_cardinality(len(self.batches) - skip)).prefetch(2)

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


class StopOnNaN(keras.callbacks.Callback):
    """Stop training at the first non-finite loss, saying where, instead of training on garbage."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.stopped_at = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.stopped_at = {"epoch": self.epoch, "batch": int(batch), "loss": float(loss)}
            print(f"\nStopping: the loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}. "
                  f"Lower the learning rate or use bf16 instead of fp16; the last backup is kept for --resume.")
            self.model.stop_training = True


class ResumableBackup(keras.callbacks.Callback):
    """Backs up weights, optimizer state and the exact training position, surviving SIGKILL at any moment.

    Weights (``model.save_weights``, optimizer included) and the position (epoch, batches done in it) are
    written together into a fresh directory that is then renamed into place, so a kill mid-save leaves
    the previous complete backup. Used by :func:`fit_resumable`, which restores and continues from the
    exact batch.
    """

    def __init__(self, backup_dir, save_freq: int | str = "epoch"):
        import os

        super().__init__()
        if save_freq != "epoch" and (not isinstance(save_freq, int) or save_freq < 1):
            raise ValueError(f"save_freq must be 'epoch' or a positive integer, got {save_freq!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.current = os.path.join(self.backup_dir, "current")
        self.epoch = 0
        self.batches_done = 0

    @staticmethod
    def _rng_states(model):
        """State variables of every dropout seed generator: restoring them makes dropout masks match too."""
        states = []
        for layer in model._flatten_layers(include_self=True):
            states.extend(generator.state for generator in getattr(layer, "_seed_generators", []))
        return states

    def restore(self, model) -> tuple[int, int]:
        """Load the latest backup into ``model`` (and its optimizer); return ``(epoch, batches_done)``."""
        import json
        import os

        retired = self.current + ".old"
        if not os.path.exists(self.current) and os.path.exists(retired):
            os.replace(retired, self.current)  # killed between the two renames of a save
        metadata_path = os.path.join(self.current, "training_metadata.json")
        if not os.path.exists(metadata_path):
            return 0, 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.current, "latest.weights.h5"))
        rng_path = os.path.join(self.current, "rng_states.npz")
        if os.path.exists(rng_path):
            saved = np.load(rng_path)
            states = self._rng_states(model)
            if len(saved.files) == len(states):
                for i, state in enumerate(states):
                    state.assign(saved[f"s{i}"])
        with open(metadata_path) as f:
            metadata = json.load(f)
        self.epoch, self.batches_done = int(metadata["epoch"]), int(metadata["batches_done"])
        return self.epoch, self.batches_done

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            self.batches_done = 0
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batches_done += 1
        if self.save_freq != "epoch" and self.batches_done % self.save_freq == 0:
            self.save(self.epoch, self.batches_done)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.batches_done = epoch + 1, 0
        self.save(epoch + 1, 0)

    def save(self, epoch: int, batches_done: int):
        import json
        import os
        import shutil
        import tempfile

        os.makedirs(self.backup_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".staging-", dir=self.backup_dir)
        self.model.save_weights(os.path.join(staging, "latest.weights.h5"), overwrite=True)
        np.savez(os.path.join(staging, "rng_states.npz"),
                 **{f"s{i}": np.asarray(state.numpy()) for i, state in enumerate(self._rng_states(self.model))})
        with open(os.path.join(staging, "training_metadata.json"), "w") as f:
            json.dump({"epoch": epoch, "batches_done": batches_done}, f)
        retired = self.current + ".old"
        shutil.rmtree(retired, ignore_errors=True)
        if os.path.exists(self.current):
            os.replace(self.current, retired)
        os.replace(staging, self.current)
        shutil.rmtree(retired, ignore_errors=True)


def check_same_position_on_every_worker(model, position: tuple[int, int]):
    """Raise if the workers of a multi-worker run restored different training positions (epoch, batches done).

    Each worker restores its own backup; a job killed between two workers' saves leaves them one save apart,
    and the worker with more steps to run would then wait forever in an all-reduce. Every worker must call
    this (it is a collective); outside multi-worker training it does nothing.
    """
    strategy = _multi_worker_strategy(model)
    if strategy is None:
        return
    import tensorflow as tf

    mine = tf.constant([list(position)], tf.int64)

    @tf.function
    def gather():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_gather(mine, axis=0))

    positions = strategy.experimental_local_results(gather())[0].numpy()
    if (positions != positions[0]).any():
        raise RuntimeError(f"the workers restored different backups: (epoch, batches done) per replica "
                           f"{positions.tolist()}; give every worker the same backup (e.g. the chief's) and resume")


def fit_resumable(model, batches: EpochShuffledBatches, epochs: int, backup_dir, save_freq: int | str = "epoch",
                  callbacks=(), verbose="auto", validation_data=None):
    """``model.fit`` over ``batches`` that resumes exactly where a killed run stopped.

    On start it restores the backup in ``backup_dir`` if there is one (weights, optimizer state, epoch
    and batches done), finishes the interrupted epoch with its remaining batches, then runs the remaining
    epochs. With the same seed the result equals an uninterrupted run's. Returns the list of History
    objects (one per ``fit`` call).
    """
    backup = ResumableBackup(backup_dir, save_freq)
    if hasattr(model, "build_weights"):
        model.build_weights()
    epoch, done = backup.restore(model)
    check_same_position_on_every_worker(model, (epoch, done))
    if epoch or done:
        print(f"Resuming from the backup in {backup_dir}: epoch {epoch + 1}, after {done} of its {len(batches)} "
              f"batches", flush=True)
    all_callbacks = [batches.callback(), backup, *callbacks]
    histories = []
    if done and epoch < epochs:
        histories.append(model.fit(batches.dataset(skip=done), initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                                   callbacks=all_callbacks, verbose=verbose, validation_data=validation_data))
        epoch += 1
    if epoch < epochs and not model.stop_training:
        histories.append(model.fit(batches.dataset(), initial_epoch=epoch, epochs=epochs, shuffle=False,
                                   callbacks=all_callbacks, verbose=verbose, validation_data=validation_data))
    return histories
