"""LoRA (vanilla_transformer.lora, layers.lora, convert.peft): adapters on every model class, training only the
adapters, merging, and PEFT's adapter format both ways with ``peft`` itself as the oracle.

Models are tiny (d_model 16-32, 1 layer per stack); transformers models are random ones built from their config
classes and saved locally.
"""

import json
import os

import keras
import numpy as np
import pytest

from vanilla_transformer import (CheckpointError, TransformerConfig, TransformerEncoderModel, TransformerForCausalLM,
                                 TransformerForMaskedLM, TransformerForSeq2SeqLM,
                                 TransformerForSequenceClassification, export_to_transformers)
from vanilla_transformer.lora import adapter_sites, lora_weights, parameter_counts

COMMON = dict(vocab_size=40, d_model=16, num_heads=2, d_ff=32, num_encoder_layers=1, num_decoder_layers=1,
              dropout=0.0, max_position_embeddings=32, pad_token_id=0, eos_token_id=2, bos_token_id=1,
              decoder_start_token_id=1)
BERT = dict(architecture="encoder", position_embedding="learned", embedding_layer_norm=True, type_vocab_size=2,
            activation="gelu", layer_norm_eps=1e-12, scale_embedding=False)
GPT2 = dict(architecture="decoder", position_embedding="learned", norm_first=True, final_layer_norm=True,
            activation="gelu_new", scale_embedding=False)
GPT = dict(architecture="decoder", position_embedding="learned", activation="gelu_new", scale_embedding=False,
           d_ff=64)
CLASSES = {
    "seq2seq": (TransformerForSeq2SeqLM, {}),
    "causal": (TransformerForCausalLM, GPT2),
    "encoder": (TransformerEncoderModel, {**BERT, "add_pooler": True}),
    "mlm": (TransformerForMaskedLM, {**BERT, "mask_token_id": 3}),
    "classifier": (TransformerForSequenceClassification, {**BERT, "add_pooler": True, "num_labels": 3}),
}


to_numpy = keras.ops.convert_to_numpy  # a torch tensor that requires grad too


def build(kind, seed=0, **overrides):
    cls, fields = CLASSES[kind]
    keras.utils.set_random_seed(seed)
    return cls(TransformerConfig(**{**COMMON, **fields, **overrides})).build_weights()


def inputs_for(model, rows=2, length=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, 40, size=(rows, length)).astype("int32")
    if isinstance(model, TransformerForSeq2SeqLM):
        return {"input_ids": ids, "decoder_input_ids": ids[:, ::-1].copy()}
    return {"input_ids": ids}


def randomise_adapters(model, seed=1, scale=0.3):
    """Trained-looking adapters: B is zero (or A, for embeddings) right after enable_lora."""
    rng = np.random.default_rng(seed)
    for name, variable in model.named_variables().items():
        if ".lora_" in name:
            variable.assign(rng.normal(0, scale, variable.shape).astype("float32"))


def labels_for(model, batch):
    ids = batch["input_ids"]
    if isinstance(model, TransformerForSequenceClassification):
        return np.array([0, 2], "int32")[: len(ids)]
    if isinstance(model, TransformerEncoderModel):
        return np.zeros(ids.shape + (model.config.d_model,), "float32")
    if isinstance(model, TransformerForSeq2SeqLM):
        return batch["decoder_input_ids"]
    return ids


def expected_trainable(model, rank, targets, embeddings=False, saved=()):
    """The formula: rank * (in + out) per adapted Dense, rank * (vocab + d_model) for the embedding, plus the
    heads trained in full."""
    config = model.config
    widths = {"q_proj": (config.d_model, config.d_model), "k_proj": (config.d_model, config.d_model),
              "v_proj": (config.d_model, config.d_model), "o_proj": (config.d_model, config.d_model),
              "fc1": (config.d_model, config.d_ff), "fc2": (config.d_ff, config.d_model)}
    total = sum(rank * sum(widths[path.rsplit(".", 1)[-1]]) for path in adapter_sites(model)
                if path.rsplit(".", 1)[-1] in targets)
    total += rank * (config.vocab_size + config.d_model) if embeddings else 0
    return total + sum(int(np.prod(w.shape)) for name in saved for w in getattr(model, name).weights)


