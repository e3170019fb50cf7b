"""The ``vanilla-transformer`` command line.

- ``vanilla-transformer train``: the embedded main job (number words, English -> German), no download
  (:mod:`vanilla_transformer.number_words_training`).
- ``vanilla-transformer translate --model DIR "text" ...``: translate with a saved model.
- ``vanilla-transformer push DIR REPO_ID``: upload a saved model directory to the Hub.
- ``vanilla-transformer convert SRC DST --to transformers|keras``: convert checkpoints.
- ``vanilla-transformer export MODEL OUT --to saved_model|litert|ctranslate2``: export for deployment (serving
  formats; ``--to transformers`` is deprecated: use ``convert``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings

from .number_words_training import TRAIN_DEFAULTS, train_number_words


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def translate(args) -> int:
    """Translate every text (``args.texts``, else the non-empty lines of ``args.input`` or stdin), one a line,
    in input order, to ``args.output`` or stdout.

    The ``vanilla-transformer translate`` command. Loads the model and its tokenizer from ``args.model`` (a
    directory or Hub repo id) and decodes with ``args.num_beams`` beams (4; 1 with ``--stream``),
    ``args.length_penalty`` and ``args.max_new_tokens`` (default: the model's generation config, capped by its
    positions), in length-sorted batches of ``args.batch_size`` (see
    :func:`~vanilla_transformer.generation.translate_texts`), with a progress bar on stderr for long inputs.
    ``--stream`` prints each translation token by token as it is decoded (greedy, one sentence at a time).

    Args:
        args: the ``argparse.Namespace`` of the ``translate`` command (see :func:`build_parser`).

    Returns:
        The exit status: 0, or 2 when the model has no tokenizer files or ``--stream`` is asked with beams
        (the message goes to stderr).

    Example:
        >>> import tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.cli import build_parser, translate
        >>> folder = TransformerForSeq2SeqLM(example_config).save_pretrained(tempfile.mkdtemp())  # no tokenizer
        >>> args = build_parser().parse_args(["translate", "--model", str(folder), "--num-beams", "1",
        ...                                   "three hundred", "twelve"])
        >>> args.texts, args.num_beams, args.max_new_tokens, args.stream
        (['three hundred', 'twelve'], 1, None, False)
        >>> translate(args)  # "error: ... has no tokenizer files" on stderr
        2
        >>> translate(build_parser().parse_args(["translate", "--model", "outputs/number-words",
        ...                                      "three hundred"]))  # doctest: +SKIP
        dreihundert
        0
    """
    from .hub import AutoModel, load_tokenizer

    if args.stream and (args.num_beams or 1) > 1:
        print("error: --stream decodes greedily, one token at a time: use --num-beams 1", file=sys.stderr)
        return 2
    model = AutoModel.from_pretrained(args.model)
    tokenizer = load_tokenizer(args.model)
    if tokenizer is None:
        print(f"error: {args.model} has no tokenizer files", file=sys.stderr)
        return 2
    texts = args.texts or _input_lines(args.input)
    limit = model.config.max_position_embeddings - 1  # the decoder start token takes one position
    max_new = args.max_new_tokens or model.generation_config.max_new_tokens or min(128, limit)
    kwargs = {"num_beams": args.num_beams or (1 if args.stream else 4), "max_new_tokens": min(max_new, limit)}
    if args.length_penalty is not None:
        kwargs["length_penalty"] = args.length_penalty
    with (open(args.output, "w", encoding="utf-8") if args.output else contextlib.nullcontext(sys.stdout)) as out:
        if args.stream:
            _stream_translations(model, tokenizer, texts, kwargs, out)
        else:
            _translate_in_chunks(model, tokenizer, texts, dict(kwargs, batch_size=args.batch_size), out)
    return 0


def _input_lines(path: str | None) -> list[str]:
    """The non-empty lines of ``path`` (``-`` or None: stdin), without their line ends."""
    if path in (None, "-"):
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    with open(path, encoding="utf-8") as lines:
        return [line.rstrip("\n") for line in lines if line.strip()]


TRANSLATE_CHUNK = 1024  # sentences sorted and batched together; the progress bar moves a chunk at a time


def _translate_in_chunks(model, tokenizer, texts, kwargs, out) -> None:
    """Translate ``texts`` a chunk at a time (each sorted into batches), writing lines in input order."""
    from tqdm.auto import tqdm

    with tqdm(total=len(texts), unit="sentence", disable=len(texts) <= TRANSLATE_CHUNK or None,
              file=sys.stderr) as progress:
        for start in range(0, len(texts), TRANSLATE_CHUNK):
            chunk = texts[start:start + TRANSLATE_CHUNK]
            for line in model.translate(chunk, tokenizer, **kwargs):
                print(line, file=out, flush=False)
            progress.update(len(chunk))


def _stream_translations(model, tokenizer, texts, kwargs, out) -> None:
    """Print each translation token by token as it is decoded (transformers' ``TextStreamer``)."""
    import numpy as np
    from transformers import TextStreamer

    class LineStreamer(TextStreamer):  # TextStreamer prints to stdout; this one to ``out``
        def on_finalized_text(self, text: str, stream_end: bool = False):
            print(text, file=out, flush=True, end="" if not stream_end else "\n")

    for text in texts:
        batch = tokenizer([text], truncation=True, max_length=model.config.max_position_embeddings,
                          return_tensors="np")
        model.generate(np.asarray(batch["input_ids"], "int32"), attention_mask=np.asarray(batch["attention_mask"]),
                       streamer=LineStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True), **kwargs)


