"""Streaming latency: time to the first streamed token against the whole call, batch 1, greedy and sampling.

    python benchmarks/bench_streaming.py [--new-tokens 64] [--repeats 5] [--d-model 192] [--layers 3]
                                         [--vocab 8000]

A randomly initialised translator of the 15-minute Multi30k recipe's shape (d_model 192, 3+3 layers, 8,000
tokens) generates exactly ``--new-tokens`` tokens (no eos) for a 20-token source with a streamer that records
when each token arrives. The first call of each mode compiles (its times are printed apart); the figures are
medians over ``--repeats`` warm calls: time to the first token, the whole call, their ratio, and the same call
without a streamer (the single compiled program) for the cost of streaming.
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM


class TimingStreamer:
    """Records the time of every ``put`` after the first (the prefix)."""

    def __init__(self):
        self.start, self.times = time.perf_counter(), []
        self.puts = 0

    def put(self, value):
        self.puts += 1
        if self.puts > 1:
            self.times.append(time.perf_counter() - self.start)

    def end(self):
        self.total = time.perf_counter() - self.start


def timed_call(model, source, streamer=None, **kwargs) -> tuple[float, float]:
    """(seconds to the first streamed token or nan, seconds for the whole call)."""
    start = time.perf_counter()
    if streamer is not None:
        streamer.start = start
    model.generate(source, streamer=streamer, **kwargs)
    total = time.perf_counter() - start
    return (streamer.times[0] if streamer is not None else float("nan")), total


def measure(model, source, repeats: int, **kwargs) -> dict:
    """Cold (first) and median warm figures of one decoding mode, streamed and not."""
    cold_first, cold_total = timed_call(model, source, TimingStreamer(), **kwargs)
    timed_call(model, source, **kwargs)  # compiles the single program
    warm = [timed_call(model, source, TimingStreamer(), **kwargs) for _ in range(repeats)]
    plain = [timed_call(model, source, **kwargs)[1] for _ in range(repeats)]
    first, total = statistics.median(t for t, _ in warm), statistics.median(t for _, t in warm)
    return {"cold_first_s": cold_first, "cold_total_s": cold_total, "first_s": first, "total_s": total,
            "ratio": first / total, "unstreamed_s": statistics.median(plain)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--d-model", type=int, default=192)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=8000)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    config = TransformerConfig(vocab_size=args.vocab, d_model=args.d_model, num_heads=4, d_ff=4 * args.d_model,
                               num_encoder_layers=args.layers, num_decoder_layers=args.layers, dropout=0.0,
                               max_position_embeddings=args.new_tokens + 8)
    model = TransformerForSeq2SeqLM(config).build_weights()
    source = np.random.default_rng(0).integers(5, args.vocab, (1, 20)).astype("int32")
    print(f"backend {keras.backend.backend()}, d_model {args.d_model}, {args.layers}+{args.layers} layers, vocab "
          f"{args.vocab}, batch 1, {args.new_tokens} new tokens, medians of {args.repeats} warm calls")
    print(f"{'mode':<9} {'first token':>12} {'whole call':>11} {'first/whole':>12} {'unstreamed':>11} "
          f"{'cold first':>11} {'cold whole':>11}")
    for mode, kwargs in (("greedy", {}), ("sampling", {"do_sample": True, "top_p": 0.9, "seed": 0})):
        r = measure(model, source, args.repeats, max_new_tokens=args.new_tokens, eos_token_id=None, **kwargs)
        print(f"{mode:<9} {r['first_s'] * 1e3:>10.1f}ms {r['total_s'] * 1e3:>9.1f}ms {r['ratio']:>12.3f} "
              f"{r['unstreamed_s'] * 1e3:>9.1f}ms {r['cold_first_s']:>10.2f}s {r['cold_total_s']:>10.2f}s")


if __name__ == "__main__":
    main()
