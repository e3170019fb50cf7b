#!/usr/bin/env python
"""Sentence classification with a TransformerForSequenceClassification, usually fine-tuned from an MLM checkpoint.

Data are JSON lines or CSV files (optionally gzipped) with a text column and a label column::

    python examples/run_classification.py --model_name_or_path /tmp/mlm-multi30k \\
        --train_file /tmp/langid/train.jsonl.gz --validation_file /tmp/langid/validation.jsonl.gz \\
        --label_names en de --num_train_epochs 1 --output_dir /tmp/langid-classifier

Loading an MLM checkpoint keeps the encoder (and pooler) and initialises the classifier; the missing and
unused weights are logged. Integer labels index ``--label_names``; string labels are sorted.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
from _common import logger  # noqa: E402


def main(argv=None) -> dict:
    parser = _common.build_parser(__doc__.splitlines()[0], default_model="bert-base")
    parser.add_argument("--label_column_name", default="label")
    parser.add_argument("--label_names", nargs="+", default=None,
                        help="names of the integer labels 0, 1, ... (id2label); default: LABEL_i or the strings")
    parser.set_defaults(learning_rate=1e-4)
    args = _common.parse_args(parser, argv)
    _common.setup(args)

    from vanilla_transformer import TransformerForSequenceClassification
    from vanilla_transformer.batching import make_tf_dataset
    from vanilla_transformer.data_collators import DataCollatorForSequenceClassification

    data, names = labelled_splits(parser, args)
    id2label = dict(enumerate(names))
    tokenizer = _common.load_or_train_tokenizer(args, (data.get("train") or data["validation"])[0])
    model = _common.load_model(TransformerForSequenceClassification, args, tokenizer, id2label=id2label,
                               label2id={name: i for i, name in id2label.items()})
    results = _common.apply_lora(model, args)
    max_length = min(args.max_seq_length, model.config.max_position_embeddings)
    ids = {split: (_common.tokenize(tokenizer, texts, max_length), labels) for split, (texts, labels) in data.items()}
    collator = DataCollatorForSequenceClassification(tokenizer.pad_token_id, max_length=max_length,
                                                     pad_to_multiple_of=_common.pad_multiple(args, max_length))

    def dataset(split, **kwargs):
        if split not in ids:
            return None
        rows, labels = ids[split]
        return make_tf_dataset(rows, collator, **kwargs, labels=labels)

    if args.do_train:
        logger.info("%d labels: %s", len(id2label), names)
        train = dataset("train", batch_size=args.per_device_train_batch_size, seed=args.seed)
        eval_data = dataset("validation", batch_size=args.per_device_eval_batch_size, shuffle=False)
        results.update(_common.compile_and_fit(model, args, len(ids["train"][0]), train, eval_data,
                                                monitor="val_accuracy", mode="max"))
    else:
        model.compile(jit_compile=args.jit_compile)
    if args.do_eval and "validation" in ids:
        loss, accuracy = model.evaluate(dataset("validation", batch_size=args.per_device_eval_batch_size,
                                                shuffle=False), verbose=0)
        results.update(eval_loss=float(loss), eval_accuracy=float(accuracy), eval_samples=len(ids["validation"][0]))
        logger.info("validation loss %.4f, accuracy %.4f on %d sentences", loss, accuracy, len(ids["validation"][0]))
    _common.save(model, tokenizer, args, results,
                 f"A sentence classifier ({', '.join(names)}) trained by examples/run_classification.py.",
                 _common.dataset_label(args))
    results["loading_info"] = model.loading_info
    return results


def labelled_splits(parser, args) -> tuple[dict[str, tuple[list[str], list[int]]], list[str]]:
    """``{split: (texts, label ids)}`` of the non-empty texts, and the label names (``id2label`` order)."""
    import numpy as np

    raw = _common.load_raw_datasets(args)
    first = next(iter(raw.values()))
    column = _common.text_column(first, args.text_column_name)
    if args.label_column_name not in first.column_names:
        parser.error(f"--label_column_name {args.label_column_name!r} is not a column of {first.column_names}")
    values = sorted({value for split in raw.values() for value in split[args.label_column_name]})
    if all(isinstance(v, (int, np.integer)) for v in values):
        num_labels = max(values) + 1
        names = args.label_names or [f"LABEL_{i}" for i in range(num_labels)]
        if len(names) < num_labels:
            parser.error(f"{len(names)} --label_names for labels up to {max(values)}")
        label_of = {value: int(value) for value in values}
    else:
        names = args.label_names or [str(v) for v in values]
        label_of = {value: names.index(str(value)) for value in values}
    data = {}
    for split, dataset in raw.items():
        rows = [(t, label_of[y]) for t, y in zip(dataset[column], dataset[args.label_column_name]) if t and t.strip()]
        data[split] = ([t for t, _ in rows], [y for _, y in rows])
    return data, names


if __name__ == "__main__":
    print(main())
