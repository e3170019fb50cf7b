"""Training speed across fresh processes: is every process as fast as the others?

    python benchmarks/bench_fresh_processes.py [--processes 10] [--keras-fit 0] [--epochs 4] [--batches 24]

Starts ``--processes`` fresh Python processes one after another (nothing else should run). Each trains a
translator of d_model 256, 3+3 layers and 8,000 tokens from scratch on random numpy arrays (batches of 64
sentences x 24 tokens, ``compile()`` defaults, shuffled as Keras shuffles) for ``--epochs`` epochs of
``--batches`` batches, and reports the tokens per second of the epochs after the first (which compiles), the
CPU cores it kept busy, and the slowest epoch. ``--keras-fit N`` also starts N processes that call Keras' own
``keras.Model.fit`` on the same model (tf.data autotuning on, as before vanilla_transformer.input_pipeline),
for the contrast. Prints one row per process and, per path, the spread (slowest / fastest process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROWS, COLUMNS, VOCAB = 64, 24, 8000


def worker(path: str, epochs: int, batches: int) -> None:
    """One process's training run; prints one JSON line."""
    import keras
    import numpy as np

    from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM

    keras.utils.set_random_seed(0)
    config = TransformerConfig.from_preset("transformer-base", vocab_size=VOCAB, d_model=256, num_heads=4,
                                           d_ff=1024, num_encoder_layers=3, num_decoder_layers=3)
    model = TransformerForSeq2SeqLM(config)
    model.compile()
    rng = np.random.default_rng(0)
    shape = (ROWS * batches, COLUMNS)
    inputs = {"input_ids": rng.integers(3, VOCAB, shape).astype("int32"),
              "decoder_input_ids": rng.integers(3, VOCAB, shape).astype("int32")}
    labels = rng.integers(3, VOCAB, shape).astype("int32")
    epochs_seen = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.cpu = time.perf_counter(), os.times()

        def on_epoch_end(self, epoch, logs=None):
            seconds, cpu = time.perf_counter() - self.start, os.times()
            busy = (cpu.user - self.cpu.user + cpu.system - self.cpu.system) / seconds
            epochs_seen.append((seconds, busy))

    fit = keras.Model.fit if path == "keras" else type(model).fit
    fit(model, inputs, labels, batch_size=ROWS, epochs=epochs, verbose=0, callbacks=[EpochTimer()])
    timed = epochs_seen[1:]
    tokens = ROWS * COLUMNS * batches
    print(json.dumps({"path": path, "tokens_per_s": tokens * len(timed) / sum(s for s, _ in timed),
                      "cores": statistics.mean(b for _, b in timed),
                      "slowest_epoch_tokens_per_s": tokens / max(s for s, _ in timed)}), flush=True)


def run(path: str, epochs: int, batches: int) -> dict:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, __file__, "--worker", path, "--epochs", str(epochs), "--batches", str(batches)]
    output = subprocess.run(command, capture_output=True, text=True, env=environment, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--keras-fit", type=int, default=0, help="processes on keras.Model.fit, for contrast")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--worker", choices=("ours", "keras"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.epochs, args.batches)
    print(f"{'process':>8} {'path':>6} {'tokens/s':>9} {'cores':>6} {'slowest epoch tok/s':>20}")
    results = {"ours": [], "keras": []}
    for path, count in (("ours", args.processes), ("keras", args.keras_fit)):
        for index in range(count):
            row = run(path, args.epochs, args.batches)
            results[path].append(row["tokens_per_s"])
            print(f"{index + 1:>8} {path:>6} {row['tokens_per_s']:>9.0f} {row['cores']:>6.2f} "
                  f"{row['slowest_epoch_tokens_per_s']:>20.0f}", flush=True)
    for path, speeds in results.items():
        if speeds:
            print(f"{path}: {len(speeds)} processes, median {statistics.median(speeds):.0f} tokens/s, "
                  f"slowest / fastest {min(speeds) / max(speeds):.3f}")


if __name__ == "__main__":
    main()