# ------------------------------------------------------------------------------------------ core
@pytest.mark.parametrize("kind", [pytest.param(kind, marks=[pytest.mark.backends] if kind in ("seq2seq", "classifier")
                                                else []) for kind in sorted(CLASSES)])  # 2 classes on JAX/torch
def test_lora_trains_only_the_adapters_of_every_model_class(kind, capsys):
    model = build(kind)
    batch = inputs_for(model)
    before = {name: np.array(v.numpy()) for name, v in model.named_variables().items()}
    config = model.enable_lora(2, lora_alpha=4, lora_dropout=0.1, target_modules="q,v,ffn")
    saved = config.modules_to_save
    trainable, total = parameter_counts(model)
    assert trainable == expected_trainable(model, 2, ("q_proj", "v_proj", "fc1", "fc2"), saved=saved)
    assert f"trainable params: {trainable:,} || all params: {total:,}" in capsys.readouterr().out
    assert saved == (("classifier",) if kind == "classifier" else ())
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False,
                  **({"loss": "mse", "metrics": []} if kind == "encoder" else {}))
    model.fit(batch, labels_for(model, batch), epochs=1, verbose=0)
    after = model.named_variables()
    changed = {name for name, value in before.items() if not np.array_equal(value, after[name].numpy())}
    assert changed == {name for name in before if name.startswith(tuple(f"{s}." for s in saved))}
    assert any(not np.all(after[name].numpy() == 0) for name in after if "lora_kernel_b" in name)


@pytest.mark.backends
def test_merge_gives_the_same_logits_and_a_plain_checkpoint(tmp_path):
    model = build("seq2seq")
    model.enable_lora(4, lora_alpha=8, target_modules="q,k,v,o,ffn", verbose=False)
    randomise_adapters(model)
    batch = inputs_for(model)
    with_adapters = to_numpy(model(batch))
    assert not np.allclose(with_adapters, to_numpy(build("seq2seq")(batch)), atol=1e-3)
    model.merge_lora()
    assert model.lora_config is None and not any(".lora_" in name for name in model.named_variables())
    np.testing.assert_allclose(to_numpy(model(batch)), with_adapters, atol=1e-5)
    assert parameter_counts(model)[0] == build("seq2seq").num_parameters()  # everything trains again
    folder = model.save_pretrained(tmp_path / "merged")
    assert {"config.json", "model.safetensors"} <= set(os.listdir(folder))
    np.testing.assert_allclose(to_numpy(TransformerForSeq2SeqLM.from_pretrained(folder)(batch)), with_adapters,
                               atol=1e-5)


def test_a_keras_file_holds_the_merged_model(tmp_path):
    """Keras merges Dense adapters into their kernels when it saves a .keras file: a plain model, same logits;
    an embedding adapter, which cannot be merged into a tied table, is refused with the reason."""
    model = build("causal")
    model.enable_lora(2, target_modules="q,v,ffn", verbose=False)
    randomise_adapters(model)
    batch = inputs_for(model)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.lora_config is None
    np.testing.assert_allclose(to_numpy(loaded(batch)), to_numpy(model(batch)), atol=1e-5)
    tied = build("causal")
    tied.enable_lora(2, target_modules="embeddings", verbose=False)
    with pytest.raises(ValueError, match="embedding adapter changes the lookup only"):
        tied.save(tmp_path / "e.keras")


