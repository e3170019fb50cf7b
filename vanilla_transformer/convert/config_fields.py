"""Config fields across the conversion: the error that names a field the other side cannot represent, and the
checks and value translations the converters' config mappings share."""

from __future__ import annotations

from ..hub_files import CheckpointError


class UnsupportedConfigError(CheckpointError):
    """A config (ours or a checkpoint's) that the other side cannot represent exactly; names the field.

    A :class:`~vanilla_transformer.hub_files.CheckpointError`, hence a ``ValueError``; its message reads
    ``"<field>=<value>: <reason>"`` (see :func:`unsupported`).

    Example:
        >>> from vanilla_transformer.hub_files import CheckpointError
        >>> from vanilla_transformer.convert.config_fields import UnsupportedConfigError
        >>> issubclass(UnsupportedConfigError, CheckpointError), issubclass(UnsupportedConfigError, ValueError)
        (True, True)
    """


def unsupported(field_name: str, value, reason: str) -> UnsupportedConfigError:
    """The error (returned, not raised) for a config field whose value the other side cannot represent.

    Args:
        field_name: the config field, e.g. ``"norm_first"`` (or a description such as ``"model class"``).
        value: its offending value, shown with ``repr``.
        reason: why the other side cannot represent it.

    Returns:
        An :class:`UnsupportedConfigError` with the message ``"<field_name>=<value!r>: <reason>"``.

    Example:
        >>> from vanilla_transformer.convert.config_fields import unsupported
        >>> error = unsupported("norm_first", True, "BERT is post-LN only")
        >>> type(error).__name__, str(error)
        ('UnsupportedConfigError', 'norm_first=True: BERT is post-LN only')
    """
    return UnsupportedConfigError(f"{field_name}={value!r}: {reason}")


def plain_token_id(value):
    """A special-token id as transformers' configs store it: None, an int, or a plain list of ints (ours may
    be a tuple or a Keras-tracked list).

    Args:
        value: None, an int, or a list/tuple of ints.

    Returns:
        ``value`` unchanged unless it is a list or tuple, which becomes a plain ``list`` of ``int``.

    Example:
        >>> from vanilla_transformer.convert.config_fields import plain_token_id
        >>> plain_token_id((2, 3)), plain_token_id(2), plain_token_id(None)
        ([2, 3], 2, None)
    """
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_choice(field_name: str, value, table: dict, target: str):
    """Translate a config value through ``table``, raising when the other side has no counterpart.

    Args:
        field_name: the config field, for the error message (e.g. ``"activation"``).
        value: its value on this side.
        table: values on this side -> the other side's values.
        target: how the error message names the other side (e.g. ``"GPT2LMHeadModel"``).

    Returns:
        ``table[value]``.

    Raises:
        UnsupportedConfigError: ``value`` is not a key of ``table`` (the message lists the keys).

    Example:
        >>> from vanilla_transformer.convert.config_fields import check_choice
        >>> check_choice("activation", "gelu_new", {"gelu_new": "gelu", "relu": "relu"}, "OpenAIGPTLMHeadModel")
        'gelu'
        >>> check_choice("activation", "tanh", {"gelu_new": "gelu", "relu": "relu"}, "OpenAIGPTLMHeadModel")
        Traceback (most recent call last):
        ...
        vanilla_transformer.convert.config_fields.UnsupportedConfigError: activation='tanh': OpenAIGPTLMHeadModel supports
        ['gelu_new', 'relu']
    """
    if value not in table:
        raise unsupported(field_name, value, f"{target} supports {sorted(table)}")
    return table[value]


def require(condition: bool, field_name: str, value, reason: str) -> None:
    """Raise :func:`unsupported` ``(field_name, value, reason)`` unless ``condition`` holds.

    Args:
        condition: what the other side needs to be true.
        field_name: the config field checked, for the error message.
        value: its value, for the error message.
        reason: why the other side needs ``condition``.

    Returns:
        None.

    Raises:
        UnsupportedConfigError: ``condition`` is false.

    Example:
        >>> from vanilla_transformer.convert.config_fields import require
        >>> require(True, "norm_first", False, "BERT is post-LN only")
        >>> require(False, "norm_first", True, "BERT is post-LN only")
        Traceback (most recent call last):
        ...
        vanilla_transformer.convert.config_fields.UnsupportedConfigError: norm_first=True: BERT is post-LN only
    """
    if not condition:
        raise unsupported(field_name, value, reason)
