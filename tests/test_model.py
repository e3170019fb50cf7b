"""TransformerForSeq2SeqLM: shapes, causality, padding invariance, bad input, save/load in the Hub layout."""

import json

import keras
import numpy as np
import pytest
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
from vanilla_transformer import CheckpointError

pytestmark = pytest.mark.backends  # CI runs this module on TensorFlow, JAX and PyTorch

SRC = np.array([[5, 6, 7, 8, 2], [9, 10, 11, 2, 0]], dtype="int32")
SRC_MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype="int32")
TGT = np.array([[1, 12, 13, 14, 15, 16], [1, 17, 18, 19, 20, 21]], dtype="int32")


def _inputs(**overrides):
    inputs = {"input_ids": SRC, "attention_mask": SRC_MASK, "decoder_input_ids": TGT}
    inputs.update(overrides)
    return inputs


def test_logits_shape_and_dtype(tiny_seq2seq):
    logits = tiny_seq2seq(_inputs())
    assert tuple(logits.shape) == (2, 6, 40)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_weights_have_stable_readable_names(tiny_seq2seq):
    names = tiny_seq2seq.named_variables()
    for name in ("shared.embeddings", "encoder.layers.0.self_attn.q_proj.kernel",
                 "encoder.layers.1.feed_forward.fc2.bias", "decoder.layers.0.cross_attn.o_proj.kernel",
                 "decoder.layers.1.feed_forward_layer_norm.gamma"):
        assert name in names
    # the shared embedding is stored once: encoder input, decoder input and output projection (3.4)
    assert not any("embed_tokens" in name for name in names)
    assert sum(int(np.prod(v.shape)) for v in names.values()) == tiny_seq2seq.count_params()


def test_decoder_is_causal(tiny_seq2seq):
    base = keras.ops.convert_to_numpy(tiny_seq2seq(_inputs()))
    for t in range(1, TGT.shape[1]):
        changed = TGT.copy()
        changed[:, t] = 30
        logits = keras.ops.convert_to_numpy(tiny_seq2seq(_inputs(decoder_input_ids=changed)))
        np.testing.assert_allclose(logits[:, :t], base[:, :t], atol=1e-5)
        assert not np.allclose(logits[:, t:], base[:, t:], atol=1e-5)


def test_extra_padded_source_positions_change_nothing(tiny_seq2seq):
    base = keras.ops.convert_to_numpy(tiny_seq2seq(_inputs()))
    padded_src = np.concatenate([SRC, np.zeros((2, 7), "int32") + 3], axis=1)  # junk ids under a zero mask
    padded_mask = np.concatenate([SRC_MASK, np.zeros((2, 7), "int32")], axis=1)
    logits = keras.ops.convert_to_numpy(tiny_seq2seq(_inputs(input_ids=padded_src, attention_mask=padded_mask)))
    np.testing.assert_allclose(logits, base, atol=1e-5)


def test_all_padding_source_row_gives_finite_logits(tiny_seq2seq):
    logits = keras.ops.convert_to_numpy(tiny_seq2seq(_inputs(attention_mask=np.zeros_like(SRC_MASK))))
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("inputs, error, message", [
    (dict(input_ids=SRC + 40), ValueError, r"input_ids holds ids outside \[0, vocab_size=40\)"),
    (dict(decoder_input_ids=TGT - 2), ValueError, "decoder_input_ids holds ids outside"),
    (dict(input_ids=SRC.astype("float32")), TypeError, "input_ids must hold integer ids"),
    (dict(input_ids=np.ones((2, 65), "int32"), attention_mask=None), ValueError, "max_position_embeddings=64"),
    (dict(attention_mask=np.ones((2, 3), "int32")), ValueError, "attention_mask has shape"),
    (dict(input_ids=[[1, 2], [3]]), ValueError, "ragged"),
    (dict(input_ids=SRC[0]), ValueError, r"shape \(batch, sequence\)"),
    (dict(labels=TGT), ValueError, "Unknown inputs"),
    (dict(decoder_input_ids=np.repeat(TGT, 2, axis=0), decoder_attention_mask=None), ValueError,
     "different batch sizes"),
])
def test_bad_input_raises_a_clear_error(tiny_seq2seq, inputs, error, message):
    with pytest.raises(error, match=message):
        tiny_seq2seq(_inputs(**inputs))


