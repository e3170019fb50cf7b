"""One-command check of a machine with an accelerator: training steps/s and MFU of transformer-base and
transformer-big in bfloat16 with XLA, ``generate`` throughput, peak memory, as JSON, in under 5 minutes.

    python benchmarks/gpu_check.py [--output PATH] [--cpu-smoke] [--sizes base big] [--steps 30] [--warmup 3]
                                   [--budget-s 280]

What it runs, in one process, under Keras' ``mixed_bfloat16`` policy (float32 weights and optimizer state,
bfloat16 compute) with ``jit_compile=True``:

- **training**: the paper's presets (``TransformerConfig.from_preset("transformer-base" / "transformer-big")``,
  vocab 37,000, dropout 0.1 / 0.3) on seeded synthetic batches of 384 sentences x 64 source + 64 target
  tokens (about the paper's 25,000 tokens a side per batch), ``compile()``'s defaults otherwise (Adam on the
  warm-up schedule, label-smoothed loss). ``--warmup`` untimed steps (the first compiles), then ``--steps``
  timed ``train_on_batch`` calls (each returns its loss as a number, so the step has finished); steps/s is
  1 / the median step time. Model FLOPs per step are counted from the size as ``bench_train.model_flops``
  does (6 x the weight-matrix parameters each token passes through, plus the attention scores); MFU is the
  achieved FLOP/s over the accelerator's dense bfloat16 peak from its datasheet (``PEAK_BF16_FLOPS``,
  matched by device name; "unknown peak" and no MFU for a device not listed, and on a CPU);
- **generate**: transformer-base with random weights, batch 32, 32-token sources, greedy and beam 4, every
  hypothesis forced to 64 new tokens (``min_new_tokens = max_new_tokens``); new tokens/s = batch x new
  tokens / the median of 5 calls after a compiling call (beams not counted);
- **peak memory** of each phase from the backend's allocator (TensorFlow
  ``tf.config.experimental.get_memory_info("GPU:0")["peak"]``, reset before each phase; JAX
  ``memory_stats()["peak_bytes_in_use"]``; PyTorch ``torch.cuda.max_memory_allocated``), on a CPU the
  process's resident high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``).

Without an accelerator (or with ``--cpu-smoke``) the same code runs tiny versions of the two presets (d_model
32 / 64, one layer each side, batch 4 x 8 + 8) so the script is tested on a CPU (tests/test_gpu_check.py);
its figures then only show that it works. A phase that fails is recorded with its error and the others go
on (exit status 1); a phase that would start after ``--budget-s`` seconds is skipped and says so.
Writes ``benchmarks/results/gpu_check.json`` (``gpu_check_cpu_smoke.json`` in smoke mode) or ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import model_flops, synthetic_batches  # noqa: E402

RESULTS = Path(__file__).parent / "results"
POLICY = "mixed_bfloat16"
# Dense (no sparsity) bfloat16 tensor-core FLOP/s from the vendors' datasheets; the first name fragment found
# in the device's name (upper-cased) wins, so the specific spellings come before the general ones.
PEAK_BF16_FLOPS = (
    ("H100 PCIE", 756e12), ("H100 NVL", 835e12), ("H200 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
    ("TPU V5P", 459e12), ("TPU V5 LITE", 197e12), ("TPU V5E", 197e12), ("TPU V4", 275e12),
)
# name: (preset, overrides of the preset, batch, source length, target length)
TRAIN_SIZES = {
    "gpu": {"base": ("transformer-base", {}, 384, 64, 64), "big": ("transformer-big", {}, 384, 64, 64)},
    "cpu-smoke": {
        "base": ("transformer-base", dict(d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                                          num_decoder_layers=1, vocab_size=128), 4, 8, 8),
        "big": ("transformer-big", dict(d_model=64, num_heads=4, d_ff=128, num_encoder_layers=1,
                                        num_decoder_layers=1, vocab_size=128), 4, 8, 8),
    },
}
# (size, batch, source length, new tokens, timed calls)
GENERATE = {"gpu": ("base", 32, 32, 64, 5), "cpu-smoke": ("base", 2, 8, 4, 1)}
GENERATE_METHODS = (("greedy", 1), ("beam-4", 4))
EOS_ID = 2


def peak_bf16_flops(device_name: str | None) -> float | None:
    """The dense bfloat16 peak FLOP/s of the device called ``device_name``; None when it is not listed."""
    name = (device_name or "").upper()
    return next((peak for fragment, peak in PEAK_BF16_FLOPS if fragment in name), None)


def flops_size(config, batch, src_len, tgt_len):
    """The size dict ``bench_train.model_flops`` counts from, for ``config`` (encoder layers = decoder layers)."""
    return dict(d_model=config.d_model, layers=config.num_encoder_layers, heads=config.num_heads,
                d_ff=config.d_ff, vocab=config.vocab_size, batch=batch, src_len=src_len, tgt_len=tgt_len)


# ---------------------------------------------------------------------------------------------- memory
class MemoryProbe:
    """Peak memory of a phase from the backend's allocator on an accelerator, else the process's RSS peak."""

    def __init__(self, accelerated: bool):
        import keras

        self.backend = keras.backend.backend() if accelerated else "cpu"
        self.source = {"tensorflow": 'tf.config.experimental.get_memory_info("GPU:0")["peak"]',
                       "jax": 'jax.local_devices()[0].memory_stats()["peak_bytes_in_use"] (not reset)',
                       "torch": "torch.cuda.max_memory_allocated()",
                       "cpu": "VmHWM of /proc/self/status (process resident set high-water mark)"}[self.backend]

    def reset(self):
        if self.backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
        elif self.backend == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()
        elif self.backend == "cpu":
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass  # the high-water mark then covers the process's life

    def peak_bytes(self) -> int | None:
        if self.backend == "tensorflow":
            import tensorflow as tf

            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        if self.backend == "jax":
            import jax

            return int(jax.local_devices()[0].memory_stats().get("peak_bytes_in_use", 0)) or None
        if self.backend == "torch":
            import torch

            return int(torch.cuda.max_memory_allocated())
        return resident_peak_bytes()


def resident_peak_bytes() -> int | None:
    """``VmHWM`` of this process in bytes (Linux), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    scale = 1 if platform.system() == "Darwin" else 1024  # macOS reports bytes, Linux kilobytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# ---------------------------------------------------------------------------------------------- phases
