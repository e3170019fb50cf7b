"""BERT-style (encoder-only) and GPT-style (decoder-only) variants: presets, causality, MLM/CLM collators and
losses, loading one head type into another, greedy decoding, and the example scripts end to end."""

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import keras

from vanilla_transformer import (TransformerConfig, TransformerEncoderModel, TransformerForCausalLM,
                                 TransformerForMaskedLM, TransformerForSequenceClassification)
from vanilla_transformer.batching import make_tf_dataset
from vanilla_transformer.data_collators import (DataCollatorForCausalLM, DataCollatorForMaskedLM,
                                                DataCollatorForSequenceClassification)
from vanilla_transformer.losses import CausalLMAccuracy, CausalLMLoss, MaskedSparseCrossEntropy
from vanilla_transformer.optimization import LinearWarmupSchedule

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPECIALS = [0, 1, 2, 3, 4]  # <pad> <s> </s> <unk> <mask>, as train_bpe_tokenizer numbers them
TINY = dict(vocab_size=50, d_model=32, num_heads=4, d_ff=64, dropout=0.0, attention_dropout=0.0,
            max_position_embeddings=64, pad_token_id=0)


def encoder_config(**overrides):
    return TransformerConfig.from_preset("bert-base", **{**TINY, "num_encoder_layers": 2, "mask_token_id": 4,
                                                         "add_pooler": False, **overrides})


def decoder_config(**overrides):
    return TransformerConfig.from_preset("gpt", **{**TINY, "num_decoder_layers": 2, "bos_token_id": 1,
                                                   "eos_token_id": 2, **overrides})


@pytest.fixture(scope="module")
def gpt():
    keras.utils.set_random_seed(0)
    return TransformerForCausalLM(decoder_config(num_decoder_layers=1)).build_weights()


def log_softmax(x):
    x = np.asarray(x, dtype="float64")
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# ------------------------------------------------------------------------------------------ presets
# Exact counts of transformers' BertModel, OpenAIGPTModel and GPT2Model with the same sizes.
PRESET_COUNTS = [
    ("bert-base", TransformerEncoderModel, 109_482_240, 110e6, 30522, 512),
    ("gpt", TransformerForCausalLM, 116_534_784, 117e6, 40478, 512),
    ("gpt2", TransformerForCausalLM, 124_439_808, 124e6, 50257, 1024),
]


@pytest.mark.parametrize("preset,cls,exact,about,vocab,positions", PRESET_COUNTS, ids=[p[0] for p in PRESET_COUNTS])
def test_preset_parameter_counts(preset, cls, exact, about, vocab, positions):
    config = TransformerConfig.from_preset(preset)
    assert (config.vocab_size, config.max_position_embeddings) == (vocab, positions)
    d, ff, layers = config.d_model, config.d_ff, config.num_encoder_layers or config.num_decoder_layers
    per_layer = 4 * (d * d + d) + (d * ff + ff) + (ff * d + d) + 2 * 2 * d
    embeddings = (vocab + positions + config.type_vocab_size) * d
    expected = (embeddings + layers * per_layer + 2 * d * (config.embedding_layer_norm + config.final_layer_norm)
                + (d * d + d) * config.add_pooler)
    model = cls(config)
    count = model.num_parameters()
    del model
    assert count == expected == exact
    assert abs(count - about) / about < 0.01


def test_bert_mlm_head_parameters():
    """The MLM head adds dense + LayerNorm + output bias to the body (the projection is the tied embedding)."""
    config = encoder_config(vocab_size=300)
    body = TransformerEncoderModel(config).num_parameters()
    mlm = TransformerForMaskedLM(config).num_parameters()
    d = config.d_model
    assert mlm - body == d * d + d + 2 * d + config.vocab_size


# ------------------------------------------------------------------------------------------ attention direction
@pytest.mark.backends
@pytest.mark.parametrize("norm_first", [False, True], ids=["gpt-post-ln", "gpt2-pre-ln"])
def test_gpt_logits_ignore_later_tokens(norm_first, gpt):
    model = gpt if not norm_first else TransformerForCausalLM(
        decoder_config(norm_first=True, final_layer_norm=True)).build_weights()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 50, size=(2, 12)).astype("int32")
    base = keras.ops.convert_to_numpy(model({"input_ids": ids}))
    for t in (0, 4, 10):
        changed = ids.copy()
        changed[:, t + 1:] = rng.integers(5, 50, size=changed[:, t + 1:].shape)
        out = keras.ops.convert_to_numpy(model({"input_ids": changed}))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:], atol=1e-3)


