"""Stable weight names: every variable of a layer or model keyed by its attribute path
(``encoder.layers.0.self_attn.q_proj.kernel``), the keys ``save_pretrained`` writes to safetensors and the
names the checkpoint converters map."""

from __future__ import annotations

import keras


def named_variables(layer: keras.layers.Layer, prefix: str = "") -> dict[str, keras.Variable]:
    """All weights of ``layer`` keyed by attribute path, e.g. ``decoder.layers.0.feed_forward.fc1.kernel``.

    The walk follows attribute assignment order, so a layer shared by several owners (the token
    embedding) is named by its first owner only; a layer's own weights are those of ``layer.weights`` that
    none of its sub-layers holds. Sub-layers in lists are numbered: ``layers.0``, ``layers.1``, ...

    Args:
        layer: a built Keras layer or model (weights not yet created are not listed).
        prefix: prepended to every name.

    Returns:
        A dict of name -> ``keras.Variable``, in walk order (each variable once).

    Example:
        >>> from vanilla_transformer import TransformerConfig, TransformerForCausalLM
        >>> from vanilla_transformer.weight_names import named_variables
        >>> config = TransformerConfig(**example_sizes, architecture="decoder")
        >>> model = TransformerForCausalLM(config).build_weights()
        >>> names = named_variables(model)
        >>> list(names)[:3]
        ['shared.embeddings', 'decoder.layers.0.self_attn.q_proj.kernel', 'decoder.layers.0.self_attn.q_proj.bias']
        >>> tuple(names["decoder.layers.0.feed_forward.fc1.kernel"].shape)
        (8, 16)
        >>> list(named_variables(model.decoder.layers[0].feed_forward, prefix="ff."))
        ['ff.fc1.kernel', 'ff.fc1.bias', 'ff.fc2.kernel', 'ff.fc2.bias']
    """
    names: dict[str, keras.Variable] = {}
    seen: set[int] = set()

    def visit(obj, path):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        children = list(_sublayers(obj))
        held_below = {id(weight) for _, child in children for weight in child.weights}
        for variable in obj.weights:
            if id(variable) not in held_below and id(variable) not in seen:
                seen.add(id(variable))
                names[f"{path}{variable.name}"] = variable
        for name, child in children:
            visit(child, f"{path}{name}.")

    visit(layer, prefix)
    return names


def _sublayers(layer: keras.layers.Layer):
    """``(name, sub-layer)`` pairs of the layers held in public attributes, in assignment order; layers in a
    list or tuple are named ``attribute.index``."""
    attributes = dict(vars(layer))
    if hasattr(layer, "named_children"):  # the torch backend: torch.nn.Module keeps sub-modules out of __dict__
        attributes.update((name, child) for name, child in layer.named_children() if name not in attributes)
    for attr, value in attributes.items():
        if attr.startswith("_"):
            continue
        if isinstance(value, keras.layers.Layer):
            yield attr, value
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(item, keras.layers.Layer) for item in value):
            for i, item in enumerate(value):
                yield f"{attr}.{i}", item
