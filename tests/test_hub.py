"""The Hub end to end: push_to_hub / from_pretrained / load_tokenizer through the real ``huggingface_hub`` client,
against the local Hub-protocol server of ``tests/hub_server.py`` (no internet).

How the client is pointed at the server: ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and
``HF_HOME`` into ``huggingface_hub.constants`` when it is imported, which happened long before these tests run
(conftest imports the package). The in-process tests therefore patch those constants for the module
(``ENDPOINT``, ``HUGGINGFACE_CO_URL_TEMPLATE``, ``HF_HUB_CACHE``, ``HF_TOKEN_PATH``, ``HF_HUB_OFFLINE``) and set
``HF_TOKEN`` (read at call time): fast, and the same values the variables would have set.
``test_environment_variables_in_fresh_interpreters`` runs ``examples/push_to_hub.py`` and a loader in fresh
interpreters configured by the real variables (``HF_ENDPOINT``, ``HF_HOME``, ``HF_TOKEN``, ``HF_HUB_OFFLINE``);
it costs ~10 s per interpreter on 2 cores, so it runs only with ``VANILLA_TRANSFORMER_SUBPROCESS_TESTS=1``.
"""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from huggingface_hub import ModelCard, constants

from hub_server import HubServer
from vanilla_transformer import (
    AutoModel,
    TransformerConfig,
    TransformerEncoderModel,
    TransformerForCausalLM,
    TransformerForMaskedLM,
    TransformerForSeq2SeqLM,
    TransformerForSequenceClassification,
    hub,
    hub_push,
)
from vanilla_transformer.cli import main as cli_main
from vanilla_transformer import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
TOKEN, OTHER_TOKEN = "hf_alice_write", "hf_bob_write"
SMALL = dict(vocab_size=40, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1, num_decoder_layers=1,
             dropout=0.0, max_position_embeddings=32)
SENTENCES = ["one two three", "four five six", "seven eight nine ten", "eins zwei drei", "vier fuenf sechs",
             "sieben acht neun zehn", "twenty one", "einundzwanzig"] * 5


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def hub_server(tmp_path_factory):
    """The local Hub, with huggingface_hub pointed at it and an empty default cache (module scope)."""
    tmp = tmp_path_factory.mktemp("hub")
    server = HubServer(tmp / "store", tokens={TOKEN: "alice", OTHER_TOKEN: "bob"}).start()
    patch = pytest.MonkeyPatch()
    patch.setattr(constants, "ENDPOINT", server.url)
    patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    patch.setattr(constants, "HF_HUB_CACHE", str(tmp / "default-cache"))
    patch.setattr(constants, "HF_TOKEN_PATH", str(tmp / "no-login" / "token"))  # ignore any saved login
    patch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp / "no-login" / "stored_tokens"))
    patch.setattr(constants, "HF_HUB_OFFLINE", False)
    patch.setenv("HF_TOKEN", TOKEN)
    patch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    yield server
    patch.undo()
    server.stop()


@pytest.fixture(scope="module")
def tokenizer():
    from vanilla_transformer.tokenization import train_bpe_tokenizer

    return train_bpe_tokenizer(SENTENCES, vocab_size=40)


def make_model(cls=TransformerForSeq2SeqLM, seed=0, **overrides):
    """A tiny model with large random weights, so that logits and greedy generations differ between seeds."""
    architecture = {TransformerForSeq2SeqLM: "encoder-decoder", TransformerForCausalLM: "decoder"}.get(cls, "encoder")
    config = TransformerConfig(**{**SMALL, "architecture": architecture, **overrides})
    model = cls(config).build_weights()
    rng = np.random.default_rng(seed)
    for name, variable in model.named_variables().items():
        if "norm" not in name:  # LayerNorms stay the identity: random ones make one token win everywhere
            variable.assign(rng.normal(0.0, 0.5, variable.shape).astype(variable.dtype))
    return model


def as_numpy(outputs):
    """A model's outputs as numpy on any backend (on PyTorch a tensor that requires grad)."""
    return keras.ops.convert_to_numpy(outputs)


def weights(model):
    return {name: variable.numpy() for name, variable in model.named_variables().items()}


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


