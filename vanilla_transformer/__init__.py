"""vanilla_transformer: the Transformer of "Attention Is All You Need" as Keras 3 models for the Hugging Face
ecosystem (``from_pretrained``, ``save_pretrained``, ``push_to_hub``, ``GenerationConfig``, ``tokenizers``).

>>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
>>> model = TransformerForSeq2SeqLM(TransformerConfig.from_preset("transformer-base"))  # doctest: +SKIP
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from .hub_files import CheckpointError  # noqa: E402
from .configuration import PRESETS, TransformerConfig  # noqa: E402
from .convert import UnsupportedConfigError, export_to_transformers  # noqa: E402
from .hub import AutoModel, load_tokenizer  # noqa: E402
from .modeling import (  # noqa: E402
    TransformerEncoderModel,
    TransformerForCausalLM,
    TransformerForMaskedLM,
    TransformerForSeq2SeqLM,
    TransformerForSequenceClassification,
    TransformerPreTrainedModel,
)
from .tokenization import train_bpe_tokenizer  # noqa: E402
from .version import __version__  # noqa: E402


__all__ = [
    "AutoModel",
    "CheckpointError",
    "PRESETS",
    "TransformerConfig",
    "TransformerEncoderModel",
    "TransformerForCausalLM",
    "TransformerForMaskedLM",
    "TransformerForSeq2SeqLM",
    "TransformerForSequenceClassification",
    "TransformerPreTrainedModel",
    "UnsupportedConfigError",
    "export_to_transformers",
    "load_tokenizer",
    "train_bpe_tokenizer",
]
