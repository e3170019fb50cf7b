"""Padding and collation: lists of token ids -> padded ``(inputs, labels)`` batches for ``model.fit``.

One padding implementation (:func:`pad_batch`, :func:`padding_mask`) serves every collator:

- :class:`Seq2SeqCollator`: teacher forcing for the encoder-decoder (section 5): decoder inputs are the
  labels shifted right behind the start token (:func:`shift_tokens_right`);
- :class:`DataCollatorForMaskedLM`: BERT's masked-language-model corruption (15% of the non-special tokens
  are chosen; of those 80% become the mask token, 10% a random token, 10% stay) with labels -100 elsewhere;
- :class:`DataCollatorForCausalLM`: labels = inputs (padding -> -100); the one-token shift happens in
  :class:`~vanilla_transformer.losses.CausalLMLoss`, as in transformers' ``*ForCausalLM`` models;
- :class:`DataCollatorForSequenceClassification`: padded inputs and one integer label per row.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .losses import IGNORE_INDEX


def pad_batch(rows: Sequence[Sequence[int]], pad_value: int, length: int | None = None) -> np.ndarray:
    """Right-pad lists of ids into an int32 array ``(len(rows), length or longest row)``; longer rows are cut.

    >>> pad_batch([[5, 6, 7], [8]], pad_value=0)
    array([[5, 6, 7],
           [8, 0, 0]], dtype=int32)
    """
    length = length or max((len(row) for row in rows), default=0)
    out = np.full((len(rows), length), pad_value, dtype="int32")
    for i, row in enumerate(rows):
        row = list(row)[:length]
        out[i, : len(row)] = row
    return out


def padding_mask(lengths: Sequence[int], length: int) -> np.ndarray:
    """int32 ``(len(lengths), length)``: 1 at the first ``lengths[i]`` positions of row i, 0 after (padding).

    >>> padding_mask([3, 1], 4)
    array([[1, 1, 1, 0],
           [1, 0, 0, 0]], dtype=int32)
    """
    return (np.arange(length)[None, :] < np.asarray(lengths, dtype="int64").reshape(-1, 1)).astype("int32")


def bucket_length(length: int, multiple: int = 8) -> int:
    """Round a length up to a multiple (at least one multiple), so XLA sees few distinct shapes.

    >>> bucket_length(13), bucket_length(0), bucket_length(5, multiple=4)
    (16, 8, 8)
    """
    return max(multiple, -(-length // multiple) * multiple)


def shift_tokens_right(labels: np.ndarray, decoder_start_token_id: int, pad_token_id: int) -> np.ndarray:
    """Teacher forcing: ``decoder_input_ids`` = ``[start] + labels[:-1]``, with -100 replaced by pad.

    ``labels (batch, tgt) -> (batch, tgt)``.

    >>> shift_tokens_right(np.array([[7, 8, 2, -100]]), decoder_start_token_id=1, pad_token_id=0)
    array([[1, 7, 8, 2]])
    """
    labels = np.asarray(labels)
    shifted = np.empty_like(labels)
    shifted[:, 0] = decoder_start_token_id
    shifted[:, 1:] = labels[:, :-1]
    shifted[shifted == IGNORE_INDEX] = pad_token_id
    return shifted



def id_rows(examples) -> list[list[int]]:
    """Lists of ids from lists/arrays of ids or from dicts holding ``input_ids``.

    ``examples``: an iterable of id sequences (lists, 1-D arrays) or of dicts with an ``input_ids`` entry
    (rows of a tokenized ``datasets.Dataset``) -> a ``list`` of ``list`` of ids, one per example (the ids keep
    their type: numpy integers stay numpy integers).

    Example:
        >>> from vanilla_transformer.data_collators import id_rows
        >>> id_rows([[5, 6], {"input_ids": [7, 8, 9], "attention_mask": [1, 1, 1]}, (3,)])
        [[5, 6], [7, 8, 9], [3]]
    """
    return [list(example["input_ids"] if isinstance(example, dict) else example) for example in examples]


def _pad_rows(rows: Sequence[Sequence[int]], pad_token_id: int, pad_to_multiple_of: int | None,
         max_length: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad (and truncate to ``max_length``) into int32 ``input_ids`` and ``attention_mask``.

    The padded length is the longest row rounded up to ``pad_to_multiple_of`` (few distinct shapes for XLA),
    never more than ``max_length``.
    """
    if not rows:
        raise ValueError("cannot collate an empty batch")
    rows = [row[:max_length] if max_length else row for row in rows]
    longest = max(len(row) for row in rows)
    length = bucket_length(longest, pad_to_multiple_of) if pad_to_multiple_of else max(longest, 1)
    if max_length:
        length = min(length, max_length)
    return pad_batch(rows, pad_token_id, length), padding_mask([min(len(row), length) for row in rows], length)



