"""Distributed training on TensorFlow: loss scaling across replicas and Keras 3's multi-worker trainer.

Everything here is TensorFlow-specific and does nothing on other backends or outside multi-worker runs.
Keras 3.15 fails under ``MultiWorkerMirroredStrategy`` with several workers (tensorflow/tensorflow#72388);
:class:`MultiWorkerTrainerFixes` works around both failures through the trainer hook of
:mod:`vanilla_transformer.compat`.
"""

from __future__ import annotations

import keras
from keras import ops

from .compat import TrainerBuildHook


def scale_loss_for_replicas(loss):
    """Divide a replica's mean loss by the number of replicas in sync (TensorFlow strategies).

    Keras scales losses it reduces itself; a loss that returns its own scalar must do it, or gradients
    summed across ``tf.distribute`` replicas come out ``num_replicas`` times too large. The global loss is
    then the mean of the replicas' token means (equal to the token mean when replicas count equal tokens).

    >>> float(scale_loss_for_replicas(2.0))  # one replica: unchanged
    2.0
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss / replicas
    return loss


def in_multi_worker_mode(strategy) -> bool:
    """Whether ``strategy`` is a ``MultiWorkerMirroredStrategy`` whose cluster has more than one worker.

    Counts the ``chief`` and ``worker`` tasks of the strategy's public cluster resolver, as TensorFlow does.

    >>> in_multi_worker_mode(None)
    False
    """
    if strategy is None or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or strategy.cluster_resolver is None:
        return False
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(job, ())) for job in ("chief", "worker")) > 1


def _multi_worker_strategy(model):
    """The strategy Keras reduces ``model``'s steps with when it spans several workers; None otherwise."""
    strategy = model.distribute_strategy if keras.backend.backend() == "tensorflow" else None
    return strategy if in_multi_worker_mode(strategy) else None


class MultiWorkerTrainerFixes(TrainerBuildHook):
    """Make Keras 3's TensorFlow trainer run under ``MultiWorkerMirroredStrategy`` with several workers.

    Keras 3.15 fails there twice: before the first step it MEAN-reduces the first distributed input batch
    across workers with ``strategy.reduce``, which rejects a dict of inputs; after every step it reduces each
    scalar log with ``strategy.reduce("MEAN", value, axis=0)``, which rejects a scalar. In that mode only, this
    mixin builds from one replica's batch (the build needs shapes, not values) and gives the logs a leading
    axis of length 1, so Keras' reduction averages the replicas' values back into their shape. In every other
    mode (one device, ``MirroredStrategy``, other backends) Keras' code runs unchanged.

    Every model class of this package inherits it (before ``keras.Model``); ``logs`` are the dict of scalar
    metrics that ``train_step`` / ``test_step`` return.

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.distribution import MultiWorkerTrainerFixes
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> isinstance(model, MultiWorkerTrainerFixes)
        True
        >>> model.replaces_symbolic_build()  # one process, no multi-worker strategy: Keras' own build
        False
        >>> logs = {"loss": 1.5}
        >>> model.logs_reducible_across_workers(logs) is logs  # and logs left as they are
        True
    """

    def replaces_symbolic_build(self) -> bool:
        return _multi_worker_strategy(self) is not None

    def batch_for_symbolic_build(self, first_batch):
        """One replica's part of the first distributed batch (the build needs shapes, not values)."""
        strategy = _multi_worker_strategy(self)
        import tensorflow as tf

        return keras.tree.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v, first_batch)

    def train_step(self, *args):
        return self.logs_reducible_across_workers(super().train_step(*args))

    def test_step(self, *args):
        return self.logs_reducible_across_workers(super().test_step(*args))

    def logs_reducible_across_workers(self, logs):
        """``logs`` with a leading axis of length 1 under multi-worker training, else unchanged."""
        if _multi_worker_strategy(self) is None:
            return logs
        # Every value, not only scalars: the reduction averages axis 0, which must be the new one.
        return keras.tree.map_structure(lambda v: ops.expand_dims(v, 0), logs)


def check_same_position_on_every_worker(model, position: tuple[int, int]) -> None:
    """Raise if the workers of a multi-worker run restored different training positions (epoch, batches done).

    Each worker restores its own backup; a job killed between two workers' saves leaves them one save apart,
    and the worker with more steps to run would then wait forever in an all-reduce. Every worker must call
    this (it is a collective); outside multi-worker training it does nothing.

    Args:
        model: the model being trained (its ``distribute_strategy`` tells the mode).
        position: this worker's ``(epoch, batches_done)``, as :meth:`ResumableBackup.restore` returns it.

    Returns:
        None; raises ``RuntimeError`` listing every replica's position when they differ.

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.distribution import check_same_position_on_every_worker
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> print(check_same_position_on_every_worker(model, (1, 0)))  # a single process: nothing to compare
        None
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
