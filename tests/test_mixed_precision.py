"""Mixed precision on a CPU: mixed_float16 (with Keras' loss scaling) and mixed_bfloat16 train the number-words
task as float32 does, and decode like float32 on the same weights within stated tolerances."""

import keras
import numpy as np
import pytest

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM, train_bpe_tokenizer
from vanilla_transformer.batching import batches_to_tf_dataset, seq2seq_batches
from vanilla_transformer.data_collators import Seq2SeqCollator
from vanilla_transformer.number_words import make_splits
from vanilla_transformer.optimization import transformer_optimizer

pytestmark = pytest.mark.slow  # end-to-end: runs with RUN_SLOW=1

STEPS = 300
# Same weights, the largest logit difference to float32 relative to the largest |logit|: bfloat16 keeps 8 bits
# of mantissa (2^-8 = 0.4% per rounding, compounded over the layers), float16 11 bits.
LOGIT_TOLERANCE = {"mixed_bfloat16": 0.1, "mixed_float16": 0.02}  # measured here: 0.047, 0.0051


@pytest.fixture(scope="module")
def task():
    train, test = make_splits(num_train=1500, num_test=64, seed=0)
    tokenizer = train_bpe_tokenizer([text for pair in train for text in pair], vocab_size=200)
    sources = tokenizer([en for en, _ in train])["input_ids"]
    targets = tokenizer([de for _, de in train])["input_ids"]
    config = TransformerConfig(vocab_size=len(tokenizer), d_model=64, num_heads=4, d_ff=128, num_encoder_layers=1,
                               num_decoder_layers=1, dropout=0.0, max_position_embeddings=64,
                               pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id)
    collator = Seq2SeqCollator(config.pad_token_id, config.decoder_start_token_id, config.vocab_size)
    batches = seq2seq_batches(sources, targets, collator, batch_size=50, seed=0)
    test_ids = tokenizer([en for en, _ in test], padding=True, return_tensors="np")
    return config, batches, test_ids


def train(config, batches, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = TransformerForSeq2SeqLM(config)
        model.compile(optimizer=transformer_optimizer(config.d_model, warmup_steps=100), jit_compile=False)
        epochs = -(-STEPS // len(batches))
        losses = model.fit(batches_to_tf_dataset(batches, seed=0), epochs=epochs, verbose=0).history["loss"]
        return model, losses
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def float32_run(task):
    """The float32 model and its losses, trained once for both policies."""
    config, batches, _ = task
    return train(config, batches, "float32")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_like_float32_and_decodes_like_it(task, float32_run, policy):
    config, batches, test_ids = task
    reference, reference_losses = float32_run
    model, losses = train(config, batches, policy)
    assert np.isfinite(losses).all(), losses
    assert losses[-1] < 0.5 * losses[0] and abs(losses[-1] - reference_losses[-1]) < 0.15 * reference_losses[-1], (
        losses, reference_losses)
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # Keras' dynamic loss scaling

    keras.mixed_precision.set_global_policy(policy)
    try:  # the float32 model's weights under the policy
        same = TransformerForSeq2SeqLM(config).build_weights()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for name, variable in same.named_variables().items():
        variable.assign(reference.named_variables()[name].numpy())
    inputs = {"input_ids": test_ids["input_ids"], "attention_mask": test_ids["attention_mask"],
              "decoder_input_ids": test_ids["input_ids"][:, :8] % config.vocab_size}
    expected = keras.ops.convert_to_numpy(reference(inputs))
    gap = np.abs(keras.ops.convert_to_numpy(same(inputs)) - expected).max() / np.abs(expected).max()
    print(f"{policy}: relative logit gap {gap:.4f}; final loss {losses[-1]:.4f} vs float32 {reference_losses[-1]:.4f}")
    assert gap < LOGIT_TOLERANCE[policy], gap
    kwargs = dict(attention_mask=test_ids["attention_mask"], max_new_tokens=24)
    ours, theirs = same.generate(test_ids["input_ids"], **kwargs), reference.generate(test_ids["input_ids"], **kwargs)
    width = min(ours.shape[1], theirs.shape[1])
    agree = np.mean([(a[:width] == b[:width]).all() for a, b in zip(ours, theirs)])
    print(f"{policy}: greedy ids equal to float32's for {agree:.0%} of {len(ours)} sentences")
    assert agree >= 0.9, agree  # greedy ids: the same for at least 90% of the sentences
