"""Scale-out with keras.distribution on JAX (vanilla_transformer.sharding).

- DataParallel over two CPU devices, and over two JAX processes on 127.0.0.1, ends with the weights, the
  per-step losses and the evaluation of one device trained on the same global batches;
- ModelParallel with the Megatron layout map really splits the attention and feed-forward kernels of a model
  with the big preset's widths over two devices, and gives the unsharded model's logits (before and after a
  training step);
- the layout map names exactly the attention and feed-forward weights of every architecture.

The JAX runs are subprocesses (tests/scripts/sharding_*.py): the device count is fixed when JAX starts.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from vanilla_transformer import (TransformerConfig, TransformerForCausalLM, TransformerForSeq2SeqLM,
                                 TransformerForSequenceClassification)
from vanilla_transformer.sharding import layout_map, make_distribution

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).parent / "scripts"
JAX_TWO_DEVICES = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def _start(script, *args, env=None, log=None):
    """Run ``script`` (a path, or a name in tests/scripts); conftest makes this checkout importable there."""
    return subprocess.Popen([sys.executable, str(SCRIPTS / script), *map(str, args)], stdout=log or subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


def _output(process, log=None):
    """What the script printed; fails with its output if it failed."""
    try:
        out, _ = process.communicate(timeout=300)
    finally:
        process.kill()
    if log is not None:
        out = Path(log.name).read_text()
    assert process.returncode == 0, out[-3000:]
    return out


def _report(process, log=None):
    """The JSON line the script printed last."""
    return json.loads(_output(process, log).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def data_parallel(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data_parallel")
    report = _report(_start("sharding_data_parallel.py", directory, env=JAX_TWO_DEVICES))
    return report, directory


def _assert_same_weights(path, reference):
    trained, expected = np.load(path), np.load(reference)
    assert sorted(trained.files) == sorted(expected.files) and len(expected.files) == 43
    for name in expected.files:
        np.testing.assert_allclose(trained[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_data_parallel_over_two_devices_ends_with_the_weights_of_one_device(data_parallel):
    report, directory = data_parallel
    assert report["devices"] == ["cpu:0", "cpu:1"] and report["kernel_devices"] == 2 and report["kernel_replicated"]
    assert report["batch_axes"] == ["batch", None]  # rows split over the devices
    oracle = report["oracle"]  # the first batch: 67 counted tokens in device 0's rows, 29 in device 1's
    assert oracle["tokens_per_half"][0] != oracle["tokens_per_half"][1]
    assert abs(oracle["token_mean"] - oracle["mean_of_halves"]) > 1e-3  # a per-device mean would show
    for run in ("single", "parallel"):  # the loss of the first step is the token mean of the whole batch
        assert report[run]["steps"][0]["loss"] == pytest.approx(oracle["token_mean"], rel=1e-5)
    for single, parallel in zip(report["single"]["steps"], report["parallel"]["steps"], strict=True):
        assert parallel == pytest.approx(single, rel=1e-5)
    assert report["parallel"]["eval"] == pytest.approx(report["single"]["eval"], rel=1e-5)
    initial, single = np.load(directory / "initial.npz"), np.load(directory / "single.npz")
    assert max(np.abs(single[k] - initial[k]).max() for k in initial.files) > 0.1  # training moved the weights
    _assert_same_weights(directory / "parallel.npz", directory / "single.npz")


def _free_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def _two_processes(start, log_dir):
    """The outputs of ``start(0, log)`` and ``start(1, log)``, run together."""
    logs = [open(log_dir / f"process{i}.log", "w+") for i in range(2)]
    processes = [start(i, logs[i]) for i in range(2)]
    try:
        return [_output(process, log) for process, log in zip(processes, logs)]
    finally:  # one failing process leaves the other waiting in a collective
        for process in processes:
            process.kill()
        for log in logs:
            log.close()


@pytest.mark.slow
def test_two_jax_processes_end_with_the_weights_of_one_device(data_parallel, tmp_path):
    port = _free_port()
    outs = _two_processes(lambda i, log: _start("sharding_two_processes.py", i, port, tmp_path, log=log), tmp_path)
    reports = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    single, directory = data_parallel
    for index, report in enumerate(reports):
        assert (report["process_index"], report["process_count"], report["local_devices"]) == (index, 2, 1)
        assert len(report["devices"]) == 2
        for expected, step in zip(single["single"]["steps"], report["steps"], strict=True):
            assert step == pytest.approx(expected, rel=1e-5)
        assert report["eval"] == pytest.approx(single["single"]["eval"], rel=1e-5)
        _assert_same_weights(tmp_path / f"process{index}.npz", directory / "single.npz")


# Megatron: split on the output axis (heads, d_ff) for Q/K/V and the first FFN layer, on the input axis for
# the output projection and the second FFN layer; everything else whole on every device.
COLUMN = ("q_proj.kernel", "k_proj.kernel", "v_proj.kernel", "fc1.kernel")
ROW = ("o_proj.kernel", "fc2.kernel")
SPLIT_BIAS = ("q_proj.bias", "k_proj.bias", "v_proj.bias", "fc1.bias")


def _expected_split(name):
    """(mesh axes, share of the weight one device holds) from the weight's name in named_variables."""
    if name.endswith(COLUMN):
        return [None, "model"], (1, 2)
    if name.endswith(ROW):
        return ["model", None], (2, 1)
    if name.endswith(SPLIT_BIAS):
        return ["model"], (2,)
    return None, None


