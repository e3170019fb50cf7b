"""Padding and collation: lists of token ids -> padded ``(inputs, labels)`` batches for ``model.fit``.

One padding implementation (:func:`~vanilla_transformer.padding_and_random.pad_batch`,
:func:`~vanilla_transformer.padding_and_random.padding_mask`) serves every collator:

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
from .padding_and_random import bucket_length, pad_batch, padding_mask


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



def check_pair_ids(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                   vocab_size: int | None) -> None:
    """Raise ``ValueError`` when ``sources`` and ``targets`` differ in number, or (with a ``vocab_size``) hold
    ids outside ``[0, vocab_size)``, naming the side and the row.

    >>> check_pair_ids([[5, 6]], [[7, 20]], vocab_size=20)
    Traceback (most recent call last):
    ...
    ValueError: target ids outside [0, vocab_size=20): [7, 20]
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    if vocab_size is None:
        return
    for name, rows in (("source", sources), ("target", targets)):
        for row in rows:
            if len(row) and (min(row) < 0 or max(row) >= vocab_size):
                raise ValueError(f"{name} ids outside [0, vocab_size={vocab_size}): {list(row)}")


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
        check_pair_ids(sources, targets, self.vocab_size)
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


def pack_pairs(source_lengths: Sequence[int], target_lengths: Sequence[int], source_room: int,
               target_room: int) -> list[list[int]]:
    """Assign (source, target) pairs to rows holding at most ``source_room`` source and ``target_room``
    target tokens each: best fit decreasing, longest pairs first, each into the open row with the least source
    room that still takes it.

    Args:
        source_lengths / target_lengths: tokens of each pair's sides.
        source_room / target_room: the row lengths.

    Returns:
        Rows, each a list of pair indices (in placement order).

    Raises:
        ValueError: a pair does not fit an empty row.

    Example:
        >>> pack_pairs([5, 3, 2, 4], [5, 3, 3, 4], source_room=8, target_room=8)
        [[0, 1], [3, 2]]
    """
    for i, (s, t) in enumerate(zip(source_lengths, target_lengths)):
        if s > source_room or t > target_room:
            raise ValueError(f"pair {i} ({s} source, {t} target tokens) exceeds a row of {source_room} / "
                             f"{target_room}")
    order = sorted(range(len(source_lengths)), key=lambda i: (-(source_lengths[i] + target_lengths[i]), i))
    rows: list[list[int]] = []
    source_left: list[int] = []
    target_left: list[int] = []
    by_source_left: list[list[int]] = [[] for _ in range(source_room + 1)]  # open rows by source room left
    for i in order:
        s, t = source_lengths[i], target_lengths[i]
        row = next((r for left in range(s, source_room + 1) for r in by_source_left[left] if target_left[r] >= t),
                   None)
        if row is None:
            row = len(rows)
            rows.append([])
            source_left.append(source_room)
            target_left.append(target_room)
            by_source_left[source_room].append(row)
        by_source_left[source_left[row]].remove(row)
        rows[row].append(i)
        source_left[row] -= s
        target_left[row] -= t
        by_source_left[source_left[row]].append(row)
    return rows


class PackedSeq2SeqCollator:
    """Packs several (source, target) pairs into each row of fixed length, so almost no token is padding.

    A row holds pairs one after the other on both sides; ``segment_ids`` number the pairs 1, 2, ... (0 for
    padding), ``position_ids`` restart at 0 for every pair, and the model attends within each pair only
    (:func:`~vanilla_transformer.layers.transformer.segment_mask`): the loss and gradients equal those of
    the same pairs padded one per row. Each target's decoder inputs start with its own start token.

    Args:
        pad_token_id: id of the padding.
        decoder_start_token_id: the first decoder input of every pair.
        source_length / target_length: the row lengths of the two sides.
        vocab_size: when given, ids outside ``[0, vocab_size)`` raise ``ValueError``.

    ``collator(sources, targets, rows=None, num_rows=None) -> (inputs, labels)``: ``rows`` (from
    :func:`pack_pairs`, which it calls when None) say which pairs share a row; ``num_rows`` adds empty rows.
    ``inputs``: ``input_ids``, ``segment_ids``, ``position_ids`` ``(rows, source_length)`` and
    ``decoder_input_ids``, ``decoder_segment_ids``, ``decoder_position_ids`` ``(rows, target_length)``;
    ``labels (rows, target_length)`` with -100 at padding.

    Example:
        >>> collator = PackedSeq2SeqCollator(pad_token_id=0, decoder_start_token_id=1, source_length=6,
        ...                                  target_length=6)
        >>> inputs, labels = collator([[5, 6, 2], [7, 2]], [[8, 9, 2], [3, 2]])
        >>> inputs["input_ids"], inputs["segment_ids"], inputs["position_ids"]
        (array([[5, 6, 2, 7, 2, 0]], dtype=int32), array([[1, 1, 1, 2, 2, 0]], dtype=int32), array([[0, 1, 2, 0, 1, 0]], dtype=int32))
        >>> inputs["decoder_input_ids"], labels
        (array([[1, 8, 9, 1, 3, 0]], dtype=int32), array([[   8,    9,    2,    3,    2, -100]], dtype=int32))
    """

    def __init__(self, pad_token_id: int, decoder_start_token_id: int, source_length: int, target_length: int,
                 vocab_size: int | None = None):
        self.pad_token_id = pad_token_id
        self.decoder_start_token_id = decoder_start_token_id
        self.source_length, self.target_length = source_length, target_length
        self.vocab_size = vocab_size

    def _row(self, pairs, length: int, side: int):
        """One side of one row: ids, segment ids, positions, and (target side) labels."""
        ids = np.full(length, self.pad_token_id, "int32")
        segments, positions = np.zeros(length, "int32"), np.zeros(length, "int32")
        labels = np.full(length, IGNORE_INDEX, "int32")
        start = 0
        for segment, pair in enumerate(pairs, 1):
            tokens = list(pair[side])
            end = start + len(tokens)
            ids[start:end] = tokens if side == 0 else [self.decoder_start_token_id] + tokens[:-1]
            labels[start:end] = tokens
            segments[start:end], positions[start:end] = segment, np.arange(len(tokens))
            start = end
        return ids, segments, positions, labels

    def __call__(self, sources, targets, rows: list[list[int]] | None = None, num_rows: int | None = None):
        check_pair_ids(sources, targets, self.vocab_size)
        if rows is None:
            rows = pack_pairs([len(s) for s in sources], [len(t) for t in targets], self.source_length,
                              self.target_length)
        rows = list(rows) + [[]] * max(0, (num_rows or 0) - len(rows))
        pairs = [[(sources[i], targets[i]) for i in row] for row in rows]
        source_rows = [self._row(row_pairs, self.source_length, 0) for row_pairs in pairs]
        target_rows = [self._row(row_pairs, self.target_length, 1) for row_pairs in pairs]
        stack = lambda rows_, k: np.stack([r[k] for r in rows_])  # noqa: E731
        inputs = {"input_ids": stack(source_rows, 0), "segment_ids": stack(source_rows, 1),
                  "position_ids": stack(source_rows, 2), "decoder_input_ids": stack(target_rows, 0),
                  "decoder_segment_ids": stack(target_rows, 1), "decoder_position_ids": stack(target_rows, 2)}
        return inputs, stack(target_rows, 3)
