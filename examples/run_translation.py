"""Train a translation Transformer with the paper's recipe, evaluate with beam search and sacreBLEU.

Conventions follow transformers' ``run_translation.py``. Local data is a pair of aligned files given by
their common prefix (``--train_file data/train`` reads ``data/train.en[.gz]`` and ``data/train.de[.gz]``),
or a jsonl (``{"en": ..., "de": ...}`` or ``{"translation": {...}}``) or tsv (source<TAB>target) file.

Multi30k En->De, the recipe of docs/multi30k.md (this command is its core; the page has every flag):

    python examples/run_translation.py --train_file ../shared/data/multi30k/train \\
        --validation_file ../shared/data/multi30k/val --test_file ../shared/data/multi30k/test_2016_flickr \\
        --source_lang en --target_lang de --output_dir runs/multi30k

Writes to ``--output_dir``: the final model (Hub layout, tokenizer included), ``best/`` (best validation
BLEU), ``results.json``, ``history.json``, ``learning_curves.png``, TensorBoard logs in ``logs/`` and the
backup in ``backup/`` that ``--resume`` continues from (also after SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402


def add_translation_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--dataset_name", default=None, help="a datasets-loadable dataset, e.g. bentrevett/multi30k")
    data.add_argument("--train_file", default=None)
    data.add_argument("--validation_file", default=None)
    data.add_argument("--test_file", default=None)
    data.add_argument("--source_lang", default="en")
    data.add_argument("--target_lang", default="de")
    data.add_argument("--max_source_length", type=int, default=128)
    data.add_argument("--max_target_length", type=int, default=128)
    data.add_argument("--split_punctuation", action="store_true",
                      help="learn the BPE vocabulary with punctuation split from words (reversibly), so 'street.' "
                           "is 'street' + '.' rather than a token of its own")
    decoding = p.add_argument_group("decoding and evaluation")
    decoding.add_argument("--num_beams", type=int, default=4)
    decoding.add_argument("--length_penalty", type=float, default=0.6)
    decoding.add_argument("--length_penalty_candidates", type=float, nargs="+", default=None,
                          help="after training, decode the full validation set with each of these length penalties "
                               "and use the best for test and the saved model's generation_config.json")
    decoding.add_argument("--mbr_candidates", type=int, default=0,
                          help="after training, also score minimum Bayes risk decoding on the full validation set: "
                               "of the beam's N-best, the hypothesis with the highest mean sentence BLEU against "
                               "the others (and the samples); used for test if it scores higher than beam search")
    decoding.add_argument("--mbr_samples", type=int, default=0,
                          help="samples of the model per sentence added to the MBR evidence (0: the N-best alone)")
    decoding.add_argument("--ensemble_with", nargs="+", default=None, metavar="MODEL",
                          help="after evaluating the trained model, evaluate it again ensembled with these saved "
                               "models (directories or Hub ids with the same tokenizer; next-token probabilities "
                               "averaged, length penalty chosen on validation again): results.json's 'ensemble'")
    decoding.add_argument("--eval_every", type=int, default=1, help="evaluate BLEU on validation every N epochs")
    decoding.add_argument("--max_eval_samples", type=int, default=None)


def add_schedule_arguments(p: argparse.ArgumentParser) -> None:
    train = p.add_argument_group("training")
    train.add_argument("--output_dir", required=True)
    train.add_argument("--num_train_epochs", type=int, default=10)
    train.add_argument("--max_tokens_per_batch", type=int, default=4096,
                       help="token budget per batch (padded source or target tokens x sentences)")
    train.add_argument("--pad_to_multiple_of", type=int, default=8,
                       help="round batch lengths up to this (8: few shapes for XLA; without XLA, e.g. bf16 on a CPU, "
                            "4 pads ~8%% fewer tokens on Multi30k, epochs ~5%% faster, but fewer updates an epoch)")
    train.add_argument("--per_device_train_batch_size", type=int, default=None,
                       help="sentences per batch (instead of --max_tokens_per_batch); rows per batch with --pack_length")
    train.add_argument("--pack_length", type=int, default=None,
                       help="pack several sentence pairs into each row of this many tokens per side (attention stays "
                            "within each pair): one batch shape, ~96%% real tokens on Multi30k instead of ~77%% with "
                            "length buckets; rows per batch: --max_tokens_per_batch // this")
    train.add_argument("--learning_rate", type=float, default=None,
                       help="peak learning rate; default: the paper's schedule d_model^-0.5 * warmup^-0.5")
    train.add_argument("--lr_scale", type=float, default=None, help="multiplier of the paper's schedule (1.0)")
    train.add_argument("--warmup_steps", type=int, default=4000)
    train.add_argument("--lr_decay", choices=["inverse_sqrt", "linear"], default="inverse_sqrt",
                       help="after warm-up: the paper's inverse square root, or linear to 0 at the last step of "
                            "--num_train_epochs (anneals within a fixed budget)")
    train.add_argument("--decay_within_budget", action="store_true",
                       help="with --lr_decay linear and --max_train_minutes: end the decay on the last step the "
                            "budget reaches (re-estimated after every step) when that comes before "
                            "--num_train_epochs, so the rate reaches 0 however slow the machine")
    train.add_argument("--label_smoothing", type=float, default=0.1)
    train.add_argument("--bpe_dropout", type=float, default=0.0,
                       help="BPE-dropout (Provilkov et al., 2020): drop each merge with this probability when "
                            "segmenting the training pairs (0.1 in the paper), so the model sees words in varied "
                            "pieces; validation and test are segmented as usual")
    train.add_argument("--bpe_dropout_views", type=int, default=None,
                       help="with --bpe_dropout: segmentations drawn before training, epoch e trains on view e mod "
                            "N (default 8)")
    train.add_argument("--average_last_k", type=int, nargs="+", default=None,
                       help="average the weights of the last k epoch checkpoints at the end (paper: 5 or 20); with "
                            "several values each average is scored on validation and the best one competes with "
                            "the best epoch")
    train.add_argument("--max_train_minutes", type=float, default=None,
                       help="training-time budget: stop on the last step that fits it (mean step time after the "
                            "first 10 steps; evaluation and checkpoints are outside the budget)")
    train.add_argument("--mixed_precision", choices=["auto", "no", "bf16", "fp16"], default="auto",
                       help="auto: bf16 where the hardware computes bfloat16 natively (AVX512-BF16 or AMX on a "
                            "CPU, a GPU of compute capability >= 8.0), else float32 with XLA (no)")
    train.add_argument("--backup_every", type=int, default=200, help="back up the training state every N batches")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--resume", action="store_true", help="continue from the backup in --output_dir")
    train.add_argument("--verbose", type=int, default=None, help="Keras verbosity (default: bars on a terminal)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_model_arguments(p, default_model="transformer-base")
    add_translation_arguments(p)
    add_schedule_arguments(p)
    _common.add_finetuning_arguments(p)
    _common.add_distribution_arguments(p)
    _common.add_hub_arguments(p)
    args = p.parse_args(argv)
    refuse_finetuning_conflicts(p, args)
    if not (args.dataset_name or args.train_file):
        p.error("give --train_file or --dataset_name")
    if args.learning_rate is not None and args.lr_scale is not None:
        p.error("--lr_scale scales the paper's schedule, which --learning_rate replaces: give one of them")
    args.lr_scale = 1.0 if args.lr_scale is None else args.lr_scale
    if args.split_punctuation and not _common.is_preset(args.model_name_or_path):
        p.error("--split_punctuation shapes a tokenizer trained from scratch; the model brings its own")
    if args.decay_within_budget and not (args.max_train_minutes and args.lr_decay == "linear"):
        p.error("--decay_within_budget moves the end of a linear decay to the --max_train_minutes budget: give "
                "both --lr_decay linear and --max_train_minutes")
    if args.bpe_dropout_views is not None and not args.bpe_dropout:
        p.error("--bpe_dropout_views counts the segmentations --bpe_dropout draws: give --bpe_dropout too")
    args.bpe_dropout_views = 8 if args.bpe_dropout_views is None else args.bpe_dropout_views
    if not 0.0 <= args.bpe_dropout < 1.0 or args.bpe_dropout_views < 1:
        p.error(f"--bpe_dropout {args.bpe_dropout} must be in [0, 1) and --bpe_dropout_views "
                f"{args.bpe_dropout_views} at least 1")
    if args.mbr_candidates == 1 or args.mbr_candidates < 0 or args.mbr_samples < 0:
        p.error(f"--mbr_candidates {args.mbr_candidates} must be 0 (off) or at least 2, and --mbr_samples "
                f"{args.mbr_samples} at least 0")
    if args.mbr_samples and not args.mbr_candidates:
        p.error("--mbr_samples adds evidence to MBR decoding: give --mbr_candidates too")
    if args.pack_length and args.pack_length < max(args.max_source_length, args.max_target_length):
        p.error(f"--pack_length {args.pack_length} is shorter than the longest pair side (--max_source_length "
                f"{args.max_source_length}, --max_target_length {args.max_target_length}): every pair must fit a row")
    _common.refuse_unused_flags(p, args)
    import keras

    _common.refuse_unused_distribution_flags(p, args, keras.backend.backend())
    return args


def refuse_finetuning_conflicts(p: argparse.ArgumentParser, args) -> None:
    """The shared fine-tuning flags' checks, and the combinations this script cannot honour."""
    _common.check_finetuning_flags(p, args)
    if args.gradient_accumulation_steps > 1 and args.decay_within_budget:
        p.error("--decay_within_budget moves the decay end in micro-batches; it cannot be combined with "
                "--gradient_accumulation_steps")
    if args.lora_rank is not None and args.average_last_k:
        p.error("--average_last_k averages whole checkpoints; with --lora_rank only the adapters train")
    if args.early_stopping_patience is not None and args.eval_every != 1:
        p.error("--early_stopping_patience watches the validation BLEU of every epoch: it needs --eval_every 1")


