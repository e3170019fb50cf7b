"""The ``vanilla-transformer`` command line.

- ``vanilla-transformer train``: the embedded main job (number words, English -> German), no download.
- ``vanilla-transformer translate --model DIR "text" ...``: translate with a saved model.
- ``vanilla-transformer push DIR REPO_ID``: upload a saved model directory to the Hub.
- ``vanilla-transformer convert SRC DST --to transformers|keras``: convert checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _number_words_model(args, train_pairs):
    """A BPE tokenizer trained on the pairs and a small encoder-decoder sized by ``args``."""
    from . import TransformerConfig, TransformerForSeq2SeqLM
    from .tokenization import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([text for pair in train_pairs for text in pair], vocab_size=args.vocab_size)
    config = TransformerConfig(
        vocab_size=len(tokenizer), d_model=args.d_model, num_heads=4, d_ff=4 * args.d_model,
        num_encoder_layers=args.layers, num_decoder_layers=args.layers, dropout=0.1, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id)
    model = TransformerForSeq2SeqLM(config)
    model.generation_config.max_new_tokens = 32
    return model, tokenizer


def _fit_number_words(model, tokenizer, train_pairs, args) -> int:
    """Teacher-forced training with the paper's optimizer, warm-up over two epochs; returns the warm-up."""
    from .batching import batches_to_tf_dataset, seq2seq_batches
    from .data_collators import Seq2SeqCollator
    from .optimization import transformer_optimizer

    config = model.config
    sources = tokenizer([en for en, _ in train_pairs])["input_ids"]
    targets = tokenizer([de for _, de in train_pairs])["input_ids"]
    collator = Seq2SeqCollator(config.pad_token_id, config.decoder_start_token_id, config.vocab_size)
    batches = seq2seq_batches(sources, targets, collator, batch_size=args.batch_size, seed=args.seed)
    dataset = batches_to_tf_dataset(batches, seed=args.seed)
    print(f"number words: {len(train_pairs)} training pairs, {args.num_test} held out; vocabulary "
          f"{len(tokenizer)}; model {model.num_parameters():,} parameters "
          f"(d_model {config.d_model}, {config.num_encoder_layers}+{config.num_decoder_layers} layers)")
    print(f"example: {train_pairs[0][0]!r} -> {train_pairs[0][1]!r}")
    warmup = max(1, len(batches) * 2)
    model.compile(optimizer=transformer_optimizer(config.d_model, warmup_steps=warmup, scale=args.lr_scale))
    model.fit(dataset, epochs=args.epochs, shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
    return warmup


def train_number_words(args) -> int:
    """Train, evaluate, save, reload and re-check a small Transformer on the number-words task."""
    import keras
    import numpy as np

    from . import TransformerForSeq2SeqLM
    from .number_words import make_splits

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

    model.model_card_info = {
        "description": "A small Transformer trained by `vanilla-transformer train` to translate English number "
                       "words into German number words.",
        "hyperparameters": {"epochs": args.epochs, "batch size": args.batch_size, "label smoothing": 0.1,
                            "optimizer": "Adam(0.9, 0.98, 1e-9)", "warmup steps": warmup, "seed": args.seed},
        "results": {"exact_match": round(accuracy, 4)}, "dataset_name": "number words (generated)",
        "language": ["en", "de"],
    }
    model.save_pretrained(args.output_dir, tokenizer=tokenizer)
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


def translate(args) -> int:
    from .hub import AutoModel, load_tokenizer

    model = AutoModel.from_pretrained(args.model)
    tokenizer = load_tokenizer(args.model)
    if tokenizer is None:
        print(f"error: {args.model} has no tokenizer files", file=sys.stderr)
        return 2
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    limit = model.config.max_position_embeddings - 1  # the decoder start token takes one position
    max_new = args.max_new_tokens or model.generation_config.max_new_tokens or min(128, limit)
    kwargs = {"num_beams": args.num_beams, "max_new_tokens": min(max_new, limit)}
    if args.length_penalty is not None:
        kwargs["length_penalty"] = args.length_penalty
    for line in model.translate(texts, tokenizer, **kwargs):
        print(line)
    return 0


def push(args) -> int:
    """Upload a saved model directory (model, tokenizer, README.md) to the Hub in one commit."""
    from huggingface_hub.errors import HfHubHTTPError

    from .hub import push_folder_to_hub

    try:
        info = push_folder_to_hub(args.directory, args.repo_id, private=args.private, revision=args.revision,
                                  commit_message=args.commit_message, create_pr=args.create_pr)
    except HfHubHTTPError as err:  # no token, no write access, ...: one line, no traceback
        status = getattr(getattr(err, "response", None), "status_code", "?")
        print(f"error: the Hub refused the push to {args.repo_id} (HTTP {status}): "
              f"{str(err).strip().splitlines()[0]}. Is HF_TOKEN set to a token with write access?",
              file=sys.stderr)
        return 2
    url = info.pr_url or info.commit_url
    print(f"pushed {args.directory} to {args.repo_id} (commit {info.oid}): {url}")
    return 0


def convert(args) -> int:
    from .hub import AutoModel, load_tokenizer

    model = AutoModel.from_pretrained(args.source)
    tokenizer = load_tokenizer(args.source)
    fmt = "transformers" if args.to == "transformers" else "vanilla_transformer"
    model.save_pretrained(args.destination, tokenizer=tokenizer, format=fmt)
    print(f"wrote {args.destination} ({fmt} format)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vanilla-transformer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train the embedded number-words translation model (no download)")
    p.add_argument("--output-dir", default="outputs/number-words")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--num-train", type=int, default=12000)
    p.add_argument("--num-test", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--vocab-size", type=int, default=400)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=train_number_words)

    p = commands.add_parser("translate", help="translate text with a saved model")
    p.add_argument("--model", required=True, help="a saved model directory or Hub repo id")
    p.add_argument("--num-beams", type=int, default=4)
    p.add_argument("--length-penalty", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: the model's generation config, else 128 (capped by its positions)")
    p.add_argument("texts", nargs="*", help="sentences (read from stdin when none)")
    p.set_defaults(func=translate)

    p = commands.add_parser("push", help="upload a saved model directory to the Hub (one commit)",
                            description="Upload a directory written by save_pretrained to the Hub in one commit, "
                                        "creating the repo if needed. The token is HF_TOKEN (or the saved "
                                        "login), the Hub HF_ENDPOINT.")
    p.add_argument("directory", help="a directory written by save_pretrained")
    p.add_argument("repo_id", help="the Hub repo, e.g. user/my-model")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its "
                                                          "visibility)")
    p.add_argument("--revision", default=None, help="branch to commit to (created from main when missing)")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.set_defaults(func=push)

    p = commands.add_parser("convert", help="convert between our format and transformers checkpoints")
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("--to", choices=["transformers", "keras"], required=True)
    p.set_defaults(func=convert)
    return parser


def main(argv=None) -> int:
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    from .checkpoint_io import CheckpointError

    try:
        return args.func(args)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
