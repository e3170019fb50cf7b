"""benchmarks/bench_translate.py: the engines take turns, and ``--quick`` runs every engine end to end (a tiny
random model on 8 number-words sentences): warm and cold timings, BLEU, and float32 CTranslate2 and transformers
translating exactly as ours."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_translate  # noqa: E402

from vanilla_transformer.number_words import make_splits  # noqa: E402


class FakeChild:
    """Records every request in one shared log and answers with the request's position in it."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def ask(self, request, prefix):
        self.log.append((self.name, request))
        return str(len(self.log))


def test_engines_take_turns_after_an_untimed_call_each(monkeypatch):
    monkeypatch.setattr(bench_translate, "PAUSE_SECONDS", 0.0)
    log = []
    children = {name: FakeChild(name, log) for name in ("ours", "ct2_float32", "transformers")}
    answers = bench_translate.take_turns(children, lambda name: f"file beam4 {name}.txt", "seconds", repeats=2)
    assert [name for name, _ in log] == ["ours", "ct2_float32", "transformers"] * 2 + ["transformers", "ct2_float32",
                                                                                        "ours"]
    assert [request for _, request in log[:3]] == ["file beam4 ours.txt", "file beam4 ct2_float32.txt",
                                                   "file beam4 transformers.txt"]
    assert answers == {"ours": ["4", "9"], "ct2_float32": ["5", "8"], "transformers": ["6", "7"]}  # untimed calls left out
    assert bench_translate.percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert bench_translate.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.9) == pytest.approx(4.6)


@pytest.mark.slow
def test_quick_run_times_and_scores_every_engine(tmp_path):
    for module in ("ctranslate2", "sacrebleu", "torch"):
        pytest.importorskip(module)
    _, pairs = make_splits(num_train=10, num_test=8, max_number=999, seed=5)
    (tmp_path / "source.en").write_text("".join(f"{en}\n" for en, _ in pairs))
    (tmp_path / "reference.de").write_text("".join(f"{de}\n" for _, de in pairs))
    output = tmp_path / "translate.json"
    subprocess.run([sys.executable, str(Path(bench_translate.__file__)), "--quick", "--threads", "1",
                    "--source", str(tmp_path / "source.en"), "--reference", str(tmp_path / "reference.de"),
                    "--output", str(output)], check=True, timeout=600)
    results = json.loads(output.read_text())
    rows = results["engines"]
    assert set(rows) == {"ours", "ct2_float32", "ct2_int8", "transformers"} and results["sentences"] == 8
    for engine, row in rows.items():
        assert 0.0 <= row["beam4_bleu"] <= 100.0 and 0.0 <= row["greedy_bleu"] <= 100.0, engine
        assert row["beam4_sentences_per_s"] > 0 and row["greedy_sentences_per_s"] > 0, engine
        assert 0 < row["beam4_batch1_ms_p50"] <= row["beam4_batch1_ms_p90"], engine
        assert results["cold_seconds"][engine] > 0, engine
    for engine in ("ct2_float32", "transformers"):  # float32, the same search: our translations, line for line
        assert rows[engine]["beam4_same_as_ours"] == rows[engine]["greedy_same_as_ours"] == 8, engine
    assert "--input" in results["ours_cold_run"] or "python process" in results["ours_cold_run"]
