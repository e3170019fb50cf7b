"""What ``run_translation.py`` measures and writes: BLEU and chrF with sacreBLEU, the learning curves, the model
card, ``results.json`` and the saved model.

Scores are sacreBLEU's case-sensitive corpus BLEU and chrF of detokenized translations against the references
(its signature is reported beside them). ``learning_curves.png`` plots the losses and validation BLEU by epoch,
with a top axis in training minutes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


# ------------------------------------------------------------------------------------------ scores
def evaluate_bleu(model, tokenizer, dataset, args, limit=None, length_penalty=None, mbr=False):
    """Translations of ``dataset`` scored with sacreBLEU (case-sensitive BLEU and chrF): beam search, or with
    ``mbr`` minimum Bayes risk decoding over the beam's ``args.mbr_candidates``-best.

    ``length_penalty`` overrides ``args.length_penalty``."""
    import sacrebleu

    sources, references = list(dataset["source"]), list(dataset["target"])
    if limit:
        sources, references = sources[:limit], references[:limit]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))  # similar lengths together
    hypotheses = [None] * len(sources)
    decoding = dict(length_penalty=args.length_penalty if length_penalty is None else length_penalty,
                    max_new_tokens=args.max_target_length)
    ordered = [sources[i] for i in order]
    if mbr:
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

        from vanilla_transformer.generation.mbr import mbr_translate

        split_13a = Tokenizer13a()  # the utility counts the words the reported BLEU counts
        translations = mbr_translate(model, ordered, tokenizer, num_candidates=args.mbr_candidates,
                                     num_samples=args.mbr_samples, batch_size=128, seed=args.seed,
                                     tokenize=lambda text: split_13a(text).split(), **decoding)
    else:
        translations = model.translate(ordered, tokenizer, batch_size=128, num_beams=args.num_beams, **decoding)
    for i, text in zip(order, translations):
        hypotheses[i] = text
    bleu = sacrebleu.corpus_bleu(hypotheses, [references])
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "signature": str(bleu.format(signature=True)),
            "samples": [{"source": s, "reference": r, "hypothesis": h}
                        for s, r, h in list(zip(sources, references, hypotheses))[:3]]}


# ------------------------------------------------------------------------------------------ learning curves
def epoch_minute_functions(history):
    """``(to_minutes, to_epochs)``: training wall-clock minutes at a (fractional) epoch and back, piecewise
    linear through ``time_s`` at the end of each epoch and, past the last one, at the run's mean pace (so a
    chart's margin does not pile later minute ticks onto the last epoch). None with fewer than two epochs.

    Example:
        >>> history = [{"epoch": 1, "time_s": 90.0}, {"epoch": 2, "time_s": 150.0}]
        >>> to_minutes, to_epochs = epoch_minute_functions(history)
        >>> float(to_minutes(1.5)), float(to_minutes(3.0)), float(to_epochs(1.0))
        (2.0, 3.75, 0.6666666666666666)
    """
    import numpy as np

    timed = [h for h in history if "time_s" in h]
    if len(timed) < 2:
        return None
    epochs = [0.0] + [float(h["epoch"]) for h in timed]
    minutes = [0.0] + [h["time_s"] / 60 for h in timed]
    far = epochs[-1] * 100  # a knot well past any chart margin, reached at the run's mean pace
    minutes.append(minutes[-1] + (far - epochs[-1]) * minutes[-1] / epochs[-1])
    epochs, minutes = np.array(epochs + [far]), np.array(minutes)
    return (lambda e: np.interp(e, epochs, minutes)), (lambda m: np.interp(m, minutes, epochs))


def add_minutes_axis(axes, history):
    """A top x-axis in wall-clock minutes of training (``time_s`` at the end of each epoch), beside the epochs."""
    functions = epoch_minute_functions(history)
    if functions is not None:
        axes.secondary_xaxis("top", functions=functions).set_xlabel("training minutes")


def plot_history(history, path):
    """``learning_curves.png`` at ``path``: training (and validation) loss, and validation BLEU, by epoch (with
    training minutes on top); nothing but a note when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no learning-curve plot")
        return
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["loss"] for h in history], label="train loss")
    if any("val_loss" in h for h in history):
        left.plot([h["epoch"] for h in history if "val_loss" in h], [h["val_loss"] for h in history if "val_loss" in h],
                  label="validation loss")
    left.set_xlabel("epoch"), left.set_ylabel("label-smoothed cross-entropy"), left.legend()
    scored = [h for h in history if "val_bleu" in h]
    right.plot([h["epoch"] for h in scored], [h["val_bleu"] for h in scored], marker="o", label="validation BLEU")
    right.set_xlabel("epoch"), right.set_ylabel("BLEU"), right.legend()
    for axes in (left, right):
        add_minutes_axis(axes, history)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ the run's record
