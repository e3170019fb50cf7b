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

    texts = _common.text_splits(args)
    tokenizer = _common.load_or_train_tokenizer(args, texts.get("train") or texts["validation"])
    model = _common.load_model(TransformerForMaskedLM, args, tokenizer)
    lora = _common.apply_lora(model, args)
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

    results = dict(lora)
    if args.do_train:
        train = make_tf_dataset(ids["train"], collator(args.seed), args.per_device_train_batch_size,
                                seed=args.seed)
        results.update(_common.compile_and_fit(model, args, len(ids["train"]), train, eval_dataset()))
    if args.do_eval and "validation" in ids:
        results.update(_common.evaluate_language_model(model, eval_dataset(), False, len(ids["validation"]),
                                                       "masked tokens"))
    _common.save(model, tokenizer, args, results,
                 "A BERT-style encoder trained with the masked-language-model objective by examples/run_mlm.py.",
                 _common.dataset_label(args))
    return results


if __name__ == "__main__":
    print(main())
