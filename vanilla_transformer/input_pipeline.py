"""Training inputs on TensorFlow read without tf.data's autotuning thread.

``tf.data`` autotunes a pipeline from a background thread that wakes on a timer whose period doubles up to a
minute. Keras makes a new iterator over the training data every epoch (and over the validation data at every
evaluation), and deleting the old iterator waits for that thread's current period to end, every thread idle
meanwhile. How much time a run loses depends on where the timer stands when an epoch ends, so identical fresh
processes would train at different speeds (measurements: docs/benchmarks.md, "Every fresh process at the same
speed").

Our pipelines prefetch a fixed number of batches and need no tuning, so they switch autotuning off
(:func:`without_autotune`), and every model of this package does the same for what ``fit`` / ``evaluate`` are
given on TensorFlow (:class:`AutotuneOffInputs`): arrays, ``tf.data.Dataset`` s, ``PyDataset`` s and generators
go through Keras' own data adapter, and only the ``tf.data.Dataset`` it reads from has
``options.autotune.enabled = False``. Batches, their order and shuffling are Keras' own.
"""

from __future__ import annotations

import inspect

import keras

from . import compat


def without_autotune(dataset):
    """``dataset`` with ``tf.data`` autotuning off (no background tuning thread, so no stall at its deletion).

    Args:
        dataset: a ``tf.data.Dataset``.

    Returns:
        The same elements, with ``options().autotune.enabled`` False.

    Example:
        >>> import tensorflow as tf
        >>> from vanilla_transformer.input_pipeline import without_autotune
        >>> dataset = without_autotune(tf.data.Dataset.range(4).batch(2).prefetch(2))
        >>> dataset.options().autotune.enabled, [batch.tolist() for batch in dataset.as_numpy_iterator()]
        (False, [[0, 1], [2, 3]])
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class AutotuneOffInputs:
    """Mixin: on TensorFlow, ``fit`` and ``evaluate`` read their data with ``tf.data`` autotuning off.

    Put it before ``keras.Model`` in the bases; every model class of this package inherits it. The arguments
    mean what they mean in Keras (``validation_split`` included); on JAX and PyTorch nothing changes.

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer import TransformerConfig, TransformerForSequenceClassification
        >>> from vanilla_transformer.input_pipeline import AutotuneOffInputs
        >>> config = TransformerConfig(**example_sizes, architecture="encoder", num_labels=2)
        >>> model = TransformerForSequenceClassification(config)
        >>> isinstance(model, AutotuneOffInputs)
        True
        >>> model.compile()
        >>> inputs = {"input_ids": np.ones((8, 4), "int32")}
        >>> history = model.fit(inputs, np.zeros(8, "int32"), batch_size=4, validation_split=0.5, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'loss', 'val_accuracy', 'val_loss']
    """

    def fit(self, *args, **kwargs):
        if keras.backend.backend() != "tensorflow":
            return super().fit(*args, **kwargs)
        arguments = _bound(keras.Model.fit, self, args, kwargs)
        x, y, weights = arguments["x"], arguments["y"], arguments["sample_weight"]
        if arguments["validation_split"] and arguments["validation_data"] is None:
            (x, y, weights), arguments["validation_data"] = compat.train_validation_split(
                (x, y, weights), arguments["validation_split"])
            arguments["validation_split"] = 0.0
        arguments["x"] = _autotune_off_adapter(
            x, y, weights, arguments["batch_size"], arguments["steps_per_epoch"], arguments["shuffle"],
            arguments["class_weight"])
        if arguments["validation_data"] is not None:
            val_x, val_y, val_weights = keras.utils.unpack_x_y_sample_weight(arguments["validation_data"])
            batch_size = arguments["validation_batch_size"] or arguments["batch_size"]
            arguments["validation_data"] = (_autotune_off_adapter(
                val_x, val_y, val_weights, batch_size, arguments["validation_steps"], False, None),)
        arguments.update(y=None, sample_weight=None, class_weight=None)
        return super().fit(**arguments)

    def evaluate(self, *args, **kwargs):
        if keras.backend.backend() != "tensorflow" or kwargs.get("_use_cached_eval_dataset"):
            return super().evaluate(*args, **kwargs)  # fit's own evaluation reuses fit's adapter
        arguments = _bound(keras.Model.evaluate, self, args, kwargs)
        arguments["x"] = _autotune_off_adapter(arguments["x"], arguments["y"], arguments["sample_weight"],
                                               arguments["batch_size"], arguments["steps"], False, None)
        arguments.update(y=None, sample_weight=None)
        return super().evaluate(**{**arguments.pop("kwargs", {}), **arguments})


def _bound(method, model, args, kwargs) -> dict:
    """``method``'s arguments by name, defaults filled in, ``self`` left out."""
    bound = inspect.signature(method).bind(model, *args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop("self")
    return arguments


def _autotune_off_adapter(x, y, sample_weight, batch_size, steps, shuffle, class_weight):
    """Keras' data adapter for these inputs, its ``tf.data.Dataset`` read with autotuning off."""
    adapter = compat.keras_data_adapter(x, y, sample_weight, batch_size, steps, shuffle, class_weight)
    return compat.adapter_with_tf_dataset(adapter, without_autotune)
