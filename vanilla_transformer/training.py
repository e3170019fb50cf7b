"""Training that survives interruption: exact resume after a kill, and stopping on a non-finite loss.

:func:`fit_resumable` runs ``model.fit`` over :class:`~vanilla_transformer.batching.EpochShuffledBatches`
with a :class:`ResumableBackup`; killed at any moment (SIGKILL included) and started again, it continues
from the exact batch with the same weights, optimizer state and dropout randomness.
"""

from __future__ import annotations

import json
import logging
import os

import keras
import numpy as np

from .batching import EpochShuffledBatches
from .atomic_directories import atomic_directory, recover_interrupted_swap
from .distribution import check_same_position_on_every_worker

logger = logging.getLogger(__name__)


class BackupError(OSError):
    """The training backup could not be written (full disk, read-only folder...); training stops.

    >>> issubclass(BackupError, OSError)
    True
    """


class StopOnNaN(keras.callbacks.Callback):
    """Stop training at the first non-finite loss, saying where, instead of training on garbage.

    A Keras callback for ``model.fit(..., callbacks=[StopOnNaN()])``. At the end of every batch it reads
    ``logs["loss"]`` (a float); when that is NaN or infinite it prints where it happened, records
    ``stopped_at = {"epoch", "batch", "loss"}`` (0-based epoch and batch) and sets ``model.stop_training``.
    ``stopped_at`` stays None while the loss is finite.

    Example:
        >>> import keras
        >>> from vanilla_transformer.training import StopOnNaN
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer="adam", loss="mse")
        >>> stop = StopOnNaN()
        >>> stop.set_model(model)
        >>> stop.on_epoch_begin(2)
        >>> stop.on_train_batch_end(3, {"loss": 0.7})  # finite: nothing happens
        >>> stop.stopped_at is None, model.stop_training
        (True, False)
        >>> stop.on_train_batch_end(4, {"loss": float("nan")})
        <BLANKLINE>
        Stopping: the loss became nan at epoch 3, batch 5. Lower the learning rate ...
        >>> stop.stopped_at, model.stop_training
        ({'epoch': 2, 'batch': 4, 'loss': nan}, True)
    """

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
                  f"Lower the learning rate or use bf16 instead of fp16; the last backup is kept.")
            self.model.stop_training = True


class ResumableBackup(keras.callbacks.Callback):
    """Backs up weights, optimizer state and the exact training position, surviving SIGKILL at any moment.

    Weights (``model.save_weights``, optimizer included) and the position (epoch, batches done in it) are
    written together into a fresh directory that is then swapped in
    (:func:`~vanilla_transformer.atomic_directories.atomic_directory`), so a kill mid-save leaves the previous
    complete backup. Used by :func:`fit_resumable`, which restores and continues from the
    exact batch.

    Args:
        backup_dir: the folder of the backup; it holds ``current/`` with ``latest.weights.h5``,
            ``rng_states.npz`` and ``training_metadata.json``.
        save_freq: ``"epoch"`` (save at the end of every epoch) or a positive int: also save every that many
            batches (epoch ends are always saved).

    Raises:
        ValueError: ``save_freq`` is neither ``"epoch"`` nor a positive integer.

    Example:
        >>> import os, tempfile
        >>> import keras
        >>> from vanilla_transformer.training import ResumableBackup
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> model.compile(optimizer="adam", loss="mse")
        >>> backup_dir = tempfile.mkdtemp()
        >>> ResumableBackup(backup_dir).restore(model)  # no backup yet: start at (epoch 0, 0 batches done)
        (0, 0)
        >>> backup = ResumableBackup(backup_dir, save_freq=2)
        >>> backup.set_model(model)  # what fit does
        >>> backup.save(epoch=1, batches_done=2)
        >>> sorted(os.listdir(os.path.join(backup_dir, "current")))
        ['latest.weights.h5', 'rng_states.npz', 'training_metadata.json']
        >>> ResumableBackup(backup_dir).restore(model)
        (1, 2)
        >>> ResumableBackup(backup_dir, save_freq=0)
        Traceback (most recent call last):
        ...
        ValueError: save_freq must be 'epoch' or a positive integer, got 0
    """

    def __init__(self, backup_dir, save_freq: int | str = "epoch"):
        super().__init__()
        if save_freq != "epoch" and (not isinstance(save_freq, int) or save_freq < 1):
            raise ValueError(f"save_freq must be 'epoch' or a positive integer, got {save_freq!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.current = os.path.join(self.backup_dir, "current")
        self.epoch = 0
        self.batches_done = 0

    @staticmethod
    def rng_states(model) -> list:
        """The model's random-generator states (its variables that are not weights): restoring them makes
        dropout masks match too."""
        weights = {id(weight) for weight in model.weights}
        return [variable for variable in model.variables if id(variable) not in weights]

    def restore(self, model) -> tuple[int, int]:
        """Load the latest backup into ``model`` (and its optimizer); return ``(epoch, batches_done)``."""
        recover_interrupted_swap(self.current)  # killed between the two renames of a save
        metadata_path = os.path.join(self.current, "training_metadata.json")
        if not os.path.exists(metadata_path):
            return 0, 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.current, "latest.weights.h5"))
        rng_path = os.path.join(self.current, "rng_states.npz")
        if os.path.exists(rng_path):
            self.restore_rng_states(model, np.load(rng_path))
        with open(metadata_path) as f:
            metadata = json.load(f)
        self.epoch, self.batches_done = int(metadata["epoch"]), int(metadata["batches_done"])
        return self.epoch, self.batches_done

    def restore_rng_states(self, model, saved) -> None:
        states = self.rng_states(model)
        keys = [f"state_{i}" for i in range(len(states))]
        if sorted(saved.files) != sorted(keys):  # another model, or a backup of an earlier version
            logger.warning("the backup's random-generator states (%s) do not fit this model's %d; dropout masks "
                           "after the resume will differ from an uninterrupted run", sorted(saved.files), len(states))
            return
        for key, state in zip(keys, states):
            state.assign(saved[key])

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
        """Write the backup of ``(epoch, batches_done)``; a failed write raises :class:`BackupError` (the run
        stops rather than go on without a backup) and leaves the previous backup as it was."""
        try:
            with atomic_directory(self.current) as staging:
                self.write_backup(staging, epoch, batches_done)
        except OSError as err:
            raise BackupError(err.errno, f"the training backup could not be written to {self.backup_dir}: "
                                         f"{err.strerror or err}; training stops rather than go on without a "
                                         f"backup (the last complete one, if any, is {self.current})") from err

    def write_backup(self, staging, epoch: int, batches_done: int) -> None:
        """Weights with optimizer state, random-generator states and the position into the folder ``staging``
        (:meth:`save` swaps it in as the current backup)."""
        self.model.save_weights(os.path.join(staging, "latest.weights.h5"), overwrite=True)
        np.savez(os.path.join(staging, "rng_states.npz"),
                 **{f"state_{i}": np.asarray(state.numpy()) for i, state in enumerate(self.rng_states(self.model))})
        with open(os.path.join(staging, "training_metadata.json"), "w") as f:
            json.dump({"epoch": epoch, "batches_done": batches_done}, f)