def print_run_summary(train_pairs: int, batches, tokenizer, model, scale_out: str) -> None:
    """One line before training: data, vocabulary, model size and shape, and ``scale_out`` (how the run spreads
    over devices)."""
    config = model.config
    print(f"{train_pairs} training pairs in {len(batches)} batches; vocabulary {len(tokenizer)}; model "
          f"{model.num_parameters():,} parameters (d_model {config.d_model}, {config.num_encoder_layers}+"
          f"{config.num_decoder_layers} layers, {config.num_heads} heads, d_ff {config.d_ff})"
          + scale_out, flush=True)


def training_results(model, state: dict, nan_stop, args) -> dict:
    """``results.json``'s record of training: time (resumed runs included), size, epochs, the best epoch and its
    validation BLEU, where a NaN stopped the run, LoRA, gradient accumulation and early stopping."""
    results = {"train_time_s": round(time.time() - state["started"] + state.get("time_before", 0.0), 1),
               "parameters": model.num_parameters(), "epochs_completed": len(state["history"]),
               "best_epoch": state.get("best_epoch"), "best_validation_bleu": state.get("best_bleu")}
    if nan_stop.stopped_at:
        results["stopped_on_nan"] = nan_stop.stopped_at
    results.update(args.lora_results, gradient_accumulation_steps=args.gradient_accumulation_steps,
                   **({"early_stopping": state["early_stopping"]} if "early_stopping" in state else {}))
    return results


def card_info(args, state):
    """The model card's fields: description, languages, the recipe's hyper-parameters, the best validation BLEU
    so far and the dataset."""
    return {"description": f"A Transformer trained with vanilla-transformer's examples/run_translation.py "
                           f"({args.source_lang}->{args.target_lang}).",
            "language": [args.source_lang, args.target_lang],
            "hyperparameters": {k: getattr(args, k) for k in (
                "num_train_epochs", "max_tokens_per_batch", "per_device_train_batch_size", "learning_rate",
                "lr_scale", "warmup_steps", "lr_decay", "label_smoothing", "num_beams", "length_penalty", "seed")
                if getattr(args, k) is not None}
            | ({"bpe_dropout": args.bpe_dropout, "bpe_dropout_views": args.bpe_dropout_views}
               if args.bpe_dropout else {})
            # the policy set_precision chose ("mixed_bfloat16", "float32"), not the setting ("auto")
            | {"mixed_precision": getattr(args, "dtype_policy", args.mixed_precision)},
            "results": {k: v for k, v in (("bleu", state.get("best_bleu")),) if v is not None},
            "dataset_name": args.dataset_name or "local parallel text"}


def write_results(results: dict, output_dir: Path) -> None:
    """``results.json`` in ``output_dir``."""
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))


def save_final(final, tokenizer, args, output_dir: Path, state: dict, results: dict, push: bool) -> None:
    """The reported model in ``output_dir/model`` (Hub layout, tokenizer and model card included, decoding as it
    was scored), ``results.json``, and with ``push`` the model on the Hub."""
    # The saved model translates the way it was scored: from_pretrained(...).translate(...) needs no arguments.
    final.generation_config.num_beams = args.num_beams
    final.generation_config.max_new_tokens = args.max_target_length
    # transformers refuses to save a length penalty without beams
    final.generation_config.length_penalty = args.length_penalty if args.num_beams > 1 else None
    state["test_bleu"] = results.get("test", {}).get("bleu")
    info = card_info(args, state)
    if "test" in results:
        info["results"] = {"bleu": results["test"]["bleu"], "chrf": results["test"]["chrf"]}
    # how the scores were decoded: the saved generation_config.json can hold only beam search's settings
    info["hyperparameters"]["decoding"] = results["decoding"]  # set by evaluate_final
    final.save_pretrained(output_dir / "model", tokenizer=tokenizer, model_card=info)
    write_results(results, output_dir)
    print(f"wrote {output_dir / 'results.json'}; model in {output_dir / 'model'}")
    if push:
        final.push_to_hub(args.hub_model_id or output_dir.name, tokenizer=tokenizer, model_card=info,
                          token=args.hub_token)
