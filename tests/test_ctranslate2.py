"""CTranslate2 as a deploy target: a translator trained here on Multi30k, exported with
``export_for_serving(to="ctranslate2")`` / ``vanilla-transformer export --to ctranslate2``, translates the
Multi30k test sentences with the ids of ``model.generate`` (float32, greedy and beam 4)."""

import gzip
import json
import os
from pathlib import Path

import keras
import pytest

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM, train_bpe_tokenizer
from vanilla_transformer.cli import main
from vanilla_transformer.convert.ctranslate2 import (ctranslate2_generate, ctranslate2_options, ctranslate2_translate,
                                                     ctranslate2_vocabulary)
from vanilla_transformer.data_collators import Seq2SeqCollator
from vanilla_transformer.number_words import make_splits
from vanilla_transformer.optimization import transformer_optimizer

pytestmark = pytest.mark.slow  # end-to-end: runs with RUN_SLOW=1

ctranslate2 = pytest.importorskip("ctranslate2")

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = Path(os.environ.get("MULTI30K_DIR", ROOT.parent / "shared" / "data" / "multi30k"))
MAX_NEW_TOKENS = 24
SETTINGS = {"greedy": dict(num_beams=1), "beam4": dict(num_beams=4, early_stopping=True),
            "beam4-lp0.6": dict(num_beams=4, early_stopping=True, length_penalty=0.6)}


def read_lines(name: str, count: int) -> list[str]:
    """The first ``count`` lines of a Multi30k file (``train.en``, ``test_2016_flickr.de``, ...), or, where the
    corpus is not beside the project, of the embedded number-words task."""
    if not MULTI30K.is_dir():
        split, language = name.split(".")
        train, held_out = make_splits(num_train=3000, num_test=48, max_number=99_999, seed=3)
        return [pair[language == "de"] for pair in (train if split == "train" else held_out)[:count]]
    with gzip.open(MULTI30K / f"{name}.gz", "rt", encoding="utf-8") as f:
        return [next(f).strip() for _ in range(count)]


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    """A one-layer En->De model trained briefly on 3,000 Multi30k pairs (varied, imperfect output), saved with its
    tokenizer. Its decoder starts from <s> (1), not from <pad> (0) as OPUS-MT's do, and its vocabulary has 8 rows
    past the tokenizer's (as when rounded up to a multiple of 8)."""
    english, german = read_lines("train.en", 3000), read_lines("train.de", 3000)
    tokenizer = train_bpe_tokenizer(english + german, vocab_size=1000, split_punctuation=True)
    pairs = [(s, t) for s, t in zip(tokenizer(english)["input_ids"], tokenizer(german)["input_ids"])
             if len(s) <= 32 and len(t) <= 32]
    keras.utils.set_random_seed(0)
    config = TransformerConfig(vocab_size=len(tokenizer) + 8, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.0, max_position_embeddings=64)
    assert (config.pad_token_id, config.decoder_start_token_id, config.eos_token_id) == (0, 1, 2)
    inputs, labels = Seq2SeqCollator(config.pad_token_id, config.decoder_start_token_id, config.vocab_size,
                                     pad_to_multiple_of=8)(*map(list, zip(*pairs)))
    model = TransformerForSeq2SeqLM(config)
    model.compile(optimizer=transformer_optimizer(32, warmup_steps=100), jit_compile=False)  # no XLA: starts faster
    model.fit(inputs, labels, batch_size=64, epochs=3, verbose=0)
    directory = model.save_pretrained(tmp_path_factory.mktemp("translator"), tokenizer=tokenizer)
    return model, tokenizer, directory


@pytest.fixture(scope="module")
def exported(translator, tmp_path_factory):
    model, tokenizer, _ = translator
    return model.export_for_serving(tmp_path_factory.mktemp("ct2") / "model", to="ctranslate2", tokenizer=tokenizer)


