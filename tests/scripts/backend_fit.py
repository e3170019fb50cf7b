"""Train, evaluate and decode the reversal task on the backend of KERAS_BACKEND; print one JSON line.

    KERAS_BACKEND=jax python tests/scripts/backend_fit.py

Numpy batches from Seq2SeqCollator go straight to ``fit`` (no tf.data); compile() takes its defaults but a short
warm-up; generate decodes 50 held-out sequences greedily. TensorFlow is made unimportable first, as for a JAX or
PyTorch user who does not have it: nothing here may need it (Keras then skips its optional TensorFlow seeding).
"""

import json
import sys

sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError

import keras  # noqa: E402
import numpy as np  # noqa: E402

from vanilla_transformer import TransformerConfig, TransformerForSeq2SeqLM  # noqa: E402
from vanilla_transformer.data_collators import Seq2SeqCollator  # noqa: E402
from vanilla_transformer.optimization import transformer_optimizer  # noqa: E402

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
config = TransformerConfig(vocab_size=12, d_model=64, num_heads=4, d_ff=128, num_encoder_layers=1,
                           num_decoder_layers=1, dropout=0.0, max_position_embeddings=16)
sources = [list(rng.integers(3, 12, size=4)) + [2] for _ in range(2000)]
targets = [list(reversed(s[:-1])) + [2] for s in sources]
inputs, labels = Seq2SeqCollator(0, 1, config.vocab_size)(sources, targets)
model = TransformerForSeq2SeqLM(config)
model.compile(optimizer=transformer_optimizer(64, warmup_steps=200, scale=0.5))
losses = model.fit(inputs, labels, batch_size=50, epochs=12, verbose=0, shuffle=False).history["loss"]
evaluation = model.evaluate(inputs, labels, batch_size=100, verbose=0, return_dict=True)
predicted = model.predict(inputs, batch_size=100, verbose=0)
test = np.array([list(rng.integers(3, 12, size=4)) + [2] for _ in range(50)], dtype="int32")
out = model.generate(test, max_new_tokens=6)
for max_new_tokens in (4, 7):  # the same plan and shapes: no new program, no new trace under jax.jit
    model.generate(test, max_new_tokens=max_new_tokens)
expected = np.concatenate([np.ones((50, 1), "int32"), test[:, 3::-1], np.full((50, 1), 2, "int32")], axis=1)
# a per-epoch regrouped pipeline without tf.data (make_tf_dataset's PyDataset on JAX / PyTorch), GPT-style
from vanilla_transformer import TransformerForCausalLM  # noqa: E402
from vanilla_transformer.batching import make_tf_dataset  # noqa: E402
from vanilla_transformer.data_collators import DataCollatorForCausalLM  # noqa: E402

stream = make_tf_dataset([s + t for s, t in zip(sources, targets)], DataCollatorForCausalLM(0), batch_size=100)
gpt = TransformerForCausalLM(TransformerConfig(architecture="decoder", vocab_size=12, d_model=32, num_heads=4, d_ff=64,
                                               num_encoder_layers=0, num_decoder_layers=1, max_position_embeddings=16))
gpt.compile(learning_rate=3e-3)
gpt_losses = gpt.fit(stream, epochs=3, verbose=0).history["loss"]
print(json.dumps({"backend": keras.backend.backend(), "pipeline": type(stream).__name__, "gpt_losses": gpt_losses, "first_loss": losses[0], "last_loss": losses[-1],
                  "eval_accuracy": float(evaluation["accuracy"]), "predict_shape": list(predicted.shape),
                  "programs": model.decoding_programs.info(),
                  "exact_match": float(np.mean([(row[: len(e)] == e).all() for row, e in zip(out, expected)]))}))