# ------------------------------------------------------------------------------------------ data
def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _side(prefix: str, lang: str) -> Path:
    for candidate in (Path(f"{prefix}.{lang}.gz"), Path(f"{prefix}.{lang}")):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"neither {prefix}.{lang}.gz nor {prefix}.{lang} exists")


def load_split(spec: str, source_lang: str, target_lang: str):
    """A ``datasets.Dataset`` with ``source`` and ``target`` columns from a file pair, jsonl or tsv."""
    import datasets

    name = spec[:-3] if spec.endswith(".gz") else spec
    if name.endswith((".jsonl", ".json")):
        ds = datasets.load_dataset("json", data_files=spec, split="train")
        if "translation" in ds.column_names:
            ds = ds.map(lambda ex: {"source": ex["translation"][source_lang], "target": ex["translation"][target_lang]},
                        remove_columns=ds.column_names)
        else:
            ds = ds.rename_columns({source_lang: "source", target_lang: "target"})
        return ds.select_columns(["source", "target"])
    if name.endswith(".tsv"):
        lines = _read_lines(Path(spec))
        pairs = [line.split("\t") for line in lines if line.strip()]
        return datasets.Dataset.from_dict({"source": [p[0] for p in pairs], "target": [p[1] for p in pairs]})
    sources, targets = _read_lines(_side(spec, source_lang)), _read_lines(_side(spec, target_lang))
    if len(sources) != len(targets):
        raise ValueError(f"{spec}: {len(sources)} {source_lang} lines but {len(targets)} {target_lang} lines")
    return datasets.Dataset.from_dict({"source": sources, "target": targets})


