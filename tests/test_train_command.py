"""``vanilla-transformer train`` (the embedded number-words job) on JAX, in a reduced form that takes seconds.

The full job (12,000 pairs, d_model 128, 2+2 layers, 12 epochs, seed 0) reaches 97.6% held-out exact match on
JAX (488/500, 141 s on 2 shared cores) against 97.4% (487/500) on TensorFlow and 98.4% (492/500) on PyTorch
(500 s, eager, one thread). This reduced run (3,000 pairs, d_model 64, one layer each side, 6 epochs) reached
83.5% (167/200) on JAX. It runs in the JAX pass of CI (marker ``backends``) and is skipped on the others.
"""

import re

import keras
import pytest

from vanilla_transformer.cli import main

pytestmark = [pytest.mark.slow,
              pytest.mark.backends,
              pytest.mark.skipif(keras.backend.backend() != "jax", reason="the train command's JAX check")]


def test_the_train_command_learns_number_words_on_jax(tmp_path, capsys):
    status = main(["train", "--output-dir", str(tmp_path / "model"), "--num-train", "3000", "--num-test", "200",
                   "--epochs", "6", "--d-model", "64", "--layers", "1"])
    out = capsys.readouterr().out
    assert status == 0, out  # 0: the model reloaded with from_pretrained translates identically
    assert "translations identical = True" in out
    match = re.search(r"held-out exact match: [\d.]+% \((\d+)/200\)", out)
    assert match, out
    assert int(match.group(1)) >= 140, out  # 70%: measured 167/200; an untrained model gets none right
