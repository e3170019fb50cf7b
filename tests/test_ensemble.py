"""Ensemble decoding against an oracle: the mean of the members' full-forward probabilities, step by step."""

import keras
import numpy as np
import pytest

from vanilla_transformer import TransformerConfig, TransformerForCausalLM, TransformerForSeq2SeqLM
from vanilla_transformer.generation import compute_transition_scores
from vanilla_transformer.generation.ensemble import Ensemble

SRC = np.array([[5, 6, 7, 8, 9, 2], [10, 11, 2, 0, 0, 0]], dtype="int32")
MASK = (SRC != 0).astype("int32")


def _peaked(model_class, seed, **sizes):
    """A tiny random model with sharpened logits (choices are not near-ties)."""
    keras.utils.set_random_seed(seed)
    config = TransformerConfig(vocab_size=30, num_heads=2, dropout=0.0, max_position_embeddings=48, **sizes)
    model = model_class(config).build_weights()
    embeddings = model.named_variables()["shared.embeddings"]
    embeddings.assign(embeddings.numpy() * 3.0)
    return model


@pytest.fixture(scope="module")
def members():
    """Two translators of different sizes (the ensemble only needs a shared vocabulary)."""
    return [_peaked(TransformerForSeq2SeqLM, 3, d_model=16, d_ff=32, num_encoder_layers=1, num_decoder_layers=1),
            _peaked(TransformerForSeq2SeqLM, 4, d_model=24, d_ff=48, num_encoder_layers=2, num_decoder_layers=2)]


def _mean_log_probs(models, inputs):
    """log of the members' mean next-token probabilities at every position, from full forward passes."""
    probs = []
    for model in models:
        logits = keras.ops.convert_to_numpy(model(inputs)).astype("float64")
        probs.append(np.exp(logits - logits.max(-1, keepdims=True)))
        probs[-1] /= probs[-1].sum(-1, keepdims=True)
    return np.log(np.mean(probs, axis=0))


@pytest.mark.backends
def test_greedy_follows_the_mean_of_the_members_probabilities(members):
    out = Ensemble(members).generate(SRC, MASK, max_new_tokens=6, eos_token_id=None, return_dict_in_generate=True,
                                     output_scores=True)
    summed = compute_transition_scores(out.sequences, out.scores, normalize_logits=True).sum(-1)
    for row, sequence in enumerate(out["sequences"]):
        # the decoder is causal: one teacher-forced pass gives every step's distribution given the prefix
        source = SRC[row:row + 1, :MASK[row].sum()]
        log_probs = _mean_log_probs(members, {"input_ids": source, "decoder_input_ids": sequence[None, :-1]})[0]
        assert sequence[0] == 1 and sequence[1:].tolist() == log_probs.argmax(-1).tolist()
        expected = sum(log_probs[t, sequence[t + 1]] for t in range(len(sequence) - 1))
        assert summed[row] == pytest.approx(expected, abs=1e-4)
    # the ensemble decodes differently from each member alone (else the test would prove little)
    assert all(not np.array_equal(m.generate(SRC, MASK, max_new_tokens=6, eos_token_id=None), out["sequences"])
               for m in members)


