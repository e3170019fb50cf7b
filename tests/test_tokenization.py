"""The shared BPE vocabulary of section 5.1: exact round trips, punctuation splitting, save and reload."""

import re

import pytest
from transformers import AutoTokenizer

from vanilla_transformer.tokenization import BPEDropoutEncoder, train_bpe_tokenizer

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


# ------------------------------------------------------------------------------------------ BPE-dropout
@pytest.mark.parametrize("split_punctuation", [False, True])
def test_bpe_dropout_at_zero_gives_the_tokenizers_own_ids(split_punctuation):
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=120, split_punctuation=split_punctuation)
    texts = SENTENCES + TRICKY + ["Ωmega ☃ unknown", ""]  # characters outside the vocabulary become <unk>
    encoder = BPEDropoutEncoder(tokenizer, dropout=0.0)
    assert encoder.encode(texts) == tokenizer(texts)["input_ids"]
    assert encoder.encode(texts, max_length=5) == tokenizer(texts, truncation=True, max_length=5)["input_ids"]


def test_bpe_dropout_draws_other_segmentations_of_the_same_text():
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=120, split_punctuation=True)
    texts = SENTENCES * 5
    plain = tokenizer(texts)["input_ids"]
    lengths = {}
    for dropout in (0.1, 0.5):
        sampled = BPEDropoutEncoder(tokenizer, dropout, seed=0).encode(texts)
        assert [tokenizer.decode(ids, skip_special_tokens=True) for ids in sampled] == texts
        assert all(ids[-1] == tokenizer.eos_token_id for ids in sampled)
        assert sampled != plain
        lengths[dropout] = sum(map(len, sampled))
    assert sum(map(len, plain)) < lengths[0.1] < lengths[0.5]  # more dropout, smaller pieces
    assert BPEDropoutEncoder(tokenizer, 0.1, seed=3).encode(texts) == BPEDropoutEncoder(tokenizer, 0.1, 3).encode(texts)
    assert BPEDropoutEncoder(tokenizer, 0.1, seed=3).encode(texts) != BPEDropoutEncoder(tokenizer, 0.1, 4).encode(texts)


def test_bpe_dropout_drops_a_single_merge_with_its_probability():
    """A word of two characters with one merge stays split exactly when that merge is dropped: probability p."""
    tokenizer = train_bpe_tokenizer(["ab"] * 50, vocab_size=9)  # 5 special tokens, "▁", "a", "b" and one merge
    encoder = BPEDropoutEncoder(tokenizer, dropout=0.3, seed=0)
    [(left, right)] = encoder.ranks
    split = sum(encoder.merge(left + right) == [left, right] for _ in range(4000)) / 4000
    assert abs(split - 0.3) < 0.03, split  # 4 standard deviations


def test_bpe_dropout_refuses_bad_arguments():
    from tokenizers import Tokenizer, models

    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=120)
    for dropout in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
            BPEDropoutEncoder(tokenizer, dropout)
    with pytest.raises(ValueError, match="needs a plain BPE tokenizer; this one is WordLevel"):
        BPEDropoutEncoder(Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")), 0.1)
