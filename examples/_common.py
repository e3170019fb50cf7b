"""Shared pieces of ``run_mlm.py``, ``run_clm.py`` and ``run_classification.py``.

The command-line flags follow transformers' example scripts (``--model_name_or_path``, ``--train_file``,
``--validation_file``, ``--dataset_name``, ``--output_dir``, ``--num_train_epochs``,
``--per_device_train_batch_size``, ``--learning_rate``, ``--max_seq_length``, ``--push_to_hub``,
``--hub_model_id``), plus size overrides (``--d_model``, ``--num_layers``, ...) for pretraining a small
model from scratch from a preset.

Run as a script it prepares the language-identification data of docs/examples.md from Multi30k::

    python examples/_common.py langid --data_dir ../shared/data/multi30k --output_dir /tmp/langid
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

logger = logging.getLogger("vanilla_transformer.examples")

SPECIAL_TEMPLATE = ("<s>", "</s>")  # every sequence is "<s> tokens </s>": <s> is the [CLS]-like first token


# ------------------------------------------------------------------------------------------ arguments
def add_model_arguments(parser: argparse.ArgumentParser, default_model: str) -> None:
    """The model and tokenizer flags every script shares (sizes apply when building from a preset)."""
    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", default=default_model,
                       help="a preset name (train from scratch: transformer-base, bert-base, gpt, gpt2, ...), a "
                            "directory written by save_pretrained, or a Hub repo id")
    model.add_argument("--tokenizer_name", default=None,
                       help="tokenizer directory or Hub id (default: the one saved with the model; trained on "
                            "the training data when building from a preset)")
    model.add_argument("--vocab_size", type=int, default=None, help="BPE vocabulary trained from scratch (8000)")
    model.add_argument("--d_model", type=int, default=None, help="override the preset's d_model")
    model.add_argument("--num_layers", type=int, default=None,
                       help="override the preset's number of layers (encoder and decoder alike)")
    model.add_argument("--num_heads", type=int, default=None,
                       help="override the preset's heads (default with --d_model: d_model / 32)")
    model.add_argument("--d_ff", type=int, default=None, help="override d_ff (default with --d_model: 4 d_model)")
    model.add_argument("--max_position_embeddings", type=int, default=None,
                       help="positions of a model built from a preset (default: the longest sequence allowed)")
    model.add_argument("--dropout", type=float, default=None,
                       help="override the dropout of sub-layer outputs and embeddings (section 5.4)")
    model.add_argument("--attention_dropout", type=float, default=None, help="override attention dropout")


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true")
    hub.add_argument("--hub_model_id", default=None, help="repo id to push to (default: output_dir's name)")
    hub.add_argument("--hub_token", default=None, help="token for the push (default: HF_TOKEN / the saved login)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", default=None, help="a dataset on the Hub (datasets.load_dataset)")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--train_file", default=None, help="local .txt/.json/.jsonl/.csv file (optionally .gz)")
    data.add_argument("--validation_file", default=None, help="same formats as --train_file")
    data.add_argument("--validation_split_percentage", type=int, default=5,
                      help="share of the training data held out when there is no validation set")
    data.add_argument("--text_column_name", default=None, help="column holding the text (default: text)")
    data.add_argument("--max_seq_length", type=int, default=128, help="truncate tokenized sequences to this")
    data.add_argument("--pad_to_max_length", action="store_true",
                      help="pad every batch to --max_seq_length (one shape: a single compilation) instead of the "
                           "longest row rounded up to a multiple of 8")
    data.add_argument("--max_train_samples", type=int, default=None)
    data.add_argument("--max_eval_samples", type=int, default=None)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", required=True)
    train.add_argument("--do_train", action="store_true", help="(both train and eval run when neither is given)")
    train.add_argument("--do_eval", action="store_true")
    train.add_argument("--num_train_epochs", type=int, default=3)
    train.add_argument("--per_device_train_batch_size", type=int, default=32)
    train.add_argument("--per_device_eval_batch_size", type=int, default=64)
    train.add_argument("--learning_rate", type=float, default=5e-4)
    train.add_argument("--warmup_ratio", type=float, default=0.05, help="share of the steps spent warming up")
    train.add_argument("--weight_decay", type=float, default=0.0, help="AdamW's decoupled weight decay (0: Adam)")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--jit_compile", action=argparse.BooleanOptionalAction, default=None,
                       help="XLA-compile the training step (default: on, except bfloat16 on a CPU with bfloat16 "
                            "units (AVX512-BF16/AMX); --no-jit_compile starts faster on tiny runs)")


def build_parser(description: str, default_model: str) -> argparse.ArgumentParser:
    """The parser of run_mlm.py, run_clm.py and run_classification.py (transformers' flag names)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(parser, default_model)
    add_data_arguments(parser)
    add_training_arguments(parser)
    add_finetuning_arguments(parser)
    add_hub_arguments(parser)
    return parser


def add_finetuning_arguments(parser: argparse.ArgumentParser) -> None:
    """LoRA (PEFT's names), gradient accumulation and early stopping: the flags of every training script."""
    tune = parser.add_argument_group("fine-tuning")
    tune.add_argument("--lora_rank", type=int, default=None,
                      help="train LoRA adapters of this rank instead of every weight (saved in PEFT's format)")
    tune.add_argument("--lora_alpha", type=float, default=None, help="LoRA scale numerator (default: the rank)")
    tune.add_argument("--lora_dropout", type=float, default=None, help="dropout on the adapters' inputs (0)")
    tune.add_argument("--lora_target_modules", default=None,
                      help="comma-separated layers to adapt: q,k,v,o,ffn,embeddings or q_proj,...,fc1,fc2 (q,v)")
    tune.add_argument("--gradient_accumulation_steps", type=int, default=1,
                      help="micro-batches per optimizer update (the schedule counts updates)")
    tune.add_argument("--early_stopping_patience", type=int, default=None,
                      help="stop after this many epochs without a better validation metric; keep the best weights")


def check_finetuning_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a clear error for fine-tuning flags that would do nothing or cannot work."""
    lora_only = [f"--{name}" for name in ("lora_alpha", "lora_dropout", "lora_target_modules")
                 if getattr(args, name) is not None]
    if lora_only and args.lora_rank is None:
        parser.error(f"{', '.join(lora_only)} need --lora_rank (LoRA is off without it)")
    if args.lora_rank is not None and args.lora_rank < 1:
        parser.error(f"--lora_rank {args.lora_rank} must be a positive integer")
    if args.lora_rank is not None and is_preset(args.model_name_or_path):
        parser.error(f"--lora_rank adapts a pretrained model; {args.model_name_or_path!r} is a preset built from "
                     "scratch (its random weights would stay frozen): give a saved model or Hub repo")
    if args.gradient_accumulation_steps < 1:
        parser.error(f"--gradient_accumulation_steps {args.gradient_accumulation_steps} must be at least 1")
    if args.early_stopping_patience is not None and args.early_stopping_patience < 1:
        parser.error(f"--early_stopping_patience {args.early_stopping_patience} must be at least 1")


def apply_lora(model, args) -> dict:
    """``model.enable_lora`` from the flags (nothing without ``--lora_rank``); returns what results.json records."""
    if args.lora_rank is None:
        return {}
    from vanilla_transformer.lora import parameter_counts

    config = model.enable_lora(args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout or 0.0,
                               target_modules=args.lora_target_modules)
    trainable, total = parameter_counts(model)
    logger.info("LoRA rank %d on %s: %s of %s parameters train", config.r, ",".join(config.target_modules),
                f"{trainable:,}", f"{total:,}")
    return {"lora": {**config.to_dict(), "trainable_parameters": trainable, "all_parameters": total}}


def early_stopping(args, monitor: str, mode: str):
    """Keras' ``EarlyStopping`` on ``monitor`` with ``--early_stopping_patience`` (None without the flag)."""
    if args.early_stopping_patience is None:
        return None
    import keras

    return keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=args.early_stopping_patience,
                                         restore_best_weights=True, verbose=1)


