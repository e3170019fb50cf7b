"""The decoding plan: a ``GenerationConfig`` resolved and validated into the static description of one
``generate`` call (:class:`DecodingPlan`), which keys the cache of compiled decoding programs.

Parameters and their meaning follow ``transformers.GenerationConfig``; unset fields take transformers'
defaults.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from transformers import GenerationConfig

from ..compat import default_generation_params
from ..configuration import token_ids
from ..padding_and_random import bucket_length


def resolve_generation_config(model, generation_config: GenerationConfig | None, kwargs: dict) -> GenerationConfig:
    """The ``GenerationConfig`` of one ``generate`` call: a copy of ``model.generation_config``, updated with
    the values ``generation_config`` sets explicitly (its ``to_diff_dict()``), then with ``kwargs``.

    This is the precedence of transformers' ``generate``: keyword arguments win over the given config, which
    wins over the model's defaults. ``model.generation_config`` itself is left unchanged.

    Args:
        model: a model with a ``generation_config`` (a ``transformers.GenerationConfig``).
        generation_config: a ``transformers.GenerationConfig`` or None.
        kwargs: ``GenerationConfig`` fields by name (``max_new_tokens``, ``num_beams``, ...).

    Returns:
        A new ``transformers.GenerationConfig``.

    Raises:
        TypeError: ``generation_config`` is not a ``GenerationConfig``.
        ValueError: a keyword is not a ``GenerationConfig`` field.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> config = resolve_generation_config(model, GenerationConfig(num_beams=4, max_new_tokens=9),
        ...                                    {"max_new_tokens": 5})
        >>> config.num_beams, config.max_new_tokens, config.eos_token_id  # eos from the model's config
        (4, 5, 2)
        >>> model.generation_config.num_beams is None
        True
        >>> resolve_generation_config(model, None, {"beams": 2})
        Traceback (most recent call last):
        ValueError: Unknown generation arguments: ['beams']
    """
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
class DecodingPlan:
    """Everything static about one decoding call: the key of the compiled-program cache.

    Built by :func:`make_plan` from a ``transformers.GenerationConfig``; frozen and hashable, so equal plans
    share one compiled program. The numeric parameters (temperature, top-p, penalties, the token counts) are
    not part of it: they reach the program as tensors (:class:`DecodingParams`), so changing them reuses it.
    Field meanings follow ``GenerationConfig``:

    Attributes:
        mode: ``"greedy"`` (``num_beams == 1``, no sampling), ``"sample"`` (``do_sample``) or ``"beam"``
            (``num_beams > 1``, beam search, sampled when ``do_sample``).
        max_new_tokens: the capacity of the output buffer: the requested ``max_new_tokens`` rounded up to a
            bucket (a multiple of 8, within the model's positions), so nearby requests share a program.
        num_beams / num_return_sequences: beams per input; rows returned per input.
        eos_token_ids: the end-of-sequence ids (any of them ends a row); ``()`` for none.
        pad_token_id: fills rows after their eos (without a pad id in the config: ``eos_token_ids[0]``, else 0).
        early_stopping: beam search's stopping rule (``True``, ``False`` or ``"never"``).
        do_sample: draw tokens (with the warpers) instead of taking the best ones.
        top_k: the top-k warper's k (0: off) when sampling.
        penalises_repetition / no_repeat_ngram_size: transformers' repetition processors.
        use_cache: decode with the key/value cache, or recompute every position each step.
        banned_tokens / begin_suppress_tokens: ids never chosen (``bad_words_ids`` of one token and
            ``suppress_tokens``) / not chosen at the first generated position.
        forced_bos_token_id / forced_eos_token_id: ids forced at position 1 / at the last position.
        sampling_filters: the cut-off warpers that sampling applies (``"min_p"``, ``"typical_p"``,
            ``"epsilon_cutoff"``, ``"eta_cutoff"``; their values are runtime parameters).
        min_tokens_to_keep: tokens every warper keeps at least: 1, and for beam sampling one more than the eos
            ids (at least 2), as transformers.
        renormalize_logits: scores are log-softmaxed again after the processors and warpers.
        records: the per-step arrays the loop keeps for ``return_dict_in_generate``: ``"scores"`` (processed
            next-token scores) and ``"logits"`` (raw).

    Example:
        >>> from transformers import GenerationConfig
        >>> plan, params = make_plan(GenerationConfig(max_new_tokens=4, do_sample=True, top_k=5, eos_token_id=2),
        ...                          prompt_length=1, use_cache=True)
        >>> plan.mode, plan.max_new_tokens, plan.eos_token_ids, plan.pad_token_id, plan.do_sample
        ('sample', 8, (2,), 2, True)
        >>> other, _ = make_plan(GenerationConfig(max_new_tokens=7, do_sample=True, top_k=5, eos_token_id=2,
        ...                                       temperature=0.3), prompt_length=1, use_cache=True)
        >>> plan == other  # another temperature and token count: the same program
        True
    """

    mode: str  # "greedy" | "sample" | "beam"
    max_new_tokens: int
    num_beams: int
    num_return_sequences: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    early_stopping: Any
    do_sample: bool
    top_k: int
    penalises_repetition: bool
    no_repeat_ngram_size: int
    use_cache: bool
    banned_tokens: tuple[int, ...] = ()  # bad_words_ids (single tokens) and suppress_tokens
    begin_suppress_tokens: tuple[int, ...] = ()
    forced_bos_token_id: int | None = None
    forced_eos_token_id: tuple[int, ...] = ()
    sampling_filters: tuple[str, ...] = ()  # the cut-off warpers in use: min_p, typical_p, epsilon/eta_cutoff
    min_tokens_to_keep: int = 1  # what every warper keeps at least (more with beam sampling, as transformers)
    renormalize_logits: bool = False
    records: tuple[str, ...] = ()  # per-step outputs kept by the loop: "scores" (processed), "logits" (raw)


class DecodingParams(NamedTuple):
    """The numeric decoding parameters, given to the compiled program as tensors (any value, one program).

    Example:
        >>> from transformers import GenerationConfig
        >>> _, params = make_plan(GenerationConfig(max_new_tokens=5, num_beams=2, length_penalty=0.6),
        ...                       prompt_length=1, use_cache=True)
        >>> int(params.max_new_tokens), round(float(params.length_penalty), 6)
        (5, 0.6)
    """

    max_new_tokens: object  # int32 scalar: tokens to generate at most (<= the plan's capacity)
    min_new_tokens: object  # int32 scalar: tokens before an eos is allowed
    temperature: object  # float32 scalar (sampling)
    top_p: object  # float32 scalar (sampling; 1.0 keeps every token)
    repetition_penalty: object  # float32 scalar
    length_penalty: object  # float32 scalar (beam search)
    min_p: object = np.float32(0.0)  # float32 scalars of the cut-off warpers (sampling; neutral by default)
    typical_p: object = np.float32(1.0)
    epsilon_cutoff: object = np.float32(0.0)
    eta_cutoff: object = np.float32(0.0)


def new_token_capacity(max_new_tokens: int, room: int | None = None, multiple: int = 8) -> int:
    """``max_new_tokens`` rounded up to a multiple of ``multiple``, but not beyond ``room`` positions.

    >>> new_token_capacity(3), new_token_capacity(9), new_token_capacity(9, room=12)
    (8, 16, 12)
    """
    capacity = bucket_length(max_new_tokens, multiple)
    return max(max_new_tokens, min(capacity, room)) if room is not None else capacity


def check_positions_fit(prefix_width: int, max_new_tokens: int, max_position_embeddings: int,
                        prefix: str) -> None:
    """Raise ``ValueError`` when the decoder's prefix (``prefix_width`` positions: the prompt, a target prefix or
    the decoder start token) and ``max_new_tokens`` new tokens need more than ``max_position_embeddings``
    positions; ``prefix`` names the prefix in the message. ``generate`` and the exported translators check this.

    >>> check_positions_fit(8, 24, 32, prefix="prompt (5 tokens)")
    >>> check_positions_fit(8, 25, 32, prefix="prompt (5 tokens)")
    Traceback (most recent call last):
    ValueError: prompt (5 tokens) + max_new_tokens (25) exceeds max_position_embeddings=32
    """
    if prefix_width + max_new_tokens > max_position_embeddings:
        raise ValueError(f"{prefix} + max_new_tokens ({max_new_tokens}) exceeds max_position_embeddings="
                         f"{max_position_embeddings}")


def integer(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int, or a ValueError naming ``name`` when it is not an integer >= ``minimum``.

    Python and numpy integers pass; floats and booleans do not (``True`` is not a beam count).

    Args:
        name: the field's name, for the error message.
        value: the value to check.
        minimum: the smallest value allowed.

    Returns:
        ``int(value)``.

    Example:
        >>> integer("num_beams", np.int64(4))
        4
        >>> integer("top_k", 0, minimum=0)
        0
        >>> integer("num_beams", 2.0)
        Traceback (most recent call last):
        ValueError: num_beams must be an integer >= 1, got 2.0
    """
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class _Fields:
    """A config's field values, with transformers' default for each field left unset (None)."""

    def __init__(self, config: GenerationConfig):
        self.config = config
        self.defaults = default_generation_params()

    def __call__(self, name: str):
        value = getattr(self.config, name, None)
        return self.defaults.get(name) if value is None else value


