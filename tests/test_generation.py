"""generate(): cache vs recompute, greedy vs an argmax loop, beam vs exhaustive search, sampling, batching."""

import itertools

import keras
import numpy as np
import pytest
from transformers import GenerationConfig

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
from vanilla_transformer import generation
from vanilla_transformer.generation import blocked_top_k, logits_process, top_p_filter

SRC = np.array([[5, 6, 7, 8, 9, 2], [10, 11, 2, 0, 0, 0], [12, 13, 14, 15, 2, 0]], dtype="int32")
MASK = (SRC != 0).astype("int32")


@pytest.fixture(scope="module")
def peaked_model():
    """A tiny random model with sharpened logits, so that greedy / beam choices are not near-ties."""
    keras.utils.set_random_seed(7)
    config = TransformerConfig(vocab_size=40, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=2,
                               num_decoder_layers=2, dropout=0.0, max_position_embeddings=64)
    model = TransformerForSeq2SeqLM(config).build_weights()
    embeddings = model.named_variables()["shared.embeddings"]
    embeddings.assign(embeddings.numpy() * 3.0)
    return model


def _summed_log_probs(model, out):
    """Each row's summed log-probabilities of its chosen tokens: transformers' recipe, the normalised transition
    scores of a ``return_dict_in_generate`` output."""
    return model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).sum(-1)


def _log_probs(model, src, mask, decoder_ids):
    """Full-forward log-probabilities (batch, len, vocab): the independent reference."""
    logits = keras.ops.convert_to_numpy(model({"input_ids": src, "attention_mask": mask,
                                               "decoder_input_ids": decoder_ids})).astype("float64")
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def test_greedy_equals_a_step_by_step_argmax_loop(peaked_model):
    out = peaked_model.generate(SRC, MASK, max_new_tokens=8, eos_token_id=None)
    for row in range(len(SRC)):
        prefix = [1]
        for _ in range(8):
            logits = peaked_model({"input_ids": SRC[row:row + 1, :MASK[row].sum()],
                                   "decoder_input_ids": np.array([prefix], "int32")})
            prefix.append(int(np.argmax(keras.ops.convert_to_numpy(logits)[0, -1])))
        assert out[row].tolist() == prefix


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3, num_return_sequences=2),
                                    dict(repetition_penalty=1.5, no_repeat_ngram_size=2)])
def test_cached_decoding_equals_recomputation(peaked_model, kwargs):
    # 40 new tokens without eos: the cached loop runs five phases over a growing cache (9, 17, 25, 33, 41 slots)
    kwargs = dict(max_new_tokens=40, eos_token_id=None, return_dict_in_generate=True, output_scores=True, **kwargs)
    cached = peaked_model.generate(SRC, MASK, **kwargs)
    full = peaked_model.generate(SRC, MASK, use_cache=False, **kwargs)
    assert cached["sequences"].shape[1] == 41
    np.testing.assert_array_equal(cached["sequences"], full["sequences"])
    assert len(cached.scores) == len(full.scores) == 40
    for cached_step, full_step in zip(cached.scores, full.scores):
        finite = np.isfinite(full_step)
        np.testing.assert_array_equal(np.isfinite(cached_step), finite)
        np.testing.assert_allclose(cached_step[finite], full_step[finite], atol=1e-5)
    if "sequences_scores" in full:
        np.testing.assert_allclose(cached["sequences_scores"], full["sequences_scores"], atol=1e-5)


@pytest.mark.backends
def test_greedy_scores_are_summed_log_probs(peaked_model):
    out = peaked_model.generate(SRC[:1], MASK[:1], max_new_tokens=5, eos_token_id=None, return_dict_in_generate=True,
                                output_scores=True)
    seq = out["sequences"]
    log_probs = _log_probs(peaked_model, SRC[:1], MASK[:1], seq[:, :-1])
    expected = sum(log_probs[0, t, seq[0, t + 1]] for t in range(seq.shape[1] - 1))
    assert _summed_log_probs(peaked_model, out)[0] == pytest.approx(expected, abs=1e-4)


