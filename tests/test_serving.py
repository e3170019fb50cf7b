"""Deployment of a translator trained here on real sentences (Multi30k): a TensorFlow Serving SavedModel with
the decoding loop inside (loaded where this package cannot be imported), LiteRT, transformers text to text,
and the ``export`` command."""

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from vanilla_transformer import (TransformerConfig, TransformerForCausalLM, TransformerForSeq2SeqLM, export_to_transformers,
                                 train_bpe_tokenizer)
from vanilla_transformer.cli import main
from vanilla_transformer.data_collators import Seq2SeqCollator
from vanilla_transformer.number_words import make_splits
from vanilla_transformer.optimization import transformer_optimizer
from vanilla_transformer.serving import export_litert, export_saved_model, pad_source

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = Path(os.environ.get("MULTI30K_DIR", ROOT.parent / "shared" / "data" / "multi30k"))
MAX_NEW_TOKENS = 24


def read_lines(name: str, count: int) -> list[str]:
    """The first ``count`` lines of a Multi30k file (``train.en``, ``val.de``, ...), or, where the corpus is not
    beside the project, of the embedded number-words task (English / German sentences generated here)."""
    if not MULTI30K.is_dir():
        split, language = name.split(".")
        train, held_out = make_splits(num_train=6000, num_test=100, max_number=99_999, seed=3)
        return [pair[language == "de"] for pair in (train if split == "train" else held_out)[:count]]
    with gzip.open(MULTI30K / f"{name}.gz", "rt", encoding="utf-8") as f:
        return [next(f).strip() for _ in range(count)]


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    """A small En->De model trained ~1 minute on 6,000 Multi30k pairs (non-degenerate, imperfect output),
    saved with its tokenizer (number-words pairs where Multi30k is not at ../shared or $MULTI30K_DIR)."""
    english, german = read_lines("train.en", 6000), read_lines("train.de", 6000)
    tokenizer = train_bpe_tokenizer(english + german, vocab_size=1000, split_punctuation=True)
    pairs = [(s, t) for s, t in zip(tokenizer(english)["input_ids"], tokenizer(german)["input_ids"])
             if len(s) <= 24 and len(t) <= 24]
    keras.utils.set_random_seed(0)
    config = TransformerConfig(vocab_size=len(tokenizer), d_model=64, num_heads=4, d_ff=128, num_encoder_layers=2,
                               num_decoder_layers=2, dropout=0.1, max_position_embeddings=64)
    inputs, labels = Seq2SeqCollator(config.pad_token_id, config.decoder_start_token_id, config.vocab_size,
                                     pad_to_multiple_of=8)(*map(list, zip(*pairs)))
    model = TransformerForSeq2SeqLM(config)
    model.compile(optimizer=transformer_optimizer(64, warmup_steps=200))
    model.fit(inputs, labels, batch_size=64, epochs=5, verbose=0)
    directory = model.save_pretrained(tmp_path_factory.mktemp("translator"), tokenizer=tokenizer)
    return model, tokenizer, directory


@pytest.fixture(scope="module")
def sources(translator):
    """Validation sentences as one batch of 6 rows (mixed lengths, right-padded, masks; filled to a bucket of 8
    inside the graph as in generate); one batch shape keeps the XLA compilations of both processes few."""
    _, tokenizer, _ = translator
    encoded = tokenizer(read_lines("val.en", 7)[1:], padding=True, return_tensors="np")
    batches = {"six": (encoded["input_ids"].astype("int32"), encoded["attention_mask"].astype("int32"))}
    assert len(set(batches["six"][1].sum(1).tolist())) >= 3, "want sources of several lengths"
    return batches


SERVING_SETTINGS = {"greedy": dict(num_beams=1), "beam4": dict(num_beams=4, num_return_sequences=2)}


@pytest.fixture(scope="module")
def saved_model(translator, tmp_path_factory):
    """``saved_model(name)``: the translator exported once per ``SERVING_SETTINGS`` entry, shared by the tests
    (each export traces the decoding loop once per batch bucket up to ``max_batch_size``: ~20-30 s)."""
    model, tokenizer, _ = translator
    paths = {}

    def export(name):
        if name not in paths:
            paths[name] = export_saved_model(model, tmp_path_factory.mktemp(name) / "translator", tokenizer,
                                             max_new_tokens=MAX_NEW_TOKENS, max_batch_size=8,
                                             **SERVING_SETTINGS[name])
        return paths[name]
    return export


