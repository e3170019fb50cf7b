"""A long-lived process using one model the way a server would: many ``generate`` calls with varied shapes
and decoding parameters, then repeated save/load cycles. Prints the number of compiled programs and traces,
the cache size and the resident memory (RSS) after warm-up and at the end.

    python benchmarks/generate_soak.py [--calls 2000] [--cycles 50] [--seed 0]

Calls draw a batch size 1-4, source lengths 3-29, max_new_tokens 2-11 and one of four argument sets
(greedy; beam 2; sampling with top_k 5 and a random temperature / top_p; beam 3 with a random length
penalty). Writes benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mib() -> float:
    """Resident memory of this process (Linux /proc), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def argument_set(rng, kind: int) -> dict:
    if kind == 0:
        return {}
    if kind == 1:
        return {"num_beams": 2}
    if kind == 2:
        return {"do_sample": True, "top_k": 5, "temperature": float(rng.uniform(0.5, 1.5)),
                "top_p": float(rng.uniform(0.5, 1.0)), "seed": int(rng.integers(1 << 30))}
    return {"num_beams": 3, "length_penalty": float(rng.uniform(0.0, 2.0))}


def soak_generate(model, calls: int, seed: int, warmup: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = model.config.vocab_size
    timings, warm_rss = [], None
    started = time.perf_counter()
    for call in range(calls):
        batch, length = int(rng.integers(1, 5)), int(rng.integers(3, 30))
        ids = rng.integers(3, vocab, size=(batch, length)).astype("int32")
        lengths = rng.integers(1, length + 1, size=batch)
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype("int32")
        kwargs = argument_set(rng, call % 4)
        tick = time.perf_counter()
        out = model.generate(ids, attention_mask=mask, max_new_tokens=int(rng.integers(2, 12)), **kwargs)
        timings.append(time.perf_counter() - tick)
        assert out.shape[0] == batch
        if call + 1 == warmup:
            warm_rss = rss_mib()
        if (call + 1) % 250 == 0:
            programs = model.decoding_programs
            print(f"{call + 1:5d} calls: {programs.compilations} programs built, {programs.traces} traces, "
                  f"{len(programs)} cached, RSS {rss_mib():.0f} MiB, {time.perf_counter() - started:.0f} s",
                  flush=True)
    programs = model.decoding_programs
    return {"calls": calls, "programs_built": programs.compilations, "traces": programs.traces,
            "programs_cached": len(programs), "cache_limit": programs.max_size,
            "rss_after_warmup_mib": round(warm_rss or rss_mib(), 1), "rss_end_mib": round(rss_mib(), 1),
            "median_call_ms": round(1000 * float(np.median(timings)), 2),
            "median_call_ms_after_warmup": round(1000 * float(np.median(timings[warmup:] or timings)), 2),
            "wall_s": round(time.perf_counter() - started, 1)}


def soak_save_load(model, cycles: int) -> dict:
    from vanilla_transformer import TransformerForSeq2SeqLM

    rss = []
    with tempfile.TemporaryDirectory() as tmp:
        for cycle in range(cycles):
            model.save_pretrained(Path(tmp) / "model")
            model = TransformerForSeq2SeqLM.from_pretrained(Path(tmp) / "model")
            rss.append(rss_mib())
    return {"cycles": cycles, "rss_after_first_mib": round(rss[0], 1), "rss_after_10_mib": round(rss[min(9, cycles - 1)], 1),
            "rss_end_mib": round(rss[-1], 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=400, help="calls after which memory should stay flat")
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "soak.json"))
    args = parser.parse_args(argv)
    import keras

    from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM

    keras.utils.set_random_seed(args.seed)
    config = TransformerConfig(vocab_size=64, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.0, max_position_embeddings=64)
    model = TransformerForSeq2SeqLM(config).build_weights()
    results = {"backend": keras.backend.backend(), "generate": soak_generate(model, args.calls, args.seed,
                                                                            min(args.warmup, args.calls))}
    print(json.dumps(results["generate"], indent=2), flush=True)
    results["save_load"] = soak_save_load(model, args.cycles)
    print(json.dumps(results["save_load"], indent=2))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
