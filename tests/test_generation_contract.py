"""generate() keeps transformers' contract: every GenerationConfig field implemented, refused by name or a
documented no-op; the sampling cut-offs equal transformers' warpers; target prefixes, output objects and
streaming equal transformers' on the same weights (a tiny Marian exported from our model)."""

import json
import threading
import time

import keras
import numpy as np
import pytest
from transformers import GenerationConfig

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM, hub
from vanilla_transformer.convert import export_to_transformers
from vanilla_transformer.generation import contract, logits_process
from vanilla_transformer.generation.plan import make_plan

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers import MarianConfig, MarianMTModel  # noqa: E402
from transformers.generation import logits_process as hf  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

PAD, EOS, VOCAB = 1, 2, 64
SRC = np.array([[5, 6, 7, 8, 9, 2], [10, 11, 12, 2, PAD, PAD]], dtype="int32")
SRC_MASK = (SRC != PAD).astype("int32")
BASE = dict(max_new_tokens=12, decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS, bad_words_ids=None,
            forced_eos_token_id=None)

# A refused field's value that switches it on (JSON-serialisable, so it can sit in generation_config.json too).
REFUSED_VALUES = {
    "num_beam_groups": 2, "diversity_penalty": 1.0, "constraints": [[9]], "force_words_ids": [[9]],
    "penalty_alpha": 0.6, "dola_layers": "low", "low_memory": True, "output_attentions": True,
    "output_hidden_states": True, "guidance_scale": 1.5, "sequence_bias": [[[9], -1.0]],
    "encoder_repetition_penalty": 1.2, "encoder_no_repeat_ngram_size": 2, "exponential_decay_length_penalty": [5, 1.1],
    "remove_invalid_values": True, "top_h": 0.5, "max_time": 1.0, "stop_strings": ["."], "token_healing": True,
    "watermarking_config": {"greenlist_ratio": 0.25}, "num_assistant_tokens": 5,
    "num_assistant_tokens_schedule": "heuristic", "assistant_confidence_threshold": 0.1,
    "prompt_lookup_num_tokens": 3, "max_matching_ngram_size": 2, "assistant_early_exit": 2,
    "assistant_lookbehind": 5, "target_lookbehind": 5, "is_assistant": True, "speculation_type": "ngram",
    "use_mtp": True, "assistant_ensemble_weight": 0.5,
}
NO_OP_VALUES = {"cache_implementation": "static", "cache_config": {"max_batch_size": 2}, "max_cache_len": 64,
                "compile_config": None, "disable_compile": True, "prefill_chunk_size": 4,
                "continuous_batching_config": None, "bos_token_id": 0}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers' MarianMTModel, ours): ours imported from a random Marian, the reference loaded back from
    our model's export, so both hold our model's exported weights. Untied head, eos made likely, pad unlikely:
    greedy and beam search give varied outputs."""
    torch.manual_seed(2)
    config = MarianConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                          decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                          activation_function="swish", scale_embedding=True, dropout=0.0, pad_token_id=PAD,
                          decoder_start_token_id=PAD, eos_token_id=EOS, bos_token_id=None, forced_eos_token_id=None,
                          init_std=0.15, tie_word_embeddings=False)
    source = MarianMTModel(config).eval()
    with torch.no_grad():
        for stack in (source.model.encoder, source.model.decoder):
            stack.embed_tokens.weight.copy_(source.model.shared.weight)
        source.final_logits_bias.normal_(0.0, 0.1)
        source.final_logits_bias[0, EOS] += 0.5
        source.final_logits_bias[0, PAD] = -10.0
    source_dir = tmp_path_factory.mktemp("source")
    source.save_pretrained(source_dir)
    ours = hub.AutoModel.from_pretrained(str(source_dir))
    exported = tmp_path_factory.mktemp("exported")
    export_to_transformers(ours, exported)
    return MarianMTModel.from_pretrained(exported).eval(), ours


def _theirs(reference, **kwargs):
    settings = dict(BASE)
    settings.update({k: v for k, v in kwargs.items() if k not in ("decoder_input_ids", "seed")})
    inputs = {"input_ids": torch.tensor(SRC, dtype=torch.long), "attention_mask": torch.tensor(SRC_MASK)}
    if "decoder_input_ids" in kwargs:
        inputs["decoder_input_ids"] = torch.tensor(kwargs["decoder_input_ids"], dtype=torch.long)
    with torch.no_grad():
        return reference.generate(**inputs, generation_config=GenerationConfig(**settings))


def _ours(model, **kwargs):
    return model.generate(SRC, attention_mask=SRC_MASK, **{**BASE, **kwargs})


# ------------------------------------------------------------------------------------------ 1. no silent field
def test_every_generation_config_field_is_placed():
    """A field a new transformers version adds fails here until it is implemented, refused or a listed no-op."""
    fields = set(GenerationConfig().to_dict())
    tables = [contract.IMPLEMENTED, set(contract.NO_OPS), set(contract.REFUSED)]
    unplaced = sorted(name for name in fields if sum(name in table for table in tables) != 1)
    assert not unplaced, f"GenerationConfig fields in no table (or several): {unplaced}"
    assert set(REFUSED_VALUES) == set(contract.REFUSED), "every refused field needs a test value here"
    assert not (set(contract.REFUSED_ARGUMENTS) & fields)


@pytest.mark.parametrize("name", sorted(contract.REFUSED))
def test_refused_fields_name_themselves_as_arguments(tiny_seq2seq, name):
    with pytest.raises(ValueError, match=rf"^{name}="):
        tiny_seq2seq.generate(SRC[:, :3], max_new_tokens=2, **{name: REFUSED_VALUES[name]})


def test_refused_fields_name_themselves_from_generation_config_json(tiny_seq2seq, tmp_path):
    original = tiny_seq2seq.generation_config
    tiny_seq2seq.save_pretrained(tmp_path)
    path = tmp_path / "generation_config.json"
    saved = json.loads(path.read_text())
    try:
        for name, value in sorted(REFUSED_VALUES.items()):
            path.write_text(json.dumps({**saved, name: value}))
            if name == "num_beam_groups":  # the whole loading path once
                model = TransformerForSeq2SeqLM.from_pretrained(tmp_path)
            else:  # the same file read, without rebuilding the weights for each field
                model, model.generation_config = tiny_seq2seq, GenerationConfig.from_pretrained(tmp_path)
            with pytest.raises(ValueError, match=rf"^{name}="):
                model.generate(SRC[:, :3], max_new_tokens=2)
    finally:
        tiny_seq2seq.generation_config = original


def test_no_op_fields_are_accepted_and_change_nothing(tiny_seq2seq):
    assert set(NO_OP_VALUES) | {"transformers_version", "_from_model_config"} == set(contract.NO_OPS)
    plain = tiny_seq2seq.generate(SRC, max_new_tokens=5)
    for name, value in NO_OP_VALUES.items():
        np.testing.assert_array_equal(tiny_seq2seq.generate(SRC, max_new_tokens=5, **{name: value}), plain)


@pytest.mark.parametrize("name", sorted(contract.REFUSED_ARGUMENTS))
def test_refused_generate_arguments_name_themselves(tiny_seq2seq, name):
    with pytest.raises(ValueError, match=rf"^{name} is not supported"):
        tiny_seq2seq.generate(SRC[:, :3], max_new_tokens=2, **{name: [lambda *args: None]})


def test_fields_transformers_also_ignores_are_warned_about(tiny_seq2seq):
    with pytest.warns(UserWarning, match="min_p only take effect with do_sample=True"):
        tiny_seq2seq.generate(SRC[:, :3], max_new_tokens=2, min_p=0.2)
    with pytest.warns(UserWarning, match="output_scores only take effect with return_dict_in_generate"):
        tiny_seq2seq.generate(SRC[:, :3], max_new_tokens=2, output_scores=True)


@pytest.mark.parametrize("name, value, message", [("min_p", 1.5, r"min_p must be in \[0.0, 1.0\]"),
                                                  ("typical_p", 0.0, r"typical_p must be in \(0.0, 1.0\]"),
                                                  ("epsilon_cutoff", 1.0, r"epsilon_cutoff must be in"),
                                                  ("eta_cutoff", -0.1, r"eta_cutoff must be in")])
def test_cutoffs_out_of_range_are_refused(tiny_seq2seq, name, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_seq2seq.generate(SRC[:, :3], max_new_tokens=2, do_sample=True, **{name: value})


# ------------------------------------------------------------------------------------------ 2. sampling filters
WARPERS = {"min_p": hf.MinPLogitsWarper, "typical_p": hf.TypicalLogitsWarper, "epsilon_cutoff": hf.EpsilonLogitsWarper,
           "eta_cutoff": hf.EtaLogitsWarper}


def _random_logits(seed):
    """Random logits with the edge cases: all mass on one token, exact ties, -inf entries."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, rng.uniform(0.3, 4.0), (6, 50)).astype("float32")
    logits[1] = -1e4
    logits[1, 7] = 5.0  # all mass on one token
    logits[2, :10] = logits[2, 10]  # ties
    logits[3, rng.choice(50, 20, replace=False)] = -np.inf
    logits[4] = np.round(logits[4])  # many ties
    return logits


