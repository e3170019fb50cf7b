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
        assert type(model.optimizer) is optimizer_class
        assert float(model.optimizer.weight_decay or 0.0) == pytest.approx(decay)


def test_translation_refuses_flags_that_would_do_nothing(saved_model, capsys):
    base = ["--train_file", "t", "--output_dir", "o"]
    with pytest.raises(SystemExit):
        run_translation.parse_args(base + ["--learning_rate", "1e-3", "--lr_scale", "2"])
    assert "--lr_scale scales the paper's schedule" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_translation.parse_args(base + ["--model_name_or_path", saved_model, "--split_punctuation"])
    assert run_translation.parse_args(base).lr_scale == 1.0