def seq2seq_inputs():
    return {"input_ids": np.array([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]], dtype="int32"),
            "attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype="int32"),
            "decoder_input_ids": np.array([[1, 11, 12], [1, 13, 14]], dtype="int32")}


def downloads(server, repo_id, since=0):
    """Files of ``repo_id`` fetched with GET since request number ``since``."""
    prefix = f"/{repo_id}/resolve/"
    return sorted({path.split("/", 5)[5] for method, path, status in server.requests[since:]
                   if method == "GET" and path.startswith(prefix) and status == 200})


# ------------------------------------------------------------------------------------------ push / load
@pytest.mark.backends
def test_push_then_load_identical_model_and_tokenizer(hub_server, tokenizer, tmp_path):
    model = make_model(seed=1)
    info = model.push_to_hub("alice/translator", tokenizer=tokenizer, commit_message="first model")
    assert re.fullmatch(r"[0-9a-f]{40}", info.oid)
    # one commit (after the repo's initial .gitattributes commit) holding everything save_pretrained writes
    assert hub_server.commits("alice/translator") == [info.oid, hub_server.commits("alice/translator")[1]]
    saved = hub.save_pretrained(model, tmp_path / "local", tokenizer=tokenizer)
    assert set(hub_server.files("alice/translator")) == {".gitattributes", *os.listdir(saved)}

    start = len(hub_server.requests)
    loaded = TransformerForSeq2SeqLM.from_pretrained("alice/translator", cache_dir=tmp_path / "cache")
    # only the files the model needs were downloaded (no README, no tokenizer)
    assert downloads(hub_server, "alice/translator", start) == ["config.json", "generation_config.json",
                                                                 "model.safetensors"]
    assert loaded.commit_hash == info.oid and loaded.name_or_path == "alice/translator"
    assert_same_weights(model, loaded)
    inputs = seq2seq_inputs()
    np.testing.assert_array_equal(as_numpy(model(inputs)), as_numpy(loaded(inputs)))
    expected = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=5)
    assert len({tuple(row) for row in expected[:, 1:].tolist()}) > 1  # a non-trivial generation
    np.testing.assert_array_equal(
        loaded.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=5), expected)

    start = len(hub_server.requests)  # cached: nothing is downloaded again, unless forced
    TransformerForSeq2SeqLM.from_pretrained("alice/translator", cache_dir=tmp_path / "cache")
    assert downloads(hub_server, "alice/translator", start) == []
    TransformerForSeq2SeqLM.from_pretrained("alice/translator", cache_dir=tmp_path / "cache", force_download=True)
    assert downloads(hub_server, "alice/translator", start) == ["config.json", "generation_config.json",
                                                                 "model.safetensors"]

    start = len(hub_server.requests)
    pulled = hub.load_tokenizer("alice/translator", cache_dir=tmp_path / "cache")
    assert "model.safetensors" not in downloads(hub_server, "alice/translator", start)
    assert pulled.get_vocab() == tokenizer.get_vocab()
    assert pulled(SENTENCES[:3])["input_ids"] == tokenizer(SENTENCES[:3])["input_ids"]

    # AutoModel picks the class from config.architectures; the README on the Hub is a valid model card
    auto = AutoModel.from_pretrained("alice/translator", cache_dir=tmp_path / "cache")
    assert type(auto) is TransformerForSeq2SeqLM
    card = ModelCard.load("alice/translator")
    assert card.data.library_name == "vanilla-transformer" and card.data.pipeline_tag == "translation"
    assert "# alice/translator" in card.text