@pytest.fixture(scope="module")
def multi30k_test_sentences(translator):
    """48 Multi30k test sentences, padded as one batch (for generate) and as id lists without padding."""
    _, tokenizer, _ = translator
    batch = tokenizer(read_lines("test_2016_flickr.en", 48), padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype("int32"), batch["attention_mask"].astype("int32")
    return ids, mask, [row[m.astype(bool)].tolist() for row, m in zip(ids, mask)]


def until_eos(row, eos: int) -> list[int]:
    """A row of ``generate`` without the padding after its end token."""
    row = [int(i) for i in row]
    return row[: row.index(eos) + 1] if eos in row else row


@pytest.fixture(scope="module")
def ours(translator, multi30k_test_sentences):
    """``ours(name)``: our ids for the test sentences with ``SETTINGS[name]``, each decoded once."""
    model, _, _ = translator
    ids, mask, _ = multi30k_test_sentences
    done = {}

    def generate(name):
        if name not in done:
            rows = model.generate(ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS, **SETTINGS[name])
            done[name] = [until_eos(row, 2) for row in rows]
        return done[name]

    return generate


@pytest.mark.parametrize("name", list(SETTINGS))
def test_ctranslate2_translates_multi30k_with_our_ids(translator, exported, multi30k_test_sentences, ours, name):
    model, tokenizer, _ = translator
    _, _, unpadded = multi30k_test_sentences
    settings = dict(SETTINGS[name], max_new_tokens=MAX_NEW_TOKENS)
    ours = ours(name)
    engine = ctranslate2.Translator(str(exported), device="cpu", intra_threads=1)
    theirs = ctranslate2_generate(engine, ctranslate2_vocabulary(tokenizer, model.config.vocab_size), unpadded,
                                  model.config.decoder_start_token_id, **settings)
    distinct = len({tuple(row) for row in ours})
    # 36 distinct of 48 with one intra-op thread (as under xdist in CI), more with two: a varied, not degenerate model
    assert distinct > 30, f"the model should translate the sentences differently ({distinct} distinct of 48)"
    assert sum(row[-1] == 2 for row in ours) > 24, "most translations should end before the length limit"
    mismatches = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not mismatches, f"{len(mismatches)}/{len(ours)} differ, first: {mismatches[0]}"


def test_the_export_keeps_our_vocabulary_special_tokens_and_tokenizer(translator, exported, ours):
    model, tokenizer, _ = translator
    config = json.loads((exported / "config.json").read_text())
    assert (config["decoder_start_token"], config["eos_token"], config["unk_token"]) == ("<s>", "</s>", "<unk>")
    assert not config["add_source_bos"] and not config["add_source_eos"]  # the tokenizer adds </s> itself
    vocabulary = json.loads((exported / "shared_vocabulary.json").read_text())
    assert len(vocabulary) == model.config.vocab_size == len(tokenizer) + 8  # no row dropped
    assert vocabulary[: len(tokenizer)] == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert vocabulary[0] == "<pad>" and vocabulary[-1] == f"<unused_{model.config.vocab_size - 1}>"
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(exported)  # the tokenizer saved beside the model
    sentences = read_lines("test_2016_flickr.en", 48)
    assert reloaded(sentences)["input_ids"] == tokenizer(sentences)["input_ids"]
    engine = ctranslate2.Translator(str(exported), intra_threads=1)
    assert ctranslate2_translate(engine, reloaded, sentences, max_new_tokens=MAX_NEW_TOKENS) == (
        tokenizer.batch_decode(ours("greedy"), skip_special_tokens=True))  # what model.translate returns


def test_export_command_writes_int8_and_refuses_what_does_not_apply(translator, exported, tmp_path, capsys):
    _, tokenizer, directory = translator
    out = tmp_path / "int8"
    assert main(["export", str(directory), str(out), "--to", "ctranslate2", "--quantization", "int8"]) == 0
    assert "(ctranslate2: quantization=int8)" in capsys.readouterr().out
    assert (out / "model.bin").stat().st_size < 0.6 * (exported / "model.bin").stat().st_size
    engine = ctranslate2.Translator(str(out), intra_threads=1)
    assert engine.compute_type.startswith("int8")
    translations = ctranslate2_translate(engine, tokenizer, read_lines("test_2016_flickr.en", 4), num_beams=4,
                                         early_stopping=True, max_new_tokens=MAX_NEW_TOKENS)
    assert all(isinstance(text, str) for text in translations) and any(translations)

    with pytest.raises(ValueError, match="quantization='int4'"):
        main(["export", str(directory), str(tmp_path / "x"), "--to", "ctranslate2", "--quantization", "int4"])
    assert main(["export", str(directory), str(tmp_path / "x"), "--to", "ctranslate2", "--num-beams", "4"]) == 2
    assert "do not apply to --to ctranslate2" in capsys.readouterr().err
    assert main(["export", str(directory), str(tmp_path / "x"), "--to", "transformers", "--quantization",
                 "int8"]) == 2
    assert "--quantization applies to --to ctranslate2 only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_refusals_name_the_parameter(translator, tmp_path):
    model, tokenizer, _ = translator
    with pytest.raises(ValueError, match="tokenizer=None"):
        model.export_for_serving(tmp_path / "a", to="ctranslate2")
    with pytest.raises(ValueError, match=r"no decoding settings \(got \['num_beams'\]\)"):
        model.export_for_serving(tmp_path / "a", to="ctranslate2", tokenizer=tokenizer, num_beams=4)
    with pytest.raises(ValueError, match="early_stopping=False"):
        ctranslate2_options(num_beams=4, early_stopping=False)
    with pytest.raises(ValueError, match="length_penalty=0"):
        ctranslate2_options(num_beams=4, early_stopping=True, length_penalty=0)
    several_eos = TransformerForSeq2SeqLM(TransformerConfig(vocab_size=len(tokenizer), d_model=8, num_heads=2,
                                                            d_ff=16, num_encoder_layers=1, num_decoder_layers=1))
    several_eos.generation_config.eos_token_id = [2, 5]
    with pytest.raises(ValueError, match=r"eos_token_id=\[2, 5\]"):
        several_eos.export_for_serving(tmp_path / "a", to="ctranslate2", tokenizer=tokenizer)
    assert not (tmp_path / "a").exists()

