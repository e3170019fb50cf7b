"""Training speed: our TransformerForSeq2SeqLM (XLA on / off) vs transformers' PyTorch Marian vs KerasHub layers.

    python benchmarks/bench_train.py [--sizes 256 512] [--steps 20] [--warmup 5] [--threads 2] [--repeats 1]
                                     [--backends tensorflow jax torch]
                                     [--peers ours_xla ours_eager ours_bf16 marian marian_bf16 keras_hub_xla
                                      keras_hub_eager] [--quick]

``--quick`` is a smoke test (size "tiny", 3 timed steps after 2 warm-up steps, a 1024 matmul peak).
Needs torch (the CPU build), transformers and ``keras-hub``. Writes ``benchmarks/results/train_<size>.json``
per size and ``benchmarks/results/train.png`` (``train_quick.png`` with ``--quick``).

One invocation trains, on the same machine with the same thread count, the same model size on the same
synthetic batches (random ids from a seeded numpy generator, source and target at full length with no
padding and no masks, decoder inputs = targets shifted right behind id 1, labels = targets):

- ``ours_xla`` / ``ours_eager``: ``vanilla_transformer.TransformerForSeq2SeqLM`` with its ``compile()``
  defaults (Adam(0.9, 0.98, 1e-9) on the paper's warm-up schedule, label-smoothed (0.1) cross-entropy,
  token accuracy) and ``jit_compile=True`` / ``False``. "eager" is the brief's name: with XLA off Keras
  still runs the step as a ``tf.function`` graph, not op by op (``run_eagerly`` stays False);
- ``marian``: transformers' ``MarianMTModel`` of identical size (relu, scaled embeddings, dropout 0.1,
  no attention / activation dropout, tied embeddings), trained by a plain loop (zero_grad, forward,
  label-smoothed cross-entropy (0.1), backward, step) with ``torch.optim.Adam(betas=(0.9, 0.98), eps=1e-9)``
  on the same warm-up schedule (``LambdaLR``);
- ``ours_bf16`` / ``marian_bf16``: the same two models in bfloat16 mixed precision, float32 weights and
  optimizer state: ours under Keras' ``mixed_bfloat16`` policy with ``compile()``'s automatic choice, which on
  a CPU with AVX512-BF16 or AMX is XLA off (XLA's CPU backend computes bfloat16 dots in float32; TensorFlow's
  oneDNN kernels use the AVX512-BF16 instructions), Marian under ``torch.autocast("cpu", dtype=torch.bfloat16)``
  around forward and loss (PyTorch's recipe). The CPU this was built on has AVX512-BF16 but no AMX;
- ``keras_hub_xla`` / ``keras_hub_eager``: the recipe of keras.io's KerasHub translation example --
  ``TokenAndPositionEmbedding`` (learned positions, separate source / target tables) + N
  ``keras_hub.layers.TransformerEncoder`` + N ``TransformerDecoder`` + a ``Dense(vocab)`` head -- with
  embedding dropout 0.1 added, the same loss, metric and optimizer as ours, XLA on / off. KerasHub's
  ``dropout=0.1`` also drops attention probabilities (ours and Marian do not): that is the recipe.

Each peer runs in its own child process (``python bench_train.py --peer NAME --size S --json OUT``) so
that a failure, a memory high-water mark or a thread pool of one cannot touch another; a peer that fails
prints its error and the others go on.

``--repeats N`` runs every peer N times, round-robin over the peers (fresh processes each time), and
reports each peer's fastest run; all runs' tokens/s are kept in the JSON (``runs_tokens_per_s``). On the
2-core VM this was built on, one process out of a few ran 10-12% slower for its whole life (the same
code, alternately 5,330 and 5,890 tokens/s), so single runs can mislead in either direction.

Figures (per size and peer):

- tokens/s = (source + target tokens of one batch) / median step time over ``--steps`` timed steps, after
  ``--warmup`` untimed steps (the first of which includes tracing and XLA compilation, reported as
  ``first_step_s``). A Keras step is one ``train_on_batch`` (its logs come back as numpy, so the step is
  finished); a torch step ends with ``optimizer.step()`` (CPU ops are synchronous).
- ratio = tokens/s of ``ours_xla`` / tokens/s of the peer (> 1: ours is faster); ``bf16/peer`` the same
  for ``ours_bf16``. Like for like is ours_xla / marian (float32) and ours_bf16 / marian_bf16 (bfloat16).
- memory: peak resident set size of the peer's process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``),
  over its whole life (``peak_rss_mb``, includes the framework imports) and over the training steps only
  (``train_peak_rss_mb``: the high-water mark is reset through ``/proc/self/clear_refs`` just before the
  first step), plus the RSS just before the first step (``baseline_rss_mb``: imports, weights, batches).
  ``train_extra_mb`` = train peak - baseline: activations, gradients, optimizer state, compiled programs.
- model FLOP utilisation (MFU): achieved FLOP/s = model FLOPs per step x steps/s, over the float32 matmul
  peak measured in the same run (``tf.matmul`` of two n x n matrices, n = 2048, median of 10 after 2
  warm-ups, 2 n^3 / t, same thread count, its own child process). Model FLOPs per step are counted from
  the size, identically for every peer: 6 x (weight-matrix parameters a token passes through) per token,
  i.e. encoder layers (4 d^2 + 2 d d_ff) for source tokens, decoder layers (6 d^2 + 2 d d_ff, plus
  the cross-attention K/V projections 2 d^2 applied to source tokens) and the output projection d x vocab
  for target tokens; biases, LayerNorm, softmax, embedding lookups are not counted. Attention scores add
  3 x 4 d (S^2 + T^2 + T S) per layer per sequence (QK^T and AV, forward + 2 x backward, full causal
  square). ``mfu`` includes them, ``mfu_params_only`` does not. For the bfloat16 peers the peak is the
  bfloat16 ``tf.matmul`` (oneDNN, XLA off) of the same matrices, measured in the same child.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SIZES = {
    "256": dict(d_model=256, layers=3, heads=4, d_ff=1024, vocab=8000, batch=64, src_len=24, tgt_len=24),
    "512": dict(d_model=512, layers=6, heads=8, d_ff=2048, vocab=16000, batch=32, src_len=32, tgt_len=32),
    "tiny": dict(d_model=64, layers=2, heads=4, d_ff=256, vocab=1000, batch=8, src_len=16, tgt_len=16),
}
PEERS = ("ours_xla", "ours_eager", "ours_bf16", "marian", "marian_bf16", "keras_hub_xla", "keras_hub_eager")
BACKEND_PEERS = {"jax": "ours_jax", "torch": "ours_torch"}  # ours on another Keras backend, its compile() defaults
REFERENCE = "ours_xla"
BF16_REFERENCE = "ours_bf16"
DROPOUT = 0.1
LABEL_SMOOTHING = 0.1
MAX_POSITIONS = 256
START_ID = 1
WARMUP_SCHEDULE_STEPS = 4000
RESULTS = Path(__file__).parent / "results"


# ---------------------------------------------------------------------------------------------- counting
def model_flops(size):
    """Model FLOPs of one training step (forward + backward), counted from the size alone (see the top)."""
    d, ff, n, v = size["d_model"], size["d_ff"], size["layers"], size["vocab"]
    s, t, b = size["src_len"], size["tgt_len"], size["batch"]
    per_source_token = n * (4 * d * d + 2 * d * ff) + n * 2 * d * d  # encoder + decoder cross-attn K/V
    per_target_token = n * (6 * d * d + 2 * d * ff) + d * v  # decoder self/cross Q,O + FFN + output
    params_flops = 6 * b * (s * per_source_token + t * per_target_token)
    attention_flops = 3 * b * n * 4 * d * (s * s + t * t + t * s)
    tokens = b * (s + t)
    return {"tokens_per_step": tokens,
            "weight_params_per_source_token": per_source_token,
            "weight_params_per_target_token": per_target_token,
            "params_used_per_token": params_flops / (6 * tokens),
            "flops_per_step_params_only": params_flops,
            "attention_flops_per_step": attention_flops,
            "flops_per_step": params_flops + attention_flops}


def synthetic_batches(size, count, seed):
    """``count`` batches of random ids in [4, vocab): source, decoder inputs (shifted targets), labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        source = rng.integers(4, size["vocab"], size=(size["batch"], size["src_len"])).astype("int32")
        labels = rng.integers(4, size["vocab"], size=(size["batch"], size["tgt_len"])).astype("int32")
        decoder_inputs = np.concatenate([np.full((size["batch"], 1), START_ID, "int32"), labels[:, :-1]], axis=1)
        batches.append((source, decoder_inputs, labels))
    return batches


