"""Learning rates and optimizers: the paper's schedule and Adam settings (section 5.3), and the linear
warm-up / decay used to (pre)train and fine-tune the BERT-style and GPT-style variants.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


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



def transformer_optimizer(d_model: int, warmup_steps: int = 4000, scale: float = 1.0) -> keras.optimizers.Adam:
    """The paper's optimizer (section 5.3): Adam(beta_1=0.9, beta_2=0.98, epsilon=1e-9) on equation 3.

    >>> optimizer = transformer_optimizer(d_model=512)
    >>> f"{float(optimizer.learning_rate):.4g}"  # step 1 of 4000 warm-up steps: 512^-0.5 * 1 * 4000^-1.5
    '1.747e-07'
    """
    return keras.optimizers.Adam(learning_rate=TransformerSchedule(d_model, warmup_steps=warmup_steps, scale=scale),
                                 beta_1=0.9, beta_2=0.98, epsilon=1e-9)


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class LinearWarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``learning_rate * step / warmup_steps`` during warmup, then constant, or (with ``decay_steps``, the
    total number of steps) linear decay to 0 at ``decay_steps`` as transformers'
    ``get_linear_schedule_with_warmup``. ``step`` counts from 1."""

    def __init__(self, learning_rate: float, warmup_steps: int = 0, decay_steps: int | None = None):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = None if decay_steps is None else int(decay_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        rate = ops.convert_to_tensor(self.learning_rate, "float32")
        if self.warmup_steps > 0:
            rate = rate * ops.minimum(1.0, step / float(self.warmup_steps))
        if self.decay_steps:
            span = float(max(1, self.decay_steps - self.warmup_steps))
            rate = rate * ops.clip((float(self.decay_steps) - step) / span, 0.0, 1.0)
        return rate

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps}


def language_model_optimizer(learning_rate: Any = 5e-4, warmup_steps: int = 0, decay_steps: int | None = None,
                             weight_decay: float | None = None, clipnorm: float | None = 1.0):
    """Adam(W) for (pre)training the encoder-only and decoder-only variants: beta_2 0.999, epsilon 1e-6, the
    :class:`LinearWarmupSchedule` (or ``learning_rate`` itself when it is already a schedule), gradient norm
    clipped to 1. ``weight_decay`` switches to AdamW (BERT used 0.01)."""
    if isinstance(learning_rate, (int, float)) and (warmup_steps or decay_steps):
        learning_rate = LinearWarmupSchedule(learning_rate, warmup_steps, decay_steps)
    kwargs = dict(learning_rate=learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-6, clipnorm=clipnorm)
    if weight_decay:
        return keras.optimizers.AdamW(weight_decay=weight_decay, **kwargs)
    return keras.optimizers.Adam(**kwargs)