def finish_early_stopping(model, callback, history) -> dict:
    """Put the best epoch's weights back (Keras does only when it stops the run) and describe the outcome."""
    if callback is None:
        return {}
    values = history.history.get(callback.monitor)
    if not values:
        raise ValueError(f"--early_stopping_patience: no {callback.monitor} to watch (is there validation data?)")
    best_epoch = int(max(range(len(values)), key=lambda i: values[i] if callback.mode == "max" else -values[i]))
    if callback.best_weights is not None and best_epoch != len(values) - 1:
        model.set_weights(callback.best_weights)
    return {"early_stopping": {"monitor": callback.monitor, "patience": callback.patience,
                               "epochs_run": len(values), "best_epoch": best_epoch + 1,
                               "best_value": float(values[best_epoch]), "stopped_early": bool(callback.stopped_epoch)}}


PRESET_ONLY_FLAGS = ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_position_embeddings")


def refuse_unused_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a clear error for flags that would do nothing: model sizes given with a pretrained model."""
    if not is_preset(args.model_name_or_path):
        given = [f"--{flag}" for flag in PRESET_ONLY_FLAGS if getattr(args, flag, None) is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply when building a model from a preset; "
                         f"{args.model_name_or_path} brings its own sizes")
    if args.tokenizer_name and is_preset(args.model_name_or_path) and args.vocab_size is not None:
        parser.error("--vocab_size sizes a tokenizer trained from scratch; --tokenizer_name brings its own")
    if args.vocab_size is None:
        args.vocab_size = 8000


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    check_finetuning_flags(parser, args)
    if args.dataset_name is None and args.train_file is None and args.validation_file is None:
        parser.error("give --dataset_name or --train_file / --validation_file")
    refuse_unused_flags(parser, args)
    if not args.do_train and not args.do_eval:
        args.do_train = args.do_eval = True
    return args


# ------------------------------------------------------------------------------------------ scale-out
def add_distribution_arguments(parser: argparse.ArgumentParser) -> None:
    """How training spreads over devices: ``--strategy`` (tf.distribute) and ``--distribution`` (keras.distribution)."""
    scale = parser.add_argument_group("scale-out (batches are global: the same updates on any number of devices)")
    scale.add_argument("--strategy", choices=["default", "mirrored", "multi_worker"], default="default",
                       help="TensorFlow's tf.distribute: mirrored over this machine's devices, or multi_worker (one "
                            "process per machine, the cluster in TF_CONFIG)")
    scale.add_argument("--distribution", choices=["auto", "none", "data_parallel", "model_parallel"], default="auto",
                       help="JAX's keras.distribution: data_parallel replicates the weights and splits every batch "
                            "over the devices; model_parallel splits the attention and feed-forward kernels "
                            "(vanilla_transformer.sharding); auto: data_parallel when JAX sees several devices")


def refuse_unused_distribution_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, backend: str) -> None:
    """Exit with a clear error for a scale-out flag the backend would ignore."""
    if args.strategy != "default" and backend != "tensorflow":
        parser.error(f"--strategy {args.strategy} is tf.distribute, which runs on TensorFlow; the backend is "
                     f"{backend} (on JAX use --distribution)")
    if args.distribution not in ("auto", "none") and backend != "jax":
        parser.error(f"--distribution {args.distribution} is keras.distribution, which runs on JAX; the backend is "
                     f"{backend} (on TensorFlow use --strategy)")


def keras_distribution(name: str, config=None):
    """The ``keras.distribution`` for ``--distribution`` on JAX over every device JAX sees; None for one device.

    ``auto`` is ``data_parallel`` with several devices and ``none`` with one; ``data_parallel`` or
    ``model_parallel`` with a single device is an error (they would change nothing). ``config`` gives the
    heads and d_ff that ``model_parallel`` splits.
    """
    import keras

    from vanilla_transformer.sharding import make_distribution

    devices = keras.distribution.list_devices()
    if name == "auto":
        name = "data_parallel" if len(devices) > 1 else "none"
    elif name != "none" and len(devices) < 2:
        raise SystemExit(f"--distribution {name} needs several devices, and JAX sees one ({devices[0]}); on a CPU, "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count=N makes N")
    return make_distribution(name, config, devices)


def batch_shards(distribution) -> int:
    """Into how many parts ``distribution`` splits a batch's rows (1 without one)."""
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)]