@pytest.mark.slow
def test_model_parallel_shards_the_big_kernels_and_keeps_the_logits(tmp_path):
    report = _report(_start("sharding_model_parallel.py", tmp_path, env=JAX_TWO_DEVICES))
    config = TransformerConfig.from_preset("transformer-big", vocab_size=1000, num_encoder_layers=1,
                                           num_decoder_layers=1, max_position_embeddings=64)
    names = {variable.path: name for name, variable in TransformerForSeq2SeqLM(config).named_variables().items()}
    placements = report["placements"]
    assert sorted(placements) == sorted(names)
    split = 0
    for path, placed in placements.items():
        axes, divisor = _expected_split(names[path])
        assert placed["devices"] == 2, path
        if axes is None:
            assert set(placed["spec"]) <= {None} and placed["shard_shape"] == placed["shape"], path
            continue
        split += 1
        assert placed["spec"] == axes, path
        assert placed["shard_shape"] == [size // d for size, d in zip(placed["shape"], divisor)], path
    assert split == 3 * 7 + 2 * 3  # 3 attention blocks: Q/K/V kernels and biases, W^O; 2 FFNs: W_1, b_1, W_2
    assert placements["TransformerForSeq2SeqLM/encoder/layers_0/feed_forward/fc1/kernel"]["shard_shape"] == [1024, 2048]

    logits = np.load(tmp_path / "logits.npz")
    for when in ("before", "after"):
        single = logits[f"single_{when}"]
        scale = np.abs(single).max()
        assert np.abs(logits[f"sharded_{when}"] - single).max() <= 1e-5 * scale, when
    assert np.abs(logits["single_after"] - logits["single_before"]).max() > 1.0  # the step changed the model
    assert report["sharded_loss"] == pytest.approx(report["single_loss"], rel=1e-5)
    weights = np.load(tmp_path / "weights.npz")
    for name in (n for n in weights.files if n.startswith("single:")):
        np.testing.assert_allclose(weights["sharded:" + name[7:]], weights[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _mesh(shape, axes=("batch", "model")):
    return keras.distribution.DeviceMesh(shape, axes, devices=[f"cpu:{i}" for i in range(int(np.prod(shape)))])


@pytest.mark.parametrize("model_class, architecture", [
    (TransformerForSeq2SeqLM, "encoder-decoder"), (TransformerForCausalLM, "decoder"),
    (TransformerForSequenceClassification, "encoder")])
def test_the_layout_map_names_the_attention_and_feed_forward_weights_of_every_architecture(model_class, architecture):
    config = TransformerConfig(architecture=architecture, vocab_size=30, d_model=16, num_heads=4, d_ff=32,
                               num_encoder_layers=0 if architecture == "decoder" else 2,
                               num_decoder_layers=0 if architecture == "encoder" else 2, max_position_embeddings=16)
    model = model_class(config)
    layouts = layout_map(model, _mesh((2, 2)))
    split = 0
    for name, variable in model.named_variables().items():
        axes, _ = _expected_split(name)
        layout = layouts[variable.path]
        assert (None if layout is None else list(layout.axes)) == axes, name
        split += axes is not None
    attention_blocks = {"encoder-decoder": 2 + 2 * 2, "decoder": 2, "encoder": 2}[architecture]
    assert split == 7 * attention_blocks + 3 * (4 if architecture == "encoder-decoder" else 2)


def test_the_layout_map_refuses_splits_that_do_not_fit():
    config = TransformerConfig(vocab_size=30, d_model=24, num_heads=4, d_ff=48, num_encoder_layers=1,
                               num_decoder_layers=1, max_position_embeddings=16)
    with pytest.raises(ValueError, match="num_heads=4 does not split evenly over the 3 devices of mesh axis 'model'"):
        layout_map(config, _mesh((1, 3)))
    with pytest.raises(ValueError, match="d_ff=48 does not split evenly over the 32 devices"):
        layout_map(TransformerConfig(vocab_size=30, d_model=64, num_heads=32, d_ff=48, num_encoder_layers=1,
                                     num_decoder_layers=1, max_position_embeddings=16), _mesh((1, 32)))
    with pytest.raises(ValueError, match="no axis 'model'.*\\['batch'\\]"):
        layout_map(config, _mesh((2,), ("batch",)))
    assert layout_map(config, _mesh((3, 2)))["x/encoder/layers_0/self_attn/q_proj/kernel"].axes == (None, "model")


def test_keras_distribution_is_refused_off_jax():
    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(ValueError, match="runs on the JAX backend, not on tensorflow; on TensorFlow use tf.distribute"):
        make_distribution("data_parallel")
    assert make_distribution("none") is None


TRANSLATION_FLAGS = ["--d_model", "32", "--num_heads", "4", "--d_ff", "64", "--num_layers", "1", "--vocab_size", "80",
                     "--num_train_epochs", "1", "--per_device_train_batch_size", "15", "--warmup_steps", "10",
                     "--num_beams", "1", "--max_target_length", "12", "--verbose", "0", "--mixed_precision", "no"]


@pytest.fixture(scope="module")
def translation(tmp_path_factory, write_number_words):
    """run_translation.py on JAX with two devices: ``runs/auto`` (its choice) and ``runs/none`` (one device)."""
    directory = write_number_words(tmp_path_factory.mktemp("translation"), num_train=96, num_val=8, seed=3)
    out = _output(_start("sharding_run_translation.py", directory, directory / "runs", *TRANSLATION_FLAGS,
                         env=JAX_TWO_DEVICES))
    return directory, out


def _history(run):
    history = json.loads((run / "history.json").read_text())["history"]
    assert len(history) == 1
    return {key: history[0][key] for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_bleu", "val_chrf")}


def _assert_same_model(a, b):
    """The weights of the two saved models agree, but for the key projections' biases, and so do their logits."""
    from safetensors.numpy import load_file

    weights = [load_file(run / "model" / "model.safetensors") for run in (a, b)]
    # The key projections' biases shift every score of a query by the same amount, which softmax ignores: their
    # gradient is 0 up to rounding, and Adam turns that rounding noise into steps of the learning rate's size.
    for name in weights[1]:
        if not name.endswith("k_proj.bias"):
            np.testing.assert_allclose(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-5, err_msg=name)
    ids = np.array([[5, 9, 13, 21, 2, 0], [7, 11, 2, 0, 0, 0]], "int32")
    inputs = {"input_ids": ids, "attention_mask": (ids > 0).astype("int32"), "decoder_input_ids": ids,
              "decoder_attention_mask": (ids > 0).astype("int32")}
    logits = [np.asarray(TransformerForSeq2SeqLM.from_pretrained(run / "model")(inputs)) for run in (a, b)]
    assert np.abs(logits[0] - logits[1]).max() <= 1e-5 * np.abs(logits[1]).max()  # the same function


@pytest.mark.slow
def test_run_translation_chooses_data_parallel_on_jax_and_trains_as_on_one_device(translation):
    directory, out = translation
    described = [line for line in out.splitlines() if "training pairs in" in line]
    assert len(described) == 2  # 15 rows a batch, filled to 16 so that each device gets 8
    assert described[0].endswith("keras.distribution.DataParallel over 2 devices ({'batch': 2})")
    assert "keras.distribution" not in described[1]
    runs = directory / "runs"
    assert _history(runs / "auto") == pytest.approx(_history(runs / "none"), rel=1e-5)
    results = json.loads(out.strip().splitlines()[-1])
    assert results["auto"]["validation"]["samples"] == results["none"]["validation"]["samples"]
    _assert_same_model(runs / "auto", runs / "none")


@pytest.mark.slow
def test_run_translation_as_two_jax_processes(translation, tmp_path):
    directory, _ = translation
    port = _free_port()

    def start(index, log):
        return _start(ROOT / "examples" / "run_translation.py", "--train_file", directory / "train",
                      "--validation_file", directory / "val", "--output_dir", tmp_path / "run", *TRANSLATION_FLAGS,
                      log=log, env={"KERAS_BACKEND": "jax", "XLA_FLAGS": "", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                                    "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
                                    "KERAS_DISTRIBUTION_PROCESS_ID": str(index)})

    outs = _two_processes(start, tmp_path)
    for out in outs:  # one device per process, each feeding 8 of every 16 rows
        assert "keras.distribution.DataParallel over 2 devices in 2 processes ({'batch': 2})" in out
    one_device = directory / "runs" / "none"
    for run in (tmp_path / "run", tmp_path / "run" / "process-1"):  # process 0 writes the run's folder
        assert _history(run) == pytest.approx(_history(one_device), rel=1e-5)
        _assert_same_model(run, one_device)
