"""generate() in a long-lived process: numeric parameters are runtime values, batch sizes and lengths fall
into buckets, and the per-model cache of compiled programs is bounded."""

import keras
import numpy as np
import pytest

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM
from vanilla_transformer.generation import ProgramCache

SRC = np.array([[5, 6, 7, 8, 9, 2], [10, 11, 2, 0, 0, 0], [12, 13, 14, 15, 2, 0]], dtype="int32")
MASK = (SRC != 0).astype("int32")


@pytest.fixture()
def model():
    keras.utils.set_random_seed(11)
    config = TransformerConfig(vocab_size=40, d_model=32, num_heads=4, d_ff=64, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.0, max_position_embeddings=64)
    model = TransformerForSeq2SeqLM(config).build_weights()
    embeddings = model.named_variables()["shared.embeddings"]
    embeddings.assign(embeddings.numpy() * 3.0)  # sharp logits: no near-ties between choices
    return model


@pytest.mark.backends
@pytest.mark.skipif(keras.backend.backend() == "torch",
                    reason="PyTorch decodes eagerly: every call runs the Python body, there is no program to reuse")
@pytest.mark.parametrize("kind, varied", [
    ("greedy", [dict(max_new_tokens=n, min_new_tokens=m) for n, m in ((3, 0), (7, 2), (5, 5))]),
    ("beam", [dict(num_beams=3, max_new_tokens=n, length_penalty=lp) for n, lp in ((4, 0.6), (8, 2.0), (2, 0.0))]),
    ("sample", [dict(do_sample=True, top_k=5, temperature=t, top_p=p, max_new_tokens=6, seed=1)
                for t, p in ((0.7, 0.9), (1.3, 1.0), (1.0, 0.5))]),
])
def test_numeric_parameters_and_batch_sizes_reuse_one_program(model, kind, varied):
    for kwargs in varied:
        for rows in (1, 2, 3, 4):  # batch buckets 1, 2, 4: one trace each
            model.generate(SRC[:rows % 3 + 1] if rows < 4 else np.concatenate([SRC, SRC[:1]]), **kwargs)
    info = model.decoding_programs.info()
    assert info["built"] == info["cached"] == info["traces"] == 3, info  # batch buckets 1, 2, 4; one length
    assert len({plan for plan, _ in model.decoding_programs.keys()}) == 1


def test_runtime_parameters_take_effect_inside_one_program(model):
    short = model.generate(SRC, MASK, max_new_tokens=3, eos_token_id=None)
    longer = model.generate(SRC, MASK, max_new_tokens=7, eos_token_id=None)
    assert short.shape[1] == 4 and longer.shape[1] == 8
    np.testing.assert_array_equal(longer[:, :4], short)  # greedy: the shorter run is a prefix
    late_eos = model.generate(SRC, MASK, max_new_tokens=6, min_new_tokens=6, eos_token_id=int(short[0, 1]))
    assert (late_eos[0, 1:6] != short[0, 1]).all()  # that eos was banned until 6 tokens
    hot = model.generate(SRC, MASK, do_sample=True, temperature=50.0, max_new_tokens=7, seed=3, eos_token_id=None)
    cold = model.generate(SRC, MASK, do_sample=True, temperature=0.01, max_new_tokens=7, seed=3, eos_token_id=None)
    np.testing.assert_array_equal(cold, longer)  # almost no temperature: the argmax
    assert not np.array_equal(hot, longer)
    # greedy without eos, greedy with an eos id (ids are static), sampling: whatever the numeric values
    assert len({plan for plan, _ in model.decoding_programs.keys()}) == 3
    assert model.decoding_programs.info()["built"] == 3  # one batch of 3 rows: one shape each


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3, num_return_sequences=2, length_penalty=1.5)])
def test_filler_rows_of_a_batch_bucket_change_nothing(model, kwargs):
    kwargs = dict(kwargs, return_dict_in_generate=True, output_scores=True)
    together = model.generate(SRC, MASK, max_new_tokens=9, **kwargs)  # 3 -> 4 rows
    per_beam = kwargs.get("num_return_sequences", 1)
    for row in range(len(SRC)):
        alone = model.generate(SRC[row:row + 1], MASK[row:row + 1], max_new_tokens=9, **kwargs)
        rows = slice(row * per_beam, (row + 1) * per_beam)
        width = alone["sequences"].shape[1]
        np.testing.assert_array_equal(together["sequences"][rows, :width], alone["sequences"])
        assert (together["sequences"][rows, width:] == model.generation_config.pad_token_id).all()
        summed = [model.compute_transition_scores(out.sequences, out.scores, out.get("beam_indices"), True).sum(-1)
                  for out in (together, alone)]
        np.testing.assert_allclose(summed[0][rows], summed[1], rtol=1e-5, atol=1e-5)
        if "sequences_scores" in alone:
            np.testing.assert_allclose(together["sequences_scores"][rows], alone["sequences_scores"], rtol=1e-5)
    assert together["sequences"].shape[0] == len(SRC) * per_beam


def test_the_program_cache_is_bounded_and_reports_its_size(model):
    model.__dict__["_decoding_programs"] = ProgramCache(max_size=2)  # a small bound for the test
    for beams in (2, 3, 4, 2):
        model.generate(SRC[:1], num_beams=beams, max_new_tokens=3)
    info = model.decoding_programs.info()
    assert info == {"cached": 2, "limit": 2, "built": 4, "traces": 4}, info  # beam 2 was evicted, then rebuilt
    assert [plan.num_beams for plan, _ in model.decoding_programs.keys()] == [4, 2]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a warning of tf.function's")
def test_many_programs_do_not_warn_of_retracing(model, tensorflow_log):
    for length in range(8, 64, 8):  # 7 source-length buckets: 7 programs, each traced once
        model.generate(np.full((1, length), 5, "int32"), max_new_tokens=2)
    assert model.decoding_programs.info()["traces"] == 7
    assert not [message for message in tensorflow_log if "retracing" in message], tensorflow_log
