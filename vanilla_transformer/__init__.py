"""vanilla_transformer: the Transformer of "Attention Is All You Need" as Keras 3 models for the Hugging Face
ecosystem (``from_pretrained``, ``save_pretrained``, ``push_to_hub``, ``GenerationConfig``, ``tokenizers``).

>>> from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
>>> model = TransformerForSeq2SeqLM(TransformerConfig.from_preset("transformer-base"))  # doctest: +SKIP

The examples in the docstrings run as tests, with ``np`` (numpy) and ``keras`` at hand and two names from the
repository's conftest.py: ``example_sizes``, the sizes of a tiny model, and ``example_config``, an encoder-decoder
of those sizes, ``TransformerConfig(**example_sizes)``:

>>> example_sizes
{'vocab_size': 20, 'd_model': 8, 'num_heads': 2, 'd_ff': 16, 'num_encoder_layers': 1, 'num_decoder_layers': 1,
 'max_position_embeddings': 32}
>>> example_config.architecture, example_config.d_model
('encoder-decoder', 8)
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