def test_enable_lora_refuses_what_it_cannot_apply():
    model = build("causal")
    with pytest.raises(ValueError, match="target_modules: 'query'"):
        model.enable_lora(2, target_modules=["query"])
    with pytest.raises(ValueError, match="rank=0"):
        model.enable_lora(0)
    with pytest.raises(ValueError, match="lora_dropout=1.5"):
        model.enable_lora(2, lora_dropout=1.5)
    with pytest.raises(ValueError, match="modules_to_save: TransformerForCausalLM has no layer 'classifier'"):
        model.enable_lora(2, modules_to_save=["classifier"])
    model.enable_lora(2, verbose=False)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        model.enable_lora(2, verbose=False)
    with pytest.raises(ValueError, match="format='transformers'"):
        model.save_pretrained("unused", format="transformers")
    tied = build("causal")
    tied.enable_lora(2, target_modules="embeddings", verbose=False)
    with pytest.raises(ValueError, match="tied to the output projection"):
        tied.merge_lora()


def test_lora_dropout_takes_effect_in_training_only():
    model = build("causal")
    model.enable_lora(2, lora_dropout=0.5, target_modules="q", verbose=False)
    randomise_adapters(model)
    batch = inputs_for(model)
    assert np.array_equal(to_numpy(model(batch)), to_numpy(model(batch)))
    assert not np.allclose(to_numpy(model(batch, training=True)), to_numpy(model(batch)), atol=1e-4)


@pytest.mark.slow
@pytest.mark.backends
def test_mixed_precision_and_xla_fit_train_the_adapters():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build("causal")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.enable_lora(2, target_modules="q,v,embeddings", verbose=False)
    batch = inputs_for(model, rows=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=keras.backend.backend() != "torch")
    history = model.fit(batch, batch["input_ids"], epochs=3, verbose=0).history["loss"]
    assert np.isfinite(history).all() and history[-1] < history[0]
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert {name.rsplit(".", 1)[-1] for name, v in model.named_variables().items() if v.trainable} == {
        "lora_kernel_a", "lora_kernel_b", "lora_embeddings_a", "lora_embeddings_b"}


@pytest.mark.slow
@pytest.mark.backends
def test_generate_sees_adapters_enabled_or_merged_after_a_first_call():
    model = build("causal", seed=3)
    prompt = inputs_for(model, rows=2, length=3)["input_ids"]
    settings = dict(max_new_tokens=5, do_sample=False)
    plain = np.asarray(model.generate(prompt, **settings))  # compiles a program without adapters
    model.enable_lora(4, lora_alpha=32, target_modules="q,k,v,o,ffn", verbose=False)
    randomise_adapters(model, scale=1.0)
    adapted = np.asarray(model.generate(prompt, **settings))
    assert not np.array_equal(adapted, plain)
    # greedy decoding's oracle: each new token is the argmax of the adapted model's logits on the prefix before it
    logits = to_numpy(model({"input_ids": adapted[:, :-1].astype("int32")}))
    np.testing.assert_array_equal(adapted[:, 3:], logits[:, 2:].argmax(-1))
    model.merge_lora()
    assert np.array_equal(np.asarray(model.generate(prompt, **settings)), adapted)


# ------------------------------------------------------------------------------------------ PEFT oracle
peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")


