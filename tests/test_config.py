"""TransformerConfig: presets (Table 3), JSON round trip, validation errors, AutoConfig registration."""

import json

import pytest
from transformers import AutoConfig

from vanilla_transformer import (
    TransformerConfig,
    TransformerForSeq2SeqLM,
)


def test_presets_match_table_3():
    base = TransformerConfig.from_preset("transformer-base")
    big = TransformerConfig.from_preset("transformer-big")
    assert (base.num_encoder_layers, base.num_decoder_layers, base.d_model, base.d_ff, base.num_heads,
            base.dropout) == (6, 6, 512, 2048, 8, 0.1)
    assert (big.num_encoder_layers, big.d_model, big.d_ff, big.num_heads, big.dropout) == (6, 1024, 4096, 16, 0.3)
    assert base.head_dim == 64 and big.head_dim == 64  # d_k = d_v = 64 in both
    assert base.vocab_size == 37000 and base.tie_word_embeddings and base.scale_embedding
    assert base.position_embedding == "sinusoidal" and base.norm_first is False and base.label_smoothing == 0.1


@pytest.mark.parametrize("preset, low, high", [("transformer-base", 63e6, 65e6), ("transformer-big", 211e6, 215e6)])
def test_preset_parameter_counts_are_the_papers(preset, low, high):
    model = TransformerForSeq2SeqLM(TransformerConfig.from_preset(preset))
    count = model.num_parameters()
    assert low <= count <= high, count
    del model


def test_from_preset_overrides_and_unknown_name():
    config = TransformerConfig.from_preset("transformer-base", vocab_size=1000, num_encoder_layers=2)
    assert config.vocab_size == 1000 and config.num_encoder_layers == 2 and config.d_model == 512
    with pytest.raises(ValueError, match="Unknown preset 'transformer-huge'"):
        TransformerConfig.from_preset("transformer-huge")


def test_json_round_trip_and_auto_config(tmp_path):
    config = TransformerConfig(vocab_size=123, d_model=48, num_heads=6, d_ff=96, norm_first=True,
                               position_embedding="learned", activation="gelu", eos_token_id=[2, 3])
    config.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "vanilla_transformer"
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, TransformerConfig)
    for key in ("vocab_size", "d_model", "num_heads", "d_ff", "norm_first", "position_embedding", "activation",
                "eos_token_id", "architecture"):
        assert getattr(loaded, key) == getattr(config, key)
    assert TransformerConfig.from_dict(config.to_dict()).to_json_string() == config.to_json_string()


@pytest.mark.parametrize("field, value, message", [
    ("d_model", 30, "divisible by num_heads"),
    ("num_heads", 0, "positive integer"),
    ("vocab_size", -5, "positive integer"),
    ("d_ff", 0, "positive integer"),
    ("max_position_embeddings", 0, "positive integer"),
    ("num_encoder_layers", 0, "must be positive"),
    ("num_decoder_layers", -1, "non-negative"),
    ("dropout", 1.0, r"\[0, 1\)"),
    ("dropout", -0.1, r"\[0, 1\)"),
    ("attention_dropout", 2, r"\[0, 1\)"),
    ("label_smoothing", 1.5, r"\[0, 1\)"),
    ("layer_norm_eps", 0, "positive"),
    ("position_embedding", "rotary", "must be one of"),
    ("sinusoidal_layout", "zigzag", "must be one of"),
    ("activation", "tanh", "must be one of"),
    ("architecture", "decoder-encoder", "must be one of"),
    ("norm_first", "yes", "bool"),
    ("pad_token_id", 40, "vocab_size=40"),
    ("bos_token_id", -1, "vocab_size"),
    ("eos_token_id", [2, 99], "eos_token_id"),
    ("decoder_start_token_id", None, "required"),
])
def test_each_invalid_field_raises_value_error_naming_it(field, value, message):
    kwargs = dict(vocab_size=40, d_model=32, num_heads=4, d_ff=64)
    kwargs[field] = value
    with pytest.raises(ValueError, match=message) as info:
        TransformerConfig(**kwargs)
    assert field in str(info.value)


def test_variant_presets_describe_all_three_shapes():
    assert TransformerConfig.from_preset("bert-base").architecture == "encoder"
    assert TransformerConfig.from_preset("gpt").architecture == "decoder"
    gpt2 = TransformerConfig.from_preset("gpt2")
    assert gpt2.norm_first and gpt2.final_layer_norm and gpt2.max_position_embeddings == 1024
