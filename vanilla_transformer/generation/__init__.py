"""Decoding: greedy, sampling (temperature, top-k, top-p) and beam search, with a key/value cache.

The whole decode loop is one compiled program (XLA on TensorFlow, ``jax.jit`` on JAX) over static
shapes: the encoder runs once, cross-attention keys/values are computed once, the self-attention cache
has a fixed number of slots and each step writes one. Source and prompt lengths are rounded up to a
multiple of 8 so that new calls of similar shapes reuse the compiled program.

- :mod:`.plan`: the ``GenerationConfig`` resolved into a validated :class:`~.plan.DecodingPlan`;
- :mod:`.logits_process`: transformers' logits processors and the sampling warpers;
- :mod:`.search` and :mod:`.beam_search`: the loops; :mod:`.programs`: the compiled-program cache;
- :mod:`.mbr`: minimum Bayes risk decoding, the candidate of the n-best with the highest expected BLEU;
- :mod:`.ensemble`: several models decoding with the mean of their next-token probabilities.

Beam search follows the algorithm of ``transformers`` (top 2K candidates, finished hypotheses scored
``sum log p / length ** length_penalty``) so that results are comparable token for token.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from keras import ops

from ..padding_and_random import bucket_length, fill_rows, pad_batch, padding_mask
from .contract import REFUSED_ARGUMENTS, check_arguments, check_generation_config
from .logits_process import blocked_top_k, top_p_filter
from .outputs import compute_transition_scores, generate_output
from .plan import DecodingParams, DecodingPlan, check_positions_fit, make_plan, resolve_generation_config
from .programs import ProgramCache, compiled_decoder
from .streaming import stream_tokens

__all__ = ["DecodingParams", "DecodingPlan", "GenerationMixin", "ProgramCache", "blocked_top_k",
           "compute_transition_scores", "generate", "length_sorted_batches",
           "resolve_generation_config", "resolved_decoder_start_token_id", "resolved_pad_token_id", "top_p_filter",
           "translate_texts"]

LENGTH_MULTIPLE = 8


@dataclass
class _DecodingInputs:
    """The padded arrays a decoding program runs on (int32 numpy), and the ids as the caller gave them: the
    output starts with ``given_ids`` (the prompt or the target prefix exactly as given), followed by what was
    generated after it; without them (an encoder-decoder's rows that start from the decoder start token alone)
    the program's own rows are returned."""

    source_ids: np.ndarray | None  # (batch, source bucket) encoder input, None for decoder-only models
    source_mask: np.ndarray | None
    prefix_ids: np.ndarray  # (batch, prefix) what the decoder starts from: the start token or the prompt
    prefix_mask: np.ndarray
    prefix_positions: np.ndarray
    given_ids: np.ndarray | None  # (batch, length) the prompt / target prefix as given; None: the start token

    def rows_mapped(self, transform) -> "_DecodingInputs":
        """The inputs with ``transform`` applied to every array (the absent source of decoder-only models stays
        None)."""
        arrays = [None if x is None else transform(x) for x in (self.source_ids, self.source_mask, self.prefix_ids,
                                                                 self.prefix_mask, self.prefix_positions,
                                                                 self.given_ids)]
        return _DecodingInputs(*arrays)

    def output_rows(self, sequences: np.ndarray, rows: int, length: int) -> np.ndarray:
        """The first ``rows`` rows of the program's ``sequences`` (prefix, then new tokens; ``length`` columns
        used), with a decoder-only prompt given back as it came in place of its left-aligned copy."""
        if self.given_ids is None:
            return sequences[:rows, :length]
        per_input = sequences.shape[0] // self.given_ids.shape[0]  # the beams' rows of each input
        prompts = np.repeat(self.given_ids, per_input, axis=0)[:rows]
        return np.concatenate([prompts, sequences[:rows, self.prefix_ids.shape[1]:length]], axis=1)

    def repeat(self, times: int) -> "_DecodingInputs":
        """Every row ``times`` times in a row (independent samples of one input)."""
        return self.rows_mapped(lambda x: np.repeat(x, times, 0))

    def filled_to(self, rows: int) -> tuple["_DecodingInputs", np.ndarray]:
        """The inputs with copies of the last row appended up to ``rows``, and ``active (rows,)`` bool, False
        for the copies (they are finished from the start and cut from the output)."""
        active = np.arange(rows) < self.prefix_ids.shape[0]
        return self.rows_mapped(lambda x: fill_rows(x, rows)), active


def batch_bucket(rows: int) -> int:
    """The batch size a decoding program runs at: a power of two up to 8, then a multiple of 8, so that any
    batch size reuses one of a few compiled shapes.

    >>> [batch_bucket(n) for n in (1, 3, 5, 8, 9, 30)]
    [1, 4, 8, 8, 16, 32]
    """
    if rows <= 8:
        return 1 << (rows - 1).bit_length()
    return -(-rows // 8) * 8


def left_align(ids: np.ndarray, mask: np.ndarray, width: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's real tokens (mask 1) to the right end of a ``width``-wide buffer (left padding).

    >>> left_align(np.array([[5, 6, 0]]), np.array([[1, 1, 0]]), width=4, pad=0)[0]
    array([[0, 0, 5, 6]], dtype=int32)
    """
    rows = [row[keep.astype(bool)][::-1] for row, keep in zip(ids, mask)]
    left_ids = pad_batch(rows, pad, width)[:, ::-1]
    left_mask = padding_mask([len(row) for row in rows], width)[:, ::-1]
    return np.ascontiguousarray(left_ids), np.ascontiguousarray(left_mask)


def _prepare_inputs(model, config, ids: np.ndarray, mask: np.ndarray, prefix=None) -> _DecodingInputs:
    """Pad the source (encoder-decoder) or left-align the prompt (decoder-only) to a length bucket; an
    encoder-decoder's target prefix ``(ids, mask)`` (see :func:`_target_prefix`) is left-aligned as a prompt."""
    if ids.shape[1] == 0:
        raise ValueError("input_ids has zero length" + (
            "" if model.config.is_encoder_decoder else ": give at least one prompt token"))
    pad_id = resolved_pad_token_id(model, config)
    fill = 0 if pad_id is None else int(pad_id)
    batch, width = ids.shape[0], bucket_length(ids.shape[1], LENGTH_MULTIPLE)
    if model.config.is_encoder_decoder:
        source = pad_batch(list(ids), fill, width), pad_batch(list(mask), 0, width)
        if prefix is None:
            prefix_ids = np.full((batch, 1), resolved_decoder_start_token_id(model, config), dtype="int32")
            prefix_mask = np.ones((batch, 1), dtype="int32")
            return _DecodingInputs(*source, prefix_ids, prefix_mask, _positions_of(prefix_mask), given_ids=None)
        ids, mask, width = prefix[0], prefix[1], bucket_length(prefix[0].shape[1], LENGTH_MULTIPLE)
    else:
        source = None, None
    # The program runs on the real tokens moved to the right (left padding), whatever the caller's layout;
    # the output gives the prompt back as it came (transformers' contract).
    prefix_ids, prefix_mask = left_align(ids, mask, width, fill)
    return _DecodingInputs(*source, prefix_ids, prefix_mask, _positions_of(prefix_mask), given_ids=ids)


def _target_prefix(model, config, batch: int, decoder_input_ids, decoder_attention_mask):
    """``(ids, mask)`` int32 of an encoder-decoder's target prefix, starting with the decoder start token
    (prepended when no row starts with it, as transformers does); None without a prefix."""
    if decoder_input_ids is None:
        if decoder_attention_mask is not None:
            raise ValueError("decoder_attention_mask was given without decoder_input_ids")
        return None
    if not model.config.is_encoder_decoder:
        raise ValueError("decoder_input_ids is for encoder-decoder models; a decoder-only model continues the "
                         "prompt given as input_ids")
    checked = model.check_inputs({"decoder_input_ids": decoder_input_ids,
                                  "decoder_attention_mask": decoder_attention_mask}, required=("decoder_input_ids",))
    ids = np.asarray(ops.convert_to_numpy(checked["decoder_input_ids"])).astype("int32")
    mask = (np.ones_like(ids) if decoder_attention_mask is None
            else np.asarray(ops.convert_to_numpy(checked["decoder_attention_mask"])).astype("int32"))
    if ids.shape[0] != batch or ids.shape[1] == 0:
        raise ValueError(f"decoder_input_ids must be (batch={batch}, length >= 1), got {ids.shape}")
    start = resolved_decoder_start_token_id(model, config)
    if (ids[:, 0] != start).all():
        ids = np.concatenate([np.full((batch, 1), start, "int32"), ids], axis=1)
        mask = np.concatenate([np.ones((batch, 1), "int32"), mask], axis=1)
    return ids, mask


def resolved_pad_token_id(model, config) -> int | None:
    """The generation config's pad id, else the model config's (None when neither has one).

    >>> from transformers import GenerationConfig
    >>> from vanilla_transformer import TransformerForSeq2SeqLM
    >>> model = TransformerForSeq2SeqLM(example_config)
    >>> resolved_pad_token_id(model, GenerationConfig()), resolved_pad_token_id(model, GenerationConfig(pad_token_id=3))
    (0, 3)
    """
    return config.pad_token_id if config.pad_token_id is not None else model.config.pad_token_id


def resolved_decoder_start_token_id(model, config) -> int:
    """The generation config's decoder start id, else the model config's.

    >>> from transformers import GenerationConfig
    >>> from vanilla_transformer import TransformerForSeq2SeqLM
    >>> model = TransformerForSeq2SeqLM(example_config)
    >>> resolved_decoder_start_token_id(model, GenerationConfig())
    1
    """
    start = config.decoder_start_token_id
    return model.config.decoder_start_token_id if start is None else start


def _positions_of(mask: np.ndarray) -> np.ndarray:
    """Position of each token counting real tokens only (0 under left padding)."""
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype("int32")


def _ids_and_mask(model, config, input_ids, attention_mask) -> tuple[np.ndarray, np.ndarray]:
    """Checked int32 ids and mask; without a mask, positions holding the pad id are padding."""
    checked = model.check_inputs({"input_ids": input_ids, "attention_mask": attention_mask},
                                 required=("input_ids",))
    ids = np.asarray(ops.convert_to_numpy(checked["input_ids"])).astype("int32")
    if ids.shape[0] == 0:
        raise ValueError("input_ids is an empty batch")
    pad_id = resolved_pad_token_id(model, config)
    if "attention_mask" in checked:
        mask = np.asarray(ops.convert_to_numpy(checked["attention_mask"])).astype("int32")
    elif pad_id is not None and (ids == pad_id).any():
        mask = (ids != pad_id).astype("int32")
    else:
        mask = np.ones_like(ids)
    return ids, mask


def generate(model, input_ids, attention_mask=None, generation_config=None, seed: int | None = None,
             use_cache: bool = True, decoder_input_ids=None, decoder_attention_mask=None, streamer=None, **kwargs):
    """Generate token ids with ``model`` (an encoder-decoder or a decoder-only model of this package).

    Every ``GenerationConfig`` field is implemented, refused with an error naming it, or a documented no-op
    (:mod:`.contract` lists which).

    Args:
        input_ids: ``(batch, length)`` integer ids: the source (encoder-decoder) or the prompt (decoder).
        attention_mask: ``(batch, length)`` 1/0; defaults to ``input_ids != pad_token_id`` when the pad
            id occurs, else all ones.
        generation_config: a ``transformers.GenerationConfig`` overriding ``model.generation_config``.
        seed: seed of the sampling noise; the same seed gives the same samples.
        use_cache: decode with the key/value cache (default) or recompute every position each step.
        decoder_input_ids: ``(batch, prefix)`` a target prefix for encoder-decoders to continue (the decoder
            start token is prepended when no row starts with it); rows of different lengths are left-padded,
            with ``decoder_attention_mask`` marking the padding.
        decoder_attention_mask: ``(batch, prefix)`` 1/0 for ``decoder_input_ids``.
        streamer: a transformers streamer (``put`` / ``end``) that receives each token as it is chosen;
            greedy search and sampling, batch 1 (as transformers), see :mod:`.streaming`.
        **kwargs: any ``GenerationConfig`` field: ``max_new_tokens``, ``max_length``, ``min_new_tokens``,
            ``num_beams``, ``length_penalty``, ``early_stopping``, ``num_return_sequences``, ``do_sample``,
            ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``typical_p``, ``epsilon_cutoff``,
            ``eta_cutoff``, ``repetition_penalty``, ``no_repeat_ngram_size``, ``renormalize_logits``,
            ``eos_token_id`` (int or list), ``pad_token_id``, ``return_dict_in_generate``, ``output_scores``,
            ``output_logits``, ...

    Returns:
        int32 numpy array ``(batch * num_return_sequences, out_length)``. Encoder-decoder rows start with
        ``decoder_start_token_id`` (and the target prefix); decoder-only rows start with the prompt exactly as
        given (padding included, wherever it is; generation continues after each row's real tokens). Rows end
        at their eos and are padded with ``pad_token_id``. With ``return_dict_in_generate=True``: transformers'
        output object (see :func:`.outputs.generate_output`).

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> generate(model, np.array([[5, 6, 2]]), max_new_tokens=4, num_beams=2).shape[0]
        1
        >>> out = generate(model, np.array([[5, 6, 2]]), max_new_tokens=4, return_dict_in_generate=True,
        ...                output_scores=True, decoder_input_ids=np.array([[1, 7]]))
        >>> type(out).__name__, out.sequences[0, :2].tolist(), len(out.scores) == out.sequences.shape[1] - 2
        ('GenerateEncoderDecoderOutput', [1, 7], True)
    """
    check_arguments(kwargs)
    config = resolve_generation_config(model, generation_config,
                                       {k: v for k, v in kwargs.items() if k not in REFUSED_ARGUMENTS})
    check_generation_config(config)
    ids, mask = _ids_and_mask(model, config, input_ids, attention_mask)
    model.build_weights()
    prefix = _target_prefix(model, config, ids.shape[0], decoder_input_ids, decoder_attention_mask)
    inputs = _prepare_inputs(model, config, ids, mask, prefix)
    width = inputs.prefix_ids.shape[1]
    prompt_length = width if inputs.given_ids is None else inputs.given_ids.shape[1]
    plan, params = make_plan(config, prompt_length, use_cache, room=model.config.max_position_embeddings - width)
    check_positions_fit(width, int(params.max_new_tokens), model.config.max_position_embeddings,
                        prefix=f"prompt ({prompt_length} tokens)")
    seed_value = np.int32(np.random.randint(0, 2**31 - 1) if seed is None else seed % (2**31 - 1))
    params = DecodingParams(*(ops.convert_to_tensor(value) for value in params))  # tensors on every backend
    if streamer is not None:
        _check_streamable(plan, ids.shape[0])
        arrays = (inputs.source_ids, inputs.source_mask, inputs.prefix_ids, inputs.prefix_mask, inputs.prefix_positions)
        outputs, rows = stream_tokens(model, plan, params, arrays, seed_value, streamer), 1
    else:
        outputs, rows = _run_program(model, plan, params, inputs, seed_value)
    return _returned(model, plan, inputs, outputs, rows, width, bool(config.return_dict_in_generate))


def _run_program(model, plan: DecodingPlan, params: DecodingParams, inputs: _DecodingInputs, seed) -> tuple:
    """Run the compiled decoding program of ``plan`` on ``inputs`` (rows filled to a batch bucket): its outputs
    and the number of rows the caller asked for."""
    if plan.mode == "sample" and plan.num_return_sequences > 1:
        inputs = inputs.repeat(plan.num_return_sequences)
    rows = inputs.prefix_ids.shape[0] * (plan.num_return_sequences if plan.mode == "beam" else 1)
    inputs, active = inputs.filled_to(batch_bucket(inputs.prefix_ids.shape[0]))
    shapes = tuple(None if x is None else x.shape for x in (inputs.source_ids, inputs.prefix_ids))
    run = compiled_decoder(model, plan, shapes)
    return run(inputs.source_ids, inputs.source_mask, inputs.prefix_ids, inputs.prefix_mask, inputs.prefix_positions,
               seed, params, ops.convert_to_tensor(active)), rows


def _returned(model, plan: DecodingPlan, inputs: _DecodingInputs, outputs, rows: int, width: int,
              as_dict: bool):
    """What ``generate`` returns: the ids, or transformers' output object with ``return_dict_in_generate``."""
    sequences, scores, length, recorded = outputs
    length = int(ops.convert_to_numpy(length))
    sequences = inputs.output_rows(np.asarray(ops.convert_to_numpy(sequences)), rows, length)
    if not as_dict:
        return sequences
    recorded = {name: np.asarray(ops.convert_to_numpy(value)) for name, value in recorded.items()}
    steps = int(recorded.pop("steps", length - width))
    per_step_rows = rows // plan.num_return_sequences * plan.num_beams if plan.mode == "beam" else rows
    beam_scores = np.asarray(ops.convert_to_numpy(scores))[:rows] if plan.mode == "beam" else None
    return generate_output(sequences, recorded, per_step_rows, steps, model.config.is_encoder_decoder, beam_scores)


def _check_streamable(plan: DecodingPlan, batch: int) -> None:
    """transformers' limits on ``streamer``: no beam search, one row."""
    if plan.mode == "beam":
        raise ValueError("streamer cannot be used with beam search (as in transformers): set num_beams=1")
    if batch != 1 or plan.num_return_sequences != 1:
        raise ValueError(f"streamer streams one sequence: got a batch of {batch} with num_return_sequences="
                         f"{plan.num_return_sequences}")


def translate_texts(model, texts, tokenizer, batch_size: int = 64, max_batch_tokens: int | None = None,
                    target_prefixes=None, **generation_kwargs) -> list[str]:
    """Translate strings as a translation engine batches them: sorted by length into batches of at most
    ``batch_size`` sentences (and ``max_batch_tokens`` padded source tokens), :func:`generate` on each, decoded
    without special tokens, returned in input order.

    Sorting puts sentences of similar length together, so a batch pads and decodes little beyond its longest
    row; every row decodes as it would alone (batched decoding is row-independent), so the order only changes
    the speed.

    Args:
        model: an encoder-decoder model of this package, or an :class:`~.ensemble.Ensemble` of them.
        texts: a string or a list of strings; sources longer than ``max_position_embeddings`` tokens are cut
            (the tokenizer warns).
        tokenizer: the model's tokenizer (a transformers tokenizer).
        batch_size: sentences per batch at most.
        max_batch_tokens: padded source tokens per batch at most (None: no bound); a longer sentence goes alone.
        target_prefixes: one string per text (or None for a text without one) that its translation starts with
            and continues, as CTranslate2's ``target_prefix`` (the output includes the prefix).
        **generation_kwargs: ``GenerationConfig`` fields for :func:`generate` (``num_beams``, ...).

    Returns:
        One string per text (``num_return_sequences`` per text, in a row), in input order.

    Example:
        >>> class Tokenizer:  # stands in for a transformers tokenizer
        ...     def __call__(self, texts, **kwargs):
        ...         return {"input_ids": [[5, 6, 2][:len(text)] for text in texts]}
        ...     def batch_decode(self, ids, skip_special_tokens):
        ...         return [f"{len(row)} ids" for row in ids]
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> model = TransformerForSeq2SeqLM(TransformerConfig(**example_sizes, eos_token_id=None))
        >>> translate_texts(model, ["abc", "a", "ab"], Tokenizer(), batch_size=2, max_new_tokens=3)
        ['4 ids', '4 ids', '4 ids']
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if target_prefixes is not None and len(target_prefixes) != len(texts):
        raise ValueError(f"target_prefixes has {len(target_prefixes)} entries for {len(texts)} texts")
    if not texts:
        return []
    sources = tokenizer(texts, truncation=True, max_length=model.config.max_position_embeddings)["input_ids"]
    prefixes = _tokenized_prefixes(tokenizer, target_prefixes, len(texts))
    pad = resolved_pad_token_id(model, model.generation_config)
    pad = 0 if pad is None else int(pad)
    translations: list = [None] * len(texts)
    for rows in length_sorted_batches([len(ids) for ids in sources], batch_size, max_batch_tokens):
        ids = pad_batch([sources[i] for i in rows], pad)
        kwargs = dict(generation_kwargs)
        if prefixes is not None:
            kwargs.update(_prefix_arrays(model, [prefixes[i] for i in rows], pad))
        decoded = tokenizer.batch_decode(model.generate(ids, attention_mask=padding_mask(
            [len(sources[i]) for i in rows], ids.shape[1]), **kwargs), skip_special_tokens=True)
        per_text = len(decoded) // len(rows)
        for n, row in enumerate(rows):
            translations[row] = decoded[n * per_text:(n + 1) * per_text]
    return [text for row in translations for text in row]


def length_sorted_batches(lengths, batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length: sorted by length (stable), cut every ``batch_size``
    items or before the padded size (items x longest) would pass ``max_tokens``.

    >>> length_sorted_batches([5, 1, 4, 2, 3], batch_size=2)
    [[1, 3], [4, 2], [0]]
    >>> length_sorted_batches([5, 1, 4, 2, 3], batch_size=4, max_tokens=9)
    [[1, 3, 4], [2], [0]]
    """
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"batch_size and max_batch_tokens must be >= 1, got {batch_size} and {max_tokens}")
    batches, current = [], []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        padded = (len(current) + 1) * lengths[index]
        if current and (len(current) == batch_size or (max_tokens is not None and padded > max_tokens)):
            batches.append(current)
            current = []
        current.append(index)
    return batches + [current] if current else batches


def _tokenized_prefixes(tokenizer, target_prefixes, count: int):
    """The ids of each target prefix without special tokens (``[]`` for None), or None without prefixes."""
    if target_prefixes is None:
        return None
    present = [i for i in range(count) if target_prefixes[i]]
    encoded = tokenizer([target_prefixes[i] for i in present], add_special_tokens=False)["input_ids"] if present else []
    prefixes = [[] for _ in range(count)]
    for i, ids in zip(present, encoded):
        prefixes[i] = list(ids)
    return prefixes


def _prefix_arrays(model, prefixes, pad: int) -> dict:
    """``decoder_input_ids`` (the start token, then each prefix, left-padded) and their mask."""
    start = resolved_decoder_start_token_id(model, model.generation_config)
    rows = [[start] + list(ids) for ids in prefixes]
    width = max(len(row) for row in rows)
    ids, mask = left_align(pad_batch(rows, pad), padding_mask([len(row) for row in rows], width), width, pad)
    return {"decoder_input_ids": ids, "decoder_attention_mask": mask}


_PROGRAMS_LOCK = threading.Lock()


class GenerationMixin:
    """``generate`` for the model classes that decode, and the cache of their compiled decoding programs.

    ``generate`` follows transformers' ``GenerationMixin.generate``: arguments are ``GenerationConfig``
    fields over ``model.generation_config``; ``input_ids (batch, length)`` gives int32 numpy ids
    ``(batch * num_return_sequences, out_length)``. Each decoding plan is compiled once per model and kept
    in ``decoding_programs``.

    A model class implements the decoding protocol: ``decoding_context(input_ids, attention_mask)``,
    ``init_decoding_cache(context, batch_size, max_length)`` and ``decode_step(...)``:

    - ``decoding_context(input_ids, attention_mask)``: what every step reads, computed once (the encoder
      output and its mask; ``{}`` for decoder-only models);
    - ``init_decoding_cache(context, batch_size, max_length)``: ``{"self": [(k, v), ...]}`` with ``(batch,
      heads, max_length, head_dim)`` zeros per layer, plus ``"cross"`` keys/values for encoder-decoders;
    - ``decode_step(token_ids, cache, cache_index, context, key_mask, position_ids)``: logits ``(batch,
      new, vocab)`` of ``token_ids (batch, new)`` written at ``cache_index``, and the updated cache.

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.generation import GenerationMixin
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> isinstance(model, GenerationMixin), len(model.decoding_programs)
        (True, 0)
        >>> ids = model.generate(np.array([[5, 6, 7, 2]]), max_new_tokens=2)  # greedy: one compiled program
        >>> ids.shape[0], ids.shape[1] <= 3, int(ids[0, 0]), len(model.decoding_programs)  # ids[0, 0]: start id
        (1, True, 1, 1)
    """

    def generate(self, input_ids, attention_mask=None, generation_config=None, **kwargs):
        """Decode token ids; see :func:`vanilla_transformer.generation.generate` for every argument.

        Returns a numpy array ``(batch * num_return_sequences, length)`` of ids in transformers' format.
        """
        return generate(self, input_ids, attention_mask=attention_mask, generation_config=generation_config,
                        **kwargs)

    def compute_transition_scores(self, sequences, scores, beam_indices=None, normalize_logits: bool = False):
        """The score of each generated token, as transformers' method of the same name; see
        :func:`vanilla_transformer.generation.outputs.compute_transition_scores`."""
        return compute_transition_scores(sequences, scores, beam_indices, normalize_logits)

    @property
    def decoding_programs(self) -> ProgramCache:
        """The compiled decoding programs of this model (bounded, least recently used dropped first)."""
        with _PROGRAMS_LOCK:
            cache = self.__dict__.get("_decoding_programs")
            if cache is None:  # set in __dict__: a cache of functions is not state for Keras to track
                cache = self.__dict__["_decoding_programs"] = ProgramCache()
            return cache