def _assert_same_filter(got, expected, logits, message):
    """Same kept tokens with the same values; where transformers keeps ``min_tokens_to_keep`` tokens out of
    exact ties (in an order its sort leaves unspecified), we keep every token of the tie."""
    ours, theirs = np.isfinite(got), np.isfinite(expected)
    assert not (theirs & ~ours).any(), message
    for row, token in zip(*np.nonzero(ours & ~theirs)):
        assert logits[row, token] in logits[row][theirs[row]], f"{message}: row {row} keeps token {token}"
    np.testing.assert_allclose(got[theirs], expected[theirs], err_msg=message)


@pytest.mark.parametrize("name", sorted(WARPERS))
@pytest.mark.parametrize("keep", [1, 2])
def test_cutoff_filters_equal_transformers_warpers(name, keep):
    values = {"min_p": [0.0, 0.05, 0.3, 1.0], "typical_p": [1e-6, 0.2, 0.9, 0.999],
              "epsilon_cutoff": [1e-4, 0.01, 0.2, 0.99], "eta_cutoff": [1e-4, 0.01, 0.2, 0.99]}[name]
    for seed in range(8):
        logits = _random_logits(seed)
        for value in values:
            warper = WARPERS[name](value, min_tokens_to_keep=keep)
            expected = warper(None, torch.tensor(logits)).numpy()
            got = keras.ops.convert_to_numpy(logits_process.CUTOFF_FILTERS[name](logits, np.float32(value), keep))
            _assert_same_filter(got, expected, logits, f"{name}={value} keep {keep} seed {seed}")


