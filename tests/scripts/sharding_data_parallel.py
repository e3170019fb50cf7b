"""keras.distribution.DataParallel over two CPU devices against one device, on the same global batches.

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python tests/scripts/sharding_data_parallel.py OUTPUT_DIR

Trains a tiny encoder-decoder on the reversal task (dropout 0, label smoothing 0.1) from the same initial
weights for 8 steps of 16 rows, once on one device and once split 8 + 8 over two, then evaluates. The
optimizer is SGD with momentum: its update is proportional to the gradient, so a gradient scaled by the
number of devices would show in the weights (Adam's update would hide it). Writes ``initial.npz``,
``single.npz`` and ``parallel.npz`` (weights by path) to OUTPUT_DIR and prints one JSON line: both runs'
per-step logs and evaluation, where the weights live, and a NumPy oracle of the first step's loss (the token
mean of the whole batch, and the mean of the two halves' means that per-device losses would give instead).
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

ROWS, STEPS, EPS = 16, 8, 0.1
CONFIG = TransformerConfig(vocab_size=12, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                           num_decoder_layers=1, dropout=0.0, max_position_embeddings=16, label_smoothing=EPS)


def reversal_batches():
    """Pairs of 1-9 tokens; in every batch of 16 the first 8 rows (device 0's) are the longer ones, so the two
    halves count different numbers of tokens."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 10, size=ROWS * STEPS).reshape(STEPS, ROWS)
    lengths = -np.sort(-lengths, axis=1).reshape(-1)
    sources = [list(rng.integers(3, 12, size=n)) + [2] for n in lengths]
    targets = [list(reversed(s[:-1])) + [2] for s in sources]
    return Seq2SeqCollator(0, 1, CONFIG.vocab_size)(sources, targets, length=16)


def train(inputs, labels, initial_weights, rows=ROWS):
    """Per-step logs of ``fit``, the evaluation and the weights, from ``initial_weights``; ``rows`` per batch."""
    model = TransformerForSeq2SeqLM(CONFIG).build_weights()
    model.set_weights(initial_weights)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    steps = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(
        {"loss": float(logs["loss"]), "accuracy": float(logs["accuracy"])}))
    model.fit(inputs, labels, batch_size=rows, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    evaluation = model.evaluate(inputs, labels, batch_size=rows, verbose=0, return_dict=True)
    return steps, evaluation, [np.asarray(w) for w in model.get_weights()], model


def smoothed_cross_entropy(logits, labels):
    """Per-token label-smoothed cross-entropy (NumPy, float64) and the mask of counted tokens."""
    logits = logits.astype("float64")
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    counted = labels != -100
    true = np.take_along_axis(log_probs, np.where(counted, labels, 0)[..., None], -1)[..., 0]
    return -(1 - EPS) * true - EPS * log_probs.mean(-1), counted


def first_step_oracle(model, inputs, labels):
    first = {name: value[:ROWS] for name, value in inputs.items()}
    per_token, counted = smoothed_cross_entropy(np.asarray(model(first)), labels[:ROWS])
    half = ROWS // 2
    halves = [per_token[s][counted[s]].mean() for s in (slice(0, half), slice(half, ROWS))]
    return {"token_mean": float(per_token[counted].mean()), "mean_of_halves": float(np.mean(halves)),
            "tokens_per_half": [int(counted[:half].sum()), int(counted[half:].sum())]}


def main(output_dir):
    inputs, labels = reversal_batches()
    keras.utils.set_random_seed(0)
    reference = TransformerForSeq2SeqLM(CONFIG).build_weights()
    initial = [np.asarray(w) for w in reference.get_weights()]
    names = [variable.path for variable in reference.weights]
    report = {"oracle": first_step_oracle(reference, inputs, labels)}
    single_steps, single_eval, single_weights, _ = train(inputs, labels, initial)
    report["single"] = {"steps": single_steps, "eval": single_eval}

    distribution = make_distribution("data_parallel")
    keras.distribution.set_distribution(distribution)
    parallel_steps, parallel_eval, parallel_weights, model = train(inputs, labels, initial)
    report["parallel"] = {"steps": parallel_steps, "eval": parallel_eval}
    kernel = model.encoder.layers[0].self_attn.q_proj.kernel.value
    report["devices"] = keras.distribution.list_devices()
    report["kernel_devices"] = len(kernel.sharding.device_set)
    report["kernel_replicated"] = bool(kernel.sharding.is_fully_replicated)
    report["batch_axes"] = list(distribution.get_data_layout((ROWS, 16)).axes)
    for name, weights in (("initial", initial), ("single", single_weights), ("parallel", parallel_weights)):
        np.savez(os.path.join(output_dir, f"{name}.npz"), **dict(zip(names, weights)))
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
