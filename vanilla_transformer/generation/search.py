"""The decoding loops of greedy search and sampling, and what every search shares: the key/value cache that
grows in phases, the decoding step functions, and the end-of-sequence test.

The loop runs in phases over a growing self-attention cache: phase p holds the first prompt + p *
``PHASE_LENGTH`` slots, so a step reads (and beam search reorders) about as many cache slots as are filled
instead of the whole ``max_length`` buffer. Each phase is one ``ops.while_loop`` with static shapes.
"""

from __future__ import annotations

from typing import NamedTuple

from keras import ops

from .logits_process import gumbel_noise, next_token_scores, scatter_mask
from .plan import DecodingPlan

PHASE_LENGTH = 8


def first_argmax(logits):
    """Index of the largest value along the last axis, the lowest index among ties (as ``argmax``).

    Written as max, compare and min rather than ``ops.argmax``, whose TensorFlow form tests the sign bit
    with ``BitwiseAnd``, an op LiteRT's runtime lacks; this way the same decoding loop also runs on device.

    Args:
        logits: ``(..., vocab)`` floats.

    Returns:
        ``(...)`` int32 indices.

    Example:
        >>> keras.ops.convert_to_numpy(first_argmax(np.array([[0.1, 0.7, 0.7], [2.0, -1.0, 0.5]], "float32")))
        array([1, 0], dtype=int32)
    """
    vocab = logits.shape[-1]
    is_best = ops.equal(logits, ops.max(logits, axis=-1, keepdims=True))
    return ops.min(ops.where(is_best, ops.arange(vocab, dtype="int32"), vocab), axis=-1)


def phase_bounds(plan: DecodingPlan, prompt_length: int, max_length: int) -> list[int]:
    """Cache sizes of the decoding phases: prompt + 8, prompt + 16, ..., max_length (one phase uncached).

    Phase p decodes positions up to its bound with a self-attention cache of that many slots
    (``PHASE_LENGTH`` = 8 more each phase), so early steps attend over few slots.

    Args:
        plan: the :class:`~.plan.DecodingPlan` (only ``use_cache`` is read).
        prompt_length: positions of the prompt (the decoder's prefix).
        max_length: ``prompt_length + max_new_tokens``.

    Returns:
        Increasing list of ints, the last one ``max_length``.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> plan, _ = make_plan(GenerationConfig(max_new_tokens=19), prompt_length=1, use_cache=True)
        >>> phase_bounds(plan, prompt_length=1, max_length=20)
        [9, 17, 20]
        >>> phase_bounds(make_plan(GenerationConfig(max_new_tokens=19), 1, use_cache=False)[0], 1, 20)
        [20]
    """
    if not plan.use_cache:
        return [max_length]
    return list(range(prompt_length + PHASE_LENGTH, max_length, PHASE_LENGTH)) + [max_length]


def grow_cache(cache_state, length):
    """Pad each self-attention ``(k, v)`` of ``(batch, heads, slots, d_k)`` with empty slots up to ``length``.

    Called between phases (see :func:`phase_bounds`): the filled slots keep their place, the new ones are
    zeros that the causal mask hides until they are written.

    Args:
        cache_state: list (one entry per decoder layer) of ``(k, v)``, each ``(batch, heads, slots, d_k)``;
            ``()`` without a cache.
        length: the new number of slots, ``>= slots``.

    Returns:
        The same structure with ``(batch, heads, length, d_k)`` tensors (``()`` stays ``()``).

    Example:
        >>> cache_state = [(np.ones((2, 2, 3, 4), "float32"), np.ones((2, 2, 3, 4), "float32"))]
        >>> grown = grow_cache(cache_state, 8)
        >>> [tuple(t.shape) for t in grown[0]]
        [(2, 2, 8, 4), (2, 2, 8, 4)]
        >>> keras.ops.convert_to_numpy(grown[0][0])[0, 0, :, 0]  # 3 filled slots, 5 new empty ones
        array([1., 1., 1., 0., 0., 0., 0., 0.], dtype=float32)
        >>> grow_cache((), 8)
        ()
    """
    if not cache_state:  # the uncached path
        return cache_state
    return [tuple(ops.pad(t, [(0, 0), (0, 0), (0, length - t.shape[2]), (0, 0)]) for t in kv) for kv in cache_state]


