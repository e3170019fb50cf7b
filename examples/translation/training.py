"""Training in ``run_translation.py``: precision, model and tokenizer, the paper's optimizer and learning-rate
schedule, and the resumable fit.

The fit backs up its state every ``--backup_every`` batches (``--resume`` continues from it, also after
SIGKILL), scores validation BLEU every ``--eval_every`` epochs (the best epoch is saved to ``best/``), keeps the
last epochs' weights for ``--average_last_k``, stops on a NaN loss, and with ``--max_train_minutes`` on the last
step that fits the time budget. ``history.json`` records every epoch.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import _common
from translation.data import make_train_batches, tokenize
from translation.report import card_info, evaluate_bleu, plot_history

def set_precision(args) -> str:
    """Set Keras' global dtype policy from ``--mixed_precision`` and print what was chosen and why. ``auto``:
    bfloat16 only where the hardware computes it natively, else float32 (with XLA); float32 when nothing is
    trained (``--num_train_epochs 0``), as reported scores come from float32 decoding."""
    import keras

    from vanilla_transformer.precision import choose_policy

    if args.mixed_precision == "auto" and not args.num_train_epochs:
        policy, reason = "float32", "--mixed_precision auto -> float32: nothing to train, scores decode in float32"
    else:
        policy, reason = choose_policy(args.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    print(f"precision: {reason}", flush=True)
    args.dtype_policy = policy  # for card_info
    return policy


# ------------------------------------------------------------------------------------------ model and optimizer
def build_model_and_tokenizer(args, train):
    """A new model from a preset with a BPE tokenizer learnt on both sides of ``train``, or a saved model and
    its tokenizer."""
    from vanilla_transformer import TransformerForSeq2SeqLM

    tokenizer = _common.load_or_train_tokenizer(args, list(train["source"]) + list(train["target"]), wrap=False)
    model = _common.load_model(TransformerForSeq2SeqLM, args, tokenizer,
                               max_length=max(args.max_source_length, args.max_target_length) + 2,
                               label_smoothing=args.label_smoothing)
    return model, tokenizer


def make_learning_rate(args, d_model: int, total_steps: int):
    """The learning-rate schedule: linear warm-up over ``--warmup_steps`` to the peak (``--learning_rate``, or
    the paper's ``lr_scale * d_model^-0.5 * warmup^-0.5``), then the paper's inverse square root decay
    (equation 3) or, with ``--lr_decay linear``, a straight line to 0 at ``total_steps``."""
    from vanilla_transformer.optimization import LinearWarmupSchedule, TransformerSchedule

    peak = args.learning_rate
    if peak is None:
        peak = args.lr_scale * (d_model * args.warmup_steps) ** -0.5
    if args.lr_decay == "linear":
        return LinearWarmupSchedule(peak, args.warmup_steps, decay_steps=total_steps)
    # TransformerSchedule peaks at scale * (d_model * warmup)^-0.5: scale it so that the peak is `peak`
    return TransformerSchedule(d_model, args.warmup_steps, peak * (d_model * args.warmup_steps) ** 0.5)


def build_and_compile(args, strategy, train, distribution=None):
    """Model, tokenizer, collator, training batches (placed for ``distribution``) and learning-rate schedule,
    built and compiled in the strategy's scope."""
    import keras

    from vanilla_transformer.gradient_accumulation import accumulate_gradients
    from vanilla_transformer.losses import MaskedAccuracy, MaskedSparseCrossEntropy
    from vanilla_transformer.optimization import PAPER_ADAM

    with strategy.scope() if strategy else contextlib.nullcontext():
        model, tokenizer = build_model_and_tokenizer(args, train)
        model.build_weights()
        args.lora_results = _common.apply_lora(model, args)
        tokenized = tokenize(train, tokenizer, args)
        # the decay needs the step count
        collator, batches = make_train_batches(tokenized, model.config, args, distribution, tokenizer)
        updates = max(1, len(batches) // args.gradient_accumulation_steps)  # the schedule counts optimizer updates
        learning_rate = make_learning_rate(args, model.config.d_model, total_steps=args.num_train_epochs * updates)
        optimizer = keras.optimizers.Adam(learning_rate, **PAPER_ADAM)
        model.compile(optimizer=accumulate_gradients(optimizer, args.gradient_accumulation_steps),
                      loss=MaskedSparseCrossEntropy(args.label_smoothing), metrics=[MaskedAccuracy()])
        if args.decay_within_budget:  # the decay ends where the budget does
            learning_rate.make_decay_end_movable(model.optimizer)
    return model, tokenizer, collator, batches, learning_rate


# ------------------------------------------------------------------------------------------ the fit
def make_epoch_callback(model, tokenizer, splits, args, output_dir: Path, state: dict):
    """A callback for the end of every epoch: validation BLEU every ``--eval_every`` epochs (a new best is saved
    to ``best/``), the epoch's weights for ``--average_last_k`` (the last max(k) kept), the epoch's record in
    ``history.json`` and ``learning_curves.png``; it stops training on a non-finite loss."""
    import keras
    import numpy as np

    from vanilla_transformer.weight_files import state_dict, write_weights

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                      "time_s": round(time.time() - state["started"] + state.get("time_before", 0.0), 1)}
            if "validation" in splits and (epoch + 1) % args.eval_every == 0:
                scores = evaluate_bleu(model, tokenizer, splits["validation"], args, args.max_eval_samples)
                record["val_bleu"], record["val_chrf"] = scores["bleu"], scores["chrf"]
                if logs is not None:  # for EarlyStopping, which runs after this callback
                    logs["val_bleu"] = scores["bleu"]
                print(f"\nepoch {epoch + 1}: validation BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f}")
                if scores["bleu"] > state.get("best_bleu", -1.0):
                    state["best_bleu"], state["best_epoch"] = scores["bleu"], epoch + 1
                    model.save_pretrained(output_dir / "best", tokenizer=tokenizer, model_card=card_info(args, state))
            if args.average_last_k:
                checkpoints = output_dir / "checkpoints"
                checkpoints.mkdir(exist_ok=True)
                epoch_dir = checkpoints / f"epoch-{epoch + 1:03d}"
                epoch_dir.mkdir(exist_ok=True)
                write_weights(state_dict(model), epoch_dir)
                for old in sorted(checkpoints.iterdir())[:-max(args.average_last_k)]:
                    import shutil

                    shutil.rmtree(old, ignore_errors=True)
            state["history"] = [h for h in state["history"] if h["epoch"] != epoch + 1] + [record]
            (output_dir / "history.json").write_text(json.dumps(state, indent=2))
            plot_history(state["history"], output_dir / "learning_curves.png")
            if not np.isfinite(record.get("loss", 0.0)):
                self.model.stop_training = True

    return EpochEnd()


def train(model, tokenizer, splits, batches, schedule, validation_data, args, output_dir: Path, extra_callbacks):
    """Resumable training with per-epoch BLEU, within ``--max_train_minutes`` (with ``--decay_within_budget``
    the linear decay ends where the budget does); returns the run's state and the NaN guard."""
    import keras

    from vanilla_transformer.time_budget import TimeBudget
    from vanilla_transformer.training import StopOnNaN, fit_resumable

    state_path = output_dir / "history.json"
    state = {"history": []}
    if args.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        state["time_before"] = state["history"][-1]["time_s"] if state["history"] else 0.0
    state["started"] = time.time()
    nan_stop = StopOnNaN()
    callbacks = [nan_stop, keras.callbacks.TensorBoard(str(output_dir / "logs")),
                 make_epoch_callback(model, tokenizer, splits, args, output_dir, state), *extra_callbacks]
    stopper = _common.early_stopping(args, "val_bleu", "max")
    if stopper is not None:
        callbacks.append(stopper)
    if args.max_train_minutes:  # counts training steps only: the epoch callback's evaluation is outside
        callbacks.append(TimeBudget(args.max_train_minutes * 60, schedule if args.decay_within_budget else None,
                                    steps_per_epoch=len(batches), seconds_before=state.get("time_before", 0.0)))
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    fit_resumable(model, batches, args.num_train_epochs, output_dir / "backup", save_freq=args.backup_every,
                  callbacks=callbacks, verbose=verbose, validation_data=validation_data)
    if stopper is not None:
        history = keras.callbacks.History()
        history.history = {"val_bleu": [h["val_bleu"] for h in state["history"] if "val_bleu" in h]}
        state["early_stopping"] = _common.finish_early_stopping(model, stopper, history)["early_stopping"]
    return state, nan_stop