def push(args) -> int:
    """Upload a saved model directory (model, tokenizer, README.md) to the Hub in one commit.

    The ``vanilla-transformer push DIR REPO_ID`` command (:func:`~vanilla_transformer.hub_push.push_folder_to_hub`
    with ``--private``, ``--revision``, ``--commit-message`` and ``--create-pr``); prints the commit's URL.

    Args:
        args: the ``argparse.Namespace`` of the ``push`` command (see :func:`build_parser`).

    Returns:
        The exit status: 0, or 2 when the Hub refuses the push (the message goes to stderr). A directory that
        is not a saved model raises :class:`~vanilla_transformer.hub_files.CheckpointError` before any
        upload (:func:`main` turns it into status 2).

    Example:
        >>> import tempfile
        >>> from vanilla_transformer.cli import build_parser, push
        >>> args = build_parser().parse_args(["push", tempfile.mkdtemp(), "user/tiny-model", "--private"])
        >>> args.repo_id, args.private, args.create_pr, args.revision
        ('user/tiny-model', True, False, None)
        >>> push(args)  # an empty directory: refused locally
        Traceback (most recent call last):
        ...
        vanilla_transformer.hub_files.CheckpointError: /... is not a saved model directory (no config.json)
        >>> push(build_parser().parse_args(["push", "outputs/number-words", "user/number-words"]))  # doctest: +SKIP
        pushed outputs/number-words to user/number-words (commit ...): https://huggingface.co/...
        0
    """
    from huggingface_hub.errors import HfHubHTTPError

    from .hub_files import describe_http_error
    from .hub_push import push_folder_to_hub

    try:
        info = push_folder_to_hub(args.directory, args.repo_id, private=args.private, revision=args.revision,
                                  commit_message=args.commit_message, create_pr=args.create_pr)
    except HfHubHTTPError as err:  # no token, no write access, ...: one line, no traceback
        print(f"error: the Hub refused the push to {args.repo_id} {describe_http_error(err)}. Is HF_TOKEN set to "
              "a token with write access?", file=sys.stderr)
        return 2
    url = info.pr_url or info.commit_url
    print(f"pushed {args.directory} to {args.repo_id} (commit {info.oid}): {url}")
    return 0


def convert(args) -> int:
    """Convert a checkpoint (and its tokenizer) between this package's format and transformers'.

    The ``vanilla-transformer convert SRC DST --to transformers|keras`` command: loads ``args.source`` (a
    directory or Hub repo id, of either format) with :class:`~vanilla_transformer.hub.AutoModel` and saves
    it to ``args.destination`` as a transformers checkpoint (``--to transformers``) or in this package's
    format (``--to keras``).

    Args:
        args: the ``argparse.Namespace`` of the ``convert`` command (see :func:`build_parser`).

    Returns:
        The exit status, 0.

    Example:
        >>> import json, os, tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.cli import build_parser, convert
        >>> source = TransformerForSeq2SeqLM(example_config).save_pretrained(tempfile.mkdtemp())
        >>> destination = os.path.join(tempfile.mkdtemp(), "marian")
        >>> convert(build_parser().parse_args(["convert", str(source), destination, "--to", "transformers"]))
        wrote /... (transformers format)
        0
        >>> sorted(os.listdir(destination))
        ['config.json', 'generation_config.json', 'model.safetensors']
        >>> with open(os.path.join(destination, "config.json")) as f:
        ...     json.load(f)["architectures"]
        ['MarianMTModel']
    """
    from .hub import AutoModel, load_tokenizer

    model = AutoModel.from_pretrained(args.source)
    tokenizer = load_tokenizer(args.source)
    fmt = "transformers" if args.to == "transformers" else "vanilla_transformer"
    model.save_pretrained(args.destination, tokenizer=tokenizer, format=fmt)
    print(f"wrote {args.destination} ({fmt} format)")
    return 0