def setup_logging() -> None:
    """One log format for the scripts; libraries' chatter below warnings is silenced."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # no-op if already set up
    logger.setLevel(logging.INFO)
    for noisy in ("absl", "tensorflow", "datasets", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def setup(args) -> None:
    """Logging for the scripts and the seed of every random generator."""
    setup_logging()
    import keras

    keras.utils.set_random_seed(args.seed)


# ------------------------------------------------------------------------------------------ data
def _builder(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    extension = name.rsplit(".", 1)[-1].lower()
    if extension in ("json", "jsonl"):
        return "json"
    if extension in ("csv", "tsv"):
        return "csv"
    return "text"


def load_raw_datasets(args):
    """A ``DatasetDict`` with ``train`` and ``validation`` (split off ``train`` when none is given)."""
    import datasets

    if args.dataset_name is not None:
        raw = datasets.load_dataset(args.dataset_name, args.dataset_config_name)
    else:
        files = {split: path for split, path in (("train", args.train_file), ("validation", args.validation_file))
                 if path}
        builders = {_builder(path) for path in files.values()}
        if len(builders) > 1:
            raise ValueError(f"--train_file and --validation_file must have the same format, got {sorted(builders)}")
        builder = builders.pop()
        kwargs = {"delimiter": "\t"} if builder == "csv" and any(
            p.removesuffix(".gz").endswith(".tsv") for p in files.values()) else {}
        raw = datasets.load_dataset(builder, data_files=files, **kwargs)
    if "validation" not in raw and "train" in raw and args.validation_split_percentage:
        split = raw["train"].train_test_split(test_size=args.validation_split_percentage / 100, seed=args.seed)
        raw = datasets.DatasetDict(train=split["train"], validation=split["test"])
    for split, limit in (("train", args.max_train_samples), ("validation", args.max_eval_samples)):
        if limit is not None and split in raw:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    return raw


def text_column(dataset, requested: str | None) -> str:
    if requested:
        if requested not in dataset.column_names:
            raise ValueError(f"--text_column_name {requested!r} is not a column of {dataset.column_names}")
        return requested
    for name in ("text", "sentence", "content"):
        if name in dataset.column_names:
            return name
    strings = [name for name, feature in dataset.features.items() if getattr(feature, "dtype", None) == "string"]
    if not strings:
        raise ValueError(f"no text column among {dataset.column_names}; pass --text_column_name")
    return strings[0]


def nonempty_texts(dataset, column: str) -> list[str]:
    return [text for text in dataset[column] if text and text.strip()]


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text (with the tokenizer's special tokens), truncated to ``max_length``."""
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return [list(row) for row in ids]


