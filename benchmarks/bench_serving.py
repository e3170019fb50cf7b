"""Latency of the exported translators against ``model.generate`` in Python, side by side in one process.

The Multi30k recipe's model shape (d_model 192, 3+3 layers, 4 heads, d_ff 768, vocab 8000), random weights;
every hypothesis forced to full length (``min_new_tokens = max_new_tokens``) so each path does the same
steps. Rows: ``model.generate`` (Python, one compiled XLA program), the SavedModel's ``serving_default``
signature loaded with ``tf.saved_model.load`` (the graph TensorFlow Serving runs, decoding inside), and the
LiteRT greedy translator in the ``ai-edge-litert`` interpreter (batch 1 only; its file size is printed).
Per-sentence (batch 1) and batch-32 latency, median of ``--repeats`` calls after a warm-up, greedy and
beam 4. Paths alternate within each repeat so drifts of the machine's speed hit all of them alike.

    python benchmarks/bench_serving.py [--repeats 7] [--new-tokens 24] [--output benchmarks/results/serving.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = dict(vocab_size=8000, d_model=192, num_heads=4, d_ff=768, layers=3)
SOURCE_LENGTH = 24


def build_model(seed: int = 0):
    import keras

    from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM

    keras.utils.set_random_seed(seed)
    config = TransformerConfig(vocab_size=SIZE["vocab_size"], d_model=SIZE["d_model"], num_heads=SIZE["num_heads"],
                               d_ff=SIZE["d_ff"], num_encoder_layers=SIZE["layers"],
                               num_decoder_layers=SIZE["layers"], dropout=0.0, max_position_embeddings=128)
    return TransformerForSeq2SeqLM(config).build_weights()


def sources(batch: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(5, SIZE["vocab_size"], size=(batch, SOURCE_LENGTH)).astype("int32")
    ids[:, -1] = 2
    return ids, np.ones_like(ids)


def paths_for(model, settings: dict, batch: int, scratch: Path) -> dict:
    """name -> zero-argument callable decoding one batch of ``batch`` sources."""
    import tensorflow as tf

    from vanilla_transformer.serving import export_litert, export_saved_model

    ids, mask = sources(batch)
    saved = tf.saved_model.load(str(export_saved_model(model, scratch / f"sm-{settings['num_beams']}",
                                                       max_batch_size=32, **settings)))
    serve = saved.signatures["serving_default"]
    tf_ids, tf_mask = tf.constant(ids), tf.constant(mask)
    paths = {"generate (Python)": lambda: model.generate(ids, attention_mask=mask, **settings),
             "SavedModel": lambda: serve(input_ids=tf_ids, attention_mask=tf_mask)["sequences"].numpy()}
    if batch == 1 and settings["num_beams"] == 1:
        from ai_edge_litert.interpreter import Interpreter

        tflite = export_litert(model, scratch / "translator.tflite", source_length=SOURCE_LENGTH, **settings)
        runner = Interpreter(model_path=str(tflite), num_threads=os.cpu_count()).get_signature_runner()
        paths["LiteRT"] = lambda: runner(input_ids=ids, attention_mask=mask)["sequences"]
        paths["LiteRT"].size_mb = tflite.stat().st_size / 2**20
    return paths


def measure(paths: dict, repeats: int) -> dict:
    """Median seconds per call of each path, calls interleaved across paths."""
    for fn in paths.values():
        fn()  # warm-up: XLA compilation, interpreter allocation
    times = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "serving.json"))
    args = parser.parse_args(argv)
    from vanilla_transformer.precision import cpu_kind

    model = build_model()
    print(f"CPU: {cpu_kind()} ({os.cpu_count()} threads); model d_model {SIZE['d_model']}, "
          f"{SIZE['layers']}+{SIZE['layers']} layers, vocab {SIZE['vocab_size']}; source {SOURCE_LENGTH} tokens, "
          f"{args.new_tokens} new tokens; median of {args.repeats}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for beams in (1, 4):
            settings = dict(num_beams=beams, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
            for batch in (1, 32):
                paths = paths_for(model, settings, batch, Path(scratch))
                for name, seconds in measure(paths, args.repeats).items():
                    row = dict(decoding="greedy" if beams == 1 else "beam 4", batch=batch, path=name,
                               ms=round(1000 * seconds, 1), ms_per_sentence=round(1000 * seconds / batch, 2),
                               size_mb=round(getattr(paths[name], "size_mb", 0.0), 2) or None)
                    rows.append(row)
                    print(f"{row['decoding']:7s} batch {batch:2d}  {name:18s} {row['ms']:9.1f} ms/call "
                          f"{row['ms_per_sentence']:8.2f} ms/sentence" +
                          (f"  ({row['size_mb']} MiB file)" if row["size_mb"] else ""))
    result = dict(cpu=cpu_kind(), machine=platform.machine(), threads=os.cpu_count(), size=SIZE,
                  new_tokens=args.new_tokens, repeats=args.repeats, rows=rows)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
