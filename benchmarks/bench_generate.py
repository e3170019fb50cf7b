"""Decoding speed: our compiled cached generate vs our uncached path vs transformers' PyTorch Marian.

Same CPU, same thread count, same model size (d_model 256, 3+3 layers, 4 heads, d_ff 1024, vocab 8000),
random weights. Every hypothesis is forced to full length (``min_new_tokens = max_new_tokens``) so all
three do the same number of steps. Each framework runs in its own child process (same thread count), and
the processes take turns call by call, so a slow spell of the machine slows all of them alike.
Prints new tokens per second (batch x new tokens / wall time, beams not counted) for greedy and beam-4
at batch 1 and 32, with 24 and 64 new tokens, and the ratios.

    python benchmarks/bench_generate.py [--repeats 7] [--threads 2] [--quick] [--backends tensorflow jax torch]

Needs torch (``pip install torch==2.13.0``, the CPU build). Writes benchmarks/results/generate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = dict(vocab_size=8000, d_model=256, num_heads=4, d_ff=1024, layers=3)
SOURCE_LENGTH = 24
PAUSE_SECONDS = 0.05  # between two timed calls


def build_ours(seed=0):
    import keras

    from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM

    keras.utils.set_random_seed(seed)
    config = TransformerConfig(vocab_size=SIZE["vocab_size"], d_model=SIZE["d_model"], num_heads=SIZE["num_heads"],
                               d_ff=SIZE["d_ff"], num_encoder_layers=SIZE["layers"],
                               num_decoder_layers=SIZE["layers"], dropout=0.0, max_position_embeddings=256)
    return TransformerForSeq2SeqLM(config).build_weights()


def build_marian(seed=0):
    import torch
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    config = MarianConfig(vocab_size=SIZE["vocab_size"], d_model=SIZE["d_model"], encoder_layers=SIZE["layers"],
                          decoder_layers=SIZE["layers"], encoder_attention_heads=SIZE["num_heads"],
                          decoder_attention_heads=SIZE["num_heads"], encoder_ffn_dim=SIZE["d_ff"],
                          decoder_ffn_dim=SIZE["d_ff"], max_position_embeddings=256, pad_token_id=0,
                          eos_token_id=2, decoder_start_token_id=1, forced_eos_token_id=None, dropout=0.0,
                          activation_function="relu", scale_embedding=True)
    return MarianMTModel(config).eval()


def cases(quick):
    """(method, num_beams, batch, new_tokens) in the order they are timed."""
    new_token_counts = (24,) if quick else (24, 64)
    return [(method, beams, batch, new_tokens) for batch in (1, 32) for new_tokens in new_token_counts
            for method, beams in (("greedy", 1), ("beam-4", 4))]


def sources(batch):
    import numpy as np

    rng = np.random.default_rng(batch)
    source = rng.integers(4, SIZE["vocab_size"], size=(batch, SOURCE_LENGTH)).astype("int32")
    source[:, -1] = 2
    return source


def load_framework(framework, backend, threads):
    """Child process: ``call(key, use_cache) -> seconds`` timing one ``generate`` of case ``key``."""
    if framework == "ours":
        if backend == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        elif backend == "torch":
            import torch

            torch.set_num_threads(threads)
        model = build_ours()
    else:
        import torch

        torch.set_num_threads(threads)
        model = build_marian()

    def call(key, use_cache=True):
        method, batch, new_tokens = key.split("/")
        source = sources(int(batch))
        kwargs = dict(max_new_tokens=int(new_tokens), min_new_tokens=int(new_tokens),
                      num_beams=4 if method == "beam-4" else 1, eos_token_id=2, pad_token_id=0)
        start = time.perf_counter()
        if framework == "ours":
            model.generate(source, use_cache=use_cache, **kwargs)
        else:
            with torch.inference_mode():
                model.generate(torch.tensor(source, dtype=torch.long), do_sample=False, **kwargs)
        return time.perf_counter() - start
    return call


def serve_calls(framework, args):
    """Child process: answer each ``<key> <cached|uncached>`` line of stdin with ``seconds <s>`` on stdout."""
    call = load_framework(framework, os.environ.get("KERAS_BACKEND", "tensorflow"), args.threads)
    print("ready", flush=True)
    for line in sys.stdin:
        key, cache = line.split()
        print(f"seconds {call(key, use_cache=cache == 'cached')}", flush=True)


class Child:
    """A framework loaded in its own process (its own thread pools), timing one call per request."""

    def __init__(self, framework, backend, args):
        command = [sys.executable, str(Path(__file__).resolve()), "--framework", framework, "--threads",
                   str(args.threads)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), KERAS_BACKEND=backend)
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._read("ready")

    def _read(self, prefix):
        for line in self.process.stdout:  # anything else a library prints on stdout is skipped
            if line.startswith(prefix):
                return line
        raise RuntimeError(f"benchmark child exited with {self.process.wait()}")

    def seconds(self, key, cached=True):
        self.process.stdin.write(f"{key} {'cached' if cached else 'uncached'}\n")
        self.process.stdin.flush()
        return float(self._read("seconds").split()[1])

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def interleaved_medians(children, key, repeats):
    """Median seconds per child for case ``key``: ``repeats`` rounds in which every child takes its turn (the
    order reversed every other round), so a slow spell of the machine falls on all frameworks alike instead of
    on whichever ran through its cases at the time. A turn is an untimed call, which warms the caches and
    thread pools the other process left cold, then the timed one, as in a process that decodes alone."""
    times = {name: [] for name in children}
    for round_ in range(repeats):
        for name in (list(children) if round_ % 2 == 0 else list(children)[::-1]):
            time.sleep(PAUSE_SECONDS)  # the previous framework's idle threads stop spinning
            children[name].seconds(key)
            times[name].append(children[name].seconds(key))
    return {name: statistics.median(values) for name, values in times.items()}


def ours_column(backend):
    """The column of our cached decoding on ``backend``: ``ours_cached`` on TensorFlow, ``ours_jax_cached``..."""
    return ("ours" if backend == "tensorflow" else f"ours_{backend}") + "_cached"


def time_all(args):
    """``{case key: {column: median seconds}}`` for every case, the frameworks taking turns call by call."""
    columns = {ours_column(b): ("ours", b) for b in args.backends}
    columns["transformers"] = ("transformers", "tensorflow")
    children = {column: Child(framework, backend, args) for column, (framework, backend) in columns.items()}
    times = {}
    try:
        for method, beams, batch, new_tokens in cases(args.quick):
            key = f"{method}/{batch}/{new_tokens}"
            times[key] = interleaved_medians(children, key, args.repeats)
            if "ours_cached" in children and (new_tokens == 64 or batch == 1 or args.quick):
                ours = children["ours_cached"]  # uncached against cached: one process, one after the other
                ours.seconds(key, cached=False)
                times[key]["ours_uncached"] = statistics.median(
                    ours.seconds(key, cached=False) for _ in range(max(1, args.repeats - 1)))
            print(f"  {key}: {times[key]}", flush=True)
    finally:
        for child in children.values():
            child.close()
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed calls per case and framework after a warm-up, median reported (default 7)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="batch 1 and 32 with 24 new tokens only")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "generate.json"))
    parser.add_argument("--backends", nargs="+", choices=["tensorflow", "jax", "torch"], default=["tensorflow"],
                        help="Keras backends to decode ours on (each in its own process; jit on JAX, eager on PyTorch)")
    parser.add_argument("--framework", choices=["ours", "transformers"], help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.framework:
        return serve_calls(args.framework, args)

    from vanilla_transformer.precision import cpu_kind  # here: the transformers child must not load TensorFlow

    print(f"CPU: {cpu_kind()}; threads {args.threads}", flush=True)
    # Each framework runs in its own process (in one process, PyTorch's OpenMP threads spinning after each of
    # its calls slowed ours by ~40%), and the processes take turns call by call.
    times = time_all(args)
    rows = []
    columns = [ours_column(b) for b in args.backends]
    for method, beams, batch, new_tokens in cases(args.quick):
        row = {"method": method, "batch": batch, "new_tokens": new_tokens, **times[f"{method}/{batch}/{new_tokens}"]}
        tokens = batch * new_tokens
        for key in (*columns, "ours_uncached", "transformers"):
            if key in row:
                row[f"{key}_tok_s"] = tokens / row[key]
        for key in columns:  # each backend's ratio to transformers' PyTorch Marian
            row[f"ratio_{key.removesuffix('_cached')}_vs_transformers"] = row[f"{key}_tok_s"] / row["transformers_tok_s"]
        if "ours_cached_tok_s" in row:
            row["ratio_vs_transformers"] = row["ours_cached_tok_s"] / row["transformers_tok_s"]
        if "ours_uncached_tok_s" in row:
            row["cached_vs_uncached"] = row["ours_cached_tok_s"] / row["ours_uncached_tok_s"]
        rows.append(row)
        print(_format_row(row), flush=True)

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"size": SIZE, "source_length": SOURCE_LENGTH, "threads": args.threads,
                                             "cpu_kind": cpu_kind(), "separate_processes": True,
                                             "interleaved_calls": True, "rows": rows}, indent=2))
    print(f"\nwrote {args.output}")


def _format_row(row):
    uncached = f"{row['ours_uncached_tok_s']:9.0f}" if "ours_uncached_tok_s" in row else f"{'-':>9}"
    cache_ratio = f"{row['cached_vs_uncached']:6.1f}x" if "cached_vs_uncached" in row else f"{'-':>7}"
    backends = " | ".join(f"{key.removeprefix('ratio_').removesuffix('_vs_transformers')} "
                          f"{row[key.removeprefix('ratio_').removesuffix('_vs_transformers') + '_cached_tok_s']:7.0f} "
                          f"tok/s {row[key]:5.2f}x" for key in row if key.startswith("ratio_ours"))
    return (f"{row['method']:>7} batch {row['batch']:>2} new {row['new_tokens']:>2} | {backends} | uncached "
            f"{uncached} | transformers {row['transformers_tok_s']:7.0f} tok/s | cached/uncached {cache_ratio}")


if __name__ == "__main__":
    main()