def test_missing_decoder_input_is_named(tiny_seq2seq):
    with pytest.raises(ValueError, match="decoder_input_ids"):
        tiny_seq2seq({"input_ids": SRC})


def test_wrong_architecture_for_class_is_refused():
    with pytest.raises(ValueError, match="architecture"):
        TransformerForSeq2SeqLM(TransformerConfig(architecture="encoder", vocab_size=40, d_model=32, num_heads=4,
                                                  d_ff=64, num_decoder_layers=0))


def test_save_pretrained_layout_and_identical_reload(tiny_seq2seq, tmp_path):
    from vanilla_transformer.tokenization import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["one two three", "eins zwei drei"] * 5, vocab_size=40)
    tiny_seq2seq.generation_config.max_new_tokens = 7
    tiny_seq2seq.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md", "tokenizer.json",
            "tokenizer_config.json"} <= set(files)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "vanilla_transformer"
    assert config["architectures"] == ["TransformerForSeq2SeqLM"]
    from safetensors.numpy import load_file

    assert "encoder.layers.0.self_attn.q_proj.kernel" in load_file(tmp_path / "m" / "model.safetensors")
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "m"), TransformerConfig)
    assert AutoTokenizer.from_pretrained(tmp_path / "m")("one two")["input_ids"] == tokenizer("one two")["input_ids"]
    assert GenerationConfig.from_pretrained(tmp_path / "m").max_new_tokens == 7

    loaded = TransformerForSeq2SeqLM.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(_inputs())),
                                  keras.ops.convert_to_numpy(tiny_seq2seq(_inputs())))
    assert loaded.generation_config.max_new_tokens == 7
    readme = (tmp_path / "m" / "README.md").read_text()
    assert "pipeline_tag: translation" in readme and "| d_model | 32 |" in readme


def test_loading_mismatched_weights_lists_them(tiny_seq2seq, tmp_path):
    tiny_seq2seq.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["d_ff"] = 48
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.0\.feed_forward\.fc1\.kernel: checkpoint \(32, 64\)"):
        TransformerForSeq2SeqLM.from_pretrained(tmp_path / "m")


def test_loading_missing_and_unexpected_tensors_lists_them(tiny_seq2seq, tmp_path):
    from safetensors.numpy import load_file, save_file

    tiny_seq2seq.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    tensors = load_file(path)
    del tensors["decoder.layers.1.cross_attn.k_proj.bias"]
    tensors["decoder.layers.9.extra"] = np.zeros(3, "float32")
    save_file(tensors, path)
    with pytest.raises(CheckpointError) as info:
        TransformerForSeq2SeqLM.from_pretrained(tmp_path / "m")
    assert "decoder.layers.1.cross_attn.k_proj.bias" in str(info.value)
    assert "decoder.layers.9.extra" in str(info.value)


def test_untied_and_final_logits_bias_options_round_trip(tmp_path):
    config = TransformerConfig(vocab_size=40, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, tie_word_embeddings=False, final_logits_bias=True,
                               norm_first=True, final_layer_norm=True, position_embedding="learned")
    model = TransformerForSeq2SeqLM(config).build_weights()
    names = model.named_variables()
    assert "lm_head.kernel" in names and "final_logits_bias" in names and "encoder.layer_norm.gamma" in names
    model.save_pretrained(tmp_path / "m")
    loaded = TransformerForSeq2SeqLM.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(_inputs())),
                                  keras.ops.convert_to_numpy(model(_inputs())))
