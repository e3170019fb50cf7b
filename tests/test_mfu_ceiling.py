"""benchmarks/mfu_ceiling.py splits a training step's time into its matrix products, the optimizer update and
the rest. Its products must be exactly the FLOPs bench_train.py's MFU counts, else the ceiling it prints is
not the ceiling of that MFU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_train  # noqa: E402
import mfu_ceiling  # noqa: E402


@pytest.mark.parametrize("size_name", sorted(bench_train.SIZES))
def test_products_are_the_flops_bench_train_counts(size_name):
    size = bench_train.SIZES[size_name]
    products = mfu_ceiling.step_products(size)
    flops = sum(6 * groups * m * k * n for groups, m, k, n in products)  # forward + two backward products
    assert flops == bench_train.model_flops(size)["flops_per_step"]
    d, layers = size["d_model"], size["layers"]
    # 6 weight products per encoder layer, 10 per decoder layer, the output projection, 6 attention products
    assert len(products) == layers * (6 + 2 + 10 + 4) + 1
    assert products[-1] == (1, size["batch"] * size["tgt_len"], d, size["vocab"])


@pytest.mark.slow
def test_tiny_run_splits_the_step(tmp_path):
    output = tmp_path / "ceiling.json"  # its own process: the script sets TensorFlow's thread counts first
    run = subprocess.run([sys.executable, mfu_ceiling.__file__, "--sizes", "tiny", "--steps", "2", "--matmul-n", "256",
                          "--output", str(output)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    (result,) = json.loads(output.read_text())
    assert result["size"] == "tiny"
    assert result["products_flops_per_step"] == result["model_flops_per_step"]
    for key in ("step_s", "products_s", "optimizer_s", "tensorflow_flops_per_s", "xla_flops_per_s"):
        assert result[key] > 0, key
    assert result["mfu_ceiling"] == pytest.approx(
        result["model_flops_per_step"] / result["products_s"] / result["tensorflow_flops_per_s"])
    assert result["rest_s"] == pytest.approx(result["step_s"] - result["products_s"] - result["optimizer_s"])
    printed = run.stdout
    assert "MFU ceiling" in printed and "optimizer alone" in printed