def load_data(args):
    splits = {}
    if args.dataset_name:
        import datasets

        raw = datasets.load_dataset(args.dataset_name)
        for split in raw:
            ds = raw[split]
            if "translation" in ds.column_names:
                ds = ds.map(lambda ex: {"source": ex["translation"][args.source_lang],
                                        "target": ex["translation"][args.target_lang]})
            else:
                ds = ds.rename_columns({args.source_lang: "source", args.target_lang: "target"})
            splits[split] = ds.select_columns(["source", "target"])
    for split, spec in (("train", args.train_file), ("validation", args.validation_file), ("test", args.test_file)):
        if spec:
            splits[split] = load_split(spec, args.source_lang, args.target_lang)
    return splits


# ------------------------------------------------------------------------------------------ model
def _strategy(name: str):
    """The tf.distribute strategy of ``--strategy`` (TensorFlow), None for ``default``."""
    if name == "default":
        return None
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown --strategy {name!r}")


def _worker_output_dir(output_dir: Path, strategy) -> Path:
    """Where this process writes: ``output_dir``, or ``output_dir/worker-<i>`` for a non-chief worker.

    Under MultiWorkerMirroredStrategy every worker runs this script and holds the same weights. The chief
    (task "chief", or worker 0 when the cluster has no chief) writes the run's outputs; every other worker
    writes the same files (backups for --resume included) to its own subfolder, so no two processes write one
    file.
    """
    if strategy is None:
        return output_dir
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return output_dir
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and not has_chief)
    return output_dir if is_chief else output_dir / f"{task_type}-{task_id}"


def build_model_and_tokenizer(args, train):
    """A new model from a preset with a BPE tokenizer learnt on both sides of ``train``, or a saved model and
    its tokenizer."""
    from vanilla_transformer import TransformerForSeq2SeqLM

    tokenizer = _common.load_or_train_tokenizer(args, list(train["source"]) + list(train["target"]), wrap=False)
    model = _common.load_model(TransformerForSeq2SeqLM, args, tokenizer,
                               max_length=max(args.max_source_length, args.max_target_length) + 2,
                               label_smoothing=args.label_smoothing)
    return model, tokenizer


def tokenize(dataset, tokenizer, args):
    def encode(batch):
        return {"input_ids": tokenizer(batch["source"], truncation=True, max_length=args.max_source_length)["input_ids"],
                "labels": tokenizer(batch["target"], truncation=True, max_length=args.max_target_length)["input_ids"]}

    return dataset.map(encode, batched=True, desc="tokenizing")


# ------------------------------------------------------------------------------------------ evaluation
def evaluate_bleu(model, tokenizer, dataset, args, limit=None, length_penalty=None, mbr=False):
    """Translations of ``dataset`` scored with sacreBLEU (case-sensitive BLEU and chrF): beam search, or with
    ``mbr`` minimum Bayes risk decoding over the beam's ``args.mbr_candidates``-best.

    ``length_penalty`` overrides ``args.length_penalty``."""
    import sacrebleu

    sources, references = list(dataset["source"]), list(dataset["target"])
    if limit:
        sources, references = sources[:limit], references[:limit]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))  # similar lengths together
    hypotheses = [None] * len(sources)
    decoding = dict(length_penalty=args.length_penalty if length_penalty is None else length_penalty,
                    max_new_tokens=args.max_target_length)
    ordered = [sources[i] for i in order]
    if mbr:
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

        from vanilla_transformer.generation.mbr import mbr_translate

        split_13a = Tokenizer13a()  # the utility counts the words the reported BLEU counts
        translations = mbr_translate(model, ordered, tokenizer, num_candidates=args.mbr_candidates,
                                     num_samples=args.mbr_samples, batch_size=128, seed=args.seed,
                                     tokenize=lambda text: split_13a(text).split(), **decoding)
    else:
        translations = model.translate(ordered, tokenizer, batch_size=128, num_beams=args.num_beams, **decoding)
    for i, text in zip(order, translations):
        hypotheses[i] = text
    bleu = sacrebleu.corpus_bleu(hypotheses, [references])
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "signature": str(bleu.format(signature=True)),
            "samples": [{"source": s, "reference": r, "hypothesis": h}
                        for s, r, h in list(zip(sources, references, hypotheses))[:3]]}


def epoch_minute_functions(history):
    """``(to_minutes, to_epochs)``: training wall-clock minutes at a (fractional) epoch and back, piecewise
    linear through ``time_s`` at the end of each epoch and, past the last one, at the run's mean pace (so a
    chart's margin does not pile later minute ticks onto the last epoch). None with fewer than two epochs.

    Example:
        >>> history = [{"epoch": 1, "time_s": 90.0}, {"epoch": 2, "time_s": 150.0}]
        >>> to_minutes, to_epochs = epoch_minute_functions(history)
        >>> float(to_minutes(1.5)), float(to_minutes(3.0)), float(to_epochs(1.0))
        (2.0, 3.75, 0.6666666666666666)
    """
    import numpy as np

    timed = [h for h in history if "time_s" in h]
    if len(timed) < 2:
        return None
    epochs = [0.0] + [float(h["epoch"]) for h in timed]
    minutes = [0.0] + [h["time_s"] / 60 for h in timed]
    far = epochs[-1] * 100  # a knot well past any chart margin, reached at the run's mean pace
    minutes.append(minutes[-1] + (far - epochs[-1]) * minutes[-1] / epochs[-1])
    epochs, minutes = np.array(epochs + [far]), np.array(minutes)
    return (lambda e: np.interp(e, epochs, minutes)), (lambda m: np.interp(m, minutes, epochs))


def add_minutes_axis(axes, history):
    """A top x-axis in wall-clock minutes of training (``time_s`` at the end of each epoch), beside the epochs."""
    functions = epoch_minute_functions(history)
    if functions is not None:
        axes.secondary_xaxis("top", functions=functions).set_xlabel("training minutes")