@pytest.mark.backends
def test_second_push_and_revisions(hub_server, tmp_path):
    first, second = make_model(seed=2), make_model(seed=3)
    info1 = first.push_to_hub("alice/versions")
    info2 = second.push_to_hub("alice/versions", commit_message="better weights")
    assert info1.oid != info2.oid
    assert hub_server.commits("alice/versions")[:2] == [info2.oid, info1.oid]
    cache = tmp_path / "cache"
    assert_same_weights(TransformerForSeq2SeqLM.from_pretrained("alice/versions", cache_dir=cache), second)
    old = TransformerForSeq2SeqLM.from_pretrained("alice/versions", revision=info1.oid, cache_dir=cache)
    assert_same_weights(old, first)
    assert old.commit_hash == info1.oid

    # pushing the same weights again makes no new commit
    assert second.push_to_hub("alice/versions").oid == info2.oid
    # a branch, created on first use, and a pull request
    branch = first.push_to_hub("alice/versions", revision="experiment")
    assert hub_server.commits("alice/versions", "experiment")[0] == branch.oid
    assert hub_server.commits("alice/versions")[0] == info2.oid  # main unchanged
    assert_same_weights(TransformerForSeq2SeqLM.from_pretrained("alice/versions", revision="experiment",
                                                                cache_dir=cache), first)
    pr = make_model(seed=4).push_to_hub("alice/versions", create_pr=True)
    assert pr.pr_url is not None and pr.pr_revision == "refs/pr/1"
    assert hub_server.commits("alice/versions")[0] == info2.oid
    TransformerForSeq2SeqLM.from_pretrained("alice/versions", revision="refs/pr/1", cache_dir=cache)
    with pytest.raises(CheckpointError, match="has no revision 'v9'"):
        TransformerForSeq2SeqLM.from_pretrained("alice/versions", revision="v9", cache_dir=cache)


@pytest.mark.backends
def test_offline_loads_from_cache(hub_server, tokenizer, tmp_path, monkeypatch):
    model = make_model(TransformerForCausalLM, seed=5)
    model.push_to_hub("alice/offline", tokenizer=tokenizer, max_shard_size="10KB")
    cache = tmp_path / "cache"
    TransformerForCausalLM.from_pretrained("alice/offline", cache_dir=cache)
    assert hub.load_tokenizer("alice/offline", cache_dir=cache) is not None

    start = len(hub_server.requests)
    again = TransformerForCausalLM.from_pretrained("alice/offline", cache_dir=cache, local_files_only=True)
    assert_same_weights(again, model)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_same_weights(AutoModel.from_pretrained("alice/offline", cache_dir=cache), model)
    assert hub.load_tokenizer("alice/offline", cache_dir=cache).get_vocab() == tokenizer.get_vocab()
    assert hub_server.requests[start:] == []  # not one request
    with pytest.raises(CheckpointError, match=r"not in the local Hugging Face cache.*offline"):
        AutoModel.from_pretrained("alice/offline", cache_dir=tmp_path / "empty-cache")


def test_load_tokenizer_none_or_error(hub_server, tokenizer, tmp_path, monkeypatch):
    model = make_model(TransformerForCausalLM, seed=5)
    model.push_to_hub("alice/no-tokenizer")
    model.push_to_hub("alice/with-tokenizer", tokenizer=tokenizer)
    cache = tmp_path / "cache"
    assert hub.load_tokenizer("alice/no-tokenizer", cache_dir=cache) is None  # online: there is none
    TransformerForCausalLM.from_pretrained("alice/with-tokenizer", cache_dir=cache)  # the model only
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.load_tokenizer("alice/no-tokenizer", cache_dir=cache) is None  # the cache knows there is none
    with pytest.raises(CheckpointError, match="tokenizer files of Hub repo 'alice/with-tokenizer' are not in the"):
        hub.load_tokenizer("alice/with-tokenizer", cache_dir=cache)  # never downloaded: unknown, not "none"


