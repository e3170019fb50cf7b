"""examples/plot_time_to_bleu.py: BLEU by training minute read from run folders, drawn side by side."""

import importlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
plot_time_to_bleu = importlib.import_module("plot_time_to_bleu")


def _run(directory: Path, times, scores, final):
    """A run folder as run_translation.py writes it: validation BLEU every second epoch, then final scores."""
    directory.mkdir()
    history = [{"epoch": i + 1, "time_s": t, **({"val_bleu": b} if b is not None else {})}
               for i, (t, b) in enumerate(zip(times, scores))]
    (directory / "history.json").write_text(json.dumps({"history": history, "started": 0.0}))
    (directory / "results.json").write_text(json.dumps(
        {"train_time_s": times[-1] + 3.0, "validation": {"bleu": final[0]}, "test": {"bleu": final[1]}}))
    return directory


def test_curves_and_final_scores_by_minute(tmp_path, capsys):
    fast = _run(tmp_path / "fast", [30.0, 60.0, 90.0, 120.0], [None, 20.0, None, 30.0], (31.5, 30.25))
    slow = _run(tmp_path / "slow", [90.0, 180.0], [None, 25.0], (26.0, 24.5))
    output = tmp_path / "chart.png"
    runs = plot_time_to_bleu.main([str(fast), str(slow), "--labels", "packed", "buckets",
                                   "--point", "published", "57.5", "38.36", "--output", str(output)])
    assert runs["packed"] == {"curve": [(1.0, 20.0), (2.0, 30.0)], "minutes": 2.05, "validation": 31.5,
                              "test": 30.25}
    assert runs["buckets"]["curve"] == [(3.0, 25.0)] and runs["buckets"]["minutes"] == pytest.approx(3.05)
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "packed: 1.0 min 20.00, 2.0 min 30.00; at 2.0 min validation 31.5 test 30.25" in printed



def test_a_run_stopped_before_its_final_evaluation_draws_its_curve_only(tmp_path, capsys):
    stopped = _run(tmp_path / "stopped", [60.0, 120.0], [10.0, 20.0], (0.0, 0.0))
    (stopped / "results.json").unlink()  # killed during training: no final scores
    runs = plot_time_to_bleu.main([str(stopped), "--output", str(tmp_path / "chart.png")])
    assert runs["stopped"] == {"curve": [(1.0, 10.0), (2.0, 20.0)], "minutes": 2.0, "validation": None, "test": None}
    assert "stopped: 1.0 min 10.00, 2.0 min 20.00; at 2.0 min validation None test None" in capsys.readouterr().out

def test_labels_must_match_runs(tmp_path):
    run = _run(tmp_path / "run", [60.0], [10.0], (11.0, 12.0))
    with pytest.raises(SystemExit):
        plot_time_to_bleu.main([str(run), "--labels", "a", "b", "--output", str(tmp_path / "x.png")])


def test_learning_curves_minutes_axis_runs_past_the_last_epoch():
    """run_translation.py's top axis maps epochs to training minutes through the epochs' times and, in the
    chart's margin past the last epoch, at the run's mean pace (not clamped onto the last epoch)."""
    report = importlib.import_module("translation.report")  # run_translation.py's learning curves
    history = [{"epoch": 1, "time_s": 60.0}, {"epoch": 2, "time_s": 180.0}, {"epoch": 3, "time_s": 270.0}]
    to_minutes, to_epochs = report.epoch_minute_functions(history)
    assert float(to_minutes(1.5)) == pytest.approx(2.0) and float(to_epochs(2.0)) == pytest.approx(1.5)
    assert float(to_minutes(4.0)) == pytest.approx(4.5 + 1.5) and float(to_epochs(6.0)) == pytest.approx(4.0)
    assert report.epoch_minute_functions(history[:1]) is None
