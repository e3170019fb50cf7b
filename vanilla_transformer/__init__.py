"""vanilla_transformer: the Transformer of "Attention Is All You Need" as Keras 3 models for the Hugging Face
ecosystem (``from_pretrained``, ``save_pretrained``, ``push_to_hub``, ``GenerationConfig``, ``tokenizers``).

>>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
>>> model = TransformerForSeq2SeqLM(TransformerConfig.from_preset("transformer-base"))  # doctest: +SKIP
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from .configuration import PRESETS, TransformerConfig  # noqa: E402
from .hub import AutoModel  # noqa: E402
from .modeling import (  # noqa: E402
    TransformerEncoderModel,
    TransformerForCausalLM,
    TransformerForMaskedLM,
    TransformerForSeq2SeqLM,
    TransformerForSequenceClassification,
    TransformerPreTrainedModel,
)

__version__ = "0.1.0"

__all__ = [
    "AutoModel",
    "PRESETS",
    "TransformerConfig",
    "TransformerEncoderModel",
    "TransformerForCausalLM",
    "TransformerForMaskedLM",
    "TransformerForSeq2SeqLM",
    "TransformerForSequenceClassification",
    "TransformerPreTrainedModel",
]