class Seq2SeqCollator:
    """Turns (source ids, target ids) pairs into one teacher-forced batch ``(inputs, labels)``.

    ``inputs`` holds ``input_ids``, ``attention_mask``, ``decoder_input_ids`` and
    ``decoder_attention_mask``; ``labels`` are the target ids padded with -100. Lengths are rounded up
    to ``pad_to_multiple_of``. Ids are checked against ``vocab_size`` here, where they are concrete.

    Args:
        pad_token_id: id of the padding in ``input_ids`` and ``decoder_input_ids``.
        decoder_start_token_id: the first decoder input (``config.decoder_start_token_id``).
        vocab_size: when given, ids outside ``[0, vocab_size)`` raise ``ValueError``.
        pad_to_multiple_of: padded lengths are rounded up to a multiple of this.

    ``collator(sources, targets, length=None, num_rows=None) -> (inputs, labels)``: lists of source and
    target ids (as many of each) -> int32 arrays ``input_ids`` / ``attention_mask`` ``(batch, src_len)``,
    ``decoder_input_ids`` / ``decoder_attention_mask`` ``(batch, tgt_len)`` and ``labels (batch, tgt_len)``.

    Example:
        >>> from vanilla_transformer.data_collators import Seq2SeqCollator
        >>> collator = Seq2SeqCollator(pad_token_id=0, decoder_start_token_id=1, vocab_size=20,
        ...                            pad_to_multiple_of=4)
        >>> inputs, labels = collator([[5, 6, 7], [8]], [[9, 10, 2], [11, 2]])
        >>> inputs["input_ids"]
        array([[5, 6, 7, 0],
               [8, 0, 0, 0]], dtype=int32)
        >>> labels
        array([[   9,   10,    2, -100],
               [  11,    2, -100, -100]], dtype=int32)
        >>> inputs["decoder_input_ids"]  # the labels shifted right behind the start token
        array([[ 1,  9, 10,  2],
               [ 1, 11,  2,  0]], dtype=int32)
        >>> inputs["decoder_attention_mask"]
        array([[1, 1, 1, 0],
               [1, 1, 0, 0]], dtype=int32)
    """

    def __init__(self, pad_token_id: int, decoder_start_token_id: int, vocab_size: int | None = None,
                 pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.decoder_start_token_id = decoder_start_token_id
        self.vocab_size = vocab_size
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], length: int | None = None,
                 num_rows: int | None = None):
        """Collate pairs; ``length`` fixes both padded lengths, ``num_rows`` adds empty rows up to that many."""
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        if self.vocab_size is not None:
            for name, rows in (("source", sources), ("target", targets)):
                for row in rows:
                    if len(row) and (min(row) < 0 or max(row) >= self.vocab_size):
                        raise ValueError(f"{name} ids outside [0, vocab_size={self.vocab_size}): {list(row)}")
        if num_rows is not None and num_rows > len(sources):
            extra = num_rows - len(sources)
            sources, targets = list(sources) + [[]] * extra, list(targets) + [[]] * extra
        src_len = length or bucket_length(max(len(s) for s in sources), self.pad_to_multiple_of)
        tgt_len = length or bucket_length(max(len(t) for t in targets), self.pad_to_multiple_of)
        input_ids = pad_batch(sources, self.pad_token_id, src_len)
        labels = pad_batch(targets, IGNORE_INDEX, tgt_len)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": padding_mask([len(s) for s in sources], src_len),
            "decoder_input_ids": shift_tokens_right(labels, self.decoder_start_token_id, self.pad_token_id),
            "decoder_attention_mask": padding_mask([len(t) for t in targets], tgt_len),
        }
        return inputs, labels



