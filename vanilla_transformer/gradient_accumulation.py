"""Gradient accumulation that counts optimizer updates: k micro-batches of b rows make the update of one batch
of k * b rows.

Keras' optimizers take ``gradient_accumulation_steps=k`` (gradients summed over k calls, their mean applied on
the k-th), but their iteration counter still advances on every micro-batch, and both the learning-rate schedule
and Adam's bias correction read it: the k-th micro-batch would be scheduled as step k and bias-corrected as
step k, where one large batch is step 1. :func:`accumulate_gradients` returns the optimizer with Keras' option
set and both counting updates: ``optimizer.iterations`` is the number of updates made (micro-batches // k) and
the schedule is read at that count (:class:`PerUpdateSchedule`).

On TensorFlow an embedding's gradient is an ``IndexedSlices`` (one row per looked-up token) in a plain step but
dense once accumulated, and Keras' Adam does not treat the two alike (:class:`DenseSparseGradients`): the
optimizer :func:`accumulate_gradients` returns sums the rows first, in every step, so both paths (and every
backend) make the update of PyTorch's dense Adam.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class PerUpdateSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule`` read at the optimizer update, not the micro-batch: ``rate(step) = schedule(step // steps)``.

    Args:
        schedule: a ``LearningRateSchedule`` in optimizer updates.
        steps: micro-batches per update.

    Example:
        >>> from vanilla_transformer.gradient_accumulation import PerUpdateSchedule
        >>> from vanilla_transformer.optimization import LinearWarmupSchedule
        >>> schedule = PerUpdateSchedule(LinearWarmupSchedule(1.0, warmup_steps=4), steps=2)
        >>> [round(float(schedule(i)), 2) for i in range(6)]  # micro-batches 0..5: updates 0, 0, 1, 1, 2, 2
        [0.25, 0.25, 0.5, 0.5, 0.75, 0.75]
    """

    def __init__(self, schedule, steps: int):
        self.schedule = schedule
        self.steps = int(steps)

    def __call__(self, step):
        return self.schedule(ops.floor_divide(step, self.steps))

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule), "steps": self.steps}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["steps"])


class UpdateCountingIterations:
    """Mixin for a Keras optimizer: ``iterations`` counts updates (what Adam's bias correction reads), not the
    micro-batches that Keras' own counter (``_iterations``) counts under gradient accumulation.

    Example:
        >>> import keras
        >>> from vanilla_transformer.gradient_accumulation import accumulate_gradients
        >>> variable = keras.Variable([0.0])
        >>> optimizer = accumulate_gradients(keras.optimizers.SGD(0.1), 2)
        >>> for _ in range(4):  # four micro-batches
        ...     optimizer.apply([keras.ops.ones((1,))], [variable])
        >>> int(optimizer.iterations), float(variable.numpy()[0])  # two updates of the mean gradient
        (2, -0.2)
    """

    @property
    def iterations(self):
        steps = self.gradient_accumulation_steps
        return ops.floor_divide(self._iterations, steps) if steps else self._iterations


class DenseSparseGradients:
    """Mixin for a Keras optimizer: a sparse gradient (TensorFlow's ``IndexedSlices``, what an embedding lookup
    gives) is made dense, its repeated rows summed, before the update.

    Keras' Adam on TensorFlow squares an ``IndexedSlices`` slice by slice before its subtraction densifies it
    (summing the slices), so a token looked up n times in a batch gets the sum of n squared slices in its second
    moment where the dense gradient (JAX, PyTorch, PyTorch's own Adam, or an accumulated gradient, which Keras
    sums densely) gives the square of their sum; ``clipnorm`` likewise measures the unsummed slices. The dense
    gradient costs one table-sized tensor, which Adam's update makes anyway.

    Example:
        >>> import keras, numpy as np
        >>> from vanilla_transformer.gradient_accumulation import accumulate_gradients
        >>> table = keras.Variable(np.zeros((4, 2), "float32"))
        >>> optimizer = accumulate_gradients(keras.optimizers.Adam(0.1), 1)
        >>> optimizer.apply([keras.ops.ones((4, 2))], [table])  # a dense gradient passes unchanged
        >>> table.numpy()[0].round(3).tolist()
        [-0.1, -0.1]
    """

    def apply(self, grads, trainable_variables=None):
        return super().apply([dense_gradient(gradient) for gradient in grads], trainable_variables)


def dense_gradient(gradient):
    """``gradient`` as a dense tensor when it is a TensorFlow ``IndexedSlices`` (repeated rows summed); any other
    gradient (or None) unchanged.

    Example:
        >>> import keras
        >>> from vanilla_transformer.gradient_accumulation import dense_gradient
        >>> dense_gradient(None) is None
        True
        >>> gradient = keras.ops.ones((2, 3))
        >>> dense_gradient(gradient) is gradient
        True
    """
    if gradient is None or keras.backend.backend() != "tensorflow":
        return gradient
    import tensorflow as tf

    return tf.convert_to_tensor(gradient) if isinstance(gradient, tf.IndexedSlices) else gradient


_CLASSES: dict[type, type] = {}


def accumulate_gradients(optimizer, steps: int):
    """``optimizer`` rebuilt to accumulate gradients over ``steps`` micro-batches, counting updates.

    Args:
        optimizer: a Keras optimizer, not yet built (no training step taken).
        steps: micro-batches per update; 1 for none (the optimizer still sums sparse gradients' rows).

    Returns:
        An optimizer of the same class (a subclass with :class:`UpdateCountingIterations` and
        :class:`DenseSparseGradients`) and configuration; for ``steps`` > 1 with
        ``gradient_accumulation_steps=steps`` and its schedule wrapped in :class:`PerUpdateSchedule`.

    Example:
        >>> import keras
        >>> from vanilla_transformer.gradient_accumulation import accumulate_gradients
        >>> optimizer = accumulate_gradients(keras.optimizers.Adam(1e-3, clipnorm=1.0), 4)
        >>> isinstance(optimizer, keras.optimizers.Adam), optimizer.gradient_accumulation_steps, optimizer.clipnorm
        (True, 4, 1.0)
        >>> accumulate_gradients(keras.optimizers.SGD(), 0)
        Traceback (most recent call last):
        ...
        ValueError: gradient_accumulation_steps=0 must be a positive integer
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"gradient_accumulation_steps={steps!r} must be a positive integer")
    if optimizer.built:
        raise ValueError("gradient_accumulation_steps: the optimizer has already taken steps; pass a new one")
    base = type(optimizer)
    if base not in _CLASSES:
        _CLASSES[base] = type(f"Accumulating{base.__name__}", (UpdateCountingIterations, DenseSparseGradients, base),
                              {})
    config = optimizer.get_config()
    config.pop("learning_rate")
    rate = optimizer._learning_rate  # the schedule itself (Keras keeps it there)
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        rate = PerUpdateSchedule(rate, steps) if steps > 1 else rate
    else:
        rate = float(ops.convert_to_numpy(rate))
    config["gradient_accumulation_steps"] = steps if steps > 1 else None
    return _CLASSES[base](learning_rate=rate, **config)
