"""Run requests through exported SavedModels in a process where vanilla_transformer cannot be imported.

    python tests/scripts/serve_saved_model.py requests.npz outputs.npz KIND=SAVED_MODEL_DIR [KIND=DIR ...]

``requests.npz`` holds ``<name>.input_ids`` / ``<name>.attention_mask`` pairs; ``outputs.npz`` gets
``<kind>.<name>.sequences`` / ``<kind>.<name>.sequences_scores`` from each SavedModel's ``serving_default``
signature (several SavedModels in one process: one start-up of TensorFlow).
"""

import sys

sys.modules["vanilla_transformer"] = None  # importing the package (or anything from it) now fails

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

requests_path, outputs_path = sys.argv[1:3]
requests = np.load(requests_path)
outputs = {}
for kind, directory in (argument.split("=", 1) for argument in sys.argv[3:]):
    serve = tf.saved_model.load(directory).signatures["serving_default"]
    for name in sorted({key.rsplit(".", 1)[0] for key in requests.files}):
        result = serve(input_ids=tf.constant(requests[f"{name}.input_ids"]),
                       attention_mask=tf.constant(requests[f"{name}.attention_mask"]))
        outputs.update({f"{kind}.{name}.{key}": value.numpy() for key, value in result.items()})
np.savez(outputs_path, **outputs)
print("served", len(outputs) // 2, "requests; vanilla_transformer imported:",
      any(m.startswith("vanilla_transformer") and sys.modules[m] is not None for m in sys.modules))
