"""Logits processors (transformers' order) and sampling warpers, as ``keras.ops`` on ``(rows, vocab)`` scores
inside the compiled decoding loop, plus the exact blockwise top-k that beam search ranks candidates with.
"""

from __future__ import annotations

import keras
from keras import ops

from ..padding_and_random import random_uniform
from .plan import DecodingParams, DecodingPlan

NEG_INF = float("-inf")  # a token that may not be chosen (as transformers' processors write it)
# A score that ranks below every real one but stays finite, so beam scores summed with it never give NaN.
EXCLUDED_SCORE = -1e9


def scatter_mask(ids, valid, vocab_size):
    """Boolean ``(rows, vocab)``: True where some valid entry of ``ids (rows, n)`` names the token.

    The set of tokens each row holds, as a mask over the vocabulary (a scatter, so it runs inside the compiled
    loop): the tokens seen so far for the repetition penalty, or the tokens an n-gram ban excludes.

    Args:
        ids: ``(rows, n)`` integer token ids.
        valid: ``(rows, n)`` bool: which entries of ``ids`` count.
        vocab_size: the vocabulary size ``vocab``.

    Returns:
        ``(rows, vocab)`` bool.

    Example:
        >>> mask = scatter_mask(np.array([[1, 3, 3], [0, 4, 2]]),
        ...                     np.array([[True, True, True], [True, False, False]]), vocab_size=5)
        >>> keras.ops.convert_to_numpy(mask)
        array([[False,  True, False,  True, False],
               [ True, False, False, False, False]])
    """
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


def process_logits(plan: DecodingPlan, params: DecodingParams, logits, sequences, cur, prompt_length, presence,
                   end):
    """transformers' logits processors in their order: repetition penalty, n-gram ban, banned tokens,
    min length, suppression at the first step, forced BOS / EOS.

    Only the processors ``plan`` enables are applied (the others cost nothing in the compiled loop):

    - ``repetition_penalty``: scores of tokens in ``presence`` are divided by it when positive, multiplied
      when negative (``RepetitionPenaltyLogitsProcessor``);
    - ``no_repeat_ngram_size`` n: -inf for tokens that would repeat an n-gram of ``sequences[:, :cur]``;
    - ``banned_tokens``: -inf always; ``eos_token_ids``: -inf while fewer than ``min_new_tokens`` tokens are
      generated; ``begin_suppress_tokens``: -inf at the first generated position;
    - ``forced_bos_token_id`` at position 1 and ``forced_eos_token_id`` at position ``end - 1``: every
      other token -inf.

    Args:
        plan: the :class:`~.plan.DecodingPlan`.
        params: the :class:`~.plan.DecodingParams` (``repetition_penalty``, ``min_new_tokens``).
        logits: ``(rows, vocab)`` float next-token scores (logits or log-probabilities).
        sequences: ``(rows, max_length)`` int32 ids so far (prompt, then generated tokens, then padding).
        cur: int scalar, the position being decoded (``sequences[:, :cur]`` are filled).
        prompt_length: positions of the prompt in ``sequences``.
        presence: ``(rows, vocab)`` bool tokens seen (see :func:`scatter_mask`); only read with a repetition
            penalty, may be None otherwise.
        end: ``prompt_length + params.max_new_tokens``: the length at which decoding stops.

    Returns:
        ``(rows, vocab)`` float: the processed scores.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> plan, params = make_plan(GenerationConfig(max_new_tokens=4, repetition_penalty=2.0, min_new_tokens=2,
        ...                                           eos_token_id=2, pad_token_id=0), prompt_length=1, use_cache=True)
        >>> logits = np.array([[1.0, -1.0, 3.0, 0.5, 2.0]], "float32")
        >>> sequences = np.array([[1, 3, 0, 0, 0]], "int32")  # prompt [1], one token generated
        >>> presence = scatter_mask(sequences[:, :2], np.ones((1, 2), bool), vocab_size=5)
        >>> processed = process_logits(plan, params, logits, sequences, 2, 1, presence, 5)
        >>> keras.ops.convert_to_numpy(processed)  # 1 and 3 penalised, eos 2 banned (only 1 new token)
        array([[ 1.  , -2.  ,  -inf,  0.25,  2.  ]], dtype=float32)
    """
    if plan.penalises_repetition:
        penalty = params.repetition_penalty
        penalised = ops.where(logits < 0, logits * penalty, logits / penalty)
        logits = ops.where(presence, penalised, logits)
    if plan.no_repeat_ngram_size:
        banned = _banned_ngram_tokens(sequences, cur, plan.no_repeat_ngram_size, ops.shape(logits)[-1])
        logits = ops.where(banned, NEG_INF, logits)
    vocab_size = ops.shape(logits)[-1]
    if plan.banned_tokens:
        logits = ops.where(_token_mask(plan.banned_tokens, vocab_size)[None, :], NEG_INF, logits)
    if plan.eos_token_ids:  # min_new_tokens: a no-op at 0
        too_short = cur - prompt_length < params.min_new_tokens
        logits = ops.where(ops.logical_and(_token_mask(plan.eos_token_ids, vocab_size)[None, :], too_short),
                           NEG_INF, logits)
    if plan.begin_suppress_tokens:
        first = cur == prompt_length
        logits = ops.where(ops.logical_and(_token_mask(plan.begin_suppress_tokens, vocab_size)[None, :], first),
                           NEG_INF, logits)
    for tokens, when in ((() if plan.forced_bos_token_id is None else (plan.forced_bos_token_id,), cur == 1),
                         (plan.forced_eos_token_id, cur == end - 1)):
        if tokens:
            forced = ops.where(_token_mask(tokens, vocab_size)[None, :], 0.0, NEG_INF)
            logits = ops.where(when, forced, logits)
    return logits