def test_clear_errors_for_missing_private_and_weightless_repos(hub_server, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="Cannot read the Hub repo 'alice/does-not-exist'") as err:
        AutoModel.from_pretrained("alice/does-not-exist", cache_dir=cache)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback soup

    make_model(seed=6).push_to_hub("alice/secret", private=True)
    with monkeypatch.context() as patch:
        patch.delenv("HF_TOKEN")
        with pytest.raises(CheckpointError, match="private or gated and no token was sent"):
            AutoModel.from_pretrained("alice/secret", cache_dir=cache)
        # with the token it loads
        AutoModel.from_pretrained("alice/secret", cache_dir=cache, token=TOKEN)
    with pytest.raises(CheckpointError, match="has no access") as denied:
        AutoModel.from_pretrained("alice/secret", cache_dir=tmp_path / "other", token=OTHER_TOKEN)
    assert OTHER_TOKEN not in str(denied.value) and TOKEN not in str(denied.value)  # tokens never in errors

    config = make_model(seed=0).config
    config.architectures = ["TransformerForSeq2SeqLM"]
    hub_server.put_files("alice/no-weights", {"config.json": config.to_json_string().encode(), "README.md": b"hi"})
    with pytest.raises(CheckpointError, match=r"has no weights \(model.safetensors or model.safetensors.index.json"
                                              r"\); it has: .gitattributes, README.md, config.json"):
        AutoModel.from_pretrained("alice/no-weights", cache_dir=cache)
    with pytest.raises(CheckpointError, match="has no config.json"):
        AutoModel.from_pretrained(tmp_path, cache_dir=cache)  # an existing directory without a model
    with pytest.raises(CheckpointError, match="neither a local directory nor a valid Hub repo id"):
        AutoModel.from_pretrained(str(tmp_path / "missing" / "dir"), cache_dir=cache)


# ------------------------------------------------------------------------------------------ sharding
@pytest.mark.backends
def test_sharded_save_load_and_push(hub_server, tmp_path):
    model = make_model(TransformerForMaskedLM, seed=7)
    directory = model.save_pretrained(tmp_path / "sharded", max_shard_size="10KB")
    shards = sorted(p.name for p in directory.glob("model-*.safetensors"))
    assert len(shards) > 1 and all(re.fullmatch(rf"model-\d{{5}}-of-{len(shards):05d}\.safetensors", s)
                                   for s in shards)
    assert not (directory / "model.safetensors").exists()
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert set(index["weight_map"]) == set(model.named_variables())
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in weights(model).values())
    loaded = AutoModel.from_pretrained(directory)
    assert_same_weights(loaded, model)
    ids = {"input_ids": np.array([[3, 4, 5, 6]], dtype="int32")}
    np.testing.assert_array_equal(as_numpy(loaded(ids)), as_numpy(model(ids)))

    # push sharded, load from the Hub; then an unsharded push deletes the stale shards in its commit
    sharded = model.push_to_hub("alice/sharded", max_shard_size="10KB")
    assert set(shards) < set(hub_server.files("alice/sharded"))
    assert_same_weights(AutoModel.from_pretrained("alice/sharded", cache_dir=tmp_path / "c"), model)
    other = make_model(TransformerForMaskedLM, seed=8)
    other.push_to_hub("alice/sharded")
    assert sorted(f for f in hub_server.files("alice/sharded") if f.startswith("model")) == ["model.safetensors"]
    assert_same_weights(AutoModel.from_pretrained("alice/sharded", cache_dir=tmp_path / "c"), other)
    assert_same_weights(AutoModel.from_pretrained("alice/sharded", revision=sharded.oid,
                                                  cache_dir=tmp_path / "c"), model)

    (directory / shards[-1]).unlink()
    with pytest.raises(CheckpointError, match=f"lists the shard {shards[-1]}, which is missing"):
        AutoModel.from_pretrained(directory)


# ------------------------------------------------------------------------------------------ security
def _write_index(directory, weight_map):
    (Path(directory) / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))


def test_only_safetensors_are_read(hub_server, tmp_path):
    model = make_model(seed=9)
    directory = model.save_pretrained(tmp_path / "unsafe")
    (directory / "model.safetensors").unlink()
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x04 pickle that must never be loaded")
    with pytest.raises(CheckpointError, match=r"offers only pytorch_model.bin, which is refused.*execute code"):
        AutoModel.from_pretrained(directory)
    (directory / "pytorch_model.bin").unlink()
    (directory / "tf_model.h5").write_bytes(b"\x89HDF\r\n")
    with pytest.raises(CheckpointError, match=r"offers only tf_model.h5, which is refused"):
        TransformerForSeq2SeqLM.from_pretrained(directory)

    config = (directory / "config.json").read_bytes()
    hub_server.put_files("alice/pickled", {"config.json": config, "pytorch_model.bin": b"\x80\x04 evil" * 1000})
    start = len(hub_server.requests)
    with pytest.raises(CheckpointError, match=r"Hub repo 'alice/pickled' offers only pytorch_model.bin"):
        AutoModel.from_pretrained("alice/pickled", cache_dir=tmp_path / "cache")
    assert downloads(hub_server, "alice/pickled", start) == ["config.json"]  # the .bin was never downloaded


