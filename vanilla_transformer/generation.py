"""Decoding: greedy, sampling (temperature, top-k, top-p) and beam search, with a key/value cache.

The whole decode loop is one compiled function (XLA on TensorFlow, ``jax.jit`` on JAX) over static
shapes: the encoder runs once, cross-attention keys/values are computed once, the self-attention cache
has a fixed number of slots and each step writes one. Source and prompt lengths are rounded up to a
multiple of 8 so that new calls of similar shapes reuse the compiled function.

Parameters and their meaning follow ``transformers.GenerationConfig``; beam search follows the algorithm
of ``transformers`` (top 2K candidates, finished hypotheses scored ``sum log p / length ** length_penalty``)
so that results are comparable token for token.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops
from transformers import GenerationConfig

from .layers.dropout import random_uniform

NEG_INF = float("-inf")
LENGTH_MULTIPLE = 8
# The decode loop runs in phases over a growing self-attention cache: phase p holds the first
# prompt + p * PHASE_LENGTH slots, so a step reads (and beam search reorders) about as many cache slots as
# are filled instead of the whole max_length buffer. Each phase is a loop with static shapes.
PHASE_LENGTH = 8


# ------------------------------------------------------------------------------------------ config
def resolve_generation_config(model, generation_config: GenerationConfig | None, kwargs: dict) -> GenerationConfig:
    """The model's config, then ``generation_config``'s explicitly set values, then keyword arguments."""
    config = copy.deepcopy(model.generation_config)
    if generation_config is not None:
        if not isinstance(generation_config, GenerationConfig):
            raise TypeError(f"generation_config must be a transformers.GenerationConfig, got "
                            f"{type(generation_config).__name__}")
        config.update(**generation_config.to_diff_dict())
    unknown = config.update(**kwargs)
    if unknown:
        raise ValueError(f"Unknown generation arguments: {sorted(unknown)}")
    return config


@dataclass(frozen=True)
class _Plan:
    """Everything static about one decoding call: the key of the compiled-function cache."""

    mode: str  # "greedy" | "sample" | "beam"
    max_new_tokens: int
    min_new_tokens: int
    num_beams: int
    num_return_sequences: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    length_penalty: float
    early_stopping: Any
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    no_repeat_ngram_size: int
    use_cache: bool
    banned_tokens: tuple[int, ...] = ()  # bad_words_ids (single tokens) and suppress_tokens
    begin_suppress_tokens: tuple[int, ...] = ()
    forced_bos_token_id: int | None = None
    forced_eos_token_id: tuple[int, ...] = ()


def _plan(config: GenerationConfig, prompt_length: int, use_cache: bool) -> _Plan:
    def positive_int(name, value, minimum=1):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        return int(value)

    defaults = GenerationConfig._get_default_generation_params()

    def get(name):
        """A field's value, or transformers' default when it is unset (None)."""
        value = getattr(config, name, None)
        return defaults.get(name) if value is None else value

    num_beams = positive_int("num_beams", get("num_beams"))
    num_return = positive_int("num_return_sequences", get("num_return_sequences"))
    do_sample = bool(get("do_sample"))
    if num_return > num_beams and not (do_sample and num_beams == 1):
        raise ValueError(f"num_return_sequences={num_return} must be <= num_beams={num_beams}")
    if config.max_new_tokens is not None:
        max_new = positive_int("max_new_tokens", config.max_new_tokens)
    else:
        max_new = positive_int("max_length", get("max_length")) - prompt_length
        if max_new < 1:
            raise ValueError(f"max_length={get('max_length')} leaves no room after a prompt of {prompt_length} "
                             f"tokens; set max_new_tokens")
    min_new = config.min_new_tokens
    if min_new is None:
        min_new = max(0, get("min_length") - prompt_length)
    min_new = positive_int("min_new_tokens", min_new, minimum=0)
    temperature = float(get("temperature"))
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {config.temperature!r}")
    top_p = float(get("top_p"))
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {config.top_p!r}")
    top_k = positive_int("top_k", get("top_k"), minimum=0)
    repetition_penalty = float(get("repetition_penalty"))
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {config.repetition_penalty!r}")
    ngram = positive_int("no_repeat_ngram_size", get("no_repeat_ngram_size"), minimum=0)
    eos = config.eos_token_id
    eos = () if eos is None else tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    pad = config.pad_token_id
    if pad is None:
        pad = eos[0] if eos else 0
    banned = list(config.suppress_tokens or [])
    for words in config.bad_words_ids or []:
        if len(words) != 1:
            raise ValueError(f"bad_words_ids: only single-token entries are supported, got {words}")
        banned.extend(words)
    forced_eos = config.forced_eos_token_id
    forced_eos = () if forced_eos is None else tuple(
        int(e) for e in (forced_eos if isinstance(forced_eos, (list, tuple)) else [forced_eos]))
    extras = dict(banned_tokens=tuple(sorted(set(int(t) for t in banned))),
                  begin_suppress_tokens=tuple(int(t) for t in config.begin_suppress_tokens or []),
                  forced_bos_token_id=None if config.forced_bos_token_id is None else int(config.forced_bos_token_id),
                  forced_eos_token_id=forced_eos)
    mode = "beam" if num_beams > 1 else ("sample" if do_sample else "greedy")
    return _Plan(mode, max_new, min_new, num_beams, num_return, eos, int(pad), float(get("length_penalty")),
                 get("early_stopping"), temperature if do_sample else 1.0, top_k if do_sample else 0,
                 top_p if do_sample else 1.0, repetition_penalty, ngram, bool(use_cache), **extras)


# ------------------------------------------------------------------------------------------ processors
def _scatter_mask(ids, valid, vocab_size):
    """Boolean ``(rows, vocab)``: True where some valid entry of ``ids (rows, n)`` names the token."""
    rows, n = ops.shape(ids)[0], ops.shape(ids)[1]
    row_index = ops.repeat(ops.arange(rows)[:, None], n, axis=1)
    indices = ops.stack([ops.reshape(row_index, (-1,)), ops.reshape(ops.cast(ids, "int32"), (-1,))], axis=1)
    counts = ops.scatter(indices, ops.reshape(ops.cast(valid, "float32"), (-1,)), (rows, vocab_size))
    return counts > 0


def _banned_ngram_tokens(sequences, cur, n, vocab_size):
    """Tokens that would repeat an n-gram of ``sequences[:, :cur]`` (transformers' NoRepeatNGram)."""
    length = ops.shape(sequences)[1]
    starts = ops.arange(length)
    # An n-gram starting at j matches the current (n-1)-token suffix when all n-1 positions agree.
    match = starts + n <= cur
    for k in range(n - 1):
        shifted = ops.take(sequences, ops.minimum(starts + k, length - 1), axis=1)
        suffix = ops.take(sequences, ops.maximum(cur - n + 1 + k, 0) * ops.ones_like(starts), axis=1)
        match = ops.logical_and(match, ops.equal(shifted, suffix))
    candidates = ops.take(sequences, ops.minimum(starts + n - 1, length - 1), axis=1)
    valid = ops.logical_and(match, cur >= n - 1)
    return _scatter_mask(candidates, valid, vocab_size)


def _token_mask(tokens, vocab_size):
    """Boolean ``(vocab,)``: True at the given token ids."""
    vocab = ops.arange(vocab_size)
    return ops.any(ops.stack([vocab == t for t in tokens]), axis=0)


def _process_logits(plan: _Plan, logits, sequences, cur, prompt_length, presence, max_length):
    """transformers' logits processors in their order: repetition penalty, n-gram ban, banned tokens,
    min length, suppression at the first step, forced BOS / EOS."""
    if plan.repetition_penalty != 1.0:
        penalised = ops.where(logits < 0, logits * plan.repetition_penalty, logits / plan.repetition_penalty)
        logits = ops.where(presence, penalised, logits)
    if plan.no_repeat_ngram_size:
        banned = _banned_ngram_tokens(sequences, cur, plan.no_repeat_ngram_size, ops.shape(logits)[-1])
        logits = ops.where(banned, NEG_INF, logits)
    vocab_size = ops.shape(logits)[-1]
    if plan.banned_tokens:
        logits = ops.where(_token_mask(plan.banned_tokens, vocab_size)[None, :], NEG_INF, logits)
    if plan.min_new_tokens and plan.eos_token_ids:
        too_short = cur - prompt_length < plan.min_new_tokens
        logits = ops.where(ops.logical_and(_token_mask(plan.eos_token_ids, vocab_size)[None, :], too_short),
                           NEG_INF, logits)
    if plan.begin_suppress_tokens:
        first = cur == prompt_length
        logits = ops.where(ops.logical_and(_token_mask(plan.begin_suppress_tokens, vocab_size)[None, :], first),
                           NEG_INF, logits)
    for tokens, when in ((() if plan.forced_bos_token_id is None else (plan.forced_bos_token_id,), cur == 1),
                         (plan.forced_eos_token_id, cur == max_length - 1)):
        if tokens:
            forced = ops.where(_token_mask(tokens, vocab_size)[None, :], 0.0, NEG_INF)
            logits = ops.where(when, forced, logits)
    return logits


def _warp_logits(plan: _Plan, logits):
    """Sampling warpers: temperature, then top-k, then top-p (nucleus)."""
    if plan.temperature != 1.0:
        logits = logits / plan.temperature
    vocab = logits.shape[-1]
    if plan.top_k and plan.top_k < vocab:
        kth = ops.min(ops.top_k(logits, plan.top_k, sorted=True)[0], axis=-1, keepdims=True)
        logits = ops.where(logits < kth, NEG_INF, logits)
    if plan.top_p < 1.0:
        logits = top_p_filter(logits, plan.top_p)
    return logits


def top_p_filter(logits, top_p: float):
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p``; -inf elsewhere.

    A token is kept when the probability mass of the tokens strictly more likely than it is below
    ``top_p``; the most likely token is always kept. ``logits (rows, vocab)``.
    """
    sorted_logits = ops.flip(ops.sort(logits, axis=-1), axis=-1)
    sorted_probs = ops.softmax(sorted_logits, axis=-1)
    mass_before = ops.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = ops.logical_or(mass_before < top_p, ops.arange(logits.shape[-1])[None, :] == 0)
    threshold = ops.min(ops.where(keep_sorted, sorted_logits, float("inf")), axis=-1, keepdims=True)
    return ops.where(logits < threshold, NEG_INF, logits)


TOP_K_BLOCK = 128


def blocked_top_k(scores, k: int):
    """``ops.top_k(scores, k)`` over the last axis of ``(rows, n)``, for long rows: same values, same indices.

    The k largest entries of a row lie in the k blocks (of ``TOP_K_BLOCK`` entries) with the largest
    maxima, so only those k blocks reach the sort. Beam search ranks ``num_beams * vocab`` candidates per
    row each step; XLA's CPU TopK sorts a row on one thread (~1.5 ms a step for 32 rows x 32,000), a
    blockwise max is a vectorised reduction. The chosen blocks are taken in index order, so ties resolve to
    the lower index as ``top_k`` does. Exact for any scores but NaN (under XLA also -0.0 vs +0.0, which
    XLA's TopK orders and a max does not; log-probabilities never hold either). Returns ``values (rows, k)``,
    ``indices (rows, k)`` int32.
    """
    rows, n = scores.shape
    if n < 8 * k * TOP_K_BLOCK:
        values, indices = ops.top_k(scores, k)
        return values, ops.cast(indices, "int32")
    blocks = -(-n // TOP_K_BLOCK)
    padded = ops.pad(scores, [(0, 0), (0, blocks * TOP_K_BLOCK - n)], constant_values=NEG_INF)
    blocked = ops.reshape(padded, (rows, blocks, TOP_K_BLOCK))
    _, top_blocks = ops.top_k(ops.max(blocked, axis=-1), k)
    top_blocks = ops.sort(ops.cast(top_blocks, "int32"), axis=-1)
    candidates = ops.reshape(ops.take_along_axis(blocked, top_blocks[..., None], axis=1), (rows, k * TOP_K_BLOCK))
    values, within = ops.top_k(candidates, k)
    within = ops.cast(within, "int32")
    indices = ops.take_along_axis(top_blocks, within // TOP_K_BLOCK, axis=1) * TOP_K_BLOCK + within % TOP_K_BLOCK
    return values, indices


def _gumbel(shape, seed, step):
    """Gumbel noise from the counter-based generator: stateless, so the same (seed, step) gives the same
    numbers inside or outside the compiled loop, on every backend."""
    uniform = random_uniform(shape, ops.stack([ops.cast(seed, "uint32"), ops.cast(step, "uint32")]))
    return -ops.log(-ops.log(uniform))


# ------------------------------------------------------------------------------------------ the loop
def _phase_bounds(plan: _Plan, prompt_length: int, max_length: int) -> list[int]:
    """Cache sizes of the decoding phases: prompt + 8, prompt + 16, ..., max_length (one phase uncached)."""
    if not plan.use_cache:
        return [max_length]
    return list(range(prompt_length + PHASE_LENGTH, max_length, PHASE_LENGTH)) + [max_length]


def _grow_cache(cache_state, length):
    """Pad each self-attention ``(k, v)`` of ``(batch, heads, slots, d_k)`` with empty slots up to ``length``."""
    if not cache_state:  # the uncached path
        return cache_state
    return [tuple(ops.pad(t, [(0, 0), (0, 0), (0, length - t.shape[2]), (0, 0)]) for t in kv) for kv in cache_state]


def _decode_functions(model, plan: _Plan, context, prefix_mask, prefix_positions, max_length, first_length):
    """``first_logits()`` and ``step(cache, sequences, cur, new_tokens) -> logits, cache`` for one plan.

    The cache starts with ``first_length`` slots (the first phase bound); ``step`` works on a cache of any
    size up to ``max_length`` (see :func:`_grow_cache`)."""
    batch = ops.shape(prefix_mask)[0]
    prompt_length = prefix_mask.shape[1]
    key_mask = ops.concatenate(
        [ops.cast(prefix_mask, "int32"), ops.ones((batch, max_length - prompt_length), "int32")], axis=1)
    n_real = ops.sum(ops.cast(prefix_mask, "int32"), axis=1)
    generated_positions = n_real[:, None] + ops.arange(max_length - prompt_length)[None, :]
    all_positions = ops.concatenate([prefix_positions, generated_positions], axis=1)

    if plan.use_cache:
        def first(prefix_ids):
            cache = model._init_cache(context, batch, first_length)
            logits, cache = model._decode_step(prefix_ids, cache, 0, context, key_mask[:, :first_length],
                                               prefix_positions)
            return logits[:, -1, :], cache

        def step(cache, sequences, cur, new_tokens):
            positions = ops.take(all_positions, ops.reshape(cur, (1,)), axis=1)
            length = cache["self"][0][0].shape[2]
            logits, cache = model._decode_step(new_tokens[:, None], cache, cur, context, key_mask[:, :length],
                                               positions)
            return logits[:, 0, :], cache
    else:
        # The reference path: recompute every position of the (static-size) buffer at each step.
        def logits_at(sequences, position):
            logits, _ = model._decode_step(sequences, None, None, context, key_mask, all_positions)
            return ops.take(logits, ops.reshape(position, (1,)), axis=1)[:, 0, :]

        def first(prefix_ids):
            buffer = ops.concatenate(
                [prefix_ids, ops.zeros((batch, max_length - prompt_length), "int32")], axis=1)
            return logits_at(buffer, prompt_length - 1), ()

        def step(cache, sequences, cur, new_tokens):
            return logits_at(sequences, cur), cache
    return first, step


def _reorder_cache(cache, indices):
    return [(ops.take(k, indices, axis=0), ops.take(v, indices, axis=0)) for k, v in cache]


def _cache_state(cache):
    """The part of the cache that changes in the loop (self-attention), and a function to rebuild it."""
    if not cache:
        return (), lambda state: cache
    constant = {key: value for key, value in cache.items() if key != "self"}
    return cache["self"], lambda state: dict(constant, self=list(state))


def _is_eos(plan, tokens):
    if not plan.eos_token_ids:
        return ops.zeros_like(tokens, dtype="bool")
    return ops.any(ops.stack([ops.equal(tokens, e) for e in plan.eos_token_ids]), axis=0)


def _greedy_or_sample(model, plan, context, prefix_ids, prefix_mask, prefix_positions, seed):
    batch, prompt_length = prefix_ids.shape[0], prefix_ids.shape[1]
    max_length = prompt_length + plan.max_new_tokens
    bounds = _phase_bounds(plan, prompt_length, max_length)
    first, step = _decode_functions(model, plan, context, prefix_mask, prefix_positions, max_length, bounds[0])
    logits, cache = first(prefix_ids)
    vocab = model.config.vocab_size
    sequences = ops.concatenate([prefix_ids, ops.full((batch, plan.max_new_tokens), plan.pad_token_id, "int32")], 1)
    # Tokens seen per row, for the repetition penalty. Only in the loop state when used: a loop variable
    # that passes through unchanged breaks TensorFlow's XLA conversion of consecutive loops (the phases).
    penalised = plan.repetition_penalty != 1.0
    presence = (_scatter_mask(prefix_ids, ops.ones_like(prefix_ids, dtype="bool"), vocab),) if penalised else ()
    cache_state, rebuild = _cache_state(cache)
    state = (ops.convert_to_tensor(prompt_length, "int32"), sequences, ops.cast(logits, "float32"), cache_state,
             ops.zeros((batch,), "bool"), ops.zeros((batch,), "float32"), *presence)

    def cond(cur, sequences, logits, cache_state, finished, scores, *presence):
        return ops.logical_and(cur < max_length, ops.logical_not(ops.all(finished)))

    def body(cur, sequences, logits, cache_state, finished, scores, *presence):
        presence = presence[0] if penalised else None
        processed = _process_logits(plan, logits, sequences, cur, prompt_length, presence, max_length)
        if plan.mode == "sample":
            processed = _warp_logits(plan, processed)
            next_tokens = ops.argmax(processed + _gumbel(ops.shape(processed), seed, cur), axis=-1)
        else:
            next_tokens = ops.argmax(processed, axis=-1)
        next_tokens = ops.where(finished, plan.pad_token_id, ops.cast(next_tokens, "int32"))
        log_probs = ops.log_softmax(processed, axis=-1)
        chosen = ops.take_along_axis(log_probs, next_tokens[:, None], axis=-1)[:, 0]
        scores = scores + ops.where(finished, 0.0, chosen)
        sequences = ops.slice_update(sequences, (0, cur), next_tokens[:, None])
        if penalised:
            presence = ops.logical_or(presence, _scatter_mask(next_tokens[:, None], ops.ones_like(
                next_tokens[:, None], dtype="bool"), vocab))
        finished = ops.logical_or(finished, _is_eos(plan, next_tokens))
        logits, cache = step(rebuild(cache_state), sequences, cur, next_tokens)
        cache_state, _ = _cache_state(cache)
        return (cur + 1, sequences, ops.cast(logits, "float32"), cache_state, finished, scores,
                *((presence,) if penalised else ()))

    for bound in bounds:
        state = state[:3] + (_grow_cache(state[3], bound),) + state[4:]
        state = ops.while_loop(lambda *s, bound=bound: ops.logical_and(s[0] < bound, cond(*s)), body, state)
    cur, sequences, _, _, _, scores = state[:6]
    return sequences, scores, cur


def _beam_search(model, plan, context, prefix_ids, prefix_mask, prefix_positions, seed):
    """transformers' vectorised beam search, over ``batch * num_beams`` rows with a reordered cache."""
    num_beams = plan.num_beams
    rows, prompt_length = prefix_ids.shape[0], prefix_ids.shape[1]
    batch = rows // num_beams
    max_length = prompt_length + plan.max_new_tokens
    vocab = model.config.vocab_size
    keep = max(2, 1 + len(plan.eos_token_ids)) * num_beams
    bounds = _phase_bounds(plan, prompt_length, max_length)
    first, step = _decode_functions(model, plan, context, prefix_mask, prefix_positions, max_length, bounds[0])
    logits, cache = first(prefix_ids)
    running = ops.reshape(
        ops.concatenate([prefix_ids, ops.full((rows, plan.max_new_tokens), plan.pad_token_id, "int32")], 1),
        (batch, num_beams, max_length))
    running_scores = ops.concatenate(
        [ops.zeros((batch, 1)), ops.full((batch, num_beams - 1), -1e9)], axis=1)
    penalised = plan.repetition_penalty != 1.0  # presence only in the loop state when used (see greedy)
    presence = ({"presence": _scatter_mask(prefix_ids, ops.ones_like(prefix_ids, dtype="bool"), vocab)}
                if penalised else {})
    cache_state, rebuild = _cache_state(cache)
    state = dict(
        cur=ops.convert_to_tensor(prompt_length, "int32"), running=running, running_scores=running_scores,
        logits=ops.cast(logits, "float32"), cache=cache_state, sequences=running,
        beam_scores=ops.full((batch, num_beams), -1e9), finished=ops.zeros((batch, num_beams), "bool"),
        lengths=ops.zeros((batch, num_beams), "int32"), improvable=ops.ones((batch, 1), "bool"),
        hits_all=ops.convert_to_tensor(False), **presence)
    top_mask = ops.arange(keep) < num_beams
    lp = plan.length_penalty

    def cond(s):
        open_beams = ops.logical_not(ops.logical_and(ops.all(s["finished"]), plan.early_stopping is True))
        return ops.logical_and(ops.logical_and(s["cur"] < max_length, ops.any(s["improvable"])),
                               ops.logical_and(open_beams, ops.logical_not(s["hits_all"])))

    def body(s):
        cur = s["cur"]
        flat_running = ops.reshape(s["running"], (rows, max_length))
        log_probs = ops.log_softmax(s["logits"], axis=-1)
        log_probs = _process_logits(plan, log_probs, flat_running, cur, prompt_length, s.get("presence"), max_length)
        if plan.temperature != 1.0 or plan.top_k or plan.top_p < 1.0:
            log_probs = _warp_logits(plan, log_probs)
        accumulated = ops.reshape(ops.reshape(log_probs, (batch, num_beams, vocab)) + s["running_scores"][..., None],
                                  (batch, num_beams * vocab))
        if plan.temperature != 1.0 or plan.top_k or plan.top_p < 1.0 or plan.mode == "sample":
            # Sampling without replacement (Gumbel top-k), then ordered by score as transformers does.
            _, picked = blocked_top_k(accumulated + _gumbel(ops.shape(accumulated), seed, cur), keep)
            topk_scores = ops.take_along_axis(accumulated, picked, axis=-1)
            topk_scores, order = ops.top_k(topk_scores, keep)
            topk_indices = ops.take_along_axis(picked, order, axis=-1)
        else:
            topk_scores, topk_indices = blocked_top_k(accumulated, keep)
        source_beam = topk_indices // vocab
        tokens = ops.cast(topk_indices % vocab, "int32")
        topk_sequences = ops.take_along_axis(s["running"], source_beam[..., None], axis=1)
        topk_sequences = ops.slice_update(topk_sequences, (0, 0, cur), tokens[..., None])
        hits = ops.logical_or(_is_eos(plan, tokens), cur + 1 >= max_length)

        # Beams that continue: the best num_beams candidates that did not stop.
        continuing_scores = topk_scores + ops.cast(hits, "float32") * -1e9
        running_scores, next_index = ops.top_k(continuing_scores, num_beams)
        running = ops.take_along_axis(topk_sequences, next_index[..., None], axis=1)
        beam_of_row = ops.take_along_axis(source_beam, next_index, axis=1)
        reorder = ops.reshape(beam_of_row + ops.arange(batch)[:, None] * num_beams, (-1,))

        # Finished hypotheses: merge newly finished top candidates into the kept set.
        just_finished = ops.logical_and(hits, top_mask[None, :])
        normalised = topk_scores / ops.cast(cur + 1 - prompt_length, "float32") ** lp
        full = ops.logical_and(ops.all(s["finished"], axis=-1, keepdims=True), plan.early_stopping is True)
        normalised = normalised + ops.cast(full, "float32") * -1e9
        normalised = normalised + ops.cast(ops.logical_not(s["improvable"]), "float32") * -1e9
        normalised = normalised + ops.cast(ops.logical_not(just_finished), "float32") * -1e9
        merged_scores = ops.concatenate([s["beam_scores"], normalised], axis=1)
        merged_sequences = ops.concatenate([s["sequences"], topk_sequences], axis=1)
        merged_finished = ops.concatenate([s["finished"], just_finished], axis=1)
        merged_lengths = ops.concatenate(
            [s["lengths"], ops.full((batch, keep), 1, "int32") * (cur + 1 - prompt_length)], axis=1)
        beam_scores, best = ops.top_k(merged_scores, num_beams)
        sequences = ops.take_along_axis(merged_sequences, best[..., None], axis=1)
        finished = ops.take_along_axis(merged_finished, best, axis=1)
        lengths = ops.take_along_axis(merged_lengths, best, axis=1)

        presence = {}
        if penalised:
            seen = ops.take(s["presence"], reorder, axis=0)
            new = ops.reshape(running[:, :, cur], (rows, 1))
            presence = {"presence": ops.logical_or(seen, _scatter_mask(new, ops.ones_like(new, dtype="bool"), vocab))}
        cache_state = _reorder_cache(s["cache"], reorder) if s["cache"] else ()
        new_tokens = ops.reshape(ops.take(running, cur, axis=2), (rows,))
        logits, cache = step(rebuild(cache_state), ops.reshape(running, (rows, max_length)), cur, new_tokens)
        cache_state, _ = _cache_state(cache)

        # Can a running beam still beat the worst finished one? (transformers' early-stop heuristic)
        next_cur = cur + 1
        if plan.early_stopping == "never" and lp > 0:
            best_length = float(max_length - prompt_length)
        else:
            best_length = ops.cast(next_cur - prompt_length, "float32")
        best_possible = running_scores[:, :1] / best_length ** lp
        worst_finished = ops.where(finished, ops.min(beam_scores, axis=1, keepdims=True), -1e9)
        improvable = ops.logical_and(
            s["improvable"], ops.any(best_possible > worst_finished, axis=-1, keepdims=True))
        return [dict(cur=next_cur, running=running, running_scores=running_scores, logits=ops.cast(logits, "float32"),
                     cache=cache_state, sequences=sequences, beam_scores=beam_scores, finished=finished,
                     lengths=lengths, improvable=improvable, hits_all=ops.all(hits), **presence)]

    for bound in bounds:
        state = dict(state, cache=_grow_cache(state["cache"], bound))
        state = ops.while_loop(lambda s, bound=bound: ops.logical_and(s["cur"] < bound, cond(s)), body, [state])[0]
    final = state
    n = plan.num_return_sequences
    sequences = ops.reshape(final["sequences"][:, :n], (batch * n, max_length))
    scores = ops.reshape(final["beam_scores"][:, :n], (batch * n,))
    length = prompt_length + ops.max(final["lengths"][:, :n])
    return sequences, scores, length


def _compile(fn):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def _compiled_decoder(model, plan: _Plan):
    cache = model.__dict__.setdefault("_compiled_generate", {})
    if plan not in cache:
        def run(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions, seed):
            context = model._decoding_context(source_ids, source_mask) if source_ids is not None else {}
            if plan.num_beams > 1:
                # The context (encoder output, its mask) stays one row per source: cross-attention groups
                # the beams of a source over its keys (layers/attention.py), reading each key once.
                expand = lambda x: ops.repeat(x, plan.num_beams, axis=0)  # noqa: E731
                prefix_ids, prefix_mask, prefix_positions = map(expand, (prefix_ids, prefix_mask, prefix_positions))
                return _beam_search(model, plan, context, prefix_ids, prefix_mask, prefix_positions, seed)
            return _greedy_or_sample(model, plan, context, prefix_ids, prefix_mask, prefix_positions, seed)

        cache[plan] = _compile(run)
    return cache[plan]


# ------------------------------------------------------------------------------------------ entry point
def _round_up(length: int) -> int:
    return max(LENGTH_MULTIPLE, -(-length // LENGTH_MULTIPLE) * LENGTH_MULTIPLE)


def _left_align(ids: np.ndarray, mask: np.ndarray, width: int, pad: int):
    """Move each row's real tokens to the right end of a ``width``-wide buffer (left padding)."""
    out_ids = np.full((ids.shape[0], width), pad, dtype="int32")
    out_mask = np.zeros((ids.shape[0], width), dtype="int32")
    for i in range(ids.shape[0]):
        tokens = ids[i][mask[i].astype(bool)]
        if len(tokens):
            out_ids[i, width - len(tokens):] = tokens
            out_mask[i, width - len(tokens):] = 1
    return out_ids, out_mask


def generate(model, input_ids, attention_mask=None, generation_config=None, seed: int | None = None,
             use_cache: bool = True, return_dict_in_generate: bool = False, output_scores: bool = False,
             **kwargs):
    """Generate token ids with ``model`` (an encoder-decoder or a decoder-only model of this package).

    Args:
        input_ids: ``(batch, length)`` integer ids: the source (encoder-decoder) or the prompt (decoder).
        attention_mask: ``(batch, length)`` 1/0; defaults to ``input_ids != pad_token_id`` when the pad
            id occurs, else all ones.
        generation_config: a ``transformers.GenerationConfig`` overriding ``model.generation_config``.
        seed: seed of the sampling noise; the same seed gives the same samples.
        use_cache: decode with the key/value cache (default) or recompute every position each step.
        return_dict_in_generate: return ``{"sequences", "sequences_scores"}`` instead of the ids.
        **kwargs: any ``GenerationConfig`` field: ``max_new_tokens``, ``max_length``, ``min_new_tokens``,
            ``num_beams``, ``length_penalty``, ``early_stopping``, ``num_return_sequences``, ``do_sample``,
            ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``, ``no_repeat_ngram_size``,
            ``eos_token_id`` (int or list), ``pad_token_id``.

    Returns:
        int32 numpy array ``(batch * num_return_sequences, out_length)``. Encoder-decoder rows start with
        ``decoder_start_token_id``; decoder-only rows start with the (left-padded) prompt. Rows end at their
        eos and are padded with ``pad_token_id``. Scores are the summed log-probabilities (greedy, sampling)
        or the length-normalised beam scores.
    """
    config = resolve_generation_config(model, generation_config, kwargs)
    checked = model._check_inputs({"input_ids": input_ids, "attention_mask": attention_mask},
                                  required=("input_ids",))
    ids = np.asarray(ops.convert_to_numpy(checked["input_ids"])).astype("int32")
    batch = ids.shape[0]
    if batch == 0:
        raise ValueError("input_ids is an empty batch")
    pad_id = config.pad_token_id if config.pad_token_id is not None else model.config.pad_token_id
    if "attention_mask" in checked:
        mask = np.asarray(ops.convert_to_numpy(checked["attention_mask"])).astype("int32")
    elif pad_id is not None and (ids == pad_id).any():
        mask = (ids != pad_id).astype("int32")
    else:
        mask = np.ones_like(ids)
    model.build_weights()
    fill = 0 if pad_id is None else int(pad_id)
    if model.config.is_encoder_decoder:
        if ids.shape[1] == 0:
            raise ValueError("input_ids has zero length")
        width = _round_up(ids.shape[1])
        source_ids = np.full((batch, width), fill, dtype="int32")
        source_mask = np.zeros((batch, width), dtype="int32")
        source_ids[:, : ids.shape[1]], source_mask[:, : mask.shape[1]] = ids, mask
        start = config.decoder_start_token_id
        if start is None:
            start = model.config.decoder_start_token_id
        prefix_ids = np.full((batch, 1), start, dtype="int32")
        prefix_mask = np.ones((batch, 1), dtype="int32")
        trim = 0
    else:
        if ids.shape[1] == 0:
            raise ValueError("input_ids has zero length: give at least one prompt token")
        source_ids = source_mask = None
        width = _round_up(ids.shape[1])
        prefix_ids, prefix_mask = _left_align(ids, mask, width, fill)
        trim = width - ids.shape[1]
    prefix_positions = np.maximum(np.cumsum(prefix_mask, axis=1) - 1, 0).astype("int32")
    plan = _plan(config, prefix_ids.shape[1] - trim, use_cache)
    total = prefix_ids.shape[1] + plan.max_new_tokens
    if total > model.config.max_position_embeddings:
        raise ValueError(f"prompt ({prefix_ids.shape[1] - trim} tokens) + max_new_tokens ({plan.max_new_tokens}) "
                         f"exceeds max_position_embeddings={model.config.max_position_embeddings}")
    if plan.mode == "sample" and plan.num_return_sequences > 1:
        repeat = plan.num_return_sequences
        source_ids, source_mask = (None, None) if source_ids is None else (
            np.repeat(source_ids, repeat, 0), np.repeat(source_mask, repeat, 0))
        prefix_ids, prefix_mask, prefix_positions = (np.repeat(x, repeat, 0) for x in (
            prefix_ids, prefix_mask, prefix_positions))
    seed_value = np.int32(np.random.randint(0, 2**31 - 1) if seed is None else seed % (2**31 - 1))
    run = _compiled_decoder(model, plan)
    sequences, scores, length = run(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions, seed_value)
    sequences = np.asarray(ops.convert_to_numpy(sequences))[:, trim: int(ops.convert_to_numpy(length))]
    scores = np.asarray(ops.convert_to_numpy(scores))
    if return_dict_in_generate or output_scores:
        return {"sequences": sequences, "sequences_scores": scores}
    return sequences
