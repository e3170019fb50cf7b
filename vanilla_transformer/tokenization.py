"""Shared source/target BPE vocabularies trained with the ``tokenizers`` library (section 5.1).

The result is a ``transformers.PreTrainedTokenizerFast``: ``save_pretrained`` writes ``tokenizer.json``
and ``tokenizer_config.json``, and ``transformers.AutoTokenizer.from_pretrained`` loads them back.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK, MASK = "<pad>", "<s>", "</s>", "<unk>", "<mask>"
# Fixed ids, matching the defaults of TransformerConfig (pad 0, bos/decoder start 1, eos 2).
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, MASK]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
                        add_eos: bool = True, split_punctuation: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-pair-encoding vocabulary on ``texts`` (source and target sentences together).

    Text is NFC-normalised and split on whitespace with the Metaspace scheme (the word boundary is part of
    the token), so decoding restores the spacing after the first word exactly. ``split_punctuation`` cuts every
    punctuation character into a word of its own before the merges are learned (Moses-style, but reversible:
    a mark has no word-boundary prefix, so "man." decodes back to "man."); without it BPE spends vocabulary on
    word+punctuation hybrids ("▁street.", "en,": about 1 in 6 entries of an 8k Multi30k vocabulary) and
    "street." shares nothing with "street". ``add_eos`` appends ``</s>`` to every encoded sequence, as the
    translation models expect. Special ids: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` 4.

    >>> tok = train_bpe_tokenizer(["hello world", "hallo welt"] * 10, vocab_size=60)
    >>> tok.decode(tok("hello world")["input_ids"], skip_special_tokens=True)
    'hello world'
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beside the {len(SPECIAL_TOKENS)} special tokens")
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.NFC()
    words = pre_tokenizers.Metaspace()
    tokenizer.pre_tokenizer = (pre_tokenizers.Sequence([words, pre_tokenizers.Punctuation()]) if split_punctuation
                               else words)
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if add_eos:
        eos_id = tokenizer.token_to_id(EOS)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   unk_token=UNK, mask_token=MASK)


class BPEDropoutEncoder:
    """Encode with BPE-dropout (Provilkov et al., 2020): a different segmentation of the same text each time.

    BPE merges the adjacent pair of symbols with the lowest merge rank until no pair merges. BPE-dropout drops
    every candidate merge with probability ``dropout`` at every step, so a word sometimes stays in smaller
    pieces ("▁street" as "▁str" + "eet"): the model sees each word under several segmentations of the same
    vocabulary, a regulariser that helps most on small corpora. With ``dropout=0`` the ids are the tokenizer's
    own. The draws come from ``random.Random(seed)``, so an encoder built with the same seed repeats them
    (``tokenizers``' own BPE dropout cannot be seeded).

    The text goes through the tokenizer's normaliser, pre-tokeniser and special tokens (those added to every
    sequence, e.g. ``</s>``) as in ``tokenizer(text)``; text that spells a special token is not recognised.

    Args:
        tokenizer: a ``transformers`` fast tokenizer (or a ``tokenizers.Tokenizer``) whose model is a plain
            BPE (no subword prefix or suffix, no byte fallback), such as :func:`train_bpe_tokenizer`'s.
        dropout: the probability of dropping a merge, in [0, 1).
        seed: seed of the draws.

    Example:
        >>> tok = train_bpe_tokenizer(["the street", "the streets", "a street"] * 20, vocab_size=40)
        >>> BPEDropoutEncoder(tok, dropout=0.0).encode(["the street"]) == [tok("the street")["input_ids"]]
        True
        >>> encoder = BPEDropoutEncoder(tok, dropout=0.5, seed=0)
        >>> pieces = {tuple(ids) for ids in encoder.encode(["the street"] * 20)}
        >>> len(pieces) > 1, {tok.decode(ids, skip_special_tokens=True) for ids in pieces}
        (True, {'the street'})
    """

    def __init__(self, tokenizer, dropout: float, seed: int = 0):
        import json
        import random

        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        model = json.loads(backend.to_str())["model"]
        unsupported = [k for k in ("continuing_subword_prefix", "end_of_word_suffix", "byte_fallback")
                       if model.get(k)]
        if model.get("type") != "BPE" or unsupported:
            raise ValueError(f"BPE-dropout needs a plain BPE tokenizer; this one is {model.get('type')} "
                             f"{unsupported or ''}".rstrip())
        self.backend, self.dropout, self.random = backend, dropout, random.Random(seed)
        self.vocab = model["vocab"]
        self.unk_id = self.vocab.get(model.get("unk_token"))
        merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
        self.ranks = {(a, b): rank for rank, (a, b) in enumerate(merges)}
        plain = backend.encode("a", add_special_tokens=False).ids
        full = backend.encode("a").ids
        start = next(i for i in range(len(full)) if full[i:i + len(plain)] == plain)
        self.prefix, self.suffix = full[:start], full[start + len(plain):]
        self.cache: dict[str, list[int]] = {}  # segmentations without dropout

    def encode(self, texts: Iterable[str], max_length: int | None = None) -> list[list[int]]:
        """The ids of each text, special tokens included, cut to ``max_length`` ids as ``truncation=True``."""
        room = None if max_length is None else max(0, max_length - len(self.prefix) - len(self.suffix))
        encoded = []
        for text in texts:
            if self.backend.normalizer is not None:
                text = self.backend.normalizer.normalize_str(text)
            words = ([w for w, _ in self.backend.pre_tokenizer.pre_tokenize_str(text)]
                     if self.backend.pre_tokenizer is not None else [text])
            ids = [i for word in words for i in self.word_ids(word)]
            encoded.append(self.prefix + ids[:room] + self.suffix)
        return encoded

    def word_ids(self, word: str) -> list[int]:
        """The ids of one pre-tokenised word, merges dropped with probability ``dropout``."""
        if not self.dropout and word in self.cache:
            return self.cache[word]
        ids = [self.vocab.get(piece, self.unk_id) for piece in self.merge(word)]
        if None in ids:
            raise ValueError(f"{word!r} has a character outside the vocabulary and the tokenizer has no unk_token")
        if not self.dropout:
            self.cache[word] = ids
        return ids

    def merge(self, word: str) -> list[str]:
        """BPE on the characters of ``word``: merge the lowest-ranked adjacent pair (leftmost on ties) among
        the pairs not dropped this step, until none is left."""
        symbols, ranks, draw, dropout = list(word), self.ranks, self.random.random, self.dropout
        while len(symbols) > 1:
            best, where = None, -1
            for i in range(len(symbols) - 1):
                rank = ranks.get((symbols[i], symbols[i + 1]))
                if rank is not None and (best is None or rank < best) and not (dropout and draw() < dropout):
                    best, where = rank, i
            if best is None:
                break
            symbols[where:where + 2] = [symbols[where] + symbols[where + 1]]
        return symbols