def _new_token_bounds(config: GenerationConfig, get: _Fields, prompt_length: int) -> tuple[int, int]:
    """``(max_new_tokens, min_new_tokens)`` from the ``*_new_tokens`` fields, else from the total lengths."""
    if config.max_new_tokens is not None:
        max_new = integer("max_new_tokens", config.max_new_tokens)
    else:
        max_new = integer("max_length", get("max_length")) - prompt_length
        if max_new < 1:
            raise ValueError(f"max_length={get('max_length')} leaves no room after a prompt of {prompt_length} "
                             f"tokens; set max_new_tokens")
    min_new = config.min_new_tokens
    if min_new is None:
        min_new = max(0, get("min_length") - prompt_length)
    return max_new, integer("min_new_tokens", min_new, minimum=0)


def _in_range(name: str, value, low: float, high: float, low_open: bool, high_open: bool) -> float:
    """``float(value)``, or a ValueError naming ``name`` when it lies outside the interval."""
    value = float(value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}, "
                         f"got {value!r}")
    return value


#: the cut-off warpers' fields: (neutral value, interval as in transformers' warpers)
CUTOFFS = {"min_p": (0.0, (0.0, 1.0, False, False)), "typical_p": (1.0, (0.0, 1.0, True, False)),
           "epsilon_cutoff": (0.0, (0.0, 1.0, False, True)), "eta_cutoff": (0.0, (0.0, 1.0, False, True))}