def export(args) -> int:
    """Export a saved translator for deployment: the ``vanilla-transformer export MODEL OUT --to
    saved_model|litert|ctranslate2`` command (see :func:`vanilla_transformer.serving.export`).

    Loads ``args.model`` (a directory or Hub repo id) and its tokenizer, then writes a TensorFlow Serving
    SavedModel with the decoding loop inside, a LiteRT greedy translator or a CTranslate2 model
    (``--quantization int8`` etc.) to ``args.output``. ``--num-beams`` and ``--max-new-tokens`` (default: the
    model's generation config) are fixed in the SavedModel and LiteRT graphs; CTranslate2 takes them at
    translate time. ``--to transformers`` still writes a transformers checkpoint, with a ``FutureWarning``: that
    is a checkpoint conversion, ``vanilla-transformer convert MODEL OUT --to transformers`` (:func:`convert`).

    Args:
        args: the ``argparse.Namespace`` of the ``export`` command (see :func:`build_parser`).

    Returns:
        The exit status: 0, or 2 for decoding settings given with ``--to transformers|ctranslate2`` or
        ``--quantization`` with another format.

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.cli import build_parser, export
        >>> source = TransformerForSeq2SeqLM(example_config).save_pretrained(tempfile.mkdtemp())
        >>> out = os.path.join(tempfile.mkdtemp(), "translator")
        >>> export(build_parser().parse_args(["export", str(source), out, "--to", "saved_model",
        ...                                   "--num-beams", "2", "--max-new-tokens", "6", "--max-batch-size", "2"]))
        wrote /... (saved_model: num_beams=2, max_new_tokens=6)
        0
        >>> sorted(os.listdir(out))
        ['assets', 'fingerprint.pb', 'saved_model.pb', 'variables']
    """
    from .hub import AutoModel, load_tokenizer

    if args.to == "transformers":
        warnings.warn("vanilla-transformer export --to transformers is deprecated: use vanilla-transformer "
                      "convert MODEL OUT --to transformers", FutureWarning, stacklevel=2)
    model = AutoModel.from_pretrained(args.model)
    settings = {name: value for name, value in (("num_beams", args.num_beams),
                                                ("max_new_tokens", args.max_new_tokens)) if value is not None}
    if args.to == "saved_model":
        settings["max_batch_size"] = args.max_batch_size
    elif args.to == "litert":
        settings["source_length"] = args.source_length
    elif settings:
        why = ("the checkpoint carries the model's generation config" if args.to == "transformers"
               else "CTranslate2 takes decoding settings at translate time")
        print(f"error: --num-beams/--max-new-tokens do not apply to --to {args.to} ({why})", file=sys.stderr)
        return 2
    if args.quantization is not None:
        if args.to != "ctranslate2":
            print(f"error: --quantization applies to --to ctranslate2 only, not {args.to}", file=sys.stderr)
            return 2
        settings["quantization"] = args.quantization
    if args.to == "transformers":  # deprecated (warned above): what `convert --to transformers` writes
        from .convert import export_to_transformers

        path = export_to_transformers(model, args.output, load_tokenizer(args.model))
    else:
        path = model.export_for_serving(args.output, to=args.to, tokenizer=load_tokenizer(args.model), **settings)
    shown = ", ".join(f"{k}={v}" for k, v in settings.items() if k in ("num_beams", "max_new_tokens", "quantization"))
    print(f"wrote {path} ({args.to}{': ' + shown if shown else ''})")
    return 0


def _add_export_command(commands) -> None:
    """The ``export`` sub-command's arguments."""
    p = commands.add_parser("export", help="export a translator: TF Serving SavedModel, LiteRT or CTranslate2",
                            description="Write a saved translator as a TensorFlow SavedModel whose signature runs "
                                        "the whole decoding loop (TensorFlow Serving), a LiteRT greedy translator "
                                        "(.tflite) or a CTranslate2 model. (A transformers checkpoint is a "
                                        "conversion: `vanilla-transformer convert MODEL OUT --to transformers`; "
                                        "--to transformers here is deprecated.)")
    p.add_argument("model", help="a saved model directory or Hub repo id")
    p.add_argument("output", help="the SavedModel directory, .tflite file or model directory to write")
    p.add_argument("--to", choices=["saved_model", "litert", "transformers", "ctranslate2"], required=True,
                   help="transformers: deprecated, use the convert command")
    p.add_argument("--num-beams", type=int, default=None, help="default: the model's generation config")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the model's generation config")
    p.add_argument("--max-batch-size", type=int, default=32, help="saved_model: the largest batch of a request")
    p.add_argument("--source-length", type=int, default=64, help="litert: the fixed (padded) source length")
    p.add_argument("--quantization", default=None,
                   help="ctranslate2: CTranslate2's weight type (int8, int8_float32, int16, float16, bfloat16, "
                        "float32); default float32")
    p.set_defaults(func=export)


