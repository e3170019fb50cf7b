"""Data parallelism: MirroredStrategy over two logical CPUs ends with the weights of one device trained on the
same global batches. (MultiWorkerMirroredStrategy fails inside Keras 3.15's TensorFlow trainer on dict inputs;
see the README's note.)"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).parent / "scripts" / "distributed_fit.py"


def _run(*args, env=None):
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _finish(process):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dist")
    _finish(_run("single", directory / "single.npz"))
    return directory


def _assert_same_weights(a, b):
    a, b = np.load(a), np.load(b)
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)  # summation order differs


def test_mirrored_strategy_on_two_logical_cpus(single):
    out = _finish(_run("mirrored", single / "mirrored.npz"))
    assert "replicas 2" in out
    _assert_same_weights(single / "single.npz", single / "mirrored.npz")
