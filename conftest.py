"""Doctests of the package run with ``numpy as np`` and ``keras`` at hand, seeded, on TensorFlow unless told
otherwise."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _doctest_environment(request, doctest_namespace):
    if isinstance(request.node, pytest.DoctestItem):
        doctest_namespace.update(np=np, keras=keras)
        keras.utils.set_random_seed(0)
