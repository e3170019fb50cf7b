"""Batches, losses and learning rates for the BERT-style and GPT-style variants.

- :class:`DataCollatorForMaskedLM`: BERT's masked-language-model corruption (15% of the non-special tokens
  are chosen; of those 80% become the mask token, 10% a random token, 10% stay) with labels -100 elsewhere;
- :class:`DataCollatorForCausalLM`: labels = inputs (padding -> -100); the one-token shift happens in
  :class:`CausalLMLoss` / :class:`CausalLMAccuracy` (``logits[:, :-1]`` against ``labels[:, 1:]``), as in
  transformers' ``*ForCausalLM`` models;
- :class:`DataCollatorForSequenceClassification`: padded inputs and one integer label per row;
- :func:`make_tf_dataset`: length-grouped batches as a ``tf.data.Dataset`` for ``model.fit``, collated again
  every epoch (so MLM masking is dynamic, as in RoBERTa);
- :class:`LinearWarmupSchedule`: linear warmup to a peak learning rate, then constant or linear decay.

Every collator is plain numpy with its own seeded ``numpy.random.Generator`` and returns
``(inputs dict, labels)`` ready for ``model.fit``.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import keras
import numpy as np
from keras import ops

from .training import IGNORE_INDEX, MaskedAccuracy, MaskedSparseCrossEntropy, bucket_length, pad_batch


def _rows(examples) -> list[list[int]]:
    """Lists of ids from lists/arrays of ids or from dicts holding ``input_ids``."""
    return [list(example["input_ids"] if isinstance(example, dict) else example) for example in examples]


def _pad(rows: Sequence[Sequence[int]], pad_token_id: int, pad_to_multiple_of: int | None,
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
    lengths = np.array([min(len(row), length) for row in rows])
    attention_mask = (np.arange(length)[None, :] < lengths[:, None]).astype("int32")
    return pad_batch(rows, pad_token_id, length), attention_mask


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
        input_ids, attention_mask = _pad(_rows(examples), self.pad_token_id, self.pad_to_multiple_of,
                                         self.max_length)
        corrupted, labels = self.mask_tokens(input_ids, self.special_tokens_mask(input_ids, attention_mask))
        return {"input_ids": corrupted, "attention_mask": attention_mask}, labels


class DataCollatorForCausalLM:
    """GPT-style batches: ``labels`` are the input ids with padding set to -100.

    The labels are *not* shifted here: :class:`CausalLMLoss` compares the logits at position t with the
    label at t + 1, as transformers' ``*ForCausalLM`` losses do. Padding positions are found from the row
    lengths, so a pad id equal to a real id (GPT-2 pads with its eos) is still counted where it is a token.

    ``collator(examples) -> ({"input_ids", "attention_mask"}, labels)``, int32 ``(batch, length)``.
    """

    def __init__(self, pad_token_id: int | None = 0, pad_to_multiple_of: int | None = 8,
                 max_length: int | None = None):
        self.pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length

    def __call__(self, examples) -> tuple[dict[str, np.ndarray], np.ndarray]:
        input_ids, attention_mask = _pad(_rows(examples), self.pad_token_id, self.pad_to_multiple_of,
                                         self.max_length)
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX).astype("int32")
        return {"input_ids": input_ids, "attention_mask": attention_mask}, labels


class DataCollatorForSequenceClassification:
    """Padded ``{"input_ids", "attention_mask"}`` and int32 ``labels (batch,)`` for sentence classification.

    ``collator(examples, labels) -> (inputs, labels)``; ``examples`` as for the other collators.
    """

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of: int | None = 8, max_length: int | None = None):
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length

    def __call__(self, examples, labels) -> tuple[dict[str, np.ndarray], np.ndarray]:
        rows = _rows(examples)
        if len(rows) != len(labels):
            raise ValueError(f"{len(rows)} examples but {len(labels)} labels")
        input_ids, attention_mask = _pad(rows, self.pad_token_id, self.pad_to_multiple_of, self.max_length)
        return {"input_ids": input_ids, "attention_mask": attention_mask}, np.asarray(labels, dtype="int32")


# ------------------------------------------------------------------------------------------ losses
@keras.saving.register_keras_serializable(package="vanilla_transformer")
class CausalLMLoss(MaskedSparseCrossEntropy):
    """Next-token cross-entropy: ``logits[:, :-1]`` against ``labels[:, 1:]``, ignoring -100.

    ``y_true`` are the unshifted labels ``(batch, seq)`` (:class:`DataCollatorForCausalLM`), ``y_pred`` the
    logits ``(batch, seq, vocab)``; the result is the mean over counted tokens, so ``exp(loss)`` is the
    perplexity of the batch. Label smoothing is 0 unless given (same definition as the paper's loss).
    """

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX, name="causal_lm_loss",
                 **kwargs):
        super().__init__(label_smoothing=label_smoothing, ignore_index=ignore_index, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return super().call(y_true[:, 1:], y_pred[:, :-1])


@keras.saving.register_keras_serializable(package="vanilla_transformer")
class CausalLMAccuracy(MaskedAccuracy):
    """Next-token accuracy: argmax of ``logits[:, :-1]`` against ``labels[:, 1:]``, ignoring -100."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(y_true[:, 1:], y_pred[:, :-1], sample_weight)


# ------------------------------------------------------------------------------------------ learning rate
@keras.saving.register_keras_serializable(package="vanilla_transformer")
class LinearWarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``learning_rate * step / warmup_steps`` during warmup, then constant, or (with ``decay_steps``, the
    total number of steps) linear decay to 0 at ``decay_steps`` as transformers'
    ``get_linear_schedule_with_warmup``. ``step`` counts from 1."""

    def __init__(self, learning_rate: float, warmup_steps: int = 0, decay_steps: int | None = None):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = None if decay_steps is None else int(decay_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        rate = ops.convert_to_tensor(self.learning_rate, "float32")
        if self.warmup_steps > 0:
            rate = rate * ops.minimum(1.0, step / float(self.warmup_steps))
        if self.decay_steps:
            span = float(max(1, self.decay_steps - self.warmup_steps))
            rate = rate * ops.clip((float(self.decay_steps) - step) / span, 0.0, 1.0)
        return rate

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps}


def language_model_optimizer(learning_rate: Any = 5e-4, warmup_steps: int = 0, decay_steps: int | None = None,
                             weight_decay: float | None = None, clipnorm: float | None = 1.0):
    """Adam(W) for (pre)training the encoder-only and decoder-only variants: beta_2 0.999, epsilon 1e-6, the
    :class:`LinearWarmupSchedule` (or ``learning_rate`` itself when it is already a schedule), gradient norm
    clipped to 1. ``weight_decay`` switches to AdamW (BERT used 0.01)."""
    if isinstance(learning_rate, (int, float)) and (warmup_steps or decay_steps):
        learning_rate = LinearWarmupSchedule(learning_rate, warmup_steps, decay_steps)
    kwargs = dict(learning_rate=learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-6, clipnorm=clipnorm)
    if weight_decay:
        return keras.optimizers.AdamW(weight_decay=weight_decay, **kwargs)
    return keras.optimizers.Adam(**kwargs)


# ------------------------------------------------------------------------------------------ tf.data
def length_grouped_batches(lengths: Sequence[int], batch_size: int, shuffle: bool = True,
                           rng: np.random.Generator | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding, few shapes), in shuffled order.

    With ``shuffle`` the examples are shuffled, sorted by length inside windows of 50 batches (transformers'
    ``group_by_length`` idea), cut into batches, and the batch order shuffled; otherwise batches follow
    the input order.
    """
    order = np.arange(len(lengths))
    if not shuffle:
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rng = rng or np.random.default_rng(0)
    order = rng.permutation(order)
    window = batch_size * 50
    grouped = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        grouped.extend(sorted(chunk.tolist(), key=lambda i: lengths[i]))
    batches = [grouped[i:i + batch_size] for i in range(0, len(grouped), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def make_tf_dataset(examples: Sequence[Sequence[int]], collator, batch_size: int, labels: Sequence[int] | None = None,
                    shuffle: bool = True, seed: int = 0):
    """A ``tf.data.Dataset`` of ``(inputs, labels)`` batches for ``model.fit`` / ``evaluate``.

    ``collator`` is called on every batch of every epoch (``collator(rows)``, or ``collator(rows, labels)``
    when ``labels`` are given), so :class:`DataCollatorForMaskedLM` draws new masks each epoch. Each epoch
    groups examples of similar length (see :func:`length_grouped_batches`) with a new order.
    """
    import tensorflow as tf

    examples = _rows(examples)
    if not examples:
        raise ValueError("no examples to batch")
    lengths = [len(row) for row in examples]
    rng = np.random.default_rng(seed)
    num_batches = -(-len(examples) // batch_size)

    def generate():
        for batch in length_grouped_batches(lengths, batch_size, shuffle, rng):
            rows = [examples[i] for i in batch]
            if labels is None:
                yield collator(rows)
            else:
                yield collator(rows, [labels[i] for i in batch])

    first_inputs, first_labels = (collator(examples[:1]) if labels is None else collator(examples[:1], labels[:1]))
    signature = (
        {key: tf.TensorSpec((None, None), tf.int32) for key in first_inputs},
        tf.TensorSpec((None,) * np.ndim(first_labels), tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(num_batches)).prefetch(2)