def hf_logits(hf_model, model, batch):
    import torch

    with torch.no_grad():
        tensors = {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
        out = hf_model(**tensors)
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()


def our_logits(model, batch):
    return to_numpy(model(batch)).astype(np.float32)


EXPORT_CASES = {  # kind, config overrides, targets
    "marian-interleaved": ("seq2seq", {}, "q,v,o,ffn"),
    "bert-classifier": ("classifier", {}, "q,k,v"),
    "bert-mlm-embeddings": ("mlm", {}, "q,ffn,embeddings"),
    "gpt2-fused-qv": ("causal", {}, "q,v,o,fc2,embeddings"),
    "gpt-post-ln": ("causal", {**GPT, "norm_first": False, "final_layer_norm": False}, "k,ffn"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(case, marks=[pytest.mark.backends] if case == "marian-interleaved" else [])
                                  for case in sorted(EXPORT_CASES)])  # one case on JAX / PyTorch too
def test_peft_loads_our_adapter_onto_our_exported_model(case, tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM
    from transformers import AutoModelForSequenceClassification

    kind, overrides, targets = EXPORT_CASES[case]
    model = build(kind, **overrides)
    base_dir = export_to_transformers(model, tmp_path / "base")
    model.enable_lora(2, lora_alpha=6, target_modules=targets, verbose=False)
    randomise_adapters(model)
    if kind == "classifier":
        model.classifier.kernel.assign(np.ones_like(model.classifier.kernel.numpy()))
    adapter_dir = model.save_pretrained(tmp_path / "adapter")
    generation = ["generation_config.json"] if kind in ("seq2seq", "causal") else []  # peft ignores it
    assert sorted(os.listdir(adapter_dir)) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                               *generation]
    auto = {"seq2seq": AutoModelForSeq2SeqLM, "causal": AutoModelForCausalLM, "mlm": AutoModelForMaskedLM,
            "classifier": AutoModelForSequenceClassification, "encoder": AutoModel}[kind]
    hf_model = peft.PeftModel.from_pretrained(auto.from_pretrained(base_dir), str(adapter_dir)).eval()
    batch = inputs_for(model)
    np.testing.assert_allclose(hf_logits(hf_model, model, batch), our_logits(model, batch), atol=1e-4)
    # and back: the adapter file on a freshly built base gives the same logits
    reloaded = build(kind, **overrides)
    reloaded.load_adapter(adapter_dir, check_base=False)
    np.testing.assert_allclose(our_logits(reloaded, batch), our_logits(model, batch), atol=1e-5)


def make_peft_adapter(tmp_path, hf_model, targets, **extra):
    hf_model.save_pretrained(tmp_path / "hf-base")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, **extra)
    peft_model = peft.get_peft_model(hf_model, config)
    peft_model.peft_config["default"].base_model_name_or_path = str(tmp_path / "hf-base")
    peft_model.save_pretrained(tmp_path / "peft-adapter")
    return peft_model.eval(), tmp_path / "peft-adapter"


def test_an_adapter_made_by_peft_loads_onto_our_imported_model(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    import torch

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                                    bos_token_id=1, eos_token_id=2))
    peft_model, adapter_dir = make_peft_adapter(tmp_path, hf, ["c_attn", "c_fc", "wte"], task_type="CAUSAL_LM")
    ours = TransformerForCausalLM.from_pretrained(adapter_dir)  # base from base_model_name_or_path, then adapter
    assert ours.lora_config.target_modules == ("q_proj", "k_proj", "v_proj", "fc1", "embeddings")
    batch = inputs_for(ours)
    np.testing.assert_allclose(our_logits(ours, batch), hf_logits(peft_model, ours, batch), atol=1e-4)


@pytest.mark.slow
def test_a_peft_adapter_on_a_marian_checkpoint_loads_onto_our_import(tmp_path):
    from transformers import MarianConfig, MarianMTModel

    import torch

    torch.manual_seed(0)
    hf = MarianMTModel(MarianConfig(vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1,
                                    encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                    decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=0,
                                    eos_token_id=2, decoder_start_token_id=0))
    peft_model, adapter_dir = make_peft_adapter(tmp_path, hf, ["q_proj", "out_proj", "fc2"],
                                                task_type="SEQ_2_SEQ_LM")
    ours = TransformerForSeq2SeqLM.from_pretrained(tmp_path / "hf-base")
    ours.load_adapter(adapter_dir)
    batch = inputs_for(ours)
    np.testing.assert_allclose(our_logits(ours, batch), hf_logits(peft_model, ours, batch), atol=1e-4)
    merged = to_numpy(ours.merge_lora()(batch))
    np.testing.assert_allclose(merged, hf_logits(peft_model, ours, batch), atol=1e-4)