@pytest.mark.backends
def test_encoder_is_bidirectional():
    keras.utils.set_random_seed(1)
    model = TransformerEncoderModel(encoder_config()).build_weights()
    ids = np.array([[1, 10, 11, 12, 13, 2]], dtype="int32")
    changed = ids.copy()
    changed[0, 4] = 30
    base = keras.ops.convert_to_numpy(model({"input_ids": ids}))
    out = keras.ops.convert_to_numpy(model({"input_ids": changed}))
    for position in range(4):  # every earlier position sees the later change
        assert np.abs(out[0, position] - base[0, position]).max() > 1e-4


# ------------------------------------------------------------------------------------------ MLM
def test_mlm_collator_proportions():
    collator = DataCollatorForMaskedLM(vocab_size=50, mask_token_id=4, pad_token_id=0, special_token_ids=SPECIALS,
                                       seed=123)
    rng = np.random.default_rng(0)
    rows = [[1, *rng.integers(5, 50, size=rng.integers(10, 62)), 2] for _ in range(2000)]
    inputs, labels = collator(rows)
    ids = np.zeros_like(inputs["input_ids"])
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    attention = inputs["attention_mask"].astype(bool)
    eligible = attention & ~np.isin(ids, SPECIALS)
    chosen = labels != -100

    assert not chosen[~eligible].any()  # specials and padding are never chosen ...
    np.testing.assert_array_equal(inputs["input_ids"][~eligible], ids[~eligible])  # ... nor altered
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    np.testing.assert_array_equal(inputs["input_ids"][~chosen], ids[~chosen])
    assert abs(chosen.sum() / eligible.sum() - 0.15) < 0.01

    corrupted = inputs["input_ids"][chosen]
    original = ids[chosen]
    masked = corrupted == 4
    kept = corrupted == original
    randomised = ~masked & ~kept
    pool = 45  # a random replacement is any non-special id, so 1 in 45 draws the original token again
    assert abs(masked.mean() - 0.8) < 0.015
    assert abs(kept.mean() - (0.1 + 0.1 / pool)) < 0.01
    assert abs(randomised.mean() - 0.1 * (1 - 1 / pool)) < 0.01
    assert not np.isin(corrupted[randomised], SPECIALS).any()
    assert not (inputs["input_ids"][~chosen] == 4).any()

    again, again_labels = DataCollatorForMaskedLM(50, 4, 0, SPECIALS, seed=123)(rows)
    np.testing.assert_array_equal(again["input_ids"], inputs["input_ids"])  # seeded
    np.testing.assert_array_equal(again_labels, labels)


@pytest.mark.backends
def test_mlm_loss_counts_only_masked_positions():
    keras.utils.set_random_seed(2)
    model = TransformerForMaskedLM(encoder_config())
    model.compile(jit_compile=False)
    assert isinstance(model.loss, MaskedSparseCrossEntropy) and model.loss.label_smoothing == 0.0
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(5e-4)
    ids = np.array([[1, 10, 4, 12, 13, 2, 0, 0], [1, 20, 21, 4, 2, 0, 0, 0]], dtype="int32")
    mask = (ids != 0).astype("int32")
    labels = np.full(ids.shape, -100, dtype="int32")
    labels[0, 2], labels[1, 3], labels[1, 1] = 11, 22, 20
    logits = keras.ops.convert_to_numpy(model({"input_ids": ids, "attention_mask": mask}))
    logp = log_softmax(logits)
    hand = -np.mean([logp[0, 2, 11], logp[1, 3, 22], logp[1, 1, 20]])
    assert float(model.loss(labels, logits)) == pytest.approx(hand, rel=1e-5)
    loss, accuracy = model.evaluate({"input_ids": ids, "attention_mask": mask}, labels, batch_size=2, verbose=0)
    assert loss == pytest.approx(hand, rel=1e-5)
    hits = [logits[0, 2].argmax() == 11, logits[1, 3].argmax() == 22, logits[1, 1].argmax() == 20]
    assert accuracy == pytest.approx(np.mean(hits))
    # an unmasked (-100) label is never read: whatever the token there, the loss is the same
    other = np.where(labels == -100, -100, labels)
    other_logits = logits.copy()
    other_logits[0, 0] += 100.0
    assert float(model.loss(other, other_logits)) == pytest.approx(hand, rel=1e-5)


