"""The world misbehaving around a correct program: full disks, read-only folders, concurrent callers."""

import errno
import os
import subprocess
import sys
import textwrap
import threading

import keras
import numpy as np
import pytest

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
from vanilla_transformer import atomic_directories, weight_files
from vanilla_transformer.atomic_directories import CheckpointWriteError, exchange_paths
from vanilla_transformer.weight_files import read_weights
from vanilla_transformer.training import BackupError, ResumableBackup

CONFIG = dict(vocab_size=40, d_model=16, num_heads=2, d_ff=32, num_encoder_layers=1, num_decoder_layers=1,
              dropout=0.0, max_position_embeddings=32)
SRC = np.array([[5, 6, 7, 8, 9, 2], [10, 11, 2, 0, 0, 0], [12, 13, 14, 15, 2, 0]], dtype="int32")


def model_with_seed(seed):
    keras.utils.set_random_seed(seed)
    return TransformerForSeq2SeqLM(TransformerConfig(**CONFIG)).build_weights()


def assert_same_arrays(first, second):
    """Two name -> array mappings (``read_weights`` / ``state_dict``) hold the same names and values."""
    assert first.keys() == second.keys()
    assert [name for name in first if not np.array_equal(first[name], second[name])] == []


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "model.safetensors")


@pytest.mark.parametrize("failing_write", ["safetensors.numpy:save_file", "vanilla_transformer:TransformerConfig",
                                           "huggingface_hub:ModelCard"])
def test_a_full_disk_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch, failing_write):
    first, second = model_with_seed(1), model_with_seed(2)
    first.save_pretrained(tmp_path / "model")
    before = read_weights(tmp_path / "model")
    module, name = failing_write.split(":")
    owner = __import__(module, fromlist=[name])
    if name == "save_file":  # the weights
        monkeypatch.setattr(owner, name, no_space)
    else:  # config.json, or the model card
        monkeypatch.setattr(getattr(owner, name), "save_pretrained" if name == "TransformerConfig" else "save",
                            no_space)
    with pytest.raises(CheckpointWriteError, match="No space left on device.*is as it was before") as caught:
        second.save_pretrained(tmp_path / "model")
    assert caught.value.errno == errno.ENOSPC and str(tmp_path / "model") in str(caught.value)
    monkeypatch.undo()
    after = read_weights(tmp_path / "model")
    assert_same_arrays(before, after)
    assert sorted(os.listdir(tmp_path)) == [".model.lock", "model"]  # no staging folder left behind


def test_a_read_only_folder_gives_a_clear_error(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path))

    monkeypatch.setattr("tempfile.mkdtemp", read_only)
    with pytest.raises(CheckpointWriteError, match=f"cannot write to {tmp_path}: Permission denied"):
        model_with_seed(1).save_pretrained(tmp_path / "model")
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_a_backup_that_cannot_be_written_stops_training(tmp_path, monkeypatch):
    from vanilla_transformer.batching import EpochShuffledBatches, seq2seq_batches
    from vanilla_transformer.data_collators import Seq2SeqCollator
    from vanilla_transformer.training import ResumableBackup, fit_resumable

    model = model_with_seed(3)
    model.compile(jit_compile=False)
    targets = [list(row[row != 0][::-1]) for row in SRC] * 4
    batches = EpochShuffledBatches(seq2seq_batches([list(r[r != 0]) for r in SRC] * 4, targets,
                                                   Seq2SeqCollator(0, 1, 40), batch_size=3))
    saves = []
    real_save_weights = model.save_weights

    def save_weights_then_fill_the_disk(path, *args, **kwargs):
        saves.append(path)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_save_weights(path, *args, **kwargs)

    monkeypatch.setattr(model, "save_weights", save_weights_then_fill_the_disk)
    with pytest.raises(BackupError, match="training stops rather than go on without a backup"):
        fit_resumable(model, batches, epochs=3, backup_dir=tmp_path / "backup", save_freq=2, verbose=0)
    assert len(saves) == 2
    assert ResumableBackup(tmp_path / "backup").restore(model) == (0, 2)  # the first backup is intact
    assert sorted(os.listdir(tmp_path / "backup")) == [".current.lock", "current"]  # no half-written staging folder



