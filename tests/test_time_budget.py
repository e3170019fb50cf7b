"""A wall-time budget: training stops on the last step that fits it, and the linear decay's end (read inside the
compiled training step) moves to that step, on machines 1x, 3x and 10x slower than the schedule assumed."""

import keras
import numpy as np
import pytest

from vanilla_transformer.optimization import LinearWarmupSchedule
from vanilla_transformer.time_budget import TimeBudget
from vanilla_transformer.training import ResumableBackup


def regression(steps_per_epoch=5, batch_size=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps_per_epoch * batch_size, 3)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5]], "float32")


def dense_model(schedule, jit_compile="auto"):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse", jit_compile=jit_compile)
    return model


class StepClock:
    """A fake ``clock`` for TimeBudget: it advances by the next step's seconds at every step's end."""

    def __init__(self, step_seconds):
        self.now, self.step_seconds = 1000.0, step_seconds

    def __call__(self):
        return self.now

    def callback(self):
        def advance(batch, logs):
            self.now += self.step_seconds(batch)
        return keras.callbacks.LambdaCallback(on_train_batch_end=advance)


@pytest.mark.backends
def test_moved_decay_end_reaches_the_compiled_training_step():
    schedule = LinearWarmupSchedule(0.1, warmup_steps=0, decay_steps=1000)
    model = dense_model(schedule)
    end = schedule.make_decay_end_movable(model.optimizer)
    x, y = regression()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    moving = [w.copy() for w in model.get_weights()]
    assert not all(np.array_equal(a, b) for a, b in zip(before, moving))  # a rate above 0 still moves weights
    end.assign(float(int(model.optimizer.iterations.numpy())))  # the decay ends now: rate 0 from here
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    assert all(np.array_equal(a, b) for a, b in zip(moving, model.get_weights()))
    assert float(model.optimizer.learning_rate) == 0.0


@pytest.mark.parametrize("slower", [1, 3, 10])
def test_any_machine_uses_the_budget_and_ends_annealed(slower, capsys):
    """The schedule assumes 1 s a step (570 steps after 30 s of compilation fill a 10-minute budget); the machine
    takes ``slower`` times that a step, +-20%, and 10 s of evaluation after every epoch (outside the budget)."""
    rng = np.random.default_rng(slower)
    budget_seconds, planned_steps, rates = 600.0, 570, []
    clock = StepClock(lambda batch: 30.0 if not rates else slower * rng.uniform(0.8, 1.2))
    schedule = LinearWarmupSchedule(0.1, warmup_steps=4, decay_steps=planned_steps)
    model = dense_model(schedule)
    schedule.make_decay_end_movable(model.optimizer)
    budget = TimeBudget(budget_seconds, schedule, steps_per_epoch=5, clock=clock)
    # callbacks in order: the clock advances, the budget reads it, the rate of the step just run is recorded
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: rates.append(float(schedule(model.optimizer.iterations - 1))),
        on_epoch_end=lambda epoch, logs: setattr(clock, "now", clock.now + 10.0))
    x, y = regression()
    model.fit(x, y, batch_size=4, epochs=planned_steps // 5, verbose=0, shuffle=False,
              callbacks=[clock.callback(), budget, record])
    assert budget.train_seconds <= budget_seconds
    assert budget.train_seconds >= 0.98 * budget_seconds or len(rates) == planned_steps, budget.train_seconds
    assert rates[-1] <= 0.01 * 0.1  # the last step ran at the decay's floor
    assert 0.035 < rates[len(rates) // 2] < 0.065  # halfway, about half the peak: one decay over the whole run
    assert all(later <= earlier + 1e-3 for earlier, later in zip(rates[4:], rates[5:]))  # no jump back up
    if slower > 1:
        assert "stopping after step" in capsys.readouterr().out


def test_time_budget_never_moves_the_end_past_the_schedule():
    clock = StepClock(lambda batch: 1.0)
    schedule = LinearWarmupSchedule(0.1, warmup_steps=0, decay_steps=10)
    model = dense_model(schedule)
    end = schedule.make_decay_end_movable(model.optimizer)
    x, y = regression()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0,
              callbacks=[clock.callback(), TimeBudget(3600.0, schedule, steps_per_epoch=5, clock=clock)])
    assert float(end.numpy()) == 10.0


def test_a_fixed_end_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="make_decay_end_movable"):
        TimeBudget(60.0, LinearWarmupSchedule(0.1, decay_steps=10))
    with pytest.raises(ValueError, match="give decay_steps"):
        LinearWarmupSchedule(0.1).make_decay_end_movable(keras.optimizers.SGD())


def test_the_backup_carries_the_moved_end(tmp_path):
    schedule = LinearWarmupSchedule(0.1, warmup_steps=0, decay_steps=50)
    model = dense_model(schedule)
    end = schedule.make_decay_end_movable(model.optimizer)
    x, y = regression()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    end.assign(30.0)
    backup = ResumableBackup(tmp_path)
    backup.set_model(model)
    backup.save(epoch=1, batches_done=0)

    fresh = LinearWarmupSchedule(0.1, warmup_steps=0, decay_steps=50)
    resumed = dense_model(fresh)
    fresh_end = fresh.make_decay_end_movable(resumed.optimizer)
    assert ResumableBackup(tmp_path).restore(resumed) == (1, 0)
    assert float(fresh_end.numpy()) == 30.0


def test_the_budget_runs_on_across_fit_calls():
    # fit_resumable finishes an interrupted epoch in one fit and runs the rest in another: one budget for both
    clock = StepClock(lambda batch: 2.0)
    model = dense_model(LinearWarmupSchedule(0.1, decay_steps=50))
    budget = TimeBudget(25.0, steps_per_epoch=5, timing_warmup_steps=0, clock=clock)
    x, y = regression()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[clock.callback(), budget])
    model.fit(x, y, batch_size=4, epochs=5, initial_epoch=1, verbose=0, callbacks=[clock.callback(), budget])
    assert int(model.optimizer.iterations.numpy()) == 12 and budget.train_seconds == 24.0


def test_seconds_before_counts_and_a_bad_budget_is_refused():
    clock = StepClock(lambda batch: 1.0)
    model = dense_model(LinearWarmupSchedule(0.1, decay_steps=50))
    budget = TimeBudget(20.0, seconds_before=17.0, timing_warmup_steps=0, clock=clock)
    x, y = regression()
    model.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=[clock.callback(), budget])
    assert int(model.optimizer.iterations.numpy()) == 3
    with pytest.raises(ValueError, match="budget_seconds"):
        TimeBudget(0.0)


def test_the_config_records_the_moved_end():
    """A schedule rebuilt from the config (a .keras file, the compile config) decays where the moved one does."""
    schedule = LinearWarmupSchedule(1.0, warmup_steps=2, decay_steps=50)
    end = schedule.make_decay_end_movable(keras.optimizers.SGD(schedule))
    assert schedule.get_config()["decay_steps"] == 50
    end.assign(30.0)
    rebuilt = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert rebuilt.get_config() == {"learning_rate": 1.0, "warmup_steps": 2, "decay_steps": 30}
    steps = np.arange(40)
    np.testing.assert_allclose([float(rebuilt(i)) for i in steps], [float(schedule(i)) for i in steps], atol=1e-7)
    assert float(rebuilt(29)) == 0.0 and float(rebuilt(28)) > 0.0  # iteration i is step i + 1: 0 at step 30