def test_warpers_combine_in_transformers_order():
    config = GenerationConfig(do_sample=True, temperature=0.7, top_k=30, top_p=0.95, min_p=0.02, typical_p=0.9,
                              epsilon_cutoff=3e-3, eta_cutoff=3e-3, max_new_tokens=4)
    plan, params = make_plan(config, prompt_length=1, use_cache=True)
    chain = hf.LogitsProcessorList([hf.TemperatureLogitsWarper(0.7), hf.TopKLogitsWarper(30), hf.TopPLogitsWarper(0.95),
                                    hf.MinPLogitsWarper(0.02), hf.TypicalLogitsWarper(0.9),
                                    hf.EpsilonLogitsWarper(3e-3), hf.EtaLogitsWarper(3e-3)])
    for seed in range(8):
        # without the rows of exact ties: top-p keeps a whole tie, transformers a part chosen by its sort, and
        # the later cut-offs then see different distributions (each cut-off's ties are tested above)
        logits = _random_logits(seed)[[0, 1, 3, 5]]
        expected = chain(None, torch.tensor(logits)).numpy()
        got = keras.ops.convert_to_numpy(logits_process.warp_logits(plan, params, logits))
        _assert_same_filter(got, expected, logits / 0.7, f"seed {seed}")


def test_cutoff_values_are_runtime_values_of_one_program(tiny_seq2seq):
    tiny_seq2seq.generate(SRC, max_new_tokens=5, do_sample=True, min_p=0.1, seed=0)
    before = tiny_seq2seq.decoding_programs.compilations
    for value in (0.2, 0.05, 0.5):
        tiny_seq2seq.generate(SRC, max_new_tokens=5, do_sample=True, min_p=value, seed=0)
    assert tiny_seq2seq.decoding_programs.compilations == before


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("cutoff", [dict(min_p=1.0), dict(epsilon_cutoff=0.99), dict(typical_p=1e-6)],
                         ids=["min_p", "epsilon", "typical"])