def build_model(preset, overrides, seed):
    import keras

    from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM

    keras.utils.set_random_seed(seed)
    return TransformerForSeq2SeqLM(TransformerConfig.from_preset(preset, **overrides)).build_weights()


def train_phase(spec, args, memory, peak_flops):
    """Steps/s, tokens/s, FLOPs, MFU and peak memory of ``spec``'s training step in bfloat16 with XLA."""
    from keras import ops

    preset, overrides, batch, src_len, tgt_len = spec
    model = build_model(preset, overrides, args.seed)
    model.compile(jit_compile=True)
    size = flops_size(model.config, batch, src_len, tgt_len)
    data = [({"input_ids": ops.convert_to_tensor(src), "decoder_input_ids": ops.convert_to_tensor(dec)},
             ops.convert_to_tensor(labels))
            for src, dec, labels in synthetic_batches(size, min(args.warmup + args.steps, 4), args.seed)]
    memory.reset()
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        losses.append(float(model.train_on_batch(*data[i % len(data)], return_dict=True)["loss"]))
        times.append(time.perf_counter() - start)
    median = statistics.median(times[args.warmup:])
    flops = model_flops(size)
    achieved = flops["flops_per_step"] / median
    return {"preset": preset, "config": size, "params": int(model.count_params()),
            "compute_dtype": model.dtype_policy.compute_dtype, "jit_compile": bool(model.jit_compile),
            "steps_per_s": 1.0 / median, "tokens_per_s": flops["tokens_per_step"] / median,
            "step_time_median_s": median, "first_step_s": times[0], "tokens_per_step": flops["tokens_per_step"],
            "flops_per_step": flops["flops_per_step"], "achieved_flops_per_s": achieved,
            "peak_flops_per_s": peak_flops, "mfu": achieved / peak_flops if peak_flops else None,
            "loss_first": losses[0], "loss_last": losses[-1], "peak_memory_bytes": memory.peak_bytes()}


def generate_phase(model, method, beams, spec, memory):
    """New tokens/s of ``model.generate`` at ``spec``'s batch, every hypothesis forced to full length."""
    import numpy as np

    _, batch, source_len, new_tokens, repeats = spec
    source = np.random.default_rng(batch).integers(4, model.config.vocab_size, (batch, source_len)).astype("int32")
    source[:, -1] = EOS_ID
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams, eos_token_id=EOS_ID)
    memory.reset()
    start = time.perf_counter()
    output = model.generate(source, **kwargs)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(source, **kwargs)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"method": method, "num_beams": beams, "batch": batch, "source_length": source_len,
            "new_tokens": new_tokens, "output_shape": list(np.shape(output)), "call_s": median,
            "first_call_s": first, "new_tokens_per_s": batch * new_tokens / median,
            "peak_memory_bytes": memory.peak_bytes()}


def guarded(results, key, budget_left, phase):
    """Run ``phase()`` into ``results[key]``: skipped past the budget, its error recorded if it fails."""
    if budget_left() <= 0:
        results[key] = {"skipped": "over the time budget (--budget-s)"}
        print(f"  {key}: skipped, over the time budget", flush=True)
        return
    try:
        results[key] = phase()
    except Exception as err:  # one failed phase (out of memory, say) must not hide the others' figures
        results[key] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        print(f"  {key}: FAILED: {type(err).__name__}: {err}", flush=True)
        return
    print("  " + describe(key, results[key]), flush=True)