def plot_history(history, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no learning-curve plot")
        return
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["loss"] for h in history], label="train loss")
    if any("val_loss" in h for h in history):
        left.plot([h["epoch"] for h in history if "val_loss" in h], [h["val_loss"] for h in history if "val_loss" in h],
                  label="validation loss")
    left.set_xlabel("epoch"), left.set_ylabel("label-smoothed cross-entropy"), left.legend()
    scored = [h for h in history if "val_bleu" in h]
    right.plot([h["epoch"] for h in scored], [h["val_bleu"] for h in scored], marker="o", label="validation BLEU")
    right.set_xlabel("epoch"), right.set_ylabel("BLEU"), right.legend()
    for axes in (left, right):
        add_minutes_axis(axes, history)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def make_epoch_callback(model, tokenizer, splits, args, output_dir: Path, state: dict):
    import keras
    import numpy as np

    from vanilla_transformer.weight_files import state_dict, write_weights

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                      "time_s": round(time.time() - state["started"] + state.get("time_before", 0.0), 1)}
            if "validation" in splits and (epoch + 1) % args.eval_every == 0:
                scores = evaluate_bleu(model, tokenizer, splits["validation"], args, args.max_eval_samples)
                record["val_bleu"], record["val_chrf"] = scores["bleu"], scores["chrf"]
                if logs is not None:  # for EarlyStopping, which runs after this callback
                    logs["val_bleu"] = scores["bleu"]
                print(f"\nepoch {epoch + 1}: validation BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f}")
                if scores["bleu"] > state.get("best_bleu", -1.0):
                    state["best_bleu"], state["best_epoch"] = scores["bleu"], epoch + 1
                    model.save_pretrained(output_dir / "best", tokenizer=tokenizer, model_card=card_info(args, state))
            if args.average_last_k:
                checkpoints = output_dir / "checkpoints"
                checkpoints.mkdir(exist_ok=True)
                epoch_dir = checkpoints / f"epoch-{epoch + 1:03d}"
                epoch_dir.mkdir(exist_ok=True)
                write_weights(state_dict(model), epoch_dir)
                for old in sorted(checkpoints.iterdir())[:-max(args.average_last_k)]:
                    import shutil

                    shutil.rmtree(old, ignore_errors=True)
            state["history"] = [h for h in state["history"] if h["epoch"] != epoch + 1] + [record]
            (output_dir / "history.json").write_text(json.dumps(state, indent=2))
            plot_history(state["history"], output_dir / "learning_curves.png")
            if not np.isfinite(record.get("loss", 0.0)):
                self.model.stop_training = True

    return EpochEnd()


def card_info(args, state):
    return {"description": f"A Transformer trained with vanilla-transformer's examples/run_translation.py "
                           f"({args.source_lang}->{args.target_lang}).",
            "language": [args.source_lang, args.target_lang],
            "hyperparameters": {k: getattr(args, k) for k in (
                "num_train_epochs", "max_tokens_per_batch", "per_device_train_batch_size", "learning_rate",
                "lr_scale", "warmup_steps", "lr_decay", "label_smoothing", "num_beams", "length_penalty", "seed")
                if getattr(args, k) is not None}
            | ({"bpe_dropout": args.bpe_dropout, "bpe_dropout_views": args.bpe_dropout_views}
               if args.bpe_dropout else {})
            # the policy set_precision chose ("mixed_bfloat16", "float32"), not the setting ("auto")
            | {"mixed_precision": getattr(args, "dtype_policy", args.mixed_precision)},
            "results": {k: v for k, v in (("bleu", state.get("best_bleu")),) if v is not None},
            "dataset_name": args.dataset_name or "local parallel text"}


def average_checkpoints(model, paths):
    """Set ``model``'s weights to the mean of the checkpoints in ``paths`` (the paper's averaging)."""
    import numpy as np

    from vanilla_transformer.weight_files import assign_weights, read_weights

    tensors = [read_weights(str(p)) for p in paths]
    mean = {name: np.mean([t[name] for t in tensors], axis=0) for name in tensors[0]}
    assign_weights(model, mean)


def search_averages(model, directory: Path, ks, score=None):
    """Average the last k checkpoints for each k in ``ks``, score each average with ``score(model)``, and leave
    ``model`` holding the best one (the first listed on a tie; the last listed without ``score``).

    Returns ``(best_k, averages, scores)``: the checkpoint names of each distinct average by k (a k beyond the
    number of checkpoints repeats a smaller k's average and is skipped, unread) and their scores.
    """
    checkpoints = sorted(directory.iterdir())
    averages, scores = {}, {}
    for k in ks:
        names = [p.name for p in checkpoints[-k:]]
        if names in averages.values():
            continue
        averages[k] = names
        if score is not None:
            average_checkpoints(model, checkpoints[-k:])
            scores[k] = score(model)
    best_k = max(scores, key=scores.get) if scores else list(averages)[-1]
    if not scores or best_k != list(scores)[-1]:  # the model holds the last average scored, or none yet
        average_checkpoints(model, checkpoints[-best_k:])
    return best_k, averages, scores


def fill_rows(batch, collator, multiple: int):
    """``batch`` with empty rows (all padding, labels -100: they count for nothing) up to a multiple of ``multiple``
    rows, so that a data-parallel split gives every device the same number of rows."""
    import numpy as np

    inputs, labels = batch
    missing = -len(labels) % multiple
    if not missing:
        return batch
    source, _ = collator([[]] * missing, [[]] * missing, length=inputs["input_ids"].shape[1])
    target, empty_labels = collator([[]] * missing, [[]] * missing, length=labels.shape[1])
    empty = {key: (source if key in ("input_ids", "attention_mask") else target)[key] for key in inputs}
    return ({key: np.concatenate([value, empty[key]]) for key, value in inputs.items()},
            np.concatenate([labels, empty_labels]))