def next_token_scores(plan: DecodingPlan, params: DecodingParams, scores, sequences, cur, prompt_length, presence,
                      end):
    """The scores a step chooses from: :func:`process_logits`, then, sampling, :func:`warp_logits`, then with
    ``renormalize_logits`` a log-softmax: transformers' whole ``LogitsProcessorList`` (its ``scores`` output).

    Args:
        plan / params: the :class:`~.plan.DecodingPlan` and its :class:`~.plan.DecodingParams`.
        scores: ``(rows, vocab)`` logits (greedy and sampling) or log-probabilities (beam search).
        sequences, cur, prompt_length, presence, end: as for :func:`process_logits`.

    Returns:
        ``(rows, vocab)`` float: the processed scores.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> plan, params = make_plan(GenerationConfig(max_new_tokens=4, do_sample=True, top_k=2,
        ...                                           renormalize_logits=True), prompt_length=1, use_cache=True)
        >>> scores = next_token_scores(plan, params, np.array([[1.0, 0.0, 1.0]], "float32"),
        ...                            np.ones((1, 5), "int32"), 1, 1, None, 5)
        >>> np.round(keras.ops.convert_to_numpy(scores), 3)  # two tokens left, half the mass each
        array([[-0.693,   -inf, -0.693]], dtype=float32)
    """
    scores = process_logits(plan, params, scores, sequences, cur, prompt_length, presence, end)
    if plan.do_sample:
        scores = warp_logits(plan, params, scores)
    if plan.renormalize_logits:
        scores = ops.log_softmax(scores, axis=-1)
    return scores


def warp_logits(plan: DecodingPlan, params: DecodingParams, logits):
    """Sampling warpers in transformers' order: temperature, top-k, top-p (nucleus), then the cut-offs the plan
    enables: min-p, typical, epsilon and eta (:func:`cutoff_filters`).

    As transformers' ``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``, ... : scores are
    divided by ``params.temperature``, then every token below the ``plan.top_k``-th largest score and outside
    the ``params.top_p`` nucleus (see :func:`top_p_filter`) gets -inf. Ties with the k-th score are kept. Every
    warper keeps at least ``plan.min_tokens_to_keep`` tokens (1; with beam sampling one more than the eos ids,
    as transformers). The values are runtime tensors: 1.0 (0.0 for the cut-offs) leaves the scores as they are.

    Args:
        plan: the :class:`~.plan.DecodingPlan` (``top_k``, ``sampling_filters``, ``min_tokens_to_keep``).
        params: the :class:`~.plan.DecodingParams` (``temperature``, ``top_p``, ``min_p``, ...).
        logits: ``(rows, vocab)`` float scores.

    Returns:
        ``(rows, vocab)`` float: the warped scores.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> plan, params = make_plan(GenerationConfig(max_new_tokens=4, do_sample=True, temperature=0.5, top_k=2),
        ...                          prompt_length=1, use_cache=True)
        >>> warped = warp_logits(plan, params, np.array([[1.0, -1.0, 3.0, 0.5, 2.0]], "float32"))
        >>> keras.ops.convert_to_numpy(warped)
        array([[-inf, -inf,   6., -inf,   4.]], dtype=float32)
    """
    logits = logits / params.temperature
    vocab = logits.shape[-1]
    if plan.top_k and plan.top_k < vocab:
        kth = ops.min(ops.top_k(logits, plan.top_k, sorted=True)[0], axis=-1, keepdims=True)
        logits = ops.where(logits < kth, NEG_INF, logits)
    logits = top_p_filter(logits, params.top_p, plan.min_tokens_to_keep)
    return cutoff_filters(logits, plan.sampling_filters, params, plan.min_tokens_to_keep)


