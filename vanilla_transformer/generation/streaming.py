"""Streaming: greedy search or sampling for one row, each new token handed to a transformers streamer
(``TextStreamer``, ``TextIteratorStreamer``, anything with ``put`` / ``end``) while decoding runs.

The one-program loop of :mod:`.search` returns only when it is done, so streaming runs a loop of two compiled
programs instead (XLA on TensorFlow, ``jax.jit`` on JAX, eager on PyTorch): ``start`` encodes the source and
fills the key/value cache with the prefix in one pass, ``advance`` chooses a token and runs the decoder on it.
Python reads each token between two ``advance`` calls. The steps are the ones of
:func:`~.search.greedy_or_sample` (:func:`~.search.choose_next_tokens`), so the ids equal ``generate``'s
without a streamer, sampling included (same seed, same noise). A step costs a little more than inside the
single program (a host round trip per token).
"""

from __future__ import annotations

import numpy as np
from keras import ops

from .plan import DecodingParams, DecodingPlan
from .programs import compile_function
from .search import choose_next_tokens, decode_functions, initial_search_state


def streaming_programs(model, plan: DecodingPlan, shapes: tuple):
    """``(start, advance)``, compiled once per model, plan and input shapes (kept in ``model.decoding_programs``).

    - ``start(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions) -> (state, context)``: the
      encoder's context and the :class:`~.search.SearchState` after the prefix (the whole cache in
      ``state.cache``, one slot per position up to the plan's capacity);
    - ``advance(state, context, prefix_mask, prefix_positions, seed, params) -> state``: one token chosen and
      written at ``state.cur``, then run through the decoder (``state.cur`` moves on by one).

    Args:
        model: a model with the decoding protocol of :class:`~vanilla_transformer.generation.GenerationMixin`.
        plan: a greedy or sampling :class:`~.plan.DecodingPlan`.
        shapes: the shapes of the source and prefix arrays (part of the cache key).

    Returns:
        ``(start, advance)``.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> model = TransformerForSeq2SeqLM(example_config).build_weights()
        >>> plan, _ = make_plan(GenerationConfig(max_new_tokens=3), prompt_length=1, use_cache=True)
        >>> start, advance = streaming_programs(model, plan, ((1, 8), (1, 1)))
        >>> streaming_programs(model, plan, ((1, 8), (1, 1)))[0] is start  # built once, kept by the model
        True
    """
    def functions(context, prefix_mask, prefix_positions):
        max_length = prefix_mask.shape[1] + plan.max_new_tokens
        return decode_functions(model, plan, context, prefix_mask, prefix_positions, max_length, max_length)

    def start(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions):
        model.decoding_programs.traces += 1
        context = model.decoding_context(source_ids, source_mask) if source_ids is not None else {}
        first, _ = functions(context, prefix_mask, prefix_positions)
        logits, cache = first(prefix_ids)
        return initial_search_state(plan, prefix_ids, logits, cache, None, model.config.vocab_size), context

    def advance(state, context, prefix_mask, prefix_positions, seed, params):
        model.decoding_programs.traces += 1
        _, step = functions(context, prefix_mask, prefix_positions)
        end = prefix_mask.shape[1] + params.max_new_tokens
        state = choose_next_tokens(plan, params, state, seed, prefix_mask.shape[1], end)
        logits, cache = step(state.cache, state.sequences, state.cur, ops.take(state.sequences, state.cur, axis=1))
        return state._replace(cur=state.cur + 1, logits=ops.cast(logits, "float32"), cache=cache)

    return model.decoding_programs.get(("stream", plan, shapes),
                                       lambda: (compile_function(start), compile_function(advance)))


def stream_tokens(model, plan: DecodingPlan, params: DecodingParams, arrays: tuple, seed, streamer) -> tuple:
    """Decode one row with :func:`streaming_programs`, calling ``streamer.put`` with the prefix, then with each
    new token as soon as it is chosen, then ``streamer.end()`` (transformers' streamer protocol).

    Args:
        model / plan: as for :func:`streaming_programs` (``plan.mode`` greedy or sample, one row).
        params: the :class:`~.plan.DecodingParams` as tensors.
        arrays: ``(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions)`` numpy int32 (the
            source ones None for decoder-only models), one row each.
        seed: int32 seed of the sampling noise.
        streamer: an object with ``put(ids)`` and ``end()``.

    Returns:
        ``(sequences (1, prefix + capacity), scores (1,), length, recorded)`` as the one-program loop returns
        them.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.generation.plan import DecodingParams, make_plan
        >>> model = TransformerForSeq2SeqLM(TransformerConfig(**example_sizes, eos_token_id=None)).build_weights()
        >>> plan, params = make_plan(GenerationConfig(max_new_tokens=3, eos_token_id=None), 1, use_cache=True)
        >>> params = DecodingParams(*(keras.ops.convert_to_tensor(value) for value in params))
        >>> class Printer:
        ...     def put(self, ids): print("put", np.asarray(ids).reshape(-1).shape)
        ...     def end(self): print("end")
        >>> ones = np.ones((1, 1), "int32")
        >>> arrays = (np.array([[5, 6, 2, 0, 0, 0, 0, 0]], "int32"), np.array([[1, 1, 1, 0, 0, 0, 0, 0]], "int32"),
        ...           ones, ones, 0 * ones)
        >>> _, _, length, _ = stream_tokens(model, plan, params, arrays, np.int32(0), Printer())
        put (1,)
        put (1,)
        put (1,)
        put (1,)
        end
        >>> int(length)  # the start token and 3 new ones
        4
    """
    source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions = arrays
    shapes = tuple(None if x is None else x.shape for x in (source_ids, prefix_ids))
    start, advance = streaming_programs(model, plan, shapes)
    state, context = start(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions)
    streamer.put(np.asarray(prefix_ids)[:, np.asarray(prefix_mask)[0].astype(bool)])
    end = prefix_ids.shape[1] + int(ops.convert_to_numpy(params.max_new_tokens))
    for cur in range(prefix_ids.shape[1], end):
        state = advance(state, context, prefix_mask, prefix_positions, seed, params)
        streamer.put(np.asarray(ops.convert_to_numpy(state.sequences[:, cur])))
        if bool(ops.convert_to_numpy(state.finished)[0]):
            break
    streamer.end()
    recorded = dict(zip(plan.records, state.recorded))
    return state.sequences, state.scores, state.cur, recorded