def test_a_cutoff_leaving_one_token_samples_transformers_ids(pair, cutoff):
    reference, ours = pair
    expected = _theirs(reference, do_sample=True, **cutoff).numpy()
    got = _ours(ours, do_sample=True, seed=3, **cutoff)
    assert len(np.unique(expected)) > 5, expected
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(_ours(ours, do_sample=True, seed=4, **cutoff), got)


# ------------------------------------------------------------------------------------------ 3. target prefix
PREFIX = np.array([[PAD, 20, 21], [PAD, 24, 25]], dtype="int32")


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("settings", [dict(), dict(num_beams=4, num_return_sequences=2),
                                      dict(do_sample=True, min_p=1.0)], ids=["greedy", "beam4", "sampling"])
def test_target_prefix_is_continued_as_transformers_does(pair, settings):
    reference, ours = pair
    expected = _theirs(reference, decoder_input_ids=PREFIX, **settings).numpy()
    np.testing.assert_array_equal(_ours(ours, decoder_input_ids=PREFIX, **settings), expected)
    # without the start token, it is prepended (as transformers does)
    np.testing.assert_array_equal(_ours(ours, decoder_input_ids=PREFIX[:, 1:], **settings), expected)


@pytest.mark.slow
def test_rows_continue_prefixes_of_different_lengths(pair):
    _, ours = pair
    prefixes = np.array([[PAD, 20, 21, 22], [PAD, PAD, PAD, 24]], dtype="int32")  # left-padded
    mask = np.array([[1, 1, 1, 1], [0, 0, 1, 1]], dtype="int32")
    together = _ours(ours, decoder_input_ids=prefixes, decoder_attention_mask=mask)
    for row, length in ((0, 4), (1, 2)):
        alone = ours.generate(SRC[row:row + 1], attention_mask=SRC_MASK[row:row + 1],
                              decoder_input_ids=prefixes[row:row + 1, 4 - length:], **BASE)
        np.testing.assert_array_equal(together[row, 4 - length:alone.shape[1] + 4 - length], alone[0])
        np.testing.assert_array_equal(together[row, :4], prefixes[row])  # the prefix comes back as given


def test_prefix_fills_the_cache_in_one_pass(pair, monkeypatch):
    _, ours = pair
    widths = []
    original = type(ours).decode_step

    def spy(self, token_ids, *args, **kwargs):
        widths.append(token_ids.shape[1])
        return original(self, token_ids, *args, **kwargs)

    monkeypatch.setattr(type(ours), "decode_step", spy)
    ours.generate(SRC, attention_mask=SRC_MASK, decoder_input_ids=np.repeat([[PAD] + list(range(20, 31))], 2, 0),
                  max_new_tokens=3, eos_token_id=None, pad_token_id=PAD, decoder_start_token_id=PAD)
    assert widths[0] == 16 and set(widths[1:]) == {1}, widths  # 12 prefix tokens in one bucket of 16, then steps


def test_decoder_input_ids_are_refused_for_decoder_only_models():
    from vanilla_transformer import TransformerForCausalLM

    model = TransformerForCausalLM(TransformerConfig(architecture="decoder", vocab_size=20, d_model=8, num_heads=2,
                                                     d_ff=16, num_decoder_layers=1, max_position_embeddings=32))
    with pytest.raises(ValueError, match="decoder_input_ids is for encoder-decoder models"):
        model.generate(np.array([[5, 6]]), decoder_input_ids=np.array([[1, 5]]), max_new_tokens=2)


# ------------------------------------------------------------------------------------------ 4. output objects
def _assert_same_steps(got, expected, name):
    assert len(got) == len(expected), f"{name}: {len(got)} steps against {len(expected)}"
    for step, (ours, theirs) in enumerate(zip(got, expected)):
        theirs = theirs.numpy()
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs), err_msg=f"{name} step {step}")
        np.testing.assert_allclose(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)], atol=1e-4,
                                   err_msg=f"{name} step {step}")


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("settings", [dict(repetition_penalty=1.3), dict(num_beams=3, num_return_sequences=2,
                                                                         length_penalty=0.6)], ids=["greedy", "beam3"])