def test_make_tf_dataset_masks_again_every_epoch():
    collator = DataCollatorForMaskedLM(50, 4, 0, SPECIALS, seed=0)
    rows = [[1, *range(5, 45), 2]] * 8
    dataset = make_tf_dataset(rows, collator, batch_size=4, shuffle=False)
    first = [labels.numpy() for _, labels in dataset]
    second = [labels.numpy() for _, labels in dataset]
    assert len(first) == 2 and dataset.cardinality().numpy() == 2
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))


# ------------------------------------------------------------------------------------------ causal LM
@pytest.mark.backends
def test_causal_lm_collator_and_shifted_loss(gpt):
    collator = DataCollatorForCausalLM(pad_token_id=0)
    inputs, labels = collator([[1, 7, 8, 9, 2], [1, 6, 2]])
    assert inputs["input_ids"].shape == (2, 8)
    np.testing.assert_array_equal(labels[0], [1, 7, 8, 9, 2, -100, -100, -100])
    np.testing.assert_array_equal(labels[1], [1, 6, 2, -100, -100, -100, -100, -100])
    # pad detection uses row lengths: a real token equal to the pad id still counts
    _, labels_eos_pad = DataCollatorForCausalLM(pad_token_id=2)([[1, 7, 2], [1, 2]])
    np.testing.assert_array_equal(labels_eos_pad, [[1, 7, 2, -100, -100, -100, -100, -100],
                                                   [1, 2, -100, -100, -100, -100, -100, -100]])

    gpt.compile(jit_compile=False)
    assert isinstance(gpt.loss, CausalLMLoss) and gpt.loss.label_smoothing == 0.0
    assert isinstance(gpt.metrics[-1], keras.metrics.Metric)
    logits = keras.ops.convert_to_numpy(gpt(inputs))
    logp = log_softmax(logits)
    terms = [-logp[b, t, labels[b, t + 1]] for b in range(2) for t in range(7) if labels[b, t + 1] != -100]
    assert len(terms) == 4 + 2
    assert float(gpt.loss(labels, logits)) == pytest.approx(np.mean(terms), rel=1e-5)
    accuracy = CausalLMAccuracy()
    accuracy.update_state(labels, logits)
    hits = [logits[b, t].argmax() == labels[b, t + 1] for b in range(2) for t in range(7) if labels[b, t + 1] != -100]
    assert float(accuracy.result()) == pytest.approx(np.mean(hits))


def test_linear_warmup_schedule():
    schedule = LinearWarmupSchedule(1e-3, warmup_steps=10, decay_steps=110)
    values = [float(schedule(step)) for step in (0, 9, 10, 59, 109, 200)]
    np.testing.assert_allclose(values, [1e-4, 1e-3, 1e-3 * 0.99, 1e-3 * 0.5, 0.0, 0.0], atol=1e-9)
    assert float(LinearWarmupSchedule(1e-3)(1000)) == pytest.approx(1e-3)


# ------------------------------------------------------------------------------------------ generation
def step_by_step_greedy(model, prompt, max_new_tokens, eos_token_id):
    """Reference decoding: run the model on the whole growing prefix and take the argmax at the last position."""
    ids = list(prompt)
    for _ in range(max_new_tokens):
        logits = keras.ops.convert_to_numpy(model({"input_ids": np.array([ids], dtype="int32")}))
        ids.append(int(logits[0, -1].argmax()))
        if ids[-1] == eos_token_id:
            break
    return ids


