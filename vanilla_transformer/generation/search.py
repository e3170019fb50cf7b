"""The decoding loops of greedy search and sampling, and what every search shares: the key/value cache that
grows in phases, the decoding step functions, and the end-of-sequence test.

The loop runs in phases over a growing self-attention cache: phase p holds the first prompt + p *
``PHASE_LENGTH`` slots, so a step reads (and beam search reorders) about as many cache slots as are filled
instead of the whole ``max_length`` buffer. Each phase is one ``ops.while_loop`` with static shapes.
"""

from __future__ import annotations

from keras import ops

from .logits_process import gumbel_noise, process_logits, scatter_mask, warp_logits
from .plan import DecodingPlan

PHASE_LENGTH = 8


def phase_bounds(plan: DecodingPlan, prompt_length: int, max_length: int) -> list[int]:
    """Cache sizes of the decoding phases: prompt + 8, prompt + 16, ..., max_length (one phase uncached)."""
    if not plan.use_cache:
        return [max_length]
    return list(range(prompt_length + PHASE_LENGTH, max_length, PHASE_LENGTH)) + [max_length]


def grow_cache(cache_state, length):
    """Pad each self-attention ``(k, v)`` of ``(batch, heads, slots, d_k)`` with empty slots up to ``length``."""
    if not cache_state:  # the uncached path
        return cache_state
    return [tuple(ops.pad(t, [(0, 0), (0, 0), (0, length - t.shape[2]), (0, 0)]) for t in kv) for kv in cache_state]


def decode_functions(model, plan: DecodingPlan, context, prefix_mask, prefix_positions, max_length, first_length):
    """``first_logits()`` and ``step(cache, sequences, cur, new_tokens) -> logits, cache`` for one plan.

    The cache starts with ``first_length`` slots (the first phase bound); ``step`` works on a cache of any
    size up to ``max_length`` (see :func:`grow_cache`)."""
    batch = ops.shape(prefix_mask)[0]
    prompt_length = prefix_mask.shape[1]
    key_mask = ops.concatenate(
        [ops.cast(prefix_mask, "int32"), ops.ones((batch, max_length - prompt_length), "int32")], axis=1)
    n_real = ops.sum(ops.cast(prefix_mask, "int32"), axis=1)
    generated_positions = n_real[:, None] + ops.arange(max_length - prompt_length)[None, :]
    all_positions = ops.concatenate([prefix_positions, generated_positions], axis=1)

    if plan.use_cache:
        def first(prefix_ids):
            cache = model.init_decoding_cache(context, batch, first_length)
            logits, cache = model.decode_step(prefix_ids, cache, 0, context, key_mask[:, :first_length],
                                               prefix_positions)
            return logits[:, -1, :], cache

        def step(cache, sequences, cur, new_tokens):
            positions = ops.take(all_positions, ops.reshape(cur, (1,)), axis=1)
            length = cache["self"][0][0].shape[2]
            logits, cache = model.decode_step(new_tokens[:, None], cache, cur, context, key_mask[:, :length],
                                               positions)
            return logits[:, 0, :], cache
    else:
        # The reference path: recompute every position of the (static-size) buffer at each step.
        def logits_at(sequences, position):
            logits, _ = model.decode_step(sequences, None, None, context, key_mask, all_positions)
            return ops.take(logits, ops.reshape(position, (1,)), axis=1)[:, 0, :]

        def first(prefix_ids):
            buffer = ops.concatenate(
                [prefix_ids, ops.zeros((batch, max_length - prompt_length), "int32")], axis=1)
            return logits_at(buffer, prompt_length - 1), ()

        def step(cache, sequences, cur, new_tokens):
            return logits_at(sequences, cur), cache
    return first, step


def reorder_cache(cache, indices):
    return [(ops.take(k, indices, axis=0), ops.take(v, indices, axis=0)) for k, v in cache]


def split_cache(cache):
    """The part of the cache that changes in the loop (self-attention), and a function to rebuild it."""
    if not cache:
        return (), lambda state: cache
    constant = {key: value for key, value in cache.items() if key != "self"}
    return cache["self"], lambda state: dict(constant, self=list(state))


def is_eos(plan, tokens):
    if not plan.eos_token_ids:
        return ops.zeros_like(tokens, dtype="bool")
    return ops.any(ops.stack([ops.equal(tokens, e) for e in plan.eos_token_ids]), axis=0)


def greedy_or_sample(model, plan, context, prefix_ids, prefix_mask, prefix_positions, seed):
    batch, prompt_length = prefix_ids.shape[0], prefix_ids.shape[1]
    max_length = prompt_length + plan.max_new_tokens
    bounds = phase_bounds(plan, prompt_length, max_length)
    first, step = decode_functions(model, plan, context, prefix_mask, prefix_positions, max_length, bounds[0])
    logits, cache = first(prefix_ids)
    vocab = model.config.vocab_size
    sequences = ops.concatenate([prefix_ids, ops.full((batch, plan.max_new_tokens), plan.pad_token_id, "int32")], 1)
    # Tokens seen per row, for the repetition penalty. Only in the loop state when used: a loop variable
    # that passes through unchanged breaks TensorFlow's XLA conversion of consecutive loops (the phases).
    penalised = plan.repetition_penalty != 1.0
    presence = (scatter_mask(prefix_ids, ops.ones_like(prefix_ids, dtype="bool"), vocab),) if penalised else ()
    cache_state, rebuild = split_cache(cache)
    state = (ops.convert_to_tensor(prompt_length, "int32"), sequences, ops.cast(logits, "float32"), cache_state,
             ops.zeros((batch,), "bool"), ops.zeros((batch,), "float32"), *presence)

    def cond(cur, sequences, logits, cache_state, finished, scores, *presence):
        return ops.logical_and(cur < max_length, ops.logical_not(ops.all(finished)))

    def body(cur, sequences, logits, cache_state, finished, scores, *presence):
        presence = presence[0] if penalised else None
        processed = process_logits(plan, logits, sequences, cur, prompt_length, presence, max_length)
        if plan.mode == "sample":
            processed = warp_logits(plan, processed)
            next_tokens = ops.argmax(processed + gumbel_noise(ops.shape(processed), seed, cur), axis=-1)
        else:
            next_tokens = ops.argmax(processed, axis=-1)
        next_tokens = ops.where(finished, plan.pad_token_id, ops.cast(next_tokens, "int32"))
        log_probs = ops.log_softmax(processed, axis=-1)
        chosen = ops.take_along_axis(log_probs, next_tokens[:, None], axis=-1)[:, 0]
        scores = scores + ops.where(finished, 0.0, chosen)
        sequences = ops.slice_update(sequences, (0, cur), next_tokens[:, None])
        if penalised:
            presence = ops.logical_or(presence, scatter_mask(next_tokens[:, None], ops.ones_like(
                next_tokens[:, None], dtype="bool"), vocab))
        finished = ops.logical_or(finished, is_eos(plan, next_tokens))
        logits, cache = step(rebuild(cache_state), sequences, cur, next_tokens)
        cache_state, _ = split_cache(cache)
        return (cur + 1, sequences, ops.cast(logits, "float32"), cache_state, finished, scores,
                *((presence,) if penalised else ()))

    for bound in bounds:
        state = state[:3] + (grow_cache(state[3], bound),) + state[4:]
        state = ops.while_loop(lambda *s, bound=bound: ops.logical_and(s[0] < bound, cond(*s)), body, state)
    cur, sequences, _, _, _, scores = state[:6]
    return sequences, scores, cur
