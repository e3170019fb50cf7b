"""Beam search as transformers vectorises it, over ``batch * num_beams`` rows with a reordered cache.

Each step ranks the top ``2 * num_beams`` (more with several eos ids) candidates of every source: the best
``num_beams`` that did not end continue as the running beams; those that ended join the kept finished
hypotheses, scored ``sum log p / length ** length_penalty``. The search stops when no running beam can
beat the worst kept hypothesis (transformers' ``early_stopping`` heuristic), so ids match transformers'.
"""

from __future__ import annotations

from typing import NamedTuple

from keras import ops

from .logits_process import EXCLUDED_SCORE, blocked_top_k, gumbel_noise, next_token_scores, scatter_mask
from .plan import DecodingParams, DecodingPlan
from .search import decode_functions, grow_cache, is_eos, phase_bounds, reorder_cache, split_cache


class BeamState(NamedTuple):
    """The loop state; shapes with ``B`` sources, ``K`` beams, ``T`` = prompt + max_new_tokens.

    As in transformers' vectorised beam search: ``K`` running beams per source (extended each step) and up to
    ``K`` kept finished hypotheses per source (those that ended with eos or at ``T``, best first). ``cur``
    and ``all_ended`` are scalars, the rest is batched; :func:`beam_search` carries it through
    ``ops.while_loop``.

    Example:
        >>> BeamState._fields
        ('cur', 'running', 'running_scores', 'logits', 'cache', 'finished', 'finished_scores', 'is_finished',
         'finished_lengths', 'improvable', 'all_ended', 'presence', 'running_beam_indices',
         'finished_beam_indices', 'recorded')
        >>> BeamState._field_defaults["presence"]  # only carried with a repetition penalty
        ()
    """

    cur: object  # int32 scalar: the position decoded in this step
    running: object  # (B, K, T) ids of the running beams
    running_scores: object  # (B, K) their summed log-probabilities
    logits: object  # (B * K, vocab) float32 next-token logits of the running beams
    cache: object  # self-attention keys/values of the running beams (() without a cache)
    finished: object  # (B, K, T) ids of the kept finished hypotheses
    finished_scores: object  # (B, K) their length-normalised scores
    is_finished: object  # (B, K) bool: whether a kept slot holds a finished hypothesis
    finished_lengths: object  # (B, K) int32 new tokens of each kept hypothesis
    improvable: object  # (B, 1) bool: a running beam can still beat the worst kept hypothesis
    all_ended: object  # bool scalar: every candidate of the last step ended
    presence: object = ()  # (B * K, vocab) bool tokens seen, for the repetition penalty; () when unused
    # (B, K, capacity) int32: the running beam row (b * K + k) each step extended, -1 after the end
    running_beam_indices: object = ()  # () unless the plan records "beam_indices"
    finished_beam_indices: object = ()
    recorded: object = ()  # (B * K, capacity, vocab) float32 per step: the plan's "scores" / "logits" records


class _Candidates(NamedTuple):
    scores: object  # (B, C) summed log-probabilities
    sequences: object  # (B, C, T)
    source_beam: object  # (B, C) the running beam each extends
    ended: object  # (B, C) bool: the candidate ends with eos or at max_length
    log_probs: object  # (B * K, vocab) the processed next-token scores of the running beams
    beam_indices: object  # (B, C, capacity) the running-beam rows of each step, or ()


def _initial_state(plan: DecodingPlan, prefix_ids, logits, cache, vocab: int, batch: int, active) -> BeamState:
    rows, prompt_length = prefix_ids.shape[0], prefix_ids.shape[1]
    num_beams, max_length = plan.num_beams, prefix_ids.shape[1] + plan.max_new_tokens
    running = ops.reshape(
        ops.concatenate([prefix_ids, ops.full((rows, plan.max_new_tokens), plan.pad_token_id, "int32")], 1),
        (batch, num_beams, max_length))
    # Only the first beam starts alive, so the first step does not pick K copies of the same token.
    running_scores = ops.concatenate(
        [ops.zeros((batch, 1)), ops.full((batch, num_beams - 1), EXCLUDED_SCORE)], axis=1)
    # presence only in the loop state when used: a loop variable that passes through unchanged breaks
    # TensorFlow's XLA conversion of consecutive loops (the phases)
    presence = (scatter_mask(prefix_ids, ops.ones_like(prefix_ids, dtype="bool"), vocab)
                if plan.penalises_repetition else ())
    beam_indices = (ops.full((batch, num_beams, plan.max_new_tokens), -1, "int32")
                    if "beam_indices" in plan.records else ())
    recorded = tuple(ops.zeros((rows, plan.max_new_tokens, vocab), "float32")
                     for name in plan.records if name != "beam_indices")
    return BeamState(
        cur=ops.convert_to_tensor(prompt_length, "int32"), running=running, running_scores=running_scores,
        logits=ops.cast(logits, "float32"), cache=cache, finished=running,
        finished_scores=ops.full((batch, num_beams), EXCLUDED_SCORE),
        is_finished=ops.zeros((batch, num_beams), "bool"), finished_lengths=ops.zeros((batch, num_beams), "int32"),
        improvable=active[:, None], all_ended=ops.convert_to_tensor(False), presence=presence,
        running_beam_indices=beam_indices, finished_beam_indices=beam_indices, recorded=recorded)


