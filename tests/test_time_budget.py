"""A wall-time budget: the linear decay's end moves to the last epoch the budget reaches, inside the compiled
training step, and training stops before the epoch that would overrun."""

import types

import keras
import numpy as np
import pytest

from vanilla_transformer import training
from vanilla_transformer.optimization import LinearWarmupSchedule
from vanilla_transformer.training import ResumableBackup, TimeBudget


def regression(steps_per_epoch=5, batch_size=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps_per_epoch * batch_size, 3)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5]], "float32")


def dense_model(schedule, jit_compile="auto"):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse", jit_compile=jit_compile)
    return model


class FakeClock:
    """``time.time`` for the callback: each call after the first is ``seconds`` later."""

    def __init__(self, seconds):
        self.now, self.seconds = 1000.0, list(seconds)

    def time(self):
        now = self.now
        if self.seconds:
            self.now += self.seconds.pop(0)
        return now


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


def test_time_budget_stops_before_the_overrun_and_ends_the_decay_there(monkeypatch, capsys):
    # 10 epochs of 5 steps planned; epochs take 10 s (the third 20 s); the budget is 55 s
    monkeypatch.setattr(training, "time", types.SimpleNamespace(time=FakeClock([10, 10, 20, 10, 10, 10]).time))
    schedule = LinearWarmupSchedule(0.1, warmup_steps=2, decay_steps=50)
    model = dense_model(schedule)
    end = schedule.make_decay_end_movable(model.optimizer)
    ends = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(float(end.numpy())))
    x, y = regression()
    history = model.fit(x, y, batch_size=4, epochs=10, verbose=0, shuffle=False,
                        callbacks=[TimeBudget(55.0, schedule, steps_per_epoch=5), record])
    # epoch 1: 10 s, 45 s left -> 5 epochs; 2: 20 s -> 5; 3: 40 s, 13.3 s a epoch -> 4; 4: 50 s -> 4, stop
    assert ends == [25.0, 25.0, 20.0, 20.0]
    assert len(history.history["loss"]) == 4
    assert int(model.optimizer.iterations.numpy()) == 20
    assert float(schedule(19)) == 0.0 and float(schedule(18)) > 0.0  # the last step ran at a rate above 0
    assert "stopping: another epoch would pass the 0.916667 min budget" in capsys.readouterr().out


def test_time_budget_never_moves_the_end_past_the_schedule(monkeypatch):
    monkeypatch.setattr(training, "time", types.SimpleNamespace(time=FakeClock([1, 1]).time))
    schedule = LinearWarmupSchedule(0.1, warmup_steps=0, decay_steps=10)
    model = dense_model(schedule)
    end = schedule.make_decay_end_movable(model.optimizer)
    x, y = regression()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[TimeBudget(3600.0, schedule, steps_per_epoch=5)])
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


def test_the_clock_runs_on_across_fit_calls(monkeypatch):
    # fit_resumable finishes an interrupted epoch in one fit and runs the rest in another: one budget for both
    monkeypatch.setattr(training, "time", types.SimpleNamespace(time=FakeClock([10, 10, 10]).time))
    model = dense_model(LinearWarmupSchedule(0.1, decay_steps=50))
    budget = TimeBudget(25.0, steps_per_epoch=5)
    x, y = regression()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[budget])
    history = model.fit(x, y, batch_size=4, epochs=5, initial_epoch=1, verbose=0, callbacks=[budget])
    assert len(history.history["loss"]) == 1  # epoch 2 ends at 20 s: a third would pass 25 s


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