def test_outputs_equal_transformers_output_objects(pair, settings):
    reference, ours = pair
    flags = dict(return_dict_in_generate=True, output_scores=True, output_logits=True, **settings)
    expected = _theirs(reference, **flags)
    got = _ours(ours, **flags)
    assert type(got) is type(expected)
    # transformers also returns its cache object; ours lives inside the compiled program (the field stays None)
    assert set(got.keys()) == set(expected.keys()) - {"cache"} and got.cache is None, (got.keys(), expected.keys())
    np.testing.assert_array_equal(got.sequences, expected.sequences.numpy())
    _assert_same_steps(got.scores, expected.scores, "scores")
    _assert_same_steps(got.logits, expected.logits, "logits")
    if "beam_indices" in expected:
        np.testing.assert_array_equal(got.beam_indices, expected.beam_indices.numpy())
        np.testing.assert_allclose(got.sequences_scores, expected.sequences_scores.numpy(), atol=1e-5)
    transition = reference.compute_transition_scores(expected.sequences, expected.scores, expected.get("beam_indices"),
                                                     normalize_logits=True).numpy()
    ours_transition = ours.compute_transition_scores(got.sequences, got.scores, got.get("beam_indices"),
                                                     normalize_logits=True)
    np.testing.assert_allclose(ours_transition, transition, atol=1e-4)


# ------------------------------------------------------------------------------------------ 5. streaming
class _RecordingStreamer:
    """transformers' streamer protocol, recording what arrives and when."""

    def __init__(self):
        self.puts, self.times, self.ended = [], [], False

    def put(self, value):
        self.puts.append(np.asarray(value).reshape(-1).tolist())
        self.times.append(time.perf_counter())

    def end(self):
        self.ended = True


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("settings", [dict(), dict(do_sample=True, top_k=10, seed=5)], ids=["greedy", "sampling"])
def test_streamed_tokens_equal_the_returned_ids(pair, settings):
    _, ours = pair
    kwargs = dict(BASE, attention_mask=SRC_MASK[:1], max_new_tokens=40, **settings)
    plain = ours.generate(SRC[:1], **kwargs)
    streamer = _RecordingStreamer()
    streamed = ours.generate(SRC[:1], streamer=streamer, **kwargs)
    np.testing.assert_array_equal(streamed, plain)
    assert streamer.ended and streamer.puts[0] == [PAD]  # the prefix first, as transformers
    assert sum(streamer.puts[1:], []) == plain[0, 1:].tolist()[:len(streamer.puts) - 1]
    trailing = plain[0, len(streamer.puts):]
    assert (trailing == PAD).all()  # what was not streamed is padding after eos


@pytest.mark.slow
def test_text_streamers_get_the_decoded_text_while_decoding_runs(pair):
    from transformers import PreTrainedTokenizerFast, TextIteratorStreamer
    from tokenizers import Tokenizer, models, pre_tokenizers

    _, ours = pair
    vocab = {f"w{i}": i for i in range(VOCAB)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="w3")),
                                        pad_token="w1", eos_token="w2")
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = dict(BASE, attention_mask=SRC_MASK[:1], max_new_tokens=60, eos_token_id=None)
    ours.generate(SRC[:1], streamer=_RecordingStreamer(), **kwargs)  # compiles the streaming programs
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    result = {}
    start = time.perf_counter()
    worker = threading.Thread(target=lambda: result.update(ids=ours.generate(SRC[:1], streamer=streamer, **kwargs)))
    worker.start()
    pieces = []
    for piece in streamer:
        pieces.append((time.perf_counter() - start, piece))
    worker.join()
    total = time.perf_counter() - start
    text = "".join(piece for _, piece in pieces)
    assert text.split() == tokenizer.decode(result["ids"][0], skip_special_tokens=True).split()
    first = next(t for t, piece in pieces if piece)
    assert first < 0.5 * total, f"first text after {first:.3f} s of {total:.3f} s"


def test_streaming_is_refused_for_beams_and_batches(tiny_seq2seq):
    with pytest.raises(ValueError, match="streamer cannot be used with beam search"):
        tiny_seq2seq.generate(SRC[:1, :3], max_new_tokens=2, num_beams=2, streamer=_RecordingStreamer())
    with pytest.raises(ValueError, match="streamer streams one sequence"):
        tiny_seq2seq.generate(SRC[:, :3], max_new_tokens=2, streamer=_RecordingStreamer())


