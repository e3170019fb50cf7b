"""What ``run_translation.py`` keeps after training, and how it decodes.

First the weights: the best epoch on validation BLEU (``best/``), or an average of the last k epochs'
checkpoints (``--average_last_k``, the paper's averaging) when it scores higher. Then the decoding, chosen on the
full validation set and never on test: the length penalty (``--length_penalty_candidates``), and beam search or
minimum Bayes risk decoding over the beam's N-best (``--mbr_candidates``). ``--ensemble_with`` evaluates the
kept model again averaged with other saved models, choosing the ensemble's decoding the same way.
"""

from __future__ import annotations

import copy
from pathlib import Path

from translation.report import card_info, evaluate_bleu


# ------------------------------------------------------------------------------------------ checkpoint averaging
def average_checkpoints(model, paths):
    """Set ``model``'s weights to the mean of the checkpoints in ``paths`` (the paper's averaging)."""
    import numpy as np

    from vanilla_transformer.weight_files import assign_weights, read_weights

    tensors = [read_weights(str(p)) for p in paths]
    mean = {name: np.mean([t[name] for t in tensors], axis=0) for name in tensors[0]}
    assign_weights(model, mean)


def search_averages(model, directory: Path, ks, score=None):
    """Average the last k checkpoints for each k in ``ks``, score each average with ``score(model)``, and leave
    ``model`` holding the best one (the first listed on a tie; the last listed without ``score``).

    Returns ``(best_k, averages, scores)``: the checkpoint names of each distinct average by k (a k beyond the
    number of checkpoints repeats a smaller k's average and is skipped, unread) and their scores.
    """
    checkpoints = sorted(directory.iterdir())
    averages, scores = {}, {}
    for k in ks:
        names = [p.name for p in checkpoints[-k:]]
        if names in averages.values():
            continue
        averages[k] = names
        if score is not None:
            average_checkpoints(model, checkpoints[-k:])
            scores[k] = score(model)
    best_k = max(scores, key=scores.get) if scores else list(averages)[-1]
    if not scores or best_k != list(scores)[-1]:  # the model holds the last average scored, or none yet
        average_checkpoints(model, checkpoints[-best_k:])
    return best_k, averages, scores


def keep_best_average(model, tokenizer, splits, args, output_dir: Path, state: dict, results: dict) -> None:
    """Average the last k epochs; an average that beats the best epoch on validation becomes ``best/``."""
    score = None
    if "validation" in splits:
        def score(averaged):  # on the validation subset the epochs were scored on
            return evaluate_bleu(averaged, tokenizer, splits["validation"], args, args.max_eval_samples)["bleu"]
    best_k, averages, search = search_averages(model, output_dir / "checkpoints", args.average_last_k, score)
    for k, bleu in search.items():
        print(f"average of the last {len(averages[k])} epochs: validation BLEU {bleu:.2f}")
    if len(search) > 1:
        results["average_search"] = {str(k): bleu for k, bleu in search.items()}
    results["averaged"] = averages[best_k]
    if search:
        results["averaged_validation_bleu"] = search[best_k]
        if state.get("best_bleu") is None or search[best_k] > state["best_bleu"]:  # a tie keeps the epoch
            state["best_bleu"], state["kept"] = search[best_k], "average of " + ", ".join(averages[best_k])
            model.save_pretrained(output_dir / "best", tokenizer=tokenizer, model_card=card_info(args, state))


def kept_model(model, output_dir: Path, state: dict, results: dict):
    """The model to report: ``best/`` (reloaded in float32) when the run kept one, else the trained model."""
    if not (output_dir / "best").exists():
        return model
    import keras

    from vanilla_transformer import TransformerForSeq2SeqLM

    # Reported scores come from float32 decoding whatever precision the run trained in.
    keras.mixed_precision.set_global_policy("float32")
    results["kept"] = state.get("kept") or (f"epoch-{state['best_epoch']:03d}" if state.get("best_epoch") else None)
    return TransformerForSeq2SeqLM.from_pretrained(output_dir / "best")