@pytest.mark.backends
def test_sampled_scores_are_summed_log_probs_of_the_warped_distribution(peaked_model):
    out = peaked_model.generate(SRC[:1], MASK[:1], max_new_tokens=5, eos_token_id=None, output_scores=True,
                                return_dict_in_generate=True, do_sample=True, temperature=2.0, seed=3)
    seq = out["sequences"]
    logits = _log_probs(peaked_model, SRC[:1], MASK[:1], seq[:, :-1]) / 2.0  # log-softmax shifts cancel
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = sum(log_probs[0, t, seq[0, t + 1]] for t in range(seq.shape[1] - 1))
    assert _summed_log_probs(peaked_model, out)[0] == pytest.approx(expected, abs=1e-4)


def _expected_stop(free_row, stops):
    """Index of the first generated token of ``free_row`` that is in ``stops`` (the start token excluded)."""
    return next(t for t in range(1, len(free_row)) if free_row[t] in stops)


@pytest.mark.backends
def test_output_format_start_token_eos_then_padding(peaked_model):
    free = peaked_model.generate(SRC, MASK, max_new_tokens=6, eos_token_id=None)
    eos = int(free[0, 2])
    out = peaked_model.generate(SRC, MASK, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    assert (out[:, 0] == 1).all()
    for free_row, row in zip(free, out):
        stop = next((t for t in range(1, 7) if free_row[t] == eos), None)
        if stop is None:
            np.testing.assert_array_equal(row, free_row[: len(row)])
        else:
            np.testing.assert_array_equal(row[: stop + 1], free_row[: stop + 1])
            assert (row[stop + 1:] == 0).all()


@pytest.mark.backends
def test_eos_token_id_as_a_list_stops_at_either(peaked_model):
    free = peaked_model.generate(SRC, MASK, max_new_tokens=6, eos_token_id=None)
    stops = [int(free[0, 2]), int(free[1, 3])]
    out = peaked_model.generate(SRC, MASK, max_new_tokens=6, eos_token_id=stops, pad_token_id=0)
    for row in (0, 1):
        stop = _expected_stop(free[row].tolist(), stops)
        assert out[row, stop] in stops and (out[row, stop + 1:] == 0).all()
        np.testing.assert_array_equal(out[row, :stop], free[row, :stop])


@pytest.mark.slow
def test_batched_mixed_lengths_decode_like_one_by_one(peaked_model):
    for kwargs in (dict(), dict(num_beams=3)):
        batched = peaked_model.generate(SRC, MASK, max_new_tokens=7, **kwargs)
        for row in range(len(SRC)):
            alone = peaked_model.generate(SRC[row:row + 1, :MASK[row].sum()], max_new_tokens=7, **kwargs)
            got = batched[row]
            np.testing.assert_array_equal(got[: alone.shape[1]], alone[0])
            assert (got[alone.shape[1]:] == peaked_model.config.pad_token_id).all()


def _exhaustive_best(model, src, max_new, vocab, eos, length_penalty):
    """Score every sequence of up to ``max_new`` tokens as transformers' beam search does."""
    best, best_score = None, -np.inf
    candidates = [list(c) for c in itertools.product(range(vocab), repeat=max_new)]
    decoder = np.array([[1] + c[:-1] for c in candidates], dtype="int32")
    log_probs = _log_probs(model, np.repeat(src, len(candidates), 0), np.ones((len(candidates), src.shape[1]),
                                                                               "int32"), decoder)
    seen = set()
    for i, c in enumerate(candidates):
        length = next((t + 1 for t, tok in enumerate(c) if tok == eos), max_new)
        hyp = tuple(c[:length])
        if hyp in seen:
            continue
        seen.add(hyp)
        score = sum(log_probs[i, t, tok] for t, tok in enumerate(hyp)) / length ** length_penalty
        if score > best_score:
            best, best_score = list(hyp), score
    return best, best_score


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_search_with_enough_beams_finds_the_exhaustive_optimum(length_penalty):
    keras.utils.set_random_seed(3)
    vocab, eos, max_new = 5, 2, 3
    config = TransformerConfig(vocab_size=vocab, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.0, max_position_embeddings=16)
    model = TransformerForSeq2SeqLM(config).build_weights()
    src = np.array([[3, 4, 2]], dtype="int32")
    best, best_score = _exhaustive_best(model, src, max_new, vocab, eos, length_penalty)
    out = model.generate(src, max_new_tokens=max_new, num_beams=vocab ** max_new, eos_token_id=eos,
                         length_penalty=length_penalty, early_stopping="never", return_dict_in_generate=True)
    got = out["sequences"][0, 1:].tolist()
    got = got[: next((t + 1 for t, tok in enumerate(got) if tok == eos), len(got))]
    assert got == best
    assert out["sequences_scores"][0] == pytest.approx(best_score, abs=1e-4)


@pytest.mark.backends
def test_beam_scores_follow_the_length_penalty_definition(peaked_model):
    for alpha in (0.6, 1.0):
        out = peaked_model.generate(SRC[:1], MASK[:1], max_new_tokens=6, num_beams=4, num_return_sequences=4,
                                    length_penalty=alpha, return_dict_in_generate=True, eos_token_id=2)
        scores = out["sequences_scores"]
        assert list(scores) == sorted(scores, reverse=True)  # best first
        for seq, score in zip(out["sequences"], scores):
            tokens = seq[1:].tolist()
            length = next((t + 1 for t, tok in enumerate(tokens) if tok == 2), len(tokens))
            lp = _log_probs(peaked_model, SRC[:1], MASK[:1], seq[None, :length])
            total = sum(lp[0, t, tokens[t]] for t in range(length))
            assert score == pytest.approx(total / length ** alpha, abs=1e-4)


@pytest.mark.slow
def test_length_penalty_changes_the_ranking():
    """With a model that likes short outputs, alpha decides between a short and a long hypothesis."""
    keras.utils.set_random_seed(11)
    config = TransformerConfig(vocab_size=6, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.0, max_position_embeddings=16)
    model = TransformerForSeq2SeqLM(config).build_weights()
    src = np.array([[3, 4, 5, 2]], dtype="int32")
    results = {}
    for alpha in (-2.0, 3.0):
        out = model.generate(src, max_new_tokens=4, num_beams=36, eos_token_id=2, length_penalty=alpha,
                             early_stopping="never")
        results[alpha] = out[0].tolist()
    short = np.count_nonzero(np.array(results[-2.0]) != 0)
    long = np.count_nonzero(np.array(results[3.0]) != 0)
    assert short <= long and results[-2.0] != results[3.0]


@pytest.mark.slow
@pytest.mark.backends
def test_sampling_top_k_1_equals_greedy_and_seeds_reproduce(peaked_model):
    greedy = peaked_model.generate(SRC, MASK, max_new_tokens=6)
    sampled = peaked_model.generate(SRC, MASK, max_new_tokens=6, do_sample=True, top_k=1, seed=5)
    np.testing.assert_array_equal(sampled, greedy)
    a = peaked_model.generate(SRC, MASK, max_new_tokens=8, do_sample=True, temperature=2.0, seed=1)
    b = peaked_model.generate(SRC, MASK, max_new_tokens=8, do_sample=True, temperature=2.0, seed=1)
    c = peaked_model.generate(SRC, MASK, max_new_tokens=8, do_sample=True, temperature=2.0, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.backends
def test_sampling_follows_the_distribution():
    """Gumbel-max noise: sample frequencies over many rows match softmax probabilities."""
    from vanilla_transformer.generation.logits_process import gumbel_noise

    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 20000, dtype="float32"))
    picks = np.argmax(logits + np.asarray(gumbel_noise(logits.shape, np.int32(3), np.int32(0))), axis=-1)
    np.testing.assert_allclose(np.bincount(picks, minlength=4) / len(picks), [0.5, 0.3, 0.15, 0.05], atol=0.015)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([[0.5, 0.25, 0.15, 0.1]], dtype="float32")
    logits = np.log(probs)
    kept = lambda p: np.isfinite(np.asarray(top_p_filter(logits, p)))[0].tolist()  # noqa: E731
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.6) == [True, True, False, False]
    assert kept(0.75) == [True, True, False, False]
    assert kept(0.8) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    assert kept(0.01) == [True, False, False, False]