# ------------------------------------------------------------------------------------------ model
def is_preset(name: str) -> bool:
    """Whether ``--model_name_or_path`` names a preset (built from scratch) rather than a directory or repo."""
    from vanilla_transformer import PRESETS

    return name in PRESETS and not os.path.isdir(name)


def new_tokenizer(texts: list[str], vocab_size: int, split_punctuation: bool = False, wrap: bool = True):
    """A BPE tokenizer trained on ``texts``; with ``wrap`` it encodes every sequence as ``<s> ... </s>``."""
    from tokenizers import processors

    from vanilla_transformer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size, split_punctuation=split_punctuation)
    if wrap:
        bos, eos = SPECIAL_TEMPLATE
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} $B {eos}",
            special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos)), (eos, tokenizer.convert_tokens_to_ids(eos))])
    return tokenizer


def pretrained_tokenizer(args):
    """``--tokenizer_name``, else the tokenizer saved with ``--model_name_or_path`` (an error when there is none)."""
    from transformers import AutoTokenizer

    from vanilla_transformer import load_tokenizer

    if args.tokenizer_name:
        return AutoTokenizer.from_pretrained(args.tokenizer_name)
    tokenizer = load_tokenizer(args.model_name_or_path)
    if tokenizer is None:
        raise SystemExit(f"{args.model_name_or_path} has no tokenizer saved with it; pass --tokenizer_name")
    return tokenizer


