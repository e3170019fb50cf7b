"""Minimum Bayes risk (MBR) decoding: of several candidate outputs, the one most like the others.

Beam search returns the most probable hypothesis. MBR (Kumar and Byrne, 2004; Eikema and Aziz, 2020) returns
the candidate with the highest expected utility against outputs of the model, which stand in for the unknown
reference:

    y* = argmax_{h in H}  sum_{e in E} w(e) u(h, e)

``H`` are the candidates (here the beam's n-best), ``E`` the evidence (the candidates themselves unless given,
e.g. samples of the model), ``w`` weights (uniform unless given) and ``u`` the utility: sentence BLEU, computed
as sacreBLEU's ``BLEU(effective_order=True).sentence_score`` does ("exp" smoothing; n-gram orders without any
n-gram in the hypothesis left out). Since ``u`` is the metric translations are scored with, MBR picks the
hypothesis that the model expects to score best rather than the single most probable one.

Example:
    >>> candidates = [["a", "dog", "runs"], ["a", "dog", "is", "running"], ["the", "dog", "is", "running"]]
    >>> mbr_choice(candidates)  # the second agrees most with the other two
    1
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["NgramStatistics", "expected_utilities", "mbr_choice", "mbr_select", "mbr_translate", "sentence_bleu"]

MAX_ORDER = 4  # BLEU's n-gram orders 1..4


@dataclass(frozen=True)
class NgramStatistics:
    """The n-gram counts of one tokenized sentence (orders 1 to 4) and its length, computed once per sentence
    so that comparing it with many others does not count them again.

    Example:
        >>> NgramStatistics.of("a dog runs".split()).length
        3
    """

    counts: tuple[Counter, ...]
    length: int

    @classmethod
    def of(cls, tokens: Sequence[str]) -> "NgramStatistics":
        """Statistics of ``tokens``.

        >>> statistics = NgramStatistics.of(["a", "b", "a"])
        >>> statistics.counts[0][("a",)], statistics.counts[1][("b", "a")], statistics.length
        (2, 1, 3)
        """
        tokens = tuple(tokens)
        counts = tuple(Counter(tokens[i:i + n] for i in range(len(tokens) - n + 1)) for n in range(1, MAX_ORDER + 1))
        return cls(counts, len(tokens))


def bleu_of_statistics(hypothesis: NgramStatistics, reference: NgramStatistics) -> float:
    """Sentence BLEU (0-100) of one hypothesis against one reference from their n-gram statistics.

    BLEU = BP * exp(mean_n log p_n), p_n the clipped n-gram precision, BP = min(1, exp(1 - |ref| / |hyp|));
    an order with no match gets p_n = 100 / (2^k * total_n) for its k-th such order ("exp" smoothing), and
    the mean runs over the orders the hypothesis has n-grams of (effective order).

    Example:
        >>> bleu_of_statistics(NgramStatistics.of(["a", "dog"]), NgramStatistics.of(["a", "dog"]))
        100.0
    """
    correct = [sum((h & r).values()) for h, r in zip(hypothesis.counts, reference.counts)]
    if not any(correct):
        return 0.0
    log_precisions, halvings = [], 1.0
    for n in range(MAX_ORDER):
        total = hypothesis.length - n  # the hypothesis' n-grams of order n + 1
        if total <= 0:
            break
        if correct[n] == 0:
            halvings *= 2
            log_precisions.append(math.log(100.0 / (halvings * total)))
        else:
            log_precisions.append(math.log(100.0 * correct[n] / total))
    brevity = 1.0 if hypothesis.length >= reference.length else math.exp(1 - reference.length / hypothesis.length)
    return brevity * math.exp(sum(log_precisions) / len(log_precisions))


def sentence_bleu(hypothesis: Sequence[str], reference: Sequence[str]) -> float:
    """Sentence BLEU (0-100) of a tokenized hypothesis against one tokenized reference.

    >>> sentence_bleu("a cat sat on the mat".split(), "a cat sat on the mat".split())
    100.0
    >>> round(sentence_bleu("a cat sat on a mat".split(), "a cat sat on the mat".split()), 2)
    53.73
    """
    return bleu_of_statistics(NgramStatistics.of(hypothesis), NgramStatistics.of(reference))


def expected_utilities(candidates: Sequence[Sequence[str]], evidence: Sequence[Sequence[str]] | None = None,
                       weights: Sequence[float] | None = None) -> np.ndarray:
    """``(len(candidates),)`` float64: each candidate's weighted mean sentence BLEU against the evidence.

    Args:
        candidates: tokenized candidate outputs for one input.
        evidence: tokenized pseudo-references (default: the candidates).
        weights: one non-negative weight per evidence entry (default: uniform); normalised to sum to 1.

    >>> expected_utilities([["a", "b"], ["a", "b"]]).tolist()
    [100.0, 100.0]
    """
    evidence = candidates if evidence is None else evidence
    if not candidates or not evidence:
        raise ValueError("expected_utilities needs at least one candidate and one evidence entry")
    weights = np.ones(len(evidence)) if weights is None else np.asarray(weights, dtype="float64")
    if weights.shape != (len(evidence),) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"weights must be {len(evidence)} non-negative numbers with a positive sum, got {weights}")
    hypotheses = [NgramStatistics.of(c) for c in candidates]
    references = hypotheses if evidence is candidates else [NgramStatistics.of(e) for e in evidence]
    utility = np.array([[bleu_of_statistics(h, r) for r in references] for h in hypotheses])
    return utility @ (weights / weights.sum())


def mbr_choice(candidates: Sequence[Sequence[str]], evidence: Sequence[Sequence[str]] | None = None,
               weights: Sequence[float] | None = None) -> int:
    """The index of the candidate with the highest expected utility (the first among equals, so that with
    candidates in beam order a tie goes to the more probable one). Arguments as :func:`expected_utilities`.

    Example:
        >>> mbr_choice([["a", "cat"], ["a", "dog"]], evidence=[["a", "dog"], ["the", "dog"]])
        1
    """
    return int(np.argmax(expected_utilities(candidates, evidence, weights)))


def mbr_select(candidates: Sequence[Sequence[str]], evidence: Sequence[Sequence[str]] | None = None,
               tokenize: Callable[[str], Sequence[str]] = str.split) -> list[str]:
    """For each input, the MBR choice among its candidate strings.

    Args:
        candidates: per input, its candidate strings (e.g. the beam's n-best, most probable first).
        evidence: per input, its pseudo-reference strings (default: its candidates).
        tokenize: how a string is split into the words BLEU counts (default: at whitespace).

    >>> mbr_select([["a dog runs", "a dog is running", "the dog is running"], ["yes", "yes"]])
    ['a dog is running', 'yes']
    """
    if evidence is not None and len(evidence) != len(candidates):
        raise ValueError(f"evidence is for {len(evidence)} inputs but candidates for {len(candidates)}")
    chosen = []
    for i, texts in enumerate(candidates):
        tokenized = [list(tokenize(text)) for text in texts]
        references = None if evidence is None else [list(tokenize(text)) for text in evidence[i]]
        chosen.append(texts[mbr_choice(tokenized, references)])
    return chosen


def mbr_translate(model, texts: Sequence[str], tokenizer, num_candidates: int = 8, num_samples: int = 0,
                  batch_size: int = 64, seed: int = 0, tokenize: Callable[[str], Sequence[str]] = str.split,
                  **generation_kwargs) -> list[str]:
    """Translate ``texts`` by MBR over the beam's ``num_candidates``-best.

    Args:
        model: a model with ``translate(texts, tokenizer, batch_size, **generate_kwargs)`` (the encoder-decoder).
        num_candidates: beam width, and how many of its hypotheses are candidates.
        num_samples: if positive, that many samples of the model per input (ancestral, temperature 1) join
            the candidates as evidence; else the candidates alone are the evidence.
        seed: the sampling seed.
        **generation_kwargs: further ``generate`` arguments for the beam (``length_penalty``,
            ``max_new_tokens``, ...); ``max_new_tokens`` applies to the samples too.

    Returns:
        one string per input.

    Example:
        >>> class Model:  # stands for a TransformerForSeq2SeqLM; its n-best for each text
        ...     def translate(self, texts, tokenizer, batch_size, num_return_sequences, **kwargs):
        ...         return ["ein Hund", "ein Hund rennt", "der Hund rennt"] * len(texts)
        >>> mbr_translate(Model(), ["a dog runs"], tokenizer=None, num_candidates=3)
        ['ein Hund rennt']
    """
    if num_candidates < 2:
        raise ValueError(f"num_candidates must be at least 2 for MBR to choose, got {num_candidates}")
    beams = model.translate(list(texts), tokenizer, batch_size=batch_size, num_beams=num_candidates,
                            num_return_sequences=num_candidates, **generation_kwargs)
    candidates = [beams[i:i + num_candidates] for i in range(0, len(beams), num_candidates)]
    evidence = None
    if num_samples > 0:
        limits = {k: v for k, v in generation_kwargs.items() if k == "max_new_tokens"}
        samples = model.translate(list(texts), tokenizer, batch_size=max(1, batch_size // num_samples),
                                  do_sample=True, num_beams=1, top_k=0, num_return_sequences=num_samples,
                                  seed=seed, **limits)
        evidence = [found + samples[i * num_samples:(i + 1) * num_samples] for i, found in enumerate(candidates)]
    return mbr_select(candidates, evidence, tokenize)