@pytest.mark.backends
def test_repetition_penalty_and_no_repeat_ngram(peaked_model):
    out = peaked_model.generate(SRC, MASK, max_new_tokens=12, no_repeat_ngram_size=2, eos_token_id=None)
    for row in out:
        bigrams = list(zip(row[:-1], row[1:]))
        assert len(bigrams) == len(set(bigrams))
    plain = peaked_model.generate(SRC, MASK, max_new_tokens=12, eos_token_id=None)
    penalised = peaked_model.generate(SRC, MASK, max_new_tokens=12, eos_token_id=None, repetition_penalty=50.0)
    distinct = lambda a: np.mean([len(set(r.tolist())) for r in a])  # noqa: E731
    assert distinct(penalised) >= distinct(plain)
    assert distinct(penalised) == 13  # start token + 12 different tokens


@pytest.mark.backends
def test_min_new_tokens_delays_eos(peaked_model):
    first = int(peaked_model.generate(SRC[:1], MASK[:1], max_new_tokens=1)[0, 1])
    out = peaked_model.generate(SRC[:1], MASK[:1], max_new_tokens=5, eos_token_id=first, min_new_tokens=3)
    assert first not in out[0, 1:4].tolist()


def test_generation_config_precedence(peaked_model):
    peaked_model.generation_config.max_new_tokens = 3
    try:
        assert peaked_model.generate(SRC, MASK, eos_token_id=None).shape[1] == 4
        config = GenerationConfig(max_new_tokens=5)
        assert peaked_model.generate(SRC, MASK, generation_config=config, eos_token_id=None).shape[1] == 6
        assert peaked_model.generate(SRC, MASK, generation_config=config, max_new_tokens=2,
                                     eos_token_id=None).shape[1] == 3
    finally:
        peaked_model.generation_config.max_new_tokens = None


