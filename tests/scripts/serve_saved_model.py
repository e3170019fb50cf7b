"""Run requests through an exported SavedModel in a process where vanilla_transformer cannot be imported.

    python tests/scripts/serve_saved_model.py SAVED_MODEL_DIR requests.npz outputs.npz

``requests.npz`` holds ``<name>.input_ids`` / ``<name>.attention_mask`` pairs; ``outputs.npz`` gets
``<name>.sequences`` / ``<name>.sequences_scores`` from the ``serving_default`` signature.
"""

import sys

sys.modules["vanilla_transformer"] = None  # importing the package (or anything from it) now fails

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

directory, requests_path, outputs_path = sys.argv[1:4]
serve = tf.saved_model.load(directory).signatures["serving_default"]
requests = np.load(requests_path)
outputs = {}
for name in sorted({key.rsplit(".", 1)[0] for key in requests.files}):
    result = serve(input_ids=tf.constant(requests[f"{name}.input_ids"]),
                   attention_mask=tf.constant(requests[f"{name}.attention_mask"]))
    outputs.update({f"{name}.{key}": value.numpy() for key, value in result.items()})
np.savez(outputs_path, **outputs)
print("served", len(outputs) // 2, "requests; vanilla_transformer imported:",
      any(m.startswith("vanilla_transformer") and sys.modules[m] is not None for m in sys.modules))