@pytest.mark.parametrize("bad_name", ["../escaped.safetensors", "shards/../../escaped.safetensors",
                                      "/etc/passwd.safetensors", "..\\escaped.safetensors", "config.json"])
def test_index_names_must_stay_inside_the_checkpoint(hub_server, tmp_path, bad_name):
    model = make_model(seed=10)
    directory = model.save_pretrained(tmp_path / "evil", max_shard_size="10KB")
    index = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
    first = sorted(index)[0]
    index[first] = bad_name
    _write_index(directory, index)
    (tmp_path / "escaped.safetensors").write_bytes((directory / sorted(directory.glob("model-*"))[0].name)
                                                   .read_bytes())
    with pytest.raises(CheckpointError, match="outside the checkpoint|only .safetensors files are read"):
        AutoModel.from_pretrained(directory)
    if bad_name.startswith("../"):  # the same index on the Hub
        files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
        hub_server.put_files("alice/evil-index", files)
        start = len(hub_server.requests)
        with pytest.raises(CheckpointError, match="outside the checkpoint"):
            AutoModel.from_pretrained("alice/evil-index", cache_dir=tmp_path / "cache")
        assert not any(".." in path for _, path, _ in hub_server.requests[start:])


# ------------------------------------------------------------------------------------------ keras native
def test_every_layer_and_model_is_registered():
    import vanilla_transformer.layers as layers
    from vanilla_transformer.modeling import MODEL_CLASSES

    classes = [getattr(layers, name) for name in layers.__all__]
    classes = [c for c in classes if isinstance(c, type) and issubclass(c, keras.layers.Layer)]
    classes += list(MODEL_CLASSES.values())
    assert len(classes) >= 14
    for cls in classes:
        assert keras.saving.get_registered_object(f"vanilla_transformer>{cls.__name__}") is cls, cls


@pytest.mark.backends
@pytest.mark.parametrize("cls", [TransformerForSeq2SeqLM, TransformerForCausalLM, TransformerEncoderModel,
                                 TransformerForMaskedLM, TransformerForSequenceClassification])
def test_keras_native_save_and_load_model(cls, tmp_path):
    overrides = {"num_labels": 3} if cls is TransformerForSequenceClassification else {}
    model = make_model(cls, seed=11, **overrides)
    model.generation_config.max_new_tokens = 7
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert type(loaded) is cls and loaded.config.to_dict() == model.config.to_dict()
    assert loaded.generation_config.max_new_tokens == 7
    assert_same_weights(loaded, model)
    inputs = seq2seq_inputs() if cls is TransformerForSeq2SeqLM else {"input_ids": np.array([[3, 4, 5]], "int32")}
    np.testing.assert_array_equal(as_numpy(loaded(inputs)), as_numpy(model(inputs)))


# ------------------------------------------------------------------------------------------ model card
@pytest.mark.parametrize("cls, tag", [(TransformerForSeq2SeqLM, "translation"), (TransformerForMaskedLM, "fill-mask"),
                                      (TransformerForCausalLM, "text-generation"),
                                      (TransformerForSequenceClassification, "text-classification")])
