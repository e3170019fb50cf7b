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
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The recipe's steps live next to this script, in examples/translation/: data.py (reading, tokenizing, batching),
# distribution.py (devices and output folders), training.py (model, optimizer, schedule, the fit), selection.py
# (checkpoint averaging, the decoding search, ensembles) and report.py (BLEU/chrF, plots, results.json).
import _common  # noqa: E402
from translation.data import load_data, validation_batches  # noqa: E402
from translation.distribution import describe_scale_out, prepare_output, set_distribution  # noqa: E402
from translation.report import print_run_summary, save_final, training_results, write_results  # noqa: E402
from translation.selection import (  # noqa: E402
    check_ensemble_members, evaluate_ensemble, evaluate_final, keep_best_average, kept_model)
from translation.training import build_and_compile, set_precision, train  # noqa: E402


# ------------------------------------------------------------------------------------------ flags
def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The "data" flags: what to read, the language pair, the length limits and the tokenizer's punctuation."""
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


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    """The "decoding and evaluation" flags: beam search, the decoding searches after training (length penalty,
    MBR), ensembles, and how often and on how much validation data BLEU is scored during training."""
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


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The "training" flags: output, epochs and batches, the learning-rate schedule, regularization, checkpoint
    averaging, the time budget, precision, backups and the seed."""
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
    """The run's flags (the model's, then data, decoding and evaluation, training, fine-tuning, distribution and
    Hub), with every combination the run cannot honour refused before anything is loaded."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_model_arguments(p, default_model="transformer-base")
    add_data_arguments(p)
    add_decoding_arguments(p)
    add_training_arguments(p)
    _common.add_finetuning_arguments(p)
    _common.add_distribution_arguments(p)
    _common.add_hub_arguments(p)
    args = p.parse_args(argv)
    refuse_finetuning_conflicts(p, args)
    refuse_conflicting_flags(p, args)
    _common.refuse_unused_flags(p, args)
    import keras

    _common.refuse_unused_distribution_flags(p, args, keras.backend.backend())
    return args


def refuse_conflicting_flags(p: argparse.ArgumentParser, args) -> None:
    """Exit with a usage error on flags that contradict each other or would do nothing; fill in the defaults
    that depend on other flags (``--lr_scale`` 1.0, ``--bpe_dropout_views`` 8)."""
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


# ------------------------------------------------------------------------------------------ the recipe
def main(argv=None, extra_callbacks=()):
    """Run the script; ``extra_callbacks`` are added to ``fit`` (tests use one to interrupt a run)."""
    args = parse_args(argv)
    _common.setup_logging()
    import keras

    # 1. Where to compute and write; the seed; the precision.
    distribution = set_distribution(args)  # first: several JAX processes must connect before any computation
    strategy, output_dir, is_chief_or_alone = prepare_output(args, distribution)
    keras.utils.set_random_seed(args.seed)
    set_precision(args)
    # 2. The data, the model with its tokenizer, the batches and the paper's optimizer.
    splits = load_data(args)
    model, tokenizer, collator, batches, schedule = build_and_compile(args, strategy, splits["train"], distribution)
    if args.ensemble_with:  # refused now rather than after training
        check_ensemble_members(args.ensemble_with, model, tokenizer)
    validation_data = validation_batches(splits, tokenizer, collator, args, distribution)
    print_run_summary(len(splits["train"]), batches, tokenizer, model, describe_scale_out(strategy, distribution))
    # 3. Training: resumable, validation BLEU every --eval_every epochs, within --max_train_minutes.
    state, nan_stop = train(model, tokenizer, splits, batches, schedule, validation_data, args, output_dir,
                            extra_callbacks)
    results = training_results(model, state, nan_stop, args)
    # 4. The weights to keep (best epoch or checkpoint average) and the decoding, both chosen on validation.
    if args.average_last_k and (output_dir / "checkpoints").exists():
        keep_best_average(model, tokenizer, splits, args, output_dir, state, results)
    final = kept_model(model, output_dir, state, results)
    evaluate_final(final, tokenizer, splits, args, results)
    # 5. The model, its card and results.json; then, optionally, an ensemble with other saved models.
    save_final(final, tokenizer, args, output_dir, state, results, push=args.push_to_hub and is_chief_or_alone)
    if args.ensemble_with:  # after the trained model is saved, which a failure here then cannot lose
        evaluate_ensemble(final, tokenizer, splits, args, results)
        write_results(results, output_dir)
    return results


if __name__ == "__main__":
    main()
