"""benchmarks/bench_step_cost.py: its matmul count against the model's own weights, and its batches and step on
a tiny shape."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_step_cost  # noqa: E402

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM  # noqa: E402


def test_matmul_cost_is_every_kernel_once_plus_the_output_projection_and_attention_scores():
    """Oracle: the model's own weights. Each 2-D kernel of the encoder and decoder layers is one multiply-add
    per weight and token (a source token passes the encoder's, a target token the decoder's), the tied output
    projection is the embedding matrix, and the scores and weighted values add 2 L d per attention."""
    config = TransformerConfig(vocab_size=50, d_model=32, num_heads=2, d_ff=48, num_encoder_layers=2,
                               num_decoder_layers=2, max_position_embeddings=16)
    model = TransformerForSeq2SeqLM(config)
    model.build_weights()
    kernels = sum(math.prod(w.shape) for w in model.weights
                  if len(w.shape) == 2 and "embedding" not in w.path and ("encoder" in w.path or "decoder" in w.path))
    length = 10
    attention = (2 + 2 * 2) * 2 * length * 32  # one attention in each encoder layer, two in each decoder layer
    assert bench_step_cost.matmul_cost(32, 48, 2, 50, length) == kernels + 32 * 50 + attention


@pytest.mark.slow  # compiles a training step (~40 s on 2 shared cores)
def test_packed_batch_fills_the_rows_and_a_step_is_timed():
    inputs, labels = bench_step_cost.packed_batch(vocab=40, rows=3, length=24)
    assert labels.shape == (3, 24) and inputs["input_ids"].shape == (3, 24)
    assert (labels != -100).mean() > 0.6  # packed: most positions are real tokens
    assert bench_step_cost.step_seconds(32, 40, rows=2, length=24, steps=1, dropout=0.1) > 0.0
