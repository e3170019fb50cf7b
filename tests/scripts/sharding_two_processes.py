"""One of two JAX processes on 127.0.0.1 training with keras.distribution.DataParallel (one CPU device each).

    KERAS_BACKEND=jax python tests/scripts/sharding_two_processes.py PROCESS_ID PORT OUTPUT_DIR

Process 0 is the coordinator at 127.0.0.1:PORT. Both run sharding_data_parallel.py's training (same initial
weights, same global batches of 16 rows), each feeding its own 8 rows of every batch, as Keras expects of a
multi-process input pipeline. Writes ``process<ID>.npz`` (the trained weights by path) and prints one JSON
line with the process's view of the devices, its per-step logs and the evaluation.
"""

import os

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = ""  # one CPU device per process

import json  # noqa: E402
import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sharding_data_parallel as run  # noqa: E402

from vanilla_transformer import TransformerForSeq2SeqLM  # noqa: E402
from vanilla_transformer.sharding import make_distribution  # noqa: E402


def local_rows(array, process_id, processes=2):
    """This process's slice of every global batch of ``run.ROWS`` rows."""
    per_process = run.ROWS // processes
    batches = array.reshape(-1, run.ROWS, *array.shape[1:])
    return batches[:, process_id * per_process:(process_id + 1) * per_process].reshape(-1, *array.shape[1:])


def main(process_id, port, output_dir):
    keras.distribution.initialize(job_addresses=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    import jax

    inputs, labels = run.reversal_batches()
    keras.utils.set_random_seed(0)
    reference = TransformerForSeq2SeqLM(run.CONFIG).build_weights()  # before the distribution: local weights
    initial = [np.asarray(w) for w in reference.get_weights()]
    distribution = make_distribution("data_parallel")
    distribution.auto_shard_dataset = False  # each process feeds its own rows (Keras shards only tf.data itself)
    keras.distribution.set_distribution(distribution)
    steps, evaluation, weights, _ = run.train({name: local_rows(value, process_id) for name, value in inputs.items()},
                                              local_rows(labels, process_id), initial, rows=run.ROWS // 2)
    names = [variable.path for variable in reference.weights]
    np.savez(os.path.join(output_dir, f"process{process_id}.npz"), **dict(zip(names, weights)))
    print(json.dumps({"process_index": jax.process_index(), "process_count": jax.process_count(),
                      "devices": keras.distribution.list_devices(), "local_devices": len(jax.local_devices()),
                      "steps": steps, "eval": evaluation}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