def _top_candidates(plan: DecodingPlan, params: DecodingParams, s: BeamState, keep: int, prompt_length: int,
                    max_length: int, end, seed) -> _Candidates:
    """The ``keep`` best (or, sampling, drawn) one-token extensions of each source's running beams."""
    batch, num_beams = s.running_scores.shape[0], plan.num_beams
    rows = batch * num_beams
    log_probs = ops.log_softmax(s.logits, axis=-1)
    vocab = log_probs.shape[-1]
    log_probs = next_token_scores(plan, params, log_probs, ops.reshape(s.running, (rows, max_length)), s.cur,
                                  prompt_length, s.presence if plan.penalises_repetition else None, end)
    accumulated = ops.reshape(ops.reshape(log_probs, (batch, num_beams, vocab)) + s.running_scores[..., None],
                              (batch, num_beams * vocab))
    if plan.do_sample:
        # Sampling without replacement (Gumbel top-k), then ordered by score as transformers does.
        _, picked = blocked_top_k(accumulated + gumbel_noise(ops.shape(accumulated), seed, s.cur), keep)
        scores, order = ops.top_k(ops.take_along_axis(accumulated, picked, axis=-1), keep)
        indices = ops.take_along_axis(picked, order, axis=-1)
    else:
        scores, indices = blocked_top_k(accumulated, keep)
    source_beam = indices // vocab
    tokens = ops.cast(indices % vocab, "int32")
    sequences = ops.take_along_axis(s.running, source_beam[..., None], axis=1)
    sequences = ops.slice_update(sequences, (0, 0, s.cur), tokens[..., None])
    beam_indices = s.running_beam_indices
    if "beam_indices" in plan.records:
        rows_of = source_beam + ops.arange(batch, dtype=source_beam.dtype)[:, None] * num_beams
        beam_indices = ops.slice_update(ops.take_along_axis(beam_indices, source_beam[..., None], axis=1),
                                        (0, 0, s.cur - prompt_length), ops.cast(rows_of, "int32")[..., None])
    return _Candidates(scores, sequences, source_beam, ops.logical_or(is_eos(plan, tokens), s.cur + 1 >= end),
                       log_probs, beam_indices)


def _continue_best(c: _Candidates, num_beams: int):
    """The best ``num_beams`` candidates that did not end: (ids, scores, the old beam of each, beam indices)."""
    continuing_scores = c.scores + ops.cast(c.ended, "float32") * EXCLUDED_SCORE
    running_scores, next_index = ops.top_k(continuing_scores, num_beams)
    running = ops.take_along_axis(c.sequences, next_index[..., None], axis=1)
    beam_indices = c.beam_indices
    if len(beam_indices):
        beam_indices = ops.take_along_axis(beam_indices, next_index[..., None], axis=1)
    return running, running_scores, ops.take_along_axis(c.source_beam, next_index, axis=1), beam_indices


def _merge_finished(plan: DecodingPlan, params: DecodingParams, s: BeamState, c: _Candidates, prompt_length: int):
    """The kept finished hypotheses after adding the candidates that ended among the top ``num_beams``."""
    num_beams, keep = plan.num_beams, c.scores.shape[1]
    batch = c.scores.shape[0]
    just_finished = ops.logical_and(c.ended, (ops.arange(keep) < num_beams)[None, :])
    normalised = c.scores / ops.cast(s.cur + 1 - prompt_length, "float32") ** params.length_penalty
    full = ops.logical_and(ops.all(s.is_finished, axis=-1, keepdims=True), plan.early_stopping is True)
    normalised = normalised + ops.cast(full, "float32") * EXCLUDED_SCORE
    normalised = normalised + ops.cast(ops.logical_not(s.improvable), "float32") * EXCLUDED_SCORE
    normalised = normalised + ops.cast(ops.logical_not(just_finished), "float32") * EXCLUDED_SCORE
    merged_lengths = ops.concatenate(
        [s.finished_lengths, ops.full((batch, keep), 1, "int32") * (s.cur + 1 - prompt_length)], axis=1)
    finished_scores, best = ops.top_k(ops.concatenate([s.finished_scores, normalised], axis=1), num_beams)
    finished = ops.take_along_axis(ops.concatenate([s.finished, c.sequences], axis=1), best[..., None], axis=1)
    is_finished = ops.take_along_axis(ops.concatenate([s.is_finished, just_finished], axis=1), best, axis=1)
    beam_indices = s.finished_beam_indices
    if len(beam_indices):
        beam_indices = ops.take_along_axis(ops.concatenate([beam_indices, c.beam_indices], axis=1), best[..., None],
                                           axis=1)
    return finished, finished_scores, is_finished, ops.take_along_axis(merged_lengths, best, axis=1), beam_indices


