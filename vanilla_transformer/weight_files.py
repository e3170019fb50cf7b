"""Weight files: a model's tensors to and from safetensors, and into a model with a report of what did not fit.

Writes ``model.safetensors`` or shards with ``model.safetensors.index.json`` as transformers does
(:func:`write_weights`), reads them back from a :class:`~vanilla_transformer.hub_files.Checkpoint`
(:func:`read_weights`), assigns them to a model with one error listing missing / unexpected / mismatched
tensors (:func:`assign_weights`), and holds the steps of loading shared by native checkpoints
(:mod:`.hub`) and transformers checkpoints (:mod:`.convert`): :func:`load_config` and :func:`finish_loading`.

Only safetensors are ever read: nothing from a checkpoint is executed. Checkpoints that offer only pickled
(``pytorch_model.bin``) or Keras/HDF5 (``tf_model.h5``, ``model.keras``) weights are refused, and file names
taken from a shard index must stay inside the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from huggingface_hub import constants, split_state_dict_into_shards_factory

from .hub_files import Checkpoint, CheckpointError, check_filename

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE  # model.safetensors
WEIGHTS_INDEX_NAME = constants.SAFETENSORS_INDEX_FILE  # model.safetensors.index.json
SHARD_PATTERN = "model{suffix}.safetensors"
UNSAFE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "tf_model.h5.index.json",
                  "model.keras", "flax_model.msgpack", "model.ckpt.index")
DEFAULT_MAX_SHARD_SIZE = "5GB"


# ------------------------------------------------------------------------------------------ writing
def state_dict(model) -> dict[str, np.ndarray]:
    """The model's weights as numpy arrays by stable name (what ``model.safetensors`` holds).

    Raises :class:`CheckpointError` when the names do not cover every weight of the model, so that a save
    can never silently drop a tensor.

    ``model``: a model of this package (it has ``named_variables()``; it is built if needed) -> a dict of
    stable name (``encoder.layers.0.feed_forward.fc1.kernel``) -> C-contiguous numpy array in the weight's dtype.

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.weight_files import state_dict
        >>> tensors = state_dict(TransformerForSeq2SeqLM(example_config))
        >>> len(tensors)
        43
        >>> tensors["shared.embeddings"].shape, tensors["shared.embeddings"].dtype
        ((20, 8), dtype('float32'))
        >>> tensors["encoder.layers.0.feed_forward.fc1.kernel"].shape
        (8, 16)
    """
    named = model.named_variables()
    weights = {id(weight) for weight in model.weights}
    unnamed = len(weights - {id(variable) for variable in named.values()})
    if unnamed:
        raise CheckpointError(f"{type(model).__name__}: {unnamed} of its {len(weights)} weights have no name; "
                              f"saving would lose them")
    return {name: np.ascontiguousarray(np.asarray(variable.numpy())) for name, variable in named.items()}


def write_weights(state_dict: dict[str, np.ndarray], directory: str | os.PathLike,
                  max_shard_size: int | str | None = None) -> list[str]:
    """Write safetensors (one file, or shards + index as transformers does); return the file names.

    ``max_shard_size`` (bytes, or a string such as ``"200MB"``): split into ``model-0000k-of-0000n.safetensors``
    files of at most that size (a single tensor larger than it gets a shard of its own) and write
    ``model.safetensors.index.json`` mapping every tensor to its shard. ``None``: one ``model.safetensors``.

    Args:
        state_dict: tensor name -> numpy array (e.g. from :func:`state_dict`).
        directory: an existing folder; files of the same names are overwritten.
        max_shard_size: the largest shard, in bytes or as a string (``"5GB"``); None: no sharding.

    Returns:
        The names of the files written, the index first when sharded.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from vanilla_transformer.weight_files import write_weights
        >>> tensors = {"a": np.zeros((4, 4), "float32"), "b": np.ones(16, "float32")}  # 64 bytes each
        >>> write_weights(tensors, tempfile.mkdtemp())
        ['model.safetensors']
        >>> write_weights(tensors, tempfile.mkdtemp(), max_shard_size=100)
        ['model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    if max_shard_size is None:
        save_file(state_dict, str(directory / WEIGHTS_NAME), metadata={"format": "np"})
        return [WEIGHTS_NAME]
    split = split_state_dict_into_shards_factory(
        state_dict, get_storage_size=lambda array: array.nbytes, filename_pattern=SHARD_PATTERN,
        max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        save_file({name: state_dict[name] for name in names}, str(directory / filename), metadata={"format": "np"})
    if not split.is_sharded:
        return list(split.filename_to_tensors)
    total = int(sum(array.nbytes for array in state_dict.values()))
    index = {"metadata": {"total_size": total}, "weight_map": split.tensor_to_filename}
    (directory / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return [WEIGHTS_INDEX_NAME, *split.filename_to_tensors]


# ------------------------------------------------------------------------------------------ reading
def _no_weights_error(checkpoint: Checkpoint) -> CheckpointError:
    """The error for a checkpoint without safetensors weights, naming the unsafe formats it offers instead."""
    files = checkpoint.list_files()
    if files is None:  # offline or unlistable: look for the unsafe formats one name at a time
        files = [name for name in UNSAFE_WEIGHTS if checkpoint.cached(name)]
    unsafe = [name for name in UNSAFE_WEIGHTS if name in files]
    if unsafe:
        return CheckpointError(
            f"{checkpoint.describe()} offers only {', '.join(unsafe)}, which is refused: only safetensors are "
            f"loaded, because these formats can execute code when read (pickle in PyTorch .bin files, Keras "
            f"Lambda layers and custom objects in .h5/.keras files). Convert the checkpoint to safetensors "
            f"({WEIGHTS_NAME}).")
    listing = f"; it has: {', '.join(files)}" if files else ""
    return CheckpointError(f"{checkpoint.describe()} has no weights ({WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME})"
                           f"{listing}{checkpoint.offline_hint()}")


def _weight_files(checkpoint: Checkpoint) -> tuple[dict[str, str], dict[str, str] | None]:
    """Local paths of a checkpoint's weight files by name, and the shard index's tensor -> file map (None
    for a single ``model.safetensors``). Shard names are checked to stay inside the checkpoint."""
    source = checkpoint.describe()
    single = checkpoint.fetch(WEIGHTS_NAME)
    weight_map = None
    if single is not None:
        paths = {WEIGHTS_NAME: single}
    else:
        index_path = checkpoint.fetch(WEIGHTS_INDEX_NAME)
        if index_path is None:
            raise _no_weights_error(checkpoint)
        try:
            weight_map = json.loads(Path(index_path).read_text())["weight_map"]
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError("weight_map must be a non-empty mapping of tensor name -> shard file")
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{WEIGHTS_INDEX_NAME} of {source} is not a valid index: {err}") from None
        files = sorted(set(weight_map.values()), key=str)
        for filename in files:
            check_filename(filename, f"{WEIGHTS_INDEX_NAME} of {source}", "shard")
            if not filename.endswith(".safetensors"):
                raise CheckpointError(f"{WEIGHTS_INDEX_NAME} of {source} names the shard {filename!r}: only "
                                      f".safetensors files are read")
        paths = {}
        for filename in files:
            path = checkpoint.fetch(filename)
            if path is None:
                raise CheckpointError(f"{WEIGHTS_INDEX_NAME} of {source} lists the shard {filename}, which is "
                                      f"missing from the checkpoint{checkpoint.offline_hint()}")
            paths[filename] = path
    return paths, weight_map


def read_weights(name_or_path, hub_kwargs: dict | None = None) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint (single file or shards), from safetensors only.

    ``name_or_path``: a directory, a Hub repo id (with ``hub_kwargs`` of ``hf_hub_download``) or a
    :class:`Checkpoint`. As transformers does, ``model.safetensors`` is used when present, else the
    shard index and the shards it names (which must be ``.safetensors`` files inside the checkpoint).

    Args:
        name_or_path: the checkpoint (directory, Hub repo id or :class:`Checkpoint`).
        hub_kwargs: keyword arguments of :class:`Checkpoint` (``revision``, ``token``, ...) for a repo id.

    Returns:
        Tensor name -> numpy array, as stored. Raises :class:`CheckpointError` when there are no safetensors
        weights or a file is corrupt or inconsistent with the index.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from vanilla_transformer.weight_files import read_weights, write_weights
        >>> folder = tempfile.mkdtemp()
        >>> files = write_weights({"a": np.zeros((4, 4), "float32"), "b": np.ones(16, "float32")}, folder,
        ...                       max_shard_size=100)
        >>> {name: array.shape for name, array in sorted(read_weights(folder).items())}  # shards joined
        {'a': (4, 4), 'b': (16,)}
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    checkpoint = Checkpoint.of(name_or_path, hub_kwargs)
    source = checkpoint.describe()
    paths, weight_map = _weight_files(checkpoint)
    tensors: dict[str, np.ndarray] = {}
    for filename, path in paths.items():
        try:
            shard = load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{filename} of {source} is corrupt or truncated: {err}") from None
        if weight_map is not None:
            stray = sorted(name for name in shard if weight_map.get(name) != filename)
            if stray:
                raise CheckpointError(f"{filename} of {source} holds tensors that {WEIGHTS_INDEX_NAME} places "
                                      f"elsewhere or not at all: {stray}")
        tensors.update(shard)
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise CheckpointError(f"tensors listed in {WEIGHTS_INDEX_NAME} of {source} are missing from the "
                                  f"shards: {missing}")
    return tensors


# ------------------------------------------------------------------------------------------ assigning
def is_float_dtype(dtype) -> bool:
    """float16/32/64, and bfloat16 (an ``ml_dtypes`` type numpy does not count as floating).

    ``dtype``: a numpy dtype or anything ``np.dtype`` accepts -> bool.

    Example:
        >>> import numpy as np
        >>> from vanilla_transformer.weight_files import is_float_dtype
        >>> is_float_dtype(np.float16), is_float_dtype("float32"), is_float_dtype(np.int64)
        (True, True, False)
        >>> import ml_dtypes
        >>> is_float_dtype(ml_dtypes.bfloat16)
        True
    """
    return np.issubdtype(dtype, np.floating) or "float" in np.dtype(dtype).name


def raise_if_mismatched(source: str, target: str, sections: list[tuple[str, list[str]]], missing: list[str],
                        unexpected: list[str], strict: bool, described_as: str | None = None) -> None:
    """Raise one :class:`CheckpointError` listing every problem of a checkpoint against ``target``.

    ``sections`` are (label, items) pairs that are always errors (shape or dtype mismatches); missing and
    unexpected tensors are errors only when ``strict``. Used by native loading and by conversion.

    Args:
        source: what was read (a directory or repo), for the message.
        target: what it was loaded into (a class name), named for unexpected tensors.
        sections: ``(label, problems)`` pairs; a non-empty list of problem strings is always an error.
        missing: names the model has and the checkpoint lacks.
        unexpected: names the checkpoint has and the model does not use.
        strict: whether missing or unexpected names are errors.
        described_as: how to name ``target`` in the first line (default ``target``).

    Returns:
        None when there is nothing to report; else raises :class:`CheckpointError`, one line per problem.

    Example:
        >>> from vanilla_transformer.weight_files import raise_if_mismatched
        >>> raise_if_mismatched("ckpt", "MyModel", [("shape mismatch", [])], missing=["b"], unexpected=[],
        ...                     strict=False)  # missing names are fine when not strict
        >>> raise_if_mismatched("ckpt", "MyModel", [("shape mismatch", ["a: (2,) vs (3,)"])], missing=["b"],
        ...                     unexpected=["c"], strict=True)
        Traceback (most recent call last):
        ...
        vanilla_transformer.hub_files.CheckpointError: ckpt does not match MyModel:
          shape mismatch: a: (2,) vs (3,)
          missing from the checkpoint: ['b']
          not used by MyModel: ['c']
    """
    problems = [f"{label}: " + "; ".join(items) for label, items in sections if items]
    if strict and missing:
        problems.append(f"missing from the checkpoint: {missing}")
    if strict and unexpected:
        problems.append(f"not used by {target}: {unexpected}")
    if problems:
        raise CheckpointError(f"{source} does not match {described_as or target}:\n  " + "\n  ".join(problems))


def assign_weights(model, tensors: dict[str, np.ndarray], strict: bool = True,
                   source: str = "checkpoint") -> dict[str, list[str]]:
    """Copy named tensors into the model; report missing / unexpected / mismatched names.

    With ``strict`` any discrepancy raises :class:`CheckpointError` listing them; otherwise matching
    weights load, shape/dtype mismatches still raise, and the report is returned (as transformers logs it).

    Args:
        model: a model of this package (built if needed); its variables are assigned in place.
        tensors: name -> numpy array (float dtypes only), e.g. from :func:`read_weights`.
        strict: raise on missing or unexpected names too.
        source: the checkpoint's name in error messages.

    Returns:
        ``{"missing_keys": [...], "unexpected_keys": [...]}``, sorted names.

    Example:
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.weight_files import assign_weights, state_dict
        >>> tensors = state_dict(TransformerForSeq2SeqLM(example_config))
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> assign_weights(model, tensors)
        {'missing_keys': [], 'unexpected_keys': []}
        >>> bool((model.named_variables()["shared.embeddings"].numpy() == tensors["shared.embeddings"]).all())
        True
        >>> del tensors["decoder.layers.0.feed_forward.fc2.bias"]
        >>> assign_weights(model, tensors, strict=False)
        {'missing_keys': ['decoder.layers.0.feed_forward.fc2.bias'], 'unexpected_keys': []}
    """
    variables = model.named_variables()
    missing = sorted(set(variables) - set(tensors))
    unexpected = sorted(set(tensors) - set(variables))
    mismatched = [f"{name}: checkpoint {tuple(tensors[name].shape)} vs model {tuple(variables[name].shape)}"
                  for name in sorted(set(variables) & set(tensors))
                  if tuple(tensors[name].shape) != tuple(variables[name].shape)]
    bad_dtype = [f"{name}: {tensors[name].dtype}" for name in sorted(set(variables) & set(tensors))
                 if not is_float_dtype(tensors[name].dtype)]
    target = type(model).__name__
    raise_if_mismatched(source, target, [("shape mismatch", mismatched), ("non-float tensors", bad_dtype)], missing,
                        unexpected, strict, described_as=f"{target}'s config")
    for name, variable in variables.items():
        if name in tensors:
            variable.assign(tensors[name].astype(variable.dtype))
    return {"missing_keys": missing, "unexpected_keys": unexpected}


# ------------------------------------------------------------------------------------------ loading
def load_config(name_or_path, hub_kwargs: dict | None = None) -> tuple[dict, str]:
    """``config.json`` of a checkpoint as a dict, and its local path.

    ``name_or_path``: a directory, a Hub repo id (with ``hub_kwargs`` of :class:`Checkpoint`) or a
    :class:`Checkpoint` -> ``(config dict, local path of config.json)``. Raises :class:`CheckpointError`
    when the file is missing or is not a JSON object.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer.weight_files import load_config
        >>> folder = tempfile.mkdtemp()
        >>> example_config.save_pretrained(folder)
        >>> raw, path = load_config(folder)
        >>> raw["model_type"], raw["d_model"], path.endswith("config.json")
        ('vanilla_transformer', 8, True)
    """
    checkpoint = Checkpoint.of(name_or_path, hub_kwargs)
    return checkpoint.fetch_json(CONFIG_NAME)


def finish_loading(model, checkpoint: Checkpoint, loading_info: dict[str, list[str]],
                   default_generation_config=None):
    """The end of every load: report missing / unexpected weights (once, as transformers logs them), read
    ``generation_config.json`` (else keep ``default_generation_config``, else the model's own) and record
    where the model came from (``model.name_or_path``, ``model.commit_hash``, ``model.loading_info``).

    Args:
        model: the model just filled by :func:`assign_weights`.
        checkpoint: the :class:`Checkpoint` it was read from.
        loading_info: the report of :func:`assign_weights`.
        default_generation_config: a ``transformers.GenerationConfig`` used when the checkpoint has none.

    Returns:
        ``model`` itself.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub_files import Checkpoint
        >>> from vanilla_transformer.weight_files import finish_loading
        >>> folder = str(TransformerForSeq2SeqLM(example_config).save_pretrained(tempfile.mkdtemp()))
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> report = {"missing_keys": [], "unexpected_keys": []}
        >>> finish_loading(model, Checkpoint(folder), report) is model
        True
        >>> model.name_or_path == folder, model.loading_info, model.commit_hash
        (True, {'missing_keys': [], 'unexpected_keys': []}, None)
    """
    target = type(model).__name__
    if loading_info.get("missing_keys"):
        logger.warning("Some weights of %s were not initialized from the checkpoint at %s and are newly "
                       "initialized: %s", target, checkpoint.describe(), loading_info["missing_keys"])
    if loading_info.get("unexpected_keys"):
        logger.warning("Some weights of the checkpoint at %s were not used when initializing %s: %s",
                       checkpoint.describe(), target, loading_info["unexpected_keys"])
    generation_config = read_generation_config(checkpoint)
    if generation_config is not None or default_generation_config is not None:
        model.generation_config = default_generation_config if generation_config is None else generation_config
    model.record_origin(checkpoint.name, checkpoint.commit_hash, loading_info)
    return model


def read_generation_config(checkpoint: Checkpoint):
    """The ``transformers.GenerationConfig`` of the checkpoint's ``generation_config.json``; None without one;
    :class:`CheckpointError` naming the file when it is invalid.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer.hub_files import Checkpoint
        >>> from vanilla_transformer.weight_files import read_generation_config
        >>> read_generation_config(Checkpoint(tempfile.mkdtemp())) is None
        True
    """
    path = checkpoint.fetch(GENERATION_CONFIG_NAME)
    if path is None:
        return None
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(os.path.dirname(path))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{GENERATION_CONFIG_NAME} of {checkpoint.describe()} is invalid: {err}") from None