def load_or_train_tokenizer(args, train_texts: list[str], wrap: bool = True):
    """The pretrained tokenizer, or (building from a preset) a BPE tokenizer trained on ``train_texts``."""
    if args.tokenizer_name or not is_preset(args.model_name_or_path):
        return pretrained_tokenizer(args)
    started = time.time()
    tokenizer = new_tokenizer(train_texts, args.vocab_size, getattr(args, "split_punctuation", False), wrap)
    logger.info("trained a BPE tokenizer of %d tokens on %d texts in %.1fs", len(tokenizer), len(train_texts),
                time.time() - started)
    return tokenizer


def size_overrides(args, architecture: str) -> dict:
    """Config fields set by the size flags (``--d_model`` alone also sets heads d_model / 32 and d_ff 4 d_model)."""
    overrides = {}
    if args.d_model is not None:
        overrides.update(d_model=args.d_model, num_heads=args.num_heads or max(1, args.d_model // 32),
                         d_ff=args.d_ff or 4 * args.d_model)
    else:
        overrides.update({k: v for k, v in (("num_heads", args.num_heads), ("d_ff", args.d_ff)) if v})
    if args.num_layers is not None:
        if architecture != "encoder":
            overrides["num_decoder_layers"] = args.num_layers
        if architecture != "decoder":
            overrides["num_encoder_layers"] = args.num_layers
    return overrides


def dropout_overrides(args) -> dict:
    """Config fields set by ``--dropout`` and ``--attention_dropout``, for presets and pretrained models alike."""
    return {field: getattr(args, field) for field in ("dropout", "attention_dropout")
            if getattr(args, field) is not None}


def preset_config(args, tokenizer, max_length: int, **extra):
    """The preset's config with the tokenizer's vocabulary and special ids and the size overrides."""
    from vanilla_transformer import PRESETS, TransformerConfig

    architecture = PRESETS[args.model_name_or_path]["architecture"]
    overrides = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                     max_position_embeddings=args.max_position_embeddings or max_length)
    if architecture != "encoder":
        overrides.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if architecture == "encoder-decoder":
        overrides.update(decoder_start_token_id=tokenizer.bos_token_id)
    if architecture == "encoder":
        overrides.update(mask_token_id=tokenizer.mask_token_id)
    overrides.update(size_overrides(args, architecture), **dropout_overrides(args), **extra)
    return TransformerConfig.from_preset(args.model_name_or_path, **overrides)


def load_model(cls, args, tokenizer, max_length: int | None = None, **config_overrides):
    """A model built from a preset (from scratch, ``max_length`` positions unless ``--max_position_embeddings``)
    or loaded with ``from_pretrained``, which reports weights that did not match."""
    if is_preset(args.model_name_or_path):
        model = cls(preset_config(args, tokenizer, max_length or args.max_seq_length, **config_overrides))
        model.build_weights()
        logger.info("new %s from preset %r: %s parameters", cls.__name__, args.model_name_or_path,
                    f"{model.num_parameters():,}")
        return model
    model = cls.from_pretrained(args.model_name_or_path, **dropout_overrides(args), **config_overrides)
    logger.info("loaded %s from %s: %s parameters", cls.__name__, args.model_name_or_path,
                f"{model.num_parameters():,}")
    return model


def pad_multiple(args, max_length: int) -> int:
    """The collators' ``pad_to_multiple_of``: 8, or ``max_length`` itself with ``--pad_to_max_length``."""
    return max_length if args.pad_to_max_length else 8


