"""Decoding speed: our compiled cached generate vs our uncached path vs transformers' PyTorch Marian.

Same CPU, same thread count, same model size (d_model 256, 3+3 layers, 4 heads, d_ff 1024, vocab 8000),
random weights. Every hypothesis is forced to full length (``min_new_tokens = max_new_tokens``) so all
three do the same number of steps. Each framework runs in its own child process (same thread count).
Prints new tokens per second (batch x new tokens / wall time, beams not counted) for greedy and beam-4
at batch 1 and 32, with 24 and 64 new tokens, and the ratios.

    python benchmarks/bench_generate.py [--repeats 7] [--threads 2] [--quick] [--backends tensorflow jax torch]

Needs torch (``pip install torch==2.13.0``, the CPU build). Writes benchmarks/results/generate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))
from bench_train import median_seconds  # noqa: E402  (one timing helper for the benchmarks)

SIZE = dict(vocab_size=8000, d_model=256, num_heads=4, d_ff=1024, layers=3)
SOURCE_LENGTH = 24


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


def time_framework(framework, args):
    """Child process: seconds per call of every case for ``framework`` ("ours" or "transformers")."""
    times = {}
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    prefix = "ours" if backend == "tensorflow" else f"ours_{backend}"  # this backend's column
    if framework == "ours":
        if backend == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        elif backend == "torch":
            import torch

            torch.set_num_threads(args.threads)
        model = build_ours()
    else:
        import torch

        torch.set_num_threads(args.threads)
        model = build_marian()
    for method, beams, batch, new_tokens in cases(args.quick):
        source = sources(batch)
        kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams, eos_token_id=2,
                      pad_token_id=0)
        key = f"{method}/{batch}/{new_tokens}"
        if framework == "ours":
            times[key] = {f"{prefix}_cached": median_seconds(lambda: model.generate(source, **kwargs), args.repeats,
                                                              warmup=1)}
            if backend == "tensorflow" and (new_tokens == 64 or batch == 1 or args.quick):
                times[key]["ours_uncached"] = median_seconds(
                    lambda: model.generate(source, use_cache=False, **kwargs), max(1, args.repeats - 1), warmup=1)
        else:
            source_torch = torch.tensor(source, dtype=torch.long)

            def run_marian():
                with torch.inference_mode():
                    model.generate(source_torch, do_sample=False, **kwargs)

            times[key] = {"transformers": median_seconds(run_marian, args.repeats, warmup=1)}
        print(f"  {framework} {key}: {times[key]}", flush=True)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed calls per case after a warm-up, median reported (default 7: on a noisy VM a "
                             "slow spell can decide the median of 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="batch 1 and 32 with 24 new tokens only")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "generate.json"))
    parser.add_argument("--backends", nargs="+", choices=["tensorflow", "jax", "torch"], default=["tensorflow"],
                        help="Keras backends to decode ours on (each in its own process; jit on JAX, eager on PyTorch)")
    parser.add_argument("--framework", choices=["ours", "transformers"], help=argparse.SUPPRESS)  # child process
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.framework:
        Path(args.json).write_text(json.dumps(time_framework(args.framework, args)))
        return

    from vanilla_transformer.precision import cpu_kind  # here: the transformers child must not load TensorFlow

    print(f"CPU: {cpu_kind()}; threads {args.threads}", flush=True)
    # Each framework runs in its own process: in one process, one framework's idle thread pools (PyTorch's
    # OpenMP threads spin after each call) slow the other down.
    times = {}
    runs = [("ours", backend) for backend in args.backends] + [("transformers", "tensorflow")]
    for framework, backend in runs:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "times.json"
            command = [sys.executable, str(Path(__file__).resolve()), "--framework", framework, "--json", str(out),
                       "--repeats", str(args.repeats), "--threads", str(args.threads)] + (["--quick"] if args.quick
                                                                                          else [])
            subprocess.run(command, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                                                         KERAS_BACKEND=backend))
            for key, value in json.loads(out.read_text()).items():
                times.setdefault(key, {}).update(value)
    rows = []
    columns = [("ours" if b == "tensorflow" else f"ours_{b}") + "_cached" for b in args.backends]
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
                                             "cpu_kind": cpu_kind(), "separate_processes": True, "rows": rows},
                                            indent=2))
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