def _sampling_fields(config: GenerationConfig, get: _Fields, do_sample: bool) -> dict:
    """Temperature, top-k, top-p and the cut-offs, validated; neutral values when not sampling."""
    temperature = float(get("temperature"))
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {config.temperature!r}")
    top_p = _in_range("top_p", get("top_p"), 0.0, 1.0, True, False)
    top_k = integer("top_k", get("top_k"), minimum=0)
    cutoffs = {name: neutral if getattr(config, name, None) is None else _in_range(name, getattr(config, name), *bounds)
               for name, (neutral, bounds) in CUTOFFS.items()}
    if not do_sample:
        return dict(temperature=1.0, top_k=0, top_p=1.0, **{name: neutral for name, (neutral, _) in CUTOFFS.items()},
                    sampling_filters=())
    # transformers applies min_p whenever it is set, the others only away from their neutral value
    filters = tuple(name for name, (neutral, _) in CUTOFFS.items()
                    if getattr(config, name, None) is not None and (name == "min_p" or cutoffs[name] != neutral))
    return dict(temperature=temperature, top_k=top_k, top_p=top_p, **cutoffs, sampling_filters=filters)


def _token_constraints(config: GenerationConfig) -> dict:
    """Banned, suppressed and forced tokens (transformers' token-level logits processors)."""
    banned = list(config.suppress_tokens or [])
    for words in config.bad_words_ids or []:
        if len(words) != 1:
            raise ValueError(f"bad_words_ids: only single-token entries are supported, got {words}")
        banned.extend(words)
    return dict(banned_tokens=tuple(sorted(set(int(t) for t in banned))),
                begin_suppress_tokens=tuple(int(t) for t in config.begin_suppress_tokens or []),
                forced_bos_token_id=None if config.forced_bos_token_id is None else int(config.forced_bos_token_id),
                forced_eos_token_id=tuple(int(e) for e in token_ids(config.forced_eos_token_id)))


def _records(config: GenerationConfig) -> tuple[str, ...]:
    """The per-step arrays a ``return_dict_in_generate`` call asks for: ``"scores"`` and / or ``"logits"``, and
    the ``"beam_indices"`` of beam search."""
    if not config.return_dict_in_generate:
        return ()
    beam = (("beam_indices",) if (config.num_beams or 1) > 1 else ())  # beam outputs always carry them
    return tuple(name for name, field in (("scores", "output_scores"), ("logits", "output_logits"))
                 if getattr(config, field)) + beam