# ---------------------------------------------------------------------------------------------- report
def gib(nbytes):
    return f"{nbytes / 2 ** 30:.2f} GiB" if nbytes else "unknown"


def flop(x):
    """``x`` FLOP with a prefix that keeps 3-4 digits: 5.03 TFLOP, 4.72 MFLOP."""
    scale, prefix = next(((s, p) for s, p in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")) if x >= s), (1, ""))
    return f"{x / scale:.3g} {prefix}FLOP"


def describe(key, r):
    if "steps_per_s" in r:
        mfu = (f"MFU {r['mfu']:.1%} of {flop(r['peak_flops_per_s'])}/s" if r["mfu"] is not None
               else "MFU: unknown peak")
        return (f"train {key}: {r['steps_per_s']:.2f} steps/s, {r['tokens_per_s']:,.0f} tokens/s, "
                f"{flop(r['flops_per_step'])}/step, {flop(r['achieved_flops_per_s'])}/s, "
                f"{mfu}; peak memory {gib(r['peak_memory_bytes'])}; first step {r['first_step_s']:.1f} s; "
                f"loss {r['loss_first']:.3f}->{r['loss_last']:.3f}")
    return (f"generate {key}: batch {r['batch']} x {r['new_tokens']} new tokens, "
            f"{r['new_tokens_per_s']:,.0f} new tokens/s ({r['call_s'] * 1e3:.1f} ms a call, first "
            f"{r['first_call_s']:.1f} s); peak memory {gib(r['peak_memory_bytes'])}")


def device_info(mode, accelerators):
    import keras

    from vanilla_transformer.precision import cpu_kind, hardware_kind

    name = accelerators[0].name if accelerators and mode == "gpu" else None
    versions = {"keras": keras.__version__, "python": platform.python_version()}
    backend = keras.backend.backend()
    if backend in ("tensorflow", "jax", "torch"):
        versions[backend] = __import__(backend).__version__
    return {"mode": mode, "backend": backend, "hardware": hardware_kind(accelerators=accelerators),
            "accelerators": [a._asdict() for a in accelerators], "device_name": name, "cpu_kind": cpu_kind(),
            "peak_bf16_flops_per_s": peak_bf16_flops(name), "versions": versions}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/gpu_check.json)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes, also on an accelerator")
    parser.add_argument("--sizes", nargs="+", choices=("base", "big"), default=["base", "big"])
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first compiles)")
    parser.add_argument("--budget-s", type=float, default=280.0, help="no phase starts after this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1 (the first warm-up step compiles)")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    import keras

    from vanilla_transformer.precision import find_accelerators

    accelerators = find_accelerators()
    mode = "cpu-smoke" if args.cpu_smoke or not accelerators else "gpu"
    info = device_info(mode, accelerators)
    peak = info["peak_bf16_flops_per_s"]
    print(f"{info['hardware']}; {mode}; backend {info['backend']}; {POLICY}, XLA on; "
          + (f"peak {flop(peak)}/s bf16 dense" if peak else "unknown peak (no MFU)"), flush=True)
    keras.mixed_precision.set_global_policy(POLICY)
    memory = MemoryProbe(accelerated=bool(accelerators))  # --cpu-smoke on a GPU still computes there
    budget_left = lambda: args.budget_s - (time.perf_counter() - started)  # noqa: E731
    train, generate = {}, {}
    for name in args.sizes:
        spec = TRAIN_SIZES[mode][name]
        guarded(train, spec[0], budget_left, lambda spec=spec: train_phase(spec, args, memory, peak))
    gen_spec = GENERATE[mode]
    preset, overrides = TRAIN_SIZES[mode][gen_spec[0]][:2]
    model = build_model(preset, overrides, args.seed)
    for method, beams in GENERATE_METHODS:
        guarded(generate, method, budget_left,
                lambda method=method, beams=beams: generate_phase(model, method, beams, gen_spec, memory))
    summary = {**info, "policy": POLICY, "jit_compile": True, "generate_preset": preset, "train": train,
               "generate": generate, "memory_source": memory.source, "budget_s": args.budget_s,
               "wall_s": time.perf_counter() - started, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    output = Path(args.output or RESULTS / ("gpu_check.json" if mode == "gpu" else "gpu_check_cpu_smoke.json"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=2))
    print(f"wrote {output}; {summary['wall_s']:.0f} s", flush=True)
    return 1 if any("error" in r for r in [*train.values(), *generate.values()]) else 0


if __name__ == "__main__":
    sys.exit(main())
