"""Time to BLEU: validation BLEU against wall-clock training minutes for several run_translation.py runs.

Each run's folder holds ``history.json`` (one record an epoch: ``time_s``, the training wall time so far, and
``val_bleu`` where the epoch was scored on the validation subset) and ``results.json`` (``train_time_s``
and the final ``validation`` / ``test`` BLEU of the kept model). The chart draws each run's validation curve
and marks its final validation and test BLEU at its training time (a run stopped before its final
evaluation has no ``results.json``: its curve only), so recipes compare by the minute:

    python examples/plot_time_to_bleu.py runs/multi30k-15min runs/multi30k-hour --labels "15 min" "hour" \\
        --point "README recipe, test" 57.5 38.36 --output time_to_bleu.png

``--point LABEL MINUTES BLEU`` adds a published figure without its run folder (repeatable).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def time_to_bleu(run_dir) -> dict:
    """A run's BLEU by training minute, from its ``history.json`` and ``results.json`` (if it has one).

    Returns:
        ``{"curve": [(minutes, validation-subset BLEU), ...], "minutes": training minutes,
        "validation": final validation BLEU or None, "test": final test BLEU or None}``.

    Example:
        >>> import json, tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> _ = (run / "history.json").write_text(json.dumps({"history": [
        ...     {"epoch": 1, "time_s": 60.0}, {"epoch": 2, "time_s": 120.0, "val_bleu": 30.5}]}))
        >>> _ = (run / "results.json").write_text(json.dumps(
        ...     {"train_time_s": 125.0, "validation": {"bleu": 31.0}, "test": {"bleu": 30.0}}))
        >>> time_to_bleu(run)
        {'curve': [(2.0, 30.5)], 'minutes': 2.0833333333333335, 'validation': 31.0, 'test': 30.0}
        >>> (run / "results.json").unlink()  # a run stopped before its final evaluation
        >>> time_to_bleu(run)
        {'curve': [(2.0, 30.5)], 'minutes': 2.0, 'validation': None, 'test': None}
    """
    run_dir = Path(run_dir)
    history = json.loads((run_dir / "history.json").read_text())["history"]
    curve = [(h["time_s"] / 60, h["val_bleu"]) for h in history if "val_bleu" in h and "time_s" in h]
    if not (run_dir / "results.json").exists():  # stopped before its final evaluation: the curve only
        return {"curve": curve, "minutes": history[-1]["time_s"] / 60 if history else 0.0, "validation": None,
                "test": None}
    results = json.loads((run_dir / "results.json").read_text())
    return {"curve": curve, "minutes": results["train_time_s"] / 60,
            "validation": results.get("validation", {}).get("bleu"), "test": results.get("test", {}).get("bleu")}


def plot(runs: dict, points, path) -> None:
    """Draws ``{label: time_to_bleu(...)}`` and ``[(label, minutes, bleu)]`` points into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(figsize=(10.5, 5))
    for label, run in runs.items():
        minutes, bleu = zip(*run["curve"]) if run["curve"] else ((), ())
        line, = axes.plot(minutes, bleu, marker="o", label=f"{label}: validation (subset)" if run["curve"] else None)
        for key, marker in (("validation", "s"), ("test", "*")):
            if run[key] is not None:
                axes.plot([run["minutes"]], [run[key]], marker=marker, markersize=11, linestyle="none",
                          color=line.get_color(), label=f"{label}: {key} {run[key]:.2f}")
    for label, minutes, bleu in points:
        axes.plot([minutes], [bleu], marker="D", linestyle="none", label=f"{label} {bleu:.2f}")
    axes.set_xlabel("training minutes (wall clock)"), axes.set_ylabel("BLEU")
    axes.grid(alpha=0.3), axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="output folders of run_translation.py")
    parser.add_argument("--labels", nargs="+", help="one label a run (default: the folder names)")
    parser.add_argument("--point", nargs=3, action="append", default=[], metavar=("LABEL", "MINUTES", "BLEU"),
                        help="a published figure to draw beside the runs")
    parser.add_argument("--output", default="time_to_bleu.png")
    args = parser.parse_args(argv)
    labels = args.labels or [Path(run).name for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"--labels gives {len(labels)} labels for {len(args.runs)} runs")
    runs = {label: time_to_bleu(run) for label, run in zip(labels, args.runs)}
    points = [(label, float(minutes), float(bleu)) for label, minutes, bleu in args.point]
    plot(runs, points, args.output)
    for label, run in runs.items():
        curve = ", ".join(f"{m:.1f} min {b:.2f}" for m, b in run["curve"])
        print(f"{label}: {curve}; at {run['minutes']:.1f} min validation {run['validation']} test {run['test']}")
    print(f"wrote {args.output}")
    return runs


if __name__ == "__main__":
    main()
