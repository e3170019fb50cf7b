"""A wall-time budget for training that every machine uses whole, ending with the learning rate annealed.

:class:`TimeBudget` counts the time of training steps only (what runs between an epoch's start and its last
step; evaluation, checkpoints and other epoch-end work are outside the budget), measures the step time once
the first steps (compilation) are past, stops on the step after which another would overrun the budget, and
moves a linear decay's end to that step as the estimate firms up, so a machine three or ten times slower than
the schedule assumed still ends at the decay's floor instead of part-way down it.
"""

from __future__ import annotations

import math
import time

import keras


class TimeBudget(keras.callbacks.Callback):
    """Stop training on the last step that fits ``budget_seconds`` and end a linear decay on that step.

    After every step: training time so far ``t`` (steps only), mean step time ``s`` since the first
    ``timing_warmup_steps`` steps, steps still affordable ``r = floor((budget_seconds - t) / s)``. With
    ``r == 0`` training stops (Keras ends the epoch there: its evaluation and checkpoint still run). With a
    ``schedule`` whose decay end is movable, the end becomes ``step + r``, never past the schedule's own
    ``decay_steps``: the rate reaches its floor on the step training stops.

    Args:
        budget_seconds: training time allowed (steps only).
        schedule: a ``LinearWarmupSchedule`` after ``make_decay_end_movable``, or None to only stop.
        steps_per_epoch: steps in one epoch (the log line gives the end in epochs too).
        seconds_before: training time already spent (a resumed run's).
        timing_warmup_steps: first steps left out of the step time (they include compilation).
        clock: the time source in seconds (default ``time.monotonic``; tests pass a fake one).

    Example:
        >>> import keras, numpy as np
        >>> from vanilla_transformer.optimization import LinearWarmupSchedule
        >>> from vanilla_transformer.time_budget import TimeBudget
        >>> schedule = LinearWarmupSchedule(1.0, warmup_steps=2, decay_steps=1000)  # planned: 1,000 steps
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
        >>> end = schedule.make_decay_end_movable(model.optimizer)
        >>> ticks = iter(range(0, 10_000, 2))  # a machine where every step takes 2 s
        >>> budget = TimeBudget(60.0, schedule, steps_per_epoch=10, timing_warmup_steps=1,
        ...                     clock=lambda: float(next(ticks)))
        >>> history = model.fit(np.zeros((400, 3)), np.zeros(400), batch_size=4, epochs=10, verbose=0,
        ...                     callbacks=[budget])
        <BLANKLINE>
        stopping after step 30: another step would pass the 1 min training budget (30 steps, 60 s); the learning rate's decay ended at step 30
        >>> int(model.optimizer.iterations.numpy()), float(end.numpy()), float(schedule(29))
        (30, 30.0, 0.0)
    """

    def __init__(self, budget_seconds: float, schedule=None, steps_per_epoch: int = 1, seconds_before: float = 0.0,
                 timing_warmup_steps: int = 10, clock=None):
        super().__init__()
        if schedule is not None and getattr(schedule, "decay_end", None) is None:
            raise ValueError("the schedule's decay end is fixed: call schedule.make_decay_end_movable(optimizer) "
                             "first, or pass schedule=None to only stop at the budget")
        if budget_seconds <= 0:
            raise ValueError(f"budget_seconds must be positive, got {budget_seconds}")
        self.budget_seconds, self.schedule = float(budget_seconds), schedule
        self.clock = clock or time.monotonic
        self.steps_per_epoch, self.timing_warmup_steps = max(1, int(steps_per_epoch)), int(timing_warmup_steps)
        self.train_seconds = float(seconds_before)
        self.steps_seen = self.timed_steps = 0  # steps since this callback started; of those, timed
        self.timed_seconds = 0.0
        self.step = self.end = None  # the optimizer's step count; where the decay ends now
        self.mark = None

    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations.numpy())
        self.end = None if self.schedule is None else int(round(float(self.schedule.decay_end.numpy())))

    def on_epoch_begin(self, epoch, logs=None):
        self.mark = self.clock()  # the time since the last step (evaluation, saving) is outside the budget

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        seconds, self.mark = now - self.mark, now
        steps = int(getattr(self.model, "steps_per_execution", 1) or 1)
        self.train_seconds += seconds
        self.step += steps
        self.steps_seen += steps
        if self.steps_seen > self.timing_warmup_steps:
            self.timed_seconds += seconds
            self.timed_steps += steps
        remaining = self.affordable_steps()
        if self.schedule is not None and remaining is not None:
            end = min(self.schedule.decay_steps, self.step + remaining)
            if end != self.end:  # a variable the compiled step reads: no retracing
                self.schedule.decay_end.assign(float(end))
                self.end = end
        if remaining == 0:
            self.model.stop_training = True
            decay = "" if self.schedule is None else f"; the learning rate's decay ended at step {self.end}"
            print(f"\nstopping after step {self.step}: another step would pass the "
                  f"{self.budget_seconds / 60:g} min training budget ({self.steps_seen} steps, "
                  f"{self.train_seconds:.0f} s){decay}")

    def affordable_steps(self) -> int | None:
        """Steps that still fit the budget at the measured step time (None before it is measured)."""
        left = self.budget_seconds - self.train_seconds
        if left <= 0:
            return 0
        if not self.timed_steps:
            return None
        return max(0, math.floor(left / (self.timed_seconds / self.timed_steps)))

    def on_epoch_end(self, epoch, logs=None):
        if self.schedule is not None and self.timed_steps and not self.model.stop_training:
            end = self.end
            print(f"\ntraining time {self.train_seconds:.0f} of {self.budget_seconds:.0f} s at "
                  f"{self.timed_seconds / self.timed_steps:.3f} s a step: the learning rate's decay ends at "
                  f"step {end} (epoch {end / self.steps_per_epoch:.2f})")
