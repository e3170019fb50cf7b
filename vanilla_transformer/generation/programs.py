"""Compiled decoding programs: one per (model, :class:`~.plan.DecodingPlan`), XLA on TensorFlow and
``jax.jit`` on JAX, kept in a bounded least-recently-used cache so a long-lived process does not grow.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import keras
from keras import ops

from ..compat import omit_frequent_tracing_warning
from .beam_search import beam_search
from .plan import DecodingPlan
from .search import greedy_or_sample

#: compiled programs kept per model (one per plan and input shapes); the least recently used one is dropped
#: beyond this, which bounds the memory a long-lived process spends on them
MAX_PROGRAMS_PER_MODEL = 128


def compile_function(fn: Callable) -> Callable:
    """``fn`` as one compiled program: XLA on TensorFlow, ``jax.jit`` on JAX; eager on PyTorch, where decoding
    runs faster than under ``torch.compile`` (docs/benchmarks.md, "PyTorch: eager against torch.compile").

    >>> add_one = compile_function(lambda x: x + 1)
    >>> int(keras.ops.convert_to_numpy(add_one(np.int32(1))))
    2
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        program = tf.function(fn, jit_compile=True)
        omit_frequent_tracing_warning(program)  # many programs, each traced once: not retracing
        return program
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def decoding_function(model, plan: DecodingPlan) -> Callable:
    """``run(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions, seed, params, active) ->
    (sequences, scores, length, recorded)`` for ``plan``, not yet compiled (see :func:`compiled_decoder` for the
    arguments); :mod:`vanilla_transformer.serving` compiles it into exported graphs.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> model = TransformerForSeq2SeqLM(example_config).build_weights()
        >>> plan, params = make_plan(GenerationConfig(max_new_tokens=3), prompt_length=1, use_cache=True)
        >>> run = decoding_function(model, plan)
        >>> ones = np.ones((1, 1), "int32")
        >>> sequences, scores, length, recorded = run(np.array([[5, 6, 2]], "int32"), np.ones((1, 3), "int32"), ones, ones,
        ...                                 0 * ones, np.int32(0), params, np.array([True]))
        >>> tuple(sequences.shape), int(length) <= 4, recorded  # the start token and up to 3 new ones (capacity 8)
        ((1, 9), True, {})
    """
    def run(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions, seed, params, active):
        model.decoding_programs.traces += 1  # Python runs here once per trace (every call when eager)
        context = model.decoding_context(source_ids, source_mask) if source_ids is not None else {}
        if plan.num_beams > 1:
            # The context (encoder output, its mask) stays one row per source: cross-attention groups
            # the beams of a source over its keys (layers/attention.py), reading each key once.
            expand = lambda x: ops.repeat(x, plan.num_beams, axis=0)  # noqa: E731
            prefix_ids, prefix_mask, prefix_positions = map(expand, (prefix_ids, prefix_mask, prefix_positions))
            return beam_search(model, plan, params, context, prefix_ids, prefix_mask, prefix_positions, seed, active)
        return greedy_or_sample(model, plan, params, context, prefix_ids, prefix_mask, prefix_positions, seed,
                                active)

    return run


class ProgramCache:
    """Compiled decoding programs of one model by plan, least recently used first out.

    >>> cache = ProgramCache(max_size=2)
    >>> [cache.get(key, lambda: key.upper()) for key in ("a", "b", "a", "c")]
    ['A', 'B', 'A', 'C']
    >>> cache.keys(), cache.compilations, cache.info()["cached"]
    (['a', 'c'], 3, 2)
    """

    def __init__(self, max_size: int = MAX_PROGRAMS_PER_MODEL):
        self.max_size = max_size
        self.programs: OrderedDict = OrderedDict()
        self.compilations = 0  # programs built, including those dropped since
        self.traces = 0  # traces of the programs (each new input shape of a program traces it again)
        self.lock = threading.Lock()

    def get(self, key, build: Callable[[], Callable]) -> Callable:
        with self.lock:
            if key in self.programs:
                self.programs.move_to_end(key)
                return self.programs[key]
            program = self.programs[key] = build()
            self.compilations += 1
            while len(self.programs) > self.max_size:
                self.programs.popitem(last=False)
            return program

    def keys(self) -> list:
        """The plans of the cached programs, least recently used first."""
        return list(self.programs)

    def info(self) -> dict:
        """``{"cached", "limit", "built", "traces"}``: the cache's size, bound and counters."""
        return {"cached": len(self.programs), "limit": self.max_size, "built": self.compilations,
                "traces": self.traces}

    def __len__(self) -> int:
        return len(self.programs)


def compiled_decoder(model, plan: DecodingPlan, shapes: tuple = ()) -> Callable:
    """The compiled decoding program of ``plan`` for inputs of ``shapes``, for ``model``, built on first use.

    Programs are kept in ``model.decoding_programs`` (a :class:`ProgramCache`) keyed by the plan and the
    input shapes (batch sizes and lengths are bucketed to limit them), so each program is traced once and the
    cache's bound is a bound on the compiled programs held; later ``generate`` calls with an equal plan and
    shapes reuse it. Compilation itself happens at the first call.

    Args:
        model: a model with :class:`~vanilla_transformer.generation.GenerationMixin`.
        plan: the :class:`~.plan.DecodingPlan`.
        shapes: the shapes of the program's input arrays (part of the cache key).

    Returns:
        ``run(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions, seed, params, active)``
        returning ``(sequences (rows, prompt + capacity), scores (rows,), length, recorded)``: ``source_ids`` /
        ``source_mask`` ``(batch, source)`` (None for decoder-only models), ``prefix_*`` ``(batch, prompt)``,
        ``seed`` an int32 scalar, ``params`` the :class:`~.plan.DecodingParams`, ``active`` ``(batch,)`` bool
        (False for rows that only fill a batch bucket); ``recorded`` holds the per-step arrays of
        ``plan.records`` (see :func:`~.search.greedy_or_sample`, :func:`~.beam_search.beam_search`); ``rows`` is ``batch * num_return_sequences`` for beam
        search, ``batch`` otherwise.

    Example:
        >>> from transformers import GenerationConfig
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.generation.plan import make_plan
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> plan, _ = make_plan(GenerationConfig(max_new_tokens=3), prompt_length=1, use_cache=True)
        >>> run = compiled_decoder(model, plan)  # built, not yet run (nor traced)
        >>> compiled_decoder(model, plan) is run, model.decoding_programs.compilations
        (True, 1)
        >>> beam_plan, _ = make_plan(GenerationConfig(max_new_tokens=3, num_beams=2), prompt_length=1,
        ...                          use_cache=True)
        >>> compiled_decoder(model, beam_plan) is run, len(model.decoding_programs)
        (False, 2)
    """
    return model.decoding_programs.get((plan, shapes), lambda: compile_function(decoding_function(model, plan)))
