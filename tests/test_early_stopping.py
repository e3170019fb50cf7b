"""--early_stopping_patience in run_translation.py, run_clm.py, run_mlm.py and ``vanilla-transformer train``
(run_classification.py: tests/test_lora_scripts.py): the run stops once its validation metric has not improved
for that many epochs, the best epoch's weights are the ones kept, and results.json records it.

The metric is scripted (a fixed sequence per epoch, in place of the one the script computes, which other tests
check) while the weights train for real, so the stop epoch is known and the restored weights differ from the
last epoch's.
"""

import importlib
import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

# patience 2: best at epoch 2, epochs 3 and 4 do not beat it, the run stops after epoch 4 of 6
LOSSES = [3.0, 2.0, 2.5, 2.2, 1.0, 0.5]
EXPECTED = {"patience": 2, "epochs_run": 4, "best_epoch": 2, "stopped_early": True}


def spy_on_stopping(monkeypatch, values=None):
    """Every ``keras.callbacks.EarlyStopping`` a script makes from now on records the weights at each epoch end
    and, with ``values``, sees ``values[epoch]`` as its monitor (History, after it, records the same)."""
    made = []

    class Spy(keras.callbacks.EarlyStopping):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.epoch_weights = []
            made.append(self)

        def on_epoch_end(self, epoch, logs=None):
            if values is not None:
                logs[self.monitor] = values[epoch]
            self.epoch_weights.append(self.model.get_weights())
            super().on_epoch_end(epoch, logs)

    monkeypatch.setattr(keras.callbacks, "EarlyStopping", Spy)
    return made


def assert_best_weights_kept(spy, best_epoch):
    kept = spy.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(kept, spy.epoch_weights[best_epoch - 1]))
    assert not all(np.array_equal(a, b) for a, b in zip(kept, spy.epoch_weights[-1]))  # the last epoch trained on


@pytest.fixture()
def text_files(tmp_path):
    rng = np.random.default_rng(0)
    words = "one two three four five six seven eight nine ten".split()
    lines = [" ".join(rng.choice(words, size=int(rng.integers(3, 8)))) for _ in range(40)]
    (tmp_path / "train.txt").write_text("\n".join(lines[:32]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(lines[32:]) + "\n")
    return tmp_path


@pytest.mark.parametrize("script, preset", [("run_clm", "gpt"), ("run_mlm", "bert-base")])
def test_language_model_scripts_stop_on_the_validation_loss(script, preset, text_files, tmp_path, monkeypatch):
    spies = spy_on_stopping(monkeypatch, LOSSES)
    out = tmp_path / "out"
    results = importlib.import_module(script).main([
        "--model_name_or_path", preset, "--train_file", str(text_files / "train.txt"),
        "--validation_file", str(text_files / "val.txt"), "--output_dir", str(out), "--d_model", "16",
        "--num_layers", "1", "--num_heads", "2", "--d_ff", "32", "--vocab_size", "40", "--max_seq_length", "12",
        "--num_train_epochs", "6", "--per_device_train_batch_size", "8", "--learning_rate", "1e-2",
        "--no-jit_compile", "--early_stopping_patience", "2"])
    record = {"monitor": "val_loss", "best_value": 2.0, **EXPECTED}
    assert results["early_stopping"] == record
    assert json.loads((out / "all_results.json").read_text())["early_stopping"] == record
    assert len(results["epoch_seconds"]) == 4
    assert_best_weights_kept(spies[0], best_epoch=2)


@pytest.mark.slow  # 30 s: trains, translates, saves and reloads
def test_the_train_command_stops_on_the_held_out_loss(tmp_path, monkeypatch, capsys):
    from vanilla_transformer.cli import main

    spies = spy_on_stopping(monkeypatch, LOSSES)
    out = tmp_path / "model"
    status = main(["train", "--output-dir", str(out), "--num-train", "200", "--num-test", "8", "--epochs", "6",
                   "--d-model", "16", "--layers", "1", "--early-stopping-patience", "2"])
    assert status == 0, capsys.readouterr().out  # 0: the saved model reloads and translates the same
    record = {"monitor": "val_loss", "best_value": 2.0, **EXPECTED}
    assert json.loads((out / "results.json").read_text())["early_stopping"] == record
    assert_best_weights_kept(spies[0], best_epoch=2)


@pytest.mark.slow  # 30 s: the whole script, with its per-epoch files and final evaluation
def test_run_translation_stops_on_the_validation_bleu(write_number_words, tmp_path, monkeypatch):
    run_translation = importlib.import_module("run_translation")
    training = sys.modules["translation.training"]
    bleu = iter([10.0, 30.0, 20.0, 25.0, 5.0, 40.0])  # best at epoch 2, no better in 3 and 4: stop after 4
    monkeypatch.setattr(training, "evaluate_bleu", lambda *args, **kwargs: {"bleu": next(bleu), "chrf": 0.0})
    spies = spy_on_stopping(monkeypatch)
    (tmp_path / "pairs").mkdir()
    data = write_number_words(tmp_path / "pairs", num_train=48, num_val=4, seed=1)
    out = tmp_path / "out"
    results = run_translation.main([
        "--train_file", str(data / "train"), "--validation_file", str(data / "val"), "--output_dir", str(out),
        "--d_model", "16", "--num_heads", "2", "--d_ff", "32", "--num_layers", "1", "--vocab_size", "80",
        "--num_train_epochs", "6", "--per_device_train_batch_size", "16", "--warmup_steps", "2",
        "--learning_rate", "1e-2", "--num_beams", "1", "--max_target_length", "8", "--verbose", "0",
        "--early_stopping_patience", "2"])
    record = {"monitor": "val_bleu", "best_value": 30.0, **EXPECTED}
    assert results["early_stopping"] == record
    assert json.loads((out / "results.json").read_text())["early_stopping"] == record
    assert_best_weights_kept(spies[0], best_epoch=2)