@pytest.fixture(scope="module")
def served(saved_model, sources, tmp_path_factory):
    """The outputs of every ``SERVING_SETTINGS`` SavedModel for ``sources``, served by one fresh process."""
    folder = tmp_path_factory.mktemp("served")
    np.savez(folder / "requests.npz", **{f"{name}.{key}": array for name, (ids, mask) in sources.items()
                                         for key, array in (("input_ids", ids), ("attention_mask", mask))})
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "serve_saved_model.py"),
                          str(folder / "requests.npz"), str(folder / "outputs.npz"),
                          *(f"{kind}={saved_model(kind)}" for kind in SERVING_SETTINGS)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "vanilla_transformer imported: False" in run.stdout
    return dict(np.load(folder / "outputs.npz"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", SERVING_SETTINGS)
def test_saved_model_returns_the_ids_of_generate(translator, saved_model, served, sources, kind):
    model, tokenizer, _ = translator
    settings, path = SERVING_SETTINGS[kind], saved_model(kind)
    for name, (ids, mask) in sources.items():
        expected = model.generate(ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS,
                                  return_dict_in_generate=True, output_scores=True, **settings)
        np.testing.assert_array_equal(served[f"{kind}.{name}.sequences"], expected["sequences"], err_msg=name)
        # beam search: the length-normalised beam scores; greedy: the summed log-probabilities of the ids,
        # transformers' sum of normalised transition scores (greedy outputs carry no sequences_scores)
        scores = expected.get("sequences_scores")
        if scores is None:
            scores = model.compute_transition_scores(expected.sequences, expected.scores, normalize_logits=True)
            scores = np.where(np.cumsum(expected.sequences[:, 1:] == model.generation_config.eos_token_id, axis=1)
                              - (expected.sequences[:, 1:] == model.generation_config.eos_token_id) > 0, 0.0,
                              scores).sum(-1)
        np.testing.assert_allclose(served[f"{kind}.{name}.sequences_scores"], scores, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    translations = tokenizer.batch_decode(served[f"{kind}.six.sequences"], skip_special_tokens=True)
    # Multi30k sentences translate to sentences; the number-words fallback's held-out numbers may be one word
    min_words = 3 if MULTI30K.is_dir() else 1
    assert len(set(translations)) >= 4 and all(len(t.split()) >= min_words for t in translations), translations
    assert (path / "assets.extra" / "tokenizer" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_saved_model_signature_is_what_tensorflow_serving_loads(saved_model):
    path = saved_model("beam4")
    cli = shutil.which("saved_model_cli")
    assert cli, "saved_model_cli (installed with tensorflow) is not on PATH"
    shown = subprocess.run([cli, "show", "--dir", str(path), "--tag_set", "serve", "--signature_def",
                            "serving_default"], capture_output=True, text=True, timeout=300).stdout
    inputs, outputs = shown.split("output(s):")
    for name in ("input_ids", "attention_mask"):
        block = inputs.split(f"inputs['{name}'] tensor_info:")[1].split("name:")[0]
        assert "dtype: DT_INT32" in block and "shape: (-1, -1)" in block, shown
    sequences = outputs.split("outputs['sequences'] tensor_info:")[1].split("name:")[0]
    assert "dtype: DT_INT32" in sequences and "shape: (-1, -1)" in sequences, shown
    scores = outputs.split("outputs['sequences_scores'] tensor_info:")[1].split("name:")[0]
    assert "dtype: DT_FLOAT" in scores and "shape: (-1)" in scores, shown
    assert "Method name is: tensorflow/serving/predict" in shown


def test_saved_model_refuses_requests_it_cannot_serve(translator, tmp_path):
    model, _, _ = translator
    serve = tf.saved_model.load(str(export_saved_model(model, tmp_path / "t", max_new_tokens=4,
                                                       max_batch_size=2))).signatures["serving_default"]
    ids = np.full((3, 4), 5, "int32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch_size=2"):
        serve(input_ids=tf.constant(ids), attention_mask=tf.constant(np.ones_like(ids)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ in shape"):
        serve(input_ids=tf.constant(ids[:2]), attention_mask=tf.constant(np.ones((2, 3), "int32")))
    with pytest.raises(ValueError, match="only greedy and beam search"):
        export_saved_model(model, tmp_path / "s", do_sample=True)
    decoder = TransformerForCausalLM(TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16,
                                                       architecture="decoder", num_decoder_layers=1))
    with pytest.raises(ValueError, match="only encoder-decoder translators"):
        export_saved_model(decoder, tmp_path / "d")


@pytest.mark.slow
def test_litert_translator_returns_the_ids_of_generate(translator, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model, tokenizer, _ = translator
    path = export_litert(model, tmp_path / "translator.tflite", source_length=64, max_new_tokens=MAX_NEW_TOKENS)
    translate = Interpreter(model_path=str(path)).get_signature_runner()
    encoded = tokenizer(read_lines("val.en", 8), padding=True, return_tensors="np")
    # one batched call: generate's rows equal one-by-one decoding (test_generation checks that)
    expected = model.generate(encoded["input_ids"], attention_mask=encoded["attention_mask"],
                              max_new_tokens=MAX_NEW_TOKENS)
    for ids, mask, row in zip(encoded["input_ids"], encoded["attention_mask"], expected):
        out = translate(**dict(zip(("input_ids", "attention_mask"), pad_source(ids[mask == 1].tolist(), 64))))
        assert out["sequences"][0, : out["length"][0]].tolist() == row[: out["length"][0]].tolist()
        assert (row[out["length"][0]:] == model.config.pad_token_id).all()  # the batch's longer rows: pad after
    with pytest.raises(ValueError, match="decodes greedily"):
        export_litert(model, tmp_path / "beam.tflite", num_beams=2)
    with pytest.raises(ValueError, match="do not fit"):
        pad_source(list(range(70)), 64)


@pytest.mark.slow
@pytest.mark.parametrize("settings", [dict(num_beams=1), dict(num_beams=4)], ids=["greedy", "beam4"])
def test_transformers_translates_to_the_same_strings(translator, settings, tmp_path):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model, tokenizer, _ = translator
    path = export_to_transformers(model, tmp_path / "marian", tokenizer)
    hf_tokenizer = AutoTokenizer.from_pretrained(path)
    hf_model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    texts = read_lines("val.en", 12)
    with torch.no_grad():
        ids = hf_model.generate(**hf_tokenizer(texts, return_tensors="pt", padding=True),
                                max_new_tokens=MAX_NEW_TOKENS, **settings)
    theirs = hf_tokenizer.batch_decode(ids, skip_special_tokens=True)
    ours = model.translate(texts, tokenizer, max_new_tokens=MAX_NEW_TOKENS, **settings)
    assert theirs == ours
    assert len(set(ours)) >= 10, ours


@pytest.mark.slow
def test_export_command(translator, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    model, tokenizer, directory = translator
    out = tmp_path / "cli" / "translator.tflite"
    assert main(["export", str(directory), str(out), "--to", "litert", "--max-new-tokens", "12",
                 "--source-length", "24"]) == 0
    assert f"wrote {out} (litert: max_new_tokens=12)" in capsys.readouterr().out
    ids = tokenizer(read_lines("val.en", 1))["input_ids"][0]
    result = Interpreter(model_path=str(out)).get_signature_runner()(
        **dict(zip(("input_ids", "attention_mask"), pad_source(ids, 24))))
    expected = model.generate(np.array([ids], "int32"), max_new_tokens=12)[0]
    assert result["sequences"][0, : result["length"][0]].tolist() == expected.tolist()
    assert (out.parent / "tokenizer" / "tokenizer.json").is_file()
    assert main(["export", str(directory), str(tmp_path / "m"), "--to", "transformers", "--num-beams", "2"]) == 2
    assert "do not apply to --to transformers" in capsys.readouterr().err
