"""How high can the training step's MFU go? The step's own matrix products timed alone, beside the step.

    python benchmarks/mfu_ceiling.py [--sizes 256 512] [--steps 12] [--threads 2] [--output FILE]

The published figures: ``python benchmarks/mfu_ceiling.py --sizes 256 512 --steps 8``.

``bench_train.py`` reports MFU = model FLOPs per step / step time / a float32 ``tf.matmul`` peak (2048^3,
oneDNN). This script splits that figure, in one process on one thread count, for each size of
``bench_train.SIZES``:

- **peak**: the same 2048^3 ``tf.matmul`` (TensorFlow's oneDNN kernel), and the same product compiled by XLA
  (the training step runs under XLA, whose CPU dots are its own kernels), each the highest of three
  measurements (before, between and after the others);
- **matmuls alone**: exactly the matrix products one training step of the model computes -- each weight
  matrix's forward product ``X W`` and its two backward products ``dY W^T`` and ``X^T dY``, the attention
  scores and weighted values with their backward products -- in one XLA program that does nothing else, on
  random inputs. Their FLOPs are ``bench_train.model_flops``' count, so model FLOPs / this time is the MFU a
  step would reach if everything but the matrix products took no time: the ceiling of the MFU;
- **optimizer alone**: the model's Adam update of all its variables (``compile()``'s optimizer, one XLA
  program), which reads and writes 4 float32 values per parameter and does no matrix product;
- **training step**: ``train_on_batch`` as ``bench_train.py``'s ``ours_xla`` peer.

Times are medians over ``--steps`` calls after 2 untimed ones. Prints one table per size and writes JSON. The
share of the step the matrix products take does not depend on the peak: the step's MFU can rise at most by
the factor step time / products time, whatever else is made faster.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_train  # noqa: E402  (SIZES, model_flops, our_config, median_seconds)


def step_products(size: dict) -> list[tuple[int, int, int, int]]:
    """The matrix products of one forward pass as (batch, M, K, N): ``[batch, M, K] @ [batch, K, N]``.

    Per encoder layer (M = source tokens): Q, K, V, O projections and the two feed-forward matrices; per
    decoder layer (M = target tokens): self-attention Q, K, V, O, cross-attention Q and O, the feed-forward
    matrices, and the cross-attention K, V projections of the source tokens; the output projection; per
    layer and head the attention scores ``Q K^T`` and weighted values ``A V``.
    """
    d, ff, layers, vocab = size["d_model"], size["d_ff"], size["layers"], size["vocab"]
    batch, src, tgt, heads = size["batch"], size["src_len"], size["tgt_len"], size["heads"]
    source, target, head_dim, groups = batch * src, batch * tgt, d // heads, batch * heads
    encoder = [(1, source, d, d)] * 4 + [(1, source, d, ff), (1, source, ff, d)]
    encoder += [(groups, src, head_dim, src), (groups, src, src, head_dim)]
    decoder = [(1, target, d, d)] * 6 + [(1, source, d, d)] * 2 + [(1, target, d, ff), (1, target, ff, d)]
    decoder += [(groups, tgt, head_dim, tgt), (groups, tgt, tgt, head_dim)]
    decoder += [(groups, tgt, head_dim, src), (groups, tgt, src, head_dim)]
    return layers * (encoder + decoder) + [(1, target, d, vocab)]


def time_products(products, repeats: int) -> tuple[float, float]:
    """Median seconds of one XLA program computing each forward product and its two backward products
    (``dY B^T``, ``A^T dY``); returns (seconds, FLOPs computed)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def tensor(*shape):
        return tf.constant(rng.standard_normal(shape, dtype=np.float32))

    operands = [(tensor(g, m, k), tensor(g, k, n), tensor(g, m, n)) for g, m, k, n in products]

    @tf.function(jit_compile=True)
    def all_products(operands):
        outputs = []
        for a, b, grad in operands:
            outputs += [tf.matmul(a, b), tf.matmul(grad, b, transpose_b=True), tf.matmul(a, grad, transpose_a=True)]
        return outputs

    seconds = bench_train.median_seconds(lambda: [t.numpy() for t in all_products(operands)[:1]], repeats)
    return seconds, float(sum(6 * g * m * k * n for g, m, k, n in products))