def top_p_filter(logits, top_p: float, min_tokens_to_keep: int = 1):
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p``; -inf elsewhere.

    A token is kept when the probability mass of the tokens strictly more likely than it is below
    ``top_p``; the ``min_tokens_to_keep`` most likely tokens are always kept (transformers'
    ``TopPLogitsWarper``).

    Args:
        logits: ``(rows, vocab)`` float scores; probabilities are their softmax.
        top_p: the probability mass to keep, in (0, 1] (a float or a scalar tensor); 1 keeps every token.
        min_tokens_to_keep: how many of the most likely tokens are kept whatever ``top_p``.

    Returns:
        ``(rows, vocab)`` float: ``logits`` where kept, -inf elsewhere.

    Example:
        >>> logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], "float32"))
        >>> np.isfinite(keras.ops.convert_to_numpy(top_p_filter(logits, 0.7)))  # 0.5 + 0.3 reach 0.7
        array([[ True,  True, False, False]])
        >>> np.isfinite(keras.ops.convert_to_numpy(top_p_filter(logits, 0.9)))
        array([[ True,  True,  True, False]])
        >>> np.round(keras.ops.convert_to_numpy(top_p_filter(logits, 0.1)), 3)  # the best token always stays
        array([[-0.693,   -inf,   -inf,   -inf]], dtype=float32)
    """
    logits = ops.convert_to_tensor(logits)  # numpy in, a backend tensor for the comparisons below
    sorted_logits = ops.flip(ops.sort(logits, axis=-1), axis=-1)
    sorted_probs = ops.softmax(sorted_logits, axis=-1)
    mass_before = ops.cumsum(sorted_probs, axis=-1) - sorted_probs
    kept_anyway = ops.arange(logits.shape[-1])[None, :] < min_tokens_to_keep
    # top_p >= 1 keeps every token exactly (the cumulative sum may round past 1.0 before the last one)
    keep_sorted = ops.logical_or(ops.logical_or(mass_before < top_p, kept_anyway), top_p >= 1.0)
    threshold = ops.min(ops.where(keep_sorted, sorted_logits, float("inf")), axis=-1, keepdims=True)
    return ops.where(logits < threshold, NEG_INF, logits)


def _kth_largest(logits, k: int):
    """``(rows, 1)``: the k-th largest score of each row. The cut-offs keep every token scoring at least this:
    the ``min_tokens_to_keep`` best and any token tied with the last of them (transformers keeps exactly k,
    choosing among exact ties in the order its sort leaves them)."""
    return ops.min(ops.top_k(logits, min(k, logits.shape[-1]), sorted=True)[0], axis=-1, keepdims=True)


def _entropy(logits):
    """``(rows, 1)`` entropy of ``softmax(logits)`` in nats; -inf entries (probability 0) add nothing."""
    log_probs = ops.log_softmax(logits, axis=-1)
    probs = ops.exp(log_probs)
    return -ops.sum(ops.where(probs > 0, probs * log_probs, 0.0), axis=-1, keepdims=True)


def min_p_filter(logits, min_p, min_tokens_to_keep: int = 1):
    """-inf for tokens less likely than ``min_p`` times the most likely one (transformers' ``MinPLogitsWarper``).

    >>> logits = np.log(np.array([[0.6, 0.3, 0.1]], "float32"))
    >>> np.isfinite(keras.ops.convert_to_numpy(min_p_filter(logits, 0.4)))  # 0.1 < 0.4 * 0.6
    array([[ True,  True, False]])
    """
    probs = ops.softmax(logits, axis=-1)
    remove = probs < min_p * ops.max(probs, axis=-1, keepdims=True)
    return ops.where(ops.logical_and(remove, logits < _kth_largest(logits, min_tokens_to_keep)), NEG_INF, logits)


def typical_filter(logits, mass, min_tokens_to_keep: int = 1):
    """Locally typical sampling (Meister et al., 2022; transformers' ``TypicalLogitsWarper``): keep the tokens
    whose surprisal is closest to the entropy until their probability reaches ``mass``; -inf elsewhere.

    >>> logits = np.log(np.array([[0.4, 0.3, 0.2, 0.1]], "float32"))
    >>> np.isfinite(keras.ops.convert_to_numpy(typical_filter(logits, 0.45)))  # 0.3 and 0.2: closest to H
    array([[False,  True,  True, False]])
    """
    log_probs = ops.log_softmax(logits, axis=-1)
    shifted = ops.abs(-log_probs - _entropy(logits))
    order = ops.argsort(shifted, axis=-1)
    sorted_shifted = ops.take_along_axis(shifted, order, axis=-1)
    cumulative = ops.cumsum(ops.softmax(ops.take_along_axis(logits, order, axis=-1), axis=-1), axis=-1)
    last = ops.minimum(ops.sum(ops.cast(cumulative < mass, "int32"), axis=-1, keepdims=True), logits.shape[-1] - 1)
    threshold = ops.maximum(ops.take_along_axis(sorted_shifted, last, axis=-1),
                            sorted_shifted[:, min_tokens_to_keep - 1:min_tokens_to_keep])
    return ops.where(ops.logical_and(shifted > threshold, mass < 1.0), NEG_INF, logits)


def epsilon_filter(logits, epsilon, min_tokens_to_keep: int = 1):
    """-inf for tokens of probability below ``epsilon`` (Hewitt et al., 2022; ``EpsilonLogitsWarper``).

    >>> logits = np.log(np.array([[0.6, 0.3, 0.1]], "float32"))
    >>> np.isfinite(keras.ops.convert_to_numpy(epsilon_filter(logits, 0.2)))
    array([[ True,  True, False]])
    """
    remove = ops.softmax(logits, axis=-1) < epsilon
    return ops.where(ops.logical_and(remove, logits < _kth_largest(logits, min_tokens_to_keep)), NEG_INF, logits)


def eta_filter(logits, epsilon, min_tokens_to_keep: int = 1):
    """-inf for tokens of probability below ``min(epsilon, sqrt(epsilon) * exp(-entropy))`` (eta sampling,
    Hewitt et al., 2022; transformers' ``EtaLogitsWarper``).

    >>> logits = np.log(np.array([[0.6, 0.3, 0.1]], "float32"))
    >>> np.isfinite(keras.ops.convert_to_numpy(eta_filter(logits, 0.2)))  # eta = min(0.2, 0.447 * e^-0.898)
    array([[ True,  True, False]])
    """
    eta = ops.minimum(epsilon, ops.sqrt(epsilon) * ops.exp(-_entropy(logits)))
    remove = ops.softmax(logits, axis=-1) < eta
    return ops.where(ops.logical_and(remove, logits < _kth_largest(logits, min_tokens_to_keep)), NEG_INF, logits)


#: the cut-off warpers by ``GenerationConfig`` field, in transformers' order
CUTOFF_FILTERS = {"min_p": min_p_filter, "typical_p": typical_filter, "epsilon_cutoff": epsilon_filter,
                  "eta_cutoff": eta_filter}


def cutoff_filters(logits, names, params: DecodingParams, min_tokens_to_keep: int = 1):
    """Apply the cut-off warpers named in ``names`` (keys of :data:`CUTOFF_FILTERS`), in transformers' order,
    each with its runtime value from ``params`` (the ``DecodingParams`` field of the same name).

    >>> from transformers import GenerationConfig
    >>> from vanilla_transformer.generation.plan import make_plan
    >>> plan, params = make_plan(GenerationConfig(max_new_tokens=4, do_sample=True, min_p=0.4),
    ...                          prompt_length=1, use_cache=True)
    >>> plan.sampling_filters
    ('min_p',)
    >>> logits = np.log(np.array([[0.6, 0.3, 0.1]], "float32"))
    >>> np.isfinite(keras.ops.convert_to_numpy(cutoff_filters(logits, plan.sampling_filters, params)))
    array([[ True,  True, False]])
    """
    logits = ops.convert_to_tensor(logits)
    for name in CUTOFF_FILTERS:
        if name in names:
            logits = CUTOFF_FILTERS[name](logits, getattr(params, name), min_tokens_to_keep)
    return logits


TOP_K_BLOCK = 128


def blocked_top_k(scores, k: int):
    """``ops.top_k(scores, k)`` over the last axis of ``(rows, n)``, for long rows: same values, same indices.

    The k largest entries of a row lie in the k blocks (of ``TOP_K_BLOCK`` entries) with the largest
    maxima, so only those k blocks reach the sort. Beam search ranks ``num_beams * vocab`` candidates per
    row each step; XLA's CPU TopK sorts a row on one thread, a blockwise max is a vectorised reduction
    (docs/benchmarks.md, "Where beam search's time goes"). The chosen blocks are taken in index order, so ties resolve to
    the lower index as ``top_k`` does. Exact for any scores but NaN (under XLA also -0.0 vs +0.0, which
    XLA's TopK orders and a max does not; log-probabilities never hold either). Returns ``values (rows, k)``,
    ``indices (rows, k)`` int32.

    Rows shorter than ``8 * k * TOP_K_BLOCK`` go straight to ``ops.top_k``, and so does every row on PyTorch,
    which runs eagerly (there is no XLA TopK to avoid) and whose ``topk`` does not promise the lower index
    among ties (so the blocked path's two calls could pick another tied entry).

    Args:
        scores: ``(rows, n)`` float with a static shape.
        k: how many entries to take per row, ``k <= n``.

    Returns:
        ``(values, indices)``: ``(rows, k)`` float, largest first, and ``(rows, k)`` int32 positions in
        ``scores``.

    Example:
        >>> scores = np.zeros((2, 2048), "float32")  # long enough for the blockwise path with k=2
        >>> scores[0, [5, 1500, 700]] = [3.0, 2.0, 1.0]
        >>> scores[1, [2047, 0]] = [1.0, 1.0]  # a tie: the lower index first
        >>> values, indices = blocked_top_k(scores, 2)
        >>> keras.ops.convert_to_numpy(values), keras.ops.convert_to_numpy(indices)
        (array([[3., 2.], [1., 1.]], dtype=float32), array([[   5, 1500], [   0, 2047]], dtype=int32))
    """
    rows, n = scores.shape
    if n < 8 * k * TOP_K_BLOCK or keras.backend.backend() == "torch":
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
    numbers inside or outside the compiled loop, on every backend.

    ``argmax(logits + noise)`` draws a token with probabilities ``softmax(logits)`` (the Gumbel-max trick),
    and ``top_k(logits + noise, k)`` draws k tokens without replacement: this is how sampling chooses tokens.

    Args:
        shape: the noise shape, e.g. ``(rows, vocab)``.
        seed: int scalar, the seed of the ``generate`` call.
        step: int scalar, the decoding position (a new draw each step).

    Returns:
        float32 noise of ``shape``: ``-log(-log(u))`` for ``u`` uniform in (0, 1).

    Example:
        >>> noise = gumbel_noise((2, 3), seed=0, step=1)
        >>> tuple(noise.shape), keras.backend.standardize_dtype(noise.dtype)
        ((2, 3), 'float32')
        >>> same = keras.ops.convert_to_numpy(gumbel_noise((2, 3), seed=0, step=1))
        >>> np.array_equal(keras.ops.convert_to_numpy(noise), same)
        True
        >>> np.array_equal(keras.ops.convert_to_numpy(gumbel_noise((2, 3), seed=0, step=2)), same)
        False
        >>> logits = np.log(np.array([[0.8, 0.2]], "float32"))
        >>> draws = keras.ops.argmax(logits + gumbel_noise((10000, 2), seed=0, step=1), axis=-1)
        >>> round(float(np.mean(keras.ops.convert_to_numpy(draws) == 0)), 1)  # token 0 drawn ~80% of the time
        0.8
    """
    uniform = random_uniform(shape, ops.stack([ops.cast(seed, "uint32"), ops.cast(step, "uint32")]))
    return -ops.log(-ops.log(uniform))
