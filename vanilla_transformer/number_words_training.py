"""The ``vanilla-transformer train`` job: a small encoder-decoder trained on the embedded number-words task
(English -> German number words, :mod:`vanilla_transformer.number_words`), evaluated, saved and reloaded.

The command line (:mod:`vanilla_transformer.cli`) parses the arguments and calls :func:`train_number_words`;
this module does the work: a BPE tokenizer and a small encoder-decoder (or a saved translator to
fine-tune), teacher-forced batches, training with the paper's optimizer (optionally LoRA, gradient
accumulation, early stopping), then the held-out exact match and a reload check.
"""

from __future__ import annotations

import os
import sys
import time


def _number_words_model(args, train_pairs):
    """A BPE tokenizer trained on the pairs and a small encoder-decoder sized by ``args``."""
    from . import TransformerConfig, TransformerForSeq2SeqLM
    from .tokenization import train_bpe_tokenizer

    if getattr(args, "base_model", None):  # fine-tune a saved translator (with its tokenizer)
        from .hub import load_tokenizer

        model = TransformerForSeq2SeqLM.from_pretrained(args.base_model)
        if args.lora_rank is not None:
            model.enable_lora(args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout or 0.0,
                              target_modules=args.lora_target_modules)
        return model, load_tokenizer(args.base_model)
    tokenizer = train_bpe_tokenizer([text for pair in train_pairs for text in pair], vocab_size=args.vocab_size)
    config = TransformerConfig(
        vocab_size=len(tokenizer), d_model=args.d_model, num_heads=4, d_ff=4 * args.d_model,
        num_encoder_layers=args.layers, num_decoder_layers=args.layers, dropout=0.1, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id)
    model = TransformerForSeq2SeqLM(config)
    model.generation_config.max_new_tokens = 32
    return model, tokenizer


def _number_words_dataset(model, tokenizer, pairs, args, shuffle: bool = True):
    """Teacher-forced batches of ``pairs`` (a ``tf.data.Dataset``) and their count."""
    from .batching import batches_to_tf_dataset, seq2seq_batches
    from .data_collators import Seq2SeqCollator

    config = model.config
    sources = tokenizer([en for en, _ in pairs])["input_ids"]
    targets = tokenizer([de for _, de in pairs])["input_ids"]
    collator = Seq2SeqCollator(config.pad_token_id, config.decoder_start_token_id, config.vocab_size)
    batches = seq2seq_batches(sources, targets, collator, batch_size=args.batch_size, seed=args.seed, shuffle=shuffle)
    return batches_to_tf_dataset(batches, seed=args.seed), len(batches)


