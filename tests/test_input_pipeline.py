"""fit / evaluate on TensorFlow read their data with tf.data autotuning off (vanilla_transformer.input_pipeline),
and otherwise exactly as Keras does: same batches, same shuffling, same validation split, same losses."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from vanilla_transformer import TransformerConfig, TransformerForSequenceClassification, compat, input_pipeline
from vanilla_transformer.batching import batches_to_tf_dataset

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data is TensorFlow's")


def classifier(seed=0):
    keras.utils.set_random_seed(seed)
    config = TransformerConfig(architecture="encoder", vocab_size=30, d_model=16, num_heads=2, d_ff=32,
                               num_encoder_layers=1, max_position_embeddings=8, num_labels=3, dropout=0.1)
    model = TransformerForSequenceClassification(config)
    model.compile(jit_compile=False)
    return model


def data(rows=24):
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(3, 30, (rows, 6)).astype("int32")}, rng.integers(0, 3, rows).astype("int32")


@pytest.fixture
def tuned_datasets(monkeypatch):
    """The options of every dataset our adapters hand to Keras."""
    seen = []
    original = input_pipeline.without_autotune

    def spy(dataset):
        dataset = original(dataset)
        seen.append(dataset.options().autotune.enabled)
        return dataset

    monkeypatch.setattr(input_pipeline, "without_autotune", spy)
    return seen


def test_fit_with_validation_split_and_class_weight_equals_keras_fit_bit_for_bit(tuned_datasets):
    x, y = data()
    settings = dict(batch_size=5, epochs=3, validation_split=0.25, class_weight={0: 1.0, 1: 2.0, 2: 0.5},
                    shuffle=True, verbose=0)
    ours = classifier().fit(x, y, **settings).history  # classifier() resets the seed: same shuffling
    reference = keras.Model.fit(classifier(), x, y, **settings).history  # Keras' own path, autotune on
    assert ours == reference, (ours, reference)
    assert set(ours) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    # one training adapter and one validation adapter, each read with autotuning off
    assert tuned_datasets and not any(tuned_datasets)


def test_fit_on_a_dataset_and_evaluate_read_without_autotune(tuned_datasets):
    import tensorflow as tf

    x, y = data()
    model = classifier()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    model.fit(dataset, validation_data=dataset, epochs=2, verbose=0)
    results = model.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
    assert results == keras.Model.evaluate(model, x, y, batch_size=6, verbose=0, return_dict=True)
    assert len(tuned_datasets) >= 3 and not any(tuned_datasets)


def test_bad_arguments_still_get_keras_errors():
    x, y = data()
    with pytest.raises(TypeError):
        classifier().fit(x, y, batch_size=4, epochs=1, no_such_argument=1)
    with pytest.raises(ValueError, match="validation_split"):
        import tensorflow as tf
        classifier().fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), validation_split=0.5, verbose=0)


def test_our_batch_pipelines_have_autotune_off():
    batches = [({"input_ids": np.ones((2, 3), "int32")}, np.ones((2, 3), "int32"))] * 2
    assert batches_to_tf_dataset(batches).options().autotune.enabled is False


def test_the_adapter_wrapper_changes_only_the_tf_dataset():
    x, y = data(10)
    inner = compat.keras_data_adapter(x, y, batch_size=4)
    wrapped = compat.adapter_with_tf_dataset(inner, input_pipeline.without_autotune)
    assert (wrapped.num_batches, wrapped.batch_size, wrapped.has_partial_batch, wrapped.partial_batch_size) == (
        inner.num_batches, inner.batch_size, inner.has_partial_batch, inner.partial_batch_size)
    got = [b[1].tolist() for b in wrapped.get_tf_dataset().as_numpy_iterator()]
    assert got == [b[1].tolist() for b in inner.get_tf_dataset().as_numpy_iterator()]
    assert wrapped.get_tf_dataset().options().autotune.enabled is False