def test_model_card_metadata(cls, tag, tmp_path):
    model = make_model(cls, seed=12)
    info = {"repo_id": "alice/card", "license": "mit", "datasets": ["wmt14"], "base_model": "alice/base",
            "results": {"BLEU": 27.3, "exact_match": 0.95}, "dataset_name": "wmt14",
            "hyperparameters": {"epochs": 3, "warmup steps": 4000}, "language": ["en", "de"]}
    directory = model.save_pretrained(tmp_path / "card", model_card=info)
    card = ModelCard.load(directory / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "vanilla-transformer" and data["license"] == "mit"
    assert data["pipeline_tag"] == tag and tag in data["tags"] and "keras" in data["tags"]
    assert data["datasets"] == ["wmt14"] and data["metrics"] == ["bleu", "exact_match"]
    assert data["base_model"] == "alice/base" and data["language"] == ["en", "de"]
    assert data["model-index"][0]["name"] == "alice/card"
    results = data["model-index"][0]["results"]
    assert {m["type"]: m["value"] for r in results for m in r["metrics"]} == {"bleu": 27.3, "exact_match": 0.95}
    assert all(r["task"]["type"] == tag for r in results)
    for section in ("## Architecture", "## Training hyperparameters", "## Evaluation results", "## Usage",
                    "| warmup steps | 4000 |", "| BLEU | 27.3 |", f"{cls.__name__}.from_pretrained(\"alice/card\")",
                    f"| parameters | {model.num_parameters():,} |"):
        assert section in card.text, section


def test_model_card_base_model_of_a_fine_tune(hub_server, tmp_path):
    make_model(TransformerForMaskedLM, seed=13).push_to_hub("alice/base-encoder")
    fine_tuned = TransformerForMaskedLM.from_pretrained("alice/base-encoder", cache_dir=tmp_path / "cache")
    fine_tuned.push_to_hub("alice/fine-tuned")
    card = ModelCard.load("alice/fine-tuned")
    assert card.data.base_model == "alice/base-encoder" and card.data.pipeline_tag == "fill-mask"
    assert "No evaluation results were recorded" in card.text
    assert ModelCard.load("alice/base-encoder").data.base_model is None


# ------------------------------------------------------------------------------------------ command line
def test_cli_push(hub_server, tokenizer, tmp_path, capsys, monkeypatch):
    model = make_model(TransformerForCausalLM, seed=14)
    directory = model.save_pretrained(tmp_path / "to-push", tokenizer=tokenizer)
    assert cli_main(["push", str(directory), "alice/cli-model", "--commit-message", "from the CLI"]) == 0
    out = capsys.readouterr().out
    head = hub_server.commits("alice/cli-model")[0]
    assert f"commit {head}" in out
    repo = hub_server.store.load("model", "alice/cli-model")
    assert repo["commits"][head]["message"] == "from the CLI" and not repo["private"]
    assert set(hub_server.files("alice/cli-model")) == {".gitattributes", *os.listdir(directory)}
    assert_same_weights(AutoModel.from_pretrained("alice/cli-model", cache_dir=tmp_path / "cache"), model)

    assert cli_main(["push", str(directory), "alice/cli-private", "--private", "--revision", "dev"]) == 0
    repo = hub_server.store.load("model", "alice/cli-private")
    assert repo["private"] and hub_server.commits("alice/cli-private", "dev")[0] != repo["refs"]["main"]

    assert cli_main(["push", str(directory), "bob/not-yours"]) == 2  # alice's token cannot write there
    assert "error: the Hub refused the push to bob/not-yours (HTTP 403)" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN")
    assert cli_main(["push", str(directory), "alice/cli-model"]) == 2
    assert "HTTP 401" in capsys.readouterr().err
    assert cli_main(["push", str(tmp_path), "alice/cli-model"]) == 2
    assert "is not a saved model directory" in capsys.readouterr().err


def _run_example(argv):
    spec = importlib.util.spec_from_file_location("push_to_hub_example", ROOT / "examples" / "push_to_hub.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.main(argv)


@pytest.mark.slow
def test_example_script(hub_server, tokenizer, tmp_path, capsys, monkeypatch):
    """``examples/push_to_hub.py`` in-process (``--hub_endpoint`` sets HF_ENDPOINT, already patched here)."""
    model = make_model(seed=15)
    directory = model.save_pretrained(tmp_path / "example", tokenizer=tokenizer)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)  # restored after the test
    assert _run_example([str(directory), "alice/example", "--private", "--hub_endpoint", hub_server.url]) == 0
    assert os.environ["HF_ENDPOINT"] == hub_server.url
    out = capsys.readouterr().out
    assert "with its tokenizer" in out and "weights identical = True" in out
    assert "vocabulary identical = True" in out
    assert hub_server.store.load("model", "alice/example")["private"]
    assert_same_weights(AutoModel.from_pretrained("alice/example", cache_dir=tmp_path / "cache"), model)
    assert hub.load_tokenizer("alice/example", cache_dir=tmp_path / "cache").get_vocab() == tokenizer.get_vocab()
    monkeypatch.delenv("HF_TOKEN")
    assert _run_example([str(directory), "alice/example-2"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("VANILLA_TRANSFORMER_SUBPROCESS_TESTS"),
                    reason="fresh interpreters cost ~10 s each; set VANILLA_TRANSFORMER_SUBPROCESS_TESTS=1")
def test_environment_variables_in_fresh_interpreters(hub_server, tokenizer, tmp_path):
    """The example and a loader in fresh interpreters, configured by environment variables only
    (``HF_ENDPOINT``, ``HF_HOME``, ``HF_TOKEN``, then ``HF_HUB_OFFLINE``), as users configure them."""
    model = make_model(seed=16)
    directory = model.save_pretrained(tmp_path / "example", tokenizer=tokenizer)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=TOKEN, HF_ENDPOINT=hub_server.url,
               TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "push_to_hub.py"), str(directory),
                          "alice/env-example", "--private"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "weights identical = True" in run.stdout
    head = hub_server.commits("alice/env-example")[0]
    assert (tmp_path / "hf-home" / "hub" / "models--alice--env-example" / "snapshots" / head).is_dir()

    # a fresh interpreter with HF_HUB_OFFLINE=1 and an unreachable HF_ENDPOINT loads from $HF_HOME/hub
    env.update(HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")
    code = ("from vanilla_transformer import AutoModel; from vanilla_transformer.hub import load_tokenizer; "
            f"m = AutoModel.from_pretrained('alice/env-example', revision='{head}'); "
            f"t = load_tokenizer('alice/env-example', revision='{head}'); print(type(m).__name__, len(t))")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["TransformerForSeq2SeqLM", str(len(tokenizer))]


@pytest.mark.slow
def test_two_processes_loading_one_repo_into_one_cache(hub_server, tmp_path):
    """Both get identical, complete files (huggingface_hub's cache locks), whichever downloads first."""
    model = make_model(seed=21)
    model.push_to_hub("alice/shared-cache", token=TOKEN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=TOKEN, HF_ENDPOINT=hub_server.url,
               TF_CPP_MIN_LOG_LEVEL="3")
    code = ("import hashlib, numpy as np; from vanilla_transformer import AutoModel; "
            "m = AutoModel.from_pretrained('alice/shared-cache'); "
            "print(hashlib.sha256(b''.join(np.ascontiguousarray(v.numpy()).tobytes() "
            "for _, v in sorted(m.named_variables().items()))).hexdigest())")
    loaders = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [loader.communicate(timeout=300) for loader in loaders]
    assert [loader.returncode for loader in loaders] == [0, 0], [err[-2000:] for _, err in outputs]
    digests = {out.strip().splitlines()[-1] for out, _ in outputs}
    expected = hashlib.sha256(b"".join(np.ascontiguousarray(v.numpy()).tobytes()
                                       for _, v in sorted(model.named_variables().items()))).hexdigest()
    assert digests == {expected}
    cache = tmp_path / "hf-home" / "hub" / "models--alice--shared-cache"
    assert not [p for p in cache.rglob("*") if p.name.endswith(".incomplete")]


# ------------------------------------------------------------------------------------------ faults of the Hub
def test_transient_server_errors_are_retried_then_reported(hub_server, tmp_path):
    hub_server.faults.clear()
    model = make_model(seed=31)
    model.push_to_hub("alice/flaky", token=TOKEN)
    # huggingface_hub retries 5xx answers to its HEAD requests itself, not to the download: that is ours
    hub_server.inject("status", "model.safetensors", times=2, method="GET", status=503)
    loaded = TransformerForSeq2SeqLM.from_pretrained("alice/flaky", cache_dir=tmp_path / "c1")
    assert_same_weights(model, loaded)
    assert not [f for f in hub_server.faults if f["times"]]  # both injected failures were met, then retried

    hub_server.inject("status", "model.safetensors", times=10, method="GET", status=500)
    with pytest.raises(CheckpointError, match=r"model.safetensors of Hub repo 'alice/flaky' could not be "
                                              r"downloaded after 2 attempts: HTTP 500"):
        TransformerForSeq2SeqLM.from_pretrained("alice/flaky", cache_dir=tmp_path / "c2", max_retries=1)
    hub_server.faults.clear()


def test_a_dropped_connection_never_leaves_a_truncated_file(hub_server, tmp_path):
    hub_server.faults.clear()
    model = make_model(seed=32)
    model.push_to_hub("alice/dropped", token=TOKEN)
    hub_server.inject("drop", "model.safetensors", times=1, method="GET")
    loaded = TransformerForSeq2SeqLM.from_pretrained("alice/dropped", cache_dir=tmp_path)
    assert_same_weights(model, loaded)  # the download was taken up again; nothing half-written was used
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".incomplete")]
    assert not [f for f in hub_server.faults if f["times"]]
    hub_server.faults.clear()