def warmup_schedule(d_model):
    """The paper's learning rate at 0-based step ``i`` (the same formula as ours TransformerSchedule)."""
    return lambda i: d_model ** -0.5 * min((i + 1) ** -0.5, (i + 1) * WARMUP_SCHEDULE_STEPS ** -1.5)


def describe_cpu():
    """Which kind of CPU the figures come from, e.g. "AMD EPYC, avx2 fma, no native bf16" (imported here, not at
    the top: the torch peers' processes must not load TensorFlow)."""
    from vanilla_transformer.precision import cpu_kind

    return cpu_kind()


# ---------------------------------------------------------------------------------------------- memory
def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def _peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _reset_peak_rss():
    """Reset the RSS high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- peers
def set_tf_threads(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _keras_training(model, batches, args, size):
    """Time ``train_on_batch`` of a compiled Keras model on dict inputs (tensors of the backend in use)."""
    from keras import ops

    data = [({"input_ids": ops.convert_to_tensor(src), "decoder_input_ids": ops.convert_to_tensor(dec)},
             ops.convert_to_tensor(lab)) for src, dec, lab in batches]
    return _timed_loop(lambda i: float(model.train_on_batch(*data[i % len(data)], return_dict=True)["loss"]),
                       args, size)


def _timed_loop(step, args, size):
    """Run warm-up then timed steps of ``step(i) -> loss``; times, losses and memory."""
    baseline = _rss_mb()
    peak_before = _peak_rss_mb()
    reset = _reset_peak_rss()
    warmup_times, times, losses = [], [], []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = step(i)
        elapsed = time.perf_counter() - start
        (warmup_times if i < args.warmup else times).append(elapsed)
        losses.append(loss)
    median = statistics.median(times)
    train_peak = _peak_rss_mb()
    tokens = size["batch"] * (size["src_len"] + size["tgt_len"])
    result = {"tokens_per_s": tokens / median, "step_time_median_s": median,
              "step_time_min_s": min(times), "step_time_max_s": max(times), "step_times_s": times,
              "first_step_s": warmup_times[0] if warmup_times else None, "warmup_times_s": warmup_times,
              "loss_first": losses[0], "loss_last": losses[-1],
              "baseline_rss_mb": baseline, "peak_rss_mb": max(peak_before, train_peak)}
    if reset:
        result["train_peak_rss_mb"] = train_peak
        result["train_extra_mb"] = train_peak - baseline
    return result


def _set_threads(threads):
    """The thread count of the Keras backend in use (JAX's CPU client takes the process's cores)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        set_tf_threads(threads)
    elif keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(threads)


