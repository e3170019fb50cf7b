"""LoRA fine-tuning of a whole model: choose the adapted layers, freeze the rest, merge back.

:func:`enable_lora` puts a low-rank adapter (:mod:`vanilla_transformer.layers.lora`) on the chosen projections of
every attention and feed-forward block (and optionally the token embedding), freezes every other weight and
prints the trainable parameter count; :func:`merge_lora` folds the adapters into the weights, leaving a plain
model. The model classes expose both as methods (``model.enable_lora(...)``, ``model.merge_lora()``);
adapters are saved and loaded in PEFT's format by :mod:`vanilla_transformer.convert.peft`.

Targets (``target_modules``), by our layer names, with short aliases:

========================= =============================================================
``q_proj`` (``q``)        W^Q of every self- and cross-attention
``k_proj`` (``k``)        W^K
``v_proj`` (``v``)        W^V
``o_proj`` (``o``)        W^O
``fc1``, ``fc2`` (``ffn``) the feed-forward network's two layers
``embeddings``            the token embedding's lookup (not the tied output projection)
========================= =============================================================

The default is PEFT's for attention models: ``("q_proj", "v_proj")``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .layers.lora import check_lora_settings

#: every adaptable layer name, in the order sites are listed
TARGET_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "embeddings")
TARGET_ALIASES = {"q": ("q_proj",), "k": ("k_proj",), "v": ("v_proj",), "o": ("o_proj",), "ffn": ("fc1", "fc2"),
                  "all": TARGET_NAMES, **{name: (name,) for name in TARGET_NAMES}}
DEFAULT_TARGETS = ("q_proj", "v_proj")
#: classes whose tied table has no output projection to change (a merged embedding adapter is exact there)
UNTIED_HEADS = ("TransformerEncoderModel", "TransformerForSequenceClassification")
#: heads trained in full beside the adapters by default (PEFT's ``modules_to_save`` for sequence classification)
DEFAULT_MODULES_TO_SAVE = {"TransformerForSequenceClassification": ("classifier",)}


@dataclass
class LoraConfig:
    """A model's LoRA settings, named as in PEFT's ``LoraConfig``.

    Attributes:
        r: the rank of every adapter.
        lora_alpha: updates are scaled by ``lora_alpha / r``.
        lora_dropout: dropout on the adapters' inputs (Dense targets) during training.
        target_modules: the adapted layer names (a subset of :data:`TARGET_NAMES`).
        modules_to_save: heads trained in full and saved with the adapter (e.g. ``("classifier",)``).
        base_model_name_or_path: where the frozen base model comes from (a directory or Hub repo), or None.
        rank_pattern: ``{site path: rank}`` for the sites of an imported adapter whose rank differs from ``r``.

    Example:
        >>> from vanilla_transformer.lora import LoraConfig
        >>> LoraConfig(r=8, lora_alpha=16, target_modules=("q_proj", "v_proj")).scaling
        2.0
    """

    r: int
    lora_alpha: float
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    modules_to_save: tuple[str, ...] = ()
    base_model_name_or_path: str | None = None
    rank_pattern: dict = field(default_factory=dict)

    @property
    def scaling(self) -> float:
        """``lora_alpha / r``."""
        return self.lora_alpha / self.r

    def to_dict(self) -> dict:
        """The settings as a JSON-serialisable dict."""
        return {**asdict(self), "target_modules": list(self.target_modules),
                "modules_to_save": list(self.modules_to_save)}


def resolve_targets(target_modules) -> tuple[str, ...]:
    """Our layer names for ``target_modules`` (names or aliases, a list or a comma-separated string).

    Args:
        target_modules: e.g. ``["q", "v"]``, ``"q_proj,v_proj,ffn"``, ``"all"``; None: ``("q_proj", "v_proj")``.

    Returns:
        The names, in :data:`TARGET_NAMES` order, each once.

    Example:
        >>> from vanilla_transformer.lora import resolve_targets
        >>> resolve_targets("q,v,ffn"), resolve_targets(None)
        (('q_proj', 'v_proj', 'fc1', 'fc2'), ('q_proj', 'v_proj'))
        >>> resolve_targets(["query"])
        Traceback (most recent call last):
        ...
        ValueError: target_modules: 'query' is not one of ['all', 'embeddings', 'fc1', 'fc2', 'ffn', 'k', 'k_proj', 'o', 'o_proj', 'q', 'q_proj', 'v', 'v_proj']
    """
    if target_modules is None:
        return DEFAULT_TARGETS
    if isinstance(target_modules, str):
        target_modules = [name.strip() for name in target_modules.split(",") if name.strip()]
    chosen = set()
    for name in target_modules:
        if name not in TARGET_ALIASES:
            raise ValueError(f"target_modules: {name!r} is not one of {sorted(TARGET_ALIASES)}")
        chosen.update(TARGET_ALIASES[name])
    if not chosen:
        raise ValueError("target_modules is empty: name at least one layer to adapt")
    return tuple(name for name in TARGET_NAMES if name in chosen)


def adapter_sites(model) -> dict:
    """Every layer of ``model`` that can take an adapter, by weight-name prefix.

    Args:
        model: one of our models.

    Returns:
        ``{path: layer}``: ``"encoder.layers.0.self_attn.q_proj"`` -> its
        :class:`~vanilla_transformer.layers.lora.LoraDense`, ..., and ``"shared"`` -> the token embedding
        (target ``embeddings``). A path plus ``.kernel`` is the weight's name in ``model.safetensors``.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.lora import adapter_sites
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> list(adapter_sites(TransformerForCausalLM(config)))
        ['decoder.layers.0.self_attn.q_proj', 'decoder.layers.0.self_attn.k_proj',
         'decoder.layers.0.self_attn.v_proj', 'decoder.layers.0.self_attn.o_proj',
         'decoder.layers.0.feed_forward.fc1', 'decoder.layers.0.feed_forward.fc2', 'shared']
    """
    sites = {}
    for stack_name in ("encoder", "decoder"):
        stack = getattr(model, stack_name, None)
        for i, layer in enumerate(getattr(stack, "layers", None) or ()):
            for attention in ("self_attn", "cross_attn"):
                block = getattr(layer, attention, None)
                for projection in ("q_proj", "k_proj", "v_proj", "o_proj") if block is not None else ():
                    sites[f"{stack_name}.layers.{i}.{attention}.{projection}"] = getattr(block, projection)
            for projection in ("fc1", "fc2"):
                sites[f"{stack_name}.layers.{i}.feed_forward.{projection}"] = getattr(layer.feed_forward, projection)
    sites["shared"] = model.shared
    return sites


def target_of(path: str) -> str:
    """The target name of an adapter site (``"...self_attn.q_proj"`` -> ``"q_proj"``, ``"shared"`` ->
    ``"embeddings"``).

    Example:
        >>> from vanilla_transformer.lora import target_of
        >>> target_of("decoder.layers.1.cross_attn.v_proj"), target_of("shared")
        ('v_proj', 'embeddings')
    """
    return "embeddings" if path == "shared" else path.rsplit(".", 1)[-1]


def forget_compiled_programs(model) -> None:
    """Drop what was compiled against the model's previous weights: ``generate``'s decoding programs and the
    compiled train / test / predict steps (the optimizer was built for other trainable weights, so ``fit``
    needs a new ``compile()``).

    Args:
        model: one of our models.

    Returns:
        None.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.lora import forget_compiled_programs
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> model = TransformerForCausalLM(config)
        >>> _ = model.decoding_programs.get("a plan", lambda: "a compiled program")  # as generate() caches one
        >>> forget_compiled_programs(model)
        >>> len(model.decoding_programs)
        0
    """
    programs = getattr(model, "decoding_programs", None)
    if programs is not None:
        with programs.lock:
            programs.programs.clear()
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
    if getattr(model, "compiled", False):
        model.compiled = False  # fit / evaluate then ask for compile(), which builds a new optimizer


def enable_adapters(model, settings: dict, lora_dropout: float = 0.0) -> None:
    """Freeze ``model`` and put an adapter on each site of ``settings``.

    Args:
        model: one of our models without adapters.
        settings: ``{site path: (rank, lora_alpha)}`` (paths of :func:`adapter_sites`).
        lora_dropout: dropout on the Dense adapters' inputs.

    Returns:
        None; ``model.lora_frozen`` lists the weights frozen here (unfrozen again by :func:`merge_lora`).

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.lora import enable_adapters, parameter_counts
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> model = TransformerForCausalLM(config)
        >>> enable_adapters(model, {"decoder.layers.0.self_attn.q_proj": (2, 4.0)})  # one site, rank 2
        >>> parameter_counts(model)[0]  # 2 * (8 + 8)
        32
    """
    sites = adapter_sites(model.build_weights())
    unknown = sorted(set(settings) - set(sites))
    if unknown:
        raise ValueError(f"{type(model).__name__} has no layers {unknown} to adapt")
    if any(site.lora_enabled for site in sites.values()):
        raise ValueError(f"{type(model).__name__} already has LoRA adapters; merge_lora() them first")
    frozen = [name for name, variable in model.named_variables().items() if variable.trainable]
    for variable in model.weights:
        variable.trainable = False
    for path, (rank, alpha) in settings.items():
        dropout = 0.0 if path == "shared" else lora_dropout  # PEFT's embedding adapters take no dropout
        sites[path].enable_lora(rank, lora_alpha=alpha, lora_dropout=dropout)
    model.lora_frozen = tuple(frozen)
    forget_compiled_programs(model)


def enable_lora(model, rank: int, lora_alpha: float | None = None, lora_dropout: float = 0.0, target_modules=None,
                modules_to_save=None, verbose: bool = True) -> LoraConfig:
    """Put LoRA adapters on ``model``'s ``target_modules`` and freeze everything else.

    Only the adapters (and ``modules_to_save``) train; ``compile()`` the model afterwards. The trainable count
    is ``sum over adapted Dense layers of rank * (in + out)`` + ``rank * (vocab + d_model)`` for the embedding
    + the parameters of ``modules_to_save``.

    Args:
        model: one of our models (built here if needed), without adapters.
        rank: the adapters' rank r (PEFT's ``r``).
        lora_alpha: updates are scaled by ``lora_alpha / rank``; None: ``rank``.
        lora_dropout: dropout on the adapters' inputs during training (Dense targets; PEFT applies none to
            embeddings).
        target_modules: layer names or aliases (see the module docstring); None: ``("q_proj", "v_proj")``.
        modules_to_save: heads to train in full (attribute names, e.g. ``["classifier"]``); None: the classifier
            of ``TransformerForSequenceClassification``, nothing otherwise.
        verbose: print PEFT's line ``trainable params: ... || all params: ... || trainable%: ...``.

    Returns:
        The :class:`LoraConfig`, also kept as ``model.lora_config``.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        >>> config = TransformerConfig(**example_sizes)
        >>> model = TransformerForSeq2SeqLM(config)
        >>> lora_config = model.enable_lora(2, lora_alpha=4)  # q and v of 3 attention blocks: 6 * 2 * (8 + 8)
        trainable params: 192 || all params: 1,856 || trainable%: 10.3448
        >>> lora_config.target_modules, lora_config.scaling
        (('q_proj', 'v_proj'), 2.0)
    """
    alpha = check_lora_settings(rank, lora_alpha, lora_dropout)
    targets = resolve_targets(target_modules)
    saved = _modules_to_save(model, modules_to_save)
    settings = {path: (rank, alpha) for path in adapter_sites(model.build_weights()) if target_of(path) in targets}
    enable_adapters(model, settings, lora_dropout)
    for name in saved:
        for variable in getattr(model, name).weights:
            variable.trainable = True
    model.lora_config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=float(lora_dropout),
                                   target_modules=targets, modules_to_save=saved,
                                   base_model_name_or_path=getattr(model, "name_or_path", None))
    if verbose:
        print(trainable_parameters_line(model))
    return model.lora_config


def _modules_to_save(model, modules_to_save) -> tuple[str, ...]:
    if modules_to_save is None:
        return DEFAULT_MODULES_TO_SAVE.get(type(model).__name__, ())
    modules_to_save = tuple(modules_to_save)
    for name in modules_to_save:
        if not hasattr(getattr(model, name, None), "weights"):
            raise ValueError(f"modules_to_save: {type(model).__name__} has no layer {name!r}")
    return modules_to_save


def parameter_counts(model) -> tuple[int, int]:
    """``(trainable, all)`` parameter counts of ``model``, adapters included.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.lora import parameter_counts
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> parameter_counts(TransformerForCausalLM(config))
        (760, 760)
    """
    variables = model.build_weights().named_variables().values()
    sizes = [(int(np.prod(v.shape)), v.trainable) for v in variables]
    return sum(size for size, trainable in sizes if trainable), sum(size for size, _ in sizes)


def trainable_parameters_line(model) -> str:
    """PEFT's ``print_trainable_parameters`` line for ``model``.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.lora import trainable_parameters_line
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> trainable_parameters_line(TransformerForCausalLM(config))
        'trainable params: 760 || all params: 760 || trainable%: 100.0000'
    """
    trainable, total = parameter_counts(model)
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"


def lora_sites(model) -> dict:
    """The sites of :func:`adapter_sites` that hold an adapter now.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.lora import lora_sites
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> model = TransformerForCausalLM(config)
        >>> _ = model.enable_lora(2, target_modules="v", verbose=False)
        >>> list(lora_sites(model))
        ['decoder.layers.0.self_attn.v_proj']
    """
    return {path: layer for path, layer in adapter_sites(model).items() if layer.lora_enabled}


def merge_lora(model):
    """Fold every adapter into its weights and remove it: a plain model computing the same function.

    The weights frozen by :func:`enable_lora` train again, compiled programs are dropped (``generate``
    recompiles; ``fit`` needs a new ``compile()``) and ``model.lora_config`` becomes None.

    Args:
        model: one of our models, with adapters.

    Returns:
        ``model`` itself.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> model = TransformerForCausalLM(config)
        >>> _ = model.enable_lora(2, verbose=False)
        >>> model.merge_lora().lora_config, model.num_parameters()
        (None, 760)
    """
    sites = lora_sites(model)
    if not sites:
        raise ValueError(f"{type(model).__name__} has no LoRA adapters to merge")
    if "shared" in sites and model.config.tie_word_embeddings and type(model).__name__ not in UNTIED_HEADS:
        raise ValueError("merge_lora: the embedding adapter changes the lookup only, but the table is tied to the "
                         "output projection (tie_word_embeddings=True), which a merged table would change too; "
                         "keep the adapter (save_pretrained writes it) or target no embeddings")
    for layer in sites.values():
        layer.merge_lora()
    named = model.named_variables()
    for name in getattr(model, "lora_frozen", ()):
        named[name].trainable = True
    model.lora_frozen = ()
    model.lora_config = None
    forget_compiled_programs(model)
    return model


def lora_weights(model) -> dict[str, np.ndarray]:
    """The adapter weights (and ``modules_to_save`` weights) by name, as float32 numpy arrays.

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.lora import lora_weights
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> model = TransformerForCausalLM(config)
        >>> _ = model.enable_lora(2, target_modules="q", verbose=False)
        >>> {name: array.shape for name, array in lora_weights(model).items()}
        {'decoder.layers.0.self_attn.q_proj.lora_kernel_a': (8, 2), 'decoder.layers.0.self_attn.q_proj.lora_kernel_b': (2, 8)}
    """
    config = getattr(model, "lora_config", None)
    saved = tuple(f"{name}." for name in (config.modules_to_save if config else ()))
    return {name: np.asarray(variable.numpy(), np.float32) for name, variable in model.named_variables().items()
            if ".lora_" in name or name.startswith(saved)}