def test_content_that_does_not_match_its_checksum_is_refused_and_not_cached(hub_server, tmp_path):
    hub_server.faults.clear()
    model = make_model(seed=33)
    model.push_to_hub("alice/corrupt", token=TOKEN)
    hub_server.inject("corrupt", "model.safetensors", times=1, method="GET")
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        TransformerForSeq2SeqLM.from_pretrained("alice/corrupt", cache_dir=tmp_path)
    blobs = list(tmp_path.rglob("blobs/*"))
    assert blobs and all(hashlib.sha1(b"blob %d\0" % p.stat().st_size + p.read_bytes()).hexdigest() == p.name
                         for p in blobs)  # what stays cached is intact (config.json)
    assert_same_weights(model, TransformerForSeq2SeqLM.from_pretrained("alice/corrupt", cache_dir=tmp_path))
    hub_server.faults.clear()


def test_a_stalled_server_ends_within_the_timeout(hub_server, tmp_path):
    import time

    hub_server.faults.clear()
    make_model(seed=34).push_to_hub("alice/stalled", token=TOKEN)
    hub_server.inject("stall", "/alice/stalled/resolve/", times=100, seconds=5)
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=r"config.json of Hub repo 'alice/stalled' was not downloaded within "
                                              r"timeout=1.5 s"):
        TransformerForSeq2SeqLM.from_pretrained("alice/stalled", cache_dir=tmp_path, timeout=1.5)
    assert time.monotonic() - started < 3
    hub_server.faults.clear()