def our_config(size):
    """Our ``TransformerConfig`` for a size: dropout 0.1 on the sublayer outputs and embeddings only (as
    Marian's), label smoothing 0.1."""
    from vanilla_transformer import TransformerConfig

    return TransformerConfig(vocab_size=size["vocab"], d_model=size["d_model"], num_heads=size["heads"],
                             d_ff=size["d_ff"], num_encoder_layers=size["layers"], num_decoder_layers=size["layers"],
                             dropout=DROPOUT, attention_dropout=0.0, activation_dropout=0.0,
                             label_smoothing=LABEL_SMOOTHING, max_position_embeddings=MAX_POSITIONS)


def peer_ours(args, size, xla, bf16=False):
    """Our model with ``compile()``'s defaults on the Keras backend of this process (KERAS_BACKEND)."""
    import keras

    from vanilla_transformer import TransformerForSeq2SeqLM

    _set_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    if bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = TransformerForSeq2SeqLM(our_config(size)).build_weights()
    # the paper's Adam, schedule, smoothed loss and accuracy; bf16: compile's own choice ("auto")
    model.compile(jit_compile="auto" if bf16 or xla is None else xla)
    batches = synthetic_batches(size, min(args.warmup + args.steps, 8), args.seed)
    result = _keras_training(model, batches, args, size)
    backend = keras.backend.backend()
    result.update(params=int(model.count_params()), jit_compile=bool(model.jit_compile),
                  compute_dtype=model.dtype_policy.compute_dtype, backend=backend,
                  versions={backend: __import__(backend).__version__, "keras": keras.__version__})
    return result