def _still_improvable(plan: DecodingPlan, params: DecodingParams, s: BeamState, running_scores, finished_scores,
                      is_finished, prompt_length: int, end):
    """Can a running beam still beat the worst kept hypothesis? (transformers' early-stop heuristic)"""
    best_length = ops.cast(s.cur + 1 - prompt_length, "float32")
    if plan.early_stopping == "never":  # with a positive length penalty, the longest a beam can become
        best_length = ops.where(params.length_penalty > 0, ops.cast(end - prompt_length, "float32"), best_length)
    best_possible = running_scores[:, :1] / best_length ** params.length_penalty
    worst_finished = ops.where(is_finished, ops.min(finished_scores, axis=1, keepdims=True), EXCLUDED_SCORE)
    return ops.logical_and(s.improvable, ops.any(best_possible > worst_finished, axis=-1, keepdims=True))


def beam_search(model, plan: DecodingPlan, params: DecodingParams, context, prefix_ids, prefix_mask,
                prefix_positions, seed, active=None):
    """Beam search, as transformers' ``generate`` with ``num_beams > 1`` (beam sampling with ``do_sample``).

    Each step ranks the top ``2 * K`` one-token extensions of a source's ``K`` running beams (more with
    several eos ids) by summed log-probability (after the logits processors and, when sampling, the warpers
    and Gumbel top-k draw): the best ``K`` that did not end continue, those among the top ``K`` that ended
    are kept as finished hypotheses scored ``sum log p / new_tokens ** length_penalty``. The loop stops at
    ``T``, when no running beam can beat the worst kept hypothesis (transformers' heuristic, by
    ``early_stopping``), once ``K`` hypotheses are kept with ``early_stopping=True``, or when every candidate
    ended. It runs in phases over a growing, reordered cache and is meant to be traced inside the
    compiled decoding program (it also runs eagerly).

    Args:
        model: a model with the decoding protocol of :class:`~vanilla_transformer.generation.GenerationMixin`.
        plan: a beam :class:`~.plan.DecodingPlan` (``num_beams = K > 1``).
        params: its :class:`~.plan.DecodingParams` (runtime values: ``max_new_tokens``, ``length_penalty``...).
        context: ``model.decoding_context(source_ids, source_mask)`` with one row per source (``B`` rows),
            ``{}`` for decoder-only models.
        prefix_ids: ``(B * K, prompt)`` int32: each source's prefix repeated ``K`` times in a row.
        prefix_mask: ``(B * K, prompt)`` 1/0, 0 for left padding.
        prefix_positions: ``(B * K, prompt)`` int32 positions of the prefix tokens.
        seed: int32 scalar seed of the noise of beam sampling.
        active: ``(B,)`` bool, False for sources that only fill a batch bucket (they neither keep the loop
            going nor count in ``length``); None: every source.

    Returns:
        ``(sequences (B * n, T), scores (B * n,), length, recorded)`` for ``n = num_return_sequences``: the best ``n``
        finished hypotheses of each source (prefix, generated ids, then ``pad_token_id``), best first, their
        length-normalised scores (float32), and ``length``, an int32 scalar: the prompt plus the most new
        tokens among them (the columns worth returning), and ``recorded``: for each of ``plan.records``, the
        per-step ``"scores"`` / ``"logits"`` ``(B * K, capacity, vocab)`` of the running beams and the
        ``"beam_indices"`` ``(B * n, capacity)`` of the returned hypotheses (``{}`` when none).

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> _ = model.build_weights()  # as generate does before decoding
        >>> context = model.decoding_context(np.array([[5, 6, 7, 2]]), np.array([[1, 1, 1, 1]]))  # B = 1
        >>> plan, params = make_plan(GenerationConfig(max_new_tokens=3, num_beams=2, num_return_sequences=2,
        ...                                           eos_token_id=2, pad_token_id=0), prompt_length=1, use_cache=True)
        >>> start = np.ones((2, 1), "int32")  # decoder_start_token_id, once per beam
        >>> sequences, scores, length, _ = beam_search(model, plan, params, context, start, np.ones((2, 1), "int32"),
        ...                                         np.zeros((2, 1), "int32"), np.int32(0))
        >>> tuple(sequences.shape), tuple(scores.shape), int(length) <= 4  # a buffer of 8 new tokens, 3 used
        ((2, 9), (2,), True)
        >>> scores = keras.ops.convert_to_numpy(scores)
        >>> bool(scores[0] >= scores[1]), bool(np.all(scores <= 0))  # best first, log-probabilities
        (True, True)
    """
    num_beams = plan.num_beams
    rows, prompt_length = prefix_ids.shape[0], prefix_ids.shape[1]
    batch, max_length, vocab = rows // num_beams, prompt_length + plan.max_new_tokens, model.config.vocab_size
    end = prompt_length + params.max_new_tokens
    active = ops.ones((batch,), "bool") if active is None else ops.cast(active, "bool")
    keep = max(2, 1 + len(plan.eos_token_ids)) * num_beams
    bounds = phase_bounds(plan, prompt_length, max_length)
    first, step = decode_functions(model, plan, context, prefix_mask, prefix_positions, max_length, bounds[0])
    logits, cache = first(prefix_ids)
    cache, rebuild = split_cache(cache)

    def cond(s: BeamState):
        all_finished = ops.all(ops.logical_or(s.is_finished, ops.logical_not(active)[:, None]))
        open_beams = ops.logical_not(ops.logical_and(all_finished, plan.early_stopping is True))
        return ops.logical_and(ops.logical_and(s.cur < end, ops.any(s.improvable)),
                               ops.logical_and(open_beams, ops.logical_not(s.all_ended)))

    def body(s: BeamState):
        return [_beam_step(plan, params, s, step, rebuild, keep, prompt_length, end, seed, active)]

    state = _initial_state(plan, prefix_ids, logits, cache, vocab, batch, active)
    for bound in bounds:
        state = state._replace(cache=grow_cache(state.cache, bound))
        state = ops.while_loop(lambda s, bound=bound: ops.logical_and(s.cur < bound, cond(s)), body, [state])[0]
    n = plan.num_return_sequences
    sequences = ops.reshape(state.finished[:, :n], (batch * n, max_length))
    scores = ops.reshape(state.finished_scores[:, :n], (batch * n,))
    lengths = ops.where(active[:, None], state.finished_lengths[:, :n], 0)
    recorded = dict(zip([name for name in plan.records if name != "beam_indices"], state.recorded))
    if "beam_indices" in plan.records:
        recorded["beam_indices"] = ops.reshape(state.finished_beam_indices[:, :n], (batch * n, plan.max_new_tokens))
        recorded["steps"] = state.cur - prompt_length  # transformers' scores have one entry per step run
    return sequences, scores, prompt_length + ops.max(lengths), recorded