# ------------------------------------------------------------------------------------------ broken adapters
@pytest.fixture()
def saved_adapter(tmp_path):
    model = build("seq2seq")
    base = model.save_pretrained(tmp_path / "base")
    model = TransformerForSeq2SeqLM.from_pretrained(base)
    model.enable_lora(2, target_modules="q,v", verbose=False)
    randomise_adapters(model)
    return model.save_pretrained(tmp_path / "adapter"), base


def edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_broken_or_mismatched_adapter_is_refused_by_name(saved_adapter, tmp_path):
    adapter, base = saved_adapter
    assert TransformerForSeq2SeqLM.from_pretrained(adapter).lora_config.r == 2
    edit_config(adapter, r=8)
    with pytest.raises(CheckpointError, match=r"has rank 2 .* says r=8"):
        TransformerForSeq2SeqLM.from_pretrained(adapter)
    edit_config(adapter, r=2, target_modules=["q_proj", "v_proj", "k_proj"])
    with pytest.raises(CheckpointError, match=r"targets .*k_proj.* are missing"):
        TransformerForSeq2SeqLM.from_pretrained(adapter)
    edit_config(adapter, target_modules=["q_proj", "v_proj"])
    other = build("seq2seq", d_model=32).save_pretrained(tmp_path / "other-base")
    with pytest.raises(CheckpointError, match="another base"):
        TransformerForSeq2SeqLM.from_pretrained(other).load_adapter(adapter)
    with pytest.raises(CheckpointError, match="another base model"):
        TransformerForSeq2SeqLM.from_pretrained(other).load_adapter(adapter, check_base=False)
    edit_config(adapter, use_dora=True)
    with pytest.raises(CheckpointError, match="use_dora=True is not supported"):
        TransformerForSeq2SeqLM.from_pretrained(adapter)
    edit_config(adapter, use_dora=False, base_model_name_or_path=None)
    with pytest.raises(CheckpointError, match="without base_model_name_or_path"):
        TransformerForSeq2SeqLM.from_pretrained(adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="adapter_model.safetensors of .* is corrupt"):
        TransformerForSeq2SeqLM.from_pretrained(base).load_adapter(adapter)


def test_an_adapter_folder_keeps_the_generation_settings(tmp_path):
    """A generative model's adapter folder carries generation_config.json (peft writes none and ignores it):
    from_pretrained(adapter) and load_adapter apply it; a folder without one (as peft writes) keeps the base's
    settings; an invalid one is refused by name."""
    model = build("seq2seq")
    model.generation_config.num_beams, model.generation_config.max_new_tokens = 3, 7
    base = model.save_pretrained(tmp_path / "base")
    tuned = TransformerForSeq2SeqLM.from_pretrained(base)
    tuned.enable_lora(2, verbose=False)
    tuned.generation_config.max_new_tokens = 11  # changed while fine-tuning: the adapter keeps it
    adapter = tuned.save_pretrained(tmp_path / "adapter")
    saved = json.loads((adapter / "generation_config.json").read_text())
    assert saved["num_beams"] == 3 and saved["max_new_tokens"] == 11
    for loaded in (TransformerForSeq2SeqLM.from_pretrained(adapter),
                   TransformerForSeq2SeqLM.from_pretrained(base).load_adapter(adapter)):
        assert (loaded.generation_config.num_beams, loaded.generation_config.max_new_tokens) == (3, 11)
    (adapter / "generation_config.json").unlink()  # an adapter as peft writes it: the base's settings
    loaded = TransformerForSeq2SeqLM.from_pretrained(adapter)
    assert (loaded.generation_config.num_beams, loaded.generation_config.max_new_tokens) == (3, 7)
    (adapter / "generation_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="generation_config.json of .* is invalid"):
        TransformerForSeq2SeqLM.from_pretrained(adapter)
    classifier = build("classifier")
    classifier.enable_lora(2, verbose=False)
    assert not (classifier.save_adapter(tmp_path / "classifier") / "generation_config.json").exists()
