"""Reliability: bad input, corrupt files, interrupted saves and runs, and property-based (hypothesis) checks."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vanilla_transformer import (
    TransformerConfig,
    TransformerForCausalLM,
    TransformerForSeq2SeqLM,
)
from vanilla_transformer import CheckpointError
from vanilla_transformer.training import StopOnNaN

IDS = np.array([[5, 6, 7, 2], [8, 9, 2, 0]], dtype="int32")


@pytest.fixture(scope="module")
def causal_lm():
    keras.utils.set_random_seed(5)
    config = TransformerConfig(architecture="decoder", vocab_size=40, d_model=32, num_heads=4, d_ff=64,
                               num_encoder_layers=0, num_decoder_layers=1, max_position_embeddings=32,
                               norm_first=True, final_layer_norm=True, bos_token_id=1, eos_token_id=2,
                               pad_token_id=0, decoder_start_token_id=None)
    return TransformerForCausalLM(config).build_weights()


# ------------------------------------------------------------------------------------------ bad input
BAD_CALLS = [
    (dict(input_ids=IDS - 6), ValueError, "input_ids holds ids outside"),
    (dict(input_ids=IDS + 100), ValueError, "input_ids holds ids outside"),
    (dict(input_ids=IDS.astype("float64")), TypeError, "input_ids must hold integer ids"),
    (dict(input_ids=np.array([["a", "b"]])), TypeError, "input_ids must hold integer ids"),
    (dict(input_ids=[[1, 2, 3], [4]]), ValueError, "ragged"),
    (dict(input_ids=np.ones((1, 33), "int32")), ValueError, "max_position_embeddings=32"),
    (dict(input_ids=IDS, attention_mask=np.ones((2, 5), "int32")), ValueError, "attention_mask has shape"),
    (dict(input_ids=IDS[0]), ValueError, "shape"),
    (dict(input_ids=IDS, token_type_ids=IDS), ValueError, "Unknown inputs"),
]


@pytest.mark.parametrize("inputs, error, message", BAD_CALLS)
def test_bad_model_calls_name_the_argument(causal_lm, inputs, error, message):
    with pytest.raises(error, match=message):
        causal_lm(inputs)


@pytest.mark.parametrize("inputs, error, message", BAD_CALLS[:7] + [
    (dict(input_ids=np.zeros((0, 4), "int32")), ValueError, "empty batch"),
    (dict(input_ids=np.zeros((2, 0), "int32")), ValueError, "zero length"),
])
def test_bad_generate_inputs_name_the_argument(causal_lm, inputs, error, message):
    with pytest.raises(error, match=message):
        causal_lm.generate(inputs.pop("input_ids"), max_new_tokens=2, **inputs)


def test_all_padding_rows_never_give_nan(causal_lm, tiny_seq2seq):
    mask = np.zeros_like(IDS)
    assert np.isfinite(np.asarray(causal_lm({"input_ids": IDS, "attention_mask": mask}))).all()
    logits = tiny_seq2seq({"input_ids": IDS, "attention_mask": mask, "decoder_input_ids": IDS,
                           "decoder_attention_mask": mask})
    assert np.isfinite(np.asarray(logits)).all()


# ------------------------------------------------------------------------------------------ configs
def test_unknown_config_keys_are_kept_and_warned_about(tmp_path, caplog):
    config = TransformerConfig(vocab_size=40, d_model=32, num_heads=4, d_ff=64)
    raw = config.to_dict()
    raw["rotary_fraction_from_v9"] = 0.5
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with caplog.at_level("WARNING"):
        loaded = TransformerConfig.from_pretrained(tmp_path)
    assert loaded.rotary_fraction_from_v9 == 0.5
    assert "rotary_fraction_from_v9" in caplog.text


# ------------------------------------------------------------------------------------------ files
@pytest.fixture
def saved(tiny_seq2seq, tmp_path):
    directory = tmp_path / "model"
    tiny_seq2seq.save_pretrained(directory)
    return directory


def test_truncated_weights_are_named(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors .*(corrupt|truncated)"):
        TransformerForSeq2SeqLM.from_pretrained(saved)


def test_corrupted_header_is_named(saved):
    path = saved / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        TransformerForSeq2SeqLM.from_pretrained(saved)


def test_wrong_dtype_tensor_is_named(saved):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(saved / "model.safetensors")
    tensors["encoder.layers.0.self_attn.q_proj.bias"] = tensors["encoder.layers.0.self_attn.q_proj.bias"].astype("int32")
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.0\.self_attn\.q_proj\.bias: int32"):
        TransformerForSeq2SeqLM.from_pretrained(saved)


def test_missing_config_is_named(saved):
    (saved / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        TransformerForSeq2SeqLM.from_pretrained(saved)


def test_invalid_config_json_is_named(saved):
    (saved / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="config.json"):
        TransformerForSeq2SeqLM.from_pretrained(saved)


def test_shard_index_pointing_at_a_missing_file(tiny_seq2seq, tmp_path):
    directory = tmp_path / "sharded"
    tiny_seq2seq.save_pretrained(directory, max_shard_size="20KB")
    shards = sorted(directory.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match=shards[-1].name):
        TransformerForSeq2SeqLM.from_pretrained(directory)


SAVE_LOOP = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras, numpy as np
    from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
    config = TransformerConfig(vocab_size=40, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=2,
                               num_decoder_layers=2)
    model = TransformerForSeq2SeqLM(config).build_weights()
    embeddings = model.named_variables()["shared.embeddings"]
    target = sys.argv[1]
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        embeddings.assign(np.full(embeddings.shape, float(i), "float32"))
        model.save_pretrained(target)
""")


