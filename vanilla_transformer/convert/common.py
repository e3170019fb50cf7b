"""Shared machinery of the converters: weight maps between our names and transformers' names.

A :class:`WeightMap` is a list of :class:`Entry` objects, each tying one or more of our variables
(``encoder.layers.0.self_attn.q_proj.kernel``) to one tensor of a transformers checkpoint
(``model.encoder.layers.0.self_attn.q_proj.weight``) with a pair of array transforms. The same map
drives both directions, so import and export cannot drift apart:

- import: every tensor is checked (missing, unexpected, wrong shape) and reported by its transformers
  name before anything is assigned;
- export: our (possibly re-expressed, see :func:`fold_embedding_scale`) arrays become a torch-layout state
  dict that ``transformers`` loads with no missing or unexpected keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..checkpoint_io import CheckpointError, is_float_dtype, raise_if_mismatched, state_dict

Arrays = tuple[np.ndarray, ...]


class UnsupportedConfigError(CheckpointError):
    """A config (ours or a checkpoint's) that the other side cannot represent exactly; names the field."""


def unsupported(field_name: str, value, reason: str) -> UnsupportedConfigError:
    return UnsupportedConfigError(f"{field_name}={value!r}: {reason}")


# ------------------------------------------------------------------------------------------ transforms
def _identity(arrays: Arrays) -> np.ndarray:
    return arrays[0]


def _transpose(arrays: Arrays) -> np.ndarray:
    return np.ascontiguousarray(arrays[0].T)


@dataclass(frozen=True)
class Entry:
    """Our variables ``ours`` <-> the transformers tensor ``source``.

    ``to_ours(tensor) -> arrays`` (one per name in ``ours``) and ``to_source(arrays) -> tensor`` are inverse.
    ``aliases``: other names of the same tensor (tied copies) accepted on import; all present ones must hold
    the same values. ``copies``: aliases that are also written on export (copies transformers does not tie).
    ``default``: arrays to use when the checkpoint lacks the tensor (a buffer transformers re-creates).
    """

    ours: tuple[str, ...]
    source: str
    to_ours: Callable[[np.ndarray], Arrays]
    to_source: Callable[[Arrays], np.ndarray]
    aliases: tuple[str, ...] = ()
    copies: tuple[str, ...] = ()
    default: Callable[[tuple[tuple[int, ...], ...]], Arrays] | None = None


def same(ours: str, source: str, **kwargs) -> Entry:
    """A tensor stored alike on both sides (LayerNorm scales, biases, embedding tables)."""
    return Entry((ours,), source, lambda t: (t,), _identity, **kwargs)


def linear(ours: str, source: str, **kwargs) -> Entry:
    """A Keras Dense kernel ``(in, out)`` <-> a torch ``nn.Linear`` weight ``(out, in)``."""
    return Entry((ours,), source, lambda t: (np.ascontiguousarray(t.T),), _transpose, **kwargs)


def fused(ours: tuple[str, ...], source: str, axis: int) -> Entry:
    """Several of our tensors concatenated along ``axis`` in one source tensor (GPT-2's ``c_attn``)."""
    parts = len(ours)
    return Entry(tuple(ours), source,
                 lambda t: tuple(np.ascontiguousarray(a) for a in np.split(t, parts, axis=axis)),
                 lambda arrays: np.ascontiguousarray(np.concatenate(arrays, axis=axis)))


def layer_norm(ours: str, source: str, **kwargs) -> list[Entry]:
    """Keras ``gamma``/``beta`` <-> torch ``weight``/``bias`` (old checkpoints also say gamma/beta)."""
    return [same(f"{ours}.gamma", f"{source}.weight", aliases=(f"{source}.gamma",), **kwargs),
            same(f"{ours}.beta", f"{source}.bias", aliases=(f"{source}.beta",), **kwargs)]


def dense(ours: str, source: str) -> list[Entry]:
    """A Dense layer with bias <-> an ``nn.Linear`` with bias."""
    return [linear(f"{ours}.kernel", f"{source}.weight"), same(f"{ours}.bias", f"{source}.bias")]


def conv1d(ours: str, source: str) -> list[Entry]:
    """A Dense layer <-> GPT's ``Conv1D``, whose weight is already ``(in, out)``."""
    return [same(f"{ours}.kernel", f"{source}.weight"), same(f"{ours}.bias", f"{source}.bias")]



# ------------------------------------------------------------------------------------------ the map
@dataclass
class WeightMap:
    """Entries plus the names a checkpoint may carry that mean nothing to us (buffers, tied copies).

    ``prefix``: what transformers puts before the base model's names in this head class
    (``"model."``, ``"bert."``, ``"transformer."``); names written at the top level (``lm_head.weight``,
    ``final_logits_bias``, ``cls.*``, ``classifier.*``) are listed in ``top_level``.
    """

    entries: list[Entry]
    prefix: str = ""
    strip_prefixes: tuple[str, ...] = ()
    top_level: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()  # regular expressions over normalised names
    _ignore_re: list[re.Pattern] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        self._ignore_re = [re.compile(pattern) for pattern in self.ignore]

    # -- names
    def _is_top_level(self, name: str) -> bool:
        return any(name == top or name.startswith(top + ".") for top in self.top_level)

    def external(self, name: str) -> str:
        """Normalised name -> the name transformers writes in this head class."""
        return name if self._is_top_level(name) else self.prefix + name

    def normalise(self, name: str) -> str:
        """A checkpoint's name with any known base-model prefix removed."""
        for prefix in self.strip_prefixes:
            if name.startswith(prefix) and not self._is_top_level(name):
                return name[len(prefix):]
        return name

    def ignored(self, name: str) -> bool:
        return any(pattern.fullmatch(name) for pattern in self._ignore_re)

    # -- import
    def to_ours(self, tensors: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], *, strict: bool,
                source: str, target: str) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
        """Convert a transformers state dict into our names, checking everything first.

        ``shapes``: our variables' shapes (entries whose variables the model lacks are skipped).
        Shape mismatches always raise :class:`CheckpointError`; missing and unexpected tensors raise when
        ``strict``, otherwise they are returned in the report (``missing_keys``/``unexpected_keys``, in
        transformers' names).
        """
        by_name: dict[str, str] = {}
        for original in tensors:
            by_name.setdefault(self.normalise(original), original)
        used: set[str] = set()
        converted: dict[str, np.ndarray] = {}
        missing, mismatched, differing = [], [], []
        for entry in self.entries:
            if not all(name in shapes for name in entry.ours):
                continue
            present = [by_name[n] for n in (entry.source, *entry.aliases) if n in by_name]
            used.update(present)
            found = present[0] if present else None
            for other in present[1:]:
                a, b = tensors[present[0]], tensors[other]
                if a.shape != b.shape or not np.array_equal(a, b):
                    differing.append(f"{present[0]} and {other}")
            our_shapes = tuple(tuple(shapes[name]) for name in entry.ours)
            if found is None:
                if entry.default is not None:
                    converted.update(zip(entry.ours, entry.default(our_shapes)))
                else:
                    missing.append(self.external(entry.source))
                continue
            tensor = tensors[found]
            expected = entry.to_source(tuple(np.empty(shape, np.float32) for shape in our_shapes)).shape
            if tuple(tensor.shape) != tuple(expected):
                mismatched.append(f"{found}: checkpoint {tuple(tensor.shape)} vs expected {tuple(expected)}")
                continue
            if not is_float_dtype(tensor.dtype):
                mismatched.append(f"{found}: dtype {tensor.dtype} is not floating point")
                continue
            converted.update(zip(entry.ours, entry.to_ours(np.asarray(tensor).astype(np.float32))))
        unexpected = sorted(original for original in tensors
                            if original not in used and not self.ignored(self.normalise(original)))
        tied = f"tensors that must be one shared (tied) table hold different values, which {target} cannot represent"
        raise_if_mismatched(source, target, [(tied, differing), ("shape mismatch", mismatched)], sorted(missing),
                            unexpected, strict)
        return converted, {"missing_keys": sorted(missing), "unexpected_keys": unexpected}

    # -- export
    def to_source(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Our (re-expressed) arrays -> the torch-layout state dict, in transformers' names."""
        out = {}
        for entry in self.entries:
            missing = [name for name in entry.ours if name not in state]
            if missing:
                raise CheckpointError(f"cannot export: the model has no {missing} (needed for {entry.source})")
            tensor = np.ascontiguousarray(entry.to_source(tuple(state[name] for name in entry.ours)), dtype=np.float32)
            for name in (entry.source, *entry.copies):
                out[self.external(name)] = tensor if name == entry.source else tensor.copy()
        return out


# ------------------------------------------------------------------------------------------ shared helpers
def model_state(model) -> dict[str, np.ndarray]:
    """Our weights as float32 numpy arrays (what torch checkpoints hold), by name."""
    return {name: array.astype(np.float32) for name, array in state_dict(model).items()}


def fold_embedding_scale(state: dict[str, np.ndarray], config, head_kernel: str | None) -> bool:
    """Re-express ``scale_embedding=True`` for a target without it: scale the input table by sqrt(d_model).

    A tied output projection would then be scaled too, so it becomes a separate (untied) matrix holding the
    original table: ``head_kernel`` is our name of that untied head, ``(d_model, vocab)``, or None when the
    model has no output projection. Returns the exported ``tie_word_embeddings``.
    """
    tied = bool(config.tie_word_embeddings)
    if not config.scale_embedding:
        return tied
    table = state["shared.embeddings"]
    if tied and head_kernel is not None:
        state[head_kernel] = np.ascontiguousarray(table.T)
        tied = False
    state["shared.embeddings"] = table * np.float32(np.sqrt(config.d_model))
    return tied


def position_table(state: dict[str, np.ndarray], config, name: str) -> None:
    """Sinusoidal positions -> the same numbers as a learned table (exact for targets with learned positions)."""
    if config.position_embedding == "sinusoidal":
        from ..layers.embeddings import sinusoidal_table

        state[name] = sinusoidal_table(config.max_position_embeddings, config.d_model, config.sinusoidal_layout)


def plain_token_id(value):
    """A special-token id as transformers' configs store it: None, an int, or a plain list of ints (ours may
    be a tuple or a Keras-tracked list)."""
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_choice(field_name: str, value, table: dict, target: str):
    if value not in table:
        raise unsupported(field_name, value, f"{target} supports {sorted(table)}")
    return table[value]


def require(condition: bool, field_name: str, value, reason: str) -> None:
    if not condition:
        raise unsupported(field_name, value, reason)
