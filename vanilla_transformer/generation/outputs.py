"""What ``generate(..., return_dict_in_generate=True)`` returns: transformers' output classes
(``GenerateEncoderDecoderOutput``, ``GenerateBeamEncoderDecoderOutput`` and their decoder-only twins) filled
with numpy arrays, and transformers' ``compute_transition_scores`` over them.

The fields hold what transformers' hold on the same weights (``tests/test_generation_contract.py``), except
``cache``: transformers hands back its cache object, ours lives inside the compiled decoding program, so the
field stays None. Attentions and hidden states are refused (see :mod:`.contract`).
"""

from __future__ import annotations

import numpy as np
from transformers.generation.utils import (GenerateBeamDecoderOnlyOutput, GenerateBeamEncoderDecoderOutput,
                                           GenerateDecoderOnlyOutput, GenerateEncoderDecoderOutput)


def per_step(recorded: np.ndarray, rows: int, steps: int) -> tuple:
    """``recorded (rows', capacity, vocab)`` as transformers' tuple of ``steps`` arrays ``(rows, vocab)``.

    >>> [step.shape for step in per_step(np.zeros((4, 8, 5)), rows=3, steps=2)]
    [(3, 5), (3, 5)]
    """
    return tuple(np.array(recorded[:rows, step]) for step in range(steps))


def generate_output(sequences: np.ndarray, recorded: dict, rows: int, steps: int, is_encoder_decoder: bool,
                    sequences_scores: np.ndarray | None = None):
    """The transformers output object of one ``generate`` call.

    Args:
        sequences: ``(returned rows, length)`` int32 ids, as ``generate`` returns them.
        recorded: the decoding program's per-step arrays (numpy): ``"scores"`` / ``"logits"`` ``(rows',
            capacity, vocab)`` and, for beam search, ``"beam_indices"`` ``(returned rows', capacity)``.
        rows: the rows the per-step arrays have (``batch``, or ``batch * num_beams`` for beam search).
        steps: the decoding steps run (the length of transformers' ``scores`` tuple).
        is_encoder_decoder: choose the encoder-decoder class or the decoder-only one.
        sequences_scores: ``(returned rows,)`` the beams' length-normalised scores; None for greedy / sampling.

    Returns:
        ``GenerateEncoderDecoderOutput`` / ``GenerateDecoderOnlyOutput`` (greedy, sampling) or
        ``GenerateBeamEncoderDecoderOutput`` / ``GenerateBeamDecoderOnlyOutput`` (beam search); ``scores`` and
        ``logits`` are None unless recorded; attentions, hidden states and the cache are None.

    Example:
        >>> out = generate_output(np.array([[1, 5, 2]]), {"scores": np.zeros((1, 8, 4))}, rows=1, steps=2,
        ...                       is_encoder_decoder=True)
        >>> type(out).__name__, out.sequences.shape, len(out.scores), out.logits
        ('GenerateEncoderDecoderOutput', (1, 3), 2, None)
    """
    fields = {name: per_step(recorded[name], rows, steps) if name in recorded else None
              for name in ("scores", "logits")}
    if sequences_scores is None:
        output_class = GenerateEncoderDecoderOutput if is_encoder_decoder else GenerateDecoderOnlyOutput
        return output_class(sequences=sequences, **fields)
    returned = sequences.shape[0]
    beam_indices = np.asarray(recorded["beam_indices"])[:returned]
    generated = int((beam_indices >= 0).sum(axis=1).max()) if beam_indices.size else 0
    output_class = GenerateBeamEncoderDecoderOutput if is_encoder_decoder else GenerateBeamDecoderOnlyOutput
    return output_class(sequences=sequences, sequences_scores=sequences_scores, beam_indices=beam_indices[:, :generated],
                        **fields)


def compute_transition_scores(sequences, scores, beam_indices=None, normalize_logits: bool = False) -> np.ndarray:
    """The score of each generated token, as transformers' ``GenerationMixin.compute_transition_scores``.

    Args:
        sequences: ``(rows, length)`` the generated ids (``output.sequences``).
        scores: the tuple of per-step ``(rows or rows * num_beams, vocab)`` scores (``output.scores``).
        beam_indices: ``(rows, steps)`` from a beam search output; None for greedy search and sampling.
        normalize_logits: log-softmax the scores over the vocabulary first.

    Returns:
        ``(rows, generated)`` float32: the score of each chosen token; 0 after a beam's end.

    Example:
        >>> scores = (np.log(np.array([[0.5, 0.4, 0.1]])), np.log(np.array([[0.1, 0.2, 0.7]])))
        >>> np.round(compute_transition_scores(np.array([[1, 0, 2]]), scores), 3)
        array([[-0.693, -0.357]], dtype=float32)
    """
    stacked = np.stack([np.asarray(step, "float32") for step in scores], axis=-1)  # (rows', vocab, steps)
    if normalize_logits:
        shifted = stacked - stacked.max(axis=1, keepdims=True)
        stacked = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    if beam_indices is None:
        beam_indices = np.repeat(np.arange(stacked.shape[0])[:, None], stacked.shape[-1], axis=1)
    beam_indices = np.asarray(beam_indices)
    ended = beam_indices < 0
    longest = int((~ended).sum(axis=-1).max())
    beam_indices, ended = np.where(ended, 0, beam_indices)[:, :longest], ended[:, :longest]
    tokens = np.asarray(sequences)[:, np.asarray(sequences).shape[-1] - longest:]
    chosen = stacked[beam_indices, tokens, np.arange(longest)[None, :]]
    return np.where(ended, 0.0, chosen).astype("float32")
