"""Across backends, from the TensorFlow session: every model class saved on TensorFlow loads on JAX and PyTorch
(and back) with the same weight names, logits within 1e-5 and the same greedy and beam-search ids; importing the
package there imports no TensorFlow; training, evaluation, prediction, decoding, saving and loading there run with
TensorFlow made unimportable (tests/scripts/backend_*.py, each in a fresh interpreter).

The backend-neutral tests themselves (marker ``backends``) run again in a JAX and a PyTorch session in CI
(.ci/run)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # end-to-end: runs with RUN_SLOW=1

SCRIPT = Path(__file__).parent / "scripts" / "backend_roundtrip.py"
OTHER_BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(module) is None,
                                                              reason=f"{module} is not installed"))
                  for name, module in (("jax", "jax"), ("torch", "torch"))]


def backend_env(backend: str) -> dict:
    """The environment of a child process on ``backend``. PyTorch gets one intra-op thread unless told otherwise:
    on 2 cores shared with other processes its OpenMP threads spin, and backend_fit.py took 228 s (5 min of CPU)
    against 14 s with one thread."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend == "torch":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_on(backend: str, *actions: str | Path) -> None:
    """Run tests/scripts/backend_roundtrip.py's ``action directory`` pairs in one child process on ``backend``."""
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, actions)], env=backend_env(backend),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def roundtrip_module():
    spec = importlib.util.spec_from_file_location("backend_roundtrip", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_same_outputs(saved, loaded, what):
    np.testing.assert_array_equal(saved["names"], loaded["names"], err_msg=what)
    assert int(saved["weights"]) == len(saved["names"]) == int(loaded["weights"]), what  # every weight named
    np.testing.assert_allclose(loaded["logits"], saved["logits"], atol=1e-5, rtol=0, err_msg=what)
    for key in ("greedy", "beam"):
        if key in saved:
            np.testing.assert_array_equal(loaded[key], saved[key], err_msg=f"{what}: {key}")


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_saved_here_loads_on_another_backend_and_back(backend, tmp_path):
    """TensorFlow saves; one child process on ``backend`` loads that and saves its own; TensorFlow loads that."""
    roundtrip = roundtrip_module()
    here, there = tmp_path / "tensorflow", tmp_path / backend
    roundtrip.main("save", str(here))
    run_on(backend, "load", here, "save", there)
    roundtrip.main("load", str(there))
    for cls in roundtrip.CONFIGS:
        name = cls.__name__
        assert_same_outputs(np.load(here / f"{name}.tensorflow.save.npz"),
                            np.load(here / f"{name}.{backend}.load.npz"), f"{name}: tensorflow -> {backend}")
        assert_same_outputs(np.load(there / f"{name}.{backend}.save.npz"),
                            np.load(there / f"{name}.tensorflow.load.npz"), f"{name}: {backend} -> tensorflow")


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_importing_the_package_on_another_backend_does_not_import_tensorflow(backend):
    code = ("import sys, vanilla_transformer, vanilla_transformer.generation, vanilla_transformer.hub; "
            "import keras; assert keras.backend.backend() == sys.argv[1], keras.backend.backend(); "
            "print(sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.')))")
    done = subprocess.run([sys.executable, "-c", code, backend], env={**os.environ, "KERAS_BACKEND": backend},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_fit_evaluate_predict_and_generate_on_another_backend(backend):
    import json

    done = subprocess.run([sys.executable, str(SCRIPT.with_name("backend_fit.py"))], env=backend_env(backend),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    assert result["last_loss"] < 0.5 * result["first_loss"], result  # label-smoothed loss: ~0.5 at the optimum
    assert result["eval_accuracy"] > 0.95 and result["predict_shape"] == [2000, 8, 12], result
    assert result["exact_match"] >= 0.9, result
    assert result["programs"]["built"] == 1, result  # three generate calls, one plan and shape
    assert result["pipeline"] == "_RegroupedSequence" and result["gpt_losses"][-1] < result["gpt_losses"][0]
    if backend == "jax":
        assert result["programs"]["traces"] == 1, result  # one jax.jit trace serves all three
