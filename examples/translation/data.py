"""Reading, tokenizing and batching the parallel text of ``run_translation.py``.

Local data is a pair of aligned files given by their common prefix (``data/train`` reads ``data/train.en[.gz]``
and ``data/train.de[.gz]``), a jsonl (``{"en": ..., "de": ...}`` or ``{"translation": {...}}``) or a tsv
(source<TAB>target) file; ``--dataset_name`` loads a ``datasets`` dataset. Every split becomes a
``datasets.Dataset`` with ``source`` and ``target`` columns.

Training batches are length buckets under a token budget (``--max_tokens_per_batch``), a sentence count
(``--per_device_train_batch_size``) or packed rows (``--pack_length``), shuffled each epoch; with
``--bpe_dropout`` the epochs cycle through several segmentations of the pairs. Every batch is placed for the
devices that split it (:func:`place_batch`).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import _common


# ------------------------------------------------------------------------------------------ reading
def read_lines(path: Path) -> list[str]:
    """The lines of a text file (gzip-compressed when it ends in ``.gz``), without their newlines."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def side_path(prefix: str, lang: str) -> Path:
    """The file of one language of a file pair: ``{prefix}.{lang}.gz``, else ``{prefix}.{lang}``."""
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
        lines = read_lines(Path(spec))
        pairs = [line.split("\t") for line in lines if line.strip()]
        return datasets.Dataset.from_dict({"source": [p[0] for p in pairs], "target": [p[1] for p in pairs]})
    sources, targets = read_lines(side_path(spec, source_lang)), read_lines(side_path(spec, target_lang))
    if len(sources) != len(targets):
        raise ValueError(f"{spec}: {len(sources)} {source_lang} lines but {len(targets)} {target_lang} lines")
    return datasets.Dataset.from_dict({"source": sources, "target": targets})


def load_data(args) -> dict:
    """The run's splits by name (``train``, ``validation``, ``test``, and those of ``--dataset_name``), each a
    ``datasets.Dataset`` with ``source`` and ``target`` columns; a local file replaces the dataset's split."""
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


def tokenize(dataset, tokenizer, args):
    """``dataset`` with ``input_ids`` (sources) and ``labels`` (targets), truncated to ``--max_source_length``
    and ``--max_target_length`` tokens."""
    def encode(batch):
        return {"input_ids": tokenizer(batch["source"], truncation=True, max_length=args.max_source_length)["input_ids"],
                "labels": tokenizer(batch["target"], truncation=True, max_length=args.max_target_length)["input_ids"]}

    return dataset.map(encode, batched=True, desc="tokenizing")


# ------------------------------------------------------------------------------------------ batching
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


def validation_batches(splits, tokenizer, collator, args, distribution=None):
    """The validation split as the validation loss's batches (unshuffled, placed for ``distribution``, in the
    training batches' shape: packed rows or length buckets by token budget); None without a validation split."""
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