@pytest.mark.slow
def test_save_pretrained_is_atomic_under_sigkill(tmp_path):
    """Kill a process that saves in a loop at random moments: the directory is always one complete save."""
    script = tmp_path / "save_loop.py"
    script.write_text(SAVE_LOOP)
    target = tmp_path / "ckpt"
    rng = np.random.default_rng(0)
    kills = 0
    process = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"ready"
    while not (target / "config.json").exists():
        time.sleep(0.05)
    for _ in range(3):
        time.sleep(float(rng.uniform(0.05, 0.4)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        model = TransformerForSeq2SeqLM.from_pretrained(target)  # complete and consistent
        values = np.unique(model.named_variables()["shared.embeddings"].numpy())
        assert len(values) == 1  # one save's weights, never a mix
        process = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE)
        assert process.stdout.readline().strip() == b"ready"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert kills == 3
    # the next save removes the staging folders the killed writers left (a retired copy is put back first)
    model.save_pretrained(target)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt")) == [".ckpt.lock"]


RESUMABLE_FIT = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras, numpy as np
    from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
    from vanilla_transformer.batching import EpochShuffledBatches, seq2seq_batches
    from vanilla_transformer.data_collators import Seq2SeqCollator
    from vanilla_transformer.training import fit_resumable
    out, kill_after = sys.argv[1], int(sys.argv[2])
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    config = TransformerConfig(vocab_size=12, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.1, max_position_embeddings=16)
    sources = [list(rng.integers(3, 12, size=4)) + [2] for _ in range(300)]
    targets = [list(reversed(s[:-1])) + [2] for s in sources]
    batches = EpochShuffledBatches(seq2seq_batches(sources, targets, Seq2SeqCollator(0, 1, 12), batch_size=20,
                                                   shuffle=False), seed=0)
    model = TransformerForSeq2SeqLM(config).build_weights()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))

    class Kill(keras.callbacks.Callback):
        seen = 0
        def on_train_batch_end(self, batch, logs=None):
            Kill.seen += 1
            if Kill.seen == kill_after:
                os.kill(os.getpid(), 9)

    fit_resumable(model, batches, 3, out + "/backup", save_freq=4, callbacks=[Kill()], verbose=0)
    np.save(out + "/final.npy", np.concatenate([v.numpy().ravel() for v in model.named_variables().values()]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed"))])
def test_fit_killed_with_sigkill_and_resumed_equals_an_uninterrupted_run(tmp_path, backend):
    """Bitwise on CPU: weights, Adam moments, dropout RNG state and the batch position are all restored."""
    script = tmp_path / "fit.py"
    script.write_text(RESUMABLE_FIT)
    env = dict(os.environ, KERAS_BACKEND=backend)
    run = lambda out, kill: subprocess.run([sys.executable, str(script), str(out), str(kill)], env=env,  # noqa: E731
                                           capture_output=True, text=True, timeout=600)
    (tmp_path / "plain").mkdir()
    (tmp_path / "killed").mkdir()
    # the uninterrupted run goes alongside the killed one (independent processes: two sequential runs instead of three)
    plain = subprocess.Popen([sys.executable, str(script), str(tmp_path / "plain"), "0"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        killed = run(tmp_path / "killed", 23)  # epoch 2 (15 batches an epoch), 8 batches in, backup at 4 and 8
        plain_stderr = plain.communicate(timeout=600)[1]
    finally:  # a timeout above must not leave the uninterrupted run behind
        plain.kill()
    assert plain.returncode == 0, plain_stderr[-2000:]
    assert killed.returncode == -signal.SIGKILL
    resumed = run(tmp_path / "killed", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "epoch 2, after 8 of its 15 batches" in resumed.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "killed" / "final.npy"), np.load(tmp_path / "plain" / "final.npy"))


def test_nan_loss_stops_training_with_a_clear_message(tiny_config, capsys):
    model = TransformerForSeq2SeqLM(tiny_config).build_weights()
    kernel = model.named_variables()["decoder.layers.0.feed_forward.fc1.kernel"]
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    model.compile(jit_compile=False)
    inputs = {"input_ids": IDS, "decoder_input_ids": IDS}
    stop = StopOnNaN()
    history = model.fit(inputs, IDS, epochs=3, batch_size=1, verbose=0, callbacks=[stop])
    assert stop.stopped_at == {"epoch": 0, "batch": 0, "loss": stop.stopped_at["loss"]}
    assert len(history.history["loss"]) == 1
    assert "the loss became nan" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ properties
_valid_configs = st.builds(
    lambda heads, head_dim, layers, arch, positions, norm_first, activation, vocab, eps, dropout: dict(
        architecture=arch, num_heads=heads, d_model=heads * head_dim, d_ff=2 * heads * head_dim,
        num_encoder_layers=layers if arch != "decoder" else 0, num_decoder_layers=layers if arch != "encoder" else 0,
        position_embedding=positions, norm_first=norm_first, activation=activation, vocab_size=vocab,
        layer_norm_eps=eps, dropout=dropout),
    st.integers(1, 16), st.integers(1, 64), st.integers(1, 24), st.sampled_from(["encoder-decoder", "encoder", "decoder"]),
    st.sampled_from(["sinusoidal", "learned"]), st.booleans(), st.sampled_from(["relu", "gelu", "gelu_new", "swish"]),
    st.integers(8, 100000), st.floats(1e-12, 1e-3), st.floats(0.0, 0.99))


@settings(max_examples=60, deadline=None)
@given(_valid_configs)
def test_config_json_round_trip_over_generated_configs(values):
    config = TransformerConfig(**values)
    again = TransformerConfig.from_dict(json.loads(config.to_json_string()))
    for key, value in values.items():
        assert getattr(again, key) == value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=60))
def test_tokenizer_round_trip_on_generated_text(bpe_tokenizer, text):
    import unicodedata

    normal = " ".join(unicodedata.normalize("NFC", text).split())
    ids = bpe_tokenizer(normal)["input_ids"]
    decoded = bpe_tokenizer.decode(ids, skip_special_tokens=True)
    if bpe_tokenizer.unk_token_id not in ids:
        assert decoded == normal


@pytest.fixture(scope="module")
def bpe_tokenizer():
    from vanilla_transformer.tokenization import train_bpe_tokenizer

    corpus = [chr(c) * 3 + " " + chr(c + 1) for c in range(32, 0x2FF)] + ["the cat sat on the mat"] * 10
    return train_bpe_tokenizer(corpus, vocab_size=1200, min_frequency=1)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(num_beams=st.sampled_from([1, 2]), do_sample=st.booleans(), max_new_tokens=st.integers(1, 6),
       top_k=st.sampled_from([0, 3]), top_p=st.sampled_from([1.0, 0.7]), temperature=st.sampled_from([0.5, 1.0]),
       repetition_penalty=st.sampled_from([1.0, 1.3]), no_repeat=st.sampled_from([0, 2]),
       eos=st.sampled_from([2, [2, 3]]), rows=st.integers(1, 3))
def test_generate_never_crashes_respects_max_new_tokens_and_stops_at_eos(
        tiny_seq2seq, num_beams, do_sample, max_new_tokens, top_k, top_p, temperature, repetition_penalty, no_repeat,
        eos, rows):
    out = tiny_seq2seq.generate(IDS.repeat(2, 0)[:rows], num_beams=num_beams, do_sample=do_sample,
                                max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p, temperature=temperature,
                                repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat,
                                eos_token_id=eos, pad_token_id=0, seed=1)
    assert out.shape[0] == rows and 2 <= out.shape[1] <= 1 + max_new_tokens
    stops = eos if isinstance(eos, list) else [eos]
    for row in out:
        ends = [t for t in range(1, len(row)) if row[t] in stops]
        if ends:
            assert (row[ends[0] + 1:] == 0).all()
