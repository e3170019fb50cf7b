"""Translation engines on one model: ours (TensorFlow + XLA; JAX with ``--jax``), CTranslate2 float32 and int8, and
transformers' PyTorch Marian, with the BLEU of each.

A saved translator (our Hub layout with its tokenizer, ``--model``) is exported once to transformers' Marian and to
CTranslate2 (``vanilla-transformer convert --to transformers`` and ``vanilla-transformer export --to ctranslate2
[--quantization int8]``, through the same functions). Each engine then runs in its own child process with the same thread count (``--threads``, default 2:
TensorFlow's intra-/inter-op pools, ``torch.set_num_threads``, CTranslate2's ``intra_threads``, and every child
pinned to that many CPUs), and translates text to text (tokenizing and detokenizing included), in the order of the
file, in batches of 32 (the last one smaller):

- warm: sentences/s translating the whole source file, beam 4 and greedy; the first call of each (compilation,
  caches) is not timed, then ``--repeats`` rounds in which the engines take turns, the order reversed every other
  round (as ``bench_generate.py`` does); median seconds;
- batch 1: ms per sentence over the first ``--latency-sentences`` sentences, one at a time, beam 4 and greedy,
  after an untimed pass over the same sentences; p50 and p90 over all rounds;
- cold: a fresh process, start to exit, translating the whole file (beam 4): for ours the command line,
  ``vanilla-transformer translate --model M --input F --output F``, where it has ``--input``/``--output`` (its
  own batch size and stopping rule), else this script in ``--cold`` mode, as for the other engines (batch 32; the
  JSON's ``ours_cold_run`` says which); ``--cold-repeats`` runs per engine, engines in turn, median;
- BLEU (sacreBLEU, against ``--reference``) of each engine's beam-4 and greedy output, and how many of its lines
  equal ours.

Every engine decodes alike: ``num_beams`` 4 or 1, ``max_new_tokens`` (``--max-new-tokens``), ``length_penalty``
1.0 and, for beam search, ``early_stopping=True``, the stopping rule CTranslate2 has (see
``vanilla_transformer.convert.ctranslate2.ctranslate2_options``): float32 CTranslate2 then returns our ids.

    python benchmarks/bench_translate.py --model runs/multi30k [--source ../shared/data/multi30k/test_2016_flickr.en.gz]
        [--reference ../shared/data/multi30k/test_2016_flickr.de.gz] [--threads 2] [--repeats 3] [--jax]
    python benchmarks/bench_translate.py --quick   # smoke test: a tiny random model, 8 sentences (numbers mean little)

Needs the ``bench`` extra (torch, ctranslate2, sacrebleu). Writes benchmarks/results/translate.json (``--output``).
The CPU must be otherwise idle while it runs.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = Path(os.environ.get("MULTI30K_DIR", ROOT.parent / "shared" / "data" / "multi30k"))
BATCH_SIZE = 32
MODES = {"beam4": 4, "greedy": 1}
ENGINES = ("ours", "ours_jax", "ct2_float32", "ct2_int8", "transformers")
PAUSE_SECONDS = 0.25  # between two timed calls: the previous engine's idle threads stop spinning (Intel
#                       OpenMP, which CTranslate2 uses, spins 200 ms by default)


# ------------------------------------------------------------------------------------------ inputs
def read_lines(path) -> list[str]:
    """The lines of a text file (gzip'd when it ends in .gz), without their line ends."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def decoding_settings(num_beams: int, max_new_tokens: int) -> dict:
    """The ``generate`` settings every engine decodes with (transformers' names)."""
    settings = dict(num_beams=num_beams, max_new_tokens=max_new_tokens, length_penalty=1.0)
    if num_beams > 1:
        settings["early_stopping"] = True  # the stopping rule CTranslate2's beam search has
    return settings


def thread_environment(threads: int) -> dict:
    """The variables that size the thread pools of OpenMP, MKL and TensorFlow (set before they start)."""
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                            "TF_NUM_INTEROP_THREADS")}


