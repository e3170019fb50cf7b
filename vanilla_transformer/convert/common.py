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

from ..hub_files import CheckpointError
from ..weight_files import is_float_dtype, raise_if_mismatched, state_dict

Arrays = tuple[np.ndarray, ...]


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

    The helpers :func:`same`, :func:`linear`, :func:`fused`, :func:`layer_norm`, :func:`dense` and
    :func:`conv1d` build the usual entries; construct one directly for any other layout.

    Attributes:
        ours: our variable names (normalised, e.g. ``"encoder.layers.0.self_attn.q_proj.kernel"``).
        source: the tensor's name in the transformers state dict, without the head class' prefix.
        to_ours: ``np.ndarray`` (torch layout) -> tuple of ``np.ndarray``, one per name in ``ours`` (Keras layout).
        to_source: tuple of ``np.ndarray`` in the order of ``ours`` -> one ``np.ndarray`` (torch layout).
        aliases: other source names accepted on import.
        copies: aliases also written on export.
        default: our shapes (a tuple of shape tuples) -> arrays, used when the checkpoint lacks ``source``.

    Example:
        Marian's ``final_logits_bias`` is stored as ``(1, vocab)``; ours is ``(vocab,)``:

        >>> from vanilla_transformer.convert.common import Entry
        >>> entry = Entry(("final_logits_bias",), "final_logits_bias", to_ours=lambda t: (t.reshape(-1),),
        ...               to_source=lambda arrays: arrays[0].reshape(1, -1))
        >>> entry.ours, entry.source
        (('final_logits_bias',), 'final_logits_bias')
        >>> [array.shape for array in entry.to_ours(np.zeros((1, 5), np.float32))]
        [(5,)]
        >>> entry.to_source(entry.to_ours(np.zeros((1, 5), np.float32))).shape
        (1, 5)
    """

    ours: tuple[str, ...]
    source: str
    to_ours: Callable[[np.ndarray], Arrays]
    to_source: Callable[[Arrays], np.ndarray]
    aliases: tuple[str, ...] = ()
    copies: tuple[str, ...] = ()
    default: Callable[[tuple[tuple[int, ...], ...]], Arrays] | None = None


def same(ours: str, source: str, **kwargs) -> Entry:
    """A tensor stored alike on both sides (LayerNorm scales, biases, embedding tables).

    Args:
        ours: our variable name.
        source: the transformers tensor name.
        **kwargs: ``aliases``, ``copies`` or ``default`` of the :class:`Entry`.

    Returns:
        An :class:`Entry` whose ``to_ours``/``to_source`` pass the array through unchanged (any shape).

    Example:
        >>> from vanilla_transformer.convert.common import same
        >>> entry = same("shared.embeddings", "shared.weight")
        >>> entry.ours, entry.source
        (('shared.embeddings',), 'shared.weight')
        >>> table = np.arange(6, dtype=np.float32).reshape(3, 2)  # (vocab, d_model) on both sides
        >>> [array.shape for array in entry.to_ours(table)], entry.to_source((table,)).shape
        ([(3, 2)], (3, 2))
        >>> bool(np.array_equal(entry.to_source(entry.to_ours(table)), table))
        True
    """
    return Entry((ours,), source, lambda t: (t,), _identity, **kwargs)


def linear(ours: str, source: str, **kwargs) -> Entry:
    """A Keras Dense kernel ``(in, out)`` <-> a torch ``nn.Linear`` weight ``(out, in)``.

    Args:
        ours: our kernel's name (``"...fc1.kernel"``).
        source: the ``nn.Linear`` weight's name (``"...fc1.weight"``).
        **kwargs: ``aliases``, ``copies`` or ``default`` of the :class:`Entry`.

    Returns:
        An :class:`Entry` whose ``to_ours`` and ``to_source`` transpose (into C-contiguous arrays).

    Example:
        >>> from vanilla_transformer.convert.common import linear
        >>> entry = linear("feed_forward.fc1.kernel", "fc1.weight")
        >>> entry.ours, entry.source
        (('feed_forward.fc1.kernel',), 'fc1.weight')
        >>> weight = np.zeros((16, 8), np.float32)  # torch nn.Linear(8, 16).weight: (out, in)
        >>> [array.shape for array in entry.to_ours(weight)]  # Keras Dense(16) on 8 features: (in, out)
        [(8, 16)]
        >>> entry.to_source(entry.to_ours(weight)).shape
        (16, 8)
    """
    return Entry((ours,), source, lambda t: (np.ascontiguousarray(t.T),), _transpose, **kwargs)


def fused(ours: tuple[str, ...], source: str, axis: int) -> Entry:
    """Several of our tensors concatenated along ``axis`` in one source tensor (GPT-2's ``c_attn``).

    Args:
        ours: our variable names, in the order of their slices in the source tensor (e.g. query, key, value).
        source: the fused tensor's name.
        axis: the axis they are concatenated along (1 for ``Conv1D`` kernels ``(in, 3 * out)``, 0 for biases).

    Returns:
        An :class:`Entry`: ``to_ours`` splits the tensor into ``len(ours)`` equal parts along ``axis``,
        ``to_source`` concatenates them back.

    Example:
        >>> from vanilla_transformer.convert.common import fused
        >>> entry = fused(("q_proj.kernel", "k_proj.kernel", "v_proj.kernel"), "attn.c_attn.weight", axis=1)
        >>> entry.ours, entry.source
        (('q_proj.kernel', 'k_proj.kernel', 'v_proj.kernel'), 'attn.c_attn.weight')
        >>> c_attn = np.arange(8 * 24, dtype=np.float32).reshape(8, 24)  # (d_model, 3 * d_model)
        >>> [array.shape for array in entry.to_ours(c_attn)]
        [(8, 8), (8, 8), (8, 8)]
        >>> bool(np.array_equal(entry.to_source(entry.to_ours(c_attn)), c_attn))
        True
    """
    parts = len(ours)
    return Entry(tuple(ours), source,
                 lambda t: tuple(np.ascontiguousarray(a) for a in np.split(t, parts, axis=axis)),
                 lambda arrays: np.ascontiguousarray(np.concatenate(arrays, axis=axis)))


def layer_norm(ours: str, source: str, **kwargs) -> list[Entry]:
    """Keras ``gamma``/``beta`` <-> torch ``weight``/``bias`` (old checkpoints also say gamma/beta).

    Args:
        ours: our LayerNormalization layer's name (without ``.gamma``/``.beta``).
        source: the torch ``nn.LayerNorm``'s name (without ``.weight``/``.bias``).
        **kwargs: passed to both :func:`same` entries.

    Returns:
        Two :class:`Entry` objects, scale then shift, each ``(d_model,)`` on both sides; the old names
        ``<source>.gamma``/``<source>.beta`` are accepted as aliases on import.

    Example:
        >>> from vanilla_transformer.convert.common import layer_norm
        >>> entries = layer_norm("encoder.embed.layer_norm", "embeddings.LayerNorm")
        >>> [(entry.ours, entry.source, entry.aliases) for entry in entries]
        [(('encoder.embed.layer_norm.gamma',), 'embeddings.LayerNorm.weight', ('embeddings.LayerNorm.gamma',)),
         (('encoder.embed.layer_norm.beta',), 'embeddings.LayerNorm.bias', ('embeddings.LayerNorm.beta',))]
        >>> [entry.to_source(entry.to_ours(np.ones(8, np.float32))).shape for entry in entries]
        [(8,), (8,)]
    """
    return [same(f"{ours}.gamma", f"{source}.weight", aliases=(f"{source}.gamma",), **kwargs),
            same(f"{ours}.beta", f"{source}.bias", aliases=(f"{source}.beta",), **kwargs)]


def dense(ours: str, source: str) -> list[Entry]:
    """A Dense layer with bias <-> an ``nn.Linear`` with bias.

    Args:
        ours: our Dense layer's name (without ``.kernel``/``.bias``).
        source: the ``nn.Linear``'s name (without ``.weight``/``.bias``).

    Returns:
        Two :class:`Entry` objects: the kernel ``(in, out)`` <-> weight ``(out, in)`` (:func:`linear`) and the
        bias ``(out,)`` on both sides (:func:`same`).

    Example:
        >>> from vanilla_transformer.convert.common import dense
        >>> kernel, bias = dense("feed_forward.fc1", "intermediate.dense")
        >>> kernel.ours, kernel.source, bias.ours, bias.source
        (('feed_forward.fc1.kernel',), 'intermediate.dense.weight',
         ('feed_forward.fc1.bias',), 'intermediate.dense.bias')
        >>> [array.shape for array in kernel.to_ours(np.zeros((16, 8), np.float32))]  # (out, in) -> (in, out)
        [(8, 16)]
        >>> kernel.to_source(kernel.to_ours(np.zeros((16, 8), np.float32))).shape
        (16, 8)
    """
    return [linear(f"{ours}.kernel", f"{source}.weight"), same(f"{ours}.bias", f"{source}.bias")]


def conv1d(ours: str, source: str) -> list[Entry]:
    """A Dense layer <-> GPT's ``Conv1D``, whose weight is already ``(in, out)``.

    Args:
        ours: our Dense layer's name (without ``.kernel``/``.bias``).
        source: the ``Conv1D``'s name (without ``.weight``/``.bias``).

    Returns:
        Two :class:`Entry` objects (:func:`same`): the kernel ``(in, out)`` and the bias ``(out,)``, unchanged.

    Example:
        >>> from vanilla_transformer.convert.common import conv1d
        >>> kernel, bias = conv1d("feed_forward.fc1", "h.0.mlp.c_fc")
        >>> kernel.ours, kernel.source, bias.ours, bias.source
        (('feed_forward.fc1.kernel',), 'h.0.mlp.c_fc.weight', ('feed_forward.fc1.bias',), 'h.0.mlp.c_fc.bias')
        >>> [array.shape for array in kernel.to_ours(np.zeros((8, 32), np.float32))]  # no transpose
        [(8, 32)]
        >>> kernel.to_source(kernel.to_ours(np.zeros((8, 32), np.float32))).shape
        (8, 32)
    """
    return [same(f"{ours}.kernel", f"{source}.weight"), same(f"{ours}.bias", f"{source}.bias")]



# ------------------------------------------------------------------------------------------ the map
@dataclass
class WeightMap:
    r"""Entries plus the names a checkpoint may carry that mean nothing to us (buffers, tied copies).

    ``prefix``: what transformers puts before the base model's names in this head class
    (``"model."``, ``"bert."``, ``"transformer."``); names written at the top level (``lm_head.weight``,
    ``final_logits_bias``, ``cls.*``, ``classifier.*``) are listed in ``top_level``.

    Attributes:
        entries: the :class:`Entry` objects, one per transformers tensor.
        prefix: prepended on export to every name not in ``top_level``.
        strip_prefixes: base-model prefixes removed from a checkpoint's names on import (a ``BertModel``
            checkpoint has none, a ``BertForMaskedLM`` one has ``bert.``).
        top_level: names (and name prefixes before a ``.``) that never carry ``prefix``.
        ignore: regular expressions (full match, over normalised names) of checkpoint tensors that are
            neither loaded nor reported as unexpected.

    Example:
        >>> from vanilla_transformer.convert.common import WeightMap, dense, linear
        >>> weights = WeightMap([*dense("pooler", "pooler.dense"), linear("lm_head.kernel", "lm_head.weight")],
        ...                     prefix="bert.", strip_prefixes=("bert.",), top_level=("lm_head",),
        ...                     ignore=(r"embeddings\.position_ids",))
        >>> ours = {"pooler.kernel": np.ones((8, 4), np.float32), "pooler.bias": np.zeros(4, np.float32),
        ...         "lm_head.kernel": np.ones((4, 20), np.float32)}  # Keras layout: kernels (in, out)
        >>> tensors = weights.to_source(ours)
        >>> {name: tensor.shape for name, tensor in tensors.items()}  # torch layout: weights (out, in)
        {'bert.pooler.dense.weight': (4, 8), 'bert.pooler.dense.bias': (4,), 'lm_head.weight': (20, 4)}
        >>> tensors["bert.embeddings.position_ids"] = np.arange(4)  # a buffer: ignored, not unexpected
        >>> shapes = {name: array.shape for name, array in ours.items()}
        >>> back, report = weights.to_ours(tensors, shapes, strict=True, source="checkpoint", target="model")
        >>> {name: array.shape for name, array in back.items()}, report
        ({'pooler.kernel': (8, 4), 'pooler.bias': (4,), 'lm_head.kernel': (4, 20)},
         {'missing_keys': [], 'unexpected_keys': []})
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
        """Normalised name -> the name transformers writes in this head class.

        Args:
            name: a normalised transformers name (no base-model prefix), e.g. ``"pooler.dense.weight"``.

        Returns:
            ``name`` itself when it is in ``top_level``, else ``prefix + name``.

        Example:
            >>> from vanilla_transformer.convert.common import WeightMap
            >>> weights = WeightMap([], prefix="bert.", top_level=("cls",))
            >>> weights.external("pooler.dense.weight"), weights.external("cls.predictions.bias")
            ('bert.pooler.dense.weight', 'cls.predictions.bias')
        """
        return name if self._is_top_level(name) else self.prefix + name

    def normalise(self, name: str) -> str:
        """A checkpoint's name with any known base-model prefix removed.

        Args:
            name: a name as stored in a checkpoint, e.g. ``"bert.pooler.dense.weight"``.

        Returns:
            ``name`` without the first matching entry of ``strip_prefixes`` (top-level names are kept whole).

        Example:
            >>> from vanilla_transformer.convert.common import WeightMap
            >>> weights = WeightMap([], strip_prefixes=("bert.",))
            >>> weights.normalise("bert.pooler.dense.weight"), weights.normalise("pooler.dense.weight")
            ('pooler.dense.weight', 'pooler.dense.weight')
        """
        for prefix in self.strip_prefixes:
            if name.startswith(prefix) and not self._is_top_level(name):
                return name[len(prefix):]
        return name

    def ignored(self, name: str) -> bool:
        r"""Whether a normalised checkpoint name fully matches one of the ``ignore`` patterns.

        Args:
            name: a normalised transformers name (see :meth:`normalise`).

        Returns:
            True for tensors to skip silently on import (buffers, tied copies), else False.

        Example:
            >>> from vanilla_transformer.convert.common import WeightMap
            >>> weights = WeightMap([], ignore=(r"h\.\d+\.attn\.bias",))
            >>> weights.ignored("h.0.attn.bias"), weights.ignored("h.0.attn.c_attn.bias")
            (True, False)
        """
        return any(pattern.fullmatch(name) for pattern in self._ignore_re)

    # -- import
    def to_ours(self, tensors: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], *, strict: bool,
                source: str, target: str) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
        """Convert a transformers state dict into our names, checking everything first.

        ``shapes``: our variables' shapes (entries whose variables the model lacks are skipped).
        Shape mismatches always raise :class:`CheckpointError`; missing and unexpected tensors raise when
        ``strict``, otherwise they are returned in the report (``missing_keys``/``unexpected_keys``, in
        transformers' names).

        Args:
            tensors: the checkpoint's tensors by name (prefixed or not), torch layout (e.g. a Dense weight
                ``(out, in)``); any numpy floating-point dtype, converted to float32.
            shapes: our variable names -> their shapes (Keras layout, e.g. a Dense kernel ``(in, out)``).
            strict: raise on missing or unexpected tensors instead of reporting them.
            source: how error messages name the checkpoint.
            target: how error messages name the model being loaded.

        Returns:
            ``(arrays, report)``: float32 arrays by our names (Keras layout), and
            ``{"missing_keys": [...], "unexpected_keys": [...]}`` (sorted lists of transformers names).

        Raises:
            CheckpointError: a shape or dtype mismatch, differing tied copies, or (when ``strict``) missing
                or unexpected tensors.

        Example:
            >>> from vanilla_transformer.convert.common import WeightMap, dense
            >>> weights = WeightMap(dense("pooler", "pooler.dense"))
            >>> tensors = {"pooler.dense.weight": np.zeros((4, 8)), "pooler.dense.bias": np.zeros(4)}
            >>> arrays, report = weights.to_ours(tensors, {"pooler.kernel": (8, 4), "pooler.bias": (4,)},
            ...                                  strict=True, source="checkpoint", target="model")
            >>> {name: (array.shape, str(array.dtype)) for name, array in arrays.items()}
            {'pooler.kernel': ((8, 4), 'float32'), 'pooler.bias': ((4,), 'float32')}
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
        """Our (re-expressed) arrays -> the torch-layout state dict, in transformers' names.

        Args:
            state: our arrays by name in Keras layout (e.g. a Dense kernel ``(in, out)``), holding at least
                every name of every entry; extra names are left out.

        Returns:
            C-contiguous float32 arrays in torch layout (e.g. an ``nn.Linear`` weight ``(out, in)``) by
            transformers name (``prefix`` applied), ``copies`` included.

        Raises:
            CheckpointError: ``state`` lacks a variable an entry needs.

        Example:
            >>> from vanilla_transformer.convert.common import WeightMap, dense
            >>> weights = WeightMap(dense("pooler", "pooler.dense"), prefix="bert.")
            >>> tensors = weights.to_source({"pooler.kernel": np.zeros((8, 4)), "pooler.bias": np.zeros(4)})
            >>> {name: (tensor.shape, str(tensor.dtype)) for name, tensor in tensors.items()}
            {'bert.pooler.dense.weight': ((4, 8), 'float32'), 'bert.pooler.dense.bias': ((4,), 'float32')}
        """
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
    """Our weights as float32 numpy arrays (what torch checkpoints hold), by name.

    Args:
        model: one of our models (built here if needed).

    Returns:
        ``{name: np.ndarray}`` in Keras layout (a Dense kernel is ``(in, out)``), names as in
        ``model.safetensors`` (``"shared.embeddings"``, ``"encoder.layers.0.self_attn.q_proj.kernel"``, ...).

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerEncoderModel
        >>> from vanilla_transformer.convert.common import model_state
        >>> state = model_state(TransformerEncoderModel(TransformerConfig(**example_sizes, architecture="encoder")))
        >>> len(state), state["shared.embeddings"].shape, state["shared.embeddings"].dtype
        (17, (20, 8), dtype('float32'))
        >>> state["encoder.layers.0.feed_forward.fc1.kernel"].shape  # (d_model, d_ff)
        (8, 16)
    """
    return {name: array.astype(np.float32) for name, array in state_dict(model).items()}


def fold_embedding_scale(state: dict[str, np.ndarray], config, head_kernel: str | None) -> bool:
    """Re-express ``scale_embedding=True`` for a target without it: scale the input table by sqrt(d_model).

    A tied output projection would then be scaled too, so it becomes a separate (untied) matrix holding the
    original table: ``head_kernel`` is our name of that untied head, ``(d_model, vocab)``, or None when the
    model has no output projection. Returns the exported ``tie_word_embeddings``.

    Args:
        state: our arrays by name (see :func:`model_state`), holding ``"shared.embeddings"`` ``(vocab, d_model)``;
            changed in place.
        config: anything with ``scale_embedding``, ``tie_word_embeddings`` and ``d_model`` (our config).
        head_kernel: the name to store the untied output kernel ``(d_model, vocab)`` under, or None.

    Returns:
        The ``tie_word_embeddings`` to export (False once the head has been untied).

    Example:
        >>> from types import SimpleNamespace
        >>> from vanilla_transformer.convert.common import fold_embedding_scale
        >>> config = SimpleNamespace(scale_embedding=True, tie_word_embeddings=True, d_model=4)
        >>> state = {"shared.embeddings": np.ones((3, 4), np.float32)}  # (vocab, d_model)
        >>> fold_embedding_scale(state, config, "lm_head.kernel")
        False
        >>> state["shared.embeddings"][0], state["lm_head.kernel"].shape  # scaled by sqrt(4); head (d_model, vocab)
        (array([2., 2., 2., 2.], dtype=float32), (4, 3))
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
    """Sinusoidal positions -> the same numbers as a learned table (exact for targets with learned positions).

    Args:
        state: our arrays by name; changed in place.
        config: anything with ``position_embedding``, ``max_position_embeddings``, ``d_model`` and
            ``sinusoidal_layout`` (our config).
        name: where to store the ``(max_position_embeddings, d_model)`` float32 table.

    Returns:
        None; ``state`` is left alone unless ``config.position_embedding == "sinusoidal"``.

    Example:
        >>> from types import SimpleNamespace
        >>> from vanilla_transformer.convert.common import position_table
        >>> config = SimpleNamespace(position_embedding="sinusoidal", max_position_embeddings=32, d_model=8,
        ...                          sinusoidal_layout="halves")
        >>> state = {}
        >>> position_table(state, config, "decoder.embed.embed_positions.embeddings")
        >>> table = state["decoder.embed.embed_positions.embeddings"]
        >>> table.shape, table[0]  # position 0: sin(0) on the first half, cos(0) on the second
        ((32, 8), array([0., 0., 0., 0., 1., 1., 1., 1.], dtype=float32))
    """
    if config.position_embedding == "sinusoidal":
        from ..layers.embeddings import sinusoidal_table

        state[name] = sinusoidal_table(config.max_position_embeddings, config.d_model, config.sinusoidal_layout)
