"""Doctests of the package run with ``numpy as np`` and ``keras`` at hand, seeded, on TensorFlow unless told
otherwise, and with the tiny model sizes that most examples use, so each example shows only its own point:

- ``example_sizes``: ``dict(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
  num_decoder_layers=1, max_position_embeddings=32)``; an example that needs another architecture or field
  writes ``TransformerConfig(**example_sizes, architecture="decoder")``;
- ``example_config``: ``TransformerConfig(**example_sizes)``, an encoder-decoder (a translator) of those sizes.

Every doctest gets its own ``example_config``, so what one example changes never reaches another. (The tests'
own ``tiny_config`` fixture, in tests/conftest.py, is a larger model for the test suite.)
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

EXAMPLE_SIZES = dict(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1, num_decoder_layers=1,
                  max_position_embeddings=32)


@pytest.fixture(autouse=True)
def _doctest_environment(request, doctest_namespace):
    if isinstance(request.node, pytest.DoctestItem):
        from vanilla_transformer import TransformerConfig

        doctest_namespace.update(np=np, keras=keras, example_sizes=dict(EXAMPLE_SIZES),
                                 example_config=TransformerConfig(**EXAMPLE_SIZES))
        keras.utils.set_random_seed(0)
