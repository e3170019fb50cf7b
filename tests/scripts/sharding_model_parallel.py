"""keras.distribution.ModelParallel with vanilla_transformer.sharding.layout_map over two CPU devices.

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/scripts/sharding_model_parallel.py OUTPUT_DIR

The model has the big preset's layer shapes (d_model 1024, 16 heads, d_ff 4096) with 1 + 1 layers and a
1,000-token vocabulary, so it runs in seconds on a CPU. It is built once on one device and once sharded over a
("batch", "model") mesh of 1 x 2 devices from the same weights; both run the same batch forward and take one
SGD step on it. Writes ``logits.npz`` (each model's logits before and after the step) and ``weights.npz`` (the
updated weights of both) to OUTPUT_DIR and prints one JSON line: the partition spec, the device count and the
per-device shard shape of every weight, and both losses.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import json  # noqa: E402
import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM  # noqa: E402
from vanilla_transformer.data_collators import Seq2SeqCollator  # noqa: E402
from vanilla_transformer.sharding import make_distribution  # noqa: E402

CONFIG = TransformerConfig.from_preset("transformer-big", vocab_size=1000, num_encoder_layers=1,
                                       num_decoder_layers=1, dropout=0.0, max_position_embeddings=64)


def batch():
    rng = np.random.default_rng(0)
    sources = [list(rng.integers(3, 1000, size=n)) + [2] for n in (5, 11, 15, 8)]
    targets = [list(rng.integers(3, 1000, size=n)) + [2] for n in (7, 4, 13, 15)]
    return Seq2SeqCollator(CONFIG.pad_token_id, CONFIG.decoder_start_token_id, CONFIG.vocab_size)(sources, targets)


def run(initial_weights, inputs, labels):
    """Logits before and after one SGD step from ``initial_weights``, the loss, and the model."""
    model = TransformerForSeq2SeqLM(CONFIG).build_weights()
    model.set_weights(initial_weights)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    before = np.asarray(model(inputs, training=False))
    loss = model.train_on_batch(inputs, labels, return_dict=True)["loss"]
    return before, np.asarray(model(inputs, training=False)), float(loss), model


def placements(model):
    """Where each weight lives: partition spec, devices, and the shape of one device's shard."""
    return {variable.path: {"spec": [axis for axis in variable.value.sharding.spec],
                            "devices": len(variable.value.sharding.device_set),
                            "shard_shape": list(variable.value.addressable_shards[0].data.shape),
                            "shape": list(variable.shape)}
            for variable in model.weights}


def main(output_dir):
    inputs, labels = batch()
    keras.utils.set_random_seed(0)
    reference = TransformerForSeq2SeqLM(CONFIG).build_weights()
    initial = [np.asarray(w) for w in reference.get_weights()]
    del reference
    single_before, single_after, single_loss, single = run(initial, inputs, labels)
    single_weights = {variable.path: np.asarray(variable.value) for variable in single.weights}
    del single

    keras.distribution.set_distribution(make_distribution("model_parallel", CONFIG))
    sharded_before, sharded_after, sharded_loss, sharded = run(initial, inputs, labels)
    np.savez(os.path.join(output_dir, "logits.npz"), single_before=single_before, single_after=single_after,
             sharded_before=sharded_before, sharded_after=sharded_after)
    np.savez(os.path.join(output_dir, "weights.npz"),
             **{f"single:{path}": value for path, value in single_weights.items()},
             **{f"sharded:{v.path}": np.asarray(v.value) for v in sharded.weights})
    print(json.dumps({"devices": keras.distribution.list_devices(), "placements": placements(sharded),
                      "single_loss": single_loss, "sharded_loss": sharded_loss,
                      "parameters": int(sum(np.prod(w.shape) for w in initial))}))


if __name__ == "__main__":
    main(sys.argv[1])