class DataCollatorForMaskedLM:
    """BERT's masked-language-model inputs (Devlin et al., 2019, section 3.1 and appendix A.1).

    Each non-special, non-padding position is chosen with probability ``mlm_probability`` (0.15). A chosen
    position becomes ``mask_token_id`` with probability ``mask_replace_prob`` (0.8), a random non-special
    token with probability ``random_replace_prob`` (0.1), and keeps its token otherwise (0.1). ``labels``
    hold the original id at chosen positions and -100 everywhere else, so the loss counts only those.

    ``collator(examples) -> ({"input_ids", "attention_mask"}, labels)``, all int32 ``(batch, length)``;
    ``examples`` are lists of ids (or dicts with ``input_ids``). Masks differ at every call (seeded rng).

    >>> collator = DataCollatorForMaskedLM(vocab_size=50, mask_token_id=4, pad_token_id=0,
    ...                                    special_token_ids=[0, 1, 2, 3, 4], seed=0)
    >>> inputs, labels = collator([[1, 10, 11, 12, 2], [1, 13, 2]])
    >>> inputs["input_ids"].shape, labels.shape
    ((2, 8), (2, 8))
    """

    def __init__(self, vocab_size: int, mask_token_id: int, pad_token_id: int = 0,
                 special_token_ids: Iterable[int] = (), mlm_probability: float = 0.15,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                 pad_to_multiple_of: int | None = 8, max_length: int | None = None, seed: int | None = 0):
        if mask_token_id is None:
            raise ValueError("masked language modelling needs a mask_token_id")
        if not 0 < mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1:
            raise ValueError("mask_replace_prob and random_replace_prob must be >= 0 with a sum <= 1")
        self.vocab_size = int(vocab_size)
        self.mask_token_id = int(mask_token_id)
        self.pad_token_id = int(pad_token_id)
        self.special_token_ids = sorted({int(i) for i in special_token_ids} | {self.pad_token_id, self.mask_token_id})
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length
        self.rng = np.random.default_rng(seed)
        self._random_pool = np.setdiff1d(np.arange(self.vocab_size), self.special_token_ids).astype("int32")
        if not len(self._random_pool):
            raise ValueError("the vocabulary has no non-special token to use as a random replacement")

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int | None = None, **kwargs) -> "DataCollatorForMaskedLM":
        """Ids taken from a transformers tokenizer (``mask_token_id``, ``pad_token_id``, ``all_special_ids``)."""
        return cls(vocab_size=vocab_size or len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                   pad_token_id=tokenizer.pad_token_id, special_token_ids=tokenizer.all_special_ids, **kwargs)

    def special_tokens_mask(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """True where a position may never be chosen: special ids and padding."""
        special = np.isin(input_ids, self.special_token_ids)
        if attention_mask is not None:
            special |= attention_mask == 0
        return special

    def mask_tokens(self, input_ids: np.ndarray, special_tokens_mask: np.ndarray | None = None):
        """Corrupt ``input_ids (batch, length)``; returns ``(corrupted ids, labels)`` (new arrays)."""
        input_ids = np.array(input_ids, dtype="int32", copy=True)
        if special_tokens_mask is None:
            special_tokens_mask = self.special_tokens_mask(input_ids)
        chosen = (self.rng.random(input_ids.shape) < self.mlm_probability) & ~special_tokens_mask
        labels = np.where(chosen, input_ids, IGNORE_INDEX).astype("int32")
        action = self.rng.random(input_ids.shape)
        replace = chosen & (action < self.mask_replace_prob)
        randomise = chosen & ~replace & (action < self.mask_replace_prob + self.random_replace_prob)
        input_ids[replace] = self.mask_token_id
        input_ids[randomise] = self.rng.choice(self._random_pool, size=int(randomise.sum()))
        return input_ids, labels

    def __call__(self, examples) -> tuple[dict[str, np.ndarray], np.ndarray]:
        input_ids, attention_mask = _pad_rows(id_rows(examples), self.pad_token_id, self.pad_to_multiple_of,
                                         self.max_length)
        corrupted, labels = self.mask_tokens(input_ids, self.special_tokens_mask(input_ids, attention_mask))
        return {"input_ids": corrupted, "attention_mask": attention_mask}, labels


class DataCollatorForCausalLM:
    """GPT-style batches: ``labels`` are the input ids with padding set to -100.

    The labels are *not* shifted here: :class:`CausalLMLoss` compares the logits at position t with the
    label at t + 1, as transformers' ``*ForCausalLM`` losses do. Padding positions are found from the row
    lengths, so a pad id equal to a real id (GPT-2 pads with its eos) is still counted where it is a token.

    ``collator(examples) -> ({"input_ids", "attention_mask"}, labels)``, int32 ``(batch, length)``.

    Args:
        pad_token_id: the padding id (None: 0; padding is recognised by position, not by id).
        pad_to_multiple_of: the padded length is rounded up to a multiple of this (None: the longest row).
        max_length: rows are cut to this many tokens.

    Example:
        >>> from vanilla_transformer.data_collators import DataCollatorForCausalLM
        >>> collator = DataCollatorForCausalLM(pad_token_id=0, pad_to_multiple_of=4)
        >>> inputs, labels = collator([[5, 6, 7], {"input_ids": [8, 9]}])
        >>> inputs["input_ids"]
        array([[5, 6, 7, 0],
               [8, 9, 0, 0]], dtype=int32)
        >>> labels  # unshifted; -100 at padding
        array([[   5,    6,    7, -100],
               [   8,    9, -100, -100]], dtype=int32)
    """

    def __init__(self, pad_token_id: int | None = 0, pad_to_multiple_of: int | None = 8,
                 max_length: int | None = None):
        self.pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length

    def __call__(self, examples) -> tuple[dict[str, np.ndarray], np.ndarray]:
        input_ids, attention_mask = _pad_rows(id_rows(examples), self.pad_token_id, self.pad_to_multiple_of,
                                         self.max_length)
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX).astype("int32")
        return {"input_ids": input_ids, "attention_mask": attention_mask}, labels