def _fit_number_words(model, tokenizer, train_pairs, args) -> int:
    """Teacher-forced training with the paper's optimizer, warm-up over two epochs (in optimizer updates);
    with ``--early-stopping-patience`` a tenth of the pairs is held back as validation (loss watched, best
    weights kept). Returns the warm-up; what fine-tuning did is left in ``args.finetuning``."""
    from .gradient_accumulation import accumulate_gradients
    from .optimization import transformer_optimizer

    config = model.config
    validation = None
    if args.early_stopping_patience is not None:
        cut = max(1, len(train_pairs) // 10)
        train_pairs, held = train_pairs[cut:], train_pairs[:cut]
        validation = _number_words_dataset(model, tokenizer, held, args, shuffle=False)[0]
    dataset, num_batches = _number_words_dataset(model, tokenizer, train_pairs, args)
    print(f"number words: {len(train_pairs)} training pairs, {args.num_test} held out; vocabulary "
          f"{len(tokenizer)}; model {model.num_parameters():,} parameters "
          f"(d_model {config.d_model}, {config.num_encoder_layers}+{config.num_decoder_layers} layers)")
    print(f"example: {train_pairs[0][0]!r} -> {train_pairs[0][1]!r}")
    warmup = max(1, num_batches * 2 // args.gradient_accumulation_steps)
    optimizer = transformer_optimizer(config.d_model, warmup_steps=warmup, scale=args.lr_scale)
    model.compile(optimizer=accumulate_gradients(optimizer, args.gradient_accumulation_steps))
    callbacks = _early_stopping(args)
    history = model.fit(dataset, epochs=args.epochs, shuffle=False, verbose=1 if sys.stdout.isatty() else 2,
                        validation_data=validation, callbacks=callbacks)
    args.finetuning = {"gradient_accumulation_steps": args.gradient_accumulation_steps}
    if model.lora_config is not None:
        args.finetuning["lora"] = model.lora_config.to_dict()
    if callbacks:
        losses = history.history["val_loss"]
        best = min(range(len(losses)), key=losses.__getitem__)
        if best != len(losses) - 1:
            model.set_weights(callbacks[0].best_weights)  # Keras restores only when it stops the run itself
        args.finetuning["early_stopping"] = {"monitor": "val_loss", "patience": args.early_stopping_patience,
                                             "epochs_run": len(losses), "best_epoch": best + 1,
                                             "best_value": float(losses[best]),
                                             "stopped_early": bool(callbacks[0].stopped_epoch)}
    return warmup


def _early_stopping(args) -> list:
    if args.early_stopping_patience is None:
        return []
    import keras

    return [keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.early_stopping_patience,
                                          restore_best_weights=True, verbose=1)]


def train_number_words(args) -> int:
    """Train, evaluate, save, reload and re-check a small Transformer on the number-words task.

    The ``vanilla-transformer train`` command: generates English -> German number-word pairs, trains a BPE
    tokenizer and a small encoder-decoder, prints the held-out exact match, saves model and tokenizer to
    ``args.output_dir``, reloads them and checks that the translations are identical. Takes minutes on a CPU.

    Args:
        args: the ``argparse.Namespace`` of the ``train`` command (see
            :func:`vanilla_transformer.cli.build_parser`).

    Returns:
        The exit status: 0, or 1 when the reloaded model translates differently.

    Example:
        >>> from vanilla_transformer.cli import build_parser
        >>> from vanilla_transformer.number_words_training import train_number_words
        >>> args = build_parser().parse_args(["train", "--epochs", "2", "--output-dir", "outputs/nw"])
        >>> args.func is train_number_words
        True
        >>> args.epochs, args.num_train, args.d_model, args.layers, args.output_dir
        (2, 12000, 128, 2, 'outputs/nw')
        >>> train_number_words(args)  # doctest: +SKIP
        0
    """
    import keras
    import numpy as np

    from . import TransformerForSeq2SeqLM
    from .number_words import make_splits

    _check_finetuning_flags(args)
    started = time.time()
    keras.utils.set_random_seed(args.seed)
    train_pairs, test_pairs = make_splits(args.num_train, args.num_test, seed=args.seed)
    model, tokenizer = _number_words_model(args, train_pairs)
    warmup = _fit_number_words(model, tokenizer, train_pairs, args)

    sources_test = [en for en, _ in test_pairs]
    references = [de for _, de in test_pairs]
    predictions = model.translate(sources_test, tokenizer, batch_size=256)
    accuracy = float(np.mean([p == r for p, r in zip(predictions, references)]))
    print(f"\nheld-out exact match: {accuracy:.1%} ({sum(p == r for p, r in zip(predictions, references))}/"
          f"{len(references)})")
    for source, prediction, reference in list(zip(sources_test, predictions, references))[:6]:
        mark = "ok" if prediction == reference else f"expected {reference}"
        print(f"  {source!r:55} -> {prediction!r} ({mark})")

    model.model_card_info = _card_info(args, warmup, accuracy)
    model.save_pretrained(args.output_dir, tokenizer=tokenizer)
    with open(os.path.join(args.output_dir, "results.json"), "w") as out:  # held-out score, fine-tuning settings
        out.write(repr_json({"exact_match": accuracy, **args.finetuning}))
    print(f"saved to {args.output_dir}: {', '.join(sorted(os.listdir(args.output_dir)))}")

    from transformers import AutoTokenizer

    reloaded = TransformerForSeq2SeqLM.from_pretrained(args.output_dir)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(args.output_dir)
    again = reloaded.translate(sources_test, reloaded_tokenizer, batch_size=256)
    identical = again == predictions
    print(f"reloaded with from_pretrained: translations identical = {identical}")
    print(f"total time {time.time() - started:.0f} s")
    if not identical:
        print("ERROR: the reloaded model translates differently", file=sys.stderr)
        return 1
    return 0


def _card_info(args, warmup: int, accuracy: float) -> dict:
    """What the saved model's card says about its training and held-out score."""
    from .optimization import PAPER_ADAM

    adam = ", ".join(f"{value:g}".replace("e-0", "e-") for value in PAPER_ADAM.values())  # 0.9, 0.98, 1e-9
    return {
        "description": "A small Transformer trained by `vanilla-transformer train` to translate English number "
                       "words into German number words.",
        "hyperparameters": {"epochs": args.epochs, "batch size": args.batch_size, "label smoothing": 0.1,
                            "optimizer": f"Adam({adam})", "warmup steps": warmup, "seed": args.seed},
        "results": {"exact_match": round(accuracy, 4)}, "dataset_name": "number words (generated)",
        "language": ["en", "de"],
    }


def _check_finetuning_flags(args) -> None:
    """Refuse fine-tuning flags that would do nothing or cannot work (SystemExit naming them)."""
    lora_only = [flag for flag, value in (("--lora-alpha", args.lora_alpha), ("--lora-dropout", args.lora_dropout),
                                          ("--lora-target-modules", args.lora_target_modules)) if value is not None]
    if lora_only and args.lora_rank is None:
        raise SystemExit(f"error: {', '.join(lora_only)} need --lora-rank")
    if args.lora_rank is not None and not args.base_model:
        raise SystemExit("error: --lora-rank adapts a trained model: give --base-model (a saved translator)")
    if args.base_model:
        given = [f"--{name.replace('_', '-')}" for name in ("vocab_size", "d_model", "layers")
                 if getattr(args, name) != TRAIN_DEFAULTS[name]]
        if given:
            raise SystemExit(f"error: {', '.join(given)} size a new model; --base-model brings its own")
    if args.gradient_accumulation_steps < 1:
        raise SystemExit("error: --gradient-accumulation-steps must be at least 1")
    if args.early_stopping_patience is not None and args.early_stopping_patience < 1:
        raise SystemExit("error: --early-stopping-patience must be at least 1")


TRAIN_DEFAULTS = {"vocab_size": 400, "d_model": 128, "layers": 2}


def repr_json(value) -> str:
    """``value`` as indented JSON text with a final newline (``results.json`` of the ``train`` command).

    Example:
        >>> from vanilla_transformer.number_words_training import repr_json
        >>> print(repr_json({"exact_match": 0.98}), end="")
        {
          "exact_match": 0.98
        }
    """
    import json

    return json.dumps(value, indent=2) + "\n"
