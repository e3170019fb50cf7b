"""The shared BPE vocabulary of section 5.1: exact round trips, punctuation splitting, save and reload."""

import re

import pytest
from transformers import AutoTokenizer

from vanilla_transformer.tokenization import train_bpe_tokenizer

SENTENCES = [
    "A man in a red shirt walks down the street.",
    "Two dogs play in the water, near the street.",
    "A woman's T-Shirt is (very) red.",
    "Ein Mann in einem roten Hemd geht die Straße entlang.",
    "Zwei Hunde spielen im Wasser, nahe der Straße.",
    "Das T-Shirt einer Frau ist (sehr) rot.",
    'Er sagt "ja", zweimal! Übergröße? Nice.',
]
CORPUS = SENTENCES * 20  # repeated so every merge clears min_frequency
TRICKY = ["A man's T-Shirt, (red) ... \"yes\"  twice ", "Straße. Über-Übergröße!", "street."]


@pytest.mark.parametrize("split_punctuation", [False, True])
def test_decode_restores_the_text_exactly(split_punctuation):
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=120, split_punctuation=split_punctuation)
    for text in SENTENCES + TRICKY:
        ids = tokenizer(text)["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_split_punctuation_keeps_marks_out_of_word_tokens():
    merged = train_bpe_tokenizer(CORPUS, vocab_size=120)
    split = train_bpe_tokenizer(CORPUS, vocab_size=120, split_punctuation=True)

    def hybrids(tokenizer):  # tokens with both a letter and a punctuation mark
        return [t for t in tokenizer.get_vocab() if re.search(r"[^\W_]", t) and re.search(r"[.,()'\-]", t)]

    assert hybrids(merged), "the corpus should make plain BPE learn e.g. '▁street.'"
    assert hybrids(split) == []
    # "street." is the tokens of "street" followed by ".": the word is shared with its unpunctuated form
    plain = split.convert_ids_to_tokens(split("the street")["input_ids"])
    assert split.convert_ids_to_tokens(split("the street.")["input_ids"]) == plain[:-1] + [".", "</s>"]


def test_split_punctuation_survives_save_and_reload(tmp_path):
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=120, split_punctuation=True)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in TRICKY:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert reloaded.decode(reloaded(text)["input_ids"], skip_special_tokens=True) == text