def schedule_steps(args, num_examples: int) -> tuple[int, int]:
    """(warmup steps, total steps) of the linear warmup / linear decay schedule, in optimizer updates (a batch,
    or ``--gradient_accumulation_steps`` of them)."""
    batches = max(1, math.ceil(num_examples / args.per_device_train_batch_size))
    total = max(1, batches // args.gradient_accumulation_steps) * args.num_train_epochs
    return int(total * args.warmup_ratio), total


def fit(model, args, train_dataset, eval_dataset, monitor: str = "val_loss", mode: str = "min"):
    """``model.fit`` for ``--num_train_epochs``, with early stopping on ``monitor`` when asked; returns
    ``(history, results)``."""
    verbose = 1 if sys.stdout.isatty() else 2
    started = time.time()
    stopper = early_stopping(args, monitor, mode)
    if stopper is not None and eval_dataset is None:
        raise ValueError("--early_stopping_patience needs validation data to watch")
    timer = epoch_timer()
    history = model.fit(train_dataset, validation_data=eval_dataset, epochs=args.num_train_epochs, verbose=verbose,
                        shuffle=False, callbacks=[timer, *([stopper] if stopper else [])])  # the dataset shuffles
    logger.info("trained %d epochs in %.1fs", len(history.history["loss"]), time.time() - started)
    later = timer.seconds[1:] or timer.seconds  # the first epoch includes compiling the step
    return history, {"epoch_seconds": timer.seconds, "seconds_per_epoch": sum(later) / len(later),
                     **finish_early_stopping(model, stopper, history)}


def epoch_timer():
    """A Keras callback recording each epoch's training time (validation excluded) in ``.seconds``."""
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def stop(self):
            if getattr(self, "started", None) is not None:
                self.seconds.append(time.perf_counter() - self.started)
                self.started = None

        def on_test_begin(self, logs=None):  # validation runs inside the epoch: stop the clock there
            self.stop()

        def on_epoch_end(self, epoch, logs=None):
            self.stop()

    return Timer()


def compile_for_training(model, args, num_examples: int) -> tuple[int, int]:
    """Compile with Adam (AdamW with ``--weight_decay``) on a linear warm-up and decay over the run, keeping the
    model's own loss and metrics; returns ``(warmup steps, total steps)``."""
    from vanilla_transformer.optimization import language_model_optimizer

    from vanilla_transformer.gradient_accumulation import accumulate_gradients

    warmup, total = schedule_steps(args, num_examples)
    optimizer = language_model_optimizer(args.learning_rate, warmup, total, args.weight_decay)
    model.compile(optimizer=accumulate_gradients(optimizer, args.gradient_accumulation_steps),
                  jit_compile=args.jit_compile)
    return warmup, total


def compile_and_fit(model, args, num_examples: int, train_dataset, eval_dataset, monitor: str = "val_loss",
                    mode: str = "min") -> dict:
    """:func:`compile_for_training`, then train; returns ``{"train_loss", "seconds_per_epoch", ...}`` (and
    ``"early_stopping"``, ``"gradient_accumulation_steps"`` when used)."""
    warmup, total = compile_for_training(model, args, num_examples)
    logger.info("%d training examples, %d optimizer updates (%d warmup, %d batches each)", num_examples, total,
                warmup, args.gradient_accumulation_steps)
    history, results = fit(model, args, train_dataset, eval_dataset, monitor, mode)
    return {"train_loss": float(history.history["loss"][-1]),
            "gradient_accumulation_steps": args.gradient_accumulation_steps, **results}


def text_splits(args) -> dict[str, list[str]]:
    """The non-empty texts of each split of the raw datasets."""
    raw = load_raw_datasets(args)
    column = text_column(next(iter(raw.values())), args.text_column_name)
    return {split: nonempty_texts(raw[split], column) for split in raw}


def evaluate_language_model(model, dataset, shift: bool, num_sentences: int, what: str) -> dict:
    """Token-weighted loss, accuracy and perplexity of ``dataset`` (see :func:`evaluate_tokens`), logged."""
    loss, accuracy, count = evaluate_tokens(model, dataset, shift)
    logger.info("%s: loss %.4f, accuracy %.4f, perplexity %.2f (%d tokens in %d validation sentences)", what, loss,
                accuracy, math.exp(loss), count, num_sentences)
    return dict(eval_loss=loss, eval_accuracy=accuracy, perplexity=math.exp(loss), eval_samples=num_sentences,
                eval_tokens=count)


def evaluate_tokens(model, dataset, shift: bool) -> tuple[float, float, int]:
    """Token-weighted mean cross-entropy, accuracy and count of the labels != -100 of ``dataset``.

    ``shift`` compares logits at t with labels at t + 1 (causal LM). Keras' ``evaluate`` averages the
    per-batch means instead, so this is the exact figure for a perplexity.
    """
    import keras
    import numpy as np

    total, correct, count = 0.0, 0, 0
    for inputs, labels in dataset:
        logits = keras.ops.convert_to_numpy(model(inputs, training=False)).astype("float64")  # torch tensors too
        labels = np.asarray(labels)
        if shift:
            logits, labels = logits[:, :-1], labels[:, 1:]
        keep = labels != -100
        logits, labels = logits[keep], labels[keep]
        logits -= logits.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=-1))
        total += float((log_norm - logits[np.arange(len(labels)), labels]).sum())
        correct += int((logits.argmax(axis=-1) == labels).sum())
        count += int(keep.sum())
    return total / max(count, 1), correct / max(count, 1), count


