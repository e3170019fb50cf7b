#!/usr/bin/env python
"""Causal-language-model (GPT-style) pretraining or further training of a TransformerForCausalLM.

Pretrain a small GPT from scratch on a local text file (one sentence per line, optionally gzipped)::

    python examples/run_clm.py --model_name_or_path gpt --d_model 128 --num_layers 2 \\
        --train_file ../shared/data/multi30k/train.en.gz --validation_file ../shared/data/multi30k/val.en.gz \\
        --vocab_size 8000 --max_seq_length 64 --num_train_epochs 2 --output_dir /tmp/gpt-multi30k

Lines are examples, each ``<s> tokens </s>``; labels are the inputs and the loss compares the logits at t with
the token at t + 1. The validation perplexity is exp(mean next-token cross-entropy) over all predicted tokens.
"""

from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
from _common import logger  # noqa: E402


def main(argv=None) -> dict:
    parser = _common.build_parser(__doc__.splitlines()[0], default_model="gpt")
    parser.add_argument("--prompts", nargs="*", default=[],
                        help="texts to continue with greedy decoding after training (logged and saved)")
    parser.add_argument("--max_new_tokens", type=int, default=20)
    args = _common.parse_args(parser, argv)
    _common.setup(args)

    from vanilla_transformer import TransformerForCausalLM
    from vanilla_transformer.batching import make_tf_dataset
    from vanilla_transformer.data_collators import DataCollatorForCausalLM

    raw = _common.load_raw_datasets(args)
    column = _common.text_column(next(iter(raw.values())), args.text_column_name)
    texts = {split: _common.nonempty_texts(raw[split], column) for split in raw}
    tokenizer = _common.load_or_train_tokenizer(args, texts.get("train") or texts["validation"])
    model = _common.load_model(TransformerForCausalLM, args, tokenizer)
    max_length = min(args.max_seq_length, model.config.max_position_embeddings)
    ids = {split: _common.tokenize(tokenizer, rows, max_length) for split, rows in texts.items()}
    collator = DataCollatorForCausalLM(tokenizer.pad_token_id, max_length=max_length,
                                       pad_to_multiple_of=_common.pad_multiple(args, max_length))

    def eval_dataset():
        if "validation" not in ids:
            return None
        return make_tf_dataset(ids["validation"], collator, args.per_device_eval_batch_size, shuffle=False)

    results = {}
    if args.do_train:
        warmup, total = _common.schedule_steps(args, len(ids["train"]))
        model.compile(learning_rate=args.learning_rate, warmup_steps=warmup, decay_steps=total,
                      jit_compile=args.jit_compile)
        logger.info("%d training sequences, %d steps (%d warmup)", len(ids["train"]), total, warmup)
        train = make_tf_dataset(ids["train"], collator, args.per_device_train_batch_size, seed=args.seed)
        history = _common.fit(model, args, train, eval_dataset())
        results["train_loss"] = float(history.history["loss"][-1])
    if args.do_eval and "validation" in ids:
        loss, accuracy, count = _common.evaluate_tokens(model, eval_dataset(), shift=True)
        results.update(eval_loss=loss, eval_accuracy=accuracy, perplexity=math.exp(loss),
                       eval_samples=len(ids["validation"]), eval_tokens=count)
        logger.info("next-token loss %.4f, accuracy %.4f, perplexity %.2f (%d predicted tokens in %d validation "
                    "sentences)", loss, accuracy, math.exp(loss), count, len(ids["validation"]))
    model.generation_config.max_new_tokens = args.max_new_tokens
    if args.prompts:
        samples = {}
        for prompt in args.prompts:
            prompt_ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
            output = model.generate([prompt_ids], max_new_tokens=args.max_new_tokens)
            samples[prompt] = tokenizer.decode(output[0], skip_special_tokens=True)
            logger.info("greedy: %r -> %r", prompt, samples[prompt])
        results["samples"] = samples
    _common.save(model, tokenizer, args, {k: v for k, v in results.items() if k != "samples"},
                 "A GPT-style decoder trained with the causal-language-model objective by examples/run_clm.py.",
                 _common.dataset_label(args))
    return results


if __name__ == "__main__":
    print(main())
