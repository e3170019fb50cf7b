"""Minimum Bayes risk decoding: sentence BLEU against sacreBLEU, the choice against a brute-force oracle, and
``mbr_translate``'s calls of ``translate``."""

import random

import numpy as np
import pytest
import sacrebleu

from vanilla_transformer.generation.mbr import (expected_utilities, mbr_choice, mbr_select, mbr_translate,
                                                sentence_bleu)

WORDS = "a the dog cat runs sits on mat grass red".split()


def random_sentence(rng, low=0, high=12):
    return [rng.choice(WORDS) for _ in range(rng.randint(low, high))]


def sacrebleu_sentence(hypothesis, reference):
    """The oracle: sacreBLEU's sentence BLEU on pre-split words (its recommended effective order)."""
    metric = sacrebleu.BLEU(tokenize="none", effective_order=True)
    return metric.sentence_score(" ".join(hypothesis), [" ".join(reference)]).score


def test_sentence_bleu_matches_sacrebleu():
    rng = random.Random(0)
    pairs = [(random_sentence(rng), random_sentence(rng, 1)) for _ in range(400)]
    pairs += [(["a"], ["a"]), (["a", "b"], ["a", "c", "d", "e", "f"]), ([], ["a"]), (["x", "y"], ["a", "b"])]
    ours = [sentence_bleu(h, r) for h, r in pairs]
    theirs = [sacrebleu_sentence(h, r) for h, r in pairs]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)
    assert len({round(x, 6) for x in ours}) > 50  # the cases cover many different scores, zero and 100 among them
    assert min(ours) == 0.0 and max(ours) == pytest.approx(100.0)


def test_expected_utilities_and_choice_match_a_brute_force_oracle():
    rng = random.Random(1)
    for _ in range(30):
        candidates = [random_sentence(rng, 1) for _ in range(rng.randint(2, 6))]
        evidence = [random_sentence(rng, 1) for _ in range(rng.randint(1, 5))]
        weights = [rng.random() + 0.01 for _ in evidence]
        oracle = [sum(w * sacrebleu_sentence(c, e) for w, e in zip(weights, evidence)) / sum(weights)
                  for c in candidates]
        np.testing.assert_allclose(expected_utilities(candidates, evidence, weights), oracle, rtol=1e-9)
        best = max(oracle)
        assert mbr_choice(candidates, evidence, weights) == next(i for i, u in enumerate(oracle) if u == best)
        self_oracle = [np.mean([sacrebleu_sentence(c, e) for e in candidates]) for c in candidates]
        np.testing.assert_allclose(expected_utilities(candidates), self_oracle, rtol=1e-9)


def test_ties_go_to_the_first_candidate():
    assert mbr_choice([["b"], ["a"]]) == 0  # each scores 0 against the other, 100 against itself
    assert mbr_select([["x y", "x y", "z"]]) == ["x y"]


@pytest.mark.parametrize("args, message", [
    (([], None, None), "at least one candidate"),
    (([["a"]], [], None), "at least one candidate"),
    (([["a"]], [["a"], ["b"]], [1.0]), "weights must be 2"),
    (([["a"]], [["a"]], [-1.0]), "non-negative"),
    (([["a"]], [["a"]], [0.0]), "positive sum"),
])
def test_bad_input_is_refused_with_a_message(args, message):
    with pytest.raises(ValueError, match=message):
        expected_utilities(*args)


def test_mbr_select_tokenizes_and_checks_the_evidence():
    candidates = [["a dog runs", "a dog is running", "the dog is running"]]
    assert mbr_select(candidates) == ["a dog is running"]
    # with the evidence all saying "the dog ...", the third candidate wins
    assert mbr_select(candidates, [["the dog is running", "the dog is running now"]]) == ["the dog is running"]
    # a tokenizer that splits characters sees other n-grams
    assert mbr_select([["ab", "ba", "ab"]], tokenize=list) == ["ab"]
    with pytest.raises(ValueError, match="evidence is for 2 inputs but candidates for 1"):
        mbr_select(candidates, [["x"], ["y"]])


class RecordingModel:
    """Stands for a model: ``translate`` returns numbered strings and records its keyword arguments."""

    def __init__(self):
        self.calls = []

    def translate(self, texts, tokenizer, batch_size=64, **kwargs):
        self.calls.append(dict(kwargs, batch_size=batch_size))
        rows = kwargs.get("num_return_sequences", 1)
        if kwargs.get("do_sample"):  # every sample of input i says "i agree"
            return [f"{i} agree" for i in range(len(texts)) for _ in range(rows)]
        # the beam's n-best of input i: "i first", then "i agree", "i other2", ... (two words each)
        return [f"{i} " + ("first" if r == 0 else "agree" if r == 1 else f"other{r}")
                for i in range(len(texts)) for r in range(rows)]


def test_mbr_translate_decodes_the_n_best_and_the_samples():
    model = RecordingModel()
    out = mbr_translate(model, ["s0", "s1"], tokenizer=None, num_candidates=3, batch_size=32,
                        length_penalty=1.5, max_new_tokens=20)
    assert out == ["0 first", "1 first"]  # the three candidates tie (two words, the first shared): the first wins
    assert model.calls == [dict(num_beams=3, num_return_sequences=3, length_penalty=1.5, max_new_tokens=20,
                                batch_size=32)]

    model = RecordingModel()
    out = mbr_translate(model, ["s0", "s1"], tokenizer=None, num_candidates=3, num_samples=4, batch_size=32,
                        seed=7, length_penalty=1.5, max_new_tokens=20)
    assert out == ["0 agree", "1 agree"]  # the samples side with the second candidate
    assert model.calls[1] == dict(do_sample=True, num_beams=1, top_k=0, num_return_sequences=4, seed=7,
                                  max_new_tokens=20, batch_size=8)  # rows per call as for the beam: 32 // 4 inputs


def test_mbr_translate_needs_two_candidates():
    with pytest.raises(ValueError, match="num_candidates must be at least 2"):
        mbr_translate(RecordingModel(), ["s"], tokenizer=None, num_candidates=1)