def test_gpt_greedy_generate_matches_argmax_loop(gpt):
    prompts = [[1, 7, 9, 11], [1, 30]]
    width = max(map(len, prompts))
    ids = np.zeros((2, width), dtype="int32")
    mask = np.zeros((2, width), dtype="int32")
    for i, prompt in enumerate(prompts):  # right-padded batch: generate continues after the real tokens
        ids[i, : len(prompt)], mask[i, : len(prompt)] = prompt, 1
    cached = gpt.generate(ids, attention_mask=mask, max_new_tokens=8, use_cache=True)
    uncached = gpt.generate(ids, attention_mask=mask, max_new_tokens=8, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)
    for i, prompt in enumerate(prompts):
        expected = step_by_step_greedy(gpt, prompt, 8, eos_token_id=2)
        row = [int(t) for t in cached[i]]  # the prompt as given (right-padded), then the new tokens
        np.testing.assert_array_equal(row[:width], ids[i])
        row = prompt + row[width:]
        assert row[: len(expected)] == expected
        assert all(t == 0 for t in row[len(expected):])  # padding after eos


# ------------------------------------------------------------------------------------------ head transfer
def synthetic_task(n, rng):
    """Label 1 when the sentence's content tokens come from ids 28..49, 0 when they come from 5..27."""
    labels = rng.integers(0, 2, size=n)
    rows = [[1, *rng.integers(28 if y else 5, 50 if y else 28, size=rng.integers(3, 10)), 2] for y in labels]
    return rows, labels.astype("int32")


def test_classifier_from_mlm_checkpoint(tmp_path, caplog):
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    mlm = TransformerForMaskedLM(encoder_config(num_encoder_layers=1)).build_weights()  # (trained: see the
    mlm.save_pretrained(tmp_path / "mlm")  # example-script test, run_mlm -> run_classification)

    with caplog.at_level("WARNING", logger="vanilla_transformer.weight_files"):
        classifier = TransformerForSequenceClassification.from_pretrained(
            tmp_path / "mlm", id2label={0: "low", 1: "high"}, label2id={"low": 0, "high": 1})
    assert "newly initialized: ['classifier.bias', 'classifier.kernel']" in caplog.text
    assert "were not used when initializing TransformerForSequenceClassification" in caplog.text
    assert classifier.loading_info == {
        "missing_keys": ["classifier.bias", "classifier.kernel"],
        "unexpected_keys": ["mlm_bias", "mlm_dense.bias", "mlm_dense.kernel", "mlm_layer_norm.beta",
                            "mlm_layer_norm.gamma"]}
    saved, loaded = mlm.named_variables(), classifier.named_variables()
    shared = set(saved) & set(loaded)
    assert shared and all(name.startswith(("shared.", "encoder.")) for name in shared)
    for name in shared:
        np.testing.assert_array_equal(saved[name].numpy(), loaded[name].numpy())
    assert classifier.config.id2label == {0: "low", 1: "high"}

    train_rows, train_labels = synthetic_task(512, rng)
    test_rows, test_labels = synthetic_task(200, rng)
    collator = DataCollatorForSequenceClassification(pad_token_id=0, pad_to_multiple_of=16)  # one shape
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    classifier.fit(make_tf_dataset(train_rows, collator, 32, labels=train_labels), epochs=2, verbose=0,
                   shuffle=False)
    _, accuracy = classifier.evaluate(
        make_tf_dataset(test_rows, collator, 100, labels=test_labels, shuffle=False), verbose=0)
    assert accuracy > 0.8


