"""Learning rates and optimizers: the paper's schedule and Adam settings (section 5.3), and the linear
warm-up / decay used to (pre)train and fine-tune the BERT-style and GPT-style variants.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import keras
from keras import ops

#: The paper's Adam settings (section 5.3): beta_2 0.98 rather than Keras' 0.999, epsilon 1e-9 rather than 1e-7;
#: ``keras.optimizers.Adam(learning_rate, **PAPER_ADAM)``.
PAPER_ADAM = MappingProxyType({"beta_1": 0.9, "beta_2": 0.98, "epsilon": 1e-9})


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)  (equation 3).

    ``step`` counts from 1 (Keras' optimizer iterations count from 0). ``scale`` = 1 is the paper.
    The rate rises linearly for ``warmup_steps`` steps, peaks there, then decays as step^-0.5.

    Args:
        d_model: model width (512 in the base model).
        warmup_steps: warm-up length (4000 in the paper).
        scale: a constant factor on the whole schedule.

    Example:
        >>> from vanilla_transformer.optimization import TransformerSchedule
        >>> schedule = TransformerSchedule(d_model=16, warmup_steps=4)
        >>> [round(float(schedule(i)), 5) for i in (0, 3, 15)]  # steps 1, 4 (the peak) and 16
        [0.03125, 0.125, 0.0625]
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



def transformer_optimizer(d_model: int, warmup_steps: int = 4000, scale: float = 1.0) -> keras.optimizers.Adam:
    """The paper's optimizer (section 5.3): Adam with :data:`PAPER_ADAM` (beta_1 0.9, beta_2 0.98, epsilon 1e-9)
    on equation 3.

    Args:
        d_model, warmup_steps, scale: as for :class:`TransformerSchedule`.

    Returns:
        A ``keras.optimizers.Adam`` whose learning rate is the schedule.

    Example:
        >>> from vanilla_transformer.optimization import transformer_optimizer
        >>> optimizer = transformer_optimizer(d_model=512)
        >>> f"{float(optimizer.learning_rate):.4g}"  # step 1 of 4000 warm-up steps: 512^-0.5 * 1 * 4000^-1.5
        '1.747e-07'
        >>> optimizer.beta_2, optimizer.epsilon
        (0.98, 1e-09)
    """
    return keras.optimizers.Adam(learning_rate=TransformerSchedule(d_model, warmup_steps=warmup_steps, scale=scale),
                                 **PAPER_ADAM)


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class LinearWarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``learning_rate * step / warmup_steps`` during warmup, then constant, or (with ``decay_steps``, the
    total number of steps) linear decay to 0 at ``decay_steps`` as transformers'
    ``get_linear_schedule_with_warmup``. ``step`` counts from 1.

    Args:
        learning_rate: the peak rate.
        warmup_steps: steps of linear warm-up from 0 (0 for none).
        decay_steps: total steps, where the rate reaches 0; None keeps it constant after warm-up.

    Example:
        >>> from vanilla_transformer.optimization import LinearWarmupSchedule
        >>> schedule = LinearWarmupSchedule(1.0, warmup_steps=2, decay_steps=6)
        >>> [round(float(schedule(i)), 4) for i in range(7)]  # optimizer iterations 0..6 are steps 1..7
        [0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """

    def __init__(self, learning_rate: float, warmup_steps: int = 0, decay_steps: int | None = None):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = None if decay_steps is None else int(decay_steps)
        self.decay_end = None  # a variable of the optimizer once make_decay_end_movable has run

    def make_decay_end_movable(self, optimizer: keras.optimizers.Optimizer):
        """Hold the step where the decay ends in a new variable of ``optimizer`` (starting at ``decay_steps``):
        a callback can then move the end during training without recompiling, and the optimizer's state
        (its backups, JAX's training state) carries it. Call before training starts.

        Returns:
            The variable: ``assign`` it a step count (see
            :class:`~vanilla_transformer.time_budget.TimeBudget`).

        ``get_config`` then records the end where it is now, so a schedule rebuilt from the config decays as
        this one does (with a fixed end). The optimizer's extra variable makes Keras skip the optimizer's state,
        with a warning, when a ``.keras`` file of the model loads: resume training from
        :class:`~vanilla_transformer.training.ResumableBackup`, which carries it.

        Example:
            >>> import keras
            >>> from vanilla_transformer.optimization import LinearWarmupSchedule
            >>> schedule = LinearWarmupSchedule(1.0, warmup_steps=2, decay_steps=6)
            >>> end = schedule.make_decay_end_movable(keras.optimizers.Adam(schedule))
            >>> _ = end.assign(4.0)  # end the decay two steps earlier
            >>> [round(float(schedule(i)), 4) for i in range(5)]
            [0.5, 1.0, 0.5, 0.0, 0.0]
        """
        if not self.decay_steps:
            raise ValueError("only a decaying schedule has an end to move: give decay_steps")
        self.decay_end = optimizer.add_variable((), initializer=keras.initializers.Constant(self.decay_steps),
                                                dtype="float32", name="decay_end")
        return self.decay_end

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        rate = ops.convert_to_tensor(self.learning_rate, "float32")
        if self.warmup_steps > 0:
            rate = rate * ops.minimum(1.0, step / float(self.warmup_steps))
        if self.decay_steps:
            end = float(self.decay_steps) if self.decay_end is None else ops.cast(self.decay_end, "float32")
            span = ops.maximum(1.0, end - float(self.warmup_steps))
            rate = rate * ops.clip((end - step) / span, 0.0, 1.0)
        return rate

    def get_config(self):
        decay_steps = self.decay_steps
        if self.decay_end is not None:  # moved by a callback: the end in force now
            decay_steps = int(round(float(ops.convert_to_numpy(self.decay_end))))
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps, "decay_steps": decay_steps}