def peer_keras_hub(args, size, xla):
    import keras
    import keras_hub
    import tensorflow as tf

    from vanilla_transformer.losses import MaskedAccuracy, MaskedSparseCrossEntropy
    from vanilla_transformer.optimization import PAPER_ADAM, TransformerSchedule

    set_tf_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    d, heads, ff, vocab = size["d_model"], size["heads"], size["d_ff"], size["vocab"]

    def embed(ids, name):
        x = keras_hub.layers.TokenAndPositionEmbedding(vocab, MAX_POSITIONS, d, name=name)(ids)
        return keras.layers.Dropout(DROPOUT)(x)

    encoder_inputs = keras.Input(shape=(None,), dtype="int32", name="input_ids")
    decoder_inputs = keras.Input(shape=(None,), dtype="int32", name="decoder_input_ids")
    x = embed(encoder_inputs, "encoder_embedding")
    for i in range(size["layers"]):
        x = keras_hub.layers.TransformerEncoder(intermediate_dim=ff, num_heads=heads, dropout=DROPOUT,
                                                activation="relu", name=f"encoder_{i}")(x)
    y = embed(decoder_inputs, "decoder_embedding")
    for i in range(size["layers"]):
        y = keras_hub.layers.TransformerDecoder(intermediate_dim=ff, num_heads=heads, dropout=DROPOUT,
                                                activation="relu", name=f"decoder_{i}")(
            decoder_sequence=y, encoder_sequence=x)
    logits = keras.layers.Dense(vocab, name="lm_head")(y)
    model = keras.Model({"input_ids": encoder_inputs, "decoder_input_ids": decoder_inputs}, logits)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=TransformerSchedule(d, WARMUP_SCHEDULE_STEPS),
                                                  **PAPER_ADAM),
                  loss=MaskedSparseCrossEntropy(label_smoothing=LABEL_SMOOTHING), metrics=[MaskedAccuracy()],
                  jit_compile=xla)
    batches = synthetic_batches(size, min(args.warmup + args.steps, 8), args.seed)
    result = _keras_training(model, batches, args, size)
    result.update(params=int(model.count_params()), jit_compile=bool(model.jit_compile),
                  versions={"tensorflow": tf.__version__, "keras": keras.__version__,
                            "keras_hub": keras_hub.__version__})
    return result