def decode_functions(model, plan: DecodingPlan, context, prefix_mask, prefix_positions, max_length, first_length):
    """``first(prefix_ids) -> logits, cache`` and ``step(cache, sequences, cur, new_tokens) -> logits, cache``.

    The two calls every search makes through the model's decoding protocol (``init_decoding_cache``,
    ``decode_step``): ``first`` runs the whole prefix and returns the logits of its last position, ``step``
    runs one new token at position ``cur``. Generated tokens get the positions after each row's real (not
    padding) prefix tokens, and the key mask hides the prefix padding. The cache starts with ``first_length``
    slots (the first phase bound); ``step`` works on a cache of any size up to ``max_length`` (see
    :func:`grow_cache`). Without ``plan.use_cache`` the cache is ``()`` and both recompute every position of
    a ``max_length`` buffer.

    Args:
        model: a model with the decoding protocol of :class:`~vanilla_transformer.generation.GenerationMixin`.
        plan: the :class:`~.plan.DecodingPlan`.
        context: ``model.decoding_context(...)``: the encoder output and its mask, ``{}`` for decoder-only.
        prefix_mask: ``(rows, prompt)`` 1/0, 0 for the left padding of the prefix.
        prefix_positions: ``(rows, prompt)`` int32 positions of the prefix tokens.
        max_length: ``prompt + max_new_tokens``.
        first_length: the cache slots ``first`` allocates.

    Returns:
        ``(first, step)``: ``first(prefix_ids (rows, prompt))`` and
        ``step(cache, sequences (rows, max_length), cur, new_tokens (rows,))`` both return
        ``(logits (rows, vocab), cache)``.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> model = TransformerForCausalLM(TransformerConfig(**example_sizes, architecture="decoder"))
        >>> _ = model.build_weights()  # as generate does before decoding
        >>> plan, _ = make_plan(GenerationConfig(max_new_tokens=3), prompt_length=2, use_cache=True)
        >>> prefix_ids = np.array([[0, 5], [4, 6]], "int32")  # the first row is left-padded
        >>> prefix_mask, prefix_positions = np.array([[0, 1], [1, 1]]), np.array([[0, 0], [0, 1]])
        >>> first, step = decode_functions(model, plan, {}, prefix_mask, prefix_positions, max_length=5,
        ...                                first_length=5)
        >>> logits, cache = first(prefix_ids)
        >>> tuple(logits.shape), [tuple(t.shape) for t in cache["self"][0]]  # (batch, heads, slots, d_k)
        ((2, 20), [(2, 2, 5, 4), (2, 2, 5, 4)])
        >>> sequences = np.concatenate([prefix_ids, np.zeros((2, 3), "int32")], axis=1)
        >>> logits, cache = step(cache, sequences, 2, np.array([7, 8], "int32"))
        >>> tuple(logits.shape)
        (2, 20)
    """
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
    """The self-attention cache with its rows taken in the order of ``indices`` (beam search's reordering).

    After a beam-search step, row ``r`` continues the beam ``indices[r]`` and so takes over its keys/values.

    Args:
        cache: list (one entry per decoder layer) of ``(k, v)``, each ``(rows, heads, slots, d_k)``.
        indices: ``(rows,)`` int row indices.

    Returns:
        The same structure, with ``k[indices]`` and ``v[indices]``.

    Example:
        >>> k = np.arange(3, dtype="float32").reshape(3, 1, 1, 1) * np.ones((3, 2, 4, 2), "float32")
        >>> reordered = reorder_cache([(k, k)], np.array([2, 2, 0]))
        >>> tuple(reordered[0][0].shape), keras.ops.convert_to_numpy(reordered[0][1])[:, 0, 0, 0]
        ((3, 2, 4, 2), array([2., 2., 0.], dtype=float32))
    """
    return [(ops.take(k, indices, axis=0), ops.take(v, indices, axis=0)) for k, v in cache]