def peaks(n: int, repeats: int) -> dict:
    """float32 n^3 matmul FLOP/s: TensorFlow's kernel (bench_train's peak) and XLA's."""
    import numpy as np
    import tensorflow as tf

    a = tf.constant(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    xla_matmul = tf.function(tf.matmul, jit_compile=True)
    eager = bench_train.median_seconds(lambda: tf.matmul(a, a)[0, 0].numpy(), repeats)
    xla = bench_train.median_seconds(lambda: xla_matmul(a, a)[0, 0].numpy(), repeats)
    return {"tensorflow_flops_per_s": 2 * n ** 3 / eager, "xla_flops_per_s": 2 * n ** 3 / xla}


def time_step_and_optimizer(size: dict, args) -> dict:
    """The ``ours_xla`` training step (median seconds) and the model's Adam update alone, both under XLA."""
    import keras
    import tensorflow as tf

    from vanilla_transformer import TransformerForSeq2SeqLM

    keras.utils.set_random_seed(args.seed)
    model = TransformerForSeq2SeqLM(bench_train.our_config(size)).build_weights()
    model.compile(jit_compile=True)
    (source, decoder_inputs, labels), = bench_train.synthetic_batches(size, 1, args.seed)
    inputs = {"input_ids": tf.constant(source), "decoder_input_ids": tf.constant(decoder_inputs)}
    step = bench_train.median_seconds(lambda: model.train_on_batch(inputs, tf.constant(labels)), args.steps)
    variables = model.trainable_variables
    gradients = [tf.ones_like(v) * 1e-6 for v in variables]

    @tf.function(jit_compile=True)
    def update(gradients):
        model.optimizer.apply(gradients, variables)

    optimizer = bench_train.median_seconds(lambda: (update(gradients), variables[0].numpy()), args.steps)
    return {"step_s": step, "optimizer_s": optimizer, "params": int(model.count_params())}


def measure(size_name: str, args) -> dict:
    """One size's figures. The peaks are measured before, between and after the other timings and the
    highest kept: on the 2-core VM this was built on, a 2048^3 ``tf.matmul`` ran at 213 or 374 GFLOP/s within
    one process, minutes apart, and a low peak would inflate every MFU."""
    size = bench_train.SIZES[size_name]
    flops = bench_train.model_flops(size)["flops_per_step"]
    peak_runs = [peaks(args.matmul_n, args.steps)]
    products_s, products_flops = time_products(step_products(size), args.steps)
    peak_runs.append(peaks(args.matmul_n, args.steps))
    timings = time_step_and_optimizer(size, args)
    peak_runs.append(peaks(args.matmul_n, args.steps))
    peak = {key: max(run[key] for run in peak_runs) for key in peak_runs[0]}
    result = {"size": size_name, "config": size, "threads": args.threads, "model_flops_per_step": flops,
              "products_flops_per_step": products_flops, "products_s": products_s, **peak, **timings,
              "peak_runs": peak_runs}
    reference = result["tensorflow_flops_per_s"]
    result.update(mfu_ceiling=flops / products_s / reference, mfu=flops / result["step_s"] / reference,
                  products_share=products_s / result["step_s"],
                  xla_peak_share=result["xla_flops_per_s"] / reference,
                  rest_s=result["step_s"] - products_s - result["optimizer_s"])
    return result


def print_result(r: dict) -> None:
    step = r["step_s"]
    print(f"size {r['size']} ({r['params']:,} parameters), {r['threads']} threads; float32 peak "
          f"{r['tensorflow_flops_per_s'] / 1e9:.1f} GFLOP/s (tf.matmul), XLA's dot {r['xla_flops_per_s'] / 1e9:.1f} "
          f"({r['xla_peak_share']:.1%} of it)")
    print(f"  training step      {step * 1e3:8.1f} ms  MFU {r['mfu']:.1%}")
    print(f"  matmuls alone      {r['products_s'] * 1e3:8.1f} ms  ({r['products_share']:.1%} of the step): "
          f"MFU ceiling {r['mfu_ceiling']:.1%}")
    print(f"  optimizer alone    {r['optimizer_s'] * 1e3:8.1f} ms  ({r['optimizer_s'] / step:.1%} of the step)")
    print(f"  everything else    {r['rest_s'] * 1e3:8.1f} ms  ({r['rest_s'] / step:.1%} of the step)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=sorted(bench_train.SIZES), default=["256", "512"])
    parser.add_argument("--steps", type=int, default=12, help="timed calls per measurement (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--matmul-n", type=int, default=2048, help="size of the peak's square matmul")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(bench_train.RESULTS / "mfu_ceiling.json"),
                        help="JSON file for the figures (default: benchmarks/results/mfu_ceiling.json)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    bench_train.set_tf_threads(args.threads)
    print(f"CPU: {bench_train.describe_cpu()}", flush=True)
    results = []
    for size_name in args.sizes:
        results.append(measure(size_name, args))
        print_result(results[-1])
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
