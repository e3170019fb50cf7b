"""The example scripts share their flags (examples/_common.py): each accepted flag acts, or is refused."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import keras
import pytest

from vanilla_transformer import TransformerConfig, TransformerForCausalLM

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
_common = importlib.import_module("_common")
run_translation = importlib.import_module("run_translation")
translation_data = importlib.import_module("translation.data")  # run_translation.py's batching


def parse(argv):
    return _common.parse_args(_common.build_parser("test", "gpt"), argv)


@pytest.fixture
def saved_model(tmp_path):
    config = TransformerConfig(architecture="decoder", vocab_size=30, d_model=16, num_heads=2, d_ff=32,
                               num_decoder_layers=1, num_encoder_layers=0, max_position_embeddings=16)
    TransformerForCausalLM(config).save_pretrained(tmp_path / "m")
    return str(tmp_path / "m")


@pytest.mark.parametrize("flag", ["--d_model", "--num_layers", "--num_heads", "--d_ff", "--vocab_size",
                                  "--max_position_embeddings"])
def test_size_flags_with_a_saved_model_are_refused(saved_model, flag, capsys):
    with pytest.raises(SystemExit):
        parse(["--model_name_or_path", saved_model, "--train_file", "t.txt", "--output_dir", "o", flag, "8"])
    assert f"{flag} only apply when building a model from a preset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_translation.parse_args(["--model_name_or_path", saved_model, "--train_file", "t", "--output_dir", "o",
                                    flag, "8"])


def test_size_flags_apply_to_every_architecture_of_a_preset():
    args = parse(["--model_name_or_path", "transformer-base", "--train_file", "t.txt", "--output_dir", "o",
                  "--d_model", "64", "--num_layers", "2"])
    assert args.vocab_size == 8000  # the default, applied once the flags are checked
    assert _common.size_overrides(args, "encoder-decoder") == dict(
        d_model=64, num_heads=2, d_ff=256, num_encoder_layers=2, num_decoder_layers=2)
    assert _common.size_overrides(args, "decoder") == dict(d_model=64, num_heads=2, d_ff=256, num_decoder_layers=2)


def test_dropout_flags_reach_a_saved_model(saved_model):
    args = parse(["--model_name_or_path", saved_model, "--train_file", "t.txt", "--output_dir", "o",
                  "--dropout", "0.3", "--attention_dropout", "0.2"])
    model = _common.load_model(TransformerForCausalLM, args, tokenizer=None)
    assert (model.config.dropout, model.config.attention_dropout) == (0.3, 0.2)


def test_weight_decay_switches_to_adamw():
    model = TransformerForCausalLM(TransformerConfig.from_preset(
        "gpt", vocab_size=30, d_model=16, num_heads=2, d_ff=32, num_decoder_layers=1, max_position_embeddings=16))
    for decay, optimizer_class in ((0.0, keras.optimizers.Adam), (0.01, keras.optimizers.AdamW)):
        args = parse(["--train_file", "t.txt", "--output_dir", "o", "--weight_decay", str(decay)])
        _common.compile_for_training(model, args, num_examples=64)
        # isinstance: the torch backend swaps in its own subclasses (torch_adam.Adam, torch_adamw.AdamW)
        assert isinstance(model.optimizer, optimizer_class)
        assert isinstance(model.optimizer, keras.optimizers.AdamW) == (decay > 0)
        assert float(model.optimizer.weight_decay or 0.0) == pytest.approx(decay)


def test_translation_refuses_flags_that_would_do_nothing(saved_model, capsys):
    base = ["--train_file", "t", "--output_dir", "o"]
    with pytest.raises(SystemExit):
        run_translation.parse_args(base + ["--learning_rate", "1e-3", "--lr_scale", "2"])
    assert "--lr_scale scales the paper's schedule" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_translation.parse_args(base + ["--model_name_or_path", saved_model, "--split_punctuation"])
    assert run_translation.parse_args(base).lr_scale == 1.0


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="parses under the live backend, TensorFlow")
def test_the_script_refuses_keras_distribution_on_tensorflow(capsys):
    base = ["--train_file", "t", "--output_dir", "o"]
    with pytest.raises(SystemExit):
        run_translation.parse_args(base + ["--distribution", "data_parallel"])
    assert ("--distribution data_parallel is keras.distribution, which runs on JAX; the backend is tensorflow (on "
            "TensorFlow use --strategy)") in capsys.readouterr().err
    args = run_translation.parse_args(base + ["--strategy", "mirrored"])
    assert (args.strategy, args.distribution) == ("mirrored", "auto")


def test_scale_out_flags_the_backend_would_ignore_are_refused(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    _common.add_distribution_arguments(parser)
    refused = [("jax", ["--strategy", "multi_worker"], "--strategy multi_worker is tf.distribute, which runs on "
                                                       "TensorFlow; the backend is jax (on JAX use --distribution)"),
               ("torch", ["--strategy", "mirrored"], "the backend is torch"),
               ("torch", ["--distribution", "model_parallel"], "--distribution model_parallel is keras.distribution")]
    for backend, flags, message in refused:
        with pytest.raises(SystemExit):
            _common.refuse_unused_distribution_flags(parser, parser.parse_args(flags), backend)
        assert message in capsys.readouterr().err
    for backend, flags in (("jax", ["--distribution", "model_parallel"]), ("jax", ["--distribution", "none"]),
                           ("tensorflow", ["--distribution", "none"]), ("torch", [])):
        _common.refuse_unused_distribution_flags(parser, parser.parse_args(flags), backend)  # accepted


@pytest.mark.skipif(keras.backend.backend() == "torch" or len(keras.distribution.list_devices()) > 1,
                    reason="needs a single device (keras.distribution cannot list PyTorch's)")
def test_a_data_or_model_parallel_run_on_one_device_is_refused():
    assert _common.keras_distribution("auto") is None and _common.keras_distribution("none") is None
    for name in ("data_parallel", "model_parallel"):
        with pytest.raises(SystemExit, match=f"--distribution {name} needs several devices"):
            _common.keras_distribution(name)
    assert _common.batch_shards(None) == 1


def test_filler_rows_count_for_nothing():
    import numpy as np

    from vanilla_transformer import TransformerForSeq2SeqLM
    from vanilla_transformer.data_collators import Seq2SeqCollator
    from vanilla_transformer.losses import MaskedAccuracy, MaskedSparseCrossEntropy

    collator = Seq2SeqCollator(pad_token_id=0, decoder_start_token_id=1, vocab_size=30)
    batch = collator([[5, 6, 7, 8, 9, 10, 11, 12, 13], [8, 9], [10]], [[11, 2], [12, 13, 2], [2]])
    assert batch[0]["input_ids"].shape == (3, 16) and batch[1].shape == (3, 8)  # source and target lengths differ
    assert translation_data.fill_rows(batch, collator, 3) is batch
    inputs, labels = translation_data.fill_rows(batch, collator, 2)
    assert labels.shape == (4, 8) and inputs["input_ids"].shape == inputs["attention_mask"].shape == (4, 16)
    assert inputs["decoder_input_ids"].shape == inputs["decoder_attention_mask"].shape == (4, 8)
    for key, value in inputs.items():
        np.testing.assert_array_equal(value[:3], batch[0][key])
    assert (labels[3] == -100).all() and not inputs["attention_mask"][3].any()
    assert not inputs["input_ids"][3].any() and not inputs["decoder_attention_mask"][3].any()
    config = TransformerConfig(vocab_size=30, d_model=16, num_heads=2, d_ff=32, num_encoder_layers=1,
                               num_decoder_layers=1, max_position_embeddings=32, dropout=0.0)
    model = TransformerForSeq2SeqLM(config)
    loss = MaskedSparseCrossEntropy(0.1)
    assert float(loss(labels, model(inputs))) == pytest.approx(float(loss(batch[1], model(batch[0]))), rel=1e-6)
    accuracies = []
    for x, y in (batch, (inputs, labels)):
        metric = MaskedAccuracy()
        metric.update_state(y, model(x))
        accuracies.append(float(metric.result()))
    assert accuracies[0] == accuracies[1]
