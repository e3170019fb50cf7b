"""examples/run_translation.py end to end on a few hundred generated pairs: files, BLEU, resume, reload."""

import copy
import importlib.util
import json
import sys
import types
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest

from vanilla_transformer import TransformerForSeq2SeqLM
from vanilla_transformer.weight_files import read_weights
from vanilla_transformer.hub import load_tokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "run_translation.py"
sys.path.insert(0, str(SCRIPT.parent))  # the script's steps: examples/translation/ (and examples/_common.py)

from translation.data import load_data, make_train_batches, tokenize  # noqa: E402
from translation.selection import check_ensemble_members, evaluate_final, search_averages  # noqa: E402
from translation.training import build_model_and_tokenizer, make_learning_rate  # noqa: E402


@pytest.fixture(scope="module")
def run_translation():
    spec = importlib.util.spec_from_file_location("run_translation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, write_number_words):
    return write_number_words(tmp_path_factory.mktemp("pairs"), num_train=240, num_val=24, seed=1)


def _argv(data_dir, output_dir, epochs, sizes=True):
    """The run's flags; ``sizes=False`` leaves out the model sizes (refused with a saved model)."""
    size_flags = ["--d_model", "32", "--num_heads", "4", "--d_ff", "64", "--num_layers", "1", "--vocab_size", "120"]
    return ["--train_file", str(data_dir / "train"), "--validation_file", str(data_dir / "val"),
            "--test_file", str(data_dir / "val"), "--output_dir", str(output_dir), *(size_flags if sizes else []),
            "--num_train_epochs", str(epochs), "--per_device_train_batch_size", "24", "--backup_every", "3",
            "--warmup_steps", "20", "--num_beams", "2", "--max_target_length", "24", "--verbose", "0",
            "--average_last_k", "1", "2", "3"]


class Interrupt(keras.callbacks.Callback):
    """Stands for a crash: raises after a number of batches, leaving only what the backups saved."""

    def __init__(self, after):
        super().__init__()
        self.after, self.seen = after, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.after:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_end_to_end_with_interruption_resume_and_reload(run_translation, data_dir, tmp_path, capsys):
    output = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_translation.main(_argv(data_dir, output, 2), extra_callbacks=[Interrupt(after=14)])
    position = json.loads((output / "backup" / "current" / "training_metadata.json").read_text())
    assert position == {"epoch": 1, "batches_done": 3}  # 11 batches an epoch (length buckets of 24 rows), backups every 3 batches

    with pytest.raises(SystemExit, match="--resume"):
        run_translation.main(_argv(data_dir, output, 2))
    capsys.readouterr()
    results = run_translation.main(_argv(data_dir, output, 2) + ["--resume", "--length_penalty_candidates", "0.6", "2.0"])
    out = capsys.readouterr().out
    assert "Resuming from the backup" in out and "epoch 2, after 3 of its 11 batches" in out

    for name in ("results.json", "history.json", "learning_curves.png"):
        assert (output / name).is_file(), name
    assert any((output / "logs").rglob("events.out.tfevents.*"))
    history = json.loads((output / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all("val_bleu" in h for h in history)
    saved = json.loads((output / "results.json").read_text())
    assert 0.0 <= saved["test"]["bleu"] <= 100.0 and "chrf" in saved["test"] and saved["epochs_completed"] == 2
    # several k: each average scored on validation (k 3 is k 2 after two epochs), the best competes with the epochs
    averages = saved["average_search"]
    assert list(averages) == ["1", "2"]
    best_k = 2 if averages["2"] > averages["1"] else 1
    assert saved["averaged"] == ["epoch-001", "epoch-002"][-best_k:]
    assert saved["averaged_validation_bleu"] == averages[str(best_k)]
    assert saved["kept"] in ("epoch-001", "epoch-002", "average of " + ", ".join(saved["averaged"]))
    if saved["kept"].startswith("average"):
        assert saved["averaged_validation_bleu"] > max(h["val_bleu"] for h in history)
        kept = read_weights(str(output / "best"))
        checkpoints = [read_weights(str(output / "checkpoints" / name)) for name in saved["averaged"]]
        for name, value in kept.items():
            np.testing.assert_allclose(value, np.mean([c[name] for c in checkpoints], axis=0), rtol=1e-6, atol=1e-7)
    # the length penalty is chosen on validation: the best of the candidates (the first listed on a tie)
    search = saved["length_penalty_search"]
    assert list(search) == ["0.6", "2.0"]
    assert saved["length_penalty"] == (2.0 if search["2.0"] > search["0.6"] else 0.6)
    assert saved["validation"]["bleu"] == search[str(saved["length_penalty"])]

    model = TransformerForSeq2SeqLM.from_pretrained(output / "model")
    tokenizer = load_tokenizer(output / "model")
    samples = results["test"]["samples"]
    again = model.translate([s["source"] for s in samples], tokenizer, num_beams=2,
                            length_penalty=saved["length_penalty"], max_new_tokens=24)
    assert again == [s["hypothesis"] for s in samples]
    # generation_config.json carries the decoding that was scored, so no arguments are needed
    assert (model.generation_config.num_beams, model.generation_config.length_penalty) == (2, saved["length_penalty"])
    assert model.translate([s["source"] for s in samples], tokenizer) == again
    card = (output / "model" / "README.md").read_text()
    assert f"| bleu | {saved['test']['bleu']} |" in card and "| decoding | beam 2 |" in card

    # --num_train_epochs 0 with a trained model only evaluates it, and reproduces the run's scores
    rescored = run_translation.main(_argv(data_dir, tmp_path / "rescored", 0, sizes=False) + [
        "--model_name_or_path", str(output / "model"), "--length_penalty", str(saved["length_penalty"])])
    assert rescored["epochs_completed"] == 0
    assert rescored["test"]["bleu"] == saved["test"]["bleu"] and rescored["test"]["samples"] == samples

    # an ensemble of the model with itself averages equal distributions: it decodes as the model alone
    ensembled = run_translation.main(_argv(data_dir, tmp_path / "ensembled", 0, sizes=False) + [
        "--model_name_or_path", str(output / "model"), "--ensemble_with", str(output / "model"),
        "--length_penalty_candidates", str(saved["length_penalty"])])
    ensemble = json.loads((tmp_path / "ensembled" / "results.json").read_text())["ensemble"]
    assert ensemble["members"] == ["this run", str(output / "model")] and ensemble["decoding"] == "beam 2"
    assert ensemble["test"]["samples"] == samples and ensemble["test"]["bleu"] == ensembled["test"]["bleu"]

    class OtherTokenizer:
        def get_vocab(self):
            return {"x": 0}

    with pytest.raises(SystemExit, match="has a vocabulary other than this run's tokenizer"):
        check_ensemble_members([str(output / "model")], model, OtherTokenizer())
    with pytest.raises(SystemExit, match="logs has no tokenizer"):
        check_ensemble_members([str(output / "logs")], model, tokenizer)
    other_config = copy.deepcopy(model.config)
    other_config.eos_token_id = 5
    this_run = types.SimpleNamespace(config=other_config)  # all the check reads of this run's model
    with pytest.raises(SystemExit, match=r"has eos_token_id=2 \(this run has 5\)"):
        check_ensemble_members([str(output / "model")], this_run, tokenizer)


def test_pad_to_multiple_of_sets_the_batch_lengths(run_translation):
    from types import SimpleNamespace

    import numpy as np

    rng = np.random.default_rng(0)
    rows = [list(rng.integers(3, 50, size=int(n))) for n in rng.integers(1, 30, size=200)]
    tokenized = {"input_ids": rows, "labels": rows[::-1]}
    config = SimpleNamespace(pad_token_id=0, decoder_start_token_id=1, vocab_size=50)
    lengths = {}
    for multiple in (8, 4):
        args = run_translation.parse_args(["--output_dir", "x", "--train_file", "t", "--max_tokens_per_batch",
                                           "256", "--pad_to_multiple_of", str(multiple)])
        _, batches = make_train_batches(tokenized, config, args)
        lengths[multiple] = {inputs["input_ids"].shape[1] for inputs, _ in batches.batches}
        assert all(length % multiple == 0 for length in lengths[multiple])
    assert any(length % 8 for length in lengths[4])  # the flag reaches the collator
    assert run_translation.parse_args(["--output_dir", "x", "--train_file", "t"]).pad_to_multiple_of == 8


@pytest.mark.slow
def test_pack_length_packs_the_training_batches(run_translation, data_dir, tmp_path, capsys):
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    rows = [list(rng.integers(3, 50, size=int(n))) for n in rng.integers(1, 30, size=200)]
    tokenized = {"input_ids": rows, "labels": rows[::-1]}
    config = SimpleNamespace(pad_token_id=0, decoder_start_token_id=1, vocab_size=50)
    args = run_translation.parse_args(["--output_dir", "x", "--train_file", "t", "--max_tokens_per_batch", "256",
                                       "--pack_length", "32", "--max_source_length", "32", "--max_target_length",
                                       "32"])
    _, batches = make_train_batches(tokenized, config, args)
    assert {inputs["input_ids"].shape for inputs, _ in batches.batches} == {(8, 32)}  # 256 // 32 rows of 32
    real = sum(int((labels != -100).sum()) for _, labels in batches.batches)
    assert real == sum(map(len, rows))  # every target token once
    args.pack_length = None
    _, bucketed = make_train_batches(tokenized, config, args)
    computed = [sum(labels.size for _, labels in b.batches) for b in (batches, bucketed)]
    assert real / computed[0] > 0.85 and computed[0] < computed[1], computed  # fewer padded tokens than buckets
    with pytest.raises(SystemExit):
        run_translation.parse_args(["--output_dir", "x", "--train_file", "t", "--pack_length", "32"])
    assert "every pair must fit a row" in capsys.readouterr().err
    # and a run trains on them
    results = run_translation.main(_argv(data_dir, tmp_path / "packed", 1) + ["--pack_length", "24",
                                                                         "--max_source_length", "24"])
    assert 0.0 <= results["test"]["bleu"] <= 100.0


def test_learning_rate_schedules(run_translation):
    """Both decays warm up linearly to the same peak; the paper's follows equation 3 after it, linear reaches 0
    at the last step of the run."""
    def schedule(*flags):
        args = run_translation.parse_args(["--output_dir", "x", "--train_file", "t", "--warmup_steps", "100",
                                           *flags])
        return make_learning_rate(args, d_model=64, total_steps=1000)

    def at(rate, step):  # `step` counts from 1, Keras' iterations from 0
        return float(rate(step - 1))

    paper = schedule()
    assert at(paper, 100) == pytest.approx(64 ** -0.5 * 100 ** -0.5, rel=1e-6)
    assert at(paper, 400) == pytest.approx(64 ** -0.5 * 400 ** -0.5, rel=1e-6)
    assert at(paper, 50) == pytest.approx(at(paper, 100) / 2, rel=1e-6)
    peaked = schedule("--learning_rate", "1e-3")
    assert at(peaked, 100) == pytest.approx(1e-3, rel=1e-6)
    assert at(peaked, 400) == pytest.approx(5e-4, rel=1e-6)  # sqrt(100 / 400)
    linear = schedule("--learning_rate", "1e-3", "--lr_decay", "linear")
    assert at(linear, 50) == pytest.approx(5e-4, rel=1e-6)
    assert at(linear, 100) == pytest.approx(1e-3, rel=1e-6)
    assert at(linear, 550) == pytest.approx(5e-4, rel=1e-6)
    assert at(linear, 1000) == pytest.approx(0.0, abs=1e-12)
    assert at(linear, 1200) == 0.0


@pytest.mark.slow
def test_max_train_minutes_stops_the_run_and_decay_within_budget_ends_the_decay(run_translation, data_dir,
                                                                                tmp_path, monkeypatch, capsys):
    import re

    from vanilla_transformer import time_budget

    clock = iter(range(0, 100_000, 3))  # every step takes 3 s: 20 fit the 60 s budget
    monkeypatch.setattr(time_budget, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    argv = _argv(data_dir, tmp_path / "budget", 5)[:-4] + ["--max_train_minutes", "1", "--lr_decay", "linear",
                                                           "--learning_rate", "1e-3", "--decay_within_budget"]
    test_flag = argv.index("--test_file")
    del argv[test_flag:test_flag + 2]  # the budget is tested here: no test set, no BLEU during training, greedy
    argv[argv.index("--num_beams") + 1] = "1"
    argv += ["--eval_every", "10"]
    results = run_translation.main(argv)
    out = capsys.readouterr().out
    batches = int(re.search(r"in (\d+) batches", out).group(1))
    assert 20 < 5 * batches  # the planned 5 epochs do not fit
    assert results["epochs_completed"] == -(-20 // batches)  # the last one cut at the step that fills the budget
    assert ("stopping after step 20: another step would pass the 1 min training budget (20 steps, 60 s); "
            "the learning rate's decay ended at step 20") in out
    # without the flag the budget stops the run the same way and the decay keeps its end (epoch 5)
    argv.remove("--decay_within_budget")
    results = run_translation.main(argv + ["--output_dir", str(tmp_path / "budget-fixed-decay")])
    out = capsys.readouterr().out
    assert results["epochs_completed"] == -(-20 // batches) and "decay ended" not in out
    assert "stopping after step 20" in out
    with pytest.raises(SystemExit):  # the flag moves a linear decay's end: without one it would do nothing
        run_translation.parse_args(["--output_dir", "x", "--train_file", "t", "--max_train_minutes", "1",
                                    "--decay_within_budget"])
    assert "give both --lr_decay linear and --max_train_minutes" in capsys.readouterr().err


def test_search_averages_keeps_the_best_scored_average(tmp_path):
    """Each k averages the last k checkpoints; the model ends holding the average that scored best."""
    from vanilla_transformer import TransformerConfig
    from vanilla_transformer.weight_files import state_dict, write_weights

    model = TransformerForSeq2SeqLM(TransformerConfig(vocab_size=40, d_model=32, num_heads=4, d_ff=64,
                                                      num_encoder_layers=1, num_decoder_layers=1)).build_weights()
    variables = model.named_variables()
    for epoch in (1, 2, 3):
        for variable in variables.values():
            variable.assign(np.full(variable.shape, float(epoch), dtype=variable.dtype))
        (tmp_path / f"epoch-{epoch:03d}").mkdir()
        write_weights(state_dict(model), tmp_path / f"epoch-{epoch:03d}")
    probe = next(iter(variables.values()))

    def score(averaged):  # peaks at the average of the last 2 epochs (2.5)
        return -abs(float(np.asarray(probe.numpy()).flat[0]) - 2.5)

    best_k, averages, scores = search_averages(model, tmp_path, [2, 1, 3, 5], score)
    assert averages == {2: ["epoch-002", "epoch-003"], 1: ["epoch-003"],
                        3: ["epoch-001", "epoch-002", "epoch-003"]}  # k 5 is k 3 again: skipped
    assert scores == {2: 0.0, 1: -0.5, 3: -0.5} and best_k == 2
    for variable in variables.values():  # the model holds the winning average, not the last one tried
        np.testing.assert_allclose(np.asarray(variable.numpy()), 2.5)

    best_k, _, scores = search_averages(model, tmp_path, [1, 3])  # no score: the last listed
    assert (best_k, scores) == (3, {})
    np.testing.assert_allclose(np.asarray(probe.numpy()), 2.0)


def test_split_punctuation_flag_reaches_the_tokenizer(run_translation):
    train = {"source": ["A dog runs down the street.", "Two men, one dog."] * 10,
             "target": ["Ein Hund rennt die Straße entlang.", "Zwei Männer, ein Hund."] * 10}
    for flags, last_token in (([], "▁street."), (["--split_punctuation"], ".")):
        args = run_translation.parse_args(["--output_dir", "x", "--train_file", "t", "--vocab_size", "200",
                                           "--d_model", "32", "--num_heads", "4", "--d_ff", "64", "--num_layers",
                                           "1", *flags])
        _, tokenizer = build_model_and_tokenizer(args, train)
        assert tokenizer.tokenize("the street.")[-1] == last_token


@pytest.mark.slow
def test_bpe_dropout_trains_on_several_segmentations(run_translation, data_dir, tmp_path, capsys):
    argv = _argv(data_dir, tmp_path / "bpe-dropout", 2) + ["--pack_length", "24", "--max_source_length", "24",
                                                           "--bpe_dropout", "0.3", "--bpe_dropout_views", "3"]
    args = run_translation.parse_args(argv)
    splits = load_data(args)
    model, tokenizer = build_model_and_tokenizer(args, splits["train"])
    tokenized = tokenize(splits["train"], tokenizer, args)
    _, data = make_train_batches(tokenized, model.config, args, tokenizer=tokenizer)
    assert len(data.views) == 3 and {len(view) for view in data.views} == {len(data)}
    targets, plain_tokens = Counter(splits["train"]["target"]), sum(map(len, tokenized["labels"]))
    for view in data.views:  # the same targets (but those of a cut batch) in more pieces than plain BPE's
        decoded = Counter()
        for _, labels in view:
            for row in labels.tolist():  # each target of the row ends with </s>
                ends = [k for k, i in enumerate(row) if i == tokenizer.eos_token_id]
                decoded.update(tokenizer.decode(row[a + 1:b]) for a, b in zip([-1] + ends, ends))
        assert not decoded - targets and sum(decoded.values()) > 0.9 * sum(targets.values())
        assert sum(int((labels != -100).sum()) for _, labels in view) > 1.1 * plain_tokens
    first_rows = [view[0][1][0].tolist() for view in data.views]
    assert first_rows[0] != first_rows[1] != first_rows[2]
    results = run_translation.main(argv)
    assert results["epochs_completed"] == 2 and 0.0 <= results["test"]["bleu"] <= 100.0
    card = (tmp_path / "bpe-dropout" / "model" / "README.md").read_text()
    assert "bpe_dropout" in card and "0.3" in card  # the model card records the recipe
    assert "BPE-dropout 0.3: 3 segmentations of the training pairs" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_translation.parse_args(_argv(data_dir, tmp_path / "x", 1) + ["--bpe_dropout_views", "3"])
    assert "give --bpe_dropout too" in capsys.readouterr().err


class ConsensusModel:
    """Stands for a trained model: beam search's best adds a wrong word to the reference, which the rest of
    its n-best (and every sample) give exactly, so MBR finds the reference where beam search does not; with
    ``agreeing=False`` the rest of the n-best is one unrelated word."""

    def __init__(self, sources, references, agreeing=True):
        self.reference = dict(zip(sources, references))
        self.agreeing, self.calls = agreeing, []

    def translate(self, texts, tokenizer, batch_size=64, num_return_sequences=1, do_sample=False, **kwargs):
        self.calls.append(dict(kwargs, num_return_sequences=num_return_sequences, do_sample=do_sample))
        n_best = lambda text: [self.reference[text] + " wrong",  # noqa: E731
                               *[self.reference[text] if self.agreeing else "nichts"] * 3]
        rows = [[self.reference[t]] * num_return_sequences if do_sample else n_best(t)[:num_return_sequences]
                for t in texts]
        return [text for row in rows for text in row]


@pytest.mark.parametrize("flags, refusal", [(["--mbr_candidates", "1"], "at least 2"),
                                            (["--mbr_samples", "4"], "give --mbr_candidates too")])
def test_mbr_flags_refuse_what_would_do_nothing(run_translation, flags, refusal, capsys):
    with pytest.raises(SystemExit):
        run_translation.parse_args(["--output_dir", "x", "--train_file", "t", *flags])
    assert refusal in capsys.readouterr().err


@pytest.mark.slow
def test_mbr_decoding_is_chosen_on_validation_and_used_for_test(run_translation):
    sources = [f"source {i}" for i in range(6)]
    references = [f"ein Hund läuft über die Wiese Nummer {i}" for i in range(6)]
    splits = {name: {"source": sources, "target": references} for name in ("validation", "test")}
    args = run_translation.parse_args(["--output_dir", "x", "--train_file", "t", "--mbr_candidates", "4",
                                       "--mbr_samples", "2", "--length_penalty_candidates", "1.0", "1.5"])
    model, results = ConsensusModel(sources, references), {}
    evaluate_final(model, None, splits, args, results)
    assert results["length_penalty_search"]["1.0"] < 100.0 and results["length_penalty"] == 1.0  # first on a tie
    assert results["mbr_search"]["mbr"] == 100.0 > results["mbr_search"]["beam"]
    assert results["decoding"] == "MBR over the beam's 4-best, 2 samples"
    assert results["validation"]["bleu"] == results["test"]["bleu"] == 100.0
    n_best_calls = [call for call in model.calls if call["num_return_sequences"] == 4 and not call["do_sample"]]
    assert len(n_best_calls) == 2 and all(call["num_beams"] == 4 for call in n_best_calls)  # validation, then test

    args.mbr_samples = 0  # the n-best's majority agrees on a wrong word: MBR scores lower, so beam search stays
    results = {}
    evaluate_final(ConsensusModel(sources, references, agreeing=False), None, splits, args, results)
    assert results["mbr_search"]["mbr"] < results["mbr_search"]["beam"] and results["decoding"] == "beam 4"
    assert results["test"]["bleu"] == results["validation"]["bleu"] < 100.0
