"""Train a tiny Transformer for a few steps under a tf.distribute strategy; save the final weights.

    python distributed_fit.py MODE OUT

MODE: "single" (one device), "mirrored" (two logical CPU devices), "multi_worker" (this process is one of
two workers; TF_CONFIG describes the cluster). Every mode starts from the same initial weights (written by
"single" to OUT/../initial.npz) and sees the same global batches, so all must end with the same weights.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

mode, out = sys.argv[1], sys.argv[2]
if mode == "mirrored":  # must happen before TensorFlow touches a device
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM  # noqa: E402
from vanilla_transformer.data_collators import shift_tokens_right  # noqa: E402
from vanilla_transformer.distribution import check_same_position_on_every_worker  # noqa: E402
from vanilla_transformer.losses import MaskedSparseCrossEntropy  # noqa: E402

GLOBAL_BATCH, STEPS, LENGTH = 8, 4, 6
rng = np.random.default_rng(0)
labels = rng.integers(3, 30, size=(STEPS * GLOBAL_BATCH, LENGTH)).astype("int32")  # no padding: equal counts
sources = rng.integers(3, 30, size=(STEPS * GLOBAL_BATCH, LENGTH)).astype("int32")
inputs = {"input_ids": sources, "decoder_input_ids": shift_tokens_right(labels, 1, 0)}

strategy = {"single": tf.distribute.get_strategy, "mirrored": tf.distribute.MirroredStrategy,
            "multi_worker": tf.distribute.MultiWorkerMirroredStrategy}[mode]()
with strategy.scope():
    keras.utils.set_random_seed(0)
    config = TransformerConfig(vocab_size=32, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.0, max_position_embeddings=16)
    model = TransformerForSeq2SeqLM(config).build_weights()
    initial = os.path.join(os.path.dirname(out), "initial.npz")
    names = model.named_variables()
    if mode == "single":
        np.savez(initial, **{name: v.numpy() for name, v in names.items()})
    else:
        saved = np.load(initial)
        for name, variable in names.items():
            variable.assign(saved[name])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=MaskedSparseCrossEntropy(0.1), metrics=[],
                  jit_compile=False)

# Every mode reads the same global batches. tf.distribute splits each into one slice per replica; with several
# workers, sharding by DATA hands worker i the i-th slice of every global batch (its replicas' share).
dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(GLOBAL_BATCH)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA


class BatchLosses(keras.callbacks.Callback):
    """The logs Keras hands callbacks after each step (what MultiWorkerTrainerFixes reshapes for reduction)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


batch_losses = BatchLosses()
history = model.fit(dataset.with_options(options), epochs=1, verbose=0, callbacks=[batch_losses])
evaluation = model.evaluate(dataset.with_options(options), verbose=0, return_dict=True)
np.savez(out, **{name: v.numpy() for name, v in model.named_variables().items()})
print("replicas", strategy.num_replicas_in_sync)
print("loss", history.history["loss"][-1])
print("batch_losses", ",".join(f"{v:.6f}" for v in batch_losses.losses))
print("eval_loss", evaluation["loss"])

if mode == "multi_worker":  # resuming: the workers compare their restored positions
    check_same_position_on_every_worker(model, (1, 3))
    try:
        check_same_position_on_every_worker(model, (1, 3 + int(strategy.cluster_resolver.task_id)))
    except RuntimeError as err:
        print("position mismatch:", err)
