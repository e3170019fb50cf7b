"""The Hub methods of the model classes: ``save_pretrained``, ``from_pretrained``, ``push_to_hub`` and the
adapter methods, as one mixin (:class:`HubMixin`) whose methods call the functions of :mod:`.hub`,
:mod:`.adapter_files` and :mod:`.hub_push` with the model (or class) as first argument.
"""

from __future__ import annotations

from pathlib import Path

from .adapter_files import load_adapter, save_adapter
from .hub import from_pretrained, save_pretrained
from .hub_push import push_to_hub


class HubMixin:
    """``save_pretrained``, ``from_pretrained``, ``save_adapter``, ``load_adapter`` and ``push_to_hub`` for the
    model classes.

    The methods call the functions of the same names (:mod:`.hub`, :mod:`.adapter_files`, :mod:`.hub_push`)
    with the model (or class) as first argument; see those for the arguments.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub_mixin import HubMixin
        >>> issubclass(TransformerForSeq2SeqLM, HubMixin)
        True
        >>> folder = TransformerForSeq2SeqLM(example_config).save_pretrained(tempfile.mkdtemp())
        >>> model = TransformerForSeq2SeqLM.from_pretrained(folder)
        >>> model.name_or_path == str(folder), model.num_parameters() > 0
        (True, True)
        >>> model.push_to_hub("user/tiny-model")  # doctest: +SKIP
    """

    def save_pretrained(self, save_directory, tokenizer=None, **kwargs) -> Path:
        """Write the Hugging Face layout: config.json, model.safetensors, generation_config.json, README.md
        (and the tokenizer when given). See :func:`vanilla_transformer.hub.save_pretrained`."""
        return save_pretrained(self, save_directory, tokenizer=tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a model saved by :meth:`save_pretrained` (or a transformers checkpoint) from a directory or a
        Hub repo id. See :func:`vanilla_transformer.hub.from_pretrained`."""
        return from_pretrained(cls, pretrained_model_name_or_path, **kwargs)

    def save_adapter(self, save_directory, tokenizer=None, **kwargs) -> Path:
        """Write the LoRA adapters in PEFT's format. See
        :func:`vanilla_transformer.adapter_files.save_adapter`."""
        return save_adapter(self, save_directory, tokenizer=tokenizer, **kwargs)

    def load_adapter(self, name_or_path, **kwargs):
        """Put a PEFT LoRA adapter on this model. See :func:`vanilla_transformer.adapter_files.load_adapter`."""
        return load_adapter(self, name_or_path, **kwargs)

    def push_to_hub(self, repo_id, **kwargs):
        """Upload everything :meth:`save_pretrained` writes to the Hub in one commit. See
        :func:`vanilla_transformer.hub_push.push_to_hub`."""
        return push_to_hub(self, repo_id, **kwargs)
