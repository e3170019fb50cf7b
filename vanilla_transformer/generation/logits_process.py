"""Logits processors (transformers' order) and sampling warpers, as ``keras.ops`` on ``(rows, vocab)`` scores
inside the compiled decoding loop, plus the exact blockwise top-k that beam search ranks candidates with.
"""

from __future__ import annotations

from keras import ops

from ..layers.dropout import random_uniform
from .plan import DecodingPlan

NEG_INF = float("-inf")  # a token that may not be chosen (as transformers' processors write it)
# A score that ranks below every real one but stays finite, so beam scores summed with it never give NaN.
EXCLUDED_SCORE = -1e9


def scatter_mask(ids, valid, vocab_size):
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
    return scatter_mask(candidates, valid, vocab_size)


def _token_mask(tokens, vocab_size):
    """Boolean ``(vocab,)``: True at the given token ids."""
    vocab = ops.arange(vocab_size)
    return ops.any(ops.stack([vocab == t for t in tokens]), axis=0)


def process_logits(plan: DecodingPlan, logits, sequences, cur, prompt_length, presence, max_length):
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


def warp_logits(plan: DecodingPlan, logits):
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


def gumbel_noise(shape, seed, step):
    """Gumbel noise from the counter-based generator: stateless, so the same (seed, step) gives the same
    numbers inside or outside the compiled loop, on every backend."""
    uniform = random_uniform(shape, ops.stack([ops.cast(seed, "uint32"), ops.cast(step, "uint32")]))
    return -ops.log(-ops.log(uniform))