def pin_cpus(threads: int) -> None:
    """Pin this process (and what it starts) to its first ``threads`` CPUs, where it has more."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) > threads:
        os.sched_setaffinity(0, cpus[:threads])


# ------------------------------------------------------------------------------------------ engines (children)
def ctranslate2_helpers():
    """``vanilla_transformer.convert.ctranslate2`` loaded from its file: importing the package would bring
    TensorFlow into the CTranslate2 process (its ``__init__`` builds the models); the functions used here import
    nothing of the package."""
    path = ROOT / "vanilla_transformer" / "convert" / "ctranslate2.py"
    spec = importlib.util.spec_from_file_location("vt_ctranslate2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_ours(workdir: Path, threads: int, max_new_tokens: int):
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from vanilla_transformer import TransformerForSeq2SeqLM, load_tokenizer

    model = TransformerForSeq2SeqLM.from_pretrained(workdir / "model")
    tokenizer = load_tokenizer(workdir / "model")
    return lambda texts, beams: model.translate(texts, tokenizer, batch_size=len(texts),
                                                **decoding_settings(beams, max_new_tokens))


def load_ctranslate2(workdir: Path, kind: str, threads: int, max_new_tokens: int):
    import ctranslate2
    from transformers import AutoTokenizer

    helpers = ctranslate2_helpers()
    directory = workdir / f"ct2_{kind}"
    translator = ctranslate2.Translator(str(directory), device="cpu", intra_threads=threads, inter_threads=1)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    positions = json.loads((workdir / "model" / "config.json").read_text())["max_position_embeddings"]
    return lambda texts, beams: helpers.ctranslate2_translate(translator, tokenizer, texts, positions,
                                                              **decoding_settings(beams, max_new_tokens))


def load_transformers(workdir: Path, threads: int, max_new_tokens: int):
    import torch
    from transformers import AutoTokenizer, MarianMTModel

    torch.set_num_threads(threads)
    model = MarianMTModel.from_pretrained(workdir / "marian").eval()
    tokenizer = AutoTokenizer.from_pretrained(workdir / "marian")

    def translate(texts, beams):  # sources cut at the positions, as model.translate cuts them
        batch = tokenizer(texts, padding=True, truncation=True, max_length=model.config.max_position_embeddings,
                          return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(**batch, do_sample=False, **decoding_settings(beams, max_new_tokens))
        return tokenizer.batch_decode(ids, skip_special_tokens=True)

    return translate


def load_engine(engine: str, workdir: Path, threads: int, max_new_tokens: int):
    """``translate(texts, num_beams) -> list[str]`` of ``engine``, loaded in this process."""
    os.environ.update(thread_environment(threads))
    pin_cpus(threads)
    if engine in ("ours", "ours_jax"):
        return load_ours(workdir, threads, max_new_tokens)
    if engine.startswith("ct2_"):
        return load_ctranslate2(workdir, engine.removeprefix("ct2_"), threads, max_new_tokens)
    return load_transformers(workdir, threads, max_new_tokens)


def translate_file(translate, sources: list[str], beams: int) -> list[str]:
    """The whole file, in its order, ``BATCH_SIZE`` sentences a call."""
    out = []
    for start in range(0, len(sources), BATCH_SIZE):
        out.extend(translate(sources[start:start + BATCH_SIZE], beams))
    return out


def serve(args) -> None:
    """Child process: answer ``file MODE OUT`` with ``seconds S`` (and the translations written to OUT) and
    ``latency MODE`` with ``ms T1,T2,...`` (one sentence a call)."""
    workdir = Path(args.workdir)
    sources = read_lines(workdir / "source.txt")
    translate = load_engine(args.engine, workdir, args.threads, args.max_new_tokens)
    print("ready", flush=True)
    for line in sys.stdin:
        request, mode, *rest = line.rstrip("\n").split(" ", 2)
        if request == "file":
            start = time.perf_counter()
            lines = translate_file(translate, sources, MODES[mode])
            seconds = time.perf_counter() - start
            Path(rest[0]).write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
            print(f"seconds {seconds}", flush=True)
        else:
            times = []
            for sentence in sources[: args.latency_sentences]:
                start = time.perf_counter()
                translate([sentence], MODES[mode])
                times.append(1000 * (time.perf_counter() - start))
            print("ms " + ",".join(f"{t:.3f}" for t in times), flush=True)


def cold(args) -> None:
    """A cold run: load ``args.engine`` and translate the whole source (beam 4, batch 32) into ``args.cold``."""
    workdir = Path(args.workdir)
    translate = load_engine(args.engine, workdir, args.threads, args.max_new_tokens)
    lines = translate_file(translate, read_lines(workdir / "source.txt"), MODES["beam4"])
    Path(args.cold).write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")


# ------------------------------------------------------------------------------------------ preparation
def prepare(args) -> None:
    """Child process: the model (``--quick``: a tiny random one with a tokenizer trained on the inputs), its
    transformers and CTranslate2 exports, and the source as plain text, all in ``args.workdir``."""
    from vanilla_transformer import (AutoModel, TransformerConfig, TransformerForSeq2SeqLM, load_tokenizer,
                                     train_bpe_tokenizer)
    from vanilla_transformer.convert import export_to_transformers

    workdir = Path(args.workdir)
    sources = read_lines(args.source)[: args.limit or None]
    (workdir / "source.txt").write_text("".join(f"{line}\n" for line in sources), encoding="utf-8")
    if args.quick:
        import keras

        tokenizer = train_bpe_tokenizer(sources + read_lines(args.reference)[: len(sources)], vocab_size=400)
        keras.utils.set_random_seed(0)
        config = TransformerConfig(vocab_size=len(tokenizer), d_model=16, num_heads=2, d_ff=32, num_encoder_layers=1,
                                   num_decoder_layers=1, max_position_embeddings=64, initializer_range=0.3)
        TransformerForSeq2SeqLM(config).save_pretrained(workdir / "model", tokenizer=tokenizer)
    else:
        model = AutoModel.from_pretrained(args.model)
        model.save_pretrained(workdir / "model", tokenizer=load_tokenizer(args.model))
    model, tokenizer = AutoModel.from_pretrained(workdir / "model"), load_tokenizer(workdir / "model")
    export_to_transformers(model, workdir / "marian", tokenizer=tokenizer)
    model.export_for_serving(workdir / "ct2_float32", to="ctranslate2", tokenizer=tokenizer)
    model.export_for_serving(workdir / "ct2_int8", to="ctranslate2", tokenizer=tokenizer, quantization="int8")
    from vanilla_transformer.precision import cpu_kind

    (workdir / "cpu_kind.txt").write_text(cpu_kind())


# ------------------------------------------------------------------------------------------ the parent
def child_command(args, *extra) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--workdir", str(args.workdir), "--threads",
            str(args.threads), "--max-new-tokens", str(args.max_new_tokens), *extra]


def child_env(engine: str, threads: int) -> dict:
    env = dict(os.environ, KERAS_BACKEND="jax" if engine == "ours_jax" else "tensorflow",
               **thread_environment(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


class Child:
    """An engine loaded in its own process, answering one request at a time."""

    def __init__(self, engine: str, args):
        self.engine = engine
        command = child_command(args, "--engine", engine, "--latency-sentences", str(args.latency_sentences))
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=child_env(engine, args.threads))

    def read(self, prefix: str) -> str:
        for line in self.process.stdout:  # anything else a library prints on stdout is skipped
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        raise RuntimeError(f"the {self.engine} child exited with {self.process.wait()}")

    def ask(self, request: str, prefix: str) -> str:
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        return self.read(prefix)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def take_turns(children: dict, request, prefix: str, repeats: int) -> dict:
    """``{engine: [answers]}``: an untimed first call per engine, then ``repeats`` rounds in which every engine
    answers ``request(engine)`` in turn, the order reversed every other round."""
    for name, child in children.items():
        child.ask(request(name), prefix)
    answers = {name: [] for name in children}
    for round_ in range(repeats):
        for name in (list(children) if round_ % 2 == 0 else list(children)[::-1]):
            time.sleep(PAUSE_SECONDS)
            answers[name].append(children[name].ask(request(name), prefix))
    return answers


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def time_warm(args, engines, workdir: Path) -> dict:
    """``{engine: {figure: value}}`` of the warm runs: whole-file seconds and batch-1 latencies per mode."""
    children = {engine: Child(engine, args) for engine in engines}
    results = {engine: {} for engine in engines}
    try:
        for child in children.values():
            child.read("ready")
        for mode in MODES:
            answers = take_turns(children, lambda name: f"file {mode} {workdir / f'{name}.{mode}.txt'}",
                                 "seconds", args.repeats)
            for name, seconds in answers.items():
                median = statistics.median(float(s) for s in seconds)
                results[name][f"{mode}_seconds"] = median
                results[name][f"{mode}_sentences_per_s"] = args.num_sentences / median
            print(f"  file, {mode}: {({n: round(r[f'{mode}_seconds'], 2) for n, r in results.items()})}", flush=True)
        for mode in MODES:
            answers = take_turns(children, lambda name: f"latency {mode}", "ms", args.repeats)
            for name, rounds in answers.items():
                times = [float(t) for answer in rounds for t in answer.split(",")]
                results[name][f"{mode}_batch1_ms_p50"] = percentile(times, 0.5)
                results[name][f"{mode}_batch1_ms_p90"] = percentile(times, 0.9)
            print(f"  batch 1, {mode}: p50 {({n: round(r[f'{mode}_batch1_ms_p50'], 1) for n, r in results.items()})}",
                  flush=True)
    finally:
        for child in children.values():
            child.close()
    return results


def cold_command(args, engine: str, workdir: Path, output: Path) -> tuple[list[str], str]:
    """``(argv, how)`` of a cold run of ``engine`` translating the whole file into ``output``: for ours the command
    line, ``vanilla-transformer translate --model M --input F --output F``, where it has ``--input``/``--output``,
    else (and for the other engines) this script in ``--cold`` mode."""
    if engine == "ours":
        cli = (ROOT / "vanilla_transformer" / "cli.py").read_text()  # not imported: that would load TensorFlow
        if '"--input"' in cli and '"--output"' in cli:
            return [sys.executable, "-m", "vanilla_transformer.cli", "translate", "--model", str(workdir / "model"),
                    "--num-beams", "4", "--max-new-tokens", str(args.max_new_tokens), "--input",
                    str(workdir / "source.txt"), "--output", str(output)], "vanilla-transformer translate --input/--output"
    how = ("a python process loading the model and translating the file (vanilla-transformer translate has no "
           "--input/--output)" if engine == "ours" else "a python process loading the engine and translating the file")
    return child_command(args, "--engine", engine, "--cold", str(output)), how


def run_cold(args, engine: str, workdir: Path) -> float:
    """Seconds from start to exit of one cold run of ``engine``."""
    output = workdir / f"{engine}.cold.txt"
    command, _ = cold_command(args, engine, workdir, output)
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, env=child_env(engine, args.threads), check=True,
                   preexec_fn=lambda: pin_cpus(args.threads))
    seconds = time.perf_counter() - start
    lines = read_lines(output)
    if len(lines) != args.num_sentences:
        raise RuntimeError(f"the cold run of {engine} wrote {len(lines)} lines for {args.num_sentences} sentences")
    return seconds


def time_cold(args, engines, workdir: Path) -> dict:
    """``{engine: median seconds}`` of ``args.cold_repeats`` cold runs each, the engines in turn."""
    runs = {name: [] for name in engines}
    for round_ in range(args.cold_repeats):
        for name in (engines if round_ % 2 == 0 else engines[::-1]):
            runs[name].append(run_cold(args, name, workdir))
    medians = {name: statistics.median(values) for name, values in runs.items() if values}
    print(f"  cold (s): {({n: round(s, 1) for n, s in medians.items()})}", flush=True)
    return medians


def bleu_and_agreement(args, engines, workdir: Path, references: list[str]) -> dict:
    """``{engine: {figure: value}}``: sacreBLEU of each mode's output and how many lines equal ours."""
    import sacrebleu

    figures = {engine: {} for engine in engines}
    for mode in MODES:
        ours = read_lines(workdir / f"ours.{mode}.txt")
        for engine in engines:
            lines = read_lines(workdir / f"{engine}.{mode}.txt")
            figures[engine][f"{mode}_bleu"] = sacrebleu.corpus_bleu(lines, [references]).score
            figures[engine][f"{mode}_same_as_ours"] = sum(a == b for a, b in zip(lines, ours))
    return figures