def peer_marian(args, size, bf16=False):
    import torch
    import transformers
    from transformers import MarianConfig, MarianMTModel

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:  # already set
        pass
    torch.manual_seed(args.seed)
    config = MarianConfig(vocab_size=size["vocab"], d_model=size["d_model"], encoder_layers=size["layers"],
                          decoder_layers=size["layers"], encoder_attention_heads=size["heads"],
                          decoder_attention_heads=size["heads"], encoder_ffn_dim=size["d_ff"],
                          decoder_ffn_dim=size["d_ff"], max_position_embeddings=MAX_POSITIONS, pad_token_id=0,
                          eos_token_id=2, decoder_start_token_id=START_ID, forced_eos_token_id=None,
                          dropout=DROPOUT, attention_dropout=0.0, activation_dropout=0.0,
                          activation_function="relu", scale_embedding=True)
    model = MarianMTModel(config)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_schedule(size["d_model"]))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    batches = [tuple(torch.tensor(a, dtype=torch.long) for a in batch)
               for batch in synthetic_batches(size, min(args.warmup + args.steps, 8), args.seed)]

    def step(i):
        source, decoder_inputs, labels = batches[i % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=source, decoder_input_ids=decoder_inputs).logits
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        optimizer.step()
        scheduler.step()
        return float(loss.detach())

    result = _timed_loop(step, args, size)
    result.update(params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                  attn_implementation=getattr(model.config, "_attn_implementation", None),
                  compute_dtype="bfloat16 (autocast)" if bf16 else "float32",
                  torch_threads=torch.get_num_threads(),
                  versions={"torch": torch.__version__, "transformers": transformers.__version__})
    return result


def median_seconds(fn, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peer_matmul(args):
    """float32 matmul peak in TensorFlow (and, for reference, torch) on ``args.threads`` threads."""
    import numpy as np
    import tensorflow as tf

    set_tf_threads(args.threads)
    n = args.matmul_n
    a_np = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a, b = tf.constant(a_np), tf.constant(a_np.T.copy())

    t_tf = median_seconds(lambda: tf.matmul(a, b)[0, 0].numpy())
    a16, b16 = tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)
    t_tf16 = median_seconds(lambda: tf.matmul(a16, b16)[0, 0].numpy())
    result = {"n": n, "tf_matmul_s": t_tf, "tf_flops_per_s": 2 * n ** 3 / t_tf,
              "tf_bf16_matmul_s": t_tf16, "tf_bf16_flops_per_s": 2 * n ** 3 / t_tf16,
              "versions": {"tensorflow": tf.__version__}}
    try:
        import torch

        torch.set_num_threads(args.threads)
        ta, tb = torch.from_numpy(a_np), torch.from_numpy(a_np.T.copy())
        t_torch = median_seconds(lambda: float(torch.mm(ta, tb)[0, 0]))
        result.update(torch_matmul_s=t_torch, torch_flops_per_s=2 * n ** 3 / t_torch)
    except Exception as err:  # only for reference
        result["torch_error"] = repr(err)
    return result


def run_peer(args):
    """Child process: run one peer, write its JSON (or its error) to ``args.json``."""
    try:
        if args.peer == "matmul":
            result = peer_matmul(args)
        else:
            size = SIZES[args.size]
            if args.peer in ("ours_xla", "ours_eager", "ours_bf16"):
                result = peer_ours(args, size, xla=args.peer == "ours_xla", bf16=args.peer == "ours_bf16")
            elif args.peer in BACKEND_PEERS.values():  # jit on JAX, eager on PyTorch: compile()'s "auto"
                result = peer_ours(args, size, xla=None)
            elif args.peer in ("keras_hub_xla", "keras_hub_eager"):
                result = peer_keras_hub(args, size, xla=args.peer == "keras_hub_xla")
            elif args.peer in ("marian", "marian_bf16"):
                result = peer_marian(args, size, bf16=args.peer == "marian_bf16")
            else:
                raise ValueError(f"unknown peer {args.peer!r}; choose from {PEERS}")
        status = 0
    except Exception as err:
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        traceback.print_exc()
        status = 1
    Path(args.json).write_text(json.dumps(result, indent=2))
    return status