def test_second_call_with_same_bucketed_shapes_does_not_retrace(peaked_model):
    peaked_model.generate(SRC, MASK, max_new_tokens=4)
    compiled = peaked_model.decoding_programs.programs
    functions = dict(compiled)
    traces = {key: fn.experimental_get_tracing_count() for key, fn in functions.items()}
    shorter = SRC[:, :5].copy()  # 5 -> rounded up to the same 8 columns
    peaked_model.generate(shorter, (shorter != 0).astype("int32"), max_new_tokens=4)
    assert dict(compiled).keys() == functions.keys()
    assert {key: fn.experimental_get_tracing_count() for key, fn in functions.items()} == traces


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, top_p=0.0), "top_p"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=100), "max_position_embeddings"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(not_a_parameter=3), "not_a_parameter"),
])
def test_bad_arguments_raise_value_error_naming_them(peaked_model, kwargs, name):
    with pytest.raises(ValueError, match=name):
        peaked_model.generate(SRC, MASK, **kwargs)


def test_bad_inputs_to_generate(peaked_model):
    with pytest.raises(ValueError, match="outside"):
        peaked_model.generate(SRC + 100)
    with pytest.raises(ValueError, match="empty batch"):
        peaked_model.generate(np.zeros((0, 4), "int32"))
    with pytest.raises(TypeError, match="integer"):
        peaked_model.generate(SRC.astype("float32"))


def test_translate_helper(tmp_path):
    from vanilla_transformer.tokenization import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["a b c", "x y z"] * 10, vocab_size=30)
    config = TransformerConfig(vocab_size=len(tokenizer), d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, max_position_embeddings=32)
    model = TransformerForSeq2SeqLM(config)
    out = model.translate(["a b", "x y z"], tokenizer, max_new_tokens=4, num_beams=2)
    assert len(out) == 2 and all(isinstance(text, str) for text in out)


@pytest.mark.backends
def test_banned_suppressed_and_forced_tokens(peaked_model):
    free = peaked_model.generate(SRC, MASK, max_new_tokens=6, eos_token_id=None)
    common = int(np.bincount(free[:, 1:].ravel()).argmax())
    for kwargs in (dict(bad_words_ids=[[common]]), dict(suppress_tokens=[common])):
        out = peaked_model.generate(SRC, MASK, max_new_tokens=6, eos_token_id=None, **kwargs)
        assert common not in out[:, 1:]
    first = int(free[0, 1])
    out = peaked_model.generate(SRC, MASK, max_new_tokens=6, eos_token_id=None, begin_suppress_tokens=[first])
    assert out[0, 1] != first
    out = peaked_model.generate(SRC, MASK, max_new_tokens=6, eos_token_id=3, forced_eos_token_id=3)
    assert (out[:, -1] == 3).all() or all(3 in row for row in out)
    out = peaked_model.generate(SRC, MASK, max_new_tokens=6, forced_bos_token_id=7, eos_token_id=None)
    assert (out[:, 1] == 7).all()
    with pytest.raises(ValueError, match="bad_words_ids"):
        peaked_model.generate(SRC, MASK, max_new_tokens=3, bad_words_ids=[[4, 5]])


