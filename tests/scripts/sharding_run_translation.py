"""examples/run_translation.py on JAX with two CPU devices: once as it chooses (auto: DataParallel), once on one.

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/scripts/sharding_run_translation.py DATA_DIR OUTPUT_DIR [flags for both runs]

Trains on DATA_DIR/train.{en,de} and scores DATA_DIR/val.{en,de}, writing OUTPUT_DIR/auto and OUTPUT_DIR/none;
prints one JSON line with both runs' results.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "run_translation.py"


def main(data_dir, output_dir, flags):
    spec = importlib.util.spec_from_file_location("run_translation", SCRIPT)
    run_translation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_translation)
    results = {}
    for distribution in ("auto", "none"):
        results[distribution] = run_translation.main([
            "--train_file", f"{data_dir}/train", "--validation_file", f"{data_dir}/val",
            "--output_dir", f"{output_dir}/{distribution}", "--distribution", distribution, *flags])
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
