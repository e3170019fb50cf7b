"""Where a training step's time goes as the model narrows: step time by width and vocabulary on this machine.

    python benchmarks/bench_step_cost.py [--rows 32] [--length 64] [--steps 10] [--shapes 192x8000 128x8000 ...]

Each shape ``DxV[:p]`` is a translator of d_model D (4 heads, d_ff 4D, 3+3 layers), V tokens and dropout p
(0.1 unless given; sub-layers and attention), trained as the
15-minute Multi30k recipe trains (packed rows of ``--length`` tokens, ``--rows`` rows a batch, the
label-smoothed loss and token accuracy, the paper's Adam, the precision ``auto`` picks) on random token ids,
in this process one shape after another. Printed per shape: the median step time after three warm-up steps
(compilation), the matrix products' multiply-adds per step (:func:`matmul_cost`, times 3 for a training
step), the GFLOP/s that makes, and the step time relative to the first shape against
the matmul-cost ratio: where the two differ, something besides the matrix products takes the time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def matmul_cost(d_model: int, d_ff: int, layers: int, vocab: int, length: int) -> int:
    """Multiply-adds of the matrix products one source and one target token go through in a forward pass: per
    layer the attention projections (4 d^2, twice that with a decoder's cross-attention), the feed-forward
    network (2 d d_ff) and the attention scores and weighted values (2 L d per attention); then the output
    projection (d V)."""
    encoder_layer = 4 * d_model ** 2 + 2 * d_model * d_ff + 2 * length * d_model
    decoder_layer = 8 * d_model ** 2 + 2 * d_model * d_ff + 4 * length * d_model
    return layers * (encoder_layer + decoder_layer) + d_model * vocab


def packed_batch(vocab: int, rows: int, length: int):
    """``rows`` packed rows of random pairs of 6-20 tokens a side (Multi30k's captions are ~13), as the recipe's
    ``--pack_length`` batches are."""
    import numpy as np

    from vanilla_transformer.data_collators import PackedSeq2SeqCollator

    rng = np.random.default_rng(0)
    collator = PackedSeq2SeqCollator(0, 1, length, length, vocab)
    sources, targets = [], []
    while True:
        sources.append(rng.integers(4, vocab, rng.integers(6, 21)).tolist())
        targets.append(rng.integers(4, vocab, rng.integers(6, 21)).tolist())
        inputs, labels = collator(sources, targets)
        if len(labels) > rows:
            return collator(sources[:-1], targets[:-1], num_rows=rows)


def step_seconds(d_model: int, vocab: int, rows: int, length: int, steps: int, dropout: float) -> float:
    """Median training step time of one shape, after 3 warm-up steps."""
    import keras
    import numpy as np

    from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
    from vanilla_transformer.losses import MaskedAccuracy, MaskedSparseCrossEntropy

    keras.utils.set_random_seed(0)
    config = TransformerConfig.from_preset("transformer-base", vocab_size=vocab, d_model=d_model, num_heads=4,
                                           d_ff=4 * d_model, num_encoder_layers=3, num_decoder_layers=3,
                                           max_position_embeddings=length, dropout=dropout,
                                           attention_dropout=dropout)
    model = TransformerForSeq2SeqLM(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_2=0.98, epsilon=1e-9),
                  loss=MaskedSparseCrossEntropy(0.1), metrics=[MaskedAccuracy()])
    inputs, labels = packed_batch(vocab, rows, length)
    times = []
    for _ in range(3 + steps):
        started = time.perf_counter()
        model.train_on_batch(inputs, labels)
        times.append(time.perf_counter() - started)
    return float(np.median(times[3:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["192x8000", "128x8000", "96x8000", "192x4000", "192x2000", "192x8000:0"],
                        help="DxV[:p]: d_model D, vocabulary V, dropout p on sub-layers and attention (0.1)")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()

    import keras

    from vanilla_transformer.precision import choose_policy

    policy, reason = choose_policy("auto")
    keras.mixed_precision.set_global_policy(policy)
    print(f"precision: {reason}")
    rows, first = [], None
    for shape in args.shapes:
        size, _, dropout = shape.partition(":")
        d_model, vocab = map(int, size.split("x"))
        seconds = step_seconds(d_model, vocab, args.rows, args.length, args.steps, float(dropout or 0.1))
        macs = 3 * matmul_cost(d_model, 4 * d_model, 3, vocab, args.length) * args.rows * args.length
        first = first or (seconds, macs)
        row = {"d_model": d_model, "vocab": vocab, "dropout": float(dropout or 0.1), "step_s": round(seconds, 4),
               "gflop_s": round(2 * macs / seconds / 1e9, 1),
               "time_ratio": round(seconds / first[0], 3), "matmul_ratio": round(macs / first[1], 3)}
        rows.append(row)
        print(f"d_model {d_model:4d}  vocab {vocab:5d}  dropout {row['dropout']:.1f}  step {seconds * 1000:7.1f} ms  "
              f"{row['gflop_s']:6.1f} GFLOP/s  time x{row['time_ratio']:.2f}  matmul work x{row['matmul_ratio']:.2f}",
              flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps({"precision": policy, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
