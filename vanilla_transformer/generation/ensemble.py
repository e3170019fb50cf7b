"""Ensemble decoding: several independently trained models decode as one.

At every step each member ``m`` gives its next-token distribution and the ensemble decodes with their mean,
as fairseq's ``EnsembleModel`` does:

    log p(y_t | y_<t, x) = log( (1/M) sum_m p_m(y_t | y_<t, x) )

Greedy, sampling and beam search run unchanged on these log-probabilities: :class:`Ensemble` implements the
decoding protocol of :class:`~vanilla_transformer.generation.GenerationMixin` over its members (each encodes
the source once and keeps its own key/value cache), so ``ensemble.generate(...)`` is one compiled program.
The members must share the vocabulary and the special tokens; their sizes may differ. Logits processors see
the ensemble's log-probabilities: temperature, top-k and top-p act as for one model, ``repetition_penalty``
scales log-probabilities rather than logits.

Example:
    >>> from vanilla_transformer import TransformerForSeq2SeqLM
    >>> ensemble = Ensemble([TransformerForSeq2SeqLM(example_config), TransformerForSeq2SeqLM(example_config)])
    >>> ensemble.generate(np.array([[5, 6, 2]]), max_new_tokens=4, num_beams=2).shape[0]
    1
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

from keras import ops

from . import GenerationMixin, translate_texts

__all__ = ["SHARED_CONFIG_FIELDS", "Ensemble", "config_mismatch"]

#: the config fields every member must agree on: the ids mean the same tokens and decoding starts alike
SHARED_CONFIG_FIELDS = ("is_encoder_decoder", "vocab_size", "pad_token_id", "bos_token_id", "eos_token_id",
                        "decoder_start_token_id")


def config_mismatch(config, other, reference: str = "member 0") -> str | None:
    """The first field of :data:`SHARED_CONFIG_FIELDS` on which two members' configs differ, as
    ``"field=other's (<reference> has config's)"``, or None when they may ensemble.

    Example:
        >>> from vanilla_transformer import TransformerConfig
        >>> config_mismatch(TransformerConfig(vocab_size=20), TransformerConfig(vocab_size=20, d_model=64)) is None
        True
        >>> config_mismatch(TransformerConfig(vocab_size=20), TransformerConfig(vocab_size=21))
        'vocab_size=21 (member 0 has 20)'
    """
    for field in SHARED_CONFIG_FIELDS:
        if getattr(other, field) != getattr(config, field):
            return f"{field}={getattr(other, field)!r} ({reference} has {getattr(config, field)!r})"
    return None


class Ensemble(GenerationMixin):
    """Decode with the mean of several models' next-token probabilities (see the module docstring).

    Args:
        members: two or more models of this package that decode (``TransformerForSeq2SeqLM`` or
            ``TransformerForCausalLM``), agreeing on the fields of :data:`SHARED_CONFIG_FIELDS`.

    Attributes:
        config: the first member's config, with ``max_position_embeddings`` the smallest of the members'.
        generation_config: a copy of the first member's; ``generate``'s keyword arguments override it.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> ensemble = Ensemble([TransformerForCausalLM(config), TransformerForCausalLM(config)])
        >>> ensemble.generate(np.array([[5, 6]]), max_new_tokens=3, eos_token_id=None).shape  # prompt, 3 new
        (1, 5)
    """

    def __init__(self, members: Sequence):
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an Ensemble needs at least two members, got {len(members)}")
        for index, member in enumerate(members[1:], start=1):
            mismatch = config_mismatch(members[0].config, member.config)
            if mismatch:
                raise ValueError(f"ensemble member {index} has {mismatch}: members must share the vocabulary, "
                                 "the special tokens and the architecture")
        self.members = members
        self.config = copy.deepcopy(members[0].config)
        self.config.max_position_embeddings = min(m.config.max_position_embeddings for m in members)
        self.generation_config = copy.deepcopy(members[0].generation_config)

    # ------------------------------------------------------------- what generate asks of a model
    def check_inputs(self, inputs, required=None):
        """Every member's input checks (each has its own window of positions); the first member's result."""
        checked = [member.check_inputs(inputs, required=required) for member in self.members]
        return checked[0]

    def build_weights(self):
        """Build every member's weights; returns the ensemble."""
        for member in self.members:
            member.build_weights()
        return self

    def translate(self, texts, tokenizer, batch_size: int = 64, **generation_kwargs) -> list[str]:
        """Translate strings with ``tokenizer`` (the members' shared one); see :func:`translate_texts`."""
        return translate_texts(self, texts, tokenizer, batch_size=batch_size, **generation_kwargs)

    # ------------------------------------------------------------- the decoding protocol
    def decoding_context(self, input_ids, attention_mask):
        """Each member's context (its encoder output and mask), in member order."""
        return {"members": tuple(m.decoding_context(input_ids, attention_mask) for m in self.members)}

    def member_contexts(self, context) -> tuple:
        """The members' contexts in ``context`` (``{}`` each for decoder-only members, which generate gives an
        empty context without asking for one)."""
        return context.get("members", ({},) * len(self.members))

    def init_decoding_cache(self, context, batch_size, max_length):
        """The members' caches joined: ``cache[key]`` lists member 0's layers, then member 1's, ..."""
        caches = [m.init_decoding_cache(c, batch_size, max_length)
                  for m, c in zip(self.members, self.member_contexts(context))]
        return {key: [kv for cache in caches for kv in cache[key]] for key in caches[0]}

    def decode_step(self, token_ids, cache, cache_index, context, key_mask=None, position_ids=None):
        """``log`` of the members' mean next-token probabilities ``(batch, new, vocab)`` (float32) and the cache.

        ``cache`` is ``None`` on the uncached path (every position recomputed).
        """
        log_probs, caches = [], []
        for member, member_cache, member_context in zip(self.members, self._member_caches(cache),
                                                        self.member_contexts(context)):
            logits, member_cache = member.decode_step(token_ids, member_cache, cache_index, member_context,
                                                      key_mask=key_mask, position_ids=position_ids)
            log_probs.append(ops.log_softmax(ops.cast(logits, "float32"), axis=-1))
            caches.append(member_cache)
        mean = ops.logsumexp(ops.stack(log_probs), axis=0) - math.log(len(self.members))
        if cache is None:
            return mean, None
        return mean, {key: [kv for c in caches for kv in c[key]] for key in cache}

    def _member_caches(self, cache) -> list:
        """``cache`` split back into one cache per member (each holds one entry per decoder layer per key)."""
        if cache is None:
            return [None] * len(self.members)
        caches, start = [], 0
        for member in self.members:
            end = start + member.config.num_decoder_layers
            caches.append({key: list(layers[start:end]) for key, layers in cache.items()})
            start = end
        return caches