class DataCollatorForSequenceClassification:
    """Padded ``{"input_ids", "attention_mask"}`` and int32 ``labels (batch,)`` for sentence classification.

    ``collator(examples, labels) -> (inputs, labels)``; ``examples`` as for the other collators.

    Args:
        pad_token_id: the padding id.
        pad_to_multiple_of: the padded length is rounded up to a multiple of this (None: the longest row).
        max_length: rows are cut to this many tokens.

    Example:
        >>> from vanilla_transformer.data_collators import DataCollatorForSequenceClassification
        >>> collator = DataCollatorForSequenceClassification(pad_token_id=0, pad_to_multiple_of=None)
        >>> inputs, labels = collator([[1, 5, 6, 2], [1, 7, 2]], [1, 0])
        >>> inputs["attention_mask"]
        array([[1, 1, 1, 1],
               [1, 1, 1, 0]], dtype=int32)
        >>> labels
        array([1, 0], dtype=int32)
    """

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of: int | None = 8, max_length: int | None = None):
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length

    def __call__(self, examples, labels) -> tuple[dict[str, np.ndarray], np.ndarray]:
        rows = id_rows(examples)
        if len(rows) != len(labels):
            raise ValueError(f"{len(rows)} examples but {len(labels)} labels")
        input_ids, attention_mask = _pad_rows(rows, self.pad_token_id, self.pad_to_multiple_of, self.max_length)
        return {"input_ids": input_ids, "attention_mask": attention_mask}, np.asarray(labels, dtype="int32")