# ------------------------------------------------------------------------------------------ translate
@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    """A small random translator with its tokenizer, saved (for the command line)."""
    from vanilla_transformer.tokenization import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["a b c d e", "x y z w", "b c a"] * 10, vocab_size=40)
    keras.utils.set_random_seed(11)
    config = TransformerConfig(vocab_size=len(tokenizer), d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, max_position_embeddings=32, dropout=0.0)
    model = TransformerForSeq2SeqLM(config).build_weights()
    directory = tmp_path_factory.mktemp("translator")
    model.save_pretrained(directory, tokenizer=tokenizer)
    return model, tokenizer, directory


TEXTS = ["a b c d e a b", "x", "b c", "x y z w x y", "a", "c a b"]


@pytest.mark.slow
def test_translate_batches_by_length_and_keeps_input_order(translator):
    from vanilla_transformer.generation import length_sorted_batches

    model, tokenizer, _ = translator
    alone = [model.translate([text], tokenizer, max_new_tokens=8, num_beams=2)[0] for text in TEXTS]
    assert len(set(alone)) > 2, alone
    assert model.translate(TEXTS, tokenizer, batch_size=2, max_new_tokens=8, num_beams=2) == alone
    assert model.translate(TEXTS, tokenizer, batch_size=4, max_batch_tokens=12, max_new_tokens=8, num_beams=2) == alone
    lengths = [len(ids) for ids in tokenizer(TEXTS)["input_ids"]]
    batches = length_sorted_batches(lengths, batch_size=4, max_tokens=12)
    assert sorted(sum(batches, [])) == list(range(len(TEXTS)))
    assert all(len(rows) * max(lengths[i] for i in rows) <= 12 or len(rows) == 1 for rows in batches)
    assert [lengths[i] for i in sum(batches, [])] == sorted(lengths)


@pytest.mark.slow
def test_translate_continues_target_prefixes(translator):
    model, tokenizer, _ = translator
    prefixes = ["x y", None, "a b c"]
    got = model.translate(TEXTS[:3], tokenizer, target_prefixes=prefixes, max_new_tokens=6)
    for text, prefix, translation in zip(TEXTS[:3], prefixes, got):
        source = np.array(tokenizer([text])["input_ids"], "int32")
        prefix_ids = tokenizer([prefix], add_special_tokens=False)["input_ids"][0] if prefix else []
        ids = model.generate(source, decoder_input_ids=np.array([[1] + prefix_ids], "int32"), max_new_tokens=6)
        assert translation == tokenizer.decode(ids[0], skip_special_tokens=True)
        if prefix:
            assert translation.startswith(prefix)
    with pytest.raises(ValueError, match="target_prefixes has 1 entries for 3 texts"):
        model.translate(TEXTS[:3], tokenizer, target_prefixes=["x"])


@pytest.mark.slow
def test_translate_command_reads_a_file_writes_a_file_and_streams(translator, tmp_path, capsys):
    from vanilla_transformer.cli import main

    model, tokenizer, directory = translator
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    expected = model.translate(TEXTS, tokenizer, num_beams=1, max_new_tokens=10)
    assert main(["translate", "--model", str(directory), "--input", str(tmp_path / "in.txt"), "--output",
                 str(tmp_path / "out.txt"), "--num-beams", "1", "--max-new-tokens", "10", "--batch-size", "4"]) == 0
    assert (tmp_path / "out.txt").read_text().splitlines() == expected
    capsys.readouterr()
    assert main(["translate", "--model", str(directory), "--stream", "--max-new-tokens", "10", *TEXTS[:3]]) == 0
    assert [line.strip() for line in capsys.readouterr().out.splitlines()] == [t.strip() for t in expected[:3]]
    assert main(["translate", "--model", str(directory), "--stream", "--num-beams", "2", "a"]) == 2
    assert "--stream decodes greedily" in capsys.readouterr().err


def test_serving_exports_refuse_what_generate_refuses(tiny_seq2seq):
    from vanilla_transformer.serving import decoding_setup

    with pytest.raises(ValueError, match="^num_beam_groups=2 is not supported"):
        decoding_setup(tiny_seq2seq, num_beams=4, num_beam_groups=2)