def save(model, tokenizer, args, results: dict, description: str, dataset_label: str) -> None:
    """save_pretrained (with tokenizer and a model card), results JSON, and push to the Hub if asked."""
    card = {
        "description": description,
        "hyperparameters": {"epochs": args.num_train_epochs, "batch size": args.per_device_train_batch_size,
                            "learning rate": args.learning_rate, "warmup ratio": args.warmup_ratio,
                            "max sequence length": args.max_seq_length, "seed": args.seed},
        "results": {name: round(float(results[key]), 4) for key, name in (
            ("eval_loss", "loss"), ("eval_accuracy", "accuracy"), ("perplexity", "perplexity")) if key in results},
        "dataset_name": dataset_label,
        "repo_id": args.hub_model_id or Path(args.output_dir).name,
    }
    if not is_preset(args.model_name_or_path):
        card["base_model"] = args.model_name_or_path if not os.path.isdir(args.model_name_or_path) else None
    model.model_card_info = card
    output = Path(args.output_dir)
    model.save_pretrained(output, tokenizer=tokenizer)
    (output / "all_results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    logger.info("saved to %s: %s", output, ", ".join(sorted(os.listdir(output))))
    if args.push_to_hub:
        repo_id = args.hub_model_id or output.name
        info = model.push_to_hub(repo_id, tokenizer=tokenizer, token=args.hub_token, model_card=card)
        logger.info("pushed to %s (%s)", repo_id, getattr(info, "commit_url", info))


def dataset_label(args) -> str:
    if args.dataset_name:
        return args.dataset_name
    path = Path(args.train_file or args.validation_file)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


# ------------------------------------------------------------------------------------------ langid data
def write_language_id_files(data_dir: str, output_dir: str, languages=("en", "de"),
                            splits=(("train", "train"), ("val", "validation"))) -> dict[str, str]:
    """``{output_dir}/{train,validation}.jsonl.gz`` with ``{"text", "label"}`` rows, label i = languages[i],
    from Multi30k's ``{split}.{lang}.gz`` files (one sentence per line)."""
    import random

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for source_split, target_split in splits:
        rows = []
        for label, language in enumerate(languages):
            with gzip.open(Path(data_dir) / f"{source_split}.{language}.gz", "rt", encoding="utf-8") as handle:
                rows.extend({"text": line.strip(), "label": label} for line in handle if line.strip())
        random.Random(0).shuffle(rows)
        path = out / f"{target_split}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        written[target_split] = str(path)
    return written


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="data preparation for the examples")
    sub = cli.add_subparsers(dest="command", required=True)
    langid = sub.add_parser("langid", help="English-vs-German sentence identification files from Multi30k")
    langid.add_argument("--data_dir", required=True)
    langid.add_argument("--output_dir", required=True)
    langid.add_argument("--languages", nargs="+", default=["en", "de"])
    options = cli.parse_args()
    for split, path in write_language_id_files(options.data_dir, options.output_dir, options.languages).items():
        print(f"{split}: {path}")
