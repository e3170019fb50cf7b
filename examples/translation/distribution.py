"""Where ``run_translation.py`` computes and where each of its processes writes.

On TensorFlow ``--strategy`` picks a ``tf.distribute`` strategy (``mirrored``: the GPUs of one machine;
``multi_worker``: several machines, every worker running the script). On JAX ``--distribution`` picks a
``keras.distribution`` (data or model parallel over the devices, also across processes). The chief (or JAX
process 0) writes ``--output_dir``; every other worker or process writes the same files to a subfolder, so no two
processes write one file.
"""

from __future__ import annotations

import os
from pathlib import Path

import _common


def _strategy(name: str):
    """The tf.distribute strategy of ``--strategy`` (TensorFlow), None for ``default``."""
    if name == "default":
        return None
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown --strategy {name!r}")


def _worker_output_dir(output_dir: Path, strategy) -> Path:
    """Where this process writes: ``output_dir``, or ``output_dir/worker-<i>`` for a non-chief worker.

    Under MultiWorkerMirroredStrategy every worker runs this script and holds the same weights. The chief
    (task "chief", or worker 0 when the cluster has no chief) writes the run's outputs; every other worker
    writes the same files (backups for --resume included) to its own subfolder, so no two processes write one
    file.
    """
    if strategy is None:
        return output_dir
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return output_dir
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and not has_chief)
    return output_dir if is_chief else output_dir / f"{task_type}-{task_id}"


def model_sizes(args):
    """The config of the model this run will build or load (for its heads and d_ff, before any weight exists)."""
    from vanilla_transformer import TransformerConfig

    if _common.is_preset(args.model_name_or_path):
        return TransformerConfig.from_preset(args.model_name_or_path,
                                             **_common.size_overrides(args, "encoder-decoder"))
    return TransformerConfig.from_pretrained(args.model_name_or_path)


def set_distribution(args):
    """On JAX, the keras.distribution of ``--distribution``, set for every weight created from here on; None
    (one device) there with one device or ``none``, and on other backends (TensorFlow: ``--strategy``).

    With ``KERAS_DISTRIBUTION_NUM_PROCESSES`` above 1 this process first joins the others
    (``keras.distribution.initialize`` reads ``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``..._NUM_PROCESSES`` and
    ``..._PROCESS_ID``); the devices are then those of every process, and each feeds its share of every batch.
    """
    import keras

    if keras.backend.backend() != "jax":
        return None
    if int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")) > 1:
        keras.distribution.initialize()
    config = model_sizes(args) if args.distribution == "model_parallel" else None
    distribution = _common.keras_distribution(args.distribution, config)
    if distribution is not None and distribution.num_processes > 1:
        distribution.auto_shard_dataset = False  # Keras shards only tf.data; place_batch does it here
    keras.distribution.set_distribution(distribution)
    return distribution


def prepare_output(args, distribution=None):
    """The distribution strategy and where this process writes: ``(strategy, output_dir, is_chief_or_alone)``.

    As with MultiWorkerMirroredStrategy's workers, JAX process 0 of a multi-process ``distribution`` writes
    ``--output_dir`` and process i the same files in ``--output_dir/process-<i>``."""
    strategy = _strategy(args.strategy)  # first: MultiWorkerMirroredStrategy must exist before any TF op
    output_dir = _worker_output_dir(Path(args.output_dir), strategy)
    if distribution is not None and distribution.num_processes > 1:
        import jax

        output_dir = output_dir / f"process-{jax.process_index()}" if jax.process_index() else output_dir
    if (output_dir / "backup").exists() and not args.resume:
        raise SystemExit(f"{output_dir} holds a backup of an earlier run: pass --resume to continue it, or choose "
                         f"another --output_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    return strategy, output_dir, output_dir == Path(args.output_dir)


def describe_scale_out(strategy, distribution) -> str:
    """How the run spreads over devices, for the run's summary line: ``"; 2 replicas in sync"``, the
    keras.distribution with its device mesh, or ``""`` on one device."""
    if strategy is not None:
        return f"; {strategy.num_replicas_in_sync} replicas in sync"
    if distribution is not None:
        mesh = distribution.device_mesh
        processes = f" in {distribution.num_processes} processes" if distribution.num_processes > 1 else ""
        return (f"; keras.distribution.{type(distribution).__name__} over {mesh.devices.size} devices{processes} "
                f"({dict(zip(mesh.axis_names, mesh.shape))})")
    return ""