def interrupt_the_second_rename(monkeypatch):
    """The two-rename swap (no atomic exchange), interrupted after its first rename retired the old folder."""
    monkeypatch.setattr(atomic_directories, "exchange_paths", lambda first, second: False)
    real_replace, renames = os.replace, []

    def replace(source, destination):
        renames.append(destination)
        if len(renames) == 2:
            raise KeyboardInterrupt("killed between the two renames")
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)


def test_a_save_interrupted_between_its_two_renames_loses_nothing(tmp_path, monkeypatch):
    model_with_seed(1).save_pretrained(tmp_path / "model")
    before = read_weights(tmp_path / "model")
    interrupt_the_second_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        model_with_seed(2).save_pretrained(tmp_path / "model")
    monkeypatch.undo()
    assert not (tmp_path / "model").exists() and any(p.startswith(".model.old-") for p in os.listdir(tmp_path))
    loaded = TransformerForSeq2SeqLM.from_pretrained(tmp_path / "model")  # puts the previous version back
    after = weight_files.state_dict(loaded)
    assert_same_arrays(before, after)
    assert sorted(os.listdir(tmp_path)) == [".model.lock", "model"]


def test_a_backup_interrupted_between_its_two_renames_restores_the_previous_one(tmp_path, monkeypatch):
    model = model_with_seed(3)
    model.compile(jit_compile=False)
    backup = ResumableBackup(tmp_path / "backup")
    backup.set_model(model)
    backup.save(epoch=1, batches_done=2)
    interrupt_the_second_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        backup.save(epoch=1, batches_done=4)
    monkeypatch.undo()
    assert not (tmp_path / "backup" / "current").exists()
    assert ResumableBackup(tmp_path / "backup").restore(model) == (1, 2)


def test_a_save_over_a_folder_is_one_atomic_exchange_where_the_system_has_it(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    if not exchange_paths(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this system or filesystem cannot exchange two paths atomically (the two-rename swap is tested)")
    model_with_seed(1).save_pretrained(tmp_path / "model")
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda *paths: renames.append(paths) or real_replace(*paths))
    second = model_with_seed(2)
    second.save_pretrained(tmp_path / "model")
    assert renames == []  # no moment without a complete "model": the folders were exchanged in one step
    assert_same_arrays(read_weights(tmp_path / "model"), weight_files.state_dict(second))
    assert sorted(os.listdir(tmp_path)) == [".model.lock", "a", "b", "model"]  # the old folder deleted

@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3, length_penalty=0.8),
                                    dict(do_sample=True, top_k=5, seed=4)])
def test_four_threads_generating_at_once_get_the_serial_results(kwargs):
    model = model_with_seed(5)
    calls = [dict(kwargs, max_new_tokens=n) for n in (3, 5, 7, 4)]
    serial = [model.generate(SRC, **call) for call in calls]
    results = [None] * len(calls)

    def work(i):
        results[i] = model.generate(SRC, **calls[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, expected in zip(results, serial):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_two_processes_saving_into_one_folder_leave_one_complete_checkpoint(tmp_path):
    script = textwrap.dedent(f"""
        import sys, keras
        from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
        keras.utils.set_random_seed(int(sys.argv[1]))
        model = TransformerForSeq2SeqLM(TransformerConfig(**{CONFIG!r})).build_weights()
        model.save_pretrained(sys.argv[2] + "/alone-" + sys.argv[1])
        for _ in range(15):
            model.save_pretrained(sys.argv[2] + "/shared")
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    writers = [subprocess.Popen([sys.executable, "-c", script, str(seed), str(tmp_path)], env=env,
                                stderr=subprocess.PIPE, text=True) for seed in (11, 12)]
    for writer in writers:
        assert writer.wait(timeout=300) == 0, writer.stderr.read()[-2000:]
    shared = read_weights(tmp_path / "shared")
    matches = [seed for seed in (11, 12) if all(
        np.array_equal(shared[k], v) for k, v in read_weights(tmp_path / f"alone-{seed}").items())]
    assert len(matches) == 1  # entirely one writer's weights, never a mix
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".shared.")) == [".shared.lock"]