# ------------------------------------------------------------------------------------------ decoding search
def choose_length_penalty(final, tokenizer, splits, args, results: dict) -> None:
    """Set ``args.length_penalty`` to the candidate with the best beam-search BLEU on the full validation set."""
    # Decoding is a hyper-parameter too: chosen on the full validation set, never on test.
    search = {lp: evaluate_bleu(final, tokenizer, splits["validation"], args, length_penalty=lp)
              for lp in args.length_penalty_candidates}
    args.length_penalty = max(search, key=lambda lp: search[lp]["bleu"])  # the first listed wins a tie
    results["length_penalty_search"] = {str(lp): scores["bleu"] for lp, scores in search.items()}
    results["validation"] = search[args.length_penalty]
    print("validation BLEU by length penalty: " + ", ".join(f"{lp} -> {scores['bleu']:.2f}"
                                                           for lp, scores in search.items())
          + f"; chose {args.length_penalty}")


def choose_mbr(final, tokenizer, splits, args, results: dict) -> bool:
    """Whether MBR decoding scores higher than beam search on the full validation set (ties go to beam)."""
    beam = results.get("validation") or evaluate_bleu(final, tokenizer, splits["validation"], args)
    mbr = evaluate_bleu(final, tokenizer, splits["validation"], args, mbr=True)
    use_mbr = mbr["bleu"] > beam["bleu"]
    results["mbr_search"] = {"beam": beam["bleu"], "mbr": mbr["bleu"]}
    results["validation"] = mbr if use_mbr else beam
    print(f"validation BLEU: beam {beam['bleu']:.2f}, MBR over the {args.mbr_candidates}-best "
          f"({args.mbr_samples} samples) {mbr['bleu']:.2f}; chose {'MBR' if use_mbr else 'beam'}")
    return use_mbr


def evaluate_final(final, tokenizer, splits, args, results: dict) -> None:
    """The length penalty and the decoding (beam or MBR) chosen on the full validation set (never test), then
    validation and test BLEU."""
    has_validation = "validation" in splits
    if args.length_penalty_candidates and has_validation:
        choose_length_penalty(final, tokenizer, splits, args, results)
    results["length_penalty"] = args.length_penalty
    use_mbr = bool(args.mbr_candidates and has_validation and choose_mbr(final, tokenizer, splits, args, results))
    results["decoding"] = (f"MBR over the beam's {args.mbr_candidates}-best, {args.mbr_samples} samples"
                           if use_mbr else f"beam {args.num_beams}")
    for split in ("validation", "test"):
        if split in splits:
            scores = results.get(split) or evaluate_bleu(final, tokenizer, splits[split], args, mbr=use_mbr)
            results[split] = scores
            print(f"{split}: BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f} ({scores['signature']})")


# ------------------------------------------------------------------------------------------ ensembles
def check_ensemble_members(paths, model, tokenizer) -> None:
    """Exit before any training when a ``--ensemble_with`` model cannot be loaded or cannot ensemble with this
    run's: the ensemble averages distributions over token ids, which must mean the same tokens in every member
    (same vocabulary, special ids and architecture)."""
    from vanilla_transformer import TransformerForSeq2SeqLM
    from vanilla_transformer.generation.ensemble import config_mismatch
    from vanilla_transformer.hub import load_tokenizer

    for path in paths:
        other = load_tokenizer(path)
        if other is None or other.get_vocab() != tokenizer.get_vocab():
            problem = "has no tokenizer" if other is None else "has a vocabulary other than this run's tokenizer"
            raise SystemExit(f"--ensemble_with {path} {problem}: ensemble members must share one tokenizer")
        mismatch = config_mismatch(model.config, TransformerForSeq2SeqLM.from_pretrained(path).config, "this run")
        if mismatch:
            raise SystemExit(f"--ensemble_with {path} has {mismatch}: ensemble members must share the special "
                             "tokens and the architecture")


def evaluate_ensemble(final, tokenizer, splits, args, results: dict) -> None:
    """``final`` ensembled with the ``--ensemble_with`` models, evaluated as :func:`evaluate_final` evaluates a
    model (its own length penalty and decoding chosen on validation), into ``results["ensemble"]``."""
    import keras

    from vanilla_transformer import TransformerForSeq2SeqLM
    from vanilla_transformer.generation.ensemble import Ensemble

    keras.mixed_precision.set_global_policy("float32")  # the members decode in float32, as best/ does
    members = [TransformerForSeq2SeqLM.from_pretrained(path) for path in args.ensemble_with]
    print(f"ensemble of this run's model and {', '.join(args.ensemble_with)}:", flush=True)
    ensemble_results = {"members": ["this run", *args.ensemble_with]}
    evaluate_final(Ensemble([final, *members]), tokenizer, splits, copy.copy(args), ensemble_results)
    results["ensemble"] = ensemble_results