def _add_translate_parser(commands) -> None:
    """The ``translate`` sub-command's arguments."""
    p = commands.add_parser("translate", help="translate text with a saved model")
    p.add_argument("--model", required=True, help="a saved model directory or Hub repo id")
    p.add_argument("--num-beams", type=int, default=None, help="default 4 (1 with --stream)")
    p.add_argument("--input", default=None, help="a file of sentences, one a line (default: stdin)")
    p.add_argument("--output", default=None, help="where the translations go, one a line (default: stdout)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per length-sorted batch")
    p.add_argument("--stream", action="store_true", help="print each translation token by token as it decodes")
    p.add_argument("--length-penalty", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: the model's generation config, else 128 (capped by its positions)")
    p.add_argument("texts", nargs="*", help="sentences (read from stdin when none)")
    p.set_defaults(func=translate)


def _add_finetuning_arguments(p) -> None:
    """The ``train`` command's fine-tuning flags (those of the example scripts)."""
    p.add_argument("--base-model", default=None, help="fine-tune this saved translator (and its tokenizer)")
    p.add_argument("--lora-rank", type=int, default=None, help="train LoRA adapters of this rank (needs --base-model)")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale numerator (default: the rank)")
    p.add_argument("--lora-dropout", type=float, default=None, help="dropout on the adapters' inputs (0)")
    p.add_argument("--lora-target-modules", default=None, help="q,k,v,o,ffn,embeddings (default q,v)")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1, help="micro-batches per update")
    p.add_argument("--early-stopping-patience", type=int, default=None,
                   help="hold out a tenth of the pairs; stop after this many epochs without a lower loss there")


def build_parser() -> argparse.ArgumentParser:
    """The ``argparse`` parser of the command line: sub-commands ``train``, ``translate``, ``push``, ``convert``,
    ``export``.

    Each sub-command sets ``func`` (the function that runs it, taking the parsed namespace and returning an
    exit status) and ``command`` (its name).

    Returns:
        An ``argparse.ArgumentParser`` with ``prog="vanilla-transformer"``.

    Example:
        >>> from vanilla_transformer.cli import build_parser
        >>> parser = build_parser()
        >>> args = parser.parse_args(["translate", "--model", "user/model", "Hello.", "Good morning."])
        >>> args.command, args.func.__name__, args.model, args.texts, args.num_beams
        ('translate', 'translate', 'user/model', ['Hello.', 'Good morning.'], None)
        >>> args = parser.parse_args(["convert", "src", "dst", "--to", "keras"])
        >>> args.source, args.destination, args.to
        ('src', 'dst', 'keras')
        >>> parser.parse_args(["convert", "src", "dst"])  # --to is required: usage on stderr, exit status 2
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    parser = argparse.ArgumentParser(prog="vanilla-transformer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train the embedded number-words translation model (no download)")
    p.add_argument("--output-dir", default="outputs/number-words")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--num-train", type=int, default=12000)
    p.add_argument("--num-test", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--vocab-size", type=int, default=TRAIN_DEFAULTS["vocab_size"])
    p.add_argument("--d-model", type=int, default=TRAIN_DEFAULTS["d_model"])
    p.add_argument("--layers", type=int, default=TRAIN_DEFAULTS["layers"])
    p.add_argument("--lr-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    _add_finetuning_arguments(p)
    p.set_defaults(func=train_number_words)

    _add_translate_parser(commands)

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

    _add_export_command(commands)
    return parser


def main(argv=None) -> int:
    """Run the command line: parse ``argv`` (default ``sys.argv[1:]``) and run the chosen sub-command.

    A :class:`~vanilla_transformer.hub_files.CheckpointError` (missing, unsafe or mismatched files) is
    printed as one ``error:`` line on stderr instead of a traceback.

    Args:
        argv: the arguments, e.g. ``["convert", "src", "dst", "--to", "keras"]``.

    Returns:
        The sub-command's exit status: 0 on success, 2 on a checkpoint error (argparse exits with status 2 on
        invalid arguments).

    Example:
        >>> import os, tempfile
        >>> from vanilla_transformer import AutoModel, TransformerForSeq2SeqLM
        >>> from vanilla_transformer.cli import main
        >>> source = TransformerForSeq2SeqLM(example_config).save_pretrained(tempfile.mkdtemp())
        >>> destination = os.path.join(tempfile.mkdtemp(), "copy")
        >>> main(["convert", str(source), destination, "--to", "keras"])
        wrote /... (vanilla_transformer format)
        0
        >>> type(AutoModel.from_pretrained(destination)).__name__
        'TransformerForSeq2SeqLM'
        >>> main(["convert", tempfile.mkdtemp(), destination, "--to", "keras"])  # no config.json: error on stderr
        2
    """
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    from .hub_files import CheckpointError

    try:
        return args.func(args)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
