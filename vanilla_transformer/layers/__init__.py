"""The paper's building blocks, one section per module (all `keras.ops`, backend-portable).

- :mod:`.embeddings`: token embeddings shared with the output projection (3.4), positions (3.5)
- :mod:`.attention`: scaled dot-product and multi-head attention (3.2)
- :mod:`.feed_forward`: position-wise feed-forward network (3.3)
- :mod:`.dropout`: dropout with a counter-based random generator (5.4; the generator, :func:`random_bits`, lives in
  :mod:`vanilla_transformer.padding_and_random`, shared with decoding)
- :mod:`.transformer`: encoder / decoder layers and stacks with residual + LayerNorm (3.1)
"""

from .attention import MultiHeadAttention, scaled_dot_product_attention
from ..padding_and_random import random_bits, random_uniform
from .dropout import Dropout
from .embeddings import (
    LearnedPositionEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    TransformerEmbedding,
    sinusoidal_table,
)
from .feed_forward import PositionwiseFeedForward
from .transformer import DecoderLayer, EncoderLayer, TransformerDecoder, TransformerEncoder

__all__ = [
    "DecoderLayer",
    "Dropout",
    "EncoderLayer",
    "LearnedPositionEmbedding",
    "MultiHeadAttention",
    "PositionwiseFeedForward",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "TransformerDecoder",
    "TransformerEmbedding",
    "TransformerEncoder",
    "random_bits",
    "random_uniform",
    "scaled_dot_product_attention",
    "sinusoidal_table",
]