def fit_resumable(model, batches: EpochShuffledBatches, epochs: int, backup_dir, save_freq: int | str = "epoch",
                  callbacks=(), verbose="auto", validation_data=None):
    """``model.fit`` over ``batches`` that resumes exactly where a killed run stopped.

    On start it restores the backup in ``backup_dir`` if there is one (weights, optimizer state, epoch
    and batches done), finishes the interrupted epoch with its remaining batches, then runs the remaining
    epochs. With the same seed the result equals an uninterrupted run's. Returns the list of History
    objects (one per ``fit`` call).

    Args:
        model: a compiled model (any ``keras.Model``; models of this package are built first).
        batches: the training batches; their order depends only on ``(seed, epoch)``.
        epochs: the total number of epochs, counting those done before an interruption.
        backup_dir: the folder of the :class:`ResumableBackup` (created when missing).
        save_freq: ``"epoch"`` or a number of batches between backups (see :class:`ResumableBackup`).
        callbacks: more Keras callbacks for ``fit``.
        verbose: passed to ``fit``.
        validation_data: passed to ``fit``.

    Returns:
        A list of ``keras.callbacks.History``, one per ``fit`` call: none when the backup already covers
        ``epochs``, two when an interrupted epoch is finished before the remaining epochs run.

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.batching import EpochShuffledBatches, seq2seq_batches
        >>> from vanilla_transformer.data_collators import Seq2SeqCollator
        >>> from vanilla_transformer.training import fit_resumable
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> model.compile(optimizer="adam", jit_compile=False, run_eagerly=True)  # eager: starts fast
        >>> collator = Seq2SeqCollator(pad_token_id=0, decoder_start_token_id=1, vocab_size=20)
        >>> sources, targets = [[3, 4, 5], [6, 7], [8, 9], [10]], [[5, 4, 2], [7, 2], [9, 2], [10, 2]]
        >>> batches = EpochShuffledBatches(seq2seq_batches(sources, targets, collator, batch_size=2), seed=0)
        >>> len(batches)
        2
        >>> backup_dir = tempfile.mkdtemp()
        >>> histories = fit_resumable(model, batches, epochs=1, backup_dir=backup_dir, verbose=0)
        >>> len(histories), sorted(histories[0].history)
        (1, ['accuracy', 'loss'])
        >>> fit_resumable(model, batches, epochs=1, backup_dir=backup_dir, verbose=0)  # started again: done
        Resuming from the backup in ...: epoch 2, after 0 of its 2 batches
        []
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