def split_cache(cache):
    """The part of the cache that changes in the loop (self-attention), and a function to rebuild it.

    Only ``cache["self"]`` is carried in the ``while_loop`` state; the cross-attention keys/values (computed
    once from the encoder output) stay constant, captured by ``rebuild``.

    Args:
        cache: ``{"self": [(k, v), ...], "cross": [(k, v), ...]}`` as ``init_decoding_cache`` makes it
            (no ``"cross"`` for decoder-only models), or ``()`` without a cache.

    Returns:
        ``(state, rebuild)``: ``state`` is ``cache["self"]`` (``()`` without a cache) and ``rebuild(state)``
        returns the whole cache with ``state`` as its self-attention part.

    Example:
        >>> self_kv, cross_kv = [("k0", "v0")], [("ck0", "cv0")]
        >>> state, rebuild = split_cache({"self": self_kv, "cross": cross_kv})
        >>> state
        [('k0', 'v0')]
        >>> rebuild([("k1", "v1")])
        {'cross': [('ck0', 'cv0')], 'self': [('k1', 'v1')]}
        >>> split_cache(())[0]
        ()
    """
    if not cache:
        return (), lambda state: cache
    constant = {key: value for key, value in cache.items() if key != "self"}
    return cache["self"], lambda state: dict(constant, self=list(state))


def is_eos(plan, tokens):
    """Bool of ``tokens``' shape: True where the token is one of ``plan.eos_token_ids`` (all False without).

    Args:
        plan: the :class:`~.plan.DecodingPlan`.
        tokens: int tensor of any shape, e.g. ``(rows,)``.

    Returns:
        Bool tensor of the same shape.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> plan, _ = make_plan(GenerationConfig(max_new_tokens=4, eos_token_id=[2, 3]), prompt_length=1,
        ...                     use_cache=True)
        >>> keras.ops.convert_to_numpy(is_eos(plan, np.array([1, 2, 3, 4])))
        array([False,  True,  True, False])
    """
    if not plan.eos_token_ids:
        return ops.zeros_like(tokens, dtype="bool")
    return ops.any(ops.stack([ops.equal(tokens, e) for e in plan.eos_token_ids]), axis=0)