def format_table(rows: dict, cold_seconds: dict, num_sentences: int) -> str:
    """The results as a Markdown table, one row per engine."""
    lines = ["| engine | BLEU beam 4 / greedy | lines = ours (beam 4 / greedy) | sentences/s, batch 32, beam 4 / "
             "greedy | batch 1 ms p50 / p90, beam 4 | batch 1 ms p50 / p90, greedy | cold s |",
             "|---|---|---|---|---|---|---|"]
    for engine, r in rows.items():
        cold = f"{cold_seconds[engine]:.1f}" if engine in cold_seconds else "-"
        lines.append(
            f"| {engine} | {r['beam4_bleu']:.2f} / {r['greedy_bleu']:.2f} | {r['beam4_same_as_ours']} / "
            f"{r['greedy_same_as_ours']} of {num_sentences} | {r['beam4_sentences_per_s']:.1f} / "
            f"{r['greedy_sentences_per_s']:.1f} | {r['beam4_batch1_ms_p50']:.1f} / {r['beam4_batch1_ms_p90']:.1f} | "
            f"{r['greedy_batch1_ms_p50']:.1f} / {r['greedy_batch1_ms_p90']:.1f} | {cold} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved translator (our Hub layout) with its tokenizer")
    parser.add_argument("--source", default=str(MULTI30K / "test_2016_flickr.en.gz"))
    parser.add_argument("--reference", default=str(MULTI30K / "test_2016_flickr.de.gz"))
    parser.add_argument("--threads", type=int, default=2, help="threads of every engine (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per case after an untimed call")
    parser.add_argument("--cold-repeats", type=int, default=3, help="cold runs per engine")
    parser.add_argument("--latency-sentences", type=int, default=200, help="sentences timed one at a time")
    parser.add_argument("--max-new-tokens", type=int, default=128,
                        help="default 128, at most the model's max_position_embeddings - 1")
    parser.add_argument("--limit", type=int, default=0, help="translate only the first N sentences (0: all)")
    parser.add_argument("--jax", action="store_true", help="also ours on Keras' JAX backend (jax.jit)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: a tiny random model, 8 sentences, 2 at batch 1, one round, 8 new tokens")
    parser.add_argument("--workdir", help="where the exports and outputs go (default: a temporary directory)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "translate.json"))
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--cold", help=argparse.SUPPRESS)  # child process: a cold run writing this file
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.latency_sentences, args.repeats, args.cold_repeats = args.limit or 8, 2, 1, 1
        args.max_new_tokens = 8
    elif not args.model and not (args.engine or args.prepare):
        parser.error("--model is required (or --quick)")
    return args


def run(args) -> dict:
    """Prepare the exports, time every engine warm and cold, score them; returns the JSON written."""
    workdir = Path(args.workdir)
    prepare_command = child_command(args, "--prepare", "--source", args.source, "--reference", args.reference,
                                    "--limit", str(args.limit), *(["--quick"] if args.quick else []),
                                    *(["--model", args.model] if args.model else []))
    started = time.perf_counter()
    subprocess.run(prepare_command, env=child_env("ours", args.threads), check=True)
    print(f"exports ready in {time.perf_counter() - started:.0f} s", flush=True)
    args.num_sentences = len(read_lines(workdir / "source.txt"))
    positions = json.loads((workdir / "model" / "config.json").read_text())["max_position_embeddings"]
    args.max_new_tokens = min(args.max_new_tokens, positions - 1)  # the decoder start token takes a position
    references = read_lines(args.reference)[: args.num_sentences]
    engines = [e for e in ENGINES if e != "ours_jax" or args.jax]
    print(f"CPU: {(workdir / 'cpu_kind.txt').read_text()}; threads {args.threads}; {args.num_sentences} sentences; "
          f"engines {', '.join(engines)}; max_new_tokens {args.max_new_tokens}", flush=True)
    started = time.perf_counter()
    rows = time_warm(args, engines, workdir)
    print(f"warm runs: {time.perf_counter() - started:.0f} s", flush=True)
    for engine, figures in bleu_and_agreement(args, engines, workdir, references).items():
        rows[engine].update(figures)
    started = time.perf_counter()
    cold_seconds = time_cold(args, engines, workdir)
    print(f"cold runs: {time.perf_counter() - started:.0f} s", flush=True)
    print(format_table(rows, cold_seconds, args.num_sentences), flush=True)
    return {"model": args.model or "quick: tiny random model", "source": args.source, "reference": args.reference,
            "sentences": args.num_sentences, "threads": args.threads, "batch_size": BATCH_SIZE,
            "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "cold_repeats": args.cold_repeats,
            "latency_sentences": args.latency_sentences, "cpu_kind": (workdir / "cpu_kind.txt").read_text(),
            "ours_cold_run": cold_command(args, "ours", workdir, workdir / "x")[1], "engines": rows,
            "cold_seconds": cold_seconds}


def main(argv=None):
    args = parse_args(argv)
    if args.prepare:
        return prepare(args)
    if args.cold:
        return cold(args)
    if args.engine:
        return serve(args)
    with tempfile.TemporaryDirectory() as scratch:
        args.workdir = args.workdir or scratch
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        results = run(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
