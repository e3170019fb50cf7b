#!/usr/bin/env python
"""Masked-language-model (BERT-style) pretraining or further training of a TransformerForMaskedLM.

Pretrain a small model from scratch on a local text file (one sentence per line, optionally gzipped)::

    python examples/run_mlm.py --model_name_or_path bert-base --d_model 128 --num_layers 2 \\
        --train_file ../shared/data/multi30k/train.en.gz --validation_file ../shared/data/multi30k/val.en.gz \\
        --vocab_size 8000 --max_seq_length 64 --num_train_epochs 2 --output_dir /tmp/mlm-multi30k

Lines are examples (transformers' ``--line_by_line``); each is ``<s> tokens </s>``. 15% of the tokens are
chosen per epoch (dynamic masking): 80% ``<mask>``, 10% random, 10% unchanged.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
from _common import logger  # noqa: E402


def main(argv=None) -> dict:
    parser = _common.build_parser(__doc__.splitlines()[0], default_model="bert-base")
    parser.add_argument("--mlm_probability", type=float, default=0.15)
    args = _common.parse_args(parser, argv)
    _common.setup(args)
    # BERT's pooler belongs to the encoder body (for sequence classification); the MLM loss does not reach it.
    warnings.filterwarnings("ignore", message=r"Gradients do not exist for variables \[.*pooler")

    from vanilla_transformer import TransformerForMaskedLM
    from vanilla_transformer.batching import make_tf_dataset
    from vanilla_transformer.data_collators import DataCollatorForMaskedLM

    raw = _common.load_raw_datasets(args)
    column = _common.text_column(next(iter(raw.values())), args.text_column_name)
    texts = {split: _common.nonempty_texts(raw[split], column) for split in raw}
    tokenizer = _common.load_or_train_tokenizer(args, texts.get("train") or texts["validation"])
    model = _common.load_model(TransformerForMaskedLM, args, tokenizer)
    max_length = min(args.max_seq_length, model.config.max_position_embeddings)
    ids = {split: _common.tokenize(tokenizer, rows, max_length) for split, rows in texts.items()}

    def collator(seed):
        return DataCollatorForMaskedLM.from_tokenizer(tokenizer, vocab_size=model.config.vocab_size,
                                                      mlm_probability=args.mlm_probability, max_length=max_length,
                                                      pad_to_multiple_of=_common.pad_multiple(args, max_length),
                                                      seed=seed)

    def eval_dataset():  # the same masks at every evaluation
        if "validation" not in ids:
            return None
        return make_tf_dataset(ids["validation"], collator(args.seed + 1), args.per_device_eval_batch_size,
                               shuffle=False)

    results = {}
    if args.do_train:
        warmup, total = _common.schedule_steps(args, len(ids["train"]))
        model.compile(learning_rate=args.learning_rate, warmup_steps=warmup, decay_steps=total,
                      jit_compile=args.jit_compile)
        logger.info("%d training sequences, %d steps (%d warmup)", len(ids["train"]), total, warmup)
        train = make_tf_dataset(ids["train"], collator(args.seed), args.per_device_train_batch_size,
                                seed=args.seed)
        history = _common.fit(model, args, train, eval_dataset())
        results["train_loss"] = float(history.history["loss"][-1])
    else:
        model.compile(jit_compile=args.jit_compile)
    if args.do_eval and "validation" in ids:
        loss, accuracy, count = _common.evaluate_tokens(model, eval_dataset(), shift=False)
        results.update(eval_loss=loss, eval_accuracy=accuracy, perplexity=math.exp(loss),
                       eval_samples=len(ids["validation"]), eval_masked_tokens=count)
        logger.info("masked tokens: loss %.4f, accuracy %.4f, perplexity %.2f (%d masked tokens in %d validation "
                    "sentences)", loss, accuracy, math.exp(loss), count, len(ids["validation"]))
    _common.save(model, tokenizer, args, results,
                 "A BERT-style encoder trained with the masked-language-model objective by examples/run_mlm.py.",
                 _common.dataset_label(args))
    return results


if __name__ == "__main__":
    print(main())