def greedy_or_sample(model, plan, params, context, prefix_ids, prefix_mask, prefix_positions, seed, active=None):
    """Greedy search or multinomial sampling, as transformers' ``generate`` with ``num_beams=1``.

    Each step processes the logits (:func:`~.logits_process.process_logits`), then takes the argmax (greedy)
    or, sampling, warps them (:func:`~.logits_process.warp_logits`) and takes the argmax after adding
    :func:`~.logits_process.gumbel_noise` (a draw from the softmax). A row that produced eos is finished and
    padded with ``pad_token_id``; the loop stops when every row is finished or after ``params.max_new_tokens``
    tokens (the buffer holds the plan's capacity, ``plan.max_new_tokens``). It runs in
    phases over a growing cache (:func:`phase_bounds`), one ``ops.while_loop`` each, and is meant to be traced
    inside the compiled decoding program (it also runs eagerly).

    Args:
        model: a model with the decoding protocol of :class:`~vanilla_transformer.generation.GenerationMixin`.
        plan: a greedy or sampling :class:`~.plan.DecodingPlan`.
        params: its :class:`~.plan.DecodingParams` (runtime values).
        context: ``model.decoding_context(source_ids, source_mask)``; ``{}`` for decoder-only models.
        prefix_ids: ``(batch, prompt)`` int32: the decoder start token or the left-padded prompt.
        prefix_mask: ``(batch, prompt)`` 1/0, 0 for left padding.
        prefix_positions: ``(batch, prompt)`` int32 positions of the prefix tokens.
        seed: int32 scalar seed of the sampling noise.
        active: ``(batch,)`` bool, False for rows that only fill a batch bucket (finished from the start);
            None: every row.

    Returns:
        ``(sequences, scores, length, recorded)``: ``sequences (batch, prompt + capacity)`` int32 (prefix, then the
        generated tokens, then padding), ``scores (batch,)`` float32 summed log-probabilities of the chosen
        tokens (after processing/warping), ``length``, an int32 scalar: the columns actually decoded, and
        ``recorded``: ``{name: (batch, capacity, vocab) float32}`` for each of ``plan.records`` (the processed
        scores / raw logits of every step; ``{}`` when none).

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> _ = model.build_weights()  # as generate does before decoding
        >>> context = model.decoding_context(np.array([[5, 6, 7, 2], [8, 9, 2, 0]]), np.array([[1, 1, 1, 1],
        ...                                                                                 [1, 1, 1, 0]]))
        >>> plan, params = make_plan(GenerationConfig(max_new_tokens=3, eos_token_id=2, pad_token_id=0),
        ...                          prompt_length=1, use_cache=True)
        >>> start = np.ones((2, 1), "int32")  # decoder_start_token_id
        >>> sequences, scores, length, _ = greedy_or_sample(model, plan, params, context, start, np.ones((2, 1), "int32"),
        ...                                              np.zeros((2, 1), "int32"), np.int32(0))
        >>> tuple(sequences.shape), tuple(scores.shape), int(length) <= 4  # a buffer of 8 new tokens, 3 used
        ((2, 9), (2,), True)
        >>> keras.ops.convert_to_numpy(sequences)[:, 0], bool(np.all(keras.ops.convert_to_numpy(scores) <= 0))
        (array([1, 1], dtype=int32), True)
    """
    prompt_length = prefix_ids.shape[1]
    max_length, end = prompt_length + plan.max_new_tokens, prompt_length + params.max_new_tokens
    bounds = phase_bounds(plan, prompt_length, max_length)
    first, step = decode_functions(model, plan, context, prefix_mask, prefix_positions, max_length, bounds[0])
    logits, cache = first(prefix_ids)
    cache_state, rebuild = split_cache(cache)
    state = initial_search_state(plan, prefix_ids, logits, cache_state, active, model.config.vocab_size)

    def body(s: SearchState):
        s = choose_next_tokens(plan, params, s, seed, prompt_length, end)
        logits, cache = step(rebuild(s.cache), s.sequences, s.cur, ops.take(s.sequences, s.cur, axis=1))
        return [s._replace(cur=s.cur + 1, logits=ops.cast(logits, "float32"), cache=split_cache(cache)[0])]

    for bound in bounds:
        state = state._replace(cache=grow_cache(state.cache, bound))
        state = ops.while_loop(lambda s, bound=bound: ops.logical_and(
            s.cur < bound, ops.logical_and(s.cur < end, ops.logical_not(ops.all(s.finished)))), body, [state])[0]
    return state.sequences, state.scores, state.cur, dict(zip(plan.records, state.recorded))


class SearchState(NamedTuple):
    """The state of greedy search and sampling between steps (``rows`` sequences, ``T`` = prompt + capacity).

    ``presence`` and ``recorded`` are ``()`` unless the plan uses them: a loop variable that passes through
    unchanged breaks TensorFlow's XLA conversion of consecutive loops (the phases).

    >>> SearchState._fields
    ('cur', 'sequences', 'logits', 'cache', 'finished', 'scores', 'presence', 'recorded')
    """

    cur: object  # int32 scalar: the position decoded next
    sequences: object  # (rows, T) int32 ids so far, then padding
    logits: object  # (rows, vocab) float32 next-token logits
    cache: object  # self-attention keys/values (() without a cache)
    finished: object  # (rows,) bool
    scores: object  # (rows,) float32 summed log-probabilities of the chosen tokens
    presence: object = ()  # (rows, vocab) bool tokens seen, for the repetition penalty
    recorded: object = ()  # one (rows, capacity, vocab) float32 buffer per name in plan.records


