"""Each private API of another library that vanilla_transformer.compat uses, checked against the installed
version: a change fails here, naming the entry and the version it was written against."""

from __future__ import annotations

import inspect
import json

import keras
import pytest
import transformers
from transformers import GenerationConfig, PretrainedConfig

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM, compat


def written_against(library: str) -> str:
    return f"(vanilla_transformer.compat was written against {library} {compat.WRITTEN_AGAINST[library]})"


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the hook is TensorFlow's trainer's")
def test_keras_trainer_calls_the_build_hook_with_iterator_and_data_batch():
    for name in ("_maybe_symbolic_build", "_symbolic_build"):
        assert hasattr(keras.Model, name), f"keras {keras.__version__} has no Trainer.{name} {written_against('keras')}"
        parameters = inspect.signature(getattr(keras.Model, name)).parameters
        assert "data_batch" in parameters, (f"keras {keras.__version__} changed Trainer.{name}{tuple(parameters)} "
                                            f"{written_against('keras')}")
    assert "iterator" in inspect.signature(keras.Model._maybe_symbolic_build).parameters


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the hook is TensorFlow's trainer's")
def test_the_build_hook_really_replaces_the_batch_keras_builds_from():
    seen = []

    class Probe(TransformerForSeq2SeqLM):
        def replaces_symbolic_build(self):
            return True

        def batch_for_symbolic_build(self, first_batch):
            seen.append(tuple(first_batch[0]["input_ids"].shape))
            return first_batch

    config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
                               num_decoder_layers=1)
    model = Probe(config)
    model.compile(jit_compile=False)
    ids = (keras.ops.arange(12) % 17 + 3).numpy().reshape(3, 4).astype("int32")
    model.fit({"input_ids": ids, "decoder_input_ids": ids}, ids, batch_size=3, epochs=1, verbose=0)
    assert seen == [(3, 4)], f"keras {keras.__version__} no longer calls the hook {written_against('keras')}"


def test_transformers_default_generation_params():
    defaults = compat.default_generation_params()
    expected = {"num_beams": 1, "do_sample": False, "top_k": 50, "top_p": 1.0, "temperature": 1.0,
                "repetition_penalty": 1.0, "length_penalty": 1.0, "max_length": 20, "num_return_sequences": 1}
    got = {key: defaults.get(key) for key in expected}
    assert got == expected, (f"transformers {transformers.__version__} changed "
                             f"GenerationConfig._get_default_generation_params {written_against('transformers')}")


def test_transformers_marks_generation_configs_derived_from_a_model_config():
    derived = GenerationConfig.from_model_config(PretrainedConfig())
    assert getattr(derived, "_from_model_config", None) is True, (
        f"transformers {transformers.__version__} no longer has GenerationConfig._from_model_config "
        f"{written_against('transformers')}")
    compat.mark_generation_config_explicit(derived)
    assert derived._from_model_config is False


def _add_one(x):
    return x + 1


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow warning")
def test_tensorflow_reads_the_frequent_tracing_flag(tensorflow_log):
    import tensorflow as tf

    assert hasattr(tf.function(_add_one), "_omit_frequent_tracing_warning"), (
        f"tensorflow {tf.__version__} has no tf.function._omit_frequent_tracing_warning {written_against('tensorflow')}")
    for omit in (True, False):  # 7 programs from one code object, each traced once: as the decoding programs
        tensorflow_log.clear()
        for length in range(1, 8):
            program = tf.function(_add_one)
            if omit:
                compat.omit_frequent_tracing_warning(program)
            program(tf.zeros((length,)))
        retracing = [message for message in tensorflow_log if "triggered tf.function retracing" in message]
        assert bool(retracing) != omit, (f"tensorflow {tf.__version__}: the flag no longer decides the warning "
                                         f"{written_against('tensorflow')}")


def test_ctranslate2_marian_loader_still_has_the_conventions_our_converter_undoes(tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from ctranslate2.converters.converter import Converter
    from ctranslate2.converters.transformers import MarianMTLoader

    from vanilla_transformer import export_to_transformers

    changed = f"ctranslate2 {ctranslate2.__version__} changed MarianMTLoader {written_against('ctranslate2')}"
    assert "_load" in Converter.__abstractmethods__, changed
    for name in ("_remove_pad_weights", "set_decoder", "set_config", "get_vocabulary"):
        assert callable(getattr(MarianMTLoader, name, None)), f"{changed}: no {name}"
    # what the subclass undoes: dropping the last vocabulary row, starting the decoder from a zero embedding
    assert "_remove_pad_weights(spec)" in inspect.getsource(MarianMTLoader.get_model_spec), changed
    assert "start_from_zero_embedding = True" in inspect.getsource(MarianMTLoader.set_decoder), changed
    config = TransformerConfig(vocab_size=20, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1,
                               num_decoder_layers=1, max_position_embeddings=32)
    checkpoint = export_to_transformers(TransformerForSeq2SeqLM(config), tmp_path / "marian")
    vocabulary = [f"t{i}" for i in range(20)]
    special = {"decoder_start_token": "t1", "eos_token": "t2", "unk_token": "t3"}
    output = compat.convert_marian_with_ctranslate2(checkpoint, tmp_path / "ct2", vocabulary, special, "int8")
    written = json.loads((tmp_path / "ct2" / "config.json").read_text())
    assert {key: written[key] for key in special} == special, changed
    assert json.loads((tmp_path / "ct2" / "shared_vocabulary.json").read_text()) == vocabulary, changed
    assert ctranslate2.Translator(output).compute_type.startswith("int8")  # validated and quantized


def test_keras_data_adapter_entries_exist_and_take_an_adapter_as_x():
    import numpy as np

    for module, name in (("keras.src.trainers.data_adapters", "get_data_adapter"),
                         ("keras.src.trainers.data_adapters.array_slicing", "train_validation_split"),
                         ("keras.src.trainers.data_adapters.data_adapter", "DataAdapter")):
        import importlib

        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            found = None
        assert found is not None, f"keras {keras.__version__} has no {module}.{name} {written_against('keras')}"
    adapter = compat.keras_data_adapter(np.zeros((6, 2)), np.zeros(6), batch_size=4)
    wrapped = compat.adapter_with_tf_dataset(adapter, lambda dataset: dataset)
    from keras.src.trainers.data_adapters import get_data_adapter

    assert get_data_adapter(wrapped) is wrapped, f"Keras no longer uses a DataAdapter given as x {written_against('keras')}"