@pytest.mark.slow
def test_translate_command_line(tmp_path, capsys):
    from vanilla_transformer.cli import main
    from vanilla_transformer.tokenization import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["a b c", "x y z"] * 10, vocab_size=30)
    config = TransformerConfig(vocab_size=len(tokenizer), d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, max_position_embeddings=16)
    model = TransformerForSeq2SeqLM(config)
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    expected = model.translate(["a b", "x y z"], tokenizer, num_beams=2, max_new_tokens=15)
    assert main(["translate", "--model", str(tmp_path / "m"), "--num-beams", "2", "a b", "x y z"]) == 0
    assert capsys.readouterr().out.splitlines() == expected


@pytest.mark.backends
def test_blocked_top_k_equals_top_k_with_ties_and_infinities():
    """Same values and indices as ops.top_k, ties resolved to the lower index, on rows longer than 8 k blocks."""
    rng = np.random.default_rng(0)
    n = 4 * 2000 + 37  # not a multiple of the block
    rows = [rng.standard_normal(n),
            rng.integers(0, 5, n).astype("float64"),  # many ties at the top, across blocks
            np.full(n, -np.inf),  # all masked
            np.where(rng.random(n) < 0.99, -1e9, rng.standard_normal(n))]  # few live candidates
    peaked = np.full(n, -1e9)
    peaked[[3, 129, 130, 4000, n - 1]] = 7.0  # equal maxima in several blocks, one in the padded last block
    scores = np.stack(rows + [peaked]).astype("float32")
    for k in (1, 8):
        values, indices = blocked_top_k(keras.ops.convert_to_tensor(scores), k)
        expected_values, expected_indices = keras.ops.top_k(scores, k)
        np.testing.assert_array_equal(np.asarray(values), np.asarray(expected_values))
        np.testing.assert_array_equal(np.asarray(indices), np.asarray(expected_indices))


def test_beam_search_with_blocked_top_k_equals_plain_top_k(monkeypatch):
    """4 beams x 2,048 tokens = 8,192 candidates a row: beam search takes the blocked path; the result is the
    one of plain top_k (blocking disabled)."""
    keras.utils.set_random_seed(3)
    # untied output projection: a tied one makes each step predict its own input again (degenerate output)
    config = TransformerConfig(vocab_size=2048, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.0, max_position_embeddings=64,
                               tie_word_embeddings=False)
    model = TransformerForSeq2SeqLM(config).build_weights()
    kwargs = dict(num_beams=4, num_return_sequences=2, max_new_tokens=12, eos_token_id=2,
                  return_dict_in_generate=True)
    blocked = model.generate(SRC, attention_mask=MASK, **kwargs)
    model.decoding_programs.programs.clear()
    monkeypatch.setattr(logits_process, "TOP_K_BLOCK", 10 ** 9)
    plain = model.generate(SRC, attention_mask=MASK, **kwargs)
    assert len(np.unique(np.asarray(plain["sequences"]))) > 8
    np.testing.assert_array_equal(np.asarray(blocked["sequences"]), np.asarray(plain["sequences"]))
    np.testing.assert_allclose(np.asarray(blocked["sequences_scores"]), np.asarray(plain["sequences_scores"]),
                               rtol=1e-6)


@pytest.mark.backends
def test_top_p_filter_takes_numpy_logits_on_every_backend():
    """A numpy oracle: keep the most likely tokens until their mass reaches top_p (the best one always)."""
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]], "float32"))
    for top_p, expected in ((0.7, [[1, 1, 0, 0], [0, 0, 1, 1]]), (0.9, [[1, 1, 1, 0], [0, 1, 1, 1]]),
                            (0.1, [[1, 0, 0, 0], [0, 0, 0, 1]])):
        kept = np.isfinite(keras.ops.convert_to_numpy(top_p_filter(logits, top_p)))
        np.testing.assert_array_equal(kept, np.array(expected, bool), err_msg=str(top_p))