# ---------------------------------------------------------------------------------------------- parent
def spawn(args, peer, size_name=None):
    """Run ``peer`` in a child process; its result dict, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--peer", peer, "--json", str(out),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                   "--seed", str(args.seed), "--matmul-n", str(args.matmul_n)]
        if size_name is not None:
            command += ["--size", size_name]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                   TF_NUM_INTRAOP_THREADS=str(args.threads), TF_NUM_INTEROP_THREADS=str(args.threads),
                   TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                   KERAS_BACKEND={v: k for k, v in BACKEND_PEERS.items()}.get(peer, "tensorflow"))
        start = time.perf_counter()
        try:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
            returncode, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as err:
            stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
            returncode = None
        wall = time.perf_counter() - start
        result = None
        if out.exists():
            try:
                result = json.loads(out.read_text())
            except json.JSONDecodeError:
                result = None
        if result is None:
            why = "timed out" if returncode is None else f"exited with {returncode}"
            result = {"error": f"child {why} without a result"}
        if "error" in result:
            tail = "\n".join(line for line in stderr.splitlines()[-25:])
            result["stderr_tail"] = tail
            print(f"  {peer:<16} FAILED: {result['error']}\n" + "\n".join("    | " + l for l in tail.splitlines()),
                  flush=True)
        result["child_wall_s"] = wall
        return result


def summarize(size_name, size, peers, matmul, args):
    flops = model_flops(size)
    for name, result in peers.items():
        if "tokens_per_s" not in result:
            continue
        peak = matmul.get("tf_bf16_flops_per_s" if name.endswith("bf16") else "tf_flops_per_s")
        steps_per_s = 1.0 / result["step_time_median_s"]
        result["achieved_flops_per_s"] = flops["flops_per_step"] * steps_per_s
        result["achieved_flops_per_s_params_only"] = flops["flops_per_step_params_only"] * steps_per_s
        if peak:
            result["mfu_peak_flops_per_s"] = peak
            result["mfu"] = result["achieved_flops_per_s"] / peak
            result["mfu_params_only"] = result["achieved_flops_per_s_params_only"] / peak

    # The most that any implementation doing the counted FLOPs at a peer's precision could beat that peer by:
    # the in-run matmul peak over the peer's achieved FLOP/s (1 / its MFU). A speed-up target above this
    # ceiling needs more than the machine's matmul throughput, so no code change can reach it.
    ceilings = {name: {"speedup_ceiling": 1.0 / r["mfu"], "mfu_needed_for_1.5x": 1.5 * r["mfu"]}
                for name, r in peers.items() if r.get("mfu")}

    def ratios_of(reference):
        ref = peers.get(reference, {}).get("tokens_per_s")
        return {name: ref / r["tokens_per_s"] for name, r in peers.items()
                if ref and "tokens_per_s" in r and name != reference}

    return {"size": size_name, "config": size, "threads": args.threads, "steps": args.steps,
            "warmup": args.warmup, "seed": args.seed, "flops": flops, "matmul_peak": matmul,
            f"ratio_{REFERENCE}_over": ratios_of(REFERENCE),
            f"ratio_{BF16_REFERENCE}_over": ratios_of(BF16_REFERENCE), "ceilings": ceilings, "peers": peers,
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpu_count": os.cpu_count(), "python": platform.python_version(),
                        "cpu_kind": describe_cpu()},
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "memory_note": "peak_rss_mb: ru_maxrss of the peer's own process over its life; train_peak_rss_mb: "
                           "ru_maxrss over the training steps (reset via /proc/self/clear_refs before step 1); "
                           "baseline_rss_mb: VmRSS just before step 1"}


def print_table(summary):
    size = summary["config"]
    ratios = summary[f"ratio_{REFERENCE}_over"]
    bf16_ratios = summary.get(f"ratio_{BF16_REFERENCE}_over", {})
    print(f"\nsize {summary['size']}: d_model {size['d_model']}, {size['layers']}+{size['layers']} layers, "
          f"{size['heads']} heads, d_ff {size['d_ff']}, vocab {size['vocab']}, batch {size['batch']} x "
          f"{size['src_len']}+{size['tgt_len']} tokens; {summary['threads']} threads; "
          f"{summary['flops']['flops_per_step'] / 1e9:.2f} GFLOP/step "
          f"({summary['flops']['params_used_per_token'] / 1e6:.2f} M weight params/token + attention)")
    header = (f"  {'peer':<16}{'tok/s':>9}{'xla/peer':>9}{'bf16/peer':>10}{'step ms':>9}{'1st s':>7}{'peak MB':>9}"
              f"{'train MB':>9}{'+MB':>7}{'GFLOP/s':>9}{'MFU':>7}{'params M':>9}  loss first->last")
    print(header)
    for name, r in summary["peers"].items():
        if "tokens_per_s" not in r:
            print(f"  {name:<16}FAILED: {r.get('error', '?')}")
            continue
        ratio = "ref" if name == REFERENCE else (f"{ratios[name]:.2f}x" if name in ratios else "-")
        bf16_ratio = "ref" if name == BF16_REFERENCE else (
            f"{bf16_ratios[name]:.2f}x" if name in bf16_ratios else "-")
        train_mb = r.get("train_peak_rss_mb")
        extra_mb = r.get("train_extra_mb")
        mfu = r.get("mfu")
        print(f"  {name:<16}{r['tokens_per_s']:9.0f}{ratio:>9}{bf16_ratio:>10}{r['step_time_median_s'] * 1e3:9.1f}"
              f"{r['first_step_s']:7.1f}{r['peak_rss_mb']:9.0f}"
              f"{(f'{train_mb:.0f}' if train_mb is not None else '-'):>9}"
              f"{(f'{extra_mb:.0f}' if extra_mb is not None else '-'):>7}"
              f"{r['achieved_flops_per_s'] / 1e9:9.2f}{(f'{mfu:.1%}' if mfu is not None else '-'):>7}"
              f"{r['params'] / 1e6:9.2f}  {r['loss_first']:.3f}->{r['loss_last']:.3f}"
              + ("" if name.endswith("bf16") or name in BACKEND_PEERS.values()
                 or r.get("jit_compile", name.endswith("xla")) == name.endswith("xla") else "  (XLA was NOT used)"))
    marian = summary["peers"].get("marian", {}).get("tokens_per_s")
    for name, r in summary["peers"].items():  # one line per backend: the like-for-like ratio to PyTorch Marian
        if marian and name in ("ours_xla", *BACKEND_PEERS.values()) and "tokens_per_s" in r:
            mfu = f", MFU {r['mfu']:.1%}" if r.get("mfu") else ""
            print(f"  {r.get('backend', 'tensorflow'):<10} ours {r['tokens_per_s']:8.0f} tok/s{mfu}: "
                  f"{r['tokens_per_s'] / marian:.2f}x transformers' PyTorch Marian (float32)")
    for name, c in summary.get("ceilings", {}).items():
        if name.startswith("marian"):
            print(f"  ceiling over {name}: {c['speedup_ceiling']:.2f}x at 100% of the in-run matmul peak; "
                  f"1.5x needs {c['mfu_needed_for_1.5x']:.1%} MFU")


def plot(summaries, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(5.5 * len(summaries), 4.2), squeeze=False)
    for ax, summary in zip(axes[0], summaries):
        names = list(summary["peers"])
        values = [summary["peers"][n].get("tokens_per_s", 0.0) for n in names]
        colors = ["tab:blue" if n.startswith("ours") else "tab:orange" if n.startswith("marian") else "tab:green"
                  for n in names]
        bars = ax.bar(range(len(names)), values, color=colors)
        for bar, name, value in zip(bars, names, values):
            label = f"{value:.0f}" if value else "failed"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
        size = summary["config"]
        ax.set_title(f"size {summary['size']} (d {size['d_model']}, {size['layers']}+{size['layers']}, "
                     f"batch {size['batch']}x{size['src_len']}+{size['tgt_len']})", fontsize=9)
        ax.set_ylabel("training tokens / s (src + tgt)")
    fig.suptitle(f"Training throughput, CPU, {summaries[0]['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with the --quick defaults filled in."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=None,
                        help="default 256 512 (tiny with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20, 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps before, compilation included (default 5, 2 with --quick)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--peers", nargs="+", choices=PEERS + tuple(BACKEND_PEERS.values()), default=list(PEERS))
    parser.add_argument("--backends", nargs="+", choices=["tensorflow", *BACKEND_PEERS], default=["tensorflow"],
                        help="Keras backends to train ours on: jax / torch add the peers ours_jax / ours_torch "
                             "(compile() defaults: XLA on JAX, eager on PyTorch) beside the TensorFlow ones")
    parser.add_argument("--quick", action="store_true", help="smoke test: size tiny, few steps, small matmul")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per peer (round-robin, fresh processes); the fastest is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--matmul-n", type=int, default=None, help="matmul peak size (default 2048, 1024 quick)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per peer (default 3600, 600 quick)")
    parser.add_argument("--output-dir", default=str(RESULTS))
    # internal: one peer in a child process
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (3 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    args.matmul_n = args.matmul_n or (1024 if args.quick else 2048)
    args.timeout = args.timeout or (600 if args.quick else 3600)
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1 (the first warm-up step compiles)")
    return args


def run_size(args, size_name: str, matmul: dict, output_dir: Path) -> dict:
    """Every peer at one model size, round-robin over ``--repeats`` (fastest run kept); prints the table and
    writes ``train_<size>.json``. Returns the summary."""
    runs = {peer: [] for peer in args.peers}
    for _ in range(max(1, args.repeats)):
        for peer in args.peers:
            r = spawn(args, peer, size_name)
            runs[peer].append(r)
            if "tokens_per_s" in r:
                print(f"  size {size_name} {peer:<16} {r['tokens_per_s']:9.0f} tok/s "
                      f"(child {r['child_wall_s']:.0f} s)", flush=True)
    peers = {}
    for peer, results in runs.items():
        done = [r for r in results if "tokens_per_s" in r]
        peers[peer] = max(done, key=lambda r: r["tokens_per_s"]) if done else results[-1]
        peers[peer]["runs_tokens_per_s"] = [r.get("tokens_per_s") for r in results]
    summary = summarize(size_name, SIZES[size_name], peers, matmul, args)
    print_table(summary)
    path = output_dir / f"train_{size_name}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(f"wrote {path}", flush=True)
    return summary


def main(argv=None):
    args = parse_args(argv)
    if args.peer:
        return run_peer(args)
    args.peers += [BACKEND_PEERS[b] for b in args.backends if b in BACKEND_PEERS and BACKEND_PEERS[b] not in args.peers]

    sizes = args.sizes or (["tiny"] if args.quick else ["256", "512"])
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {describe_cpu()}; threads {args.threads}, {args.warmup} warm-up + {args.steps} timed steps, "
          f"peers {args.peers}", flush=True)
    matmul = spawn(args, "matmul")
    if "tf_flops_per_s" in matmul:
        extra = (f", torch {matmul['torch_flops_per_s'] / 1e9:.1f} GFLOP/s" if "torch_flops_per_s" in matmul else "")
        print(f"matmul peak ({args.matmul_n}^3 float32): TensorFlow {matmul['tf_flops_per_s'] / 1e9:.1f} GFLOP/s"
              f"{extra}; bfloat16: TensorFlow {matmul['tf_bf16_flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True)
    summaries = [run_size(args, size_name, matmul, output_dir) for size_name in sizes]
    try:
        png = output_dir / ("train_quick.png" if args.quick else "train.png")
        plot(summaries, png)
        print(f"wrote {png}")
    except Exception as err:  # the numbers are already written
        print(f"plot failed: {type(err).__name__}: {err}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