def language_model_optimizer(learning_rate: Any = 5e-4, warmup_steps: int = 0, decay_steps: int | None = None,
                             weight_decay: float | None = None, clipnorm: float | None = 1.0):
    """Adam(W) for (pre)training the encoder-only and decoder-only variants: beta_2 0.999, epsilon 1e-6, the
    :class:`LinearWarmupSchedule` (or ``learning_rate`` itself when it is already a schedule), gradient norm
    clipped to 1. ``weight_decay`` switches to AdamW (BERT used 0.01).

    Args:
        learning_rate: peak rate (float) or a ``LearningRateSchedule`` used as is.
        warmup_steps, decay_steps: as for :class:`LinearWarmupSchedule`; both 0/None keep a float rate constant.
        weight_decay: decoupled weight decay; None or 0 for plain Adam.
        clipnorm: per-variable gradient norm clip; None for none.

    Returns:
        ``keras.optimizers.Adam`` or ``keras.optimizers.AdamW``.

    Example:
        >>> from vanilla_transformer.optimization import language_model_optimizer
        >>> optimizer = language_model_optimizer(1e-3, warmup_steps=10, weight_decay=0.01)
        >>> type(optimizer).__name__, optimizer.weight_decay, optimizer.clipnorm
        ('AdamW', 0.01, 1.0)
        >>> f"{float(optimizer.learning_rate):.3g}"  # step 1 of 10 warm-up steps
        '0.0001'
        >>> type(language_model_optimizer(5e-4)).__name__
        'Adam'
    """
    if isinstance(learning_rate, (int, float)) and (warmup_steps or decay_steps):
        learning_rate = LinearWarmupSchedule(learning_rate, warmup_steps, decay_steps)
    kwargs = dict(learning_rate=learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-6, clipnorm=clipnorm)
    if weight_decay:
        return keras.optimizers.AdamW(weight_decay=weight_decay, **kwargs)
    return keras.optimizers.Adam(**kwargs)