# ------------------------------------------------------------------------------------------ example scripts
def write_corpus(directory: Path):
    rng = np.random.default_rng(0)
    english = "the a man woman dog cat runs sits on in with red blue green street park".split()
    german = "der die das mann frau hund katze läuft sitzt auf im mit roten blauen grünen straße".split()
    lines = {lang: [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(120)]
             for lang, words in (("en", english), ("de", german))}
    text = directory / "train.txt"
    text.write_text("\n".join(lines["en"][:100] + [""] + lines["de"][:100]) + "\n")  # an empty line is skipped
    (directory / "val.txt").write_text("\n".join(lines["en"][100:] + lines["de"][100:]) + "\n")
    for split, part in (("train", slice(0, 100)), ("validation", slice(100, 120))):
        rows = [{"text": t, "label": 0} for t in lines["en"][part]] + [{"text": t, "label": 1} for t in lines["de"][part]]
        (directory / f"{split}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return directory


def run_example(name, argv):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import importlib

        module = importlib.import_module(name)
        return module.main(argv)
    finally:
        sys.path.remove(str(EXAMPLES))


def test_example_scripts_end_to_end(tmp_path, caplog):
    data = write_corpus(tmp_path)
    tiny = ["--d_model", "32", "--num_layers", "1", "--vocab_size", "120", "--max_seq_length", "24",
            "--num_train_epochs", "1", "--per_device_train_batch_size", "16", "--pad_to_max_length", "--no-jit_compile"]

    mlm_dir = tmp_path / "mlm"
    mlm = run_example("run_mlm", ["--model_name_or_path", "bert-base", "--train_file", str(data / "train.txt"),
                                  "--validation_file", str(data / "val.txt"), "--output_dir", str(mlm_dir), *tiny])
    assert {"eval_loss", "eval_accuracy", "perplexity"} <= set(mlm) and np.isfinite(mlm["eval_loss"])
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "all_results.json"} <= {
        p.name for p in mlm_dir.iterdir()}
    reloaded = TransformerForMaskedLM.from_pretrained(mlm_dir)
    assert reloaded.config.d_model == 32 and reloaded.config.mask_token_id == 4

    clm = run_example("run_clm", ["--model_name_or_path", "gpt", "--train_file", str(data / "train.txt"),
                                  "--output_dir", str(tmp_path / "clm"), "--validation_split_percentage", "10", *tiny])
    assert clm["perplexity"] == pytest.approx(np.exp(clm["eval_loss"])) and clm["perplexity"] < 120
    gpt = TransformerForCausalLM.from_pretrained(tmp_path / "clm")
    assert gpt.config.architecture == "decoder" and gpt.config.num_decoder_layers == 1

    with caplog.at_level(logging.WARNING, logger="vanilla_transformer.examples"):
        classification = run_example("run_classification", [
            "--model_name_or_path", str(mlm_dir), "--train_file", str(data / "train.jsonl"),
            "--validation_file", str(data / "validation.jsonl"), "--label_names", "en", "de",
            "--output_dir", str(tmp_path / "cls"), "--num_train_epochs", "2", "--max_seq_length", "24",
            "--learning_rate", "1e-3", "--per_device_train_batch_size", "16", "--pad_to_max_length",
            "--no-jit_compile"])
    assert classification["loading_info"]["missing_keys"] == ["classifier.bias", "classifier.kernel"]
    assert "mlm_dense.kernel" in classification["loading_info"]["unexpected_keys"]
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "classifier.kernel" in warnings and "mlm_dense.kernel" in warnings
    assert classification["eval_accuracy"] > 0.5
    saved = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert saved["architectures"] == ["TransformerForSequenceClassification"]
    assert saved["id2label"] == {"0": "en", "1": "de"}


def test_example_push_to_hub(tmp_path, monkeypatch):
    """``--push_to_hub --hub_model_id`` uploads what the example saves (against tests/hub_server.py's local Hub)."""
    hub_server = pytest.importorskip("hub_server")
    from huggingface_hub import constants

    server = hub_server.HubServer(tmp_path / "store", tokens={"hf_alice": "alice"}).start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-login" / "stored_tokens"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        sys.path.insert(0, str(EXAMPLES))
        try:
            import _common
        finally:
            sys.path.remove(str(EXAMPLES))
        args = _common.parse_args(_common.build_parser("test", "bert-base"), [
            "--train_file", "unused.txt", "--output_dir", str(tmp_path / "out"), "--push_to_hub",
            "--hub_model_id", "alice/tiny-mlm", "--hub_token", "hf_alice"])
        tokenizer = _common.new_tokenizer(["a man runs", "two dogs play", "a woman sits"] * 5, vocab_size=40)
        model = TransformerForMaskedLM(encoder_config(vocab_size=len(tokenizer))).build_weights()
        _common.save(model, tokenizer, args, {"eval_loss": 1.5, "eval_accuracy": 0.5}, "test", "corpus.txt")
        assert set(server.files("alice/tiny-mlm")) >= {"config.json", "model.safetensors", "tokenizer.json",
                                                       "README.md"}
        loaded = TransformerForMaskedLM.from_pretrained("alice/tiny-mlm")
        for name, variable in model.named_variables().items():
            np.testing.assert_array_equal(variable.numpy(), loaded.named_variables()[name].numpy())
        assert "accuracy" in server.files("alice/tiny-mlm")["README.md"].decode()
    finally:
        server.stop()