@pytest.mark.backends
def test_beam_scores_are_the_ensembles_summed_log_probabilities(members):
    out = Ensemble(members).generate(SRC, MASK, max_new_tokens=5, eos_token_id=None, num_beams=3,
                                     num_return_sequences=3, length_penalty=0.0, return_dict_in_generate=True)
    sequences = out["sequences"]
    sources = np.repeat(SRC, 3, axis=0)
    for row, sequence in enumerate(sequences):
        source = sources[row:row + 1, :MASK[row // 3].sum()]
        log_probs = _mean_log_probs(members, {"input_ids": source, "decoder_input_ids": sequence[None, :-1]})
        expected = sum(log_probs[0, t, sequence[t + 1]] for t in range(len(sequence) - 1))
        assert out["sequences_scores"][row] == pytest.approx(expected, abs=1e-4)
    assert len({tuple(row) for row in sequences[:3]}) == 3  # three distinct hypotheses of the first source


def test_an_ensemble_of_a_model_with_itself_decodes_as_the_model(members):
    model = members[1]
    kwargs = dict(max_new_tokens=7, num_beams=2, length_penalty=1.0, return_dict_in_generate=True)
    alone, doubled = model.generate(SRC, MASK, **kwargs), Ensemble([model, model]).generate(SRC, MASK, **kwargs)
    np.testing.assert_array_equal(alone["sequences"], doubled["sequences"])
    np.testing.assert_allclose(alone["sequences_scores"], doubled["sequences_scores"], atol=1e-5)


def test_cached_ensemble_decoding_equals_recomputation(members):
    ensemble = Ensemble(members)
    kwargs = dict(max_new_tokens=12, eos_token_id=None, num_beams=2, return_dict_in_generate=True)
    cached, full = ensemble.generate(SRC, MASK, **kwargs), ensemble.generate(SRC, MASK, use_cache=False, **kwargs)
    np.testing.assert_array_equal(cached["sequences"], full["sequences"])
    np.testing.assert_allclose(cached["sequences_scores"], full["sequences_scores"], atol=1e-5)
    assert len(ensemble.decoding_programs) == 2  # the ensemble's own programs: cached and recomputing


def test_decoder_only_members_continue_the_prompt_with_the_mean_distribution():
    models = [_peaked(TransformerForCausalLM, seed, d_model=16, d_ff=32, num_decoder_layers=layers,
                      architecture="decoder") for seed, layers in ((5, 1), (6, 2))]
    prompt = np.array([[7, 8, 9]], "int32")
    out = Ensemble(models).generate(prompt, max_new_tokens=4, eos_token_id=None)
    expected = list(prompt[0])
    for _ in range(4):
        expected.append(int(np.argmax(_mean_log_probs(models, {"input_ids": np.array([expected])})[0, -1])))
    assert out[0].tolist() == expected


def test_the_context_window_is_the_smallest_members():
    small = TransformerForSeq2SeqLM(TransformerConfig(vocab_size=30, d_model=16, num_heads=2, d_ff=32,
                                                      max_position_embeddings=16))
    large = TransformerForSeq2SeqLM(TransformerConfig(vocab_size=30, d_model=16, num_heads=2, d_ff=32,
                                                      max_position_embeddings=64))
    ensemble = Ensemble([large, small])
    assert ensemble.config.max_position_embeddings == 16 and large.config.max_position_embeddings == 64
    with pytest.raises(ValueError, match="max_position_embeddings=16"):
        ensemble.generate(SRC, MASK, max_new_tokens=20)


@pytest.mark.parametrize("other, message", [
    (dict(vocab_size=31), r"member 1 has vocab_size=31 \(member 0 has 30\)"),
    (dict(eos_token_id=3), "member 1 has eos_token_id=3"),
    (dict(architecture="decoder"), "member 1 has is_encoder_decoder=False"),
])
def test_members_that_do_not_share_the_vocabulary_are_refused(other, message):
    sizes = dict(d_model=16, num_heads=2, d_ff=32)
    first = TransformerForSeq2SeqLM(TransformerConfig(vocab_size=30, **sizes))
    model_class = TransformerForCausalLM if other.get("architecture") == "decoder" else TransformerForSeq2SeqLM
    second = model_class(TransformerConfig(**dict(dict(vocab_size=30, **sizes), **other)))
    with pytest.raises(ValueError, match=message):
        Ensemble([first, second])


def test_an_ensemble_needs_two_members(members):
    with pytest.raises(ValueError, match="at least two members, got 1"):
        Ensemble(members[:1])


def test_translate_decodes_strings_through_the_shared_tokenizer(members):
    class Tokenizer:  # stands in for the members' transformers tokenizer
        def __call__(self, texts, **kwargs):
            return {"input_ids": SRC[:len(texts)], "attention_mask": MASK[:len(texts)]}

        def batch_decode(self, ids, skip_special_tokens):
            return [" ".join(map(str, row)) for row in ids]

    ensemble = Ensemble(members)
    texts = ensemble.translate(["first", "second"], Tokenizer(), max_new_tokens=4, eos_token_id=None)
    expected = ensemble.generate(SRC, MASK, max_new_tokens=4, eos_token_id=None)
    assert texts == [" ".join(map(str, row)) for row in expected]
