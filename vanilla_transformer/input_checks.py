"""The model classes' input checks: what a call takes is turned into a dict of arrays, and what would be
silently wrong (float ids, ragged rows, ids outside the vocabulary, sequences longer than the positions,
masks of another shape) is refused with a message naming the input."""

from __future__ import annotations

import contextvars
from typing import Any

import keras
import numpy as np
from keras import ops

# the model whose ``__call__`` is checking its inputs now (``call`` then needs no second check)
_CHECKED_BY_CALL: contextvars.ContextVar[int | None] = contextvars.ContextVar("checked_by_call", default=None)


def _as_numpy_if_concrete(x):
    """The value of ``x`` as numpy when it is concrete (eager), None when it is symbolic (traced)."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # symbolic tensors inside a traced function have no value
        return None


class ModelInputChecks:
    """Mixin of the model classes: every call's inputs pass :meth:`check_inputs` once, before Keras converts them.

    A model names its inputs in ``input_names`` (required; a lone one may be given without a dict) and
    ``optional_input_names``, and has a ``config`` with ``vocab_size`` and ``max_position_embeddings``. Inputs
    are int ``(batch, seq)`` id arrays and 0/1 masks of the same shape; lists and numpy are checked for
    integer dtype, rank 2, ``seq <= max_position_embeddings`` and ids in ``[0, vocab_size)``.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> model = TransformerForCausalLM(config)
        >>> sorted(model.check_inputs([[1, 2, 3]]))  # a lone input: put in a dict
        ['input_ids']
        >>> model.check_inputs({"input_ids": [[1, 2], [3]]})
        Traceback (most recent call last):
        ...
        ValueError: input_ids is ragged; pad the rows to one length...
        >>> model.check_inputs({"input_ids": [[1, 2]], "attention_mask": [[1, 1, 0]]})
        Traceback (most recent call last):
        ...
        ValueError: attention_mask has shape (1, 3) but input_ids has (1, 2)
    """

    #: the inputs a call needs, and those it may also take
    input_names: tuple[str, ...] = ()
    optional_input_names: tuple[str, ...] = ()

    def __call__(self, inputs, *args, **kwargs):
        # Check before Keras converts the inputs, so ragged lists and bad dtypes get our clear errors; ``call``
        # then takes them as they are (checked once per call).
        token = _CHECKED_BY_CALL.set(id(self))
        try:
            return super().__call__(self.check_inputs(inputs), *args, **kwargs)
        finally:
            _CHECKED_BY_CALL.reset(token)

    def call_inputs(self, inputs) -> dict[str, Any]:
        """The inputs ``call`` runs on: as ``__call__`` checked them, or checked here when ``call`` is reached
        without it (JAX's ``stateless_call`` in training)."""
        return inputs if _CHECKED_BY_CALL.get() == id(self) else self.check_inputs(inputs)

    def check_inputs(self, inputs, required: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Turn the call's inputs into a dict and reject what would be silently wrong.

        Checks keys, dtype (integer ids), rank, length against ``max_position_embeddings``, mask shapes,
        and (for concrete values) that ids lie in ``[0, vocab_size)``.
        """
        if not isinstance(inputs, dict):
            if len(self.input_names) == 1:
                inputs = {self.input_names[0]: inputs}
            else:
                raise TypeError(f"{type(self).__name__} takes a dict with keys {self.input_names}, "
                                f"got {type(inputs).__name__}")
        allowed = set(self.input_names) | set(self.optional_input_names)
        unknown = set(inputs) - allowed
        if unknown:
            raise ValueError(f"Unknown inputs {sorted(unknown)}; expected keys among {sorted(allowed)}")
        checked = {name: self.check_input(name, value) for name, value in inputs.items() if value is not None}
        for name in self.input_names if required is None else required:
            if name not in checked:
                raise ValueError(f"Missing input {name!r}")
        for name, value in checked.items():
            if name.endswith("attention_mask") or name == "token_type_ids":
                ids_name = "decoder_input_ids" if name.startswith("decoder_") else "input_ids"
                ids = checked.get(ids_name)
                if ids is not None and tuple(value.shape) != tuple(ids.shape):
                    raise ValueError(f"{name} has shape {tuple(value.shape)} but {ids_name} has "
                                     f"{tuple(ids.shape)}")
        batches = {name: value.shape[0] for name, value in checked.items() if isinstance(value.shape[0], int)}
        if len(set(batches.values())) > 1:  # attention would otherwise pair rows of different examples
            raise ValueError(f"inputs have different batch sizes: {batches}")
        return checked

    def check_input(self, name: str, value):
        """One input: lists become arrays (ragged ones are refused), then dtype, rank, length and id range."""
        if isinstance(value, (list, tuple)):
            try:
                value = np.asarray(value)
            except ValueError as err:
                raise ValueError(f"{name} is ragged; pad the rows to one length ({err})") from None
            if value.dtype == object:
                raise ValueError(f"{name} is ragged; pad the rows to one length")
        raw_dtype = getattr(value, "dtype", type(value))
        try:
            dtype = keras.backend.standardize_dtype(raw_dtype)
        except ValueError:  # strings, objects: not a tensor dtype at all
            dtype = str(raw_dtype)
        # Concrete inputs (numpy, eager tensors, lists) are checked. Symbolic ones are not: Keras' symbolic
        # build under tf.distribute describes every input as float64 whatever the data holds.
        symbolic = isinstance(value, keras.KerasTensor) or _as_numpy_if_concrete(value) is None
        if "int" not in dtype and dtype != "bool" and not symbolic:
            raise TypeError(f"{name} must hold integer ids, got dtype {dtype}")
        if len(value.shape) != 2:
            raise ValueError(f"{name} must have shape (batch, sequence), got {tuple(value.shape)}")
        length = value.shape[1]
        if length is not None and length > self.config.max_position_embeddings:
            raise ValueError(f"{name} has {length} positions, more than max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        concrete = _as_numpy_if_concrete(value) if name.endswith("input_ids") else None
        if concrete is not None and concrete.size:
            low, high = int(concrete.min()), int(concrete.max())
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(f"{name} holds ids outside [0, vocab_size={self.config.vocab_size}): "
                                 f"min {low}, max {high}")
        return value