def _beam_step(plan: DecodingPlan, params: DecodingParams, s: BeamState, step, rebuild, keep: int,
               prompt_length: int, end, seed, active) -> BeamState:
    """One step of :func:`beam_search`: rank the candidates, continue the best, keep those that ended, run the
    decoder on the new tokens (over the reordered cache) and record what the plan asks for."""
    batch, num_beams = s.running_scores.shape[0], plan.num_beams
    rows, max_length, vocab = batch * num_beams, s.running.shape[2], s.logits.shape[-1]
    c = _top_candidates(plan, params, s, keep, prompt_length, max_length, end, seed)
    running, running_scores, beam_of_row, running_beam_indices = _continue_best(c, num_beams)
    reorder = ops.reshape(beam_of_row + ops.arange(batch)[:, None] * num_beams, (-1,))
    finished, finished_scores, is_finished, finished_lengths, finished_beam_indices = _merge_finished(
        plan, params, s, c, prompt_length)
    presence = s.presence
    if plan.penalises_repetition:
        new = ops.reshape(running[:, :, s.cur], (rows, 1))
        presence = ops.logical_or(ops.take(presence, reorder, axis=0),
                                  scatter_mask(new, ops.ones_like(new, dtype="bool"), vocab))
    recorded = tuple(ops.slice_update(buffer, (0, s.cur - prompt_length, 0), value[:, None, :]) for buffer, value
                     in zip(s.recorded, (c.log_probs if name == "scores" else s.logits
                                         for name in plan.records if name != "beam_indices")))
    cache_state = reorder_cache(s.cache, reorder) if s.cache else ()
    new_tokens = ops.reshape(ops.take(running, s.cur, axis=2), (rows,))
    logits, cache = step(rebuild(cache_state), ops.reshape(running, (rows, max_length)), s.cur, new_tokens)
    improvable = _still_improvable(plan, params, s, running_scores, finished_scores, is_finished, prompt_length, end)
    all_ended = ops.all(ops.logical_or(c.ended, ops.logical_not(active)[:, None]))
    return BeamState(s.cur + 1, running, running_scores, ops.cast(logits, "float32"), split_cache(cache)[0], finished,
                     finished_scores, is_finished, finished_lengths, improvable, all_ended, presence,
                     running_beam_indices, finished_beam_indices, recorded)
