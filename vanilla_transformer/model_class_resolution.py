"""Model class resolution: which class of this package a checkpoint is built as.

``from_pretrained`` on a concrete class builds that class; on :class:`~vanilla_transformer.hub.AutoModel` or the
common base class (:func:`resolves_architecture`) it builds the class named in the checkpoint's
``config.architectures``, found by name in Keras' serialization registry (:func:`registered_model_class`), so
that loading needs no import of the model classes. :func:`resolve_native_model_class` does this for
checkpoints of this package; transformers checkpoints map their class names in
:func:`vanilla_transformer.convert.resolve_model_class`.
"""

from __future__ import annotations

from .hub_files import CheckpointError


def registered_model_class(name: str | None):
    """The model class of this package called ``name`` (found in Keras' serialization registry), or None.

    >>> registered_model_class("TransformerForSeq2SeqLM").__name__
    'TransformerForSeq2SeqLM'
    >>> registered_model_class("MaskedAccuracy") is None  # registered too, but not a model
    True
    """
    import keras

    found = keras.saving.get_registered_object(f"vanilla_transformer>{name}") if name else None
    return found if isinstance(found, type) and issubclass(found, keras.Model) else None


def resolves_architecture(cls) -> bool:
    """Whether ``cls.from_pretrained`` picks the class from the checkpoint's ``architectures`` instead of
    building ``cls`` itself.

    A class opts in with its own class attribute ``resolves_architecture = True`` (:class:`AutoModel` and
    the common base class ``TransformerPreTrainedModel`` do). The attribute is **not inherited**: only
    ``cls.__dict__`` is read, so the concrete model classes, which subclass the base class, and any subclass
    of ``AutoModel`` load as themselves unless they set the attribute again.

    Args:
        cls: the class ``from_pretrained`` was called on.

    Returns:
        True when ``cls`` itself sets ``resolves_architecture`` to a true value; False otherwise.

    Example:
        >>> from vanilla_transformer import AutoModel, TransformerForSeq2SeqLM, TransformerPreTrainedModel
        >>> from vanilla_transformer.model_class_resolution import resolves_architecture
        >>> resolves_architecture(AutoModel), resolves_architecture(TransformerPreTrainedModel)
        (True, True)
        >>> TransformerForSeq2SeqLM.resolves_architecture  # inherited from the base class...
        True
        >>> resolves_architecture(TransformerForSeq2SeqLM)  # ...but not counted: it loads as itself
        False
    """
    return bool(cls.__dict__.get("resolves_architecture", False))


def resolve_native_model_class(cls, saved_class: str | None, raw: dict, source: str):
    """The class to build from a checkpoint of this package: ``cls`` itself, or, when ``cls`` resolves the
    architecture (:func:`resolves_architecture`: ``AutoModel`` and the base class), the one named in
    ``config.architectures``.

    Args:
        cls: the class ``from_pretrained`` was called on.
        saved_class: ``config.architectures[0]`` of the checkpoint (or None).
        raw: the checkpoint's config dict (for the error message).
        source: the checkpoint's name (for the error message).

    Returns:
        A model class; raises :class:`~vanilla_transformer.hub_files.CheckpointError` when ``cls`` resolves
        the architecture and ``saved_class`` names no model class of this package.

    Example:
        >>> from vanilla_transformer import AutoModel, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.model_class_resolution import resolve_native_model_class
        >>> resolve_native_model_class(AutoModel, "TransformerForCausalLM", {}, "dir").__name__
        'TransformerForCausalLM'
        >>> resolve_native_model_class(TransformerForSeq2SeqLM, "TransformerForCausalLM", {}, "dir").__name__
        'TransformerForSeq2SeqLM'
        >>> resolve_native_model_class(AutoModel, "BertModel", {"architectures": ["BertModel"]}, "dir")
        Traceback (most recent call last):
        ...
        vanilla_transformer.hub_files.CheckpointError: dir: config.architectures=['BertModel'] names no class ...
    """
    if not resolves_architecture(cls):
        return cls
    model_class = registered_model_class(saved_class)
    if model_class is None:
        raise CheckpointError(f"{source}: config.architectures={raw.get('architectures')} names no class of "
                              f"this package; load it with a concrete model class")
    return model_class