# huggingface_hub retries 500/502/503/504 of the upload check itself (not of the commit): 507 reaches us
@pytest.mark.slow
@pytest.mark.parametrize("failing, status", [("/preupload/", 507), ("/commit/", 500)])
def test_a_push_failing_midway_leaves_the_repo_as_it_was_and_a_retry_succeeds(hub_server, tokenizer, tmp_path,
                                                                              failing, status):
    hub_server.faults.clear()
    repo_id = f"alice/interrupted-{failing.strip('/')}"
    first, second = make_model(seed=41), make_model(seed=42)
    first.push_to_hub(repo_id, tokenizer=tokenizer, token=TOKEN)
    head = hub_server.commits(repo_id)[0]
    local = second.save_pretrained(tmp_path / "local", tokenizer=tokenizer)
    before = {p.name: p.read_bytes() for p in local.iterdir()}
    hub_server.inject("status", failing, times=1, method="POST", status=status)
    with pytest.raises(CheckpointError, match=rf"push to .* failed during the (upload check|commit) \(HTTP {status}.*"
                                              r"the repo is unchanged"):
        hub_push.push_folder_to_hub(local, repo_id, token=TOKEN)
    assert hub_server.commits(repo_id)[0] == head  # still at its previous commit
    assert {p.name: p.read_bytes() for p in local.iterdir()} == before  # the local files are untouched
    sent_before = len(hub_server.uploads)
    hub_push.push_folder_to_hub(local, repo_id, token=TOKEN)  # the retry
    assert hub_server.commits(repo_id)[1] == head
    sent = hub_server.uploads[sent_before]
    assert "model.safetensors" in sent and "tokenizer.json" not in sent  # unchanged files are not sent again
    assert_same_weights(second, TransformerForSeq2SeqLM.from_pretrained(repo_id, cache_dir=tmp_path / "cache"))
