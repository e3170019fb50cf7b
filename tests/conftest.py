"""Shared fixtures: tiny configs and models (d_model 32, 1-2 layers) built once per session."""

import logging
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Under pytest-xdist each worker gets its share of the cores for TensorFlow's intra-op threads (inherited by the
# processes it starts): on 2 cores, two workers with 2 threads each oversubscribe the CPU, and a 4-file subset of
# the suite ran 8% faster with 1 (256 s against 281 s).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, share)))
# Child processes (the scripts the tests start) import the package from this checkout, whatever pip installed
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM  # noqa: E402

# Programs the tests start in subprocesses, not modules to import (pytest's --doctest-modules would run them)
collect_ignore_glob = ["scripts/*"]

TINY = dict(vocab_size=40, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=2, num_decoder_layers=2,
            dropout=0.0, max_position_embeddings=64)


@pytest.fixture()
def tensorflow_log():
    """The messages TensorFlow's Python logger (``logging.getLogger("tensorflow")``) emits during the test."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)

@pytest.fixture(scope="session")
def tiny_config():
    return TransformerConfig(**TINY)


@pytest.fixture(scope="session")
def tiny_seq2seq(tiny_config):
    """A randomly initialised encoder-decoder (dropout 0), shared by tests that only read it."""
    import keras

    keras.utils.set_random_seed(1234)
    return TransformerForSeq2SeqLM(tiny_config).build_weights()


@pytest.fixture(scope="session")
def write_number_words():
    """``write(directory, num_train, num_val, seed)``: number-words pairs as ``train.en`` / ``train.de`` /
    ``val.en`` / ``val.de`` files, the layout the example scripts read (numbers up to 999)."""
    from vanilla_transformer.number_words import make_splits

    def write(directory, num_train, num_val, seed):
        train, val = make_splits(num_train=num_train, num_test=num_val, max_number=999, seed=seed)
        for name, pairs in (("train", train), ("val", val)):
            (directory / f"{name}.en").write_text("\n".join(en for en, _ in pairs) + "\n")
            (directory / f"{name}.de").write_text("\n".join(de for _, de in pairs) + "\n")
        return directory

    return write


@pytest.fixture
def rng():
    return np.random.default_rng(0)


RUN_SLOW = os.environ.get("RUN_SLOW", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (end-to-end training runs, exports, multi-process runs, soaks) run only with
    ``RUN_SLOW=1``, as transformers' ``@slow`` tests do; CI sets it (.ci/run)."""
    if RUN_SLOW:
        return
    skip = pytest.mark.skip(reason="slow: run with RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
