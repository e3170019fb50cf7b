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

    texts = _common.text_splits(args)
    tokenizer = _common.load_or_train_tokenizer(args, texts.get("train") or texts["validation"])
    model = _common.load_model(TransformerForCausalLM, args, tokenizer)
    lora = _common.apply_lora(model, args)
    max_length = min(args.max_seq_length, model.config.max_position_embeddings)
    ids = {split: _common.tokenize(tokenizer, rows, max_length) for split, rows in texts.items()}
    collator = DataCollatorForCausalLM(tokenizer.pad_token_id, max_length=max_length,
                                       pad_to_multiple_of=_common.pad_multiple(args, max_length))

    def eval_dataset():
        if "validation" not in ids:
            return None
        return make_tf_dataset(ids["validation"], collator, args.per_device_eval_batch_size, shuffle=False)

    results = dict(lora)
    if args.do_train:
        train = make_tf_dataset(ids["train"], collator, args.per_device_train_batch_size, seed=args.seed)
        results.update(_common.compile_and_fit(model, args, len(ids["train"]), train, eval_dataset()))
    if args.do_eval and "validation" in ids:
        results.update(_common.evaluate_language_model(model, eval_dataset(), True, len(ids["validation"]),
                                                       "next tokens"))
    model.generation_config.max_new_tokens = args.max_new_tokens
    _common.save(model, tokenizer, args, results,
                 "A GPT-style decoder trained with the causal-language-model objective by examples/run_clm.py.",
                 _common.dataset_label(args))
    if args.prompts:
        results["samples"] = continue_prompts(model, tokenizer, args.prompts, args.max_new_tokens)
    return results


def continue_prompts(model, tokenizer, prompts: list[str], max_new_tokens: int) -> dict[str, str]:
    """Greedy continuations of the prompts (each after the bos token), logged."""
    samples = {}
    for prompt in prompts:
        prompt_ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        output = model.generate([prompt_ids], max_new_tokens=max_new_tokens)
        samples[prompt] = tokenizer.decode(output[0], skip_special_tokens=True)
        logger.info("greedy: %r -> %r", prompt, samples[prompt])
    return samples


if __name__ == "__main__":
    print(main())
