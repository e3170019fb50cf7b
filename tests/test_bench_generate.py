"""benchmarks/bench_generate.py times the frameworks in turns, so that a slow spell of the machine falls on all of
them: the order of the calls, and a real child process answering requests."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_generate  # noqa: E402


class FakeChild:
    """Records every call in one shared log; a call's seconds are its position in that log."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def seconds(self, key, cached=True):
        self.log.append((self.name, key))
        return float(len(self.log))


def test_children_take_turns_warm_up_each_turn_and_alternate_the_order(monkeypatch):
    monkeypatch.setattr(bench_generate, "PAUSE_SECONDS", 0.0)
    log = []
    children = {"ours": FakeChild("ours", log), "transformers": FakeChild("transformers", log)}
    medians = bench_generate.interleaved_medians(children, "greedy/32/64", repeats=3)
    names = [name for name, _ in log]
    # each turn: an untimed call, then the timed one; rounds alternate who goes first
    assert names == (["ours", "ours", "transformers", "transformers"] + ["transformers", "transformers", "ours", "ours"]
                     + ["ours", "ours", "transformers", "transformers"])
    assert {key for _, key in log} == {"greedy/32/64"}
    # timed calls are the second of each turn: ours at log positions 2, 8, 10; transformers at 4, 6, 12
    assert medians == {"ours": 8.0, "transformers": 6.0}


@pytest.mark.slow
def test_a_child_process_answers_timing_requests():
    """The transformers child (torch only, a tiny request) started as the script starts it."""
    args = bench_generate.argparse.Namespace(threads=1)
    child = bench_generate.Child("transformers", "tensorflow", args)
    try:
        seconds = child.seconds("greedy/1/2")
    finally:
        child.close()
    assert 0.0 < seconds < 60.0
    assert child.process.returncode == 0
