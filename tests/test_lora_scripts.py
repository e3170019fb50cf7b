"""Fine-tuning flags of the example scripts: LoRA, gradient accumulation (the same update as one large batch,
the schedule counting updates), early stopping; and a LoRA translator pushed to and pulled from the Hub."""

import importlib.util
import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from huggingface_hub import constants

from vanilla_transformer import (TransformerConfig, TransformerEncoderModel, TransformerForSeq2SeqLM,
                                 TransformerForSequenceClassification)
from vanilla_transformer.gradient_accumulation import accumulate_gradients
from vanilla_transformer.optimization import language_model_optimizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def classifier(seed=0):
    keras.utils.set_random_seed(seed)
    config = TransformerConfig(architecture="encoder", vocab_size=30, d_model=16, num_heads=2, d_ff=32,
                               num_encoder_layers=1, num_decoder_layers=0, max_position_embeddings=16,
                               dropout=0.0, num_labels=2, add_pooler=True)
    return TransformerForSequenceClassification(config).build_weights()


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("trained", ["all", "lora"])
def test_accumulated_micro_batches_make_the_update_of_one_large_batch(trained):
    """Adam (clipped, on a warm-up/decay schedule) after 2 x 4 micro-batches of 2 rows = after 2 batches of 8.

    ``all`` trains the token embedding too: on TensorFlow its gradient is an IndexedSlices in a plain step and
    dense once accumulated; the optimizer makes both dense (DenseSparseGradients), so the two runs agree."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 30, size=(16, 6)).astype("int32")  # 96 lookups of 27 tokens: rows repeat in a batch
    labels = rng.integers(0, 2, size=16).astype("int32")
    final = []
    for batch_size, steps in ((8, 1), (2, 4)):
        model = classifier()
        if trained == "lora":
            model.enable_lora(2, target_modules="q,v,ffn", verbose=False)
        optimizer = language_model_optimizer(1e-2, warmup_steps=2, decay_steps=3)  # updates 1, 2 of the schedule
        model.compile(optimizer=accumulate_gradients(optimizer, steps), jit_compile=False)
        model.fit(ids, labels, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2  # updates, not micro-batches
        final.append({name: np.array(v.numpy()) for name, v in model.named_variables().items()})
    for name, value in final[0].items():
        np.testing.assert_allclose(final[1][name], value, atol=1e-4, err_msg=name)
    start = classifier().named_variables()
    changed = {name for name, value in final[0].items()
               if name in start and not np.allclose(value, start[name].numpy())}
    assert changed and (trained == "lora" or any("shared" in name for name in changed)), sorted(changed)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="IndexedSlices are TensorFlow's")
def test_a_sparse_gradient_with_repeated_rows_makes_the_dense_update():
    """An embedding's IndexedSlices (rows 1 and 3 looked up twice) gives the Adam + clipnorm update of its dense
    sum, as on the other backends and after accumulation."""
    import tensorflow as tf

    values = np.arange(1, 13, dtype="float32").reshape(6, 2) / 4
    indices = np.array([1, 3, 1, 0, 3, 2])
    sparse = tf.IndexedSlices(tf.constant(values), tf.constant(indices), tf.constant([5, 2]))
    dense = np.zeros((5, 2), "float32")
    np.add.at(dense, indices, values)
    tables = []
    for gradient in (sparse, tf.constant(dense)):
        table = keras.Variable(np.ones((5, 2), "float32"))
        optimizer = accumulate_gradients(keras.optimizers.Adam(0.1, clipnorm=1.0), 1)
        for _ in range(2):
            optimizer.apply([gradient], [table])
        tables.append(table.numpy())
    np.testing.assert_allclose(tables[0], tables[1], rtol=1e-6)
    assert not np.allclose(tables[1][1], 1.0) and np.allclose(tables[1][4], 1.0)  # row 4 was not looked up


@pytest.fixture()
def labelled_files(tmp_path):
    rng = np.random.default_rng(0)
    words = ["good", "fine", "great", "bad", "poor", "awful"]
    rows = []
    for _ in range(48):
        label = int(rng.integers(0, 2))
        picked = rng.choice(words[:3] if label else words[3:], size=3)
        rows.append({"text": " ".join(picked), "label": label})
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:40]) + "\n")
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows[40:]) + "\n")
    return tmp_path


@pytest.mark.slow
def test_classification_with_lora_accumulation_and_early_stopping(labelled_files, tmp_path):
    run_classification = load_script("run_classification")
    _common = load_script("_common")
    tokenizer = _common.new_tokenizer(["good fine great bad poor awful"] * 4, vocab_size=40)
    base = TransformerConfig(architecture="encoder", vocab_size=len(tokenizer), d_model=16, num_heads=2, d_ff=32,
                             num_encoder_layers=1, num_decoder_layers=0, max_position_embeddings=16,
                             pad_token_id=tokenizer.pad_token_id)
    keras.utils.set_random_seed(0)
    base_dir = TransformerEncoderModel(base).save_pretrained(tmp_path / "base", tokenizer=tokenizer)  # a "pretrained" body
    argv = ["--train_file", str(labelled_files / "train.jsonl"), "--validation_file", str(labelled_files / "val.jsonl"),
            "--model_name_or_path", str(base_dir), "--max_seq_length", "16", "--output_dir", str(tmp_path / "out"),
            "--num_train_epochs", "6", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
            "--no-jit_compile", "--lora_rank", "2", "--lora_target_modules", "q,v,ffn",
            "--gradient_accumulation_steps", "2", "--early_stopping_patience", "1"]
    results = run_classification.main(argv)
    assert results["lora"]["r"] == 2 and results["lora"]["target_modules"] == ["q_proj", "v_proj", "fc1", "fc2"]
    assert results["lora"]["trainable_parameters"] < results["lora"]["all_parameters"] / 3
    assert results["gradient_accumulation_steps"] == 2
    stopping = results["early_stopping"]
    assert stopping["monitor"] == "val_accuracy" and 1 <= stopping["best_epoch"] <= stopping["epochs_run"] <= 6
    assert stopping["stopped_early"] == (stopping["epochs_run"] < 6)
    assert abs(results["eval_accuracy"] - stopping["best_value"]) < 1e-6  # the best epoch's weights were kept
    assert len(results["epoch_seconds"]) == stopping["epochs_run"]
    saved = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert saved["early_stopping"] == stopping
    assert (tmp_path / "out" / "adapter_config.json").is_file()


def test_lora_flags_without_a_rank_are_refused(capsys):
    _common = load_script("_common")
    with pytest.raises(SystemExit):
        _common.parse_args(_common.build_parser("t", "gpt"), ["--train_file", "t.txt", "--output_dir", "o",
                                                               "--lora_alpha", "16"])
    assert "--lora_alpha need --lora_rank" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _common.parse_args(_common.build_parser("t", "gpt"), ["--train_file", "t.txt", "--output_dir", "o",
                                                               "--lora_rank", "4"])
    assert "--lora_rank adapts a pretrained model; 'gpt' is a preset" in capsys.readouterr().err


@pytest.fixture()
def hub(tmp_path):
    from hub_server import HubServer

    server = HubServer(tmp_path / "store", tokens={"hf_test_token": "alice"}).start()
    patch = pytest.MonkeyPatch()
    patch.setattr(constants, "ENDPOINT", server.url)
    patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    patch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    patch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    patch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-login" / "stored_tokens"))
    patch.setattr(constants, "HF_HUB_OFFLINE", False)
    patch.setenv("HF_TOKEN", "hf_test_token")
    yield server
    patch.undo()
    server.stop()


@pytest.mark.slow
def test_lora_fine_tuning_of_a_translator_goes_through_the_hub(write_number_words, hub, tmp_path):
    """run_translation.py --model_name_or_path <a translator> --lora_rank ...: the adapter is what is saved and
    pushed, its card says so and names the base, and from_pretrained of the Hub repo gives base + adapter."""
    from vanilla_transformer.tokenization import train_bpe_tokenizer

    run_translation = load_script("run_translation")
    (tmp_path / "pairs").mkdir()
    data = write_number_words(tmp_path / "pairs", num_train=96, num_val=4, seed=1)
    texts = [line for name in ("train.en", "train.de") for line in (data / name).read_text().splitlines()]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=120)
    keras.utils.set_random_seed(0)
    config = TransformerConfig(vocab_size=len(tokenizer), d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                               decoder_start_token_id=tokenizer.bos_token_id)
    base = TransformerForSeq2SeqLM(config).save_pretrained(tmp_path / "base", tokenizer=tokenizer)
    results = run_translation.main([
        "--train_file", str(data / "train"), "--verbose", "0", "--pad_to_multiple_of", "16",
        "--output_dir", str(tmp_path / "tuned"), "--model_name_or_path", str(base), "--num_train_epochs", "1",
        "--per_device_train_batch_size", "48", "--warmup_steps", "2", "--learning_rate", "1e-2", "--num_beams", "1",
        "--max_target_length", "8", "--lora_rank", "4", "--lora_target_modules", "q,v,o",
        "--push_to_hub", "--hub_model_id", "alice/number-words-lora"])
    assert results["lora"]["trainable_parameters"] == 3 * 3 * 4 * (32 + 32)  # 3 attention blocks, q/v/o
    pulled = TransformerForSeq2SeqLM.from_pretrained("alice/number-words-lora")
    local = TransformerForSeq2SeqLM.from_pretrained(tmp_path / "tuned" / "model")
    assert pulled.lora_config.base_model_name_or_path == str(base) and pulled.lora_config.r == 4
    ids = np.array([[5, 6, 7, 2]], "int32")
    inputs = {"input_ids": ids, "decoder_input_ids": ids}
    np.testing.assert_allclose(np.asarray(pulled(inputs)), np.asarray(local(inputs)), atol=1e-6)
    plain = TransformerForSeq2SeqLM.from_pretrained(base)
    assert not np.allclose(np.asarray(pulled(inputs)), np.asarray(plain(inputs)), atol=1e-4)
    from vanilla_transformer.hub_push import push_folder_to_hub  # `vanilla-transformer push` of the adapter folder

    push_folder_to_hub(tmp_path / "tuned" / "model", "alice/pushed-folder")
    np.testing.assert_allclose(np.asarray(TransformerForSeq2SeqLM.from_pretrained("alice/pushed-folder")(inputs)),
                               np.asarray(local(inputs)), atol=1e-6)
    card = (tmp_path / "tuned" / "model" / "README.md").read_text()
    assert "A LoRA adapter (rank 4" in card and str(base) in card and "- adapter" in card


def test_the_train_command_refuses_fine_tuning_flags_that_cannot_act(tmp_path):
    from vanilla_transformer.cli import build_parser

    def refusal(*flags):
        args = build_parser().parse_args(["train", "--output-dir", str(tmp_path / "o"), *flags])
        with pytest.raises(SystemExit) as stopped:
            args.func(args)
        return str(stopped.value)

    assert refusal("--lora-alpha", "8") == "error: --lora-alpha need --lora-rank"
    assert "give --base-model" in refusal("--lora-rank", "4")
    assert "--d-model size a new model" in refusal("--base-model", "b", "--d-model", "64")
    assert "at least 1" in refusal("--gradient-accumulation-steps", "0")
    assert "--early-stopping-patience must be at least 1" in refusal("--early-stopping-patience", "0")