def initial_search_state(plan: DecodingPlan, prefix_ids, logits, cache_state, active, vocab: int) -> SearchState:
    """The :class:`SearchState` before the first step: the prefix, then ``pad_token_id`` up to the capacity.

    Args:
        plan: the :class:`~.plan.DecodingPlan`.
        prefix_ids: ``(rows, prompt)`` int32.
        logits: ``(rows, vocab)`` the logits after the prefix.
        cache_state: the self-attention cache after the prefix.
        active: ``(rows,)`` bool or None; inactive rows start finished.
        vocab: the vocabulary size.

    Returns:
        A :class:`SearchState` at ``cur = prompt``.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> plan, _ = make_plan(GenerationConfig(max_new_tokens=3, pad_token_id=0), prompt_length=1, use_cache=True)
        >>> state = initial_search_state(plan, np.ones((2, 1), "int32"), np.zeros((2, 5), "float32"), (), None, 5)
        >>> int(state.cur), keras.ops.convert_to_numpy(state.sequences)[0]  # the prefix, then padding (capacity 8)
        (1, array([1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=int32))
    """
    rows = prefix_ids.shape[0]
    sequences = ops.concatenate([prefix_ids, ops.full((rows, plan.max_new_tokens), plan.pad_token_id, "int32")], 1)
    presence = (scatter_mask(prefix_ids, ops.ones_like(prefix_ids, dtype="bool"), vocab)
                if plan.penalises_repetition else ())
    recorded = tuple(ops.zeros((rows, plan.max_new_tokens, vocab), "float32") for _ in plan.records)
    return SearchState(ops.convert_to_tensor(prefix_ids.shape[1], "int32"), sequences, ops.cast(logits, "float32"),
                       cache_state, ops.zeros((rows,), "bool") if active is None else ops.logical_not(active),
                       ops.zeros((rows,), "float32"), presence, recorded)


def choose_next_tokens(plan: DecodingPlan, params, s: SearchState, seed, prompt_length: int, end) -> SearchState:
    """One step of greedy search or sampling on ``s.logits``: the next token of every row written at ``s.cur``.

    The logits are processed (and, sampling, warped: :func:`~.logits_process.next_token_scores`); greedy
    takes the argmax, sampling the argmax after adding :func:`~.logits_process.gumbel_noise`. Finished rows
    get ``pad_token_id``; a row that chose an eos is finished.

    Args:
        plan / params: the :class:`~.plan.DecodingPlan` and its :class:`~.plan.DecodingParams`.
        s: the :class:`SearchState` (``cur`` not yet filled).
        seed: int32 scalar seed of the sampling noise.
        prompt_length: positions of the prompt.
        end: ``prompt_length + params.max_new_tokens``.

    Returns:
        ``s`` with the token written (``cur`` unchanged), ``finished``, ``scores``, ``presence`` and
        ``recorded`` updated.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> plan, params = make_plan(GenerationConfig(max_new_tokens=3, pad_token_id=0, eos_token_id=2),
        ...                          prompt_length=1, use_cache=True)
        >>> logits = np.array([[0.0, 0.0, 5.0, 1.0, 0.0], [0.0, 0.0, 0.0, 4.0, 0.0]], "float32")
        >>> state = initial_search_state(plan, np.ones((2, 1), "int32"), logits, (), None, 5)
        >>> state = choose_next_tokens(plan, params, state, np.int32(0), prompt_length=1, end=4)
        >>> keras.ops.convert_to_numpy(state.sequences)[:, 1], keras.ops.convert_to_numpy(state.finished)
        (array([2, 3], dtype=int32), array([ True, False]))
    """
    vocab = s.logits.shape[-1]
    processed = next_token_scores(plan, params, s.logits, s.sequences, s.cur, prompt_length,
                                  s.presence if plan.penalises_repetition else None, end)
    if plan.mode == "sample":
        processed_for_choice = processed + gumbel_noise(ops.shape(processed), seed, s.cur)
    else:
        processed_for_choice = processed
    next_tokens = ops.where(s.finished, plan.pad_token_id, ops.cast(first_argmax(processed_for_choice), "int32"))
    # a masked sum, not take_along_axis, whose batched gather LiteRT's converter mistranslates
    is_chosen = ops.equal(ops.arange(vocab, dtype="int32")[None, :], next_tokens[:, None])
    chosen = ops.sum(ops.where(is_chosen, ops.log_softmax(processed, axis=-1), 0.0), axis=-1)
    presence = s.presence
    if plan.penalises_repetition:
        presence = ops.logical_or(presence, is_chosen)
    recorded = tuple(ops.slice_update(buffer, (0, s.cur - prompt_length, 0), value[:, None, :]) for buffer, value
                     in zip(s.recorded, (processed if name == "scores" else s.logits for name in plan.records)))
    return s._replace(sequences=ops.slice_update(s.sequences, (0, s.cur), next_tokens[:, None]),
                      finished=ops.logical_or(s.finished, is_eos(plan, next_tokens)),
                      scores=s.scores + ops.where(s.finished, 0.0, chosen), presence=presence, recorded=recorded)