def make_plan(config: GenerationConfig, prompt_length: int, use_cache: bool,
              room: int | None = None) -> tuple[DecodingPlan, DecodingParams]:
    """Validate ``config`` for a prompt of ``prompt_length`` tokens into a :class:`DecodingPlan` (static) and
    its :class:`DecodingParams` (runtime values).

    Unset fields take transformers' defaults. ``max_new_tokens`` wins over ``max_length`` (the total length,
    prompt included) as in transformers; ``min_new_tokens`` over ``min_length``. Without sampling the
    warpers are neutral, so greedy and beam plans do not depend on ``temperature``, ``top_k`` or ``top_p``.

    Args:
        config: a ``transformers.GenerationConfig``, usually from :func:`resolve_generation_config`.
        prompt_length: tokens the decoder starts from (the decoder start token of an encoder-decoder model,
            or the padded prompt of a decoder-only one).
        use_cache: decode with the key/value cache.
        room: positions left after the prompt; caps the plan's buffer capacity (see
            :func:`new_token_capacity`).

    Returns:
        ``(plan, params)``.

    Raises:
        ValueError: a field is out of range, ``num_return_sequences > num_beams`` without sampling, or
            ``max_length`` leaves no room after the prompt.

    Example:
        >>> from transformers import GenerationConfig
        >>> plan, params = make_plan(GenerationConfig(max_length=10, num_beams=3, eos_token_id=[2, 3]),
        ...                          prompt_length=4, use_cache=True)
        >>> plan.mode, plan.max_new_tokens, int(params.max_new_tokens), plan.eos_token_ids, plan.pad_token_id
        ('beam', 8, 6, (2, 3), 2)
        >>> make_plan(GenerationConfig(max_length=4), prompt_length=4, use_cache=True)
        Traceback (most recent call last):
        ValueError: max_length=4 leaves no room after a prompt of 4 tokens; set max_new_tokens
    """
    get = _Fields(config)
    num_beams = integer("num_beams", get("num_beams"))
    num_return = integer("num_return_sequences", get("num_return_sequences"))
    do_sample = bool(get("do_sample"))
    if num_return > num_beams and not (do_sample and num_beams == 1):
        raise ValueError(f"num_return_sequences={num_return} must be <= num_beams={num_beams}")
    max_new, min_new = _new_token_bounds(config, get, prompt_length)
    repetition_penalty = float(get("repetition_penalty"))
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {config.repetition_penalty!r}")
    eos = tuple(int(e) for e in token_ids(config.eos_token_id))
    pad = config.pad_token_id
    if pad is None:
        pad = eos[0] if eos else 0
    sampling = _sampling_fields(config, get, do_sample)
    # transformers' warpers keep one token more than the eos ids with beam sampling (2 without eos)
    min_keep = (len(eos) + 1 if eos else 2) if num_beams > 1 else 1
    plan = DecodingPlan(
        mode="beam" if num_beams > 1 else ("sample" if do_sample else "greedy"),
        max_new_tokens=new_token_capacity(max_new, room), num_beams=num_beams, num_return_sequences=num_return,
        eos_token_ids=eos, pad_token_id=int(pad), early_stopping=get("early_stopping"), do_sample=do_sample,
        top_k=max(sampling["top_k"], min_keep) if sampling["top_k"] else 0,
        penalises_repetition=repetition_penalty != 1.0,
        no_repeat_ngram_size=integer("no_repeat_ngram_size", get("no_repeat_ngram_size"), minimum=0),
        use_cache=bool(use_cache), **_token_constraints(config), sampling_filters=sampling["sampling_filters"],
        min_tokens_to_keep=min_keep, renormalize_logits=bool(config.renormalize_logits), records=_records(config))
    params = DecodingParams(
        max_new_tokens=np.asarray(max_new, "int32"), min_new_tokens=np.asarray(min_new, "int32"),
        temperature=np.asarray(sampling["temperature"], "float32"), top_p=np.asarray(sampling["top_p"], "float32"),
        repetition_penalty=np.asarray(repetition_penalty, "float32"),
        length_penalty=np.asarray(get("length_penalty"), "float32"),
        **{name: np.asarray(sampling[name], "float32") for name in CUTOFFS})
    return plan, params
