"""Data parallelism: MirroredStrategy over two logical CPUs, and MultiWorkerMirroredStrategy over two worker
processes on 127.0.0.1, end with the weights (and the training / evaluation losses) of one device trained on the
same global batches; examples/run_translation.py runs as two workers, each writing its own folder."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # end-to-end: runs with RUN_SLOW=1


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).parent / "scripts" / "distributed_fit.py"
RUN_TRANSLATION = ROOT / "examples" / "run_translation.py"


def _run(script, *args, env=None, cwd=None, log=None):
    """Start a process; its output goes to the file ``log`` (default: a pipe) so that a chatty worker never blocks."""
    stream = open(log, "w+") if log else subprocess.PIPE
    process = subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=stream, stderr=subprocess.STDOUT,
                               text=True, cwd=cwd, env={**os.environ, **(env or {})})
    process.log = stream if log else None
    return process


def _finish(process):
    try:
        out, _ = process.communicate(timeout=600)
    finally:
        process.kill()
    if process.log is not None:
        process.log.seek(0)
        out = process.log.read()
        process.log.close()
    assert process.returncode == 0, out[-3000:]
    return out


def _two_workers(script, make_args, log_dir, **kwargs):
    """Start two processes as the workers of one cluster on 127.0.0.1 (TF_CONFIG); return their output."""
    probes = [socket.socket() for _ in range(2)]
    try:  # both probes stay bound until both ports are known, so the two differ
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        cluster = {"worker": [f"127.0.0.1:{probe.getsockname()[1]}" for probe in probes]}
    finally:
        for probe in probes:
            probe.close()
    workers = [_run(script, *make_args(index), env={"TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}})}, log=log_dir / f"worker{index}.log",
        **kwargs) for index in range(2)]
    try:
        return [_finish(worker) for worker in workers]
    finally:  # one failing worker leaves the other waiting in a collective
        for worker in workers:
            worker.kill()


def _printed(out, name):
    """The comma-separated numbers the script printed after ``name``."""
    return np.array(re.search(rf"^{name} (\S+)$", out, re.M).group(1).split(","), float)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dist")
    (directory / "single.out").write_text(_finish(_run(SCRIPT, "single", directory / "single.npz")))
    return directory


def _assert_same_weights(a, b):
    a, b = np.load(a), np.load(b)
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)  # summation order differs


def _assert_same_run(single, out, weights):
    reference = (single / "single.out").read_text()
    assert "replicas 2" in out
    assert len(_printed(out, "batch_losses")) == len(_printed(reference, "batch_losses")) == 4
    for name in ("loss", "eval_loss", "batch_losses"):
        np.testing.assert_allclose(_printed(out, name), _printed(reference, name), rtol=0, atol=1e-5, err_msg=name)
    _assert_same_weights(single / "single.npz", weights)


def test_mirrored_strategy_on_two_logical_cpus(single):
    out = _finish(_run(SCRIPT, "mirrored", single / "mirrored.npz"))
    _assert_same_run(single, out, single / "mirrored.npz")


def test_multi_worker_strategy_on_two_processes(single):
    # Each worker reads every global batch and keeps its slice; gradients are all-reduced across processes.
    outs = _two_workers(SCRIPT, lambda index: ("multi_worker", single / f"worker{index}.npz"), single)
    for index, out in enumerate(outs):
        _assert_same_run(single, out, single / f"worker{index}.npz")
        # restored backups one save apart are an error on every worker, not a hang in the next all-reduce
        assert "position mismatch: the workers restored different backups" in out and "[[1, 3], [1, 4]]" in out


def test_run_translation_as_two_workers(tmp_path, write_number_words):
    write_number_words(tmp_path, num_train=96, num_val=8, seed=3)
    argv = ["--train_file", "train", "--validation_file", "val", "--output_dir", "run", "--d_model", "32",
            "--num_heads", "4", "--d_ff", "64", "--num_layers", "1", "--vocab_size", "80", "--num_train_epochs", "1",
            "--per_device_train_batch_size", "16", "--warmup_steps", "10", "--num_beams", "1",
            "--max_target_length", "12", "--verbose", "0", "--strategy", "multi_worker"]
    outs = _two_workers(RUN_TRANSLATION, lambda index: argv, tmp_path, cwd=tmp_path)
    assert all("2 replicas in sync" in out for out in outs)
    chief, worker = tmp_path / "run", tmp_path / "run" / "worker-1"
    for folder in (chief, worker):  # the chief writes the run's folder, the other worker a subfolder of its own
        assert (folder / "results.json").is_file() and (folder / "model" / "model.safetensors").is_file()
    from safetensors.numpy import load_file

    a, b = load_file(chief / "model" / "model.safetensors"), load_file(worker / "model" / "model.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # one all-reduced update, on both workers
