"""Compiled decoding programs: one per (model, :class:`~.plan.DecodingPlan`), XLA on TensorFlow and
``jax.jit`` on JAX, kept in a bounded least-recently-used cache so a long-lived process does not grow.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import keras
from keras import ops

from .beam_search import beam_search
from .plan import DecodingPlan
from .search import greedy_or_sample

#: compiled programs kept per model; the least recently used one is dropped beyond this
MAX_PROGRAMS_PER_MODEL = 32


def _compile_function(fn: Callable) -> Callable:
    """``fn`` as one compiled program on the current backend (eager on backends without a compiler)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def _decoding_function(model, plan: DecodingPlan) -> Callable:
    """``run(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions, seed) -> (sequences, scores,
    length)`` for ``plan``, not yet compiled."""
    def run(source_ids, source_mask, prefix_ids, prefix_mask, prefix_positions, seed):
        context = model.decoding_context(source_ids, source_mask) if source_ids is not None else {}
        if plan.num_beams > 1:
            # The context (encoder output, its mask) stays one row per source: cross-attention groups
            # the beams of a source over its keys (layers/attention.py), reading each key once.
            expand = lambda x: ops.repeat(x, plan.num_beams, axis=0)  # noqa: E731
            prefix_ids, prefix_mask, prefix_positions = map(expand, (prefix_ids, prefix_mask, prefix_positions))
            return beam_search(model, plan, context, prefix_ids, prefix_mask, prefix_positions, seed)
        return greedy_or_sample(model, plan, context, prefix_ids, prefix_mask, prefix_positions, seed)

    return run


class ProgramCache:
    """Compiled decoding programs of one model by plan, least recently used first out.

    >>> cache = ProgramCache(max_size=2)
    >>> [cache.get(key, lambda: key.upper()) for key in ("a", "b", "a", "c")]
    ['A', 'B', 'A', 'C']
    >>> cache.keys(), cache.compilations
    (['a', 'c'], 3)
    """

    def __init__(self, max_size: int = MAX_PROGRAMS_PER_MODEL):
        self.max_size = max_size
        self.programs: OrderedDict = OrderedDict()
        self.compilations = 0  # programs built, including those dropped since
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
        return list(self.programs)

    def __len__(self) -> int:
        return len(self.programs)


def compiled_decoder(model, plan: DecodingPlan) -> Callable:
    """The compiled decoding program of ``plan`` for ``model``, built on first use."""
    return model.decoding_programs.get(plan, lambda: _compile_function(_decoding_function(model, plan)))