def place_batch(batch, collator, distribution):
    """A global batch as this process feeds it to ``distribution`` (a ``keras.distribution`` or None): filled
    with empty rows to a multiple of the devices that split its rows, then, where several JAX processes split
    them, this process's share (Keras expects each process to feed its own devices)."""
    shards = _common.batch_shards(distribution)
    batch = fill_rows(batch, collator, shards)
    processes = distribution.num_processes if shards > 1 else 1
    if processes == 1:
        return batch
    inputs, labels = batch
    share = len(labels) // processes
    rows = slice(distribution.data_shard_id * share, (distribution.data_shard_id + 1) * share)
    return {key: value[rows] for key, value in inputs.items()}, labels[rows]


def packed_rows(args, distribution=None) -> int:
    """Rows of a packed batch: ``--per_device_train_batch_size``, else the token budget over ``--pack_length``,
    rounded up to a multiple of the devices that split them."""
    from vanilla_transformer.data_collators import bucket_length

    rows = args.per_device_train_batch_size or max(1, args.max_tokens_per_batch // args.pack_length)
    return bucket_length(rows, _common.batch_shards(distribution))


def make_train_batches(tokenized, config, args, distribution=None, tokenizer=None):
    """The collator and the epoch-shuffled training batches (packed rows, or length buckets by token budget or
    sentence count), placed for ``distribution`` (:func:`place_batch`). With ``--bpe_dropout`` the epochs
    cycle through ``--bpe_dropout_views`` segmentations of the pairs (``tokenizer`` draws them)."""
    from vanilla_transformer.batching import EpochShuffledBatches
    from vanilla_transformer.data_collators import PackedSeq2SeqCollator, Seq2SeqCollator

    if args.pack_length:
        collator = PackedSeq2SeqCollator(config.pad_token_id, config.decoder_start_token_id, args.pack_length,
                                         args.pack_length, config.vocab_size)
    else:
        collator = Seq2SeqCollator(config.pad_token_id, config.decoder_start_token_id, config.vocab_size,
                                   pad_to_multiple_of=args.pad_to_multiple_of)
    if not args.bpe_dropout:
        batches = batch_pairs(tokenized["input_ids"], tokenized["labels"], collator, args, distribution)
        return collator, EpochShuffledBatches(batches, seed=args.seed)
    views = [batch_pairs(*pairs, collator, args, distribution, shuffle_seed=[args.seed, view])
             for view, pairs in enumerate(bpe_dropout_views(tokenized, tokenizer, args))]
    data = EpochShuffledBatches.from_views(views, seed=args.seed)
    print(f"BPE-dropout {args.bpe_dropout}: {len(views)} segmentations of the training pairs, "
          f"{min(map(len, views))}-{max(map(len, views))} batches each, {len(data)} an epoch", flush=True)
    return collator, data


def bpe_dropout_views(tokenized, tokenizer, args):
    """``--bpe_dropout_views`` segmentations ``(sources, targets)`` of the training pairs, each drawn with
    BPE-dropout from its own seed (the same on a resumed run)."""
    from vanilla_transformer.tokenization import BPEDropoutEncoder

    sources, targets = tokenized["source"], tokenized["target"]
    for view in range(args.bpe_dropout_views):
        encoder = BPEDropoutEncoder(tokenizer, args.bpe_dropout, seed=args.seed * 1000 + view)
        yield (encoder.encode(sources, max_length=args.max_source_length),
               encoder.encode(targets, max_length=args.max_target_length))


def batch_pairs(sources, targets, collator, args, distribution=None, shuffle_seed=None):
    """One epoch's batches of the token-id pairs, placed for ``distribution``. ``shuffle_seed`` shuffles the
    packed rows before they are grouped (or the length buckets' batches), so that the batches a view loses to
    the shortest view's count (:meth:`EpochShuffledBatches.from_views`) are different pairs in each view."""
    from vanilla_transformer.batching import packed_seq2seq_batches, seq2seq_batches

    shuffle = dict(shuffle=shuffle_seed is not None, seed=shuffle_seed or 0)
    if args.pack_length:
        batches = packed_seq2seq_batches(sources, targets, collator, rows_per_batch=packed_rows(args, distribution),
                                         **shuffle)
    else:
        batches = seq2seq_batches(sources, targets, collator, max_tokens=None if args.per_device_train_batch_size
                                  else args.max_tokens_per_batch, batch_size=args.per_device_train_batch_size,
                                  **shuffle)
    return [place_batch(b, collator, distribution) for b in batches]


def make_learning_rate(args, d_model: int, total_steps: int):
    """The learning-rate schedule: linear warm-up over ``--warmup_steps`` to the peak (``--learning_rate``, or
    the paper's ``lr_scale * d_model^-0.5 * warmup^-0.5``), then the paper's inverse square root decay
    (equation 3) or, with ``--lr_decay linear``, a straight line to 0 at ``total_steps``."""
    from vanilla_transformer.optimization import LinearWarmupSchedule, TransformerSchedule

    peak = args.learning_rate
    if peak is None:
        peak = args.lr_scale * (d_model * args.warmup_steps) ** -0.5
    if args.lr_decay == "linear":
        return LinearWarmupSchedule(peak, args.warmup_steps, decay_steps=total_steps)
    # TransformerSchedule peaks at scale * (d_model * warmup)^-0.5: scale it so that the peak is `peak`
    return TransformerSchedule(d_model, args.warmup_steps, peak * (d_model * args.warmup_steps) ** 0.5)


# ------------------------------------------------------------------------------------------ main
def model_sizes(args):
    """The config of the model this run will build or load (for its heads and d_ff, before any weight exists)."""
    from vanilla_transformer import TransformerConfig

    if _common.is_preset(args.model_name_or_path):
        return TransformerConfig.from_preset(args.model_name_or_path,
                                             **_common.size_overrides(args, "encoder-decoder"))
    return TransformerConfig.from_pretrained(args.model_name_or_path)


def set_distribution(args):
    """On JAX, the keras.distribution of ``--distribution``, set for every weight created from here on; None
    (one device) there with one device or ``none``, and on other backends (TensorFlow: ``--strategy``).

    With ``KERAS_DISTRIBUTION_NUM_PROCESSES`` above 1 this process first joins the others
    (``keras.distribution.initialize`` reads ``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``..._NUM_PROCESSES`` and
    ``..._PROCESS_ID``); the devices are then those of every process, and each feeds its share of every batch.
    """
    import keras

    if keras.backend.backend() != "jax":
        return None
    if int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")) > 1:
        keras.distribution.initialize()
    config = model_sizes(args) if args.distribution == "model_parallel" else None
    distribution = _common.keras_distribution(args.distribution, config)
    if distribution is not None and distribution.num_processes > 1:
        distribution.auto_shard_dataset = False  # Keras shards only tf.data; place_batch does it here
    keras.distribution.set_distribution(distribution)
    return distribution


def describe_scale_out(strategy, distribution) -> str:
    if strategy is not None:
        return f"; {strategy.num_replicas_in_sync} replicas in sync"
    if distribution is not None:
        mesh = distribution.device_mesh
        processes = f" in {distribution.num_processes} processes" if distribution.num_processes > 1 else ""
        return (f"; keras.distribution.{type(distribution).__name__} over {mesh.devices.size} devices{processes} "
                f"({dict(zip(mesh.axis_names, mesh.shape))})")
    return ""


def prepare_output(args, distribution=None):
    """The distribution strategy and where this process writes: ``(strategy, output_dir, is_chief_or_alone)``.

    As with MultiWorkerMirroredStrategy's workers, JAX process 0 of a multi-process ``distribution`` writes
    ``--output_dir`` and process i the same files in ``--output_dir/process-<i>``."""
    strategy = _strategy(args.strategy)  # first: MultiWorkerMirroredStrategy must exist before any TF op
    output_dir = _worker_output_dir(Path(args.output_dir), strategy)
    if distribution is not None and distribution.num_processes > 1:
        import jax

        output_dir = output_dir / f"process-{jax.process_index()}" if jax.process_index() else output_dir
    if (output_dir / "backup").exists() and not args.resume:
        raise SystemExit(f"{output_dir} holds a backup of an earlier run: pass --resume to continue it, or choose "
                         f"another --output_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    return strategy, output_dir, output_dir == Path(args.output_dir)


def build_and_compile(args, strategy, train, distribution=None):
    """Model, tokenizer, collator, training batches (placed for ``distribution``) and learning-rate schedule,
    built and compiled in the strategy's scope."""
    import keras

    from vanilla_transformer.gradient_accumulation import accumulate_gradients
    from vanilla_transformer.losses import MaskedAccuracy, MaskedSparseCrossEntropy

    with strategy.scope() if strategy else contextlib.nullcontext():
        model, tokenizer = build_model_and_tokenizer(args, train)
        model.build_weights()
        args.lora_results = _common.apply_lora(model, args)
        tokenized = tokenize(train, tokenizer, args)
        # the decay needs the step count
        collator, batches = make_train_batches(tokenized, model.config, args, distribution, tokenizer)
        updates = max(1, len(batches) // args.gradient_accumulation_steps)  # the schedule counts optimizer updates
        learning_rate = make_learning_rate(args, model.config.d_model, total_steps=args.num_train_epochs * updates)
        optimizer = keras.optimizers.Adam(learning_rate, beta_1=0.9, beta_2=0.98, epsilon=1e-9)
        model.compile(optimizer=accumulate_gradients(optimizer, args.gradient_accumulation_steps),
                      loss=MaskedSparseCrossEntropy(args.label_smoothing), metrics=[MaskedAccuracy()])
        if args.decay_within_budget:  # the decay ends where the budget does
            learning_rate.make_decay_end_movable(model.optimizer)
    return model, tokenizer, collator, batches, learning_rate


def validation_batches(splits, tokenizer, collator, args, distribution=None):
    from vanilla_transformer.batching import EpochShuffledBatches, packed_seq2seq_batches, seq2seq_batches

    if "validation" not in splits:
        return None
    tokenized = tokenize(splits["validation"], tokenizer, args)
    if args.pack_length:  # the token-mean loss of packed rows is that of the pairs: one batch shape for both
        batches = packed_seq2seq_batches(tokenized["input_ids"], tokenized["labels"], collator, shuffle=False,
                                         rows_per_batch=packed_rows(args, distribution))
    else:
        batches = seq2seq_batches(tokenized["input_ids"], tokenized["labels"], collator,
                                  max_tokens=args.max_tokens_per_batch, shuffle=False)
    return EpochShuffledBatches([place_batch(b, collator, distribution) for b in batches], shuffle=False).dataset()


def train(model, tokenizer, splits, batches, schedule, validation_data, args, output_dir: Path, extra_callbacks):
    """Resumable training with per-epoch BLEU, within ``--max_train_minutes`` (with ``--decay_within_budget``
    the linear decay ends where the budget does); returns the run's state and the NaN guard."""
    import keras

    from vanilla_transformer.time_budget import TimeBudget
    from vanilla_transformer.training import StopOnNaN, fit_resumable

    state_path = output_dir / "history.json"
    state = {"history": []}
    if args.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        state["time_before"] = state["history"][-1]["time_s"] if state["history"] else 0.0
    state["started"] = time.time()
    nan_stop = StopOnNaN()
    callbacks = [nan_stop, keras.callbacks.TensorBoard(str(output_dir / "logs")),
                 make_epoch_callback(model, tokenizer, splits, args, output_dir, state), *extra_callbacks]
    stopper = _common.early_stopping(args, "val_bleu", "max")
    if stopper is not None:
        callbacks.append(stopper)
    if args.max_train_minutes:  # counts training steps only: the epoch callback's evaluation is outside
        callbacks.append(TimeBudget(args.max_train_minutes * 60, schedule if args.decay_within_budget else None,
                                    steps_per_epoch=len(batches), seconds_before=state.get("time_before", 0.0)))
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    fit_resumable(model, batches, args.num_train_epochs, output_dir / "backup", save_freq=args.backup_every,
                  callbacks=callbacks, verbose=verbose, validation_data=validation_data)
    if stopper is not None:
        history = keras.callbacks.History()
        history.history = {"val_bleu": [h["val_bleu"] for h in state["history"] if "val_bleu" in h]}
        state["early_stopping"] = _common.finish_early_stopping(model, stopper, history)["early_stopping"]
    return state, nan_stop


def keep_best_average(model, tokenizer, splits, args, output_dir: Path, state: dict, results: dict) -> None:
    """Average the last k epochs; an average that beats the best epoch on validation becomes ``best/``."""
    score = None
    if "validation" in splits:
        def score(averaged):  # on the validation subset the epochs were scored on
            return evaluate_bleu(averaged, tokenizer, splits["validation"], args, args.max_eval_samples)["bleu"]
    best_k, averages, search = search_averages(model, output_dir / "checkpoints", args.average_last_k, score)
    for k, bleu in search.items():
        print(f"average of the last {len(averages[k])} epochs: validation BLEU {bleu:.2f}")
    if len(search) > 1:
        results["average_search"] = {str(k): bleu for k, bleu in search.items()}
    results["averaged"] = averages[best_k]
    if search:
        results["averaged_validation_bleu"] = search[best_k]
        if state.get("best_bleu") is None or search[best_k] > state["best_bleu"]:  # a tie keeps the epoch
            state["best_bleu"], state["kept"] = search[best_k], "average of " + ", ".join(averages[best_k])
            model.save_pretrained(output_dir / "best", tokenizer=tokenizer, model_card=card_info(args, state))


def kept_model(model, output_dir: Path, state: dict, results: dict):
    """The model to report: ``best/`` (reloaded in float32) when the run kept one, else the trained model."""
    if not (output_dir / "best").exists():
        return model
    import keras

    from vanilla_transformer import TransformerForSeq2SeqLM

    # Reported scores come from float32 decoding whatever precision the run trained in.
    keras.mixed_precision.set_global_policy("float32")
    results["kept"] = state.get("kept") or (f"epoch-{state['best_epoch']:03d}" if state.get("best_epoch") else None)
    return TransformerForSeq2SeqLM.from_pretrained(output_dir / "best")


def choose_length_penalty(final, tokenizer, splits, args, results: dict) -> None:
    """Set ``args.length_penalty`` to the candidate with the best beam-search BLEU on the full validation set."""
    # Decoding is a hyper-parameter too: chosen on the full validation set, never on test.
    search = {lp: evaluate_bleu(final, tokenizer, splits["validation"], args, length_penalty=lp)
              for lp in args.length_penalty_candidates}
    args.length_penalty = max(search, key=lambda lp: search[lp]["bleu"])  # the first listed wins a tie
    results["length_penalty_search"] = {str(lp): scores["bleu"] for lp, scores in search.items()}
    results["validation"] = search[args.length_penalty]
    print("validation BLEU by length penalty: " + ", ".join(f"{lp} -> {scores['bleu']:.2f}"
                                                           for lp, scores in search.items())
          + f"; chose {args.length_penalty}")


def choose_mbr(final, tokenizer, splits, args, results: dict) -> bool:
    """Whether MBR decoding scores higher than beam search on the full validation set (ties go to beam)."""
    beam = results.get("validation") or evaluate_bleu(final, tokenizer, splits["validation"], args)
    mbr = evaluate_bleu(final, tokenizer, splits["validation"], args, mbr=True)
    use_mbr = mbr["bleu"] > beam["bleu"]
    results["mbr_search"] = {"beam": beam["bleu"], "mbr": mbr["bleu"]}
    results["validation"] = mbr if use_mbr else beam
    print(f"validation BLEU: beam {beam['bleu']:.2f}, MBR over the {args.mbr_candidates}-best "
          f"({args.mbr_samples} samples) {mbr['bleu']:.2f}; chose {'MBR' if use_mbr else 'beam'}")
    return use_mbr


def evaluate_final(final, tokenizer, splits, args, results: dict) -> None:
    """The length penalty and the decoding (beam or MBR) chosen on the full validation set (never test), then
    validation and test BLEU."""
    has_validation = "validation" in splits
    if args.length_penalty_candidates and has_validation:
        choose_length_penalty(final, tokenizer, splits, args, results)
    results["length_penalty"] = args.length_penalty
    use_mbr = bool(args.mbr_candidates and has_validation and choose_mbr(final, tokenizer, splits, args, results))
    results["decoding"] = (f"MBR over the beam's {args.mbr_candidates}-best, {args.mbr_samples} samples"
                           if use_mbr else f"beam {args.num_beams}")
    for split in ("validation", "test"):
        if split in splits:
            scores = results.get(split) or evaluate_bleu(final, tokenizer, splits[split], args, mbr=use_mbr)
            results[split] = scores
            print(f"{split}: BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f} ({scores['signature']})")


def check_ensemble_members(paths, model, tokenizer) -> None:
    """Exit before any training when a ``--ensemble_with`` model cannot be loaded or cannot ensemble with this
    run's: the ensemble averages distributions over token ids, which must mean the same tokens in every member
    (same vocabulary, special ids and architecture)."""
    from vanilla_transformer import TransformerForSeq2SeqLM
    from vanilla_transformer.generation.ensemble import config_mismatch
    from vanilla_transformer.hub import load_tokenizer

    for path in paths:
        other = load_tokenizer(path)
        if other is None or other.get_vocab() != tokenizer.get_vocab():
            problem = "has no tokenizer" if other is None else "has a vocabulary other than this run's tokenizer"
            raise SystemExit(f"--ensemble_with {path} {problem}: ensemble members must share one tokenizer")
        mismatch = config_mismatch(model.config, TransformerForSeq2SeqLM.from_pretrained(path).config, "this run")
        if mismatch:
            raise SystemExit(f"--ensemble_with {path} has {mismatch}: ensemble members must share the special "
                             "tokens and the architecture")


def evaluate_ensemble(final, tokenizer, splits, args, results: dict) -> None:
    """``final`` ensembled with the ``--ensemble_with`` models, evaluated as :func:`evaluate_final` evaluates a
    model (its own length penalty and decoding chosen on validation), into ``results["ensemble"]``."""
    import keras

    from vanilla_transformer import TransformerForSeq2SeqLM
    from vanilla_transformer.generation.ensemble import Ensemble

    keras.mixed_precision.set_global_policy("float32")  # the members decode in float32, as best/ does
    members = [TransformerForSeq2SeqLM.from_pretrained(path) for path in args.ensemble_with]
    print(f"ensemble of this run's model and {', '.join(args.ensemble_with)}:", flush=True)
    ensemble_results = {"members": ["this run", *args.ensemble_with]}
    evaluate_final(Ensemble([final, *members]), tokenizer, splits, copy.copy(args), ensemble_results)
    results["ensemble"] = ensemble_results


def save_final(final, tokenizer, args, output_dir: Path, state: dict, results: dict, push: bool) -> None:
    # The saved model translates the way it was scored: from_pretrained(...).translate(...) needs no arguments.
    final.generation_config.num_beams = args.num_beams
    final.generation_config.max_new_tokens = args.max_target_length
    # transformers refuses to save a length penalty without beams
    final.generation_config.length_penalty = args.length_penalty if args.num_beams > 1 else None
    state["test_bleu"] = results.get("test", {}).get("bleu")
    info = card_info(args, state)
    if "test" in results:
        info["results"] = {"bleu": results["test"]["bleu"], "chrf": results["test"]["chrf"]}
    # how the scores were decoded: the saved generation_config.json can hold only beam search's settings
    info["hyperparameters"]["decoding"] = results["decoding"]  # set by evaluate_final
    final.save_pretrained(output_dir / "model", tokenizer=tokenizer, model_card=info)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {output_dir / 'results.json'}; model in {output_dir / 'model'}")
    if push:
        final.push_to_hub(args.hub_model_id or output_dir.name, tokenizer=tokenizer, model_card=info,
                          token=args.hub_token)


def set_precision(args) -> str:
    """Set Keras' global dtype policy from ``--mixed_precision`` and print what was chosen and why. ``auto``:
    bfloat16 only where the hardware computes it natively, else float32 (with XLA); float32 when nothing is
    trained (``--num_train_epochs 0``), as reported scores come from float32 decoding."""
    import keras

    from vanilla_transformer.precision import choose_policy

    if args.mixed_precision == "auto" and not args.num_train_epochs:
        policy, reason = "float32", "--mixed_precision auto -> float32: nothing to train, scores decode in float32"
    else:
        policy, reason = choose_policy(args.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    print(f"precision: {reason}", flush=True)
    args.dtype_policy = policy  # for card_info
    return policy


def main(argv=None, extra_callbacks=()):
    """Run the script; ``extra_callbacks`` are added to ``fit`` (tests use one to interrupt a run)."""
    args = parse_args(argv)
    _common.setup_logging()
    import keras

    distribution = set_distribution(args)  # first: several JAX processes must connect before any computation
    strategy, output_dir, is_chief_or_alone = prepare_output(args, distribution)
    keras.utils.set_random_seed(args.seed)
    set_precision(args)
    splits = load_data(args)
    model, tokenizer, collator, batches, schedule = build_and_compile(args, strategy, splits["train"], distribution)
    if args.ensemble_with:
        check_ensemble_members(args.ensemble_with, model, tokenizer)
    validation_data = validation_batches(splits, tokenizer, collator, args, distribution)
    config = model.config
    print(f"{len(splits['train'])} training pairs in {len(batches)} batches; vocabulary {len(tokenizer)}; model "
          f"{model.num_parameters():,} parameters (d_model {config.d_model}, {config.num_encoder_layers}+"
          f"{config.num_decoder_layers} layers, {config.num_heads} heads, d_ff {config.d_ff})"
          + describe_scale_out(strategy, distribution), flush=True)
    state, nan_stop = train(model, tokenizer, splits, batches, schedule, validation_data, args, output_dir,
                            extra_callbacks)
    results = {"train_time_s": round(time.time() - state["started"] + state.get("time_before", 0.0), 1),
               "parameters": model.num_parameters(), "epochs_completed": len(state["history"]),
               "best_epoch": state.get("best_epoch"), "best_validation_bleu": state.get("best_bleu")}
    if nan_stop.stopped_at:
        results["stopped_on_nan"] = nan_stop.stopped_at
    results.update(args.lora_results, gradient_accumulation_steps=args.gradient_accumulation_steps,
                   **({"early_stopping": state["early_stopping"]} if "early_stopping" in state else {}))
    if args.average_last_k and (output_dir / "checkpoints").exists():
        keep_best_average(model, tokenizer, splits, args, output_dir, state, results)
    final = kept_model(model, output_dir, state, results)
    evaluate_final(final, tokenizer, splits, args, results)
    save_final(final, tokenizer, args, output_dir, state, results, push=args.push_to_hub and is_chief_or_alone)
    if args.ensemble_with:  # after the trained model is saved, which a failure here then cannot lose
        evaluate_ensemble(final, tokenizer, splits, args, results)
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
