"""Share of real tokens in the training batches of Multi30k: length buckets (today's recipe) against packing.

The recipe's tokenization (8k BPE with punctuation split, sources and targets cut at 64 tokens) and batches
of 2,048 tokens: ``seq2seq_batches`` pads both sides of a batch to its longer side rounded up to 8;
``packed_seq2seq_batches`` puts several pairs in each row of ``--row-length`` tokens per side, rows per batch
chosen for the same 2,048-token budget. Counts tokens of the tensors the model computes on (source and
target); the packed rows' attention stays within each pair (masked), which the figures do not count as real
or padding.

    python benchmarks/padding.py --data ../shared/data/multi30k [--row-length 64] [--output results/padding.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f]


def real_fraction(batches) -> tuple[float, int]:
    """(real tokens / computed tokens over both sides, number of distinct batch shapes)."""
    real = total = 0
    shapes = set()
    for inputs, labels in batches:
        source_real = int((inputs.get("segment_ids", inputs.get("attention_mask")) > 0).sum())
        real += source_real + int((labels != -100).sum())
        total += inputs["input_ids"].size + labels.size
        shapes.add((inputs["input_ids"].shape, labels.shape))
    return real / total, len(shapes)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the Multi30k directory (train.en.gz, train.de.gz)")
    parser.add_argument("--row-length", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "padding.json"))
    args = parser.parse_args(argv)
    from vanilla_transformer import train_bpe_tokenizer
    from vanilla_transformer.batching import packed_seq2seq_batches, seq2seq_batches
    from vanilla_transformer.data_collators import PackedSeq2SeqCollator, Seq2SeqCollator

    english, german = read(Path(args.data) / "train.en.gz"), read(Path(args.data) / "train.de.gz")
    tokenizer = train_bpe_tokenizer(english + german, vocab_size=8000, split_punctuation=True)
    sources = [ids[:64] for ids in tokenizer(english)["input_ids"]]
    targets = [ids[:64] for ids in tokenizer(german)["input_ids"]]
    bucketed, bucket_shapes = real_fraction(seq2seq_batches(sources, targets, Seq2SeqCollator(0, 1), max_tokens=
                                                            args.max_tokens))
    start = time.perf_counter()
    collator = PackedSeq2SeqCollator(0, 1, args.row_length, args.row_length)
    packed_batches = packed_seq2seq_batches(sources, targets, collator, rows_per_batch=args.max_tokens //
                                            args.row_length)
    seconds = time.perf_counter() - start
    packed, packed_shapes = real_fraction(packed_batches)
    result = dict(pairs=len(sources), mean_source_tokens=float(np.mean([len(s) for s in sources])),
                  mean_target_tokens=float(np.mean([len(t) for t in targets])),
                  bucketed_real=round(bucketed, 4), bucketed_shapes=bucket_shapes, packed_real=round(packed, 4),
                  packed_shapes=packed_shapes, packed_batches=len(packed_batches), row_length=args.row_length,
                  packing_seconds=round(seconds, 2))
    print(f"{len(sources)} pairs, {result['mean_source_tokens']:.1f} / {result['mean_target_tokens']:.1f} tokens "
          f"per source / target")
    print(f"length buckets (multiple of 8, 2,048-token batches): {100 * bucketed:.1f}% real, "
          f"{bucket_shapes} batch shapes")
    print(f"packed rows of {args.row_length} + {args.row_length}: {100 * packed:.1f}% real, {packed_shapes} batch "
          f"shape, packing {seconds:.1f} s")
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
