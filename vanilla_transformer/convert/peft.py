"""LoRA adapters in PEFT's format, both ways: what ``peft`` writes for the transformers class we export to.

An adapter is ``adapter_config.json`` (PEFT's ``LoraConfig``) + ``adapter_model.safetensors`` holding, for each
adapted transformers module ``M`` (named as in ``MarianMTModel``, ``Bert*``, ``OpenAIGPTLMHeadModel``,
``GPT2LMHeadModel``):

- ``base_model.model.M.lora_A.weight`` ``(r, in)`` and ``...lora_B.weight`` ``(out, r)`` (``nn.Linear`` and
  GPT's ``Conv1D`` alike), the update being ``(lora_alpha / r) B A``;
- ``base_model.model.M.lora_embedding_A`` ``(r, vocab)`` and ``...lora_embedding_B`` ``(d_model, r)`` for an
  embedding;
- the full weights of ``modules_to_save`` (the classifier) under their transformers names.

Module names come from the weight map that converts checkpoints (:func:`vanilla_transformer.convert.weight_map`):
the module of our ``...q_proj.kernel`` is the transformers tensor it maps to, less ``.weight``. Layouts follow
the same re-expressions as a checkpoint export: GPT's fused ``c_attn`` takes our query, key and value adapters
as one of rank r_q + r_k + r_v (block-diagonal B, ``rank_pattern`` / ``alpha_pattern`` keep the scale), and an
interleaved-sinusoid model's adapters are permuted into Marian's [sin | cos] basis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..hub_files import CheckpointError
from ..lora import TARGET_NAMES, LoraConfig, adapter_sites, enable_adapters, target_of
from . import marian, weight_map
from .common import WeightMap
from .config_fields import unsupported

PREFIX = "base_model.model."
TASK_TYPES = {"TransformerForSeq2SeqLM": "SEQ_2_SEQ_LM", "TransformerForCausalLM": "CAUSAL_LM",
              "TransformerForSequenceClassification": "SEQ_CLS", "TransformerEncoderModel": "FEATURE_EXTRACTION"}


@dataclass(frozen=True)
class PeftSite:
    """Where one of our adapter sites lives in the transformers model.

    Attributes:
        module: the transformers module's full name (``"model.encoder.layers.0.self_attn.q_proj"``).
        part: which slice of a fused module's output this site is (0 unless ``parts`` > 1).
        parts: how many of our layers share the module (3 for GPT's ``c_attn``: query, key, value).
        embedding: whether the module is an embedding (``lora_embedding_A/B``).

    Example:
        >>> from vanilla_transformer.convert.peft import PeftSite
        >>> site = PeftSite("transformer.h.0.attn.c_attn", part=1, parts=3)  # the key slice of GPT-2's c_attn
        >>> site.module, site.part, site.embedding
        ('transformer.h.0.attn.c_attn', 1, False)
    """

    module: str
    part: int = 0
    parts: int = 1
    embedding: bool = False


def peft_sites(model) -> dict[str, PeftSite]:
    """Our adapter sites (:func:`~vanilla_transformer.lora.adapter_sites`) -> their transformers modules.

    Args:
        model: one of our models with a transformers counterpart.

    Returns:
        ``{site path: PeftSite}`` for every Dense site and the token embedding.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.convert.peft import peft_sites
        >>> config = TransformerConfig(architecture="decoder", vocab_size=20, d_model=8, num_heads=2, d_ff=16,
        ...                            num_encoder_layers=1, num_decoder_layers=1, max_position_embeddings=32,
        ...                            norm_first=True, final_layer_norm=True, position_embedding="learned")
        >>> sites = peft_sites(TransformerForCausalLM(config))
        >>> sites["decoder.layers.0.self_attn.v_proj"]
        PeftSite(module='transformer.h.0.attn.c_attn', part=2, parts=3, embedding=False)
        >>> sites["decoder.layers.0.feed_forward.fc2"].module, sites["shared"].module
        ('transformer.h.0.mlp.c_proj', 'transformer.wte')
    """
    weights = weight_map(model)
    sites = {}
    for entry in weights.entries:
        if not entry.source.endswith(".weight"):
            continue
        module = weights.external(entry.source[: -len(".weight")])
        if entry.ours == ("shared.embeddings",):
            sites["shared"] = PeftSite(module, embedding=True)
            continue
        for part, name in enumerate(entry.ours):
            if name.endswith(".kernel"):
                sites[name[: -len(".kernel")]] = PeftSite(module, part, len(entry.ours))
    return {path: sites[path] for path in adapter_sites(model) if path in sites}


def _check_embedding_exportable(model) -> float:
    """The factor the exported embedding table carries (``sqrt(d_model)`` when a BERT/GPT export folds the
    scale in); raises where PEFT's embedding adapter cannot mean what ours does."""
    config = model.config
    if type(model).__name__ == "TransformerForSeq2SeqLM":
        raise unsupported("target_modules", "embeddings", "MarianMTModel looks tokens up in encoder.embed_tokens and "
                          "decoder.embed_tokens, two PEFT modules for our one shared table")
    return float(np.sqrt(config.d_model)) if config.scale_embedding else 1.0


def _factors(model, path: str, layer) -> tuple[np.ndarray, np.ndarray]:
    """A site's ``(A (in, r), B (r, out))`` in the transformers basis (Marian's permutation applied)."""
    if path == "shared":
        a, b = (np.asarray(v.numpy(), np.float32) for v in (layer.lora_embeddings_a, layer.lora_embeddings_b))
        kernel = "shared.embeddings"
        b = b * np.float32(_check_embedding_exportable(model))
    else:
        a, b = (np.asarray(v.numpy(), np.float32) for v in (layer.lora_kernel_a, layer.lora_kernel_b))
        kernel = f"{path}.kernel"
    perm = _permutation(model)
    if perm is not None:
        reads, writes = marian.residual_axes(kernel)
        a = a[perm] if reads and path != "shared" else a
        b = b[:, perm] if writes else b
    return a, b


def _permutation(model):
    return marian.residual_permutation(model.config) if type(model).__name__ == "TransformerForSeq2SeqLM" else None


def _module_tensors(group: list, sites: dict) -> tuple[dict[str, np.ndarray], int, float]:
    """PEFT's tensors of one module from its adapted sites ``[(path, layer, A, B)]``, and its rank and alpha."""
    module = sites[group[0][0]].module
    if sites[group[0][0]].embedding:
        _, layer, a, b = group[0]
        return ({f"{PREFIX}{module}.lora_embedding_A": a.T, f"{PREFIX}{module}.lora_embedding_B": b.T},
                layer.lora_rank, layer.lora_alpha)
    parts = sites[group[0][0]].parts
    if parts == 1:
        _, layer, a, b = group[0]
        return ({f"{PREFIX}{module}.lora_A.weight": np.ascontiguousarray(a.T),
                 f"{PREFIX}{module}.lora_B.weight": np.ascontiguousarray(b.T)}, layer.lora_rank, layer.lora_alpha)
    rank = sum(layer.lora_rank for _, layer, _, _ in group)
    width = group[0][3].shape[1]
    lora_a = np.concatenate([a for _, _, a, _ in group], axis=1)  # (in, rank)
    lora_b = np.zeros((rank, width * parts), np.float32)
    row = 0
    for path, layer, _, b in group:  # block-diagonal: each site's rows write its own slice of the output
        # each block carries its own scale relative to the module's common scale alpha / rank
        part = sites[path].part
        lora_b[row: row + layer.lora_rank, part * width: (part + 1) * width] = b * np.float32(layer.lora_scale)
        row += layer.lora_rank
    return {f"{PREFIX}{module}.lora_A.weight": np.ascontiguousarray(lora_a.T),
            f"{PREFIX}{module}.lora_B.weight": np.ascontiguousarray(lora_b.T)}, rank, float(rank)


def to_peft(model, base_model_name_or_path: str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """``(adapter_config, tensors)`` of ``model``'s LoRA adapters in PEFT's format (see the module docstring).

    Args:
        model: one of our models with adapters (``model.enable_lora``), of a class with a transformers
            counterpart.
        base_model_name_or_path: recorded in the config; default ``model.lora_config.base_model_name_or_path``.

    Returns:
        ``adapter_config`` (a dict of PEFT ``LoraConfig`` fields) and float32 tensors by PEFT name.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.convert.peft import to_peft
        >>> config = TransformerConfig(**example_sizes)
        >>> model = TransformerForSeq2SeqLM(config)
        >>> _ = model.enable_lora(2, lora_alpha=4, target_modules="q", verbose=False)
        >>> adapter_config, tensors = to_peft(model, "user/base")
        >>> adapter_config["r"], adapter_config["lora_alpha"], adapter_config["target_modules"]
        (2, 4.0, ['q_proj'])
        >>> tensors["base_model.model.model.encoder.layers.0.self_attn.q_proj.lora_B.weight"].shape  # (out, r)
        (8, 2)
    """
    lora_config = getattr(model, "lora_config", None)
    if lora_config is None:
        raise ValueError(f"{type(model).__name__} has no LoRA adapters (call enable_lora first)")
    sites = peft_sites(model)
    groups: dict[str, list] = {}
    for path, layer in adapter_sites(model).items():
        if layer.lora_enabled:
            if path not in sites:
                raise unsupported("target_modules", target_of(path), f"{path} has no transformers module")
            groups.setdefault(sites[path].module, []).append((path, layer, *_factors(model, path, layer)))
    tensors, rank_pattern, alpha_pattern = {}, {}, {}
    for module, group in groups.items():
        module_tensors, rank, alpha = _module_tensors(group, sites)  # fused: scales folded into B, alpha = rank
        tensors.update(module_tensors)
        if rank != lora_config.r or alpha != lora_config.lora_alpha:
            rank_pattern[module], alpha_pattern[module] = rank, alpha
    tensors.update(_saved_module_tensors(model, lora_config))
    tensors = {name: np.ascontiguousarray(tensor, np.float32) for name, tensor in tensors.items()}  # safetensors
    return _adapter_config(model, lora_config, groups, sites, rank_pattern, alpha_pattern,
                           base_model_name_or_path), tensors


def _saved_module_tensors(model, lora_config) -> dict[str, np.ndarray]:
    saved = tuple(f"{name}." for name in lora_config.modules_to_save)
    if not saved:
        return {}
    weights = weight_map(model)
    entries = [entry for entry in weights.entries if all(name.startswith(saved) for name in entry.ours)]
    state = {name: np.asarray(v.numpy(), np.float32) for name, v in model.named_variables().items()
             if name.startswith(saved)}
    subset = WeightMap(entries, prefix=weights.prefix, top_level=weights.top_level)
    return {PREFIX + name: tensor for name, tensor in subset.to_source(state).items()}


def _adapter_config(model, lora_config, groups, sites, rank_pattern, alpha_pattern, base) -> dict:
    targeted = set(groups)
    others = {site.module for site in sites.values()} - targeted
    is_gpt = type(model).__name__ == "TransformerForCausalLM"
    return {
        "peft_type": "LORA", "task_type": TASK_TYPES.get(type(model).__name__),
        "base_model_name_or_path": base if base is not None else lora_config.base_model_name_or_path,
        "r": lora_config.r, "lora_alpha": lora_config.lora_alpha, "lora_dropout": lora_config.lora_dropout,
        "target_modules": sorted({_shortest_suffix(module, others) for module in targeted}),
        "modules_to_save": list(lora_config.modules_to_save) or None, "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern, "bias": "none", "fan_in_fan_out": is_gpt, "use_rslora": False,
        "use_dora": False, "init_lora_weights": True, "inference_mode": True, "layers_to_transform": None,
        "layers_pattern": None, "revision": None,
    }


def _shortest_suffix(module: str, others: set[str]) -> str:
    """The shortest dotted suffix of ``module`` that no other module ends with (PEFT matches by suffix)."""
    parts = module.split(".")
    for k in range(1, len(parts) + 1):
        suffix = ".".join(parts[-k:])
        if not any(other == suffix or other.endswith("." + suffix) for other in others):
            return suffix
    return module


# ------------------------------------------------------------------------------------------ import
def _pattern_value(patterns: dict, module: str, default):
    """PEFT's ``rank_pattern`` / ``alpha_pattern`` lookup: the first key matching the module name's end."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _targets_module(target_modules, module: str) -> bool:
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, module) is not None
    return any(module == name or module.endswith("." + name) for name in target_modules or ())


def check_adapter_config(adapter_config: dict, source: str) -> None:
    """Refuse adapter settings whose update we do not compute (DoRA, rsLoRA, trained biases, other types).

    Example:
        >>> from vanilla_transformer.convert.peft import check_adapter_config
        >>> check_adapter_config({"peft_type": "LORA", "r": 8, "use_dora": True}, "adapter")
        Traceback (most recent call last):
        ...
        vanilla_transformer.hub_files.CheckpointError: adapter: use_dora=True is not supported (plain LoRA only)
    """
    if adapter_config.get("peft_type") != "LORA":
        raise CheckpointError(f"{source}: peft_type={adapter_config.get('peft_type')!r} is not a LoRA adapter")
    for key, plain in (("use_dora", False), ("use_rslora", False), ("bias", "none"), ("lora_bias", False)):
        if adapter_config.get(key, plain) not in (plain, None):
            raise CheckpointError(f"{source}: {key}={adapter_config[key]!r} is not supported (plain LoRA only)")
    if not isinstance(adapter_config.get("r"), int) or adapter_config["r"] < 1:
        raise CheckpointError(f"{source}: r={adapter_config.get('r')!r} is not a positive rank")


def _split_keys(tensors: dict, source: str) -> tuple[dict, dict]:
    """``({module: {"A": tensor, "B": tensor}}, {other name: tensor})`` of an adapter's tensors."""
    adapters, others = {}, {}
    pattern = re.compile(r"(.+)\.(lora_A|lora_B)\.weight|(.+)\.(lora_embedding_A|lora_embedding_B)")
    for key, tensor in tensors.items():
        if not key.startswith(PREFIX):
            raise CheckpointError(f"{source}: tensor {key!r} does not start with {PREFIX!r}; not a PEFT adapter")
        name = key[len(PREFIX):]
        found = pattern.fullmatch(name)
        if found is None:
            others[name] = tensor
            continue
        module, kind = (found.group(1), found.group(2)) if found.group(1) else (found.group(3), found.group(4))
        adapters.setdefault(module, {})[kind[-1]] = np.asarray(tensor, np.float32)
    incomplete = sorted(module for module, pair in adapters.items() if len(pair) != 2)
    if incomplete:
        raise CheckpointError(f"{source}: modules {incomplete} have lora_A without lora_B or the reverse")
    return adapters, others


def apply_peft_adapter(model, adapter_config: dict, tensors: dict[str, np.ndarray], source: str) -> LoraConfig:
    """Put a PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``) on ``model``.

    Everything is checked before the model changes: the settings (:func:`check_adapter_config`), that every
    module the adapter names exists here with the adapter's rank and the model's widths, that every module its
    ``target_modules`` selects has weights, and that ``modules_to_save`` tensors fit.

    Args:
        model: one of our models without adapters (the base the adapter was trained on).
        adapter_config: the parsed ``adapter_config.json``.
        tensors: the adapter's tensors by PEFT name.
        source: how error messages name the adapter.

    Returns:
        The model's new :class:`~vanilla_transformer.lora.LoraConfig` (``model.lora_config``).

    Raises:
        CheckpointError: naming the problem (another base model, wrong rank, a missing target, ...).

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.convert.peft import apply_peft_adapter, to_peft
        >>> config = TransformerConfig(**example_sizes)
        >>> trained = TransformerForSeq2SeqLM(config)
        >>> _ = trained.enable_lora(2, target_modules="q,v", verbose=False)
        >>> adapter_config, tensors = to_peft(trained)
        >>> base = TransformerForSeq2SeqLM(config)
        >>> apply_peft_adapter(base, adapter_config, tensors, "adapter").target_modules
        ('q_proj', 'v_proj')
        >>> adapter_config["r"] = 4
        >>> apply_peft_adapter(TransformerForSeq2SeqLM(config), adapter_config, tensors, "adapter")
        Traceback (most recent call last):
        ...
        vanilla_transformer.hub_files.CheckpointError: adapter: model.encoder.layers.0.self_attn.q_proj has rank 2 (lora_A (2, 8)) but adapter_config.json says r=4 (rank_pattern included); ...
    """
    check_adapter_config(adapter_config, source)
    sites = peft_sites(model.build_weights())
    by_module: dict[str, list] = {}
    for path, site in sites.items():
        by_module.setdefault(site.module, []).append((path, site))
    adapters, others = _split_keys(tensors, source)
    unknown = sorted(set(adapters) - set(by_module))
    if unknown:
        raise CheckpointError(f"{source}: adapts modules {unknown[:3]}{' ...' if len(unknown) > 3 else ''} that "
                              f"{type(model).__name__} does not have; is it an adapter of another base model?")
    _check_targets(adapter_config, adapters, by_module, source)
    settings, arrays = {}, {}
    for module, pair in adapters.items():
        for path, (a, b, rank, alpha) in _site_factors(model, module, pair, by_module[module], adapter_config,
                                                       source).items():
            settings[path] = (rank, alpha)
            arrays[path] = (a, b)
    saved = _saved_module_arrays(model, others, source)
    enable_adapters(model, settings, float(adapter_config.get("lora_dropout") or 0.0))
    _assign(model, arrays, saved)
    return _record(model, adapter_config, settings, saved)


def _check_targets(adapter_config: dict, adapters: dict, by_module: dict, source: str) -> None:
    """Every module that ``target_modules`` selects must have weights (a missing target is a broken adapter)."""
    target_modules = adapter_config.get("target_modules")
    missing = sorted(module for module in by_module
                     if _targets_module(target_modules, module) and module not in adapters)
    if missing:
        raise CheckpointError(f"{source}: adapter_config.json targets {target_modules} but the weights of "
                              f"{missing[:3]}{' ...' if len(missing) > 3 else ''} are missing from the adapter")
    if not adapters:
        raise CheckpointError(f"{source}: the adapter holds no LoRA weights")


def _site_factors(model, module: str, pair: dict, members: list, adapter_config: dict, source: str) -> dict:
    """``{site path: (A (in, r), B (r, out), rank, alpha)}`` in our basis for one PEFT module."""
    rank = _pattern_value(adapter_config.get("rank_pattern"), module, adapter_config["r"])
    alpha = float(_pattern_value(adapter_config.get("alpha_pattern"), module, adapter_config.get("lora_alpha", 8)))
    lora_a, lora_b = pair["A"], pair["B"]
    if lora_a.shape[0] != rank or lora_b.shape[-1] != rank:
        raise CheckpointError(f"{source}: {module} has rank {lora_a.shape[0]} (lora_A {tuple(lora_a.shape)}) but "
                              f"adapter_config.json says r={rank} (rank_pattern included); the adapter files disagree")
    layers = adapter_sites(model)
    path, site = members[0]
    if site.embedding:
        scale = np.float32(_check_embedding_exportable(model))
        a, b = lora_a.T, lora_b.T / scale
        expected = ((layers[path].vocab_size, rank), (rank, layers[path].d_model))
        _check_shapes(module, (a.shape, b.shape), expected, source)
        return {path: _to_our_basis(model, path, a, b) + (rank, alpha)}
    width = layers[path].units
    _check_shapes(module, (lora_a.shape, lora_b.shape), ((rank, layers[path].kernel.shape[0]),
                                                        (width * site.parts, rank)), source)
    found = {}
    for path, site in members:
        part = lora_b[site.part * width: (site.part + 1) * width]  # (out, rank)
        used = np.ones(rank, bool) if site.parts == 1 or not lora_b.any() else np.any(part != 0, axis=0)
        if used.any():  # a fused module's slice only holds the rank rows that write it (exact: the rest are 0)
            kept = int(used.sum())
            a, b = _to_our_basis(model, path, lora_a[used].T, part[:, used].T)
            found[path] = (a, b, kept, alpha * kept / rank)
    return found


def _check_shapes(module: str, shapes: tuple, expected: tuple, source: str) -> None:
    if tuple(map(tuple, shapes)) != tuple(map(tuple, expected)):
        raise CheckpointError(f"{source}: {module}'s adapter has shapes {[tuple(s) for s in shapes]} where this "
                              f"model needs {[tuple(s) for s in expected]}; is it an adapter of another base model?")


def _to_our_basis(model, path: str, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undo the export's permutation of model dimensions (Marian with interleaved sinusoids)."""
    perm = _permutation(model)
    if perm is not None:
        inverse = np.argsort(perm)
        reads, writes = marian.residual_axes("shared.embeddings" if path == "shared" else f"{path}.kernel")
        a = a[inverse] if reads and path != "shared" else a
        b = b[:, inverse] if writes else b
    return np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)


def _saved_module_arrays(model, others: dict, source: str) -> dict[str, np.ndarray]:
    """``modules_to_save`` tensors (transformers names) -> our arrays; anything else is an error."""
    if not others:
        return {}
    weights = weight_map(model)
    shapes = {name: tuple(v.shape) for name, v in model.named_variables().items()}
    arrays, report = weights.to_ours(others, shapes, strict=False, source=source, target=type(model).__name__)
    if report["unexpected_keys"]:
        raise CheckpointError(f"{source}: tensors {report['unexpected_keys']} are neither LoRA weights nor weights "
                              f"of {type(model).__name__}")
    return arrays


def _assign(model, arrays: dict, saved: dict) -> None:
    layers = adapter_sites(model)
    for path, (a, b) in arrays.items():
        layer = layers[path]
        first, second = ((layer.lora_embeddings_a, layer.lora_embeddings_b) if path == "shared"
                         else (layer.lora_kernel_a, layer.lora_kernel_b))
        first.assign(a)
        second.assign(b)
    named = model.named_variables()
    for name, array in saved.items():
        named[name].assign(array.astype(named[name].dtype))
        named[name].trainable = True


def _record(model, adapter_config: dict, settings: dict, saved: dict) -> LoraConfig:
    targets = {target_of(path) for path in settings}
    ranks = {path: rank for path, (rank, _) in settings.items() if rank != adapter_config["r"]}
    model.lora_config = LoraConfig(
        r=adapter_config["r"], lora_alpha=float(adapter_config.get("lora_alpha", 8)),
        lora_dropout=float(adapter_config.get("lora_dropout") or 0.0),
        target_modules=tuple(name for name in TARGET_NAMES if name in targets),
        modules_to_save=tuple(sorted({name.split(".")[0] for name in saved})),
        base_model_name_or_path=adapter_config.get("base_model_name_or_path"), rank_pattern=ranks)
    return model.lora_config
